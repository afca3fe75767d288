"""What the dock widget needs besides Qt: images as stacks of planes, compact probability maps,
and tables, names and tooltips.

No Qt and no torch here (the inference module is imported when a plane is predicted), so each
piece can be tested on plain arrays. A *plane* is one 2-D image, gray ``(Y, X)`` or colour
``(Y, X, 3|4)``; a stack has any number of leading axes before it.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .preprocess import ImageError
from .weights import WeightsError

logger = logging.getLogger(__name__)

#: Label images get this dtype unless a stack holds more nuclei than it can number.
LABELS_DTYPE = np.uint16
#: Stack planes narrower than this cannot hold a nucleus: such a "stack" is almost always an
#: image whose last axis holds a few channels (napari shows a (Y, X, 2) array as Y planes of X x 2).
MIN_STACK_PLANE_SIDE = 8

#: The widget keeps the probability maps of its last run to re-threshold them, for every plane
#: of a stack: as float32 that is 8 bytes a pixel (800 MB for 100 planes of 1024 x 1024). It keeps
#: the nucleus probability as uint16 in steps of 1 / NUCLEUS_LEVELS and the boundary probability
#: as uint8 in steps of 1 / BOUNDARY_LEVELS instead: 3 bytes a pixel. Both are multiples of 100
#: (and of 1000 for the nucleus), so every threshold on the slider's 0.01 grid lies on a step:
#: see :class:`CompactProbabilities` for why such thresholds give exactly the mask of the float32
#: maps. A uint8 nucleus map (2 bytes a pixel) was measured and rejected: the watershed that
#: splits touching nuclei floods in the order of the nucleus probability, and 200 levels made so
#: many ties that the count changed on two of the three bundled samples.
NUCLEUS_LEVELS = 60_000
BOUNDARY_LEVELS = 200


#: Memory a segmentation holds, from the peak of a whole run measured at 4096 x 4096 (19.5 bytes a
#: pixel above the loaded model, benchmarks/README.md), with some margin: per pixel of the whole
#: image (its stored probabilities, 3 bytes, and labels, up to 4), per pixel of the plane being
#: worked on (its float32 probabilities and the post-processing's label maps), and the model with
#: its activations. The image itself is already in memory.
BYTES_PER_IMAGE_PIXEL = 7
BYTES_PER_PLANE_PIXEL = 16
BYTES_FIXED = 300 * 2**20


def memory_shortfall(shape: tuple[int, ...]) -> str | None:
    """A sentence for the user when segmenting an image of ``shape`` ``(*leading, Y, X)`` would need
    more memory than is free (a run that runs out is killed by the system, with everything unsaved);
    None when it fits, or when the free memory cannot be told."""
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception:  # no psutil, or a platform it cannot read: do not guess
        return None
    pixels = int(np.prod(shape, dtype=np.float64))
    needed = pixels * BYTES_PER_IMAGE_PIXEL + shape[-2] * shape[-1] * BYTES_PER_PLANE_PIXEL + BYTES_FIXED
    if needed <= available:
        return None
    size = " x ".join(str(side) for side in shape)
    return (f"Segmenting an image of {size} pixels needs about {needed / 2**30:.1f} GB of memory and "
            f"{available / 2**30:.1f} GB is free; close other programs, or segment the image in parts.")


def stack_shape(shape: tuple[int, ...], rgb: bool) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Split an image layer's data shape into (leading axes, plane height and width).

    ``rgb`` is the layer's own flag: a last axis of 3 or 4 is colour only when napari says so.

    Raises
    ------
    ImageError
        For shapes that hold no 2-D plane, or an empty one.
    """
    plane_axes = 3 if rgb else 2
    if len(shape) < plane_axes or (rgb and shape[-1] not in (3, 4)):
        kind = "an RGB image" if rgb else "a gray image"
        raise ImageError(f"An image of shape {tuple(shape)} cannot be segmented as {kind}; expected 2-D planes.")
    leading = tuple(shape[: len(shape) - plane_axes])
    plane = tuple(shape[len(leading) : len(leading) + 2])
    if 0 in shape:
        raise ImageError(f"The image is empty (shape {tuple(shape)}).")
    if leading and min(plane) < MIN_STACK_PLANE_SIDE:
        raise ImageError(
            f"The planes of this {tuple(shape)} stack are {plane[0]} x {plane[1]} pixels, too small to hold nuclei; "
            "if its last axis holds channels, split them (right-click the layer > Split Stack)."
        )
    return leading, plane


