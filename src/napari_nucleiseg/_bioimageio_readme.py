"""The README of a BioImage.IO package (:mod:`.bioimageio_export`): what the model is, what the spec
cannot express, our post-processing, its training data and licences, its validation, citations."""

from __future__ import annotations

import hashlib
import re

from .weights import MODEL_TITLES, SCORED_KINDS, NucleiModel, bundled_evaluation, fine_tune_generations

SOURCE_URL = "https://github.com/napari-nucleiseg/napari-nucleiseg"


def readme(model: NucleiModel, spdx: str) -> str:
    """The package's README.md (Markdown) for ``model``, whose weights are under licence ``spdx``."""
    from . import __version__
    from .bioimageio_export import MIN_SIDE, SIZE_STEP, _citations
    from .inference import TILE_OVERLAP, TILE_SIZE
    from .preprocess import PERCENTILE_SAMPLE_PIXELS

    architecture = model.metadata["architecture"]
    title = MODEL_TITLES.get(architecture, architecture)
    low, high = model.percentiles
    gain = model.log_gain
    settings = model.settings
    lines = [
        f"# napari-nucleiseg {title}: nuclei in 2-D microscopy images",
        "",
        f"The {title} network of [napari-nucleiseg]({SOURCE_URL}) {__version__} (weights `{model.name}`), "
        "exported with `nucleiseg export-bioimageio`. It gives, for each pixel, the probability that it lies in "
        "a nucleus and the probability that it lies on a nucleus boundary; napari-nucleiseg turns them into "
        "labelled nuclei (see Post-processing).",
        "",
        "## Input",
        "",
        f"`image`: `(batch, channel, y, x)`, float32, three channels (red, green, blue; repeat a gray image into "
        f"all three), any value range; height and width a multiple of {SIZE_STEP}, at least {MIN_SIDE}.",
        "",
        "Preprocessing, as the package describes it:",
        "",
        f"1. `scale_range`: percentile {low:g} maps to 0 and percentile {high:g} to 1, the percentiles taken over "
        "the three channels of each image together (colour is kept);",
        "2. `clip` to [-1, 3], so that a few very bright or dark pixels do not dominate.",
        "",
    ]
    if gain > 0:
        lines += [
            f"napari-nucleiseg then compresses the values logarithmically, `sign(x) log(1 + {gain:g}|x|) / "
            f"log(1 + {gain:g})`, so that a few very bright nuclei do not push dim ones into the background. The "
            "spec has no such step: **the exported network applies it itself**, as its first operation, in both "
            "weight formats.",
            "",
        ]
    lines += [
        "What the spec cannot express, and a consumer of this package therefore does not do:",
        "",
    ]
    if model.diameter:
        lines.append(
            f"- **Nucleus size.** The network was trained on nuclei about {model.diameter:g} px across. "
            "napari-nucleiseg resizes each image so that its nuclei arrive at that size (the diameter given, or "
            "estimated from the image) and resizes the probabilities back. Resize your image by "
            f"{model.diameter:g} / (its nuclei's diameter in pixels) before running the package, and the output "
            "back after; images whose nuclei are far from that size give poor results.")
    if model.metadata.get("brown_nuclei") is True:  # (QA: a consumer fed it raw IHC, unconverted)
        lines.append(
            "- **Brown nuclei.** This model was fine-tuned on immunohistochemistry images whose brown (DAB) "
            "napari-nucleiseg read as hematoxylin (its *Brown nuclei* option, `--brown-nuclei`), and it is run "
            "so: before the network, in each pixel whose optical density in blue exceeds that in green (DAB's "
            "mark), the DAB is replaced by as much hematoxylin (Ruifrok & Johnston's stain vectors; "
            "`napari_nucleiseg.stains.brown_as_hematoxylin`). The package takes the picture as it is: convert it "
            "so first, or the brown nuclei are missed.")
    lines += [
        f"- **Large images.** napari-nucleiseg estimates the percentiles of an image of more than "
        f"{PERCENTILE_SAMPLE_PIXELS:,} pixels on a regular grid of at most that many; the package takes all "
        f"pixels (the values hardly differ). It cuts images larger than {TILE_SIZE} px into {TILE_SIZE}-px tiles "
        f"overlapping by {TILE_OVERLAP} px and blends them. The package declares no halo, so that a whole "
        "image gives napari-nucleiseg's probabilities (a consumer pads an image by its halo first, which "
        f"changes them near the edges); if you tile, overlap the tiles by {TILE_OVERLAP} px and keep the "
        "middle of each overlap.",
        f"- **Any size.** napari-nucleiseg mirrors an image up to a multiple of {SIZE_STEP} itself; here, pad it "
        f"(e.g. by reflection) to a multiple of {SIZE_STEP} and crop the output.",
        "- **Odd pixels.** napari-nucleiseg replaces NaN with the low percentile and infinities with the high or "
        "low one, and divides float images far outside float32's range first.",
        "- **One channel in colour; overlays.** napari-nucleiseg gives the network one channel shown in colour "
        "(DAPI saved in blue, a marker with a green or cyan LUT) as gray, its brightest channel repeated into "
        "all three, and an overlay of fluorescence channels with the nuclear stain in blue (DAPI or Hoechst "
        "beside a red or green marker) as its blue channel repeated; in colour the network finds fewer nuclei, "
        "or the marker's cells. Give such images as that one channel, repeated.",
        "- **Debris far brighter than the nuclei.** In a one-channel image, napari-nucleiseg leaves a few objects "
        "far brighter than every nucleus (a saturated speck of debris, a bead, one mitosis) out of the high "
        "percentile; the package's percentile takes them, and every nucleus then comes out dim and is missed "
        "once they cover more than 0.2% of the image. Clip such specks to the nuclei's brightness first.",
        "",
        "## Output",
        "",
        "`probabilities`: `(batch, channel, y, x)`, float32 in [0, 1], the input's height and width. Channel 0 "
        "(`nucleus`): the probability that the pixel is in a nucleus; channel 1 (`boundary`): that it is on a "
        "nucleus boundary. The sigmoid is applied inside the network: these are probabilities, not logits.",
        "",
        "## Post-processing (napari-nucleiseg; not part of this package)",
        "",
        "napari-nucleiseg (`postprocess.labels_from_probabilities`) makes labelled nuclei of the two maps:",
        "",
        f"1. **Threshold.** Pixels whose nucleus probability is above the threshold ({settings.threshold:g}) are "
        "nucleus; holes inside them are filled.",
        f"2. **Split touching nuclei.** Seeds are the nucleus pixels whose boundary probability is below the "
        f"boundary threshold ({settings.boundary_threshold:g})"
        + (f"; groups of fewer than {settings.seed_min_size} px seed nothing" if settings.seed_min_size else "")
        + ". A seeded watershed grows each seed back over the nucleus pixels, so nuclei that touch are "
        "separated along their predicted boundary."
        + (f" Objects shaped like two nuclei joined by a neck at least {settings.neck_ratio:g} of their "
           "thickness deep are cut there." if settings.neck_ratio else ""),
        f"3. **Minimum size.** Nuclei of fewer than {settings.min_size} px are dropped"
        + (f" (pixels at the network's scale, nuclei about {model.diameter:g} px across: scale it with the "
           "area of your resize)." if model.diameter else "."),
        "",
        "These values were calibrated for these weights; the package's `config.napari-nucleiseg` records them. "
        "With napari-nucleiseg installed:",
        "",
        "```python",
        "from napari_nucleiseg.postprocess import labels_from_probabilities",
        f"labels = labels_from_probabilities(probabilities[0], threshold={settings.threshold:g}, "
        f"boundary_threshold={settings.boundary_threshold:g}, min_size={settings.min_size}, "
        f"neck_ratio={settings.neck_ratio:g}, seed_min_size={settings.seed_min_size})",
        "```",
        "",
        "## Training data and licences",
        "",
    ]
    lines += _training(model, spdx)
    lines += ["", "## Validation", ""]
    lines += _validation(model)
    lines += ["", "## Citations", ""]
    lines += [f"- {text}. https://doi.org/{doi}" for text, doi in _citations(model)]
    lines += [f"- napari-nucleiseg: {SOURCE_URL}", ""]
    return "\n".join(lines)


