"""Images larger than memory in the dock widget: which images are segmented block by block, the run
that does it (:func:`~napari_nucleiseg.large.segment_large` in the worker thread), and where its labels go.

A multiscale Image layer (its full-resolution level, read lazily), or one plane of at least
:data:`~napari_nucleiseg.large.LARGE_IMAGE_PIXELS` pixels or too large for the free memory, is
segmented block by block into an OME-Zarr store in the user's cache folder
(:func:`store_path`). The result is one lazy multiscale Labels layer of the store's levels, with the
table of the one pass as its features. Its threshold and other settings cannot be changed afterwards
without running the network again (the probabilities are not kept): the widget says so.

The worker builds that layer too (:func:`labels_layer`), hidden, so that the main thread only adds it
and then shows it: adding a Labels layer of 14,041 nuclei to the viewer blocked the window for 373 ms
(benchmarks/bench_large_gui.py), in napari's display objects for it and in reading and drawing its view.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._batch import remove_tree
from ._run import Failure, failure_of, file_key
from .channels import channel_value
from .pipeline import ChosenSettings

#: The folder under the user's cache folder where the labels of images segmented block by block go.
STORE_FOLDER = "large"
#: An image's name is kept in its store's name with characters other than these replaced by "_".
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: The store's halved levels of at most this many pixels (16 MB of labels each) are read into memory by
#: the worker: napari shows one of them whenever the whole image is in view, and reading it from the store
#: would be on the main thread (a 2048 px level: about 15 ms to decompress). The full-resolution level
#: is always read as shown.
IN_MEMORY_LEVEL_PIXELS = 2048 * 2048


@dataclass
class LargeFinished:
    """A run that segmented an image block by block: the result, the model that made it, and the store."""

    result: Any  # a napari_nucleiseg.large.LargeResult
    model: Any  # the NucleiModel, to be reused while its file is unchanged
    model_key: tuple[str, int]
    store: Path
    layer: Any = None  # its napari Labels layer, hidden, built in the worker (labels_layer)
    placement: dict[str, Any] | None = None  # where that layer lies: the image's placement at the start


def segmented_in_blocks(image: Any, plane: tuple[int, int], too_large: bool) -> bool:
    """Whether the Image layer ``image``, whose planes are ``plane`` pixels, is segmented block by block:
    it is multiscale, or its planes are of at least :data:`~napari_nucleiseg.large.LARGE_IMAGE_PIXELS`
    pixels, or segmenting it whole needs more memory than is free (``too_large``)."""
    from . import large

    return bool(image.multiscale or plane[0] * plane[1] >= large.LARGE_IMAGE_PIXELS or too_large)


def blocks_shortfall(image_name: str) -> str | None:
    """A sentence for the user when segmenting the image ``image_name`` block by block would need more memory
    than is free (one block as large as the network may see it, its arrays and the model); None when it fits."""
    from . import large
    from .memory import memory_shortfall

    side = math.isqrt(large.BLOCK_NETWORK_PIXELS)
    shortfall = memory_shortfall((side, side))
    if shortfall is None:
        return None
    return f"'{image_name}' is segmented in blocks of up to {side} x {side} pixels: {shortfall[0].lower()}{shortfall[1:]}"


def lazy_plane(image: Any, channel: tuple[int, int] | None) -> Any:
    """The pixels of the Image layer ``image`` to segment block by block, not read: its full-resolution
    level if it is multiscale, as a dask array (any other array than numpy's is wrapped, so that taking
    its ``channel``, ``(axis, index)``, reads nothing either)."""
    import dask.array as da

    from .channels import take_channel

    data = image.data[0] if image.multiscale else image.data
    if not isinstance(data, (np.ndarray, da.Array)):
        chunks = getattr(data, "chunks", None)
        data = da.from_array(data, chunks=chunks if isinstance(chunks, tuple) else "auto")
    return data if channel is None else take_channel(data, *channel)


def store_path(image_name: str, now: float | None = None) -> Path:
    """Where the labels of the image ``image_name`` segmented block by block go: an OME-Zarr folder
    ``<image name>-<time>.ome.zarr`` in ``large/`` of the user's cache folder (the folder is made, the
    store is not; a name taken gets ``-2``, ``-3``, ...)."""
    from platformdirs import user_cache_dir

    folder = Path(user_cache_dir("napari-nucleiseg")) / STORE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{SAFE_NAME.sub('_', image_name).strip('_') or 'image'}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"
    path, number = folder / f"{stem}.ome.zarr", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.ome.zarr"
    return path


def segment_in_blocks(data: Any, rgb: bool, weights: Path, out: Path, *, model: Any = None,
                      settings: ChosenSettings = None, diameter: float | None = None, augment: bool = False,
                      brown_nuclei: bool = False, channel: tuple[int, int] | None = None, placement: dict[str, Any] | None = None,
                      on_progress: Callable[[int, int], None] | None = None,
                      cancelled: Callable[[], bool] | None = None) -> LargeFinished | Failure:
    """Load the model (unless given) and segment the 2-D ``data`` block by block into ``out``, for a worker
    thread, then build the result's Labels layer (:func:`labels_layer`; ``channel``, ``(axis, index)``,
    is the image's channel segmented, ``placement`` where the image lies): what goes wrong comes back as
    a :class:`~._run.Failure`, and a run that fails or is cancelled leaves no store."""
    from .large import segment_large
    from .weights import load_weights

    placement = {} if placement is None else placement
    try:
        key = file_key(weights)
        model = model if model is not None else load_weights(weights)
        result = segment_large(data, model, out, settings, diameter=diameter, augment=augment,
                               brown_nuclei=brown_nuclei, rgb=rgb, progress=on_progress, cancelled=cancelled)
        finished = LargeFinished(result, model, key, Path(out), placement=placement)
        finished.layer = labels_layer(finished, channel, placement)
    except Exception as error:
        remove_tree(out)
        return failure_of(error, np.shape(data), weights)
    except BaseException:
        remove_tree(out)
        raise
    _compute_line_patterns()
    return finished


def result_metadata(finished: LargeFinished, channel: tuple[int, int] | None) -> dict[str, Any]:
    """What the Labels layer of an image segmented block by block records of its run: that it was, where
    its labels are, the settings, model and diameter, and the channel segmented."""
    result = finished.result
    recorded = {"block_by_block": True, "store": str(finished.store), "settings": result.settings.row(),
                "model": finished.model.name, "diameter": result.diameter,
                "diameter_estimated": result.diameter_estimated, "scale": result.scale,
                "augmented": result.augmented, "brown_nuclei": result.brown_nuclei,
                "exclude_border": result.settings.exclude_border,
                "left_out": result.left_out}
    return recorded if channel is None else recorded | {"channel": channel_value(channel)}


def layer_levels(levels: list[Any]) -> list[Any]:
    """The store's levels (zarr arrays) as dask arrays for one multiscale Labels layer: the full-resolution
    level and the large halved ones read as shown, the halved ones of at most
    :data:`IN_MEMORY_LEVEL_PIXELS` pixels read now, into memory (call it in the worker)."""
    import dask.array as da

    return [da.from_array(level[...], chunks=level.shape) if number and level.size <= IN_MEMORY_LEVEL_PIXELS
            else da.from_zarr(level) for number, level in enumerate(levels)]


def labels_layer(finished: LargeFinished, channel: tuple[int, int] | None, placement: dict[str, Any]) -> Any:
    """The Labels layer of an image segmented block by block, lying where ``placement`` says (the image's,
    :func:`~._outputs.placement`): its levels (:func:`layer_levels`; one level is not multiscale), the
    run's table as its features (with the measurements in the image's unit, if it has one) and the
    run in its metadata (:func:`result_metadata`). Built hidden, in the worker: the main thread adds it
    and shows it in a later turn of its event loop (:meth:`~._outputs.OutputLayers.write_lazy`)."""
    from napari.layers import Labels

    from ._outputs import pixel_size
    from .tables import physical_columns

    levels = layer_levels(finished.result.levels)
    several = len(levels) > 1  # an image under 1024 px a side has one level: napari takes it as is
    layer = Labels(levels if several else levels[0], multiscale=several, visible=False,
                   metadata=result_metadata(finished, channel), **placement)
    table = finished.result.table.copy()  # its index column, equal to label, is what napari shows a row by
    pixel = pixel_size(layer)
    layer.features = table if pixel is None else physical_columns(table, pixel)
    return layer


def layer_for(finished: LargeFinished, channel: tuple[int, int] | None, placement: dict[str, Any]) -> Any:
    """The Labels layer the worker built for ``finished``, or, if the image was moved during the run (its
    ``placement`` now is not the one the layer was built with), one built here, where the image lies."""
    if finished.layer is not None and same_placement(placement, finished.placement or {}):
        return finished.layer
    return labels_layer(finished, channel, placement)


def same_placement(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two placements (:func:`~._outputs.placement`) put a layer in the same place."""

    def values(value: Any) -> np.ndarray:  # an Affine by its matrix; units (pint) compared as objects
        return np.asarray(getattr(value, "affine_matrix", value), dtype=object)

    return first.keys() == second.keys() and all(
        np.array_equal(values(first[key]), values(second[key])) for key in first)


def _compute_line_patterns() -> None:
    """Have vispy compute its line dash patterns now, in the worker. It does so once per process, the first
    time a line is made, in about 50 ms; napari makes lines for a Labels layer's polygon tool when the
    layer is added: without this, the first Labels layer of a session paid them on the main thread."""
    try:
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception:  # a vispy made otherwise: it makes its patterns as it does, and nothing is lost
        return
