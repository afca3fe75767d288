"""The dock widget's Fine-tune section: teach the chosen model from the user's corrected labels.

The user ticks the Labels layers they corrected (each with the image it corrects: for one of the
widget's results, the image it was made from), may name a Shapes layer whose rectangles mark the
regions they checked, and gives a time budget and a name. :func:`~.learn.finetune.finetune` runs in
a napari thread worker, on copies of the layers' data (the layers are never modified), with progress
and Cancel; the new model goes to the user's model folder (:mod:`.user_models`), is chosen in the
Model picker, and *Segment with it* segments the image again with it, into a layer of its own.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)
from superqt import QCollapsible
from superqt.utils import signals_blocked

from ._controls import ModelPicker, NameComboBox
from ._model_menu import confirm
from ._outputs import labels_of, plane_shape
from ._run import Failure
from .channels import reads_colour, take_channel
from .errors import Cancelled, FineTuneError, WeightsError
from .learn import DEFAULT_MINUTES
from .user_models import finetuned_name, list_user_models, name_problem, typed_model_name, user_model_path

logger = logging.getLogger(__name__)

#: Progress bar resolution: the share of the time budget spent.
PROGRESS_STEPS = 1000
#: The shortest and longest time budgets offered (minutes).
MINUTES_RANGE = (0.05, 120.0)

#: A Labels layer edited by hand is ticked this long after the edit (not at every stroke of the brush).
EDIT_CHECK_MS = 300

Region = tuple[int, int, int, int]


class Refused(Exception):
    """A fine-tuning run that cannot start; the message is one sentence for the user."""


@dataclass
class Tuned:
    """A fine-tuning run that finished: the new weights file, and notes on the material (planes left out)."""

    path: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class Pair:
    """A corrected Labels layer and the image it corrects (its ``channel``, ``(axis, index)``, if one)."""

    labels: Any
    image: Any
    channel: tuple[int, int] | None = None

    def image_data(self) -> Any:
        return self.image.data if self.channel is None else take_channel(self.image.data, *self.channel)


def finetune_in_worker(images: list[np.ndarray], labels: list[np.ndarray], base: Path, *, name: str, minutes: float,
                       regions: list[list[Region] | None] | None, overwrite: bool, brown_nuclei: list[bool],
                       on_progress: Callable[[Any], None], cancelled: Callable[[], bool]) -> Tuned | Failure:
    """:func:`~napari_nucleiseg.learn.finetune.finetune` for a worker thread: what goes wrong comes back
    as a :class:`~._run.Failure`, one sentence (a worker that raises ends in a traceback dialog)."""
    notes: list[str] = []
    try:
        from .learn.finetune import finetune

        path = finetune(images, labels, base, name=name, minutes=minutes, regions=regions, overwrite=overwrite,
                        brown_nuclei=brown_nuclei, progress=on_progress, cancelled=cancelled, log=notes.append)
    except Cancelled:
        return Failure("Fine-tuning cancelled; no model was saved.", cancelled=True)
    except FineTuneError as error:
        return Failure(str(error))
    except WeightsError as error:  # the base's file: gone or broken (taken out of the Model list, as Segment does)
        return Failure(str(error), weights=Path(base))
    except MemoryError:
        return Failure("Not enough memory to fine-tune on these images; mark smaller regions you checked, or use "
                       "fewer images.")
    except Exception as error:
        logger.exception("Fine-tuning failed")
        return Failure(f"Fine-tuning failed: {error}")
    return Tuned(path, notes)


def _import_quietly() -> None:
    """:func:`import_training`; a failure is logged only (training imports again, and says what fails)."""
    try:
        import_training()
    except Exception:
        logger.debug("The training code could not be imported ahead", exc_info=True)


def import_training() -> None:
    """Import the training code. Torch's optimisers import ``torch._dynamo`` when the first one is made
    (2 s on a laptop CPU, 822 modules), and part of that import holds the interpreter, so the main
    thread stops for 0.4-0.5 s: better while the user chooses the layers than after Fine-tune is clicked.
    The garbage collector is kept off the objects alive meanwhile (see :meth:`FineTunePanel.start`), and
    on them again afterwards: a frozen object is never collected, and a layer taken out later is freed by
    the collector only."""
    keep_from_collector()
    try:
        import torch._dynamo  # noqa: F401

        from .learn import finetune  # noqa: F401
    finally:
        give_back_to_collector()


_holders = 0  # the callers of keep_from_collector that have not given back yet
_holders_lock = threading.Lock()


def keep_from_collector() -> None:
    """Leave the objects alive now out of the garbage collector's collections (:func:`gc.freeze`) until
    :func:`give_back_to_collector` (the import of the training code in a thread, a training: whichever
    ends last gives them back). A frozen object is never collected: frozen for good, a layer taken out
    later stayed in memory (QA found 551,941 objects frozen after one fine-tune)."""
    global _holders
    with _holders_lock:
        _holders += 1
        gc.freeze()


def give_back_to_collector() -> None:
    global _holders
    with _holders_lock:
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()


def regions_over(shapes: Any, image: Any, plane: tuple[int, int]) -> list[Region]:
    """The bounding boxes ``(y0, y1, x0, x1)``, in the pixels of ``image``'s planes (``plane``: their
    height and width), of the shapes of the Shapes layer ``shapes`` that lie over it, cut to it."""
    boxes = []
    for vertices in shapes.data:
        world = np.asarray(vertices)[:, -2:] * shapes.scale[-2:] + shapes.translate[-2:]
        pixels = (world - image.translate[-2:]) / image.scale[-2:]
        (y0, x0), (y1, x1) = np.floor(pixels.min(axis=0)), np.ceil(pixels.max(axis=0))
        y0, y1, x0, x1 = int(max(y0, 0)), int(min(y1, plane[0])), int(max(x0, 0)), int(min(x1, plane[1]))
        if y1 > y0 and x1 > x0:
            boxes.append((y0, y1, x0, x1))
    return boxes


#: A result made with Exclude border trains only this many nucleus diameters away from its border ...
BORDER_BAND_DIAMETERS = 1.5
#: ... the diameter it was segmented for, or this many pixels when it was not resized.
BORDER_BAND_DEFAULT_DIAMETER = 20.0


def inside_border_bands(pairs: list[Any], regions: list[list[Region] | None] | None) -> list[list[Region] | None] | None:
    """``regions`` (per pair; None: whole images) with the band along the border of each result made with Exclude
    border left out: its nuclei touching the border were taken out, and training would read them as background
    (QA). The band is :data:`BORDER_BAND_DIAMETERS` nucleus diameters wide."""
    if not any(pair.labels.metadata.get("exclude_border") for pair in pairs):
        return regions
    inside = []
    for index, pair in enumerate(pairs):
        boxes = None if regions is None else regions[index]
        if pair.labels.metadata.get("exclude_border"):
            height, width = labels_of(pair.labels).shape[-2:]
            diameter = pair.labels.metadata.get("diameter") or BORDER_BAND_DEFAULT_DIAMETER
            band = int(np.ceil(BORDER_BAND_DIAMETERS * float(diameter)))
            boxes = [(max(y0, band), min(y1, height - band), max(x0, band), min(x1, width - band))
                     for y0, y1, x0, x1 in (boxes if boxes is not None else [(0, height, 0, width)])]
            boxes = [(y0, y1, x0, x1) for y0, y1, x0, x1 in boxes if y1 > y0 and x1 > x0]
        inside.append(boxes)
    return inside


class _Reports(QObject):
    """The progress of a run, emitted from the worker thread."""

    progress = Signal(object)


class TrainingPairs(QTableWidget):
    """The viewer's Labels layers, each with a box (train on it) and the image it corrects.

    ``source_of(layer)`` gives ``(image, channel, edited)`` for one of the widget's results (None for
    another layer; ``edited()`` says whether it was edited by hand): a result is paired with its image, and
    ticked once edited by hand.
    """

    def __init__(self, viewer, source_of: Callable[[Any], tuple[Any, Any, Callable[[], bool]] | None],
                 parent: QWidget | None = None):
        super().__init__(0, 2, parent)
        self.viewer = viewer
        self._source_of = source_of
        self._ticked: dict[Any, bool] = {}  # by the Labels layer's unique id: what the user ticked
        self._image_of: dict[Any, Any] = {}  # ... and the image layer (unique id) they chose for it
        # ... and whether a result was edited by hand, as last seen (a fingerprint of its labels: taken again
        # after an edit, not for every result at each layer added; QA: 23-77 ms per large result)
        self._edited: dict[Any, bool] = {}
        self.setHorizontalHeaderLabels(["Corrected labels", "Image it corrects"])
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setVisible(False)
        self.setToolTip("Tick the Labels layers you corrected; each is learnt with the image it corrects (a "
                        "result's own image, or one you choose)")
        self.itemChanged.connect(self._on_item_changed)
        self._edits = QTimer(self, singleShot=True, interval=EDIT_CHECK_MS)  # a result edited: tick it
        self._edits.timeout.connect(self.follow_edits)
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.moved):
            emitter.connect(self.refresh)
        self.refresh()

    def layers(self, kind: type) -> list[Any]:
        return [layer for layer in self.viewer.layers if isinstance(layer, kind)]

    def refresh(self, *_) -> None:
        """Rebuild the rows, keeping what the user ticked and chose."""
        labels, images = self.layers(Labels), self.layers(Image)
        with signals_blocked(self):
            self.setRowCount(len(labels))
            for row, layer in enumerate(labels):
                layer.events.name.connect(self.refresh)  # connecting twice is a no-op
                layer.events.paint.connect(self._on_edit)
                layer.events.data.connect(self._on_edit)
                layer.events.set_data.connect(self._forget_edited)  # undo and redo redraw without a paint event
                source = self._source_of(layer)
                item = QTableWidgetItem(layer.name)
                item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
                item.setData(Qt.ItemDataRole.UserRole, layer)
                ticked = self._ticked.get(layer.unique_id, self._was_edited(layer, source))
                item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
                self.setItem(row, 0, item)
                combo = NameComboBox(toolTip=f"The image '{layer.name}' corrects")
                for image in images:
                    combo.addItem(image.name, image)
                ids = [image.unique_id for image in images]
                chosen = self._image_of.get(layer.unique_id) or self._default_image(layer, source, images)
                combo.setCurrentIndex(ids.index(chosen) if chosen in ids else -1)
                combo.currentIndexChanged.connect(partial(self._on_image_chosen, layer.unique_id, combo))
                self.setCellWidget(row, 1, combo)
        self.setFixedHeight(self.horizontalHeader().height() + 2 * self.frameWidth()
                            + sum(self.rowHeight(row) for row in range(min(self.rowCount(), 4))) + 4)

    @staticmethod
    def _default_image(layer: Any, source: tuple | None, images: list[Any]) -> Any:
        """The image a Labels layer corrects: a result's own; else the first of its shape, if any."""
        if source is not None:
            return source[0].unique_id
        same = [image for image in images if plane_shape(image.data.shape, image.rgb) == np.shape(labels_of(layer))]
        return same[0].unique_id if same else None

    def _was_edited(self, layer: Any, source: tuple | None) -> bool:
        """Whether the result ``layer`` (of ``source``, its ``source_of``) was edited by hand; False for another."""
        if source is None:
            return False
        if layer.unique_id not in self._edited:
            self._edited[layer.unique_id] = source[2]()
        return self._edited[layer.unique_id]

    def _forget_edited(self, event=None) -> None:
        """Whether the layer of ``event`` was edited is to be looked at again (all layers, without an event)."""
        layer = getattr(event, "source", None)
        if layer is None:
            self._edited.clear()
        else:
            self._edited.pop(getattr(layer, "unique_id", None), None)

    def _on_edit(self, event=None) -> None:
        self._forget_edited(event)
        self._edits.start()

    def follow_edits(self) -> None:
        """Tick the results edited by hand since, unless the user ticked or unticked them."""
        with signals_blocked(self):
            for row in range(self.rowCount()):
                item = self.item(row, 0)
                layer = item.data(Qt.ItemDataRole.UserRole)
                source = self._source_of(layer)
                if layer.unique_id not in self._ticked and self._was_edited(layer, source):
                    item.setCheckState(Qt.CheckState.Checked)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        layer = item.data(Qt.ItemDataRole.UserRole)
        self._ticked[layer.unique_id] = item.checkState() == Qt.CheckState.Checked

    def _on_image_chosen(self, labels_id: Any, combo: NameComboBox, index: int) -> None:
        image = combo.itemData(index)
        self._image_of[labels_id] = None if image is None else image.unique_id

    def tick(self, layer: Any, ticked: bool = True, image: Any = None) -> None:
        """Tick (or untick) the Labels layer ``layer``, and pair it with ``image`` if given (as a user does)."""
        self._ticked[layer.unique_id] = ticked
        if image is not None:
            self._image_of[layer.unique_id] = image.unique_id
        self.refresh()

    def pairs(self) -> list[Pair]:
        """The Labels layers ticked, each with its image (None where none is chosen)."""
        self._forget_edited()  # (a script may have changed a layer's pixels without an event)
        self.follow_edits()
        chosen = []
        for row in range(self.rowCount()):
            item = self.item(row, 0)
            if item.checkState() == Qt.CheckState.Checked:
                layer, image = item.data(Qt.ItemDataRole.UserRole), self.cellWidget(row, 1).currentData()
                source = self._source_of(layer)
                same = source is not None and image is not None and source[0].unique_id == image.unique_id
                chosen.append(Pair(layer, image, source[1] if same else None))
        return chosen


