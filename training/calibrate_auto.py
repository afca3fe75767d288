"""Choose a weights file's threshold and boundary threshold again where users run it: at Auto.

``training/calibrate.py`` chooses every post-processing setting on the val images brought to the
model's own diameter with their *true* median diameter. Users get the estimated diameter (Auto),
and there the stained images ask for another boundary threshold than the gray ones (session 20's
probe of the shipped HRNet: 0.1 -> 0.2 raised the CoNSeP val part 0.129 -> 0.142 and left DSB2018
val's fluorescence images at 0.611). This script keeps the min size, neck ratio and smallest seed
and searches only the two thresholds, on the images as they are, through ``segment``'s own
prediction (Auto diameter, then the network):

- DSB2018 ``val`` (68 images) and the val parts train.py holds out of MoNuSeg and CoNSeP train
  (5 and 64 images); never a ``test`` part;
- the grid :data:`THRESHOLDS` x :data:`BOUNDARY_THRESHOLDS`, plus the file's own point;
- eligible: DSB2018 val falls by at most :data:`MAX_VAL_LOSS`, each of its kinds (fluorescence,
  tissue, brightfield) by at most :data:`MAX_KIND_LOSS`, and each bundled sample (what a new user
  segments first, against its truth: ``training/regression.py``) by at most :data:`MAX_SAMPLE_LOSS`,
  against the file's own settings;
- chosen: the eligible point with the highest mean of the two val parts, if that mean rises by at
  least :data:`MIN_PARTS_GAIN`; otherwise the file keeps its settings and no copy is written. A
  point that is not eligible is passed over for the next best one (session 20 kept UNet++'s
  settings because its best point lost 0.0204 on the tissue sample, and looked no further).

The copy records the file's own thresholds as those of the diameter estimate (``"estimate"``,
:attr:`~napari_nucleiseg.weights.NucleiModel.estimate_settings`): its sweep and recheck label with
them, and its size model was fitted with them, so the copy estimates every image's diameter as the
file did, and the probabilities, computed once per image, are the copy's too: each grid point only
labels them again, and its figures are what the copy scores.

Example::

    python -m training.calibrate_auto weights/hrnet.safetensors --out runs/auto_hrnet
"""

from __future__ import annotations

import sys

import numpy as np

from napari_nucleiseg._sample_data import SAMPLES, read_sample
from napari_nucleiseg.weights import load_weights, read_metadata
from training.calibrate import parse_args, timed_log, val_pairs
from training.data import image_kind
from training.evaluate import Sample, label, pipeline_prediction, write_calibrated_weights
from training.metrics import instance_scores
from training.regression import sample_truth

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)
BOUNDARY_THRESHOLDS = (0.1, 0.15, 0.2, 0.3)
MAX_VAL_LOSS = 0.002
MAX_KIND_LOSS = 0.02
MAX_SAMPLE_LOSS = 0.02
MIN_PARTS_GAIN = 0.005
#: The stained sets whose mean the choice raises.
PARTS = ("monuseg", "consep")
KINDS = ("fluorescence", "tissue", "brightfield")


def point_scores(settings, predictions: dict[str, list], kinds: list[str]) -> dict:
    """One grid point's mean DSB2018 score per set, per kind of DSB2018 val, and per bundled sample
    (``predictions["samples"]``)."""
    scores = {}
    for name, items in predictions.items():
        per_image = [instance_scores(label(settings.at_scale(prediction.scale), prediction.probabilities),
                                     sample.truth)["dsb_score"] for sample, prediction in items]
        if name == "samples":
            scores[name] = {sample.id: value for (sample, _), value in zip(items, per_image)}
            continue
        scores[name] = float(np.mean(per_image))
        if name == "dsb2018":
            scores["kinds"] = {kind: float(np.mean([s for s, k in zip(per_image, kinds) if k == kind]))
                               for kind in KINDS if kind in kinds}
    return scores


def parts_mean(point: dict) -> float:
    return float(np.mean([point[name] for name in PARTS]))


def eligible(point: dict, own: dict) -> bool:
    """Whether ``point`` loses at most :data:`MAX_VAL_LOSS` on DSB2018 val, :data:`MAX_KIND_LOSS`
    on each of its kinds and :data:`MAX_SAMPLE_LOSS` on each bundled sample against the file's ``own`` point."""
    return (point["dsb2018"] >= own["dsb2018"] - MAX_VAL_LOSS
            and all(point["kinds"][kind] >= own["kinds"][kind] - MAX_KIND_LOSS for kind in own["kinds"])
            and all(point["samples"][name] >= own["samples"][name] - MAX_SAMPLE_LOSS
                    for name in own["samples"]))