class CompactProbabilities:
    """Nucleus and boundary probabilities of a stack of planes in 3 bytes a pixel, not 8.

    Reads like a ``(*leading, 2, Y, X)`` float32 array one whole plane at a time
    (``maps[index]`` is a ``(2, Y, X)`` float32 array, ready for
    :func:`~napari_nucleiseg.postprocess.labels_from_probabilities`) and is filled one plane at a
    time (``maps[index] = plane``), so the float32 maps of a whole stack never exist.

    A nucleus probability ``p`` is stored as ``q = ceil(p * NUCLEUS_LEVELS)`` and read back as
    the middle of its step, ``(q - 1/2) / NUCLEUS_LEVELS`` (0 stays 0). For a threshold
    ``t = k / NUCLEUS_LEVELS``: ``p > t`` if and only if ``p * NUCLEUS_LEVELS > k``, if and only
    if ``q > k``, if and only if the value read back is above ``t``, by half a step, far more than
    any rounding (``p * NUCLEUS_LEVELS`` is exact in float64 for a float32 ``p``). So at any
    threshold with up to three decimals, the nucleus mask is that of the float32 map but at
    pixels exactly at the threshold: numpy compares a float32 map with a Python float in float32,
    and a pixel equal to the threshold rounded to float32 is not above it there, though it may be
    above the threshold itself, as the compact map says (a ``>=`` would also differ only there).
    Boundary probabilities, compared with ``<``, are rounded down and read back as ``(q + 1/2) /
    BOUNDARY_LEVELS`` (capped at 1) for the same reason: their masks are kept for boundary
    thresholds on a 0.005 grid. What can change is the watershed split of touching nuclei, which
    floods in the order of the nucleus probability: neighbours less than 1/60,000 apart become
    ties, which can move a split line by a pixel or two. NaN is stored as 0, as post-processing
    reads it.
    """

    def __init__(self, leading: tuple[int, ...], plane: tuple[int, int]):
        self.nucleus = np.zeros((*leading, *plane), dtype=np.uint16)
        self.boundary = np.zeros((*leading, *plane), dtype=np.uint8)

    @classmethod
    def from_float(cls, probabilities: np.ndarray) -> CompactProbabilities:
        """The compact form of ``(*leading, 2, Y, X)`` float probabilities."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim < 3 or probabilities.shape[-3] != 2:
            raise ValueError(f"probabilities must have shape (*leading, 2, Y, X), not {probabilities.shape}")
        leading = probabilities.shape[:-3]
        maps = cls(leading, probabilities.shape[-2:])
        for index in np.ndindex(*leading):
            maps[index] = probabilities[index]
        return maps

    @property
    def shape(self) -> tuple[int, ...]:
        """``(*leading, 2, Y, X)``, the shape of the float maps this stands for."""
        return (*self.nucleus.shape[:-2], 2, *self.nucleus.shape[-2:])

    @property
    def pixels(self) -> int:
        """Pixels in all planes together (the work of post-processing them all)."""
        return self.nucleus.size

    @property
    def nbytes(self) -> int:
        return self.nucleus.nbytes + self.boundary.nbytes

    def __setitem__(self, index: tuple[int, ...], plane: np.ndarray) -> None:
        """Store the ``(2, Y, X)`` float probabilities of the plane at ``index``."""
        nucleus, boundary = self.nucleus[index], self.boundary[index]  # views of the plane
        for top in range(0, nucleus.shape[0], _STORE_ROWS):  # a band at a time: the float64 steps stay small
            rows = slice(top, top + _STORE_ROWS)
            nucleus[rows] = np.ceil(_scaled(plane[0, rows], NUCLEUS_LEVELS))
            boundary[rows] = np.floor(_scaled(plane[1, rows], BOUNDARY_LEVELS))

    def __getitem__(self, index: tuple[int, ...]) -> np.ndarray:
        """The ``(2, Y, X)`` float32 probabilities of the plane at ``index`` (one index per leading axis)."""
        nucleus, boundary = self.nucleus[index], self.boundary[index]
        out = np.empty((2, *nucleus.shape), dtype=np.float32)  # filled in place: no second copy of the maps
        np.take(_NUCLEUS_VALUES, nucleus, out=out[0], mode="clip")  # "raise" would buffer a copy
        np.take(_BOUNDARY_VALUES, boundary, out=out[1], mode="clip")
        return out

    def nucleus_image(self) -> Any:
        """The ``(*leading, Y, X)`` float32 nucleus probability, to show as an image layer.

        A plane is an array; a stack is a dask array read plane by plane as napari shows it, so
        showing it costs no memory.
        """
        if self.nucleus.ndim == 2:
            return _NUCLEUS_VALUES[self.nucleus]
        import dask.array as da

        planes = da.from_array(self.nucleus, chunks=(1,) * (self.nucleus.ndim - 2) + self.nucleus.shape[-2:])
        return planes.map_blocks(_NUCLEUS_VALUES.__getitem__, dtype=np.float32)


#: Rows of a plane stored at a time.
_STORE_ROWS = 256


def _scaled(probability: np.ndarray, levels: int) -> np.ndarray:
    """``probability * levels`` in float64 (exact for float32 input), NaN as 0, within [0, levels]."""
    scaled = np.nan_to_num(np.asarray(probability, dtype=np.float64), nan=0.0) * levels
    return np.clip(scaled, 0, levels, out=scaled)


#: The probability each stored level is read back as (see :class:`CompactProbabilities`).
_NUCLEUS_VALUES = np.concatenate([[0.0], (np.arange(1, NUCLEUS_LEVELS + 1) - 0.5) / NUCLEUS_LEVELS]).astype(np.float32)
_BOUNDARY_VALUES = (np.minimum(np.arange(BOUNDARY_LEVELS + 1) + 0.5, BOUNDARY_LEVELS) / BOUNDARY_LEVELS).astype(
    np.float32
)


@dataclass
class Prediction:
    """What a run of :func:`predict_stack` produced."""

    probabilities: CompactProbabilities
    model: Any  # the NucleiModel, to be reused while its file is unchanged
    model_key: tuple[str, int]
    labels: np.ndarray | None = None  # (*leading, Y, X), when post-processing options were given
    min_size: int | None = None  # the minimum size those labels were made with
    #: The nucleus diameter (pixels) the network ran for, given or estimated; None: the model
    #: records none, or no estimate could be made (the image was not resized).
    diameter: float | None = None
    diameter_estimated: bool = False
    scale: float = 1.0  # the factor the planes were resized by for the network (1: not resized)


@dataclass
class Failure:
    """Why a run ended early, as one sentence for the user."""

    message: str
    cancelled: bool = False


def file_key(path: Path) -> tuple[str, int]:
    """Identifies a weights file and its version: path and modification time."""
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), -1


def predict_stack(
    data: Any,
    shape: tuple[int, ...],
    weights: Path,
    *,
    model: Any = None,
    diameter: float | None = None,
    postprocess: dict[str, Any] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Generator[int, None, Prediction | Failure]:
    """Load the model (unless given) and predict every plane of ``data``; yield planes done.

    ``shape`` is ``(*leading, Y, X)``. ``diameter`` is the nuclei's diameter in pixels, or None
    to estimate it (:func:`stack_diameter`); the planes are resized for the network by the
    model's :meth:`~napari_nucleiseg.weights.NucleiModel.scale_for` it, and the probabilities
    come back at full resolution. With ``postprocess`` (options of :func:`labels_from_stack` but
    the boundary threshold, which is the model's; a ``min_size`` of None is the model's at the
    scale), the labels are made here too, so a large image's first result costs the calling
    thread nothing. Runs in a worker thread. Everything that can go wrong is returned as a
    :class:`Failure` (a worker that raises or returns an exception would end in a traceback
    dialog); unexpected errors are logged with their traceback.
    """
    from .inference import Cancelled
    from .scale import check_diameter
    from .weights import load_weights

    leading = shape[:-2]
    try:
        check_diameter(diameter, shape[-2:])
    except ValueError as error:
        return Failure(str(error))
    try:
        key = file_key(weights)
        model = model if model is not None else load_weights(weights)
        probabilities = CompactProbabilities(leading, shape[-2:])
        if not leading:  # one image: the API's pipeline, with its check of an estimated diameter
            from .api import predict_at_diameter

            prediction = predict_at_diameter(np.asarray(data), model, diameter, progress=on_tile, cancelled=cancelled)
            used_diameter, estimated, scale = prediction.diameter, prediction.estimated, prediction.scale
            probabilities[()] = prediction.probabilities
            del prediction
            yield 1
        else:
            used_diameter, estimated = stack_diameter(data, leading, model, diameter, cancelled=cancelled)
            scale = model.scale_for(used_diameter, shape[-2:])
            planes = predict_planes(data, leading, model, scale=scale, on_tile=on_tile, cancelled=cancelled)
            for done, (index, plane_probabilities) in enumerate(planes, start=1):
                probabilities[index] = plane_probabilities
                del plane_probabilities  # stored compactly: the float maps go before the next plane (or labels) start
                yield done
        labels = min_size = None
        if postprocess is not None:
            postprocess = dict(postprocess)
            if postprocess.get("min_size") is None:
                postprocess["min_size"] = model.min_size_at(scale)
            min_size = postprocess["min_size"]
            steps = label_planes(probabilities, boundary_threshold=model.boundary_threshold,
                                 neck_ratio=model.neck_ratio, seed_min_size=model.seed_min_size_at(scale),
                                 **postprocess)
            labels = run_to_end(steps, cancelled)
    except Cancelled:
        return Failure("Segmentation cancelled; no layer was changed.", cancelled=True)
    except (WeightsError, ImageError) as error:
        return Failure(str(error))
    except MemoryError:
        return Failure(f"Not enough memory to segment an image of shape {tuple(shape)}.")
    except Exception as error:
        logger.exception("Segmentation failed")
        return Failure(f"Segmentation failed: {error}")
    return Prediction(probabilities, model, key, labels, min_size, used_diameter, estimated, scale)


def stack_diameter(
    data: Any,
    leading: tuple[int, ...],
    model: Any,
    diameter: float | None = None,
    *,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[float | None, bool]:
    """``(diameter, estimated)`` for a whole stack, as :func:`~napari_nucleiseg.api.resolve_diameter`
    gives for one plane.

    One diameter for every plane, estimated on the middle one (as one image is, the check against
    its nuclei included): the planes of a stack come from
    one microscope at one magnification, so one scale serves them all and the min size on the
    slider keeps one meaning (the ends of a z-stack, often out of focus, are poor planes to
    measure on).
    """
    from .api import predict_at_diameter, resolve_diameter

    middle = tuple(int(i) for i in np.unravel_index(int(np.prod(leading)) // 2, leading))
    if diameter is not None or model.diameter is None:
        return resolve_diameter(data[middle], model, diameter, cancelled=cancelled)
    # Estimated as for one image, with the check against the whole plane's nuclei, so a plane gets
    # the same diameter alone or in its stack (one more pass of the middle plane).
    prediction = predict_at_diameter(np.asarray(data[middle]), model, cancelled=cancelled)
    return prediction.diameter, prediction.estimated


def run_to_end(steps: Generator[int, None, Any], cancelled: Callable[[], bool] | None = None) -> Any:
    """Run a generator such as :func:`label_planes` to the end and return what it returns.

    Raises
    ------
    napari_nucleiseg.inference.Cancelled
        When ``cancelled()`` returns True between two planes.
    """
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
        if cancelled is not None and cancelled():
            from .inference import Cancelled

            raise Cancelled("Segmentation cancelled.")


def predict_planes(
    data: Any,
    leading: tuple[int, ...],
    model: Any,
    *,
    scale: float = 1.0,
    on_tile: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Predict every plane of ``data`` in turn; yield ``(plane index, (2, Y, X) probabilities)``.

    ``data`` may be lazy (dask, zarr): one plane is read at a time. The network sees each plane
    resized by ``scale``; the probabilities are at the plane's own resolution. ``cancelled`` is
    polled between planes and between tiles of a plane.

    Raises
    ------
    napari_nucleiseg.inference.Cancelled
        When ``cancelled()`` returns True.
    """
    from . import inference

    for index in np.ndindex(*leading):
        if cancelled is not None and cancelled():
            raise inference.Cancelled("Segmentation cancelled.")
        plane = np.asarray(data[index])
        yield index, inference.predict_probabilities(plane, model, progress=on_tile, cancelled=cancelled, scale=scale)


