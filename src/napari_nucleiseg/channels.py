"""Which axis of an image holds channels (DAPI, a marker, ...), and one channel of it.

Segmenting every channel of a DAPI + marker image as planes of a stack adds the marker's false
nuclei to the count. An axis is taken for channels when something says so: the viewer's axis label
(``c``, ``channel``), a reader's ``axes`` in the layer metadata (``"CYX"``), or a last axis of 2-15
entries that napari does not show as colour (a ``(Y, X, 2)`` or ``(Y, X, 6)`` image). An axis before the
plane of 2-4 entries that nothing names (the only such axis: ``(2, Y, X)``, ``(Z, 2, Y, X)``) may be channels or
a short stack: the widget offers it as channels, but keeps it as planes unless the user chooses one, and says so
under the count. (The command line reads a file's own axes, and keeps such an axis as planes unless given
``--channel``.)

An RGB layer (napari shows it as one picture) is read as a colour picture, or one colour of it: the widget
offers red, green and blue as channels on :data:`COLOUR_AXIS` (a 16-bit ``(Y, X, 3)`` array of three
fluorescence channels is RGB to napari).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Axis labels and reader axes letters that mean channels, and those that mean planes.
CHANNEL_LABELS = frozenset({"c", "ch", "channel", "channels"})
PLANE_LABELS = frozenset({"z", "t", "time", "depth", "plane", "planes", "slice"})
#: An axis nothing names is offered as channels only with this many entries at most.
MAX_UNNAMED_CHANNELS = 4
#: Nor when its planes are smaller than this (pixels a side): then it is no image of channels.
MIN_PLANE_SIDE = 16
#: The axis of a channel ``(axis, index)`` that is a colour of an RGB layer (red 0, green 1, blue 2), the
#: data's last axis, which napari does not count among the layer's axes.
COLOUR_AXIS = -1
#: The colours of an RGB layer offered as channels (alpha is not).
COLOURS = ("red", "green", "blue")


@dataclass(frozen=True)
class ChannelAxis:
    """The axis of an image's data that may hold channels."""

    axis: int  # from 0, in the data's axes
    count: int  # its entries
    named: bool  # something says it holds channels; False: a guess (a short unnamed leading axis)


def find_channel_axis(shape: Sequence[int], rgb: bool, axis_labels: Sequence[str] = (),
                      metadata: dict[str, Any] | None = None) -> ChannelAxis | None:
    """The axis of data of ``shape`` that holds (or may hold) channels; None when none does.

    ``axis_labels`` are the viewer's labels of the data's axes (the last ``len(shape)``), and
    ``metadata`` the layer's (a reader's ``axes``, e.g. ``"CYX"``). An RGB layer's colour is not
    channels here: napari shows it as one picture.
    """
    shape = tuple(int(side) for side in shape)
    plane_axes = 3 if rgb else 2
    if len(shape) <= plane_axes:
        return None
    candidates = range(len(shape) - plane_axes)  # the axes before the plane
    labels = data_axis_labels(shape, rgb, axis_labels)
    if labels:
        for axis in candidates:
            if labels[axis] in CHANNEL_LABELS:
                return ChannelAxis(axis, shape[axis], named=True)
    axes = str((metadata or {}).get("axes", "")).upper()
    if len(axes) == len(shape) and "C" in axes[: len(shape) - plane_axes]:
        axis = axes.index("C")
        return ChannelAxis(axis, shape[axis], named=True)
    if len(axes) == len(shape) and "T" in axes[: len(shape) - plane_axes]:
        # A file that names time points (ImageJ writes frames only for a hyperstack made so) names its other axes
        # too: none is guessed to be channels (QA: a TZYX hyperstack's 3 time points were offered as channels).
        # A file naming Z alone may still hold channels: ImageJ writes any plain stack as slices.
        return None
    if rgb:
        return None
    if channels_last(shape):
        return ChannelAxis(2, shape[-1], named=True)  # (Y, X, C): napari would show X against C
    if min(shape[-2:]) < MIN_PLANE_SIDE:
        return None
    axis = short_unnamed_axis(shape, labels)
    return None if axis is None else ChannelAxis(axis, shape[axis], named=False)


def data_axis_labels(shape: Sequence[int], rgb: bool, axis_labels: Sequence[str] = ()) -> list[str]:
    """The viewer's ``axis_labels`` of an image of ``shape`` (the last ones), lower case, one per axis of its
    data; ``""`` for an RGB layer's colours, which the viewer does not count among its axes (QA: an RGB stack's
    "z" and "c" were read one axis off). ``[]`` when there are too few."""
    dims = len(shape) - bool(rgb)
    labels = [str(label).strip().lower() for label in axis_labels][-dims:] if dims > 0 else []
    return labels + [""] * bool(rgb) if len(labels) == dims else []


def short_unnamed_axis(shape: Sequence[int], labels: Sequence[str] = ()) -> int | None:
    """The only axis of ``shape`` before its 2-D plane with 2 to :data:`MAX_UNNAMED_CHANNELS` entries that
    ``labels`` (lower case, one per axis, or none) do not name as planes: ``(C, Y, X)``, or a ``(Z, C, Y, X)``
    hyperstack as an array; None when there is none, or two (no guess)."""
    short = [axis for axis in range(len(shape) - 2) if 2 <= shape[axis] <= MAX_UNNAMED_CHANNELS
             and not (labels and labels[axis] in PLANE_LABELS)]
    return short[0] if len(short) == 1 else None


