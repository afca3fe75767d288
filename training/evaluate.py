"""Score weights files through the plugin's pipeline on DSB2018 val (as it is and resized), MoNuSeg and CoNSeP test.

Example (the three shipped models and Otsu on every set; one markdown file, the summaries and
the per-image rows in ``runs/eval``)::

    python -m training.evaluate --out runs/eval

and the table of weights/README.md (DSB2018 val only)::

    python -m training.evaluate --sets val --markdown table.md

The sets (``--sets``, default all, in this order): ``val`` (DSB2018's val split), ``val_x0.25``,
``val_x0.5``, ``val_x2``, ``val_x3`` (the same images resized by that factor with
:func:`napari_nucleiseg.scale.rescale_image`, their labels with ``rescale_labels`` to the same
shape: nuclei from about 4 to 150 px across; any ``val_x<factor>`` is accepted),
``monuseg_test`` and ``consep_test`` (the test folders of MoNuSeg 2018 and CoNSeP). Nothing is
chosen on any of them except DSB2018 ``val`` (``--calibrate``). ``--limit N``: the first N
images (sorted ids) of each set.

Each model runs as ``napari_nucleiseg.segment`` runs it (:func:`pipeline_prediction`,
:func:`pipeline_settings`): :func:`napari_nucleiseg.api.predict_at_diameter` (the diameter,
the resize, the check of an estimate) and the model's settings with its min sizes scaled
like segment()'s. ``--diameter``: ``auto`` (the default: segment's own estimate, what a user
gets), ``true`` (each image's true median diameter, from its labels: separates the estimate's
errors from the network's) or ``none`` (every image as it is). A weights file that records
no diameter runs on every image as it is in every mode (the files shipped today).

Calibration: choose threshold, boundary threshold and minimum size on ``val`` and write
a copy of each weights file, with those values and the metrics they reach, to a folder;
every set is then scored with the calibrated settings::

    python -m training.evaluate --weights runs/unet/best.safetensors --split val \
        --calibrate --write-weights weights/ --sets val

A UNet++ averages several output heads; with ``--calibrate`` the heads are chosen too: all of
them, or only the deepest ``k`` (:func:`head_sets`), each set run through the whole grid, the
best kept (written to the file as ``heads``).

In calibration every model runs once per image (:func:`predict_all`, as in the plugin); the
probability maps are kept and re-thresholded for the grid search
(:func:`labels_from_probabilities`, as in the plugin). Scoring the sets keeps nothing but
the scores: one image at a time, through every model, then Otsu.

Metrics. Pixel scores (the case study's mean IoU = mean of foreground and background IoU,
foreground IoU, Dice) are pooled over all pixels of a set. Instance scores (DSB2018
score, F1 at IoU 0.5, relative count error) are computed per image, then averaged over
images (count error: median and mean). Each summary repeats them per kind of image
(fluorescence, tissue, brightfield; ``data.image_kind``), since the kinds score very
differently and a user's images may be all of one kind. For a model that records a
diameter, with ``--diameter auto``: the share of images whose diameter (segment's, after its
check) is within +-25% of the true median diameter (``data.median_diameter`` of the labels),
and the median ratio of the two.

Baselines. "no splitting": the same model and settings, nuclei = connected components of
the thresholded mask. "Otsu": gray = mean of the RGB channels, Otsu's threshold, the side
of it with fewer pixels is nucleus (bright nuclei on dark fluorescence, dark nuclei on
bright tissue or brightfield), 4-connected components, no size filter or hole filling.

Outputs: ``--out DIR`` writes ``DIR/sets.md`` (one table with a row per set and model, then
each set's full table), ``DIR/report.json`` and ``DIR/per_image.csv``; ``--markdown``,
``--json`` and ``--per-image`` write the same to files of their own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components

from napari_nucleiseg.pipeline import Prediction, predict_at_diameter
from napari_nucleiseg.settings import PostprocessSettings
from napari_nucleiseg.postprocess import labels_from_probabilities
from napari_nucleiseg.scale import rescale_image, rescale_labels
from napari_nucleiseg.weights import (
    BUNDLED_MODELS,
    METADATA_KEY,
    WEIGHTS_SUFFIX,
    bundled_weights_path,
    load_weights,
    read_metadata,
)
from training.data import IMAGE_KINDS, image_kind, list_ids, load_pair, median_diameter
from training.metrics import instance_iou, instance_scores, pixel_confusion, pixel_scores, scores_from_iou
from training.metrics import summarize as summarize_scores

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
PER_IMAGE_COLUMNS = ("set", "method", "image_id", "kind", "height", "width", "n_truth", "n_predicted", "mean_iou",
                     "foreground_iou", "dice", "dsb_score", "f1_iou50", "count_error", "diameter_true",
                     "diameter_used", "diameter_estimated", "scale")

#: The sets scored by default, in the tables' order: DSB2018 val as it is and resized (nuclei
#: from about 4 to 150 px across), then the two H&E test sets, which no model trained on.
DEFAULT_SETS = ("val", "val_x0.25", "val_x0.5", "val_x2", "val_x3", "monuseg_test", "consep_test")
#: Where the test sets live, relative to the repository (as ``--data`` for DSB2018).
TEST_SET_FOLDERS = {"monuseg_test": Path("../shared/data/monuseg2018/test"),
                    "consep_test": Path("../shared/data/consep/test")}
#: ``--diameter``: segment()'s estimate, each image's true median diameter, or no resizing.
DIAMETER_MODES = ("auto", "true", "none")
#: An estimated diameter is counted right within this relative error of the true median diameter.
DIAMETER_TOLERANCE = 0.25

#: The one-row-per-set-and-model table: key, markdown column header, format.
SETS_COLUMNS = (
    ("dsb_score", "DSB2018 score (mean/image)", "{:.3f}"),
    ("mean_iou", "mean IoU (pooled)", "{:.3f}"),
    ("f1_iou50", "F1 @ IoU 0.5 (mean/image)", "{:.3f}"),
    ("count_error_median", "count error (median/image)", "{:.1%}"),
    ("diameter_within", "diameter within ±25%", "{:.0%}"),
    ("diameter_ratio_median", "estimate / true (median)", "{:.2f}"),
)


@dataclass
class Sample:
    """One image ``(H, W, 3)`` uint8 and its instance labels ``(H, W)`` int32."""

    id: str
    image: np.ndarray
    truth: np.ndarray


#: The settings the evaluation scores and calibrates: the package's one settings object.
Settings = PostprocessSettings


def label(settings: PostprocessSettings, probabilities: np.ndarray, split: bool = True) -> np.ndarray:
    """The labels ``settings`` make of ``probabilities``, with splitting on or off."""
    return labels_from_probabilities(probabilities, **settings.replace(split=split).options())


def prediction_labels(model, prediction, split: bool = True) -> np.ndarray:
    """The labels ``segment()`` makes of a :func:`pipeline_prediction`: ``model``'s settings at the
    prediction's scale."""
    return label(pipeline_settings(model, prediction.scale), prediction.probabilities, split)


