"""Score weights files on DSB2018 image/label pairs through the plugin's own inference and post-processing.

Example (the table in weights/README.md)::

    python training/evaluate.py --weights weights/unet.safetensors weights/unetpp.safetensors \
        weights/hrnet.safetensors --data ../shared/data/dsb2018 --split val --markdown table.md

Calibration: choose threshold, boundary threshold and minimum size on ``val`` and write
a copy of each weights file, with those values and the metrics they reach, to a folder::

    python training/evaluate.py --weights runs/unet/best.safetensors --split val \
        --calibrate --write-weights weights/

A UNet++ averages several output heads; with ``--calibrate`` the heads are chosen too: all of
them, or only the deepest ``k`` (:func:`head_sets`), each set run through the whole grid, the
best kept (written to the file as ``heads``).

Every model runs once per image (:func:`predict_probabilities`, as in the plugin); the
probability maps are kept and re-thresholded for the no-splitting baseline and the grid
search (:func:`labels_from_probabilities`, as in the plugin).

Metrics. Pixel scores (the case study's mean IoU = mean of foreground and background IoU,
foreground IoU, Dice) are pooled over all pixels of the split. Instance scores (DSB2018
score, F1 at IoU 0.5, relative count error) are computed per image, then averaged over
images (count error: median and mean). Each summary repeats them per kind of image
(fluorescence, tissue, brightfield; ``data.image_kind``), since the kinds score very
differently and a user's images may be all of one kind.

Baselines. "no splitting": the same model and settings, nuclei = connected components of
the thresholded mask. "Otsu": gray = mean of the RGB channels, Otsu's threshold, the side
of it with fewer pixels is nucleus (bright nuclei on dark fluorescence, dark nuclei on
bright tissue or brightfield), 4-connected components, no size filter or hole filling.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import IMAGE_KINDS, image_kind, list_ids, load_pair  # noqa: E402
from metrics import instance_iou, instance_scores, pixel_confusion, pixel_scores, scores_from_iou  # noqa: E402

from napari_nucleiseg.inference import predict_probabilities  # noqa: E402
from napari_nucleiseg.postprocess import labels_from_probabilities  # noqa: E402
from napari_nucleiseg.weights import METADATA_KEY, WEIGHTS_SUFFIX, load_weights, read_metadata  # noqa: E402

#: Calibration grid. The network is trained towards 0/1 targets, so useful thresholds lie
#: near the middle; min sizes span debris (a few pixels) to the smallest real nuclei (~30 px).
DEFAULT_THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(9))  # 0.3 .. 0.7
DEFAULT_BOUNDARY_THRESHOLDS = DEFAULT_THRESHOLDS
DEFAULT_MIN_SIZES = (0, 5, 10, 20, 30)
#: Neck ratios tried after the grid, with each boundary threshold (0: no cut by shape).
DEFAULT_NECK_RATIOS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)

#: Summary metrics: key, markdown column header, format.
TABLE_COLUMNS = (
    ("mean_iou", "mean IoU (pooled)", "{:.3f}"),
    ("foreground_iou", "foreground IoU (pooled)", "{:.3f}"),
    ("dice", "Dice (pooled)", "{:.3f}"),
    ("dsb_score", "DSB2018 score (mean/image)", "{:.3f}"),
    ("f1_iou50", "F1 @ IoU 0.5 (mean/image)", "{:.3f}"),
    ("count_error_median", "count error (median/image)", "{:.1%}"),
    ("count_error_mean", "count error (mean/image)", "{:.1%}"),
)
PER_IMAGE_COLUMNS = ("method", "image_id", "kind", "height", "width", "n_truth", "n_predicted", "mean_iou",
                     "foreground_iou", "dice", "dsb_score", "f1_iou50", "count_error")


@dataclass
class Sample:
    """One image ``(H, W, 3)`` uint8 and its instance labels ``(H, W)`` int32."""

    id: str
    image: np.ndarray
    truth: np.ndarray


@dataclass
class Settings:
    """Post-processing settings, as stored in a weights file."""

    threshold: float
    boundary_threshold: float
    min_size: int
    neck_ratio: float = 0.0
    seed_min_size: int = 0

    def label(self, probabilities: np.ndarray, split: bool = True) -> np.ndarray:
        return labels_from_probabilities(probabilities, self.threshold, min_size=self.min_size, split=split,
                                         boundary_threshold=self.boundary_threshold, neck_ratio=self.neck_ratio,
                                         seed_min_size=self.seed_min_size)

    def describe(self, split: bool = True) -> str:
        boundary = f"{self.boundary_threshold:g}" if split else "-"
        neck = f"{self.neck_ratio:g}" if split else "-"
        seeds = f", seeds >= {self.seed_min_size} px" if split and self.seed_min_size else ""
        return f"{self.threshold:.2f} / {boundary} / {self.min_size} / {neck}{seeds}"


def load_samples(data: Path, split: str | None, limit: int | None = None) -> list[Sample]:
    """The first ``limit`` pairs (sorted ids) of ``split``, or of the whole folder when ``split`` is empty."""
    return [Sample(i, *load_pair(data, i)) for i in list_ids(data, split or None)[:limit]]


def otsu_labels(image: np.ndarray) -> np.ndarray:
    """Baseline labels ``(H, W)`` int32 of an ``(H, W, 3)`` image: Otsu on the gray image, minority side, 4-connected."""
    gray = np.asarray(image, dtype=np.float32).mean(axis=-1)
    if gray.min() == gray.max():
        return np.zeros(gray.shape, dtype=np.int32)
    mask = gray > threshold_otsu(gray)
    if np.count_nonzero(mask) > mask.size / 2:  # nuclei are darker than their surroundings
        mask = ~mask
    return connected_components(mask, connectivity=1).astype(np.int32)


def image_scores(labels: np.ndarray, truth: np.ndarray) -> tuple[dict, np.ndarray]:
    """Per-image scores of predicted ``labels`` against ``truth`` and the pixel confusion to pool."""
    confusion = pixel_confusion(labels, truth)
    return {**pixel_scores(confusion), **instance_scores(labels, truth)}, confusion


def score_method(method: str, label_images, samples: list[Sample]) -> tuple[dict, list[dict]]:
    """Summary (pooled pixel scores, per-image instance scores averaged) and per-image rows.

    The summary's ``"by_kind"`` holds the same figures for each kind of image
    (:func:`data.image_kind`: fluorescence, tissue, brightfield) present in ``samples``.
    """
    rows, confusions = [], []
    for sample, labels in zip(samples, label_images):
        scores, confusion = image_scores(labels, sample.truth)
        confusions.append(confusion)
        rows.append({"method": method, "image_id": sample.id, "kind": image_kind(sample.image),
                     "height": labels.shape[0], "width": labels.shape[1], **scores})
    summary = _summary(rows, confusions)
    kinds = [row["kind"] for row in rows]
    summary["by_kind"] = {}
    for kind in (k for k in IMAGE_KINDS if k in kinds):
        members = [index for index, k in enumerate(kinds) if k == kind]
        summary["by_kind"][kind] = _summary([rows[i] for i in members], [confusions[i] for i in members])
    return summary, rows


def _summary(rows: list[dict], confusions: list[np.ndarray]) -> dict:
    count_errors = [row["count_error"] for row in rows]
    return {
        **pixel_scores(np.sum(confusions, axis=0, dtype=np.int64)),
        "dsb_score": float(np.mean([row["dsb_score"] for row in rows])),
        "f1_iou50": float(np.mean([row["f1_iou50"] for row in rows])),
        "count_error_median": float(np.median(count_errors)),
        "count_error_mean": float(np.mean(count_errors)),
        "n_images": len(rows),
    }


def predict_all(model, samples: list[Sample], log=None) -> list[np.ndarray]:
    """``(2, H, W)`` float32 probabilities of every sample, computed once, as the plugin does."""
    probabilities = []
    for index, sample in enumerate(samples, start=1):
        probabilities.append(predict_probabilities(sample.image, model))
        if log is not None and (index % 10 == 0 or index == len(samples)):
            log(f"  inference {index}/{len(samples)}")
    return probabilities


def head_sets(network) -> list[tuple[int, ...] | None]:
    """The sets of output heads calibration tries for ``network``: ``[None]`` (its only output)
    for a single-output model; for a UNet++ with ``n`` heads, all of them (None) and then the
    deepest ``n - 1``, ..., the deepest one alone (its shallow heads see least of each nucleus).
    """
    count = len(getattr(network, "heads", ()))
    if count < 2:
        return [None]
    return [None] + [tuple(range(first, count)) for first in range(1, count)]


def dsb_scores_by_min_size(labels: np.ndarray, truth: np.ndarray, min_sizes) -> list[float]:
    """DSB2018 score of ``labels`` without the objects under each of ``min_sizes`` pixels.

    Equals scoring ``labels_from_probabilities(..., min_size=m)`` for each ``m``: the size
    filter is the last step there and only deletes objects, which leaves every other
    object's IoU unchanged. So one IoU matrix serves every minimum size.
    """
    iou = instance_iou(labels, truth)
    sizes = np.bincount(labels.ravel())
    areas = sizes[1:][sizes[1:] > 0]  # the columns of ``iou``: labels present, in increasing order
    return [scores_from_iou(iou[:, areas >= m])["dsb_score"] for m in min_sizes]


def calibrate(probabilities: list[np.ndarray], samples: list[Sample], thresholds, boundary_thresholds, min_sizes,
              log=None) -> tuple[Settings, list[dict]]:
    """The settings of the grid with the highest mean DSB2018 score (splitting on), and every grid point.

    Ties go to the first point in grid order (lower values first).
    """
    grid, best, best_score = [], None, -1.0
    for threshold in thresholds:
        for boundary_threshold in boundary_thresholds:
            per_image = np.array([
                dsb_scores_by_min_size(
                    labels_from_probabilities(p, threshold, min_size=0, split=True,
                                              boundary_threshold=boundary_threshold),
                    s.truth, min_sizes)
                for p, s in zip(probabilities, samples)
            ])
            for min_size, score in zip(min_sizes, per_image.mean(axis=0)):
                grid.append({"threshold": threshold, "boundary_threshold": boundary_threshold,
                             "min_size": int(min_size), "dsb_score": float(score)})
                if score > best_score:
                    best_score, best = score, Settings(float(threshold), float(boundary_threshold), int(min_size))
        if log is not None:
            log(f"  calibration: threshold {threshold:.2f} done, best so far {best_score:.4f} ({best})")
    return best, grid


def calibrate_splitting(probabilities: list[np.ndarray], samples: list[Sample], settings: Settings,
                        boundary_thresholds, neck_ratios, log=None,
                        seed_min_sizes=(0,)) -> tuple[Settings, list[dict]]:
    """``settings`` with the boundary threshold and neck ratio of the highest mean DSB2018 score, and each score.

    Runs after :func:`calibrate`, whose threshold and minimum size it keeps: the two ways of
    separating nuclei are chosen together, since a cut by shape can take over from boundary
    seeds (neck ratio 0, no cut by shape, gives back :func:`calibrate`'s points), and with
    them the smallest seed (``seed_min_sizes``; 0: every seed counts). Ties go to the first
    point (seed sizes, then neck ratios in the outer loops).
    """
    grid, best, best_score = [], settings, -1.0
    for seed_min_size in seed_min_sizes:
        for ratio in neck_ratios:
            for boundary_threshold in boundary_thresholds:
                trial = Settings(settings.threshold, float(boundary_threshold), settings.min_size, float(ratio),
                                 int(seed_min_size))
                score = float(np.mean([instance_scores(trial.label(p), s.truth)["dsb_score"]
                                       for p, s in zip(probabilities, samples)]))
                grid.append({"neck_ratio": float(ratio), "boundary_threshold": float(boundary_threshold),
                             "dsb_score": score, **({"seed_min_size": int(seed_min_size)} if seed_min_size else {})})
                if score > best_score:
                    best_score, best = score, trial
            if log is not None:
                log(f"  calibration: neck ratio {ratio:g} (seeds >= {seed_min_size} px) done, "
                    f"best so far {best_score:.4f} ({best})")
    return best, grid


def write_calibrated_weights(source: Path, destination: Path, settings: Settings, metrics: dict,
                             calibration: dict, heads: tuple[int, ...] | None = None) -> Path:
    """Copy ``source`` into the folder ``destination`` as ``<name>.safetensors`` with new settings and metrics.

    The tensors are copied unchanged (float16 stays float16); the metadata gets the
    calibrated ``threshold``, ``boundary_threshold``, ``min_size`` and ``neck_ratio``, the output
    ``heads`` to average (None: all; the key is then left out), and ``metrics`` merged into its
    ``"metrics"``. Refuses to overwrite ``source`` itself.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = Path(source)
    metadata = read_metadata(source)
    name = metadata.get("name") or source.stem
    target = Path(destination) / f"{name}{WEIGHTS_SUFFIX}"
    if target.resolve() == source.resolve() or (target.exists() and os.path.samefile(target, source)):
        raise ValueError(f"{target} is the source weights file; write the calibrated copy to another folder")
    with safe_open(str(source), framework="pt") as stream:
        header = dict(stream.metadata() or {})
        tensors = {key: stream.get_tensor(key) for key in stream.keys()}
    metadata.update({
        "threshold": settings.threshold,
        "boundary_threshold": settings.boundary_threshold,
        "min_size": settings.min_size,
        "neck_ratio": settings.neck_ratio,
        **({"seed_min_size": settings.seed_min_size} if settings.seed_min_size else {}),
        "metrics": {**metadata.get("metrics", {}), **metrics},
        "calibration": calibration,
    })
    if not settings.seed_min_size:
        metadata.pop("seed_min_size", None)
    metadata.pop("heads", None)
    if heads is not None:
        metadata["heads"] = list(heads)
    header[METADATA_KEY] = json.dumps(metadata)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    save_file(tensors, str(partial), metadata=header)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)  # safetensors writes 0600; a shipped file should be readable
    os.replace(partial, target)  # a reader never sees a half-written file
    read_metadata(target)
    return target