def labels_from_stack(probabilities: np.ndarray | CompactProbabilities, **postprocess: Any) -> np.ndarray:
    """Instance labels for ``(*leading, 2, Y, X)`` probabilities, plane by plane.

    Labels are numbered on through the stack (plane 0 holds 1..n0, plane 1 n0+1..), so every
    nucleus of the stack has its own label and row in the table.
    ``postprocess`` goes to :func:`~napari_nucleiseg.postprocess.labels_from_probabilities`.

    Returns
    -------
    ndarray
        ``(*leading, Y, X)``, uint16, or uint32 above 65,535 nuclei.
    """
    return run_to_end(label_planes(probabilities, **postprocess))


def label_planes(
    probabilities: np.ndarray | CompactProbabilities, **postprocess: Any
) -> Generator[int, None, np.ndarray]:
    """:func:`labels_from_stack` one plane at a time: yields the planes done before each further
    plane, and returns the labels.

    A worker thread can stop at a yield when its result is no longer wanted. A single plane
    never yields.
    """
    from .postprocess import labels_from_probabilities

    leading = probabilities.shape[:-3]
    planes = []
    for done, index in enumerate(np.ndindex(*leading)):
        if done:
            yield done
        planes.append(labels_from_probabilities(probabilities[index], **postprocess))
    if len(planes) == 1:
        return planes[0].reshape(*leading, *planes[0].shape)
    total = sum(int(plane.max()) for plane in planes)
    dtype = LABELS_DTYPE if total <= np.iinfo(LABELS_DTYPE).max else np.uint32
    labels = np.zeros(probabilities.shape[:-3] + probabilities.shape[-2:], dtype=dtype)
    offset = 0
    for index, plane in zip(np.ndindex(*leading), planes):
        labels[index] = np.where(plane > 0, plane.astype(dtype) + offset, 0)
        offset += int(plane.max())
    return labels