def describe(settings: PostprocessSettings, split: bool = True) -> str:
    """``threshold / boundary threshold / min size / neck ratio``, as the reports show settings."""
    boundary = f"{settings.boundary_threshold:g}" if split else "-"
    neck = f"{settings.neck_ratio:g}" if split else "-"
    seeds = f", seeds >= {settings.seed_min_size} px" if split and settings.seed_min_size else ""
    return f"{settings.threshold:.2f} / {boundary} / {settings.min_size} / {neck}{seeds}"


def load_samples(data: Path, split: str | None, limit: int | None = None) -> list[Sample]:
    """The first ``limit`` pairs (sorted ids) of ``split``, or of the whole folder when ``split`` is empty."""
    return [Sample(i, *load_pair(data, i)) for i in list_ids(data, split or None)[:limit]]


@dataclass(frozen=True)
class EvalSet:
    """A set to score: the images of ``folder`` (``split`` of its splits.json, or all of them when
    None), resized by ``factor``."""

    name: str
    folder: Path
    split: str | None = None
    factor: float = 1.0

    def describe(self) -> str:
        split = f" `{self.split}`" if self.split else ""
        resized = f", resized x{self.factor:g}" if self.factor != 1 else ""
        return f"{self.folder}{split}{resized}"


def rescale_factor(name: str) -> float | None:
    """The factor of a rescaled val set's name (``"val_x0.25"`` -> 0.25); None for any other name."""
    if not name.startswith("val_x"):
        return None
    try:
        factor = float(name[len("val_x"):])
    except ValueError:
        return None
    return factor if math.isfinite(factor) and factor > 0 else None


