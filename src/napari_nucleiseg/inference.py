"""Network inference: any 2-D image in, float32 probability maps out (numpy in, numpy out).

Large images are cut into overlapping tiles that are predicted one (or a few) at
a time and blended with weights that fade towards the inner tile edges, so the
network's memory is bounded by the tile size and the result matches whole-image
inference. Each tile is normalised on its own (with the whole image's percentiles), so
besides the image itself a run holds little more than its ``(2, H, W)`` float32 result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .errors import Cancelled
from .preprocess import Normalization, as_rgb
from .weights import NucleiModel

#: Images up to this many pixels a side run in one piece; larger ones are tiled, with
#: tiles of at most this size spread evenly (see :func:`_balanced_tile`).
#: 512 keeps a tile's activations around 100 MB for the bundled models.
TILE_SIZE = 512
#: Overlap between neighbouring tiles: more than the receptive-field margin that
#: the networks' padding disturbs, so blended tiles agree with whole-image inference.
TILE_OVERLAP = 64
#: Images are padded to a multiple of this before tiling: 2**(pooling steps) of every bundled
#: network (8) and of deeper custom ones up to 5 steps. Tile sizes must be multiples of it.
PAD_MULTIPLE = 32
#: Tiles predicted together in one forward pass. 1: on the CPU, batches of tiles were slower,
#: not faster (4 tiles per pass: 1.24-1.48x the CPU time of 1 for the bundled models on one
#: thread, as the activations outgrow the caches; benchmarks/README.md) and need 4x the memory.
TILE_BATCH = 1
#: Rows of the result finished at a time (bounds the temporaries of the final blending step).
BAND_ROWS = 256
#: ``augment``: (flip rows, flip columns) of the passes averaged for each tile. The networks are
#: trained on flipped crops but are not exactly symmetric; the mean of the four views is steadier
#: (session 12's HRNet, benchmarks/README.md: DSB2018 val 0.547 -> 0.558, nuclei 4 px across 0.308 ->
#: 0.329, CoNSeP 0.142 -> 0.150) at 4 network passes instead of one.
FLIPS = ((False, False), (True, False), (False, True), (True, True))

ProgressCallback = Callable[[int, int], None]


def predict_probabilities(
    image: np.ndarray,
    model: NucleiModel,
    *,
    tile_size: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
    batch_size: int = TILE_BATCH,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    scale: float = 1.0,
    normalization: Normalization | None = None,
    augment: bool = False,
) -> np.ndarray:
    """Predict nucleus and boundary probabilities for a 2-D image.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA; any integer or float dtype.
    model : NucleiModel
        From :func:`napari_nucleiseg.weights.load_weights`.
    tile_size, overlap : int
        Tiling of images larger than ``tile_size`` on a side.
    batch_size : int
        Tiles per forward pass.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)`` after each batch.
    cancelled : callable, optional
        Polled between batches; when it returns True, :class:`Cancelled` is raised.
    scale : float
        The network sees the image resized by this factor (see :mod:`napari_nucleiseg.scale`);
        the probabilities are resized back, so they are always ``(2, H, W)``.
    normalization : Normalization, optional
        How the values are mapped for the network; default: from the whole of ``image``
        (a block of a larger image gets the larger image's, :mod:`napari_nucleiseg.large`).
    augment : bool
        Test-time augmentation: each tile is predicted as it is and flipped three ways
        (:data:`FLIPS`), and the four maps, flipped back, are averaged. A little more accurate,
        four times the network's time.

    Returns
    -------
    ndarray
        ``(2, H, W)`` float32 in [0, 1]: channel 0 nucleus, channel 1 nucleus boundary; 0 under the
        fully transparent pixels of an RGBA image (:func:`left_out_where_transparent`).
    """
    from .scale import rescale_image, resize_probabilities

    rgb = as_rgb(image)
    if normalization is None:
        normalization = model.normalization(rgb)
    # (the padding filled first: resized, its edge would blend into a band of values that are neither)
    source = rgb if scale == 1.0 else rescale_image(np.asarray(normalization.unpadded(rgb)), scale)
    probabilities = _predict_tiled(
        source, normalization, model.network, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
        progress=progress, cancelled=cancelled, device=None, augment=augment,
    )
    return left_out_where_transparent(resize_probabilities(probabilities, rgb.shape[:2]), image)


def filled_where_transparent(image: np.ndarray) -> np.ndarray:
    """An RGBA ``image`` whose fully transparent pixels take the median colour of the others (alpha kept, so that
    :func:`left_out_where_transparent` still leaves them out): the Auto diameter and the normalisation read only
    what the picture shows (review: a visible part alone was sized 16.1 px with 24 nuclei, and inside a picture
    whose transparent part held larger nuclei 21.6 px with 18). Any other image as it is."""
    if np.ndim(image) != 3 or np.shape(image)[-1] != 4:
        return image
    transparent = image[..., 3] == 0
    if not transparent.any() or transparent.all():
        return image
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 1e6)))  # (a sample of 1 Mpx at most)
    shown = image[::step, ::step][~transparent[::step, ::step]][:, :3]
    if shown.size == 0:
        shown = image[~transparent][:, :3]
    filled = image.copy()
    filled[transparent, :3] = np.median(shown, axis=0).astype(image.dtype)
    return filled


def smoothed_if_noisy(image: np.ndarray, model: Any = None, judged: dict | None = None, *, swept: list | None = None,
                      cancelled: Any = None) -> tuple[np.ndarray, float]:
    """``image`` smoothed by a Gaussian of :func:`~napari_nucleiseg.scale.noise_smoothing`'s sigma when it is a
    noisy gray image (as float32; an alpha channel kept as it is), else as it is; and that sigma (0: not).
    ``model``: the network's judgement where the image's contrast alone does not tell (``judged``: a stack's,
    kept for its other planes; ``swept``: where the sweep it made of the image as returned is kept)."""
    from scipy import ndimage as ndi

    from .scale import noise_smoothing

    sigma = noise_smoothing(image, model, judged, swept=swept, cancelled=cancelled)
    if not sigma:
        return image, 0.0
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        return ndi.gaussian_filter(pixels, sigma), sigma
    smoothed = pixels.copy()
    smoothed[..., :3] = ndi.gaussian_filter(pixels[..., :3], (sigma, sigma, 0))
    return smoothed, sigma


def left_out_where_transparent(probabilities: np.ndarray, image: Any) -> np.ndarray:
    """``probabilities`` (``(2, H, W)``) of ``image``, set to 0 under its fully transparent pixels if it is
    RGBA: nothing is found where the picture shows nothing, as napari shows it (QA: an H&E section exported
    with the area outside its region transparent had as many nuclei counted and exported there as in the
    region). Pixel by pixel, so that a tile, a block or a plane of a stack reads it as the whole image does
    (review: a rule for an alpha of 0 everywhere, judged per block, found nuclei in wholly transparent
    blocks)."""
    if np.ndim(image) != 3 or np.shape(image)[-1] != 4:
        return probabilities
    transparent = np.asarray(image[..., 3]) == 0
    if transparent.any():
        probabilities[:, transparent] = 0
    return probabilities


def predict_normalized(
    normalized: np.ndarray,
    network: torch.nn.Module,
    *,
    tile_size: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
    batch_size: int = TILE_BATCH,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """As :func:`predict_probabilities`, for an already normalised ``(H, W, 3)`` float32 image.

    ``device`` is where the input goes (default: the device of the network's parameters).
    """
    return _predict_tiled(
        normalized, None, network, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
        progress=progress, cancelled=cancelled, device=device,
    )


def _predict_tiled(
    source: np.ndarray,
    normalization: Normalization | None,
    network: torch.nn.Module,
    *,
    tile_size: int,
    overlap: int,
    batch_size: int,
    progress: ProgressCallback | None,
    cancelled: Callable[[], bool] | None,
    device: torch.device | str | None,
    augment: bool = False,
) -> np.ndarray:
    """Predict ``(H, W, 3)`` ``source`` tile by tile; each tile is normalised with ``normalization``
    (None: ``source`` is normalised already) just before the network sees it; with ``augment``, each
    tile's maps are the mean over :data:`FLIPS`."""
    if overlap * 2 >= tile_size:
        raise ValueError(f"overlap ({overlap}) must be less than half the tile size ({tile_size})")
    # Tiles lie on the image padded to a size every network divides without padding of its own
    # (then an edge tile sees the same padded pixels as whole-image inference does). The padding
    # is never made: a tile reaching into it reads the mirrored pixels instead.
    original_height, original_width = source.shape[:2]
    height, width = (-(-length // PAD_MULTIPLE) * PAD_MULTIPLE for length in (original_height, original_width))
    mirror = height - original_height < original_height and width - original_width < original_width
    tile_height = min(_balanced_tile(height, tile_size, overlap), height)
    tile_width = min(_balanced_tile(width, tile_size, overlap), width)
    row_starts = _axis_starts(height, tile_height, tile_height - overlap)
    column_starts = _axis_starts(width, tile_width, tile_width - overlap)
    tiles = [(y, x) for y in row_starts for x in column_starts]
    result = np.zeros((2, original_height, original_width), dtype=np.float32)
    network.eval()
    if device is None:
        device = next(network.parameters()).device
    done = 0
    with torch.inference_mode():
        for first in range(0, len(tiles), batch_size):
            if cancelled is not None and cancelled():
                raise Cancelled("Segmentation cancelled.")
            batch = tiles[first : first + batch_size]
            crops = []
            for y, x in batch:
                crop = _padded_crop(source, y, x, tile_height, tile_width, mirror)
                crops.append(crop if normalization is None else normalization(crop))
            probabilities = _predict_batch(network, crops, device, augment)
            for (y, x), prob in zip(batch, probabilities):
                h, w = min(tile_height, original_height - y), min(tile_width, original_width - x)
                if h <= 0 or w <= 0:
                    continue  # a tile entirely in the padding (only in images a few pixels wide)
                if len(tiles) == 1:
                    result[:, :h, :w] = prob[:, :h, :w]
                    continue
                window = _blend_window(y, x, tile_height, tile_width, height, width, overlap)
                result[:, y : y + h, x : x + w] += prob[:, :h, :w] * window[:h, :w]
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))
    if len(tiles) > 1:
        # The blend windows are outer products of a row and a column ramp, and the tiles a grid:
        # their sum is the outer product of the summed ramps, divided out a band of rows at a time.
        row_weights = _summed_ramps(row_starts, tile_height, height, overlap)[:original_height]
        column_weights = _summed_ramps(column_starts, tile_width, width, overlap)[:original_width]
        for top in range(0, original_height, BAND_ROWS):
            band = slice(top, top + BAND_ROWS)
            result[:, band] /= np.outer(row_weights[band], column_weights)
    return result


def _padded_crop(source: np.ndarray, y: int, x: int, h: int, w: int, mirror: bool) -> np.ndarray:
    """``source[y:y + h, x:x + w]`` of ``source`` padded at the bottom and right as far as needed,
    mirrored (as ``np.pad(mode="reflect")``) or, where the image is too small, with edge values."""
    rows = _source_indices(y, h, source.shape[0], mirror)
    columns = _source_indices(x, w, source.shape[1], mirror)
    if isinstance(rows, slice) and isinstance(columns, slice):
        return np.array(source[rows, columns])
    if isinstance(rows, slice):
        rows = np.arange(rows.start, rows.stop)
    if isinstance(columns, slice):
        columns = np.arange(columns.start, columns.stop)
    return source[np.ix_(rows, columns)]


def _source_indices(start: int, size: int, length: int, mirror: bool) -> slice | np.ndarray:
    if start + size <= length:
        return slice(start, start + size)
    indices = np.arange(start, start + size)
    beyond = indices >= length
    indices[beyond] = 2 * (length - 1) - indices[beyond] if mirror else length - 1
    return indices


def _summed_ramps(starts: list[int], size: int, length: int, overlap: int) -> np.ndarray:
    """Along one axis, the sum of the blend ramps of tiles of ``size`` at ``starts``."""
    total = np.zeros(length, dtype=np.float32)
    for start in starts:
        total[start : start + size] += _ramp(size, overlap, fade_start=start > 0, fade_end=start + size < length)
    return total


def _predict_batch(network: torch.nn.Module, crops: list[np.ndarray], device,
                   augment: bool = False) -> list[np.ndarray]:
    """Run crops of equal size in one pass (with ``augment``, one pass per flip of :data:`FLIPS`);
    crops of other sizes go alone."""
    shapes = {crop.shape for crop in crops}
    if len(shapes) > 1:
        return [p for crop in crops for p in _predict_batch(network, [crop], device, augment)]
    # Channels-last ((B, H, W, C) in memory) is how the crops already lie, and the layout the CPU's
    # convolutions (oneDNN) run fastest in: 1.24-1.36x less CPU time than (B, C, H, W).
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(device)
    if not augment:
        return list(_probabilities(network, batch).numpy())
    total = None
    for rows, columns in FLIPS:
        axes = [axis for axis, flip in ((2, rows), (3, columns)) if flip]
        view = batch.flip(axes) if axes else batch
        maps = _probabilities(network, view)
        maps = maps.flip(axes) if axes else maps
        total = maps if total is None else total + maps
    return list((total / len(FLIPS)).numpy())


def _probabilities(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The network's sigmoid maps of a ``(B, C, H, W)`` batch, float32 on the CPU."""
    return torch.sigmoid(network(batch.contiguous(memory_format=torch.channels_last))).float().cpu()


def _balanced_tile(length: int, tile_size: int, overlap: int) -> int:
    """The side of the tiles along an axis of ``length``: as few tiles as ``tile_size`` allows,
    each only as large as they need to be to cover ``length`` with ``overlap`` between them.

    Tiles of ``tile_size`` would waste work: 1024 pixels need three 512-pixel tiles
    (1536 pixels predicted) where three of 384 do (1152). Rounded up to
    :data:`PAD_MULTIPLE`, never above ``tile_size``.
    """
    if length <= tile_size:
        return tile_size
    count = -(-(length - overlap) // (tile_size - overlap))
    side = -(-(length + (count - 1) * overlap) // count)
    return min(tile_size, -(-side // PAD_MULTIPLE) * PAD_MULTIPLE)


def _axis_starts(length: int, tile_size: int, step: int) -> list[int]:
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size, step))
    starts.append(length - tile_size)  # the last tile ends exactly at the edge, full-sized
    return starts


def _blend_window(y: int, x: int, h: int, w: int, height: int, width: int, overlap: int) -> np.ndarray:
    """Weights that ramp up from the tile edges shared with neighbours; 1 elsewhere."""
    rows = _ramp(h, overlap, fade_start=y > 0, fade_end=y + h < height)
    cols = _ramp(w, overlap, fade_start=x > 0, fade_end=x + w < width)
    return np.outer(rows, cols).astype(np.float32)


def _ramp(length: int, overlap: int, *, fade_start: bool, fade_end: bool) -> np.ndarray:
    ramp = np.ones(length, dtype=np.float32)
    # Linear ramp that starts above zero so every pixel keeps some weight.
    edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    n = min(overlap, length)
    if fade_start:
        ramp[:n] = np.minimum(ramp[:n], edge[:n])
    if fade_end:
        ramp[length - n :] = np.minimum(ramp[length - n :], edge[:n][::-1])
    return ramp