def postprocess_stack(
    probabilities: np.ndarray | CompactProbabilities, **postprocess: Any
) -> Generator[int, None, np.ndarray | Failure]:
    """:func:`label_planes` for a worker thread: what goes wrong is returned as a :class:`Failure`."""
    try:
        return (yield from label_planes(probabilities, **postprocess))
    except MemoryError:
        shape = (*probabilities.shape[:-3], *probabilities.shape[-2:])
        return Failure(f"Not enough memory to find the nuclei of an image of shape {shape}.")
    except Exception as error:
        logger.exception("Post-processing failed")
        return Failure(f"Finding the nuclei failed: {error}")


@dataclass(frozen=True)
class PixelSize:
    """The physical size of a pixel along y and x, in ``unit`` (an ASCII symbol such as ``um``), and
    where pixel (0, 0) lies: the image's scale, offset and units in napari."""

    y: float
    x: float
    unit: str
    origin: tuple[float, float] = (0.0, 0.0)


def physical_columns(table, pixel: PixelSize):
    """``table`` with the measurements in ``pixel.unit`` added: area and centroid, and, for square
    pixels, perimeter and equivalent diameter."""
    unit = pixel.unit
    table[f"area_{unit}2"] = table["area"] * (pixel.y * pixel.x)
    table[f"centroid_y_{unit}"] = pixel.origin[0] + table["centroid_y"] * pixel.y
    table[f"centroid_x_{unit}"] = pixel.origin[1] + table["centroid_x"] * pixel.x
    if np.isclose(pixel.y, pixel.x):
        for column in ("perimeter", "equivalent_diameter"):
            table[f"{column}_{unit}"] = table[column] * pixel.x
    return table


