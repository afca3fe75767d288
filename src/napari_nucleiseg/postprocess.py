"""From probability maps to instance labels (numpy, scipy and scikit-image only)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential, watershed


def labels_from_probabilities(
    probabilities: np.ndarray,
    threshold: float = 0.5,
    *,
    min_size: int = 10,
    split: bool = True,
    boundary_threshold: float = 0.5,
) -> np.ndarray:
    """Instance labels from ``(2, H, W)`` nucleus/boundary probabilities.

    Threshold -> drop objects under ``min_size`` pixels -> fill holes -> with
    ``split``, a seeded watershed that separates touching nuclei: seeds are the
    nucleus pixels the network does not call boundary, grown back to fill the mask.

    Returns
    -------
    ndarray
        ``(H, W)`` labels 1..N, consecutive; uint16, or uint32 above 65,535 nuclei.
    """
    nucleus = probabilities[0]
    mask = nucleus > threshold
    mask = ndi.binary_fill_holes(mask)
    if split:
        seeds = mask & (probabilities[1] < boundary_threshold)
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
    labels, _, _ = relabel_sequential(labels)
    dtype = np.uint16 if labels.max() <= np.iinfo(np.uint16).max else np.uint32
    return labels.astype(dtype, copy=False)
