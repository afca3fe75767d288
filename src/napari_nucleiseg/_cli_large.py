"""The command line's images larger than memory: a TIFF of at least
:data:`~napari_nucleiseg.large.LARGE_IMAGE_PIXELS` pixels or an OME-Zarr is segmented block by block
(:func:`~napari_nucleiseg.large.segment_large`), read lazily, and its labels written as an OME-Zarr
``<name>_labels.ome.zarr`` beside the other outputs, under a temporary name until it is complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tables import PixelSize, physical_columns

#: The labels of an image segmented block by block: an OME-Zarr folder.
LARGE_LABELS_SUFFIX = "_labels.ome.zarr"
#: Inputs read as zarr stores (folders).
ZARR_SUFFIXES = (".zarr",)


def is_large_input(path: Path) -> bool:
    """Whether ``path`` is segmented block by block: a zarr store, or a TIFF whose first image declares at
    least :data:`~napari_nucleiseg.large.LARGE_IMAGE_PIXELS` pixels in a plane (read from its header only)."""
    from . import large
    from .lazy_io import is_zarr

    if is_zarr(path):
        return True
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    import tifffile

    from .lazy_io import quiet_tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes.upper(), series.shape
    except Exception:  # not readable as TIFF: the ordinary reader says why, in one line
        return False
    if "Y" not in axes or "X" not in axes:
        return False
    return shape[axes.index("Y")] * shape[axes.index("X")] >= large.LARGE_IMAGE_PIXELS


def output_stem(source: Path) -> str:
    """The name the outputs of ``source`` start with: its stem, less a zarr store's ``.zarr`` and an
    OME file's ``.ome`` (``cells.ome.tif`` and ``cells.ome.zarr``: ``cells``)."""
    name = source.name if source.is_dir() else source.stem
    for suffix in (".zarr", ".ome") if source.is_dir() else (".ome",):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def partial_path(labels_path: Path) -> Path:
    """Where the labels are written until they are complete (removed by ``remove_partial_files``)."""
    return labels_path.with_name(f".{labels_path.name}.partial")


@dataclass
class LargeImageWritten:
    """An image segmented block by block by the CLI: its labels complete under their temporary name (the
    widget's counterpart is ``_large_layer.LargeFinished``)."""

    job: Any
    row: dict
    table: Any
    fingerprint: dict | None = None
    plane_axes: str = ""
    note: str | None = None  # said on stderr once written: how an RGB overlay of fluorescence channels was read

    def write(self, before_rename: Callable[[Any], None] | None = None) -> tuple[dict, Any]:
        """Rename the labels into place (a replaced run's were set aside first), calling ``before_rename``
        with their temporary name first; the image's rows."""
        if before_rename is not None:
            before_rename(partial_path(self.job.labels_path))
        os.replace(partial_path(self.job.labels_path), self.job.labels_path)
        return self.row, self.table


def segment_large_image(job: Any, model: Any, args: Any, chosen: dict[str, Any],
                        cancelled: Callable[[], bool] | None = None, identity: dict | None = None) -> LargeImageWritten:
    """Segment ``job.source`` block by block into the temporary name of its labels, with the settings
    ``chosen`` (``cli.chosen_settings``).

    Raises
    ------
    ImageError, ValueError, Cancelled, OSError
        As :func:`~napari_nucleiseg.lazy_io.open_lazy` and :func:`~napari_nucleiseg.large.segment_large` do;
        a cancelled or failed run leaves no temporary folder.
    """
    from ._batch import remove_tree
    from .cli import colour_note, count_row
    from .large import segment_large
    from .lazy_io import open_lazy

    image = open_lazy(job.source, channel=args.channel)
    partial = partial_path(job.labels_path)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        pixel = stored_pixel_size(job.source, image)
        result = segment_large(image.data, model, partial, chosen, diameter=args.diameter, augment=args.augment,
                               brown_nuclei=args.brown_nuclei, rgb=image.rgb, cancelled=cancelled,
                               progress=BlockLines(Path(job.source).name))
        if pixel is not None:
            calibrate_pyramid(partial, pixel)
        note = colour_note(image.data, args.brown_nuclei) if image.rgb else None
    except BaseException:
        remove_tree(partial)  # (chunks of a failed write may land after a first delete)
        raise
    finally:
        image.close()
    row = count_row(job, result, model.name, args.channel)
    table = result.table.drop(columns="index")  # (napari's row key; QA: an 'index' column in nuclei.csv)
    table = table if pixel is None else physical_columns(table, pixel)
    return LargeImageWritten(job, row, table.assign(file=str(job.source)), identity, note=note)