def nuclei_table(labels: np.ndarray, image: Any, rgb: bool, pixel: PixelSize | None = None):
    """Per-nucleus measurements of a ``(*leading, Y, X)`` label stack as a DataFrame.

    One row per nucleus, with the plane's position on the leading axes (``axis_0``, ...) for
    stacks, and an ``index`` column equal to ``label`` so napari shows a nucleus's row
    under the mouse. Lengths are in pixels; with ``pixel``, columns in its unit follow.
    """
    import pandas as pd

    from .postprocess import measure_nuclei

    leading = labels.shape[: labels.ndim - 2]
    tables = []
    for index in np.ndindex(*leading):
        plane_image = np.asarray(image[index]) if image is not None else None
        if plane_image is not None and rgb:
            plane_image = plane_image[..., :3]
        table = measure_nuclei(np.asarray(labels[index]), plane_image)
        for axis, position in enumerate(index):
            table.insert(axis, f"axis_{axis}", position)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    table.insert(0, "index", table["label"].to_numpy())
    return physical_columns(table, pixel) if pixel is not None else table


def count_labels(labels: np.ndarray) -> int:
    """The number of nuclei in a label image or stack (distinct non-zero labels)."""
    from .postprocess import count_nuclei

    return int(count_nuclei(np.asarray(labels)))


