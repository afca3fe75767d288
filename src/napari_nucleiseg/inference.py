"""Network inference: any 2-D image in, float32 probability maps out (numpy in, numpy out).

Large images are cut into overlapping tiles that are predicted one (or a few) at
a time and blended with weights that fade towards the inner tile edges, so memory
is bounded by the tile size and the result matches whole-image inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from .preprocess import normalize_image
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

ProgressCallback = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised when the ``cancelled`` callback of :func:`predict_probabilities` returns True."""


def predict_probabilities(
    image: np.ndarray,
    model: NucleiModel,
    *,
    tile_size: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
    batch_size: int = TILE_BATCH,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
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

    Returns
    -------
    ndarray
        ``(2, H, W)`` float32 in [0, 1]: channel 0 nucleus, channel 1 nucleus boundary.
    """
    normalized = normalize_image(image, model.percentiles)
    return predict_normalized(
        normalized, model.network, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
        progress=progress, cancelled=cancelled,
    )


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
    if overlap * 2 >= tile_size:
        raise ValueError(f"overlap ({overlap}) must be less than half the tile size ({tile_size})")
    # Pad once, here, to a size every network divides without padding of its own: then an
    # edge tile sees the same padded pixels as whole-image inference does.
    original_height, original_width = normalized.shape[:2]
    normalized = _pad_to_multiple(normalized, PAD_MULTIPLE)
    height, width = normalized.shape[:2]
    tile_height = _balanced_tile(height, tile_size, overlap)
    tile_width = _balanced_tile(width, tile_size, overlap)
    tiles = list(_tile_starts(height, width, tile_height, tile_width, overlap))
    result = np.zeros((2, height, width), dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32) if len(tiles) > 1 else None
    network.eval()
    if device is None:
        device = next(network.parameters()).device
    done = 0
    with torch.inference_mode():
        for first in range(0, len(tiles), batch_size):
            if cancelled is not None and cancelled():
                raise Cancelled("Segmentation cancelled.")
            batch = tiles[first : first + batch_size]
            crops = [normalized[y : y + tile_height, x : x + tile_width] for y, x in batch]
            probabilities = _predict_batch(network, crops, device)
            for (y, x), crop, prob in zip(batch, crops, probabilities):
                h, w = crop.shape[:2]
                if weight_sum is None:
                    result[:, y : y + h, x : x + w] = prob
                    continue
                window = _blend_window(y, x, h, w, height, width, overlap)
                result[:, y : y + h, x : x + w] += prob * window
                weight_sum[y : y + h, x : x + w] += window
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))
    if weight_sum is not None:
        result /= weight_sum
    return np.ascontiguousarray(result[:, :original_height, :original_width])


def _predict_batch(network: torch.nn.Module, crops: list[np.ndarray], device) -> list[np.ndarray]:
    """Run crops of equal size in one pass; crops of other sizes go alone."""
    shapes = {crop.shape for crop in crops}
    if len(shapes) > 1:
        return [p for crop in crops for p in _predict_batch(network, [crop], device)]
    # Channels-last ((B, H, W, C) in memory) is how the crops already lie, and the layout the CPU's
    # convolutions (oneDNN) run fastest in: 1.24-1.36x less CPU time than (B, C, H, W).
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    batch = batch.to(device)
    return list(torch.sigmoid(network(batch)).float().cpu().numpy())


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pad ``(H, W, C)`` at the bottom and right to multiples of ``multiple`` (mirror, or edge if too small)."""
    height, width = image.shape[:2]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "edge"
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


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


def _tile_starts(
    height: int, width: int, tile_height: int, tile_width: int, overlap: int
) -> Iterator[tuple[int, int]]:
    for y in _axis_starts(height, tile_height, tile_height - overlap):
        for x in _axis_starts(width, tile_width, tile_width - overlap):
            yield y, x


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