def parse_sets(text: str) -> list[str]:
    """The set names of a comma-separated list, checked, in the order given, each once (``all``:
    :data:`DEFAULT_SETS`). Raises ``ValueError`` naming the valid names."""
    names = []
    for name in (part.strip() for part in text.split(",")):
        for one in DEFAULT_SETS if name == "all" else (name,) if name else ():
            if one != "val" and one not in TEST_SET_FOLDERS and rescale_factor(one) is None:
                raise ValueError(f"unknown set {one!r}; expected val, val_x<factor> (e.g. val_x0.5), "
                                 f"{', '.join(TEST_SET_FOLDERS)} or all")
            if one not in names:
                names.append(one)
    if not names:
        raise ValueError("no set named; expected e.g. " + ",".join(DEFAULT_SETS))
    return names


def resolve_set(name: str, dsb2018: Path, split: str | None = "val", test_folders: dict | None = None) -> EvalSet:
    """The :class:`EvalSet` of a name from :func:`parse_sets`: DSB2018's ``split`` for ``val`` and
    ``val_x<factor>``; a test folder (``test_folders``, default :data:`TEST_SET_FOLDERS`) for the others."""
    folders = {**TEST_SET_FOLDERS, **(test_folders or {})}
    if name in folders:
        return EvalSet(name, Path(folders[name]))
    factor = 1.0 if name == "val" else rescale_factor(name)
    if factor is None:
        raise ValueError(f"unknown set {name!r}")
    return EvalSet(name, Path(dsb2018), split or None, factor)


def rescaled_sample(sample: Sample, factor: float) -> Sample:
    """``sample`` resized by ``factor``: the image with ``rescale_image`` (as the plugin resizes),
    the labels with ``rescale_labels`` (nearest neighbour) to exactly the image's new shape."""
    if factor == 1:
        return sample
    image = rescale_image(sample.image, factor)
    return Sample(sample.id, image, rescale_labels(sample.truth, image.shape[:2]))


def set_ids(eval_set: EvalSet, limit: int | None = None) -> list[str]:
    """The first ``limit`` ids (sorted) of ``eval_set``."""
    return list_ids(eval_set.folder, eval_set.split)[:limit]


def set_samples(eval_set: EvalSet, limit: int | None = None) -> Iterator[Sample]:
    """The samples of ``eval_set``, loaded (and resized) one at a time: a set resized x3 would not fit
    in memory at once."""
    for sample_id in set_ids(eval_set, limit):
        yield rescaled_sample(Sample(sample_id, *load_pair(eval_set.folder, sample_id)), eval_set.factor)


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
        row, confusion = image_row(method, sample, labels)
        rows.append(row)
        confusions.append(confusion)
    return summarize(rows, confusions), rows


def image_row(method: str, sample: Sample, labels: np.ndarray, kind: str | None = None) -> tuple[dict, np.ndarray]:
    """One per-image row of ``method`` (scores of ``labels`` against ``sample.truth``) and its pixel confusion."""
    scores, confusion = image_scores(labels, sample.truth)
    return {"method": method, "image_id": sample.id, "kind": kind or image_kind(sample.image),
            "height": labels.shape[0], "width": labels.shape[1], **scores}, confusion


def summarize(rows: list[dict], confusions: list[np.ndarray]) -> dict:
    """Summary of one method's per-image rows, with ``"by_kind"`` (see :func:`score_method`)."""
    summary = _summary(rows, confusions)
    kinds = [row["kind"] for row in rows]
    summary["by_kind"] = {}
    for kind in (k for k in IMAGE_KINDS if k in kinds):
        members = [index for index, k in enumerate(kinds) if k == kind]
        summary["by_kind"][kind] = _summary([rows[i] for i in members], [confusions[i] for i in members])
    return summary