def checksum(labels: np.ndarray) -> int:
    """A cheap fingerprint of a label array: it changes when a hand edit changes any pixel."""
    data = np.ascontiguousarray(labels)
    return zlib.adler32(memoryview(data).cast("B")) ^ hash((data.shape, data.dtype.str))


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base [2]``, ``base [3]``, ...: the first not in ``taken``."""
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base} [{number}]"
    return name


def describe_weights(metadata: dict[str, Any]) -> str:
    """A tooltip for a weights file: architecture, what it was trained on and how well it did."""
    lines = [f"Architecture: {metadata.get('architecture', '?')}"]
    training = metadata.get("training") or {}
    if training.get("data"):
        lines.append(f"Trained on: {training['data']}")
    if training.get("epochs"):
        lines.append(f"Training: {training['epochs']} epochs, {training.get('minutes', '?')} min")
    for source, scores in _score_groups(metadata.get("metrics") or {}):
        shown = ", ".join(f"{key} {value:.3f}" for key, value in scores.items())
        lines.append(f"Validation ({source.replace('_', ' ')}): {shown}")
    if len(lines) == 1:
        lines.append("No training information in this file.")
    lines.append(f"Threshold {float(metadata.get('threshold', 0.5)):.2f}, min size {metadata.get('min_size', '?')} px")
    if metadata.get("diameter"):
        lines.append(f"Trained at a nucleus diameter of {float(metadata['diameter']):g} px (images are resized to it)")
    if metadata.get("licence"):
        lines.append(f"Licence: {metadata['licence']}")
    return "\n".join(lines)


def _score_groups(metrics: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Numeric scores of ``metrics``, grouped by the dict they sit in (one level of nesting)."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    groups = [("scores", flat)] if flat else []
    for key, value in metrics.items():
        if isinstance(value, dict):
            scores = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if scores:
                groups.append((key, scores))
    return groups