class FineTunePanel(QCollapsible):
    """The collapsible Fine-tune section: the training pairs, the checked regions, the time budget and
    the new model's name, *Fine-tune* with progress and Cancel, and *Segment with it*.

    ``outputs`` (the widget's :class:`~._outputs.OutputLayers`) says which image a result was made
    from; ``picker`` gives the model to start from and lists the new one; ``segment_with(image)``
    segments an image with the model chosen; ``error`` and ``info`` tell the user.
    :attr:`confirm` asks before a model is replaced (tests and scripts replace it).
    """

    def __init__(self, viewer, outputs: Any, picker: ModelPicker, *, segment_with: Callable[[Any], None],
                 error: Callable[[str], None], info: Callable[[str], None],
                 brown_nuclei: Callable[[], bool] = lambda: False, parent: QWidget | None = None):
        super().__init__("Fine-tune the model on your corrections", parent)
        self.viewer = viewer
        self.picker = picker
        self._segment_with, self._error, self._info = segment_with, error, info
        self._brown_nuclei = brown_nuclei  # the widget's Brown nuclei box, for labels that are not its results
        #: Asks a yes/no question; whether the answer was yes.
        self.confirm: Callable[[str], bool] = lambda question: confirm(self, "Replace a model", question)
        self.cancel_event = threading.Event()
        self.running = False
        self.last_model: Path | None = None  # the model the last run made
        self._last_image: Any = None  # ... and the image to segment with it
        self._left_out_note = ""  # the results the last run left out, said with its outcome
        self._name_typed = False  # the user typed a name: it is not replaced by a default
        self._reports = _Reports()  # no parent: the worker may still report while the widget goes
        self._reports.progress.connect(self._on_progress)
        self._worker: Any = None
        self._kept_from_collector = False  # see keep_from_collector

        self._outputs = outputs
        self.pairs = TrainingPairs(viewer, self._source_of)
        self.regions_combo = NameComboBox(toolTip="A Shapes layer whose rectangles mark the regions you checked: "
                                                  "only they teach the model, and what lies outside them is "
                                                  "unknown, not background. Whole images: all of each counts")
        self.minutes_spin = QDoubleSpinBox(minimum=MINUTES_RANGE[0], maximum=MINUTES_RANGE[1], decimals=2,
                                           value=DEFAULT_MINUTES, suffix=" min", singleStep=0.5,
                                           toolTip="How long to train: the model improves for a few minutes")
        self.name_edit = QLineEdit(toolTip="The new model's name: it is saved in your model folder and listed "
                                           "under Model")
        self.finetune_button = QPushButton("Fine-tune", toolTip="Train a copy of the model chosen under Model on "
                                                               "the ticked labels; your layers are not changed")
        self.cancel_button = QPushButton("Cancel", enabled=False, toolTip="Stop the training; no model is saved")
        self.progress_bar = QProgressBar(maximum=PROGRESS_STEPS, textVisible=True, visible=False,
                                         toolTip="Training steps, loss and time left")
        self.status_label = QLabel("", wordWrap=True, toolTip="How the last fine-tuning went")
        self.segment_button = QPushButton("Segment with it", enabled=False,
                                          toolTip="Segment the image again with the new model, into a layer of "
                                                  "its own")
        self.toggleButton().setToolTip("Teach the model chosen under Model from labels you corrected: a new model "
                                       "of your own, saved in your model folder")
        _lay_out(self)
        self.finetune_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.segment_button.clicked.connect(self.segment_with_new_model)
        self.name_edit.textEdited.connect(lambda *_: setattr(self, "_name_typed", True))
        picker.currentIndexChanged.connect(self.suggest_name)
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self._refresh_regions)
        self.destroyed.connect(self.cancel_event.set)  # not via self: it is going
        self._warmed = False
        self.toggled.connect(self._warm_up)
        self._refresh_regions()
        self.suggest_name()

    def _source_of(self, layer: Any) -> tuple[Any, Any, Callable[[], bool]] | None:
        """``(image, channel, edited)`` of one of the widget's results (``edited()``: whether it was edited by
        hand); None for another layer."""
        record = self._outputs.record(layer)
        return None if record is None else (record.image, record.channel, record.edited)

    def _warm_up(self, *_) -> None:
        """The first time the section opens, import what training needs, in a worker, while the user
        chooses the layers: it takes seconds, and part of it holds the main thread (see :func:`import_training`)."""
        if not self._warmed:
            self._warmed = True
            # A Python thread, not a Qt worker: one still importing when napari is quit ended the process with
            # "Aborted" (its Qt signals were deleted before it finished; QA). Python waits for it at exit.
            threading.Thread(target=_import_quietly, name="nucleiseg-import-training").start()

    # ---- inputs ---------------------------------------------------------------------------

    def _refresh_regions(self, *_) -> None:
        chosen = self.regions_combo.currentData()
        with signals_blocked(self.regions_combo):
            self.regions_combo.clear()
            self.regions_combo.addItem("Whole images", None)
            for layer in self.pairs.layers(Shapes):
                self.regions_combo.addItem(layer.name, layer)
                if chosen is not None and layer.unique_id == chosen.unique_id:
                    self.regions_combo.setCurrentIndex(self.regions_combo.count() - 1)

    def choose_regions(self, shapes: Any) -> None:
        """Take the rectangles of the Shapes layer ``shapes`` (None: whole images) as the regions checked."""
        ids = [getattr(self.regions_combo.itemData(i), "unique_id", None) for i in range(self.regions_combo.count())]
        self.regions_combo.setCurrentIndex(ids.index(getattr(shapes, "unique_id", None)))

    def suggest_name(self, *_) -> None:
        """Offer "<base>-finetuned-<date>" (a number added if that is taken), unless the user typed a name."""
        if not self._name_typed:
            self.name_edit.setText(default_name(self.picker.metadata().get("name") or self.picker.currentText()))

    def _job(self) -> dict[str, Any]:
        """What :func:`finetune_in_worker` needs, from the controls, once it is sure it can start.

        Raises
        ------
        Refused
            Saying what is missing or wrong, in one sentence.
        """
        if not self.pairs.layers(Labels):
            raise Refused("There is no Labels layer to learn from; segment an image and correct its labels first.")
        pairs = self.pairs.pairs()
        if not pairs:
            raise Refused("Tick the Labels layers you corrected under Fine-tune first.")
        for pair in pairs:
            if pair.image is None:
                raise Refused(f"Choose the image that '{pair.labels.name}' corrects.")
            if pair.labels.multiscale or pair.image.multiscale:
                raise Refused(f"'{(pair.labels if pair.labels.multiscale else pair.image).name}' is multiscale; "
                              "fine-tune on its full-resolution level.")
            record = self._outputs.record(pair.labels)
            if record is not None and record.image is pair.image and record.image_changed():
                raise Refused(f"'{pair.labels.name}' holds the nuclei of the data '{pair.image.name}' had before "
                              f"it was given new data; segment '{pair.image.name}' again and correct that result.")
            image_shape = plane_shape(np.shape(pair.image_data()), reads_colour(pair.image.rgb, pair.channel))
            if image_shape != labels_of(pair.labels).shape:
                # one channel of a stack (QA: a corrected copy of a channel's result was a dead end): split it
                channels = (pair.channel is None and len(image_shape) == len(labels_of(pair.labels).shape) + 1
                            and image_shape[1:] == labels_of(pair.labels).shape)
                hint = (" (for one of its channels, right-click it in the layer list, Split Stack, and choose the "
                        "channel with the nuclei)" if channels else "")
                raise Refused(f"'{pair.labels.name}' is {_size(labels_of(pair.labels).shape)} but its image "
                              f"'{pair.image.name}' is {_size(image_shape)}; choose the image it corrects{hint}.")
        shapes = self.regions_combo.currentData()
        regions = None
        if shapes is not None:
            regions = [regions_over(shapes, pair.image, labels_of(pair.labels).shape[-2:]) for pair in pairs]
            pairs = [pair for pair, boxes in zip(pairs, regions) if boxes]
            regions = [boxes for boxes in regions if boxes]
            if not pairs:
                raise Refused(f"No shape of '{shapes.name}' lies over the images chosen; draw rectangles over the "
                              "nuclei you checked, or choose Whole images.")
        regions = inside_border_bands(pairs, regions)
        if regions is not None:  # the band may leave nothing of a small result (QA: it then trained the whole image)
            kept = [(pair, boxes) for pair, boxes in zip(pairs, regions) if boxes is None or boxes]
            if not kept:
                raise Refused(f"'{pairs[0].labels.name}' was segmented with Exclude border: its nuclei near the border "
                              "were left out, and nothing checked lies far enough inside to train on. Untick Exclude "
                              "border and segment again, or check a region nearer the middle.")
            band_only = [pair.labels.name for pair, boxes in zip(pairs, regions) if boxes is not None and not boxes]
            pairs, regions = [pair for pair, _ in kept], [boxes for _, boxes in kept]
        else:
            band_only = []
        name = typed_model_name(self.name_edit.text())  # (QA: 'x.safetensors' typed skipped the question below)
        problem = name_problem(name, typed=True)
        if problem:
            raise Refused(problem)
        try:
            base = self.picker.weights_path()
        except WeightsError as error:
            raise Refused(str(error)) from None
        target = user_model_path(name)
        if target.resolve() == Path(base).resolve():  # (QA: asked to replace it, then refused after Yes)
            raise Refused(f"'{name}' is the model being fine-tuned; give the new model another name.")
        overwrite = target.exists()
        if overwrite and not self.confirm(f"You have a model called '{name}' already. Replace it?"):
            raise Refused(f"There is a model called '{name}' already; choose another name.")
        # Copies: the layers stay the user's to edit while the worker trains.
        return {"images": [np.array(pair.image_data()) for pair in pairs],
                "labels": [np.asarray(labels_of(pair.labels)).copy() for pair in pairs],
                "base": base, "name": name, "minutes": self.minutes_spin.value(), "regions": regions,
                "overwrite": overwrite, "image": pairs[0].image, "left_out": band_only,
                # each image read as its result was (its brown as hematoxylin or not); other labels as the box says
                "brown_nuclei": [bool(pair.labels.metadata.get("brown_nuclei", self._brown_nuclei())) for pair in pairs]}

    # ---- the run --------------------------------------------------------------------------

    def start(self) -> None:
        """Fine-tune the model chosen on the ticked labels, in a worker."""
        if self.running:
            return
        try:
            job = self._job()
        except Refused as refusal:
            self._say(str(refusal), self._error)
            return
        self._last_image = job.pop("image")
        left_out = job.pop("left_out")  # (review: a result whose checked part lay in its border band, dropped unsaid)
        self._left_out_note = (f"{', '.join(repr(name) for name in left_out)} did not train: made with Exclude border, "
                               "nothing checked of it lies far enough inside." if left_out else "")
        # The garbage collector's full collections scan every object of the process, napari's and torch's:
        # 0.6 s holding the interpreter (measured: benchmarks/bench_finetune_gui.py), which training's
        # allocations trigger. Objects alive now are left out of them until training ends (the window then
        # never stops for more than about 50 ms while training); what training makes is collected as usual.
        keep_from_collector()
        self._kept_from_collector = True
        self.cancel_event.clear()
        self._set_running(True)
        self.status_label.setText("")
        self.progress_bar.setFormat("Preparing the images and loading the model...")
        self.progress_bar.setValue(0)
        run = partial(finetune_in_worker, **job, on_progress=self._reports.progress.emit,
                      cancelled=self.cancel_event.is_set)
        self._worker = thread_worker(run, start_thread=False, ignore_errors=True)()
        self._worker.returned.connect(self._on_returned)
        self._worker.finished.connect(lambda: self._set_running(False))
        self._worker.start()

    def cancel(self) -> None:
        """Stop the training at the next step; no model is saved."""
        self.cancel_event.set()
        self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        if not running and self._kept_from_collector:  # first: the panel may be gone (closed mid-training)
            self._kept_from_collector = False
            give_back_to_collector()
        self.running = running
        if not running:
            self._worker = None
        with contextlib.suppress(RuntimeError):  # (QA: the window closed mid-training: its buttons are gone)
            self.finetune_button.setEnabled(not running)
            self.cancel_button.setEnabled(running)
            self.progress_bar.setVisible(running)

    def _on_progress(self, progress: Any) -> None:
        if not self.running:
            return
        self.progress_bar.setValue(int(PROGRESS_STEPS * min(1.0, progress.elapsed / progress.budget)))
        left = int(round(progress.remaining))
        self.progress_bar.setFormat(f"step {progress.steps}, loss {progress.mean_loss:.3f}, "
                                    f"{left // 60}:{left % 60:02d} left")

    def _on_returned(self, outcome: Tuned | Failure) -> None:
        if isinstance(outcome, Failure):
            message = self.picker.refuse(outcome.message, outcome.weights)  # (QA: a deleted base stayed chosen)
            self._say(message, self._info if outcome.cancelled else self._error)
            return
        self.last_model, self._name_typed = outcome.path, False
        self.picker.set_weights_file(outcome.path)  # listed, and chosen
        self.segment_button.setEnabled(True)
        notes = [self._left_out_note] * bool(self._left_out_note) + list(outcome.notes)
        self._say(f"Saved your model '{outcome.path.stem}', chosen under Model; Segment with it to see what it "
                  f"learnt.{''.join(' ' + note for note in notes)}", self._info)
        self.suggest_name()

    def _say(self, message: str, how: Callable[[str], None]) -> None:
        self.status_label.setText(message)
        how(message)

    def segment_with_new_model(self) -> None:
        """Segment the image of the last run's first pair with the new model (chosen under Model)."""
        if self.last_model is None:
            return
        if not self.last_model.is_file():  # renamed under Model's ... menu since?
            self.last_model = self.picker.now_called(self.last_model)
        if not self.last_model.is_file():
            self._say(f"Your model '{self.last_model.stem}' was renamed or deleted since; choose a model under Model "
                      "and click Segment.", self._error)
            return
        self.picker.set_weights_file(self.last_model)
        image = self._last_image
        if image is None or not any(layer.unique_id == image.unique_id for layer in self.viewer.layers):
            self._say("The image the model learnt from is closed; choose an image and click Segment.", self._error)
            return
        self._segment_with(image)