def markdown_table(results: list[dict], caption: str) -> str:
    """One markdown table: a row per model or baseline, a column per summary metric."""
    header = ["method", *(title for _, title, _ in TABLE_COLUMNS), "threshold / boundary / min size / neck"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for result in results:
        cells = [result["method"], *(fmt.format(result["metrics"][key]) for key, _, fmt in TABLE_COLUMNS),
                 result["settings"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + caption + "\n"


def kind_table(results: list[dict]) -> str:
    """A markdown table of each method's instance scores per kind of image."""
    lines = ["| method | kind | images | mean IoU | DSB2018 score | F1 @ IoU 0.5 | count error (median) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        for kind, metrics in result["metrics"].get("by_kind", {}).items():
            lines.append(f"| {result['method']} | {kind} | {metrics['n_images']} | {metrics['mean_iou']:.3f} | "
                         f"{metrics['dsb_score']:.3f} | {metrics['f1_iou50']:.3f} | {metrics['count_error_median']:.1%} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, nargs="+", required=True, help="weights files to evaluate")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"),
                        help="dsb2018 folder (images/ + labels/ + splits.json) or a Kaggle stage1_train folder")
    parser.add_argument("--split", default="val", help="split of splits.json ('' = every image in the folder)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (sorted ids)")
    parser.add_argument("--json", type=Path, help="write the summaries (and calibration grids) here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--per-image", type=Path, help="write one CSV row per method and image here")
    parser.add_argument("--calibrate", action="store_true",
                        help="grid-search threshold, boundary threshold and min size for the best DSB2018 score")
    parser.add_argument("--write-weights", type=Path, metavar="DEST",
                        help="with --calibrate: folder for calibrated copies <name>.safetensors")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    parser.add_argument("--boundary-thresholds", type=float, nargs="+", default=list(DEFAULT_BOUNDARY_THRESHOLDS))
    parser.add_argument("--min-sizes", type=int, nargs="+", default=list(DEFAULT_MIN_SIZES))
    parser.add_argument("--neck-ratios", type=float, nargs="+", default=list(DEFAULT_NECK_RATIOS),
                        help="after the grid, the neck ratios tried for cutting joined nuclei by shape (0: off), "
                             "each with every boundary threshold, at the grid's threshold and min size")
    parser.add_argument("--seed-min-sizes", type=int, nargs="+", default=[0],
                        help="with the neck ratios, the smallest seeds (pixels) tried: smaller ones seed no nucleus "
                             "(0: all do; e.g. 0 8 16 24 with a boundary threshold as low as 0.005)")
    parser.add_argument("--device", default=None, help="torch device for inference (default: cuda if available)")
    args = parser.parse_args(argv)
    if args.write_weights and not args.calibrate:
        parser.error("--write-weights needs --calibrate")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    samples = load_samples(args.data, args.split, args.limit)
    if not samples:
        raise SystemExit(f"no images in {args.data} (split {args.split!r})")
    split_name = args.split or "all"
    log(f"{len(samples)} images of {args.data} (split {split_name!r})")

    results, per_image, calibrations, written = [], [], {}, []
    for path in args.weights:
        model = load_weights(path)
        model.network.to(device)
        name = model.name
        if any(result["method"] == name for result in results):  # two files of one model: tell them apart
            name = f"{name} ({path})"
        log(f"{name} ({path}): {device}")
        candidates = head_sets(model.network) if args.calibrate else [getattr(model.network, "inference_heads", None)]
        best, tried = None, []
        for heads in candidates:
            if len(candidates) > 1:
                model.network.inference_heads = heads
                log(f"  output heads averaged: {'all' if heads is None else list(heads)}")
            start = time.perf_counter()
            trial = {"heads": heads, "probabilities": predict_all(model, samples, log), "score": 0.0, "entry": None,
                     "settings": Settings(model.threshold, model.boundary_threshold, model.min_size, model.neck_ratio,
                                          model.seed_min_size)}
            trial["inference_seconds"] = time.perf_counter() - start
            if args.calibrate:
                start = time.perf_counter()
                settings, grid = calibrate(trial["probabilities"], samples, args.thresholds,
                                           args.boundary_thresholds, args.min_sizes, log)
                settings, splitting = calibrate_splitting(trial["probabilities"], samples, settings,
                                                          args.boundary_thresholds, args.neck_ratios, log,
                                                          args.seed_min_sizes)
                trial["settings"], trial["score"] = settings, max(point["dsb_score"] for point in splitting)
                trial["entry"] = {"best": vars(settings), "seconds": round(time.perf_counter() - start, 1),
                                  "grid": grid, "splitting": splitting}
                tried.append({"heads": None if heads is None else list(heads), "dsb_score": trial["score"],
                              "settings": vars(settings)})
                log(f"  calibrated: {settings} (DSB2018 score {trial['score']:.4f})")
            if best is None or trial["score"] > best["score"]:
                best = trial  # ties keep the earlier set: all heads first
        probabilities, settings, best_heads = best["probabilities"], best["settings"], best["heads"]
        inference_seconds = best["inference_seconds"]
        if best["entry"] is not None:
            calibrations[name] = best["entry"]
        if len(candidates) > 1:
            model.network.inference_heads = best_heads
            calibrations[name].update(heads=None if best_heads is None else list(best_heads), tried_heads=tried)
            log(f"  output heads kept: {'all' if best_heads is None else list(best_heads)}")
        start = time.perf_counter()
        for method, split in ((name, True), (f"{name}, no splitting", False)):
            summary, rows = score_method(method, (settings.label(p, split) for p in probabilities), samples)
            results.append({"method": method, "weights": str(path), "split_nuclei": split,
                            **({"heads": list(best_heads)} if best_heads is not None else {}),
                            "settings": settings.describe(split) + _heads_note(best_heads),
                            **({"parameters": vars(settings)} if split else {}),
                            "metrics": summary})
            per_image += rows
        postprocess_seconds = time.perf_counter() - start
        results[-2]["seconds"] = {"inference": round(inference_seconds, 1), "postprocess": round(postprocess_seconds, 1)}
        log(f"  inference {inference_seconds:.1f} s, post-processing and scoring {postprocess_seconds:.1f} s")
        if args.write_weights:
            metrics = {split_name: _rounded(results[-2]["metrics"]),
                       f"{split_name}_no_splitting": _rounded(results[-1]["metrics"]),
                       "calibrated_on": f"{split_name} ({len(samples)} images)"}
            calibration = {"objective": "mean DSB2018 instance score, splitting on",
                           "thresholds": list(args.thresholds), "boundary_thresholds": list(args.boundary_thresholds),
                           "min_sizes": list(args.min_sizes), "neck_ratios": list(args.neck_ratios),
                           **({"seed_min_sizes": list(args.seed_min_sizes)} if args.seed_min_sizes != [0] else {}),
                           **({"head_sets": [None if h is None else list(h) for h in candidates]}
                              if len(candidates) > 1 else {})}
            if str(Path(args.write_weights) / f"{model.name}{WEIGHTS_SUFFIX}") in written:
                raise SystemExit(f"two of the weights files are named {model.name!r}; calibrate them separately")
            target = write_calibrated_weights(path, args.write_weights, settings, metrics, calibration, best_heads)
            written.append(str(target))
            log(f"  wrote {target}")

    summary, rows = score_method("Otsu + connected components", (otsu_labels(s.image) for s in samples), samples)
    results.append({"method": "Otsu + connected components", "settings": "Otsu, minority side / - / 0 / -",
                    "metrics": summary})
    per_image += rows

    caption = (f"On `{split_name}` ({len(samples)} images of {args.data.name}). Pixel scores are pooled over all "
               "pixels; instance scores are computed per image, then averaged (count error = |found - true| / true). "
               "\"no splitting\": the same model and settings without the watershed split. Otsu: gray image, "
               "Otsu threshold, the minority side is nucleus, 4-connected components."
               + (" Settings calibrated on this split." if args.calibrate else " Settings as stored in each weights file."))
    table = markdown_table(results, caption) + "\nBy kind of image (told apart by colour and brightness):\n\n" + kind_table(results)
    print(table)
    report = {"data": str(args.data), "split": split_name, "n_images": len(samples),
              "image_ids": [s.id for s in samples], "results": results, "written": written}
    if calibrations:
        report["calibration"] = calibrations
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(table)
    if args.per_image:
        with open(args.per_image, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=PER_IMAGE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(per_image)
    return report


def _heads_note(heads: tuple[int, ...] | None) -> str:
    """The output heads a UNet++ averaged, for the table's settings column ("" for all or one)."""
    return "" if heads is None else f" (heads {', '.join(str(h) for h in heads)})"


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v
            for k, v in metrics.items()}


if __name__ == "__main__":
    main()