def _summary(rows: list[dict], confusions: list[np.ndarray]) -> dict:
    return summarize_scores(rows, np.sum(confusions, axis=0, dtype=np.int64))


def predict_all(model, samples: list[Sample], log=None) -> list[np.ndarray]:
    """``(2, H, W)`` float32 probabilities of every sample, computed once, as the plugin does."""
    from napari_nucleiseg.inference import predict_probabilities

    probabilities = []
    for index, sample in enumerate(samples, start=1):
        probabilities.append(predict_probabilities(sample.image, model))
        if log is not None and (index % 10 == 0 or index == len(samples)):
            log(f"  inference {index}/{len(samples)}")
    return probabilities


def pipeline_prediction(image: np.ndarray, model, mode: str = "auto", true_diameter: float | None = None):
    """The ``Prediction`` (probabilities at the image's resolution, diameter, estimated, scale) that
    ``napari_nucleiseg.segment`` works from, for a ``--diameter`` ``mode``.

    ``"auto"``: segment's own (``predict_at_diameter`` without a diameter: estimated, then
    checked); ``"true"``: as ``segment(diameter=true_diameter)`` (an image without nuclei, with no
    diameter to give, runs as it is); ``"none"``: the image as it is (scale 1).
    """
    from napari_nucleiseg.inference import predict_probabilities

    if mode not in DIAMETER_MODES:
        raise ValueError(f"unknown diameter mode {mode!r}; expected one of {', '.join(DIAMETER_MODES)}")
    if mode == "none" or (mode == "true" and not true_diameter):
        return Prediction(predict_probabilities(image, model), None, False, 1.0)
    return predict_at_diameter(image, model, true_diameter if mode == "true" else None)


def pipeline_settings(model, scale: float = 1.0) -> Settings:
    """``model``'s post-processing as segment() applies it to an image the network saw resized by
    ``scale``: its thresholds and neck ratio, its min sizes (pixels of its own frame) in the image's pixels."""
    return model.settings_at(scale)


def apply_settings(model, settings: Settings) -> None:
    """Give ``model`` the calibrated ``settings``, as loading the file :func:`write_calibrated_weights` wrote would."""
    model.metadata.update(threshold=settings.threshold, boundary_threshold=settings.boundary_threshold,
                          min_size=settings.min_size, neck_ratio=settings.neck_ratio,
                          seed_min_size=settings.seed_min_size)


def diameter_summary(rows: list[dict]) -> dict:
    """How well the diameters of ``rows`` (``diameter_used``, ``diameter_estimated``) match the truth
    (``diameter_true``): ``diameter_within``, the share of images with nuclei whose diameter was
    estimated within :data:`DIAMETER_TOLERANCE` of the truth (no estimate counts as a miss);
    ``diameter_ratio_median``, the median estimate / truth (None without any estimate);
    ``diameter_not_estimated``, the images with nuclei but no estimate."""
    judged = [row for row in rows if row.get("diameter_true")]
    ratios = [row["diameter_used"] / row["diameter_true"] for row in judged
              if row.get("diameter_estimated") and row.get("diameter_used")]
    within = sum(abs(ratio - 1) <= DIAMETER_TOLERANCE for ratio in ratios)
    return {"diameter_within": within / len(judged) if judged else None,
            "diameter_ratio_median": float(np.median(ratios)) if ratios else None,
            "diameter_not_estimated": len(judged) - len(ratios)}


