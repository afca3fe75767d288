"""From probability maps to instance labels, and from labels to counts and measurements.

numpy, scipy, scikit-image and pandas only: no torch, no Qt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.measure import regionprops_table
from skimage.segmentation import relabel_sequential, watershed

#: Columns of :func:`measure_nuclei`, in order. Bounding boxes are half-open, like
#: Python slices: ``labels[bbox_min_y:bbox_max_y, bbox_min_x:bbox_max_x]``.
MEASUREMENT_COLUMNS = (
    "label",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "mean_intensity",
    "eccentricity",
    "perimeter",
    "equivalent_diameter",
    "solidity",
)

_INTEGER_COLUMNS = ("label", "area", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")

_UINT16_MAX = np.iinfo(np.uint16).max


def labels_from_probabilities(
    probabilities: np.ndarray,
    threshold: float = 0.5,
    *,
    min_size: int = 10,
    split: bool = True,
    boundary_threshold: float = 0.5,
) -> np.ndarray:
    """Instance labels from nucleus/boundary probabilities.

    Threshold -> fill holes -> with ``split``, a seeded watershed that separates
    touching nuclei (seeds are the nucleus pixels the network does not call
    boundary, grown back to fill the mask), otherwise connected components ->
    drop objects under ``min_size`` pixels -> renumber.

    Parameters
    ----------
    probabilities : ndarray
        ``(2, H, W)`` floats in [0, 1]: channel 0 nucleus, channel 1 nucleus boundary.
        NaN counts as 0 (background, not boundary).
    threshold : float
        Pixels with a nucleus probability above it are nucleus.
    min_size : int
        Nuclei with fewer pixels are removed.
    split : bool
        Separate touching nuclei along the predicted boundaries.
    boundary_threshold : float
        With ``split``, pixels with a boundary probability at or above it cannot seed a nucleus.

    Returns
    -------
    ndarray
        ``(H, W)`` labels, 0 background and nuclei 1..N consecutive; uint16, or
        uint32 above 65,535 nuclei.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] != 2:
        raise ValueError(f"probabilities must have shape (2, H, W), not {probabilities.shape}")
    if probabilities.shape[1] == 0 or probabilities.shape[2] == 0:
        return np.zeros(probabilities.shape[1:], dtype=np.uint16)
    nucleus = np.nan_to_num(probabilities[0].astype(np.float32, copy=False), nan=0.0)
    mask = ndi.binary_fill_holes(nucleus > threshold)
    if split:
        boundary = np.nan_to_num(probabilities[1], nan=0.0)
        seeds = mask & (boundary < boundary_threshold)
        markers = connected_components(seeds, connectivity=1)
        labels = watershed(-nucleus, markers, mask=mask)
        # Parts of the mask no seed reached (thin objects made only of boundary) stay objects.
        orphans = connected_components(mask & (labels == 0), connectivity=1)
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    else:
        labels = connected_components(mask, connectivity=1)
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        too_small = sizes < min_size
        too_small[0] = False
        labels[too_small[labels]] = 0
    return _consecutive(labels)


def count_nuclei(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels in ``labels`` (any shape, integer dtype)."""
    labels = np.asarray(labels)
    return int(np.unique(labels[labels != 0]).size)


def measure_nuclei(labels: np.ndarray, image: np.ndarray | None = None) -> pd.DataFrame:
    """One row of measurements per nucleus.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer instance labels, 0 background; need not be consecutive.
    image : ndarray, optional
        ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA image the labels
        belong to. Its gray value (the mean of the colour channels; alpha is
        ignored) gives ``mean_intensity``, which is NaN without an image.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`MEASUREMENT_COLUMNS`, one row per label in increasing
        order; no rows for labels without nuclei. Lengths are in pixels, and the
        bounding box is half-open.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) array, not of shape {labels.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must hold integers, not {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError("labels must not be negative")
    gray = None if image is None else _gray(image, labels.shape)

    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    if foreground.size == 0:
        return _empty_table()
    # Sorting the foreground pixels by label once turns every per-nucleus sum,
    # minimum and maximum into one vectorised reduceat: a python loop over
    # thousands of nuclei (what regionprops does) is what makes tables slow.
    order = np.argsort(flat[foreground], kind="stable")
    foreground = foreground[order]
    pixel_labels = flat[foreground]
    starts = np.flatnonzero(np.r_[True, pixel_labels[1:] != pixel_labels[:-1]])
    area = np.diff(np.r_[starts, foreground.size])
    ys, xs = np.divmod(foreground, labels.shape[1])

    centroid_y = np.add.reduceat(ys, starts) / area
    centroid_x = np.add.reduceat(xs, starts) / area
    repeat = np.repeat(np.arange(area.size), area)
    dy = ys - centroid_y[repeat]
    dx = xs - centroid_x[repeat]
    table = {
        "label": pixel_labels[starts].astype(np.int64),
        "area": area.astype(np.int64),
        "centroid_y": centroid_y,
        "centroid_x": centroid_x,
        "bbox_min_y": np.minimum.reduceat(ys, starts),
        "bbox_min_x": np.minimum.reduceat(xs, starts),
        "bbox_max_y": np.maximum.reduceat(ys, starts) + 1,
        "bbox_max_x": np.maximum.reduceat(xs, starts) + 1,
        "mean_intensity": (
            np.full(area.size, np.nan) if gray is None else np.add.reduceat(gray.ravel()[foreground], starts) / area
        ),
        "eccentricity": _eccentricity(
            np.add.reduceat(dy * dy, starts) / area,
            np.add.reduceat(dx * dx, starts) / area,
            np.add.reduceat(dy * dx, starts) / area,
        ),
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
    }
    # Perimeter and solidity need each nucleus's outline and convex hull: regionprops.
    shape = regionprops_table(labels, properties=("label", "perimeter", "solidity"))
    table["perimeter"] = shape["perimeter"]
    table["solidity"] = shape["solidity"]
    return pd.DataFrame(table, columns=list(MEASUREMENT_COLUMNS))


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber to 1..N and store in the smallest of uint16 and uint32 that holds N."""
    labels, _, _ = relabel_sequential(labels)
    dtype = np.uint16 if labels.max(initial=0) <= _UINT16_MAX else np.uint32
    return labels.astype(dtype, copy=False)


def _gray(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from .preprocess import as_rgb

    image = np.asarray(image)
    rgb = as_rgb(image)
    if rgb.shape[:2] != shape:
        raise ValueError(f"the image ({image.shape}) and the labels ({shape}) differ in height and width")
    if image.ndim == 2:
        return image.astype(np.float64, copy=False)
    return rgb.mean(axis=-1, dtype=np.float64)


def _eccentricity(var_y: np.ndarray, var_x: np.ndarray, cov_xy: np.ndarray) -> np.ndarray:
    """Eccentricity of the ellipse with the same second moments (as in scikit-image's regionprops)."""
    half_trace = (var_y + var_x) / 2
    spread = np.sqrt(((var_y - var_x) / 2) ** 2 + cov_xy**2)
    major = half_trace + spread
    minor = np.clip(half_trace - spread, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        eccentricity = np.sqrt(np.clip(1 - minor / major, 0, 1))
    return np.where(major > 0, eccentricity, 0.0)


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            column: pd.Series(dtype=np.int64 if column in _INTEGER_COLUMNS else np.float64)
            for column in MEASUREMENT_COLUMNS
        }
    )
