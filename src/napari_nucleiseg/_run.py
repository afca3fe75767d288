"""A segmentation run of the dock widget: the model, the worker thread, its progress and Cancel.

The run is :func:`~napari_nucleiseg.pipeline.segment_planes` in a napari thread worker (or in the
calling thread, for tests and scripts). Everything that can go wrong comes back as a
:class:`Failure`, one sentence for the user: a worker that raises would end in a traceback dialog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QProgressBar

from .errors import Cancelled, ImageError, WeightsError
from .pipeline import ChosenSettings, PlanesResult, Predict, segment_planes
from .scale import check_diameter

logger = logging.getLogger(__name__)

#: Progress bar resolution within a run (planes x tiles are mapped onto it).
PROGRESS_STEPS = 1000
#: Before the first tile is done, the bar's text counts the seconds of its stage this often.
STAGE_TICK_MS = 1000


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
                   channel: tuple[int, int] | None = None) -> tuple[int, Path, dict[str, Any], bool]:
    """The number of planes of the Image layer ``image`` (of its ``channel``, ``(axis, index)``, if
    one is chosen), the weights file (``weights()``), its metadata, and whether the image is segmented
    block by block (:func:`~._large_layer.segmented_in_blocks`: multiscale, or one plane too large to
    hold whole), once it is sure that the run can start: an image (among ``layers``) that holds 2-D
    planes, one plane if it is segmented block by block, a readable weights file, and the memory the
    run needs.

    Raises
    ------
    Refused
        Saying what is missing.
    """
    from ._large_layer import blocks_shortfall, segmented_in_blocks
    from .channels import reads_colour
    from .memory import memory_shortfall
    from .pipeline import stack_shape
    from .weights import read_metadata

    if image is None:
        others = [f"'{layer.name}' is a {type(layer).__name__} layer" for layer in layers]
        detail = f" ({', '.join(others[:2])})" if others else ""
        raise Refused(f"There is no image layer to segment{detail}; open an image first.")
    cmyk = cmyk_jpeg_refusal(image)
    if cmyk is not None:
        raise Refused(cmyk)
    path = None
    try:
        shape = list(image.data.shape)  # a multiscale image's: its full-resolution level's
        if channel is not None:
            del shape[channel[0]]
        leading, plane = stack_shape(tuple(shape), reads_colour(image.rgb, channel))
        shortfall = memory_shortfall((*leading, *plane))
        blocks = segmented_in_blocks(image, plane, shortfall is not None)
        if blocks and leading:
            raise ImageError(f"'{image.name}' is a stack of {' x '.join(map(str, leading))} planes of "
                             f"{plane[0]} x {plane[1]} pixels, too large to segment whole; open one plane of it "
                             "as an image: a single plane is segmented block by block.")
        path = weights()
        metadata = read_metadata(path)
    except (ImageError, WeightsError) as error:
        raise Refused(str(error), path if isinstance(error, WeightsError) else None) from None
    shortfall = blocks_shortfall(image.name) if blocks else shortfall
    if shortfall is not None:
        raise Refused(shortfall)
    return int(np.prod(leading)), path, metadata, blocks


def cmyk_jpeg_refusal(image: Any) -> str | None:
    """Why the Image layer ``image`` cannot be segmented when it was read from a CMYK JPEG (None otherwise):
    napari's reader gives its four inks, which napari shows as red, green, blue and alpha (QA: an H&E picture
    so read gave 13,270 nuclei and a note that it was a fluorescence overlay; a gray one, nothing, 'transparent
    everywhere'). The command line converts such files."""
    path = getattr(getattr(image, "source", None), "path", None)
    if not path or not image.rgb or np.shape(image.data)[-1] != 4 or not str(path).lower().endswith((".jpg", ".jpeg")):
        return None
    try:
        from PIL import Image as Picture

        with Picture.open(path) as opened:  # the header only
            if opened.mode != "CMYK":
                return None
    except Exception:  # noqa: BLE001 - not readable now (moved, changed): nothing to say
        return None
    return (f"'{image.name}' is a CMYK JPEG, which napari opens as its four inks (cyan, magenta, yellow, black) "
            "shown as red, green, blue and transparency; save it as an RGB picture (in Fiji: Image > Type > RGB "
            f"Color), or segment the file with the command line, which converts it: nucleiseg segment "
            f"\"{path}\" --out nuclei-results.")


