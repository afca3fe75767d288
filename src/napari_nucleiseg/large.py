"""Images larger than memory: segmented block by block, labels written to a chunked zarr store.

A whole-slide scan or a stitched mosaic of 20,000-100,000 px does not fit in memory as float32, nor
do its probabilities or labels. :func:`segment_large` reads such an image (any array that can be
sliced: a zarr array, a dask array, a TIFF's zarr store, a memory map) one block at a time and
writes the labels to a zarr array on disk, so the memory it needs depends on the block size, not
the image size:

1. **One normalisation and one scale for the whole image.** The percentiles come from a regular
   grid of at most :data:`~napari_nucleiseg.preprocess.PERCENTILE_SAMPLE_PIXELS` pixels of the whole
   image (the grid a whole image is normalised from); the nucleus diameter is given, or estimated on
   the busiest :data:`ESTIMATE_SIDE` px window of it (the window the sweep looks at in a whole
   image), and every block is resized by the one factor it gives.
2. **Blocks with a margin.** Each block of :data:`BLOCK_SIDE` px (fewer when the network enlarges
   the image, so that a block stays within :data:`BLOCK_NETWORK_PIXELS`) is segmented with a margin
   of context on every side (:func:`block_margin`: three nucleus diameters, and at least the
   network's tile overlap), with the model's post-processing.
3. **No nucleus cut or counted twice at a seam.** A block keeps the nuclei whose centre lies in its
   own part (widened by a quarter of the margin, so a nucleus whose centre moves a pixel between two
   blocks' views is not lost) and that do not touch a cut edge of its context (those are incomplete
   there and whole in a neighbour's view). A nucleus that another block has already written, for
   at least half of its pixels, is not written again; one that overlaps less keeps only the pixels
   still free. A written nucleus is never changed again, so its row of the table is measured when it
   is written: the count and the table come from this one pass. An object wider than the margin
   (more than four nucleus diameters: a clump, debris, a fold) is whole in no block's view; it is
   left out rather than written in pieces, and :attr:`LargeResult.left_out` counts it.

Labels are numbered 1..N in the order the blocks are written (row by row), as uint32. The
threshold and the other settings are those given, or the model's: changing them later means
running again (the widget says so for such layers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import Cancelled, ImageError
from .pipeline import ChosenSettings, check_settings, check_switches, resolve_settings
from .preprocess import Normalization, sample_step
from .scale import check_diameter
from .settings import PostprocessSettings

if TYPE_CHECKING:
    import pandas as pd

    from .weights import NucleiModel

#: The side (image pixels) of a block's own part, before its margin, when the network does not enlarge
#: the image. 2048 keeps a block's arrays at about 0.3 GB and the margins at about 12% more work.
BLOCK_SIDE = 2048
#: A block (with its margin) is made smaller when the network would see more pixels than this.
BLOCK_NETWORK_PIXELS = 8_000_000
#: Chunks of the labels array on disk (napari reads a lazy layer chunk by chunk).
CHUNK_SIDE = 1024
#: The diameter is estimated on the busiest window of this side: the sweep's largest look
#: (:data:`~napari_nucleiseg.scale.ESTIMATE_WINDOW` network pixels at its smallest rung, x 1/8).
ESTIMATE_SIDE = 2048
#: A nucleus already written for at least this share of its pixels is the same nucleus.
SAME_NUCLEUS_SHARE = 0.5
#: Halved copies of the labels are added down to this side (napari shows the level that fits the view).
PYRAMID_MIN_SIDE = 512
#: Images of at least this many pixels are segmented block by block by the command line.
LARGE_IMAGE_PIXELS = 64_000_000


@dataclass
class LargeResult:
    """What :func:`segment_large` returns."""

    labels: Any  # the (Y, X) uint32 zarr array written (level "0" of the OME-Zarr group at ``out``)
    table: pd.DataFrame  # one row per nucleus: index (= label), then measure_nuclei's columns, in the image's pixels
    settings: PostprocessSettings
    diameter: float | None
    diameter_estimated: bool
    scale: float
    blocks: int
    left_out: int = 0  # objects too large for any block's view (wider than the margin), not written
    levels: list = field(default_factory=list)  # labels, then halved copies of them (write_pyramid)
    augmented: bool = False  # whether each block's maps are the mean over flips (``augment``)
    brown_nuclei: bool = False  # whether brown (DAB) was read as hematoxylin (``brown_nuclei``)
    noise_smoothing: float = 0.0  # (block by block, an image is read as it is: never smoothed for noise)

    @property
    def count(self) -> int:
        return len(self.table)


def block_margin(diameter: float | None, scale: float) -> int:
    """The context (image pixels) added on every side of a block: four nucleus diameters, so a
    nucleus whose centre lies in the block is whole in its view with room for the network to see
    around it, and at least twice the network's tile overlap (in image pixels). On a 2048 px mosaic
    of DSB2018 val cut into blocks of 512, 43 px of margin left 36 of 1041 nuclei unlike the whole
    image's segmentation (IoU < 0.5), 96 px and 160 px 26; the rest differ as two tilings of one
    image do, by where the watershed splits, none by a cut at a seam."""
    from .inference import TILE_OVERLAP

    nucleus = 4 * diameter if diameter is not None else 0.0
    return int(math.ceil(max(nucleus, 2 * TILE_OVERLAP / scale, 64)))


def block_side(scale: float, margin: int) -> int:
    """The side of a block's own part: :data:`BLOCK_SIDE`, less when the network enlarges it."""
    fitting = int(math.sqrt(BLOCK_NETWORK_PIXELS) / scale) - 2 * margin
    return max(256, min(BLOCK_SIDE, fitting))


