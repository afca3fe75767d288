"""Segmentation scores used for validation, calibration and the model cards."""

from __future__ import annotations

import numpy as np

#: The DSB2018 instance score averages precision over these IoU thresholds.
IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def pixel_confusion(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[tp, fp, fn, tn]`` pixel counts of two masks (pool them over images before :func:`pixel_scores`)."""
    predicted, truth = predicted > 0, truth > 0
    tp = np.count_nonzero(predicted & truth)
    fp = np.count_nonzero(predicted & ~truth)
    fn = np.count_nonzero(~predicted & truth)
    return np.array([tp, fp, fn, predicted.size - tp - fp - fn], dtype=np.int64)


def pixel_scores(confusion: np.ndarray) -> dict[str, float]:
    """Foreground IoU, background IoU, the case study's mean IoU (their mean) and Dice.

    A class absent from both masks counts as perfectly segmented (1.0): an image
    without nuclei where none are found scores 1, not 0.
    """
    tp, fp, fn, tn = (float(v) for v in confusion)
    fg = _ratio(tp, tp + fp + fn)
    bg = _ratio(tn, tn + fp + fn)
    return {"mean_iou": (fg + bg) / 2, "foreground_iou": fg, "dice": _ratio(2 * tp, 2 * tp + fp + fn)}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 1.0


def instance_iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU matrix ``(n_truth, n_predicted)`` of two label images (labels need not be consecutive).

    Rows and columns follow the increasing non-zero label values.
    """
    if np.shape(predicted) != np.shape(truth):
        raise ValueError(f"the prediction {np.shape(predicted)} and the truth {np.shape(truth)} differ in shape")
    truth_ids, truth_inv = _ids_and_inverse(truth)
    pred_ids, pred_inv = _ids_and_inverse(predicted)
    n_t, n_p = len(truth_ids), len(pred_ids)
    overlap = np.bincount(truth_inv * n_p + pred_inv, minlength=n_t * n_p).reshape(n_t, n_p)
    area_t = overlap.sum(axis=1, keepdims=True)
    area_p = overlap.sum(axis=0, keepdims=True)
    iou = overlap / np.maximum(area_t + area_p - overlap, 1)
    keep_t = truth_ids != 0
    keep_p = pred_ids != 0
    return iou[np.ix_(keep_t, keep_p)]


#: Above this label value, :func:`_ids_and_inverse` sorts instead of using a lookup table.
_LOOKUP_MAX_LABEL = 1 << 24


def _ids_and_inverse(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted label values present and each pixel's index among them (flat), like ``np.unique``.

    Label images are small non-negative integers; a lookup table then does in linear time
    what sorting every pixel does in ``n log n`` (the bulk of the time in calibration).
    """
    flat = np.asarray(labels).ravel()
    if flat.dtype.kind in "iub" and flat.size and flat.min() >= 0 and flat.max() < _LOOKUP_MAX_LABEL:
        flat = flat.astype(np.intp, copy=False)
        ids = np.flatnonzero(np.bincount(flat))
        lookup = np.zeros(ids[-1] + 1, dtype=np.intp)
        lookup[ids] = np.arange(ids.size)
        return ids, lookup[flat]
    ids, inverse = np.unique(flat, return_inverse=True)
    return ids, inverse.ravel()


def instance_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """DSB2018 score (mean over IoU 0.5..0.95 of TP/(TP+FP+FN)), F1 at IoU 0.5 and counts.

    See :func:`scores_from_iou`.
    """
    return scores_from_iou(instance_iou(predicted, truth))


def scores_from_iou(iou: np.ndarray) -> dict[str, float]:
    """Instance scores from an IoU matrix ``(n_truth, n_predicted)`` (:func:`instance_iou`).

    A pair matches when its IoU is above the threshold; above 0.5 a match is unique,
    so counting the entries above it counts matched objects. With neither truth nor
    prediction, precision and F1 are 1. The relative count error is
    ``|n_predicted - n_truth| / n_truth`` (divided by 1 when there is no truth).
    Dropping columns of ``iou`` scores the prediction without those objects.
    """
    n_truth, n_pred = iou.shape
    precisions = []
    f1_05 = 0.0
    for t in IOU_THRESHOLDS:
        tp = int(np.count_nonzero(iou > t))
        fp, fn = n_pred - tp, n_truth - tp
        precisions.append(_ratio(tp, tp + fp + fn))
        if np.isclose(t, 0.5):
            f1_05 = _ratio(2 * tp, 2 * tp + fp + fn)
    count_error = abs(n_pred - n_truth) / max(n_truth, 1)
    return {
        "dsb_score": float(np.mean(precisions)),
        "f1_iou50": float(f1_05),
        "count_error": float(count_error),
        "n_truth": n_truth,
        "n_predicted": n_pred,
    }


def summarize(per_image: list[dict], confusion: np.ndarray) -> dict:
    """The summary of a set: the pixel scores of its summed ``confusion`` (:func:`pixel_confusion`),
    and the mean (count error: median and mean) of the per-image scores of :func:`instance_scores`."""
    count_errors = [scores["count_error"] for scores in per_image]
    return {
        **pixel_scores(np.asarray(confusion, dtype=np.int64)),
        "dsb_score": float(np.mean([scores["dsb_score"] for scores in per_image])),
        "f1_iou50": float(np.mean([scores["f1_iou50"] for scores in per_image])),
        "count_error_median": float(np.median(count_errors)),
        "count_error_mean": float(np.mean(count_errors)),
        "n_images": len(per_image),
    }
