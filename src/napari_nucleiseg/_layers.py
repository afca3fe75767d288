"""What the dock widget needs besides Qt: images as stacks of planes, and tables, names and tooltips.

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


@dataclass
class Prediction:
    """What a run of :func:`predict_stack` produced."""

    probabilities: np.ndarray  # (*leading, 2, Y, X) float32
    model: Any  # the NucleiModel, to be reused while its file is unchanged
    model_key: tuple[str, int]


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
    on_tile: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Generator[int, None, Prediction | Failure]:
    """Load the model (unless given) and predict every plane of ``data``; yield planes done.

    ``shape`` is ``(*leading, Y, X)``. Runs in a worker thread. Everything that can go wrong
    is returned as a :class:`Failure` (a worker that raises or returns an exception would end
    in a traceback dialog); unexpected errors are logged with their traceback.
    """
    from .inference import Cancelled
    from .weights import load_weights

    leading = shape[:-2]
    try:
        key = file_key(weights)
        model = model if model is not None else load_weights(weights)
        probabilities = np.zeros((*leading, 2, *shape[-2:]), dtype=np.float32)
        planes = predict_planes(data, leading, model, on_tile=on_tile, cancelled=cancelled)
        for done, (index, plane_probabilities) in enumerate(planes, start=1):
            probabilities[index] = plane_probabilities
            yield done
    except Cancelled:
        return Failure("Segmentation cancelled; no layer was changed.", cancelled=True)
    except (WeightsError, ImageError) as error:
        return Failure(str(error))
    except MemoryError:
        return Failure(f"Not enough memory to segment an image of shape {tuple(shape)}.")
    except Exception as error:
        logger.exception("Segmentation failed")
        return Failure(f"Segmentation failed: {error}")
    return Prediction(probabilities, model, key)


def predict_planes(
    data: Any,
    leading: tuple[int, ...],
    model: Any,
    *,
    on_tile: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Predict every plane of ``data`` in turn; yield ``(plane index, (2, Y, X) probabilities)``.

    ``data`` may be lazy (dask, zarr): one plane is read at a time. ``cancelled`` is polled
    between planes and between tiles of a plane.

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
        yield index, inference.predict_probabilities(plane, model, progress=on_tile, cancelled=cancelled)


def labels_from_stack(probabilities: np.ndarray, **postprocess: Any) -> np.ndarray:
    """Instance labels for ``(*leading, 2, Y, X)`` probabilities, plane by plane.

    Labels are numbered on through the stack (plane 0 holds 1..n0, plane 1 n0+1..), so every
    nucleus of the stack has its own label and row in the table.
    ``postprocess`` goes to :func:`~napari_nucleiseg.postprocess.labels_from_probabilities`.

    Returns
    -------
    ndarray
        ``(*leading, Y, X)``, uint16, or uint32 above 65,535 nuclei.
    """
    from .postprocess import labels_from_probabilities

    leading = probabilities.shape[:-3]
    planes = [labels_from_probabilities(probabilities[index], **postprocess) for index in np.ndindex(*leading)]
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


def nuclei_table(labels: np.ndarray, image: Any, rgb: bool):
    """Per-nucleus measurements of a ``(*leading, Y, X)`` label stack as a DataFrame.

    One row per nucleus, with the plane's position on the leading axes (``axis_0``, ...) for
    stacks, and an ``index`` column equal to ``label`` so napari shows a nucleus's row
    under the mouse.
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
    return table


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