def segment_large(
    data: Any,
    model: NucleiModel | str | Path,
    out: str | Path,
    settings: ChosenSettings = None,
    *,
    diameter: float | None = None,
    augment: bool = False,
    brown_nuclei: bool = False,
    rgb: bool | None = None,
    block: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> LargeResult:
    """Segment a 2-D image of any size block by block into a zarr array of labels at ``out``.

    Parameters
    ----------
    data : array-like
        ``(Y, X)`` gray or ``(Y, X, 3|4)`` colour, sliceable without reading it whole (zarr, dask,
        a TIFF's ``aszarr()`` store opened with zarr, a memory map).
    model : NucleiModel, str or path
        The network and its calibrated settings: a bundled model's name (``"hrnet"``, ``"UNet++"``), a
        weights file, or a model of :func:`~napari_nucleiseg.api.load_model`, as :func:`~napari_nucleiseg.segment`
        takes it.
    out : path
        Where the labels are written: an OME-Zarr multiscale image (a folder; it must not exist), the
        labels at full resolution in its array ``0`` and halved copies after it (:func:`write_pyramid`).
    settings : PostprocessSettings, mapping or None
        As :func:`~napari_nucleiseg.pipeline.segment_planes` takes them.
    diameter : float, optional
        The nuclei's median diameter in pixels; None: estimated on the busiest window.
    augment : bool
        Test-time augmentation: each block's maps are the mean over four flips
        (:func:`~napari_nucleiseg.inference.predict_probabilities`), at four times the network's time.
    brown_nuclei : bool
        Read the brown (DAB) of a brightfield picture as hematoxylin (a marker of nuclei:
        :func:`~napari_nucleiseg.pipeline.segment_planes`).
    rgb : bool, optional
        Whether the last axis holds colour; None: a last axis of 3 or 4 values does.
    block : int, optional
        The side of a block's own part (default: :func:`block_side`).
    progress : callable, optional
        ``progress(blocks_done, blocks_total)`` after each block.
    cancelled : callable, optional
        Polled between blocks and between the network's tiles; True stops with :class:`Cancelled`
        (what was written so far stays in ``out``).

    Raises
    ------
    ImageError, WeightsError, ValueError, FileExistsError, Cancelled
    """
    import zarr

    from .api import load_model

    model = load_model(model)  # (QA: a name, as segment() takes, ended in AttributeError)
    shape = tuple(np.shape(data))
    is_rgb = (len(shape) == 3 and shape[-1] in (3, 4)) if rgb is None else rgb
    if len(shape) != 2 + int(is_rgb) or min(shape[:2]) == 0:
        raise ImageError(f"An image of shape {shape} is not one 2-D gray or colour image; segment a large "
                         "stack plane by plane.")
    height, width = shape[:2]
    check_diameter(diameter, (height, width))
    check_switches(augment=augment, brown_nuclei=brown_nuclei)
    check_settings(settings, model)
    model = model.reading(brown_nuclei)
    out = Path(out)
    if out.exists():
        raise FileExistsError(0, "it exists already", str(out))

    normalization = whole_normalization(data, model)
    used, estimated = _diameter(data, model, diameter, normalization, cancelled)
    scale = model.scale_for(used)
    chosen = resolve_settings(settings, model, scale)
    options = chosen.options()
    margin = block_margin(used, scale)
    side = block or block_side(scale, margin)
    # OME-Zarr 0.4, as write_pyramid describes it, is on Zarr v2 with '/' between chunk indices (QA: zarr 3's
    # default, a v3 store with 0.4 metadata, is neither 0.4 nor 0.5, which other readers need)
    group = zarr.open_group(str(out), mode="w-", zarr_format=2)
    labels = group.create_array("0", shape=(height, width), chunks=(min(CHUNK_SIDE, height), min(CHUNK_SIDE, width)),
                                dtype=np.uint32, fill_value=0, chunk_key_encoding=NGFF_CHUNK_KEYS)
    starts = [(y, x) for y in range(0, height, side) for x in range(0, width, side)]
    tables, next_label, left_out = [], 1, 0
    for done, (y, x) in enumerate(starts):
        if cancelled is not None and cancelled():
            raise Cancelled("Segmentation cancelled.")
        table, next_label, too_large = _segment_block(data, labels, model, (y, x), side, margin, scale, normalization,
                                                      options, next_label, cancelled, augment)
        tables.append(table)
        left_out += too_large
        _release_freed_memory()
        if progress is not None:
            progress(done + 1, len(starts))
    import pandas as pd

    from .postprocess import table_columns

    # A block without nuclei has a table without the colour columns: each column in its place, for every block.
    table = pd.concat(tables, ignore_index=True).reindex(columns=list(table_columns(is_rgb)))
    table.insert(0, "index", table["label"].to_numpy())  # as nuclei_table's: napari shows a nucleus's row by it
    levels = write_pyramid(group, cancelled)
    return LargeResult(labels, table, chosen, used, estimated, scale, len(starts), left_out, levels, bool(augment),
                       bool(brown_nuclei))


#: How OME-Zarr 0.4 names the chunks of its (Zarr v2) arrays.
NGFF_CHUNK_KEYS = {"name": "v2", "separator": "/"}


def write_pyramid(group: Any, cancelled: Callable[[], bool] | None = None) -> list[Any]:
    """Add halved copies of the labels at ``group["0"]`` (every other pixel, so labels stay labels)
    until the smaller side is below :data:`PYRAMID_MIN_SIDE`, chunk by chunk, and describe the levels
    as an OME-Zarr multiscale image (0.4): napari shows them as one lazy multiscale Labels layer, and
    other OME-Zarr readers (QuPath, Fiji's MoBIE) open them. Returns the levels, full resolution first."""
    levels = [group["0"]]
    while min(levels[-1].shape) >= 2 * PYRAMID_MIN_SIDE:
        source = levels[-1]
        shape = tuple((side + 1) // 2 for side in source.shape)
        level = group.create_array(str(len(levels)), shape=shape, chunks=source.chunks, dtype=source.dtype,
                                   fill_value=0, chunk_key_encoding=NGFF_CHUNK_KEYS)
        step = 2 * CHUNK_SIDE
        for y in range(0, source.shape[0], step):
            for x in range(0, source.shape[1], step):
                if cancelled is not None and cancelled():
                    raise Cancelled("Segmentation cancelled.")
                part = np.asarray(source[y : y + step, x : x + step])[::2, ::2]
                level[y // 2 : y // 2 + part.shape[0], x // 2 : x // 2 + part.shape[1]] = part
        levels.append(level)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "nuclei",
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i, 2.0**i]}]}
                     for i in range(len(levels))],
    }]
    return levels