def evaluate_set(samples: Iterable[Sample], models: list[tuple[str, Path, object]], mode: str = "auto",
                 set_name: str = "", log=None) -> tuple[list[dict], list[dict]]:
    """Score every model (``(name, path, NucleiModel)``, splitting on and off) and Otsu on ``samples``.

    One image at a time: each model's :func:`pipeline_prediction` and :func:`pipeline_settings`,
    labelled with and without splitting and scored, then kept as scores only. Returns one result
    per method (models in order, each then without splitting, then Otsu; ``"metrics"`` as
    :func:`score_method`'s summary, plus :func:`diameter_summary`'s figures for a model that
    records a diameter, with ``mode`` ``"auto"``) and the per-image rows, method by method.
    """
    otsu = "Otsu + connected components"
    methods = [m for name, _, _ in models for m in (name, f"{name}, no splitting")] + [otsu]
    rows = {method: [] for method in methods}
    confusions = {method: [] for method in methods}
    seconds = {name: {"inference": 0.0, "postprocess": 0.0} for name, _, _ in models}
    count = 0
    for count, sample in enumerate(samples, start=1):
        kind, true_diameter = image_kind(sample.image), median_diameter(sample.truth)
        measured = {"set": set_name, "diameter_true": true_diameter}
        for name, _, model in models:
            start = time.perf_counter()
            prediction = pipeline_prediction(sample.image, model, mode, true_diameter)
            seconds[name]["inference"] += time.perf_counter() - start
            start = time.perf_counter()
            settings = pipeline_settings(model, prediction.scale)
            for method, split in ((name, True), (f"{name}, no splitting", False)):
                row, confusion = image_row(method, sample, label(settings, prediction.probabilities, split), kind)
                rows[method].append({**measured, **row, "diameter_used": prediction.diameter,
                                     "diameter_estimated": prediction.estimated, "scale": prediction.scale})
                confusions[method].append(confusion)
            seconds[name]["postprocess"] += time.perf_counter() - start
        row, confusion = image_row(otsu, sample, otsu_labels(sample.image), kind)
        rows[otsu].append({**measured, **row})
        confusions[otsu].append(confusion)
        if log is not None and count % 10 == 0:
            log(f"  {set_name}: {count} images")
    if not count:
        return [], []
    results = []
    for name, path, model in models:
        base = pipeline_settings(model)
        heads = getattr(model.network, "inference_heads", None)
        for method, split in ((name, True), (f"{name}, no splitting", False)):
            metrics = summarize(rows[method], confusions[method])
            if model.diameter is not None and mode == "auto":
                metrics.update(diameter_summary(rows[method]))
            scaled = ", min sizes scaled with the image" if model.diameter is not None and mode != "none" else ""
            results.append({"method": method, "weights": str(path), "split_nuclei": split,
                            **({"heads": list(heads)} if heads is not None else {}),
                            "diameter": model.diameter,
                            "settings": describe(base, split) + _heads_note(heads) + scaled,
                            **({"parameters": vars(base)} if split else {}),
                            **({"seconds": {k: round(v, 1) for k, v in seconds[name].items()}} if split else {}),
                            "metrics": metrics})
    results.append({"method": otsu, "settings": "Otsu, minority side / - / 0 / -",
                    "metrics": summarize(rows[otsu], confusions[otsu])})
    return results, [row for method in methods for row in rows[method]]


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
                trial = settings.replace(boundary_threshold=float(boundary_threshold), neck_ratio=float(ratio),
                                         seed_min_size=int(seed_min_size))
                score = float(np.mean([instance_scores(label(trial, p), s.truth)["dsb_score"]
                                       for p, s in zip(probabilities, samples)]))
                grid.append({"neck_ratio": float(ratio), "boundary_threshold": float(boundary_threshold),
                             "dsb_score": score, **({"seed_min_size": int(seed_min_size)} if seed_min_size else {})})
                if score > best_score:
                    best_score, best = score, trial
            if log is not None:
                log(f"  calibration: neck ratio {ratio:g} (seeds >= {seed_min_size} px) done, "
                    f"best so far {best_score:.4f} ({best})")
    return best, grid


def make_readable(path: Path) -> None:
    """Give ``path`` the permissions a new file gets (umask): safetensors writes 0600, and a shipped
    weights file should be readable."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_calibrated_weights(source: Path, destination: Path, settings: Settings, metrics: dict,
                             calibration: dict, heads: tuple[int, ...] | None = None,
                             extra: dict | None = None) -> Path:
    """Copy ``source`` into the folder ``destination`` as ``<name>.safetensors`` with new settings and metrics.

    The tensors are copied unchanged (float16 stays float16); the metadata gets the
    calibrated ``threshold``, ``boundary_threshold``, ``min_size`` and ``neck_ratio``, the output
    ``heads`` to average (None: all; the key is then left out), ``metrics`` merged into its
    ``"metrics"``, and the keys of ``extra`` set. Refuses to overwrite ``source`` itself.
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
        **(extra or {}),
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
    make_readable(partial)
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


