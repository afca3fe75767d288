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
    """Foreground IoU, background IoU, the case study's mean IoU (their mean) and Dice."""
    tp, fp, fn, tn = (float(v) for v in confusion)
    fg = tp / max(tp + fp + fn, 1.0)
    bg = tn / max(tn + fp + fn, 1.0)
    return {"mean_iou": (fg + bg) / 2, "foreground_iou": fg, "dice": 2 * tp / max(2 * tp + fp + fn, 1.0)}


def instance_iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU matrix ``(n_truth, n_predicted)`` of two label images (labels need not be consecutive)."""
    truth_ids, truth_inv = np.unique(truth, return_inverse=True)
    pred_ids, pred_inv = np.unique(predicted, return_inverse=True)
    n_t, n_p = len(truth_ids), len(pred_ids)
    overlap = np.bincount(truth_inv.ravel() * n_p + pred_inv.ravel(), minlength=n_t * n_p).reshape(n_t, n_p)
    area_t = overlap.sum(axis=1, keepdims=True)
    area_p = overlap.sum(axis=0, keepdims=True)
    iou = overlap / np.maximum(area_t + area_p - overlap, 1)
    keep_t = truth_ids != 0
    keep_p = pred_ids != 0
    return iou[np.ix_(keep_t, keep_p)]


def instance_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """DSB2018 score (mean over IoU 0.5..0.95 of TP/(TP+FP+FN)), F1 at IoU 0.5 and counts.

    With IoU > 0.5 a match is unique, so thresholding the IoU matrix matches objects.
    """
    iou = instance_iou(predicted, truth)
    n_truth, n_pred = iou.shape
    precisions = []
    f1_05 = 0.0
    for t in IOU_THRESHOLDS:
        tp = int(np.count_nonzero(iou > t))
        fp, fn = n_pred - tp, n_truth - tp
        denominator = tp + fp + fn
        precisions.append(tp / denominator if denominator else 1.0)
        if np.isclose(t, 0.5):
            f1_05 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    count_error = abs(n_pred - n_truth) / max(n_truth, 1)
    return {
        "dsb_score": float(np.mean(precisions)),
        "f1_iou50": float(f1_05),
        "count_error": float(count_error),
        "n_truth": n_truth,
        "n_predicted": n_pred,
    }