def _release_freed_memory() -> None:
    """Hand the memory freed by a block back to the system (glibc's ``malloc_trim``). A zarr or dask
    source is read by their worker threads, and glibc gives each thread its own heap: without this, the
    freed blocks' memory stayed in those heaps and the resident size grew by about 15 MB a block (a
    30,000 px TIFF passed 3.4 GB, where one block needs about 0.6 GB)."""
    import ctypes
    import ctypes.util

    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def whole_normalization(data: Any, model: NucleiModel) -> Normalization:
    """The normalisation of the whole image, from the regular grid of at most
    :data:`~napari_nucleiseg.preprocess.PERCENTILE_SAMPLE_PIXELS` pixels that a whole image's is
    taken from (read lazily: a strided read of a zarr array decodes one chunk at a time)."""
    from .preprocess import as_rgb

    height, width = np.shape(data)[:2]
    step = sample_step((height, width))
    sample = as_rgb(np.asarray(data[::step, ::step]))
    return model.normalization(sample, step)


def _diameter(data: Any, model: NucleiModel, diameter: float | None, normalization: Normalization,
              cancelled: Callable[[], bool] | None) -> tuple[float | None, bool]:
    """``(diameter, estimated)``: given, or estimated on the image's busiest window as one image's is."""
    from .pipeline import predict_at_diameter

    if diameter is not None or model.diameter is None:
        return (None if diameter is None else float(diameter)), False
    window = np.asarray(_busiest_window(data, ESTIMATE_SIDE))
    prediction = predict_at_diameter(window, model, cancelled=cancelled)
    return prediction.diameter, prediction.estimated


