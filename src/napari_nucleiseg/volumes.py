"""3-D nuclei from a Z stack segmented plane by plane: the planes' labels linked by overlap, and the
table of the nuclei as volumes.

A nucleus cut by neighbouring planes is found in each of them as a 2-D object; linking gives the
objects of one nucleus one label through the planes, as Cellpose's ``stitch_threshold`` does: an
object takes the label of the object in the plane before that it overlaps most, when their
intersection over union is at least :data:`LINK_IOU` and no other object of its plane overlaps
that one more. Other leading axes (time) are never linked: each time point has its own nuclei.
:func:`find_volume_axis` says which axis of an image is its Z axis, for the widget's "3-D nuclei" box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .channels import CHANNEL_LABELS, data_axis_labels

#: Intersection over union two objects of neighbouring planes need to be one nucleus. Consecutive
#: sections of a nucleus overlap far more (a sphere 10 planes across keeps IoU >= 0.6 between its
#: middle planes); two nuclei side by side overlap far less. Cellpose's documentation suggests 0.1-0.5.
LINK_IOU = 0.25

#: Axis labels (the viewer's, or a reader's ``axes`` letters) that name a Z axis, and those of time and of
#: colours or channels (a TIFF's ``S``: an RGB picture stored one colour after another): a Z axis is linked by
#: default, the others never.
Z_LABELS = frozenset({"z", "depth", "slice", "slices"})
TIME_LABELS = frozenset({"t", "time"})
COLOUR_LABELS = CHANNEL_LABELS | {"s"}

#: The columns of the table of 3-D nuclei, after any plane columns of unlinked axes (time).
VOLUME_COLUMNS = ("label", "volume", "centroid_z", "centroid_y", "centroid_x", "first_plane", "last_plane",
                  "largest_area", "mean_intensity")


def find_volume_axis(shape: Sequence[int], rgb: bool, axis_labels: Sequence[str] = (),
                     metadata: dict[str, Any] | None = None,
                     channel_axis: int | None = None) -> tuple[int | None, bool]:
    """The leading axis of the labels of an image of ``shape`` whose planes may be linked into 3-D nuclei,
    and whether something names it Z (then it is linked by default).

    ``axis_labels`` are the labels of the image's axes (the viewer's), ``metadata`` the layer's (a
    reader's ``axes``, e.g. ``"ZYX"``); ``channel_axis``, the image's axis a channel is taken from (the
    labels lack it). An axis labelled Z is the answer; else the only leading axis of a stack, unless it
    is time, colours or channels (unnamed: off by default, the user may tick it). ``(None, False)``: nothing to
    link (a single plane, time, colours, channels, or several leading axes none of which is Z).
    """
    shape = tuple(shape)
    leading = [axis for axis in range(len(shape) - (3 if rgb else 2)) if axis != channel_axis]
    labels = data_axis_labels(shape, rgb, axis_labels)
    letters = str((metadata or {}).get("axes", "")).lower()  # (a reader's "ZYXS" names the colours)
    names = [{labels[axis] if labels else "", letters[axis] if len(letters) == len(shape) else ""}
             for axis in leading]
    for position, named in enumerate(names):
        if named & Z_LABELS:
            return position, True
    if len(leading) == 1 and not names[0] & (TIME_LABELS | COLOUR_LABELS):  # (QA: a planar RGB's S offered)
        return 0, False
    return None, False


def count_sections(labels: np.ndarray, axis: int) -> int:
    """The 2-D sections of the nuclei of ``labels`` ``(*leading, Y, X)`` in the planes along leading
    ``axis``: what a plane-by-plane count would give."""
    moved = np.moveaxis(np.asarray(labels), axis, 0)
    return sum(int(np.unique(plane[plane > 0]).size) for plane in moved)


def link_planes(labels: np.ndarray, axis: int, threshold: float = LINK_IOU) -> np.ndarray:
    """``labels`` ``(*leading, Y, X)`` with the objects of neighbouring planes along leading ``axis``
    linked into 3-D nuclei: numbered 1..N through the whole stack (uint16, or uint32 above 65,535).
    The input is not changed."""
    labels = np.asarray(labels)
    if not 0 <= axis < labels.ndim - 2:
        raise ValueError(f"axis {axis} is not a leading axis of labels of shape {labels.shape}")
    moved = np.moveaxis(labels, axis, -3)
    linked = np.zeros(moved.shape, dtype=np.int64)
    next_label = 1
    for index in np.ndindex(*moved.shape[:-3]):
        volume = moved[index]
        out = linked[index]
        for z in range(volume.shape[0]):
            plane = volume[z].astype(np.int64)
            mapping = _links(out[z - 1], plane, threshold) if z else {}
            inside = plane > 0
            ids = np.unique(plane[inside])  # sorted: searchsorted finds each pixel's object
            values = np.empty(ids.size, dtype=np.int64)
            for position, obj in enumerate(ids.tolist()):
                if obj in mapping:
                    values[position] = mapping[obj]
                else:
                    values[position], next_label = next_label, next_label + 1
            out[z][inside] = values[np.searchsorted(ids, plane[inside])]
    dtype = np.uint16 if next_label - 1 <= np.iinfo(np.uint16).max else np.uint32
    return np.moveaxis(linked, -3, axis).astype(dtype)


def _links(previous: np.ndarray, plane: np.ndarray, threshold: float) -> dict[int, int]:
    """``{object of plane: label of previous}`` for the pairs that link (see the module)."""
    both = (previous > 0) & (plane > 0)
    if not both.any():
        return {}
    pairs, inter = np.unique(np.stack([previous[both], plane[both]]), axis=1, return_counts=True)
    prev_ids, prev_areas = np.unique(previous[previous > 0], return_counts=True)
    cur_ids, cur_areas = np.unique(plane[plane > 0], return_counts=True)
    area_prev = prev_areas[np.searchsorted(prev_ids, pairs[0])]
    area_cur = cur_areas[np.searchsorted(cur_ids, pairs[1])]
    iou = inter / (area_prev + area_cur - inter)
    keep = iou >= threshold
    pairs, iou = pairs[:, keep], iou[keep]
    # each object of the plane before goes to the object of this plane it overlaps most, and each
    # object of this plane takes the best of those offered to it
    best_for_prev: dict[int, tuple[float, int]] = {}
    for p, c, value in zip(pairs[0].tolist(), pairs[1].tolist(), iou.tolist()):
        if value > best_for_prev.get(p, (-1.0, 0))[0]:
            best_for_prev[p] = (value, c)
    best_for_cur: dict[int, tuple[float, int]] = {}
    for p, (value, c) in best_for_prev.items():
        if value > best_for_cur.get(c, (-1.0, 0))[0]:
            best_for_cur[c] = (value, p)
    return {c: p for c, (_, p) in best_for_cur.items()}


def measure_volumes(labels: np.ndarray, image: Any = None) -> Any:
    """One row per 3-D nucleus of ``labels`` ``(Z, Y, X)``: :data:`VOLUME_COLUMNS` (volume in voxels,
    centroid in planes and pixels, the first and last plane it is in, its largest section's area in
    pixels, and its mean gray value in ``image`` ``(Z, Y, X[, C])``, NaN without one; for a colour image,
    each colour's mean too, :data:`~napari_nucleiseg.postprocess.COLOUR_COLUMNS`)."""
    import pandas as pd

    from .postprocess import COLOUR_COLUMNS

    labels = np.asarray(labels)
    colour = image is not None and np.ndim(image) == labels.ndim + 1 and np.shape(image)[-1] >= 3
    flat = np.flatnonzero(labels)  # the nuclei's voxels only: a stack is mostly background
    if flat.size == 0:
        columns = VOLUME_COLUMNS + (COLOUR_COLUMNS if colour else ())
        return pd.DataFrame({column: pd.Series(dtype=float) for column in columns}).astype({"label": int})
    ids, objects = np.unique(labels.ravel()[flat], return_inverse=True)
    zz, yy, xx = np.unravel_index(flat, labels.shape)
    volume = np.bincount(objects, minlength=ids.size)
    first = np.full(ids.size, labels.shape[0], dtype=np.int64)
    np.minimum.at(first, objects, zz)
    last = np.zeros(ids.size, dtype=np.int64)
    np.maximum.at(last, objects, zz)
    sections = np.unique(objects.astype(np.int64) * labels.shape[0] + zz, return_counts=True)
    largest = np.zeros(ids.size, dtype=np.int64)
    np.maximum.at(largest, sections[0] // labels.shape[0], sections[1])
    intensity, colours = np.full(ids.size, np.nan), {}
    if image is not None:
        from .postprocess import finite_means

        pixels = np.asarray(image).reshape(labels.size, -1)[flat, :3].astype(np.float64)
        intensity = finite_means(objects, pixels.mean(axis=1), ids.size)  # as a 2-D nucleus's: NaN, inf left out
        if colour:
            colours = {name: finite_means(objects, pixels[:, channel], ids.size)
                       for channel, name in enumerate(COLOUR_COLUMNS)}
    return pd.DataFrame({
        "label": ids.astype(np.int64), "volume": volume,
        "centroid_z": np.bincount(objects, weights=zz, minlength=ids.size) / volume,
        "centroid_y": np.bincount(objects, weights=yy, minlength=ids.size) / volume,
        "centroid_x": np.bincount(objects, weights=xx, minlength=ids.size) / volume,
        "first_plane": first, "last_plane": last, "largest_area": largest, "mean_intensity": intensity, **colours,
    })