def choose(points: list[dict], own: dict) -> dict | None:
    """The eligible point of ``points`` with the highest mean of the val parts if it beats ``own``'s by
    :data:`MIN_PARTS_GAIN`; None: keep the file's settings. Ties go to the first point."""
    best = None
    for point in points:
        if eligible(point, own) and (best is None or parts_mean(point) > parts_mean(best)):
            best = point
    if best is None or parts_mean(best) < parts_mean(own) + MIN_PARTS_GAIN:
        return None
    return best


def main(argv=None) -> dict | None:
    args = parse_args(__doc__.split("\n\n")[0], "folder for the copy <name>.safetensors, if chosen", argv)
    log = timed_log()
    model = load_weights(args.weights)
    own_settings = model.settings
    sets = val_pairs(args.data, args.limit)
    kinds = [image_kind(sample.image) for sample in sets["dsb2018"]]
    dsb2018 = args.data / "dsb2018"
    samples_truth = {"samples": [Sample(name, read_sample(name), sample_truth(name, dsb2018)) for name in SAMPLES]}
    predictions = {}
    for name, samples in {**sets, **samples_truth}.items():
        predictions[name] = [(sample, pipeline_prediction(sample.image, model, "auto")) for sample in samples]
        log(f"{name}: {len(samples)} images predicted at Auto")
    own = {"threshold": own_settings.threshold, "boundary_threshold": own_settings.boundary_threshold,
           **point_scores(own_settings, predictions, kinds)}
    points = []
    for threshold in THRESHOLDS:
        for boundary_threshold in BOUNDARY_THRESHOLDS:
            settings = own_settings.replace(threshold=threshold, boundary_threshold=boundary_threshold)
            point = {"threshold": threshold, "boundary_threshold": boundary_threshold,
                     **point_scores(settings, predictions, kinds)}
            points.append(point)
            log(_describe(point) + ("" if eligible(point, own) else "  (not eligible)"))
    log("own settings: " + _describe(own))
    chosen = choose(points, own)
    if chosen is None:
        log("kept the file's settings: no eligible point raises the val parts' mean by "
            f">= {MIN_PARTS_GAIN}")
        return None
    log("chosen: " + _describe(chosen))
    settings = own_settings.replace(threshold=chosen["threshold"], boundary_threshold=chosen["boundary_threshold"])
    metadata = read_metadata(args.weights)
    calibration = {**metadata.get("calibration", {}), "auto_thresholds": {
        "grid": {"thresholds": THRESHOLDS, "boundary_thresholds": BOUNDARY_THRESHOLDS},
        "on": "Auto, the images as they are: " + ", ".join(f"{len(g)} {n}" for n, g in sets.items())
              + f"; {len(SAMPLES)} bundled samples against their truth",
        "rule": f"DSB2018 val falls <= {MAX_VAL_LOSS}, each kind <= {MAX_KIND_LOSS}, each bundled sample <= "
                f"{MAX_SAMPLE_LOSS}; the highest mean of the MoNuSeg / CoNSeP val parts, if it rises >= {MIN_PARTS_GAIN}",
        "before": _rounded(own), "after": _rounded(chosen),
        "command": "python -m training.calibrate_auto " + " ".join(sys.argv[1:] if argv is None else argv)}}
    heads = tuple(metadata["heads"]) if metadata.get("heads") else None
    estimate = model.estimate_settings  # a file calibrated before keeps the thresholds of its estimate
    metrics = {key: value for key, value in metadata.get("metrics", {}).items()
               if key != "val_at_true_diameter_dsb_score"}  # scored with the thresholds it replaces
    metrics["val_at_auto_dsb_score"] = {name: round(chosen[name], 4) for name in sets}  # this copy's, at Auto
    target = write_calibrated_weights(args.weights, args.out, settings, {}, calibration, heads, extra={
        "metrics": metrics,
        "estimate": {"threshold": estimate.threshold, "boundary_threshold": estimate.boundary_threshold}})
    log(f"-> {target}")
    return chosen


def _describe(point: dict) -> str:
    kinds = ", ".join(f"{kind} {value:.3f}" for kind, value in point["kinds"].items())
    return (f"threshold {point['threshold']:g} boundary {point['boundary_threshold']:g}: DSB2018 val "
            f"{point['dsb2018']:.4f} (kinds {kinds}), MoNuSeg {point['monuseg']:.3f}, CoNSeP {point['consep']:.3f}, "
            f"parts mean {parts_mean(point):.4f}; samples "
            + ", ".join(f"{name} {value:.3f}" for name, value in point["samples"].items()))


def _rounded(point: dict) -> dict:
    return {key: ({k: round(v, 4) for k, v in value.items()} if isinstance(value, dict) else round(value, 4))
            for key, value in point.items()}


if __name__ == "__main__":
    main()
