"""A segmentation run of the dock widget: the model, the worker thread, its progress and Cancel.

The run is :func:`~napari_nucleiseg.pipeline.segment_planes` in a napari thread worker (or in the
calling thread, for tests and scripts). Everything that can go wrong comes back as a
:class:`Failure`, one sentence for the user: a worker that raises would end in a traceback dialog.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QProgressBar

from .errors import Cancelled, ImageError, WeightsError
from .pipeline import ChosenSettings, PlanesResult, Predict, segment_planes
from .scale import check_diameter

logger = logging.getLogger(__name__)

#: Progress bar resolution within a run (planes x tiles are mapped onto it).
PROGRESS_STEPS = 1000


@dataclass
class Failure:
    """Why a run ended early, as one sentence for the user."""

    message: str
    cancelled: bool = False
    weights: Path | None = None  # the weights file that was refused, when it was the cause


@dataclass
class Finished:
    """What a run that finished produced: the planes, and the model that made them."""

    planes: PlanesResult
    model: Any  # the NucleiModel, to be reused while its file is unchanged
    model_key: tuple[str, int]


class Refused(Exception):
    """A run that cannot start; the message is one sentence for the user. ``weights``: the weights file
    refused, when it was the cause."""

    def __init__(self, message: str, weights: Path | None = None):
        super().__init__(message)
        self.weights = weights


def check_runnable(image: Any, layers: Any, weights: Callable[[], Path],
                   channel: tuple[int, int] | None = None) -> tuple[int, Path, dict[str, Any]]:
    """The number of planes of the Image layer ``image`` (of its ``channel``, ``(axis, index)``, if
    one is chosen), the weights file (``weights()``) and its metadata, once it is sure that the run
    can start: an image (among ``layers``), one that is not multiscale and holds 2-D planes, a
    readable weights file, and the memory the run needs.

    Raises
    ------
    Refused
        Saying what is missing.
    """
    from .memory import memory_shortfall
    from .pipeline import stack_shape
    from .weights import read_metadata

    if image is None:
        others = [f"'{layer.name}' is a {type(layer).__name__} layer" for layer in layers]
        detail = f" ({', '.join(others[:2])})" if others else ""
        raise Refused(f"There is no image layer to segment{detail}; open an image first.")
    path = None
    try:
        if image.multiscale:
            raise ImageError(f"'{image.name}' is a multiscale image, which cannot be segmented; "
                             "open its full-resolution level as an image.")
        shape = list(image.data.shape)
        if channel is not None:
            del shape[channel[0]]
        leading, plane = stack_shape(tuple(shape), image.rgb)
        path = weights()
        metadata = read_metadata(path)
    except (ImageError, WeightsError) as error:
        raise Refused(str(error), path if isinstance(error, WeightsError) else None) from None
    shortfall = memory_shortfall((*leading, *plane))
    if shortfall is not None:
        raise Refused(shortfall)
    return int(np.prod(leading)), path, metadata


def file_key(path: Path) -> tuple[str, int]:
    """Identifies a weights file and its version: path and modification time."""
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), -1


def run_in_worker(data: Any, rgb: bool, weights: Path, *, model: Any = None, settings: ChosenSettings = None,
                  diameter: float | None = None, on_progress: Callable[[int, int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None,
                  predict: Predict | None = None) -> Generator[int, None, Finished | Failure]:
    """Load the model (unless given) and run the pipeline on ``data``; yield the planes done.

    Unexpected errors are logged with their traceback and returned as a :class:`Failure`.
    """
    from .weights import load_weights

    try:
        check_diameter(diameter, np.shape(data)[-3:-1] if rgb else np.shape(data)[-2:])
    except ValueError as error:
        return Failure(str(error))
    try:
        key = file_key(weights)
        model = model if model is not None else load_weights(weights)
        planes = yield from segment_planes(data, model, settings, rgb=rgb, diameter=diameter, compact=True,
                                           on_progress=on_progress, cancelled=cancelled, predict=predict)
    except Cancelled:
        return Failure("Segmentation cancelled; no layer was changed.", cancelled=True)
    except (WeightsError, ImageError) as error:
        return Failure(str(error), weights=weights if isinstance(error, WeightsError) else None)
    except MemoryError:
        return Failure(f"Not enough memory to segment an image of shape {tuple(np.shape(data))}.")
    except Exception as error:
        logger.exception("Segmentation failed")
        return Failure(f"Segmentation failed: {error}")
    return Finished(planes, model, key)


class _TileProgress(QObject):
    """Tiles done and total in the plane being predicted, emitted from the worker thread."""

    done = Signal(int, int)


class SegmentationRun(QObject):
    """Runs the network for the widget, one run at a time, and shows its progress on ``progress_bar``.

    Keeps the model of the last run while its weights file is unchanged. ``on_returned(outcome)``
    receives the :class:`Finished` or :class:`Failure` of a run, and ``on_finished(image)`` follows.
    """

    def __init__(self, progress_bar: QProgressBar, on_returned: Callable[[Finished | Failure], None],
                 on_finished: Callable[[Any], None], parent: QObject | None = None):
        super().__init__(parent)
        self.progress_bar = progress_bar
        self._on_returned = on_returned
        self._on_finished = on_finished
        #: Run in the calling thread instead of a worker (for tests and scripts).
        self.synchronous = False
        #: The network's probabilities for one plane (None: the real network); tests give a fake.
        self.predict: Predict | None = None
        self.cancel_event = threading.Event()
        self.model: Any = None  # the last loaded NucleiModel ...
        self.model_key: tuple[str, int] | None = None  # ... and its file's key
        self.image: Any = None  # the image layer being segmented
        self._worker: Any = None
        self._plane: tuple[int, int] = (0, 1)  # plane being predicted, number of planes
        self._tiles = _TileProgress()  # no parent: the worker may still report while the widget goes
        self._tiles.done.connect(self._on_tile_progress)

    @property
    def running(self) -> bool:
        return self.image is not None

    def start(self, image: Any, planes: int, weights: Path, *, settings: ChosenSettings,
              diameter: float | None, stage: str, channel: tuple[int, int] | None = None) -> None:
        """Segment ``image`` (a napari Image layer of ``planes`` planes; its ``channel``, ``(axis, index)``,
        if one is chosen) with the weights file at ``weights``."""
        from .channels import take_channel

        self.cancel_event.clear()
        self._plane = (0, planes)
        self.image = image
        key = file_key(weights)
        self.show_progress(True, stage)
        data = image.data if channel is None else take_channel(image.data, *channel)
        run = partial(run_in_worker, data, image.rgb, weights,
                      model=self.model if self.model_key == key else None, settings=settings, diameter=diameter,
                      on_progress=self._tiles.done.emit, cancelled=self.cancel_event.is_set, predict=self.predict)
        if self.synchronous:
            generator = run()
            try:
                while True:
                    self._on_plane_done(next(generator))
            except StopIteration as stop:
                self._returned(stop.value)
            self._finished()
            return
        self._worker = thread_worker(run, start_thread=False, ignore_errors=True)()
        self._worker.yielded.connect(self._on_plane_done)
        self._worker.returned.connect(self._returned)
        self._worker.finished.connect(self._finished)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the run at the next plane or tile; the layers stay as they were."""
        self.cancel_event.set()

    def show_progress(self, running: bool, stage: str = "") -> None:
        self.progress_bar.setVisible(running)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat(stage)

    def _returned(self, outcome: Finished | Failure) -> None:
        self.show_progress(False)
        if isinstance(outcome, Finished):
            self.model, self.model_key = outcome.model, outcome.model_key
        self._on_returned(outcome)

    def _finished(self) -> None:
        image = self.image
        self._worker = self.image = None
        self.show_progress(False)
        self._on_finished(image)  # which may start the next run

    def _on_tile_progress(self, done: int, total: int) -> None:
        plane, planes = self._plane
        self.progress_bar.setValue(int(PROGRESS_STEPS * (plane + done / max(total, 1)) / planes))
        where = f"plane {plane + 1}/{planes}, " if planes > 1 else ""
        self.progress_bar.setFormat(f"{where}tile {done}/{total}")

    def _on_plane_done(self, planes_done: int) -> None:
        self._plane = (planes_done, self._plane[1])
        self.progress_bar.setValue(int(PROGRESS_STEPS * planes_done / self._plane[1]))
        if planes_done == self._plane[1]:
            self.progress_bar.setFormat("Finding the nuclei...")
