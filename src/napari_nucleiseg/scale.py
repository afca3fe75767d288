"""Nucleus size: bring an image to the scale its network was trained at, and back.

A weights file records ``diameter``, the median nucleus diameter (pixels) of the frame the
network learnt in. An image whose nuclei are ``d`` pixels across is resized by
``diameter / d`` before the network sees it, and the probabilities are resized back, so
labels and measurements are always in the image's own pixels.
"""

from __future__ import annotations

import math

import numpy as np

#: Factors this close to 1 are not applied: the networks were trained with +-30% of jitter
#: around their diameter, and resampling costs time and a little sharpness.
RESCALE_TOLERANCE = 0.1


def check_diameter(diameter: float | None, shape: tuple[int, ...] | None = None) -> None:
    """Raise ``ValueError`` (one sentence) for a diameter that is not a usable number of pixels."""
    if diameter is None:
        return
    if isinstance(diameter, bool) or not isinstance(diameter, (int, float, np.integer, np.floating)):
        raise ValueError(f"The nucleus diameter must be a number of pixels, not {diameter!r}.")
    if not math.isfinite(diameter) or diameter <= 0:
        raise ValueError(f"The nucleus diameter must be a positive number of pixels, not {diameter}.")
    if shape is not None and diameter > max(shape[:2]):
        raise ValueError(
            f"A nucleus diameter of {diameter:g} pixels is larger than the image ({shape[0]} x {shape[1]} pixels)."
        )


def scale_factor(diameter: float | None, trained_diameter: float | None) -> float:
    """The zoom that brings nuclei of ``diameter`` to ``trained_diameter`` (1: none needed or known)."""
    if diameter is None or trained_diameter is None:
        return 1.0
    factor = trained_diameter / diameter
    return 1.0 if abs(math.log(factor)) < math.log1p(RESCALE_TOLERANCE) else factor


def rescaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (``(H, W)`` or ``(H, W, C)``) resized by ``factor``: linear interpolation, with
    anti-aliasing when shrinking; float32 (float images) or the image's integer dtype."""
    from skimage.transform import resize

    if factor == 1.0:
        return image
    shape = rescaled_shape(image.shape, factor) + image.shape[2:]
    kind = image.dtype.kind
    out = resize(np.asarray(image, dtype=np.float32), shape, order=1, mode="reflect",
                 anti_aliasing=factor < 1, preserve_range=True)
    if kind in "ui":
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out.astype(np.float32)


def rescale_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of instance labels to ``shape``."""
    from skimage.transform import resize

    if labels.shape == tuple(shape):
        return labels
    return resize(labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` probability maps resized (linearly) to ``(C, *shape)``, float32 in [0, 1]."""
    from scipy import ndimage as ndi

    if probabilities.shape[1:] == tuple(shape):
        return probabilities
    zoom = (shape[0] / probabilities.shape[1], shape[1] / probabilities.shape[2])
    out = np.empty((probabilities.shape[0], *shape), dtype=np.float32)
    for channel, plane in enumerate(probabilities):
        out[channel] = ndi.zoom(plane, zoom, order=1, mode="nearest", grid_mode=True, output=np.float32)
    np.clip(out, 0, 1, out=out)
    return out