def file_key(path: Path) -> tuple[str, int]:
    """Identifies a weights file and its version: path and modification time."""
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), -1


def run_in_worker(data: Any, rgb: bool, weights: Path, *, model: Any = None, settings: ChosenSettings = None,
                  diameter: float | None = None, augment: bool = False, brown_nuclei: bool = False,
                  on_progress: Callable[[int, int], None] | None = None,
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
        planes = yield from segment_planes(data, model, settings, rgb=rgb, diameter=diameter, augment=augment,
                                           brown_nuclei=brown_nuclei, compact=True, on_progress=on_progress, cancelled=cancelled,
                                           predict=predict)
    except Exception as error:
        return failure_of(error, np.shape(data), weights)
    return Finished(planes, model, key)


def failure_of(error: Exception, shape: tuple[int, ...], weights: Path) -> Failure:
    """What a run that raised ``error`` (on an image of ``shape``, with the weights file ``weights``) tells
    the user; an unexpected error is logged with its traceback."""
    if isinstance(error, Cancelled):
        return Failure("Segmentation cancelled; the run added and changed no layer.", cancelled=True)
    if isinstance(error, (WeightsError, ImageError)):
        return Failure(str(error), weights=weights if isinstance(error, WeightsError) else None)
    if isinstance(error, MemoryError):
        return Failure(f"Not enough memory to segment an image of shape {tuple(shape)}.")
    logger.exception("Segmentation failed", exc_info=error)
    return Failure(f"Segmentation failed: {error}")


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
        self.in_blocks = False  # ... block by block, into a store
        self._worker: Any = None
        self._plane: tuple[int, int] = (0, 1)  # plane being predicted, number of planes
        self._tiles = _TileProgress()  # no parent: the worker may still report while the widget goes
        self._tiles.done.connect(self._on_tile_progress)
        self._blocks = _TileProgress()  # blocks done and total, of an image segmented block by block
        self._blocks.done.connect(self._on_block_progress)
        # Until the first tile is done (loading the model, estimating the diameter: seconds on a large image
        # or a stack), the bar says how long its stage has taken, so the window is seen to be working.
        self._stage = ""
        self._stage_started = 0.0
        self._stage_timer = QTimer(self, interval=STAGE_TICK_MS)
        self._stage_timer.timeout.connect(self._on_stage_tick)

    @property
    def running(self) -> bool:
        return self.image is not None

    def start(self, image: Any, planes: int, weights: Path, *, settings: ChosenSettings,
              diameter: float | None, stage: str, channel: tuple[int, int] | None = None,
              augment: bool = False, brown_nuclei: bool = False) -> None:
        """Segment ``image`` (a napari Image layer of ``planes`` planes; its ``channel``, ``(axis, index)``,
        if one is chosen) with the weights file at ``weights``."""
        from .channels import reads_colour, take_channel

        self._begin(image, planes, stage, in_blocks=False)
        data = image.data if channel is None else take_channel(image.data, *channel)
        run = partial(run_in_worker, data, reads_colour(image.rgb, channel), weights, model=self._model_of(weights), settings=settings,
                      diameter=diameter, augment=augment, brown_nuclei=brown_nuclei, on_progress=self._tiles.done.emit,
                      cancelled=self.cancel_event.is_set, predict=self.predict)
        self._run(run)

    def start_in_blocks(self, image: Any, weights: Path, out: Path, *, settings: ChosenSettings,
                        diameter: float | None, stage: str, channel: tuple[int, int] | None = None,
                        augment: bool = False, brown_nuclei: bool = False) -> None:
        """Segment the one plane of ``image`` (its full-resolution level, if multiscale) block by block into
        an OME-Zarr store at ``out`` (:func:`~._large_layer.segment_in_blocks`, which builds the result's
        layer where the image lies now); progress in blocks."""
        from ._large_layer import lazy_plane, segment_in_blocks
        from ._outputs import placement
        from .channels import reads_colour

        self._begin(image, 1, stage, in_blocks=True)
        run = partial(segment_in_blocks, lazy_plane(image, channel), reads_colour(image.rgb, channel), weights, out,
                      model=self._model_of(weights), settings=settings, diameter=diameter, augment=augment,
                      brown_nuclei=brown_nuclei, channel=channel, placement=placement(image, channel), on_progress=self._blocks.done.emit,
                      cancelled=self.cancel_event.is_set)
        self._run(run)

    def _begin(self, image: Any, planes: int, stage: str, *, in_blocks: bool) -> None:
        self.cancel_event.clear()
        self._plane = (0, planes)
        self.image, self.in_blocks = image, in_blocks
        self.show_progress(True, stage)

    def _model_of(self, weights: Path) -> Any:
        """The model kept from the last run, when it came from this version of ``weights``; else None."""
        return self.model if self.model_key == file_key(weights) else None

    def _run(self, run: Callable[[], Any]) -> None:
        """Call ``run`` (a generator function yielding planes done, or a plain function) in a worker,
        or here when :attr:`synchronous`; its return value is the outcome."""
        if self.synchronous:
            generator = run()
            if not isinstance(generator, Generator):
                self._returned(generator)
                self._finished()
                return
            try:
                while True:
                    self._on_plane_done(next(generator))
            except StopIteration as stop:
                self._returned(stop.value)
            self._finished()
            return
        self._worker = thread_worker(run, start_thread=False, ignore_errors=True)()
        if hasattr(self._worker, "yielded"):  # a generator's worker (a plain function's has no yields)
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
        self._stage, self._stage_started = stage, time.monotonic()
        if running and stage:
            self._stage_timer.start()
        else:
            self._stage_timer.stop()

    def _on_stage_tick(self) -> None:
        seconds = int(time.monotonic() - self._stage_started)
        self.progress_bar.setFormat(f"{self._stage} {seconds} s" if seconds else self._stage)

    def _returned(self, outcome: Finished | Failure) -> None:
        self.show_progress(False)
        if not isinstance(outcome, Failure):  # Finished, or a LargeFinished: the model to keep
            self.model, self.model_key = outcome.model, outcome.model_key
        self._on_returned(outcome)

    def _finished(self) -> None:
        image = self.image
        self._worker = self.image = None
        self.show_progress(False)
        self._on_finished(image)  # which may start the next run

    def _on_tile_progress(self, done: int, total: int) -> None:
        self._stage_timer.stop()
        plane, planes = self._plane
        self.progress_bar.setValue(int(PROGRESS_STEPS * (plane + done / max(total, 1)) / planes))
        where = f"plane {plane + 1}/{planes}, " if planes > 1 else ""
        self.progress_bar.setFormat(f"{where}tile {done}/{total}")

    def _on_block_progress(self, done: int, total: int) -> None:
        self._stage_timer.stop()
        self.progress_bar.setValue(int(PROGRESS_STEPS * done / max(total, 1)))
        self.progress_bar.setFormat(f"block {done}/{total}")

    def _on_plane_done(self, planes_done: int) -> None:
        self._stage_timer.stop()
        self._plane = (planes_done, self._plane[1])
        self.progress_bar.setValue(int(PROGRESS_STEPS * planes_done / self._plane[1]))
        if planes_done == self._plane[1]:
            self.progress_bar.setFormat("Finding the nuclei...")