def _busiest_window(data: Any, side: int) -> Any:
    """The ``side`` x ``side`` window of ``data`` whose coarse pixels vary most (where the nuclei
    are, not the glass around a tissue section), chosen on a strided read of the whole image."""
    from .preprocess import as_rgb

    height, width = np.shape(data)[:2]
    if height <= side and width <= side:
        return data
    step = sample_step((height, width))
    coarse = as_rgb(np.asarray(data[::step, ::step])).astype(np.float32).mean(axis=-1)
    cell = max(1, side // step)
    best, best_score = (0, 0), -1.0
    for cy in range(0, max(coarse.shape[0] - cell, 0) + 1, max(1, cell // 2)):
        for cx in range(0, max(coarse.shape[1] - cell, 0) + 1, max(1, cell // 2)):
            score = float(coarse[cy : cy + cell, cx : cx + cell].std())
            if score > best_score:
                best, best_score = (cy, cx), score
    y, x = min(best[0] * step, max(height - side, 0)), min(best[1] * step, max(width - side, 0))
    return data[y : y + side, x : x + side]


def _segment_block(data, labels, model, origin, side, margin, scale, normalization, options, next_label, cancelled,
                   augment=False):
    """Segment one block with its margin and write the nuclei it owns; returns their table rows
    (in the whole image's pixels), the next free label and the number of objects it owns that are
    too large for its view."""
    from .inference import predict_probabilities
    from .postprocess import labels_from_probabilities, measure_nuclei

    height, width = labels.shape
    y, x = origin
    core = (y, min(y + side, height), x, min(x + side, width))
    y0, y1 = max(core[0] - margin, 0), min(core[1] + margin, height)
    x0, x1 = max(core[2] - margin, 0), min(core[3] + margin, width)
    image = np.asarray(data[y0:y1, x0:x1])
    probabilities = predict_probabilities(image, model, scale=scale, cancelled=cancelled, normalization=normalization,
                                          augment=augment)
    found = labels_from_probabilities(probabilities, **options)
    del probabilities
    table = measure_nuclei(found, None)
    if table.empty:
        return table, next_label, 0
    # Owned: the centre within the block's own part (widened by a quarter of the margin), not
    # touching a cut edge of the context (an edge of the image is no cut).
    band = margin / 4
    cy, cx = table["centroid_y"].to_numpy() + y0, table["centroid_x"].to_numpy() + x0
    owned = ((cy >= core[0] - band) & (cy < core[1] + band) & (cx >= core[2] - band) & (cx < core[3] + band))
    cut = np.zeros(len(table), dtype=bool)
    if y0 > 0:
        cut |= table["bbox_min_y"].to_numpy() == 0
    if y1 < height:
        cut |= table["bbox_max_y"].to_numpy() == found.shape[0]
    if x0 > 0:
        cut |= table["bbox_min_x"].to_numpy() == 0
    if x1 < width:
        cut |= table["bbox_max_x"].to_numpy() == found.shape[1]
    candidates = table["label"].to_numpy()[owned & ~cut]
    written = np.asarray(labels[y0:y1, x0:x1])
    free = written == 0
    # Each candidate's share of pixels already written by another block.
    taken = np.bincount(found[~free].ravel(), minlength=int(found.max()) + 1)
    sizes = np.bincount(found.ravel(), minlength=int(found.max()) + 1)
    keep = candidates[taken[candidates] < SAME_NUCLEUS_SHARE * sizes[candidates]]
    mapping = np.zeros(int(found.max()) + 1, dtype=np.uint32)
    mapping[keep] = np.arange(next_label, next_label + keep.size, dtype=np.uint32)
    new = mapping[found]
    new[~free] = 0  # pixels written before stay as they are
    if keep.size:
        rows = _bounding(new)
        written[rows] = np.where(new[rows] > 0, new[rows], written[rows])
        labels[y0 + rows[0].start : y0 + rows[0].stop, x0 + rows[1].start : x0 + rows[1].stop] = written[rows]
    measured = measure_nuclei(new, image)
    for column in ("centroid_y", "bbox_min_y", "bbox_max_y"):
        measured[column] += y0
    for column in ("centroid_x", "bbox_min_x", "bbox_max_x"):
        measured[column] += x0
    return measured, next_label + int(keep.size), int(np.count_nonzero(owned & cut))


def _bounding(labels: np.ndarray) -> tuple[slice, slice]:
    """The smallest window holding every non-zero pixel of ``labels`` (which has some)."""
    rows, columns = np.flatnonzero(labels.any(axis=1)), np.flatnonzero(labels.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)
