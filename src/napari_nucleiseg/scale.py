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


#: The scales :func:`estimate_diameter` tries, as nucleus diameters relative to the model's:
#: a ladder of ratio 2 from 1/4 to 8 (with a model trained at 18 px, nuclei of about 4.5 to 144
#: px across), so one rung always brings the nuclei within the +-30% the network was trained on.
ESTIMATE_LADDER = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Side (network pixels) of the window each rung of the ladder looks at: the network runs on at
#: most ``len(ESTIMATE_LADDER)`` windows of this size, whatever the size of the image.
ESTIMATE_WINDOW = 192
#: Fewest objects a rung must find to count.
ESTIMATE_MIN_OBJECTS = 4


def estimate_diameter(image: np.ndarray, model, *, normalization=None, cancelled=None) -> float | None:
    """The median nucleus diameter (pixels) of ``image``, estimated with ``model``'s own network.

    A scale sweep with a self-consistency score: for each relative size ``r`` of
    :data:`ESTIMATE_LADDER`, a window of the image is resized so that nuclei ``r`` times the
    model's diameter would arrive at the model's diameter, and segmented. The network, trained
    on nuclei of its diameter +-30%, finds nuclei of its own size only where the image's
    nuclei arrive at that size: too large, they fall apart into fragments or are missed;
    too small, they merge or vanish. So the rung whose median object is closest to the
    model's diameter is taken, and its median object, measured back in the image's pixels,
    is the estimate. None when no rung finds :data:`ESTIMATE_MIN_OBJECTS` nuclei, or the model
    records no diameter.

    The window (the image's brightest-varying region of that size) keeps the cost to a few
    small network passes whatever the image's size.
    """
    from .inference import _predict_tiled
    from .postprocess import labels_from_probabilities
    from .preprocess import Normalization, as_rgb

    trained = model.diameter
    if trained is None:
        return None
    rgb = as_rgb(image)
    if normalization is None:
        normalization = Normalization.of(rgb, model.percentiles, model.log_gain)
    best = None
    for relative in ESTIMATE_LADDER:
        if cancelled is not None and cancelled():
            break
        factor = 1.0 / relative
        side = int(round(ESTIMATE_WINDOW / factor))
        window = _busiest_window(rgb, side)
        if min(window.shape[:2]) * factor < 32:
            continue
        scaled = rescale_image(np.asarray(window), factor) if factor != 1 else np.asarray(window)
        probabilities = _predict_tiled(scaled, normalization, model.network, tile_size=512, overlap=64,
                                       batch_size=1, progress=None, cancelled=None, device=None)
        labels = labels_from_probabilities(
            probabilities, model.threshold, min_size=max(3, int(0.05 * trained**2)), split=True,
            boundary_threshold=model.boundary_threshold, seed_min_size=model.seed_min_size,
        )
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas > 0]
        if areas.size < ESTIMATE_MIN_OBJECTS:
            continue
        found = float(np.median(2 * np.sqrt(areas / np.pi)))
        miss = abs(math.log(found / trained))
        if best is None or miss < best[0]:
            best = (miss, found / factor)
    return None if best is None else best[1]


def _busiest_window(rgb: np.ndarray, side: int) -> np.ndarray:
    """The ``side`` x ``side`` window (or the whole image, if smaller) whose pixels vary most,
    chosen on a coarse grid: where the nuclei are, not an empty corner."""
    height, width = rgb.shape[:2]
    if height <= side and width <= side:
        return rgb
    step = max(1, side // 2)
    best, best_score = (0, 0), -1.0
    stride = max(1, side // 16)
    for y in range(0, max(height - side, 0) + 1, step):
        for x in range(0, max(width - side, 0) + 1, step):
            patch = np.asarray(rgb[y : y + side : stride, x : x + side : stride], dtype=np.float32)
            score = float(patch.std())
            if score > best_score:
                best, best_score = (y, x), score
    y, x = best
    return rgb[y : y + side, x : x + side]