SETS_HEADER = ("| set | images | method | " + " | ".join(title for _, title, _ in SETS_COLUMNS) + " |\n"
               "| --- | ---: | --- |" + " ---: |" * len(SETS_COLUMNS))


def sets_rows(set_name: str, results: list[dict]) -> list[str]:
    """The rows of the table of all sets for one set: each model (splitting on) and Otsu; ``-`` where a
    figure does not apply (no diameter recorded or estimated)."""
    lines = []
    for result in results:
        if result.get("split_nuclei") is False:
            continue
        metrics = result["metrics"]
        cells = [set_name, str(metrics["n_images"]), result["method"],
                 *("-" if metrics.get(key) is None else fmt.format(metrics[key]) for key, _, fmt in SETS_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, nargs="+", default=None,
                        help="weights files to evaluate (default: the shipped " + ", ".join(BUNDLED_MODELS) + ")")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"),
                        help="dsb2018 folder (images/ + labels/ + splits.json) or a Kaggle stage1_train folder")
    parser.add_argument("--split", default="val",
                        help="split of splits.json for the sets val and val_x<factor> and for --calibrate "
                             "('' = every image in the folder)")
    parser.add_argument("--sets", type=_sets, default=list(DEFAULT_SETS),
                        help="comma-separated sets to score, in this order (default: all = " + ",".join(DEFAULT_SETS)
                             + "; any val_x<factor> works)")
    for name, folder in TEST_SET_FOLDERS.items():
        parser.add_argument(f"--{name.split('_')[0]}", type=Path, default=folder, dest=name,
                            help=f"folder of the set {name} (images/ + labels/; default {folder})")
    parser.add_argument("--diameter", choices=DIAMETER_MODES, default="auto",
                        help="nucleus diameter given to models that record one: auto = segment()'s estimate (what "
                             "users get), true = each image's true median diameter, none = no resizing")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (sorted ids) of each set")
    parser.add_argument("--out", type=Path, help="folder for sets.md, report.json and per_image.csv")
    parser.add_argument("--json", type=Path, help="write the summaries (and calibration grids) here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--per-image", type=Path, help="write one CSV row per set, method and image here")
    parser.add_argument("--calibrate", action="store_true",
                        help="grid-search threshold, boundary threshold and min size for the best DSB2018 score on "
                             "--split (val), then score the sets with them")
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
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.weights is None:
        args.weights = [bundled_weights_path(name) for name in BUNDLED_MODELS]
    return args