def _size(shape: tuple[int, ...]) -> str:
    return " x ".join(str(side) for side in shape) + " pixels"


def _lay_out(panel: FineTunePanel) -> None:
    """The section's controls in a form, top to bottom in the order of the work."""
    content = QWidget()
    form = QFormLayout(content)
    form.setContentsMargins(0, 0, 0, 0)
    form.addRow(panel.pairs)
    form.addRow("Checked regions", panel.regions_combo)
    form.addRow("Time budget", panel.minutes_spin)
    form.addRow("New model", panel.name_edit)
    buttons = QHBoxLayout()
    buttons.addWidget(panel.finetune_button)
    buttons.addWidget(panel.cancel_button)
    form.addRow(buttons)
    form.addRow(panel.progress_bar)
    form.addRow(panel.status_label)
    form.addRow(panel.segment_button)
    for row in range(form.rowCount()):
        label, field = (form.itemAt(row, role) for role in (QFormLayout.LabelRole, QFormLayout.FieldRole))
        if label is not None and field is not None and field.widget() is not None:
            label.widget().setToolTip(field.widget().toolTip())
    panel.addWidget(content)


def default_name(base: str) -> str:
    """A new model's name: "<base>-finetuned-<date>" (its own such suffix taken off a base made so), with
    a number added when the user has a model of that name already."""
    stem = finetuned_name(base)
    taken = {path.stem for path in list_user_models()}
    number, name = 1, stem
    while name in taken:
        number += 1
        name = f"{stem}-{number}"
    return name
