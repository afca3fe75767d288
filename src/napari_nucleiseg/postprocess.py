"""From probability maps to instance labels, and from labels to counts and measurements.

numpy, scipy, scikit-image and pandas only: no torch, no Qt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .settings import (
    DEFAULT_BOUNDARY_THRESHOLD,
    DEFAULT_MIN_SIZE,
    DEFAULT_NECK_RATIO,
    DEFAULT_SEED_MIN_SIZE,
    DEFAULT_THRESHOLD,
    check_settings,
)

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

#: Columns :func:`measure_nuclei` adds, after ``mean_intensity``, for a colour (RGB or RGBA) image: the mean
#: of each colour over the nucleus, e.g. a marker's in an overlay of fluorescence channels whose nuclei are
#: found in blue, or the stains' in a tissue image.
COLOUR_COLUMNS = ("mean_red", "mean_green", "mean_blue")


def table_columns(colour: bool) -> tuple[str, ...]:
    """The columns of :func:`measure_nuclei`'s table, in order, of a gray image or a ``colour`` one."""
    if not colour:
        return MEASUREMENT_COLUMNS
    at = MEASUREMENT_COLUMNS.index("mean_intensity") + 1
    return MEASUREMENT_COLUMNS[:at] + COLOUR_COLUMNS + MEASUREMENT_COLUMNS[at:]


