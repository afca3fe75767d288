"""Open an image larger than memory without reading it: a TIFF or OME-TIFF through tifffile's zarr
store, an OME-Zarr (its full-resolution level) or a plain zarr array, as a dask array of one 2-D
gray or colour plane that :func:`napari_nucleiseg.large.segment_large` reads block by block."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageError


@dataclass
class LazyImage:
    """One 2-D plane, read lazily: ``data`` is a dask array ``(Y, X)`` or ``(Y, X, 3|4)``."""

    data: Any
    rgb: bool
    axes: str  # the file's axes, e.g. "YX", "YXS", "CYX", "TCZYX"
    source: Any = None  # what must stay open while ``data`` is read (a TiffFile)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


@contextmanager
def quiet_tifffile():
    """tifffile logs a damaged file's problems (``... contains no pages``) and reads on: inside, those lines
    are not printed; the callers say what is wrong in one sentence."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr store (a folder holding zarr.json, .zarray, .zgroup or .zattrs)."""
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup", ".zattrs"))


def open_lazy(path: str | Path, channel: int | None = None) -> LazyImage:
    """Open the image at ``path`` lazily (see the module); ``channel`` picks one of a C axis.

    Raises
    ------
    ImageError
        For a file that holds no 2-D image (after the channel and any axis of length 1 are taken
        away), a channel out of range or missing, or a zarr store that is no image.
    """
    path = Path(path)
    if is_zarr(path):
        array, axes = _open_zarr(path)
        return _plane(array, axes, channel, colour_in_c=True)
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    try:
        series = tif.series[0]
        array = zarr.open_array(series.aszarr(level=0), mode="r")
        return _plane(array, series.axes.upper(), channel, source=tif)
    except BaseException:
        tif.close()
        raise


def _open_zarr(path: Path) -> tuple[Any, str]:
    """The full-resolution array of an OME-Zarr image (or a plain zarr array) and its axes."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node, "YX" if node.ndim == 2 else ("YXS" if node.ndim == 3 and node.shape[-1] in (3, 4) else "?" * node.ndim)
    attributes = dict(node.attrs)
    ome = attributes.get("ome")
    multiscales = attributes.get("multiscales") or (ome.get("multiscales") if isinstance(ome, dict) else None)
    if not multiscales:
        raise ImageError(f"{path} is a zarr group but no OME-Zarr image (no 'multiscales' in its attributes).")
    try:
        image = multiscales[0]
        level = node[image["datasets"][0]["path"]]
        names = [axis["name"] if isinstance(axis, dict) else str(axis)
                 for axis in image.get("axes", "tczyx"[-level.ndim:])]
        axes = "".join(name[0].upper() for name in names)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, zarr.errors.BaseZarrError):
        level = None  # ('./0' or '0/../0' as a path: zarr's ValueError)
    if not isinstance(level, zarr.Array):  # written by hand or by a tool that read the specification otherwise
        raise ImageError(f"{path}'s OME-Zarr metadata does not name its image's arrays as the specification has it "
                         "('multiscales': a list of images, the first one's 'datasets' a list of paths to arrays).")
    return level, axes


def _plane(array: Any, axes: str, channel: int | None, source: Any = None, colour_in_c: bool = False) -> LazyImage:
    """The one 2-D plane of ``array`` (axes named by ``axes``) as a dask array. With ``colour_in_c`` (OME-Zarr,
    which has no axis of colours), a C axis of 3 is an RGB picture's unless a channel is given; a TIFF's colours
    are its samples stored last (S), and its C axis holds channels (QA: a DAPI, GFP, Cy5 mosaic of 8192 x
    8192 was read as one colour picture, 2,331 nuclei for about 25,000, without a word)."""
    import dask.array as da

    data = da.from_zarr(array)
    if len(axes) != data.ndim:
        axes = "?" * (data.ndim - 2) + "YX"
    if colour_in_c and "C" in axes and channel is None and data.shape[axes.index("C")] == 3:
        data = da.moveaxis(data, axes.index("C"), -1)
        axes = axes.replace("C", "") + "S"
    if "C" in axes:
        count = data.shape[axes.index("C")]
        if channel is None and count > 1:
            raise ImageError(f"The image has {count} channels (axes {axes}); choose the nuclear stain with "
                             f"--channel 0..{count - 1}.")
        if channel is not None and not 0 <= channel < count:
            raise ImageError(f"Channel {channel} does not exist: the image has {count} (0..{count - 1}).")
        data = da.take(data, channel or 0, axis=axes.index("C"))
        axes = axes.replace("C", "")
    keep = [i for i, (name, length) in enumerate(zip(axes, data.shape)) if length > 1 or name in "YXS"]
    data = data.reshape(tuple(data.shape[i] for i in keep))
    axes = "".join(axes[i] for i in keep)
    rgb = axes.endswith("S") and data.shape[-1] in (3, 4)
    if rgb and channel is not None:  # one colour of an RGB picture, as the command line reads a small one
        if not 0 <= channel < 3:
            raise ImageError(f"Channel {channel} does not exist: the image has 3 colours (0..2).")
        data, axes, rgb = data[..., channel], axes[:-1], False
    if axes not in ("YX", "YXS") or (axes == "YXS" and not rgb):
        raise ImageError(f"An image of shape {tuple(data.shape)} (axes {axes}) is not one 2-D plane; large images "
                         "are segmented one 2-D gray or colour plane at a time.")
    return LazyImage(data, rgb, axes, source)