def with_file_axes(metadata: dict[str, Any] | None, path: Any, shape: Sequence[int]) -> dict[str, Any]:
    """A layer's ``metadata``, with the ``axes`` of the TIFF file at ``path`` that it was read from
    (ImageJ or OME metadata: ``"ZCYX"``) when it names none and the file's shape is the layer's.
    napari's own reader hands a hyperstack over as a bare array: without its axes, the channels of a
    ``(Z, C, Y, X)`` stack were segmented as planes."""
    metadata = dict(metadata or {})
    if "axes" not in metadata and (axes := _file_header(path, shape)[0]):
        metadata["axes"] = axes
    return metadata


def file_pixel_size(path: Any, shape: Sequence[int]) -> Any:
    """The pixel size (a :class:`~napari_nucleiseg.tables.PixelSize` in micrometres, as the command line reads
    it) that the TIFF at ``path`` records, when its shape is ``shape``; None when it records none. napari's own
    reader sets no scale from a file (QA: the command line's nuclei.csv had area_um2 for a file whose table in
    the widget had none)."""
    return _file_header(path, shape)[2]


def _file_header(path: Any, shape: Sequence[int]) -> tuple[str, tuple[int, ...], Any]:
    """:func:`_tiff_header` of the TIFF at ``path`` when its shape is ``shape``, else ``("", (), None)``."""
    if not path or not str(path).lower().endswith((".tif", ".tiff")):
        return "", (), None
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return "", (), None
    header = _tiff_header(str(path), stat.st_mtime_ns, stat.st_size)
    return header if tuple(header[1]) == tuple(int(side) for side in shape) else ("", (), None)


@functools.lru_cache(maxsize=64)
def _tiff_header(path: str, mtime_ns: int, size: int) -> tuple[str, tuple[int, ...], Any]:
    """The axes, shape and recorded pixel size of the first series of the TIFF at ``path`` (its header only),
    ``("", (), None)`` when it cannot be read; ``mtime_ns`` and ``size`` make a changed file read again."""
    import tifffile

    from .cli import tiff_pixel_size
    from .lazy_io import quiet_tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            return str(series.axes).upper(), tuple(int(side) for side in series.shape), tiff_pixel_size(tiff)
    except Exception:  # noqa: BLE001 - any file napari read but tifffile cannot: no axes, as before
        return "", (), None


def channels_last(shape: Sequence[int]) -> bool:
    """Whether an image of ``shape`` has its channels last: ``(Y, X, C)`` with 1 to 15 channels
    (fewer than :data:`MIN_PLANE_SIDE`, as 5 or 6 stains of a multiplexed image), rows and columns
    not. Read as a stack instead, its planes would be ``X`` by ``C`` pixels: too narrow for nuclei (QA: a
    gray ``(Y, X, 1)`` TIFF was refused so in the widget, with the Channel picker, which it advised, hidden)."""
    shape = tuple(int(side) for side in shape)
    return len(shape) == 3 and 1 <= shape[-1] < MIN_PLANE_SIDE <= min(shape[:2])


def take_channel(data: Any, axis: int, index: int) -> Any:
    """Channel ``index`` of ``data`` along ``axis`` (:data:`COLOUR_AXIS`: the last): a view (numpy) or a lazy
    slice (dask, zarr). A colour of RGBA ``data`` is 0 where it is fully transparent, as napari shows it
    (review: blue of a half-transparent picture found as many nuclei in its transparent half as in the other)."""
    if axis != COLOUR_AXIS:
        return data[(slice(None),) * axis + (index,)]
    colour = data[..., index]
    if data.shape[-1] != 4:
        return colour
    import numpy as np

    if isinstance(data, np.ndarray):
        if not (data[..., 3] == 0).any():
            return colour  # opaque: a view, as any other colour
        import dask.array as da  # (lazy: no copy of the plane on the main thread; review, 0.64 s at 6144^2)

        data = da.from_array(data, chunks=(1,) * (data.ndim - 3) + (-1, -1, -1), name=False)
        colour = data[..., index]
    return np.where(data[..., 3] == 0, np.zeros((), dtype=colour.dtype), colour)  # (dask's, lazily)


def is_colour(channel: tuple[int, int] | None) -> bool:
    """Whether ``channel`` (``(axis, index)``, or None) is one colour of an RGB layer."""
    return channel is not None and channel[0] == COLOUR_AXIS


def reads_colour(rgb: bool, channel: tuple[int, int] | None) -> bool:
    """Whether segmenting an image (``rgb``: napari shows it as a colour picture) of ``channel`` reads a colour
    picture: not when the channel is one of its colours."""
    return rgb and not is_colour(channel)


def channel_value(channel: tuple[int, int]) -> int | str:
    """What a result's metadata records of ``channel``: its index, or its colour (``"red"``)."""
    return COLOURS[channel[1]] if is_colour(channel) else channel[1]


def channel_name(channel: tuple[int, int]) -> str:
    """How a result's name and metadata call ``channel``: ``"channel 1"``, or a colour (``"red"``)."""
    return COLOURS[channel[1]] if is_colour(channel) else f"channel {channel[1]}"