_INTEGER_COLUMNS = ("label", "area", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")

_UINT16_MAX = np.iinfo(np.uint16).max

#: Labels below this are mapped to table rows through a lookup table, larger ones by binary search.
_LOOKUP_MAX_LABEL = 1 << 22


def labels_from_probabilities(
    probabilities: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    split: bool = True,
    boundary_threshold: float = DEFAULT_BOUNDARY_THRESHOLD,
    neck_ratio: float = DEFAULT_NECK_RATIO,
    seed_min_size: int = DEFAULT_SEED_MIN_SIZE,
    exclude_border: bool = False,
) -> np.ndarray:
    """Instance labels from nucleus/boundary probabilities.

    Threshold -> fill holes -> with ``split``, a seeded watershed that separates
    touching nuclei (seeds are the nucleus pixels the network does not call
    boundary, grown back to fill the mask), otherwise connected components ->
    drop objects under ``min_size`` pixels -> renumber -> with ``split`` and a
    ``neck_ratio``, cut the large objects shaped like joined nuclei
    (:func:`split_by_shape`) -> with ``exclude_border``, drop the nuclei that touch
    the image's edge (:func:`exclude_border_nuclei`).

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
    neck_ratio : float
        With ``split``, the ``neck_ratio`` of :func:`split_by_shape`; 0 (the default) leaves
        the shapes alone.
    seed_min_size : int
        With ``split``, a seed (4-connected group of nucleus pixels under the boundary
        threshold) of fewer pixels seeds nothing: its pixels are flooded from the seeds
        around it, or form a nucleus of their own where none reaches. Lets a low
        boundary threshold split faint boundaries without specks of seed splitting
        single nuclei. 0 (the default): every seed counts.
    exclude_border : bool
        Drop the nuclei that touch the edge of the image, and number the others on.

    Returns
    -------
    ndarray
        ``(H, W)`` labels, 0 background and nuclei 1..N consecutive; uint16, or
        uint32 above 65,535 nuclei. Numbered in raster order (with ``split``: of
        their seeds, and the nuclei without a seed after the others; pieces cut off by
        shape come last).
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] != 2:
        raise ValueError(f"probabilities must have shape (2, H, W), not {probabilities.shape}")
    check_settings(threshold, boundary_threshold, min_size, split, neck_ratio, seed_min_size, exclude_border)
    if probabilities.shape[1] == 0 or probabilities.shape[2] == 0:
        return np.zeros(probabilities.shape[1:], dtype=np.uint16)
    nucleus = probabilities[0].astype(np.float32, copy=False)
    # Every map below is framed: one pixel of background around the image, so that a
    # pixel's four neighbours are always at flat offsets -width, +width, -1 and +1.
    mask = _fill_holes(_framed(nucleus, np.greater, threshold))
    if split:
        seeds = _framed(probabilities[1], np.less, boundary_threshold)
        seeds &= mask
        if seed_min_size > 1:
            groups, _ = ndi.label(seeds)
            large = np.bincount(groups.ravel()) >= seed_min_size
            large[0] = False
            seeds = large[groups]
            del groups
        parts, sizes = _split_touching(nucleus, mask, seeds)
    else:
        objects, count = ndi.label(mask)
        pixels = np.flatnonzero(mask)
        ids = objects.ravel().take(pixels)
        parts, sizes = [(pixels, ids)], np.bincount(ids, minlength=count + 1)
    labels = _renumbered(mask.shape, parts, sizes, min_size)
    if split and neck_ratio > 0:
        labels = split_by_shape(labels, neck_ratio, min_size=min_size)
    if exclude_border:
        labels = exclude_border_nuclei(labels)
    return labels


def exclude_border_nuclei(labels: np.ndarray) -> np.ndarray:
    """``labels`` without the nuclei that touch the image's edge, the others numbered 1..N in
    their order (as ``skimage.segmentation.clear_border`` then ``relabel_sequential``, in one pass).

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` instance labels, 0 background, numbered 1..N (as from
        :func:`labels_from_probabilities`).

    Returns
    -------
    ndarray
        ``(H, W)`` labels of the same dtype; ``labels`` itself when no nucleus touches the edge.
    """
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]) if labels.size else labels.ravel()
    touching = np.unique(edge[edge > 0])
    if touching.size == 0:
        return labels
    keep = np.ones(int(labels.max()) + 1, dtype=bool)
    keep[0] = False
    keep[touching] = False
    new_ids = np.zeros(keep.size, dtype=labels.dtype)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    return new_ids[labels]


def _framed(values: np.ndarray, compare, threshold: float) -> np.ndarray:
    """``compare(nan_to_num(values), threshold)``, ``(H + 2, W + 2)`` bool with a False frame."""
    framed = np.zeros((values.shape[0] + 2, values.shape[1] + 2), dtype=bool)
    inside = framed[1:-1, 1:-1]
    nan_passes = values.dtype.kind == "f" and bool(compare(np.zeros(1, values.dtype), threshold)[0])
    if nan_passes:  # NaN counts as 0, which passes: test the opposite, which NaN fails, and negate
        opposite = {np.greater: np.less_equal, np.less: np.greater_equal}[compare]
        opposite(values, threshold, out=inside)
        np.logical_not(inside, out=inside)
    else:
        compare(values, threshold, out=inside)
    return framed


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` of a framed mask, by labelling its background once.

    The frame joins every part of the background that reaches the image's edge into
    one component; any other component is a hole (4-connected, as in scipy).
    """
    background, count = ndi.label(~mask)
    if count == 1:
        return mask
    return background != background[0, 0]


def _split_touching(nucleus: np.ndarray, mask: np.ndarray, seeds: np.ndarray) -> tuple[list, np.ndarray]:
    """The seeded watershed of ``-nucleus`` in ``mask`` from the components of ``seeds`` (all framed).

    Returns ``(pixels, ids)`` pairs (flat indices in the framed image and their
    object ids) and the size of each id: seeds are ids 1..n in raster order, the
    parts of the mask no seed reaches (objects made only of boundary) follow.

    A seed pixel can only ever get its own seed's label, so only the band of the mask
    outside the seeds needs deciding, one 4-connected band region at a time: a region
    that touches no seed is an object of its own, one that touches a single seed
    joins it, and only a region that touches two or more seeds (where nuclei meet)
    goes through the watershed. The result is the whole-image watershed's
    (``skimage.segmentation.watershed(-nucleus, label(seeds), mask=mask)``) up to
    how ties between equal probabilities are broken, for a fraction of its cost.
    """
    # Two label images of the whole frame are needed, the seeds' and the band regions'; the
    # first is read where it is needed and let go before the second is made (4 bytes a pixel each).
    markers, n_markers = ndi.label(seeds)
    seed_pixels = np.flatnonzero(seeds)
    seed_ids = markers.ravel().take(seed_pixels)
    band = mask ^ seeds
    band_pixels = np.flatnonzero(band)

    # The seeds each band region touches (the lowest and highest of their labels), from
    # every (band pixel, seed pixel) pair of 4-neighbours.
    width = mask.shape[1]
    neighbours = band_pixels[:, None] + np.array([-width, width, -1, 1])
    touching = seeds.ravel().take(neighbours)
    contact_pixels = neighbours[touching]
    del neighbours
    contact_markers = markers.ravel().take(contact_pixels)
    del markers
    regions, n_regions = ndi.label(band)
    del band
    band_regions = regions.ravel().take(band_pixels)
    del regions
    contact_regions = np.broadcast_to(band_regions[:, None], touching.shape)[touching]
    lowest = np.full(n_regions + 1, n_markers + 1, dtype=contact_markers.dtype)
    highest = np.zeros(n_regions + 1, dtype=contact_markers.dtype)
    np.minimum.at(lowest, contact_regions, contact_markers)
    np.maximum.at(highest, contact_regions, contact_markers)

    seedless = highest == 0
    seedless[0] = False
    n_seedless = int(seedless.sum())
    region_ids = np.where(lowest == highest, highest, 0)
    region_ids[seedless] = n_markers + np.arange(1, n_seedless + 1)
    band_ids = region_ids[band_regions]
    contested = lowest < highest
    if contested.any():
        in_contest = contested[band_regions]
        ring = contested[contact_regions]
        band_ids[in_contest] = _flood(nucleus, band_pixels[in_contest], band_regions[in_contest],
                                      contact_pixels[ring], contact_regions[ring], contact_markers[ring],
                                      contested, width)
    n_ids = n_markers + n_seedless + 1
    sizes = np.bincount(seed_ids, minlength=n_ids) + np.bincount(band_ids, minlength=n_ids)
    return [(seed_pixels, seed_ids), (band_pixels, band_ids)], sizes


def _flood(nucleus, pixels, regions, ring_pixels, ring_regions, ring_markers, contested, framed_width):
    """The watershed labels of band ``pixels`` (framed flat indices) of the ``contested`` band regions.

    Each region is flooded from the seed pixels that touch it (``ring_*``: pixel,
    region, seed label; a pixel may come twice). Regions are independent, so their
    bounding boxes are packed side by side, a pixel apart, into one small image that
    is flooded in one call.
    """
    everything = np.concatenate([pixels, ring_pixels])
    region_of = np.concatenate([regions, ring_regions])
    ys, xs = np.divmod(everything, framed_width)
    top = np.full(contested.size, ys.max())
    left = np.full(contested.size, xs.max())
    bottom = np.zeros(contested.size, ys.dtype)
    right = np.zeros(contested.size, xs.dtype)
    np.minimum.at(top, region_of, ys)
    np.minimum.at(left, region_of, xs)
    np.maximum.at(bottom, region_of, ys)
    np.maximum.at(right, region_of, xs)
    rows, columns = np.zeros_like(top), np.zeros_like(left)
    boxes = np.flatnonzero(contested)
    rows[boxes], columns[boxes], shape = _pack((bottom - top + 1)[boxes], (right - left + 1)[boxes])
    where = (ys + (rows - top)[region_of]) * shape[1] + xs + (columns - left)[region_of]

    image = np.zeros(shape)
    values = nucleus.ravel().take((ys - 1) * nucleus.shape[1] + xs - 1)  # (framed: one row and column off)
    image.ravel()[where] = -np.nan_to_num(values.astype(np.float64), nan=0.0)
    markers = np.zeros(shape, np.int32)
    markers.ravel()[where[pixels.size :]] = ring_markers
    inside = np.zeros(shape, bool)
    inside.ravel()[where] = True
    return watershed(image, markers, mask=inside).ravel().take(where[: pixels.size])


def _pack(heights: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Top-left corners of boxes laid out in shelves, tallest first, with a pixel between them,
    and the shape of the image that holds them."""
    width = max(int(widths.max()), int(np.sqrt(((heights + 1) * (widths + 1)).sum()))) + 1
    rows = np.zeros(heights.size, np.int64)
    columns = np.zeros(heights.size, np.int64)
    row = column = shelf = 0
    for box in np.argsort(-heights, kind="stable").tolist():
        if column + widths[box] + 1 > width:
            row, column, shelf = row + shelf, 0, 0
        rows[box], columns[box] = row, column
        column += int(widths[box]) + 1
        shelf = max(shelf, int(heights[box]) + 1)
    return rows, columns, (row + shelf, width)


def _renumbered(framed_shape, parts, sizes: np.ndarray, min_size: int) -> np.ndarray:
    """The ``(H, W)`` image of the ids in ``parts`` without those under ``min_size`` pixels, renumbered
    1..N in id order, as uint16, or uint32 above 65,535 nuclei."""
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    count = int(keep.sum())
    dtype = np.uint16 if count <= _UINT16_MAX else np.uint32
    new_ids = np.zeros(keep.size, dtype=dtype)
    new_ids[keep] = np.arange(1, count + 1, dtype=dtype)
    labels = np.zeros(framed_shape, dtype=dtype)
    for pixels, ids in parts:
        labels.ravel()[pixels] = new_ids[ids]
    return labels[1:-1, 1:-1].copy()


#: :func:`split_by_shape` looks only at objects at least this many times the median object's area.
SHAPE_SPLIT_SIZE_FACTOR = 1.6


def split_by_shape(labels: np.ndarray, neck_ratio: float, *, min_size: int = 0,
                   size_factor: float = SHAPE_SPLIT_SIZE_FACTOR) -> np.ndarray:
    """Cut objects that are two or more nuclei joined by a neck (an "8"), by their shape alone.

    The network's boundary channel separates most touching nuclei; this catches the
    pairs it missed. Only objects of at least ``size_factor`` times the image's median
    object area are looked at. An object's core is the part of it farther from its edge
    than ``1 - neck_ratio`` times its largest such distance: one piece for a round or
    oval nucleus, but two for an "8" whose neck is narrower than that. An object whose
    core falls apart is cut between the pieces (a watershed of the distance to the
    edge, so along the necks). A cut that would leave a piece under ``min_size`` pixels
    is not made.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` instance labels, 0 background, numbered 1..N (as from
        :func:`labels_from_probabilities`).
    neck_ratio : float
        In (0, 1]: how deep a neck must be, relative to the object's thickness,
        to cut there (smaller cuts more). 0 returns ``labels`` unchanged. The core is at
        least a pixel below the object's summit: shallower necks are steps of the pixel grid.
    min_size : int
        Smallest piece a cut may leave, in pixels.
    size_factor : float
        Objects smaller than this times the median object area are left whole.

    Returns
    -------
    ndarray
        The labels with every cut object's first piece keeping its number and the
        others numbered from N + 1; ``labels`` itself when nothing is cut. uint32
        if the pieces take the count past 65,535.
    """
    labels = np.asarray(labels)
    if not 0 <= neck_ratio <= 1:
        raise ValueError(f"neck_ratio must be between 0 and 1, not {neck_ratio}")
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 2-D (H, W) array of integers, not {labels.dtype} of shape {labels.shape}")
    if neck_ratio == 0 or labels.size == 0:
        return labels
    if labels.dtype.kind == "i" and labels.min() < 0:
        raise ValueError("labels must not be negative")
    areas = np.bincount(labels.ravel())
    present = areas[1:][areas[1:] > 0]
    if present.size == 0:
        return labels
    smallest = max(size_factor * float(np.median(present)), 2 * max(min_size, 1))
    candidates = np.flatnonzero(areas >= smallest)
    candidates = candidates[candidates > 0]
    if candidates.size == 0:
        return labels

    # The candidates' bounding boxes, each with a pixel of background all round, packed
    # side by side into one small image: distances, cores and the watershed are then
    # whole-array calls, however many objects there are.
    which = np.zeros(areas.size, np.int32)  # label -> 1..K for the candidates, 0 for the rest
    which[candidates] = np.arange(1, candidates.size + 1)
    pixels = np.flatnonzero(which[labels.ravel()])
    member = which[labels.ravel()[pixels]]
    ys, xs = np.divmod(pixels, labels.shape[1])
    top = np.full(candidates.size + 1, labels.shape[0])
    left = np.full(candidates.size + 1, labels.shape[1])
    bottom = np.zeros(candidates.size + 1, np.int64)
    right = np.zeros(candidates.size + 1, np.int64)
    np.minimum.at(top, member, ys)
    np.minimum.at(left, member, xs)
    np.maximum.at(bottom, member, ys)
    np.maximum.at(right, member, xs)
    rows, columns, shape = _pack((bottom - top + 3)[1:], (right - left + 3)[1:])
    packed = (ys - top[member] + rows[member - 1] + 1) * shape[1] + xs - left[member] + columns[member - 1] + 1
    owner = np.zeros(shape, np.int32)  # 1..K: which candidate a packed pixel belongs to
    owner.ravel()[packed] = member
    objects = owner > 0
    distance = ndi.distance_transform_edt(objects)
    inside = np.flatnonzero(objects)
    inside_owner = owner.ravel()[inside]
    peak = np.zeros(candidates.size + 1)
    np.maximum.at(peak, inside_owner, distance.ravel()[inside])
    level = np.minimum((1 - neck_ratio) * peak, peak - 1)
    summits = np.zeros(shape, bool)
    summits.ravel()[inside] = distance.ravel()[inside] >= level[inside_owner]
    markers, n_summits = ndi.label(summits, structure=np.ones((3, 3), bool))
    if n_summits <= candidates.size:  # at most one summit per object, nothing to cut
        return labels
    summit_owner = np.zeros(n_summits + 1, np.int64)
    summit_owner[markers.ravel()[inside]] = inside_owner
    summit_owner = summit_owner[1:]
    cut = np.bincount(summit_owner, minlength=candidates.size + 1) >= 2
    markers[~cut[owner]] = 0
    pieces = watershed(-distance, markers, mask=objects & cut[owner])

    # A cut leaving a piece under min_size pixels is not made.
    piece_sizes = np.bincount(pieces.ravel(), minlength=n_summits + 1)
    too_small = np.zeros(candidates.size + 1, bool)
    np.logical_or.at(too_small, summit_owner, piece_sizes[1:] < max(min_size, 1))
    cut &= ~too_small
    if not cut[1:].any():
        return labels
    # The first piece of a cut object keeps its label, the others are numbered after the last label.
    ids = np.flatnonzero(cut[summit_owner]) + 1  # the summits (and pieces) of the objects cut
    ids = ids[np.argsort(summit_owner[ids - 1], kind="stable")]
    owners = summit_owner[ids - 1]
    first = np.ones(ids.size, bool)
    first[1:] = owners[1:] != owners[:-1]
    count = int(labels.max())
    new_count = count + int((~first).sum())
    dtype = labels.dtype if new_count <= np.iinfo(labels.dtype).max else np.uint32
    piece_label = np.zeros(n_summits + 1, np.int64)
    piece_label[ids[first]] = candidates[owners[first] - 1]
    piece_label[ids[~first]] = np.arange(count + 1, new_count + 1)
    result = labels.astype(dtype, copy=True)
    mine = cut[member]
    piece = pieces.ravel()[packed[mine]]
    reached = piece > 0  # (a part no summit reaches keeps its label)
    result.ravel()[pixels[mine][reached]] = piece_label[piece[reached]]
    return result


def count_nuclei(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels in ``labels`` (any shape, integer dtype)."""
    labels = np.asarray(labels)
    return int(np.unique(labels[labels != 0]).size)


def finite_means(ids: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """The mean of ``values`` of each of ``count`` nuclei, 2-D or 3-D (``ids``: the nucleus of each value),
    over its finite values only: a NaN or saturated (inf) pixel of a float image is no intensity (NaN: none
    is finite)."""
    finite = np.isfinite(values)
    if finite.all():
        return np.bincount(ids, weights=values, minlength=count) / np.bincount(ids, minlength=count)
    sums = np.bincount(ids[finite], weights=values[finite], minlength=count)
    counts = np.bincount(ids[finite], minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def measure_nuclei(labels: np.ndarray, image: np.ndarray | None = None) -> pd.DataFrame:
    """One row of measurements per nucleus.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer instance labels, 0 background; need not be consecutive.
    image : ndarray, optional
        ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA image the labels
        belong to. Its gray value (the mean of the colour channels; alpha is
        ignored) gives ``mean_intensity``, which is NaN without an image; each
        colour's mean of a colour image gives :data:`COLOUR_COLUMNS`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`MEASUREMENT_COLUMNS` (:func:`table_columns`: with
        :data:`COLOUR_COLUMNS` for a colour image), one row per label in increasing
        order; no rows for labels without nuclei. Lengths are in pixels, and the
        bounding box is half-open. Values are scikit-image's ``regionprops``
        (``perimeter`` with its 4-neighbourhood; ``solidity`` against the convex
        hull of the pixels' edge midpoints), computed for all nuclei at once.
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
    if image is not None:
        image = _checked_image(image, labels.shape)
    colour = image is not None and image.ndim == 3 and image.shape[-1] >= 3

    # Everything is computed from the runs of equal labels along the rows, and from
    # the pixels on each nucleus's border: a python loop over thousands of nuclei
    # (what regionprops does) is what makes tables slow.
    values, starts, lengths = _row_runs(labels)
    if values.size == 0:
        return _empty_table(colour)
    present, run_ids = np.unique(values, return_inverse=True)
    count = present.size
    width = labels.shape[1]
    ys, x0 = np.divmod(starts, width)
    x1 = x0 + lengths - 1

    def total(weights) -> np.ndarray:
        return np.bincount(run_ids, weights=weights, minlength=count)

    top = np.full(count, labels.shape[0], np.int64)
    left = np.full(count, width, np.int64)
    bottom = np.zeros(count, np.int64)
    right = np.zeros(count, np.int64)
    np.minimum.at(top, run_ids, ys)
    np.minimum.at(left, run_ids, x0)
    np.maximum.at(bottom, run_ids, ys)
    np.maximum.at(right, run_ids, x1)
    area = np.bincount(run_ids, weights=lengths, minlength=count).astype(np.int64)
    # Moments from exact integer sums over each run, in coordinates relative to the
    # bounding box: no cancellation, and symmetric nuclei get an eccentricity of exactly 0.
    y = ys - top[run_ids]
    a, b = x0 - left[run_ids], x1 - left[run_ids]
    sum_x = (a + b) * lengths // 2
    sum_xx = (b * (b + 1) * (2 * b + 1) - (a - 1) * a * (2 * a - 1)) // 6
    sy, sx = total(y * lengths), total(sum_x)
    syy, sxx, sxy = total(y * y * lengths), total(sum_xx), total(y * sum_x)
    cy, cx = sy / area, sx / area
    pixels = None if image is None else np.flatnonzero(labels)  # raster order: the runs, pixel by pixel
    nucleus_of = None if image is None else np.repeat(run_ids, lengths)  # ... and each one's nucleus
    table = {
        "label": present.astype(np.int64),
        "area": area,
        "centroid_y": top + cy,
        "centroid_x": left + cx,
        "bbox_min_y": top,
        "bbox_min_x": left,
        "bbox_max_y": bottom + 1,
        "bbox_max_x": right + 1,
        "mean_intensity": np.full(count, np.nan) if image is None else finite_means(
            nucleus_of, _gray_at(image, pixels), count),
        **({} if not colour else {
            name: finite_means(nucleus_of, image[..., channel].reshape(-1)[pixels].astype(np.float64), count)
            for channel, name in enumerate(COLOUR_COLUMNS)}),
        "eccentricity": _eccentricity(
            (syy * area - sy * sy) / area**2, (sxx * area - sx * sx) / area**2, (sxy * area - sy * sx) / area**2
        ),
        "perimeter": _perimeters(labels, present),
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
        "solidity": area / _convex_areas(run_ids, ys, x0, x1, top, bottom),
    }
    return pd.DataFrame(table, columns=list(table_columns(colour)))


def _row_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label value, flat start index and length of each run of one non-zero label along a row, in raster order."""
    flat = labels.ravel()
    change = np.empty(flat.size, dtype=bool)
    change[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[:: labels.shape[1]] = True  # runs end with their row
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=flat.size)
    values = flat[starts]
    nonzero = values != 0
    return values[nonzero], starts[nonzero], lengths[nonzero]


#: scikit-image's perimeter (``skimage.measure.perimeter``, 4-neighbourhood): each border pixel
#: (a pixel with a 4-neighbour outside its nucleus) is coded by which of its 8 neighbours are
#: border pixels of the same nucleus (weights below, 1 for itself); the code gives its length.
_PERIMETER_NEIGHBOURS = {(-1, -1): 10, (-1, 0): 2, (-1, 1): 10, (0, -1): 2, (0, 1): 2, (1, -1): 10, (1, 0): 2, (1, 1): 10}
_PERIMETER_LENGTHS = np.zeros(50)
_PERIMETER_LENGTHS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_LENGTHS[[21, 33]] = np.sqrt(2)
_PERIMETER_LENGTHS[[13, 23]] = (1 + np.sqrt(2)) / 2


def _perimeters(labels: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Perimeter of each label in ``present`` (sorted), as ``regionprops``' ``perimeter``."""
    framed = np.pad(labels, 1)
    flat = framed.ravel()
    width = framed.shape[1]
    pixels = np.flatnonzero(flat)
    own = flat[pixels]
    inner = np.ones(pixels.size, dtype=bool)
    for offset in (-width, width, -1, 1):
        inner &= flat.take(pixels + offset) == own
    border, own = pixels[~inner], own[~inner]
    is_border = np.zeros(flat.size, dtype=bool)
    is_border[border] = True
    code = np.ones(border.size, dtype=np.int64)
    for (dy, dx), weight in _PERIMETER_NEIGHBOURS.items():
        neighbour = border + (dy * width + dx)
        code += weight * (is_border.take(neighbour) & (flat.take(neighbour) == own))
    if present[-1] < _LOOKUP_MAX_LABEL:
        index = np.zeros(int(present[-1]) + 1, dtype=np.intp)
        index[present] = np.arange(present.size)
        own = index[own]
    else:
        own = np.searchsorted(present, own)
    return np.bincount(own, weights=_PERIMETER_LENGTHS[code], minlength=present.size)


def _convex_areas(ids, ys, x0, x1, top, bottom) -> np.ndarray:
    """Pixels in each nucleus's convex hull, as ``regionprops``' ``area_convex``.

    From the row runs (nucleus ``ids`` 0..n-1, row, first and last column; in raster
    order) and each nucleus's first and last row. scikit-image takes the convex hull of
    the midpoints of the pixels' edges and counts the pixel centres inside it or on it.
    The hull's left side is the lower convex hull, seen as x over y, of the midpoints of
    each row's leftmost pixel; its right side the upper convex hull of the rightmost
    ones. Coordinates are doubled so that every point is an integer and the count exact.
    """
    order = np.argsort(ids, kind="stable")  # by nucleus, then raster order
    ids, ys, x0, x1 = ids[order], ys[order], x0[order], x1[order]
    row_start = np.flatnonzero(np.r_[True, (ids[1:] != ids[:-1]) | (ys[1:] != ys[:-1])])
    row_end = np.r_[row_start[1:], ids.size] - 1
    ids, ys, first, last = ids[row_start], ys[row_start], x0[row_start], x1[row_end]
    # Midpoints of the top, outer and bottom edges of a row's end pixel: (2y - 1, 2x), (2y, 2x -/+ 1), (2y + 1, 2x).
    point_ids = np.repeat(ids, 3)
    t = (2 * ys[:, None] + [-1, 0, 1]).ravel()
    left_side = _lower_hull(point_ids, t, (2 * first[:, None] + [0, -1, 0]).ravel())
    right_side = _lower_hull(point_ids, t, (-2 * last[:, None] + [0, -1, 0]).ravel())  # x mirrored
    # Every row of every nucleus's bounding box, and the pixel centres between the two sides there.
    heights = bottom - top + 1
    row_ids = np.repeat(np.arange(top.size), heights)
    row_t = 2 * (np.arange(row_ids.size) - np.repeat(np.cumsum(heights) - heights - top, heights))
    low = -((-_hull_at(left_side, row_ids, row_t)) // 2)  # ceil(x / 2) of the doubled x
    high = -_hull_at(right_side, row_ids, row_t) // 2  # floor
    return np.bincount(row_ids, weights=np.maximum(high - low + 1, 0), minlength=top.size)


def _lower_hull(ids, t, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices ``(ids, t, x)`` of the lower convex hull of the integer points ``(t, x)`` of each id.

    Points come sorted by id, then t; two points may share a t (the lower is kept). Every
    pass drops each point that lies on or above the segment joining its two neighbours
    (none of these is a vertex), until none does.
    """
    same_t = (ids[1:] == ids[:-1]) & (t[1:] == t[:-1])
    x[1:][same_t] = np.minimum(x[1:][same_t], x[:-1][same_t])
    keep = np.r_[~same_t, True]
    ids, t, x = ids[keep], t[keep], x[keep]
    while ids.size > 2:
        cross = (t[1:-1] - t[:-2]) * (x[2:] - x[:-2]) - (x[1:-1] - x[:-2]) * (t[2:] - t[:-2])
        drop = (cross <= 0) & (ids[:-2] == ids[2:])
        if not drop.any():
            break
        keep = np.r_[True, ~drop, True]
        ids, t, x = ids[keep], t[keep], x[keep]
    return ids, t, x


def _hull_at(hull, ids, t) -> np.ndarray:
    """Twice the x of each id's ``hull`` (from :func:`_lower_hull`) at each ``t``, rounded up to an
    integer; every t lies strictly inside its id's range of t."""
    hull_ids, hull_t, hull_x = hull
    span = int(max(hull_t.max(), t.max())) + 2  # t >= -1
    segment = np.searchsorted(hull_ids * span + hull_t + 1, ids * span + t + 1, side="right") - 1
    t0, x0 = hull_t[segment], hull_x[segment]
    run, rise = hull_t[segment + 1] - t0, hull_x[segment + 1] - x0
    return -((-(x0 * run + rise * (t - t0))) // run)  # ceil of x0 + rise * (t - t0) / run


def _checked_image(image, shape: tuple[int, int]) -> np.ndarray:
    """``image`` as an array, checked to be gray, RGB or RGBA of the labels' ``shape``."""
    from .preprocess import as_rgb

    image = np.asarray(image)
    if as_rgb(image).shape[:2] != shape:
        raise ValueError(f"the image ({image.shape}) and the labels ({shape}) differ in height and width")
    return image


def _gray_at(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """float64 gray values of the flat ``pixels``: the image's own, or the mean of its colour channels."""
    if image.ndim == 2 or image.shape[-1] == 1:
        return image.reshape(-1)[pixels].astype(np.float64)
    return image.reshape(-1, image.shape[-1])[pixels, :3].mean(axis=1, dtype=np.float64)


def _eccentricity(var_y: np.ndarray, var_x: np.ndarray, cov_xy: np.ndarray) -> np.ndarray:
    """Eccentricity of the ellipse with the same second moments (as in scikit-image's regionprops)."""
    half_trace = (var_y + var_x) / 2
    spread = np.sqrt(((var_y - var_x) / 2) ** 2 + cov_xy**2)
    major = half_trace + spread
    minor = np.clip(half_trace - spread, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        eccentricity = np.sqrt(np.clip(1 - minor / major, 0, 1))
    return np.where(major > 0, eccentricity, 0.0)


def _empty_table(colour: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            column: pd.Series(dtype=np.int64 if column in _INTEGER_COLUMNS else np.float64)
            for column in table_columns(colour)
        }
    )