def stored_pixel_size(path: Path, image: Any) -> PixelSize | None:
    """The pixel size, in micrometres, that a large input records: a TIFF's (``cli.tiff_pixel_size``, from
    the header ``image`` keeps open) or an OME-Zarr image's (the y and x scale of its full-resolution level,
    in the unit its axes name); None when it records none, or one that is no microscope's."""
    from .cli import _micrometres, tiff_pixel_size
    from .lazy_io import is_zarr

    if not is_zarr(path):
        return tiff_pixel_size(image.source) if hasattr(image.source, "pages") else None
    import zarr

    try:
        multiscales = dict(zarr.open_group(str(path), mode="r").attrs)
        multiscales = multiscales.get("multiscales") or multiscales.get("ome", {})["multiscales"]
        axes = [axis if isinstance(axis, dict) else {"name": axis} for axis in multiscales[0]["axes"]]
        names = [str(axis["name"]).lower() for axis in axes]
        # the full-resolution level's transformations, then the image's own (NGFF: scale, then translation)
        scale, shift = np.ones(len(axes)), np.zeros(len(axes))
        for transforms in (multiscales[0]["datasets"][0].get("coordinateTransformations", []),
                           multiscales[0].get("coordinateTransformations", [])):
            for transform in transforms:
                if transform["type"] == "scale":
                    factors = np.asarray(transform["scale"], float)
                    scale, shift = scale * factors, shift * factors
                elif transform["type"] == "translation":
                    shift = shift + np.asarray(transform["translation"], float)
        units = [_micrometres(1.0, axes[names.index(name)].get("unit", "")) for name in ("y", "x")]
        sizes = [scale[names.index(name)] * unit for name, unit in zip(("y", "x"), units, strict=True)]
        origin = tuple(float(shift[names.index(name)] * unit) for name, unit in zip(("y", "x"), units, strict=True))
    except (KeyError, ValueError, TypeError, IndexError, zarr.errors.BaseZarrError):
        return None
    if not all(np.isfinite(sizes)) or not all(1e-3 <= size <= 20 for size in sizes) or not all(np.isfinite(origin)):
        return None
    return PixelSize(float(sizes[0]), float(sizes[1]), "um", origin)


def calibrate_pyramid(labels_path: Path, pixel: PixelSize) -> None:
    """Record ``pixel`` (micrometres) in the labels' OME-Zarr metadata, as the label TIFFs keep the image's
    calibration: each level's scale in micrometres, the axes' unit ``micrometer``."""
    import zarr

    group = zarr.open_group(str(labels_path), mode="r+")
    multiscales = group.attrs["multiscales"]
    for axis in multiscales[0]["axes"]:
        axis["unit"] = "micrometer"
    for dataset in multiscales[0]["datasets"]:
        for transform in dataset["coordinateTransformations"]:
            if transform["type"] == "scale":
                transform["scale"] = [transform["scale"][0] * pixel.y, transform["scale"][1] * pixel.x]
        if any(pixel.origin):
            dataset["coordinateTransformations"].append({"type": "translation", "translation": list(pixel.origin)})
    group.attrs["multiscales"] = multiscales


class BlockLines:
    """``progress(done, total)`` of :func:`~napari_nucleiseg.large.segment_large`: a line on stderr now and
    then (every ``cli.PROGRESS_LINE_SECONDS``) of how many of an image's blocks are done and the time left at
    this pace (QA: an 8192 x 8192 mosaic ran 9.5 minutes without a word)."""

    def __init__(self, name: str):
        import time

        self.name, self._clock = name, time.monotonic
        self._start = self._last = self._clock()

    def __call__(self, done: int, total: int) -> None:
        import sys

        from .cli import PROGRESS_LINE_SECONDS, _duration

        now = self._clock()
        if done >= total or now - self._last < PROGRESS_LINE_SECONDS:
            return
        self._last = now
        left = (now - self._start) / done * (total - done)
        print(f"nucleiseg: {self.name}: {done} of {total} blocks done in {_duration(now - self._start)}; about "
              f"{_duration(left)} left.", file=sys.stderr, flush=True)