def _training(model: NucleiModel, spdx: str) -> list[str]:
    metadata = model.metadata
    training = metadata.get("training") or {}
    lines = []
    if training.get("data"):  # without the folders it was read from
        lines.append(f"- Trained on: {re.sub(r' [(][^()]*/[^()]*[)]', '', str(training['data']))}.")
    if training.get("epochs"):
        lines.append(f"- Training: {training['epochs']} epochs in its last run, crops of "
                     f"{training.get('crop_size', '?')} px, on {training.get('hardware', '?')}.")
    if metadata.get("diameter"):
        lines.append(f"- Every training image was resized so that its nuclei are about {metadata['diameter']:g} px "
                     "across.")
    for generation, tuned in enumerate(fine_tune_generations(metadata)):
        base = tuned.get("base") or {}
        lines.append(f"- {'Fine-tuned' if generation == 0 else 'It was fine-tuned'} from `{base.get('name', '?')}` "
                     f"(SHA-256 {base.get('sha256') or '?'}) on {len(tuned.get('images') or [])} of the user's "
                     f"images ({tuned.get('nuclei', '?')} nuclei), {tuned.get('steps', '?')} steps on "
                     f"{tuned.get('date', '?')}; those images are not part of this package.")
    if not lines:
        lines.append("- The weights file records no training data.")
    lines.append(f"- Licence of the weights: {spdx}. The weights file says: {metadata.get('licence') or 'nothing'}.")
    if "NC" in spdx:
        lines.append("- **Non-commercial use only**: the weights were trained on data under a non-commercial licence "
                     "and are shared under the same terms.")
    return lines