def _sets(text: str) -> list[str]:
    try:
        return parse_sets(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def calibrate_model(name: str, path: Path, model, samples: list[Sample], args: argparse.Namespace, split_name: str,
                    log) -> tuple[dict, Path | None]:
    """Choose ``model``'s settings (and a UNet++'s heads) on ``samples``, give them to ``model``, and with
    ``--write-weights`` write the calibrated copy; returns the calibration entry and the file written.

    The figures written to the file are those of the calibration's own maps (the image as it is),
    splitting on and off, as before the sets existed. (A model that records a diameter works in
    the frame of that diameter, where calibrate.py chooses its settings.)
    """
    candidates = head_sets(model.network)
    best, tried = None, []
    for heads in candidates:
        if len(candidates) > 1:
            model.network.inference_heads = heads
            log(f"  output heads averaged: {'all' if heads is None else list(heads)}")
        probabilities = predict_all(model, samples, log)
        start = time.perf_counter()
        settings, grid = calibrate(probabilities, samples, args.thresholds, args.boundary_thresholds,
                                   args.min_sizes, log)
        settings, splitting = calibrate_splitting(probabilities, samples, settings, args.boundary_thresholds,
                                                  args.neck_ratios, log, args.seed_min_sizes)
        score = max(point["dsb_score"] for point in splitting)
        entry = {"best": vars(settings), "seconds": round(time.perf_counter() - start, 1), "grid": grid,
                 "splitting": splitting}
        tried.append({"heads": None if heads is None else list(heads), "dsb_score": score, "settings": vars(settings)})
        log(f"  calibrated: {settings} (DSB2018 score {score:.4f})")
        if best is None or score > best["score"]:  # ties keep the earlier set: all heads first
            best = {"heads": heads, "probabilities": probabilities, "settings": settings, "score": score,
                    "entry": entry}
    settings, best_heads, entry = best["settings"], best["heads"], best["entry"]
    if len(candidates) > 1:
        model.network.inference_heads = best_heads
        entry.update(heads=None if best_heads is None else list(best_heads), tried_heads=tried)
        log(f"  output heads kept: {'all' if best_heads is None else list(best_heads)}")
    apply_settings(model, settings)
    if not args.write_weights:
        return entry, None
    scored = {split: score_method(name, (label(settings, p, split) for p in best["probabilities"]), samples)[0]
              for split in (True, False)}
    metrics = {split_name: _rounded(scored[True]), f"{split_name}_no_splitting": _rounded(scored[False]),
               "calibrated_on": f"{split_name} ({len(samples)} images)"}
    calibration = {"objective": "mean DSB2018 instance score, splitting on",
                   "thresholds": list(args.thresholds), "boundary_thresholds": list(args.boundary_thresholds),
                   "min_sizes": list(args.min_sizes), "neck_ratios": list(args.neck_ratios),
                   **({"seed_min_sizes": list(args.seed_min_sizes)} if args.seed_min_sizes != [0] else {}),
                   **({"head_sets": [None if h is None else list(h) for h in candidates]}
                      if len(candidates) > 1 else {})}
    target = write_calibrated_weights(path, args.write_weights, settings, metrics, calibration, best_heads)
    log(f"  wrote {target}")
    return entry, target


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    split_name = args.split or "all"
    models = []
    for path in args.weights:
        model = load_weights(path)
        model.network.to(device)
        name = model.name
        if any(known == name for known, _, _ in models):  # two files of one model: tell them apart
            name = f"{name} ({path})"
        models.append((name, Path(path), model))
        diameter = "no diameter" if model.diameter is None else f"diameter {model.diameter:g} px"
        log(f"{name} ({path}): {device}, {diameter}")

    calibrations, written = {}, []
    if args.calibrate:
        samples = load_samples(args.data, args.split, args.limit)
        if not samples:
            raise SystemExit(f"no images in {args.data} (split {args.split!r})")
        log(f"calibration on {len(samples)} images of {args.data} (split {split_name!r})")
        for name, path, model in models:
            if args.write_weights and str(Path(args.write_weights) / f"{model.name}{WEIGHTS_SUFFIX}") in written:
                raise SystemExit(f"two of the weights files are named {model.name!r}; calibrate them separately")
            log(f"{name}: calibration")
            calibrations[name], target = calibrate_model(name, path, model, samples, args, split_name, log)
            if target is not None:
                written.append(str(target))
        del samples

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    print(SETS_HEADER, flush=True)
    report = {"data": str(args.data), "split": split_name, "diameter": args.diameter, "device": device,
              "weights": [str(path) for _, path, _ in models], "sets": {}, "written": written,
              **({"calibration": calibrations} if calibrations else {})}
    per_image = []
    for set_name in args.sets:
        eval_set = resolve_set(set_name, args.data, args.split, {n: getattr(args, n) for n in TEST_SET_FOLDERS})
        ids = set_ids(eval_set, args.limit)
        if not ids:
            raise SystemExit(f"no images in {eval_set.describe()} (set {set_name})")
        log(f"set {set_name}: {len(ids)} images of {eval_set.describe()}")
        start = time.perf_counter()
        results, rows = evaluate_set(set_samples(eval_set, args.limit), models, args.diameter, set_name, log)
        report["sets"][set_name] = {"source": eval_set.describe(), "n_images": len(ids), "image_ids": ids,
                                    "seconds": round(time.perf_counter() - start, 1), "results": results}
        per_image += rows
        print("\n".join(sets_rows(set_name, results)), flush=True)
        log(f"set {set_name} done in {report['sets'][set_name]['seconds']:.0f} s: "
            + ", ".join(f"{r['method']} {r['metrics']['dsb_score']:.3f}" for r in results
                        if r.get("split_nuclei") is not False))
        # The main set's figures where a reader of a one-split report looks for them (model_card.py).
        main_set = "val" if "val" in report["sets"] else next(iter(report["sets"]))
        report.update(set=main_set, n_images=report["sets"][main_set]["n_images"],
                      image_ids=report["sets"][main_set]["image_ids"], results=report["sets"][main_set]["results"],
                      seconds=round(time.perf_counter() - started, 1))
        text = sets_markdown(report["sets"], args.diameter, split_name, args.calibrate)
        write_outputs(args, report, text, per_image)  # after every set: a long run that stops keeps what it did
    print(text.split("\n\n", 1)[1])  # the table of all sets is printed already, row by row
    log(f"done in {report['seconds']:.0f} s" + (f"; wrote {args.out / 'sets.md'}" if args.out else ""))
    return report


def sets_markdown(sets: dict, diameter: str, split_name: str, calibrated: bool) -> str:
    """The markdown of a run: the table of all sets (a row per set and model), then each set's full
    table and its table by kind of image."""
    settings_note = (f" Settings calibrated on DSB2018 `{split_name}`." if calibrated
                     else " Settings as stored in each weights file.")
    caption = ("One row per set and model (splitting on) and the Otsu baseline. DSB2018 score = per image, the mean "
               "over IoU 0.5..0.95 of TP/(TP+FP+FN), averaged over images; mean IoU pooled over all pixels; count "
               f"error = |found - true| / true. Nucleus diameter: `--diameter {diameter}` ("
               + {"auto": "segment()'s estimate, as users get it",
                  "true": "each image's true median diameter, from its labels",
                  "none": "no resizing"}[diameter]
               + "); a model that records no diameter runs on every image as it is. Diameter columns (models with "
               "a diameter, `auto` only): the share of images whose diameter is within ±25% of the true median "
               "diameter, and the median ratio estimate / true. Nothing was chosen on these sets except DSB2018 "
               f"`{split_name}`." + settings_note)
    text = SETS_HEADER + "\n" + "\n".join(line for name, entry in sets.items()
                                         for line in sets_rows(name, entry["results"]))
    text += f"\n\n{caption}\n"
    for name, entry in sets.items():
        detail = (f"On `{name}` ({entry['n_images']} images of {entry['source']}). Pixel scores are pooled over all "
                  "pixels; instance scores are computed per image, then averaged (count error = |found - true| / "
                  "true). \"no splitting\": the same model and settings without the watershed split. Otsu: gray "
                  "image, Otsu threshold, the minority side is nucleus, 4-connected components." + settings_note)
        text += (f"\n## {name}\n\n" + markdown_table(entry["results"], detail)
                 + "\nBy kind of image (told apart by colour and brightness):\n\n" + kind_table(entry["results"]))
    return text


def write_outputs(args: argparse.Namespace, report: dict, text: str, per_image: list[dict]) -> None:
    """Write the report (``--json``), the markdown (``--markdown``) and the per-image rows (``--per-image``),
    and all three to ``--out`` (report.json, sets.md, per_image.csv)."""
    outputs = [(args.json, args.markdown, args.per_image)]
    if args.out:
        outputs.append((args.out / "report.json", args.out / "sets.md", args.out / "per_image.csv"))
    for json_path, markdown_path, rows_path in outputs:
        if json_path:
            json_path.write_text(json.dumps(report, indent=1))
        if markdown_path:
            markdown_path.write_text(text)
        if rows_path:
            with open(rows_path, "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=PER_IMAGE_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(per_image)


def _heads_note(heads: tuple[int, ...] | None) -> str:
    """The output heads a UNet++ averaged, for the table's settings column ("" for all or one)."""
    return "" if heads is None else f" (heads {', '.join(str(h) for h in heads)})"


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v
            for k, v in metrics.items()}


if __name__ == "__main__":
    main()