def _validation(model: NucleiModel) -> list[str]:
    lines = ["Reproducibility: `bioimageio test MODEL.zip` runs both weight formats on the test input and "
             "compares the result with the test output (computed by napari-nucleiseg from the preprocessed "
             "test input).", ""]
    evaluation = bundled_evaluation()
    digest = None if model.path is None else hashlib.sha256(model.path.read_bytes()).hexdigest()
    measured = next((scores for scores in (evaluation.get("models") or {}).values()
                     if digest is not None and scores.get("weights_sha256") == digest), None)
    if measured:
        sets = evaluation.get("sets") or {}
        lines += [
            "Accuracy of these exact weights (SHA-256 checked) on images they were not trained on, through "
            "napari-nucleiseg's whole pipeline (diameter estimated per image, resize, network, post-processing "
            "above). DSB2018 score: the mean over IoU thresholds 0.5 to 0.95 of TP / (TP + FP + FN), per image, "
            "0 to 1, higher is better; F1 at IoU 0.5; count error: the median error of the count per image.",
            "",
            "| images | set | DSB2018 score | F1 | count error |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for kind, scores in (measured.get("sets") or {}).items():
            resized = ("resized", f"DSB2018 val at x{kind.removeprefix('val_x')} its size")
            words, source = SCORED_KINDS.get(kind) or resized
            count = (sets.get(kind) or {}).get("n_images", "?")
            shown = [f"{scores[key]:{form}}" if key in scores else "-"
                     for key, form in (("dsb_score", ".3f"), ("f1_iou50", ".3f"), ("count_error_median", ".0%"))]
            lines.append(f"| {words} | {source} ({count}) | {' | '.join(shown)} |")
    else:
        lines.append("These weights were not scored by napari-nucleiseg's evaluation (a fine-tuned or custom file).")
        metrics = model.metadata.get("metrics") or {}
        if metrics:
            lines += ["", f"The file records these scores (from its training): `{metrics}`."]
    lines += ["", "To validate on your own images: segment labelled images the model never saw "
              "(`nucleiseg segment IMAGES --weights FILE --out DIR`, or this package and the post-processing "
              "above) and compare the labels with yours, e.g. by the DSB2018 score or F1 at IoU 0.5."]
    return lines
