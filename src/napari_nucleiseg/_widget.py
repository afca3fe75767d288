"""The dock widget: pick an image and a model, segment, tune the result, correct it by hand, export.

UI only. The network runs in a napari thread worker (:mod:`.inference`), on the image resized for
the nucleus diameter (estimated, or given: a new diameter runs the network again); the threshold,
minimum size and splitting re-run only the post-processing (:mod:`.postprocess`) on the probability
maps cached, compactly, from the last run: at once for small images, in a worker for large ones,
where the newest settings win. Layers are touched only on the main thread.

Nothing the user made is overwritten: the widget updates its Labels layer in place only while
the layer holds exactly what the widget last wrote; once the user has edited it by hand, a new
result goes to a new layer.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider
from superqt.utils import signals_blocked

from . import _layers
from .preprocess import ImageError
from .scale import check_diameter
from .weights import BUNDLED_MODELS, DEFAULT_MIN_SIZE, DEFAULT_MODEL, DEFAULT_THRESHOLD, WeightsError, bundled_weights_path, read_metadata

CUSTOM_WEIGHTS_ITEM = "Custom weights file..."
#: The per-nucleus table is measured this long after the last change, so dragging the slider
#: or painting stays fluid; the count follows at once.
TABLE_DELAY_MS = 250
#: A redrawn Labels layer is checked for changes (undo and redo redraw it without a paint event)
#: this long after the redrawing stops.
REDRAW_CHECK_MS = 100
#: Labels layers larger than this are counted in a worker after a hand edit: counting takes
#: 0.2 s at 8192 x 8192 and seconds at 20,000 x 20,000, too long to hold up the brush.
COUNT_IN_WORKER_PIXELS = 1 << 24
#: Progress bar resolution within a run (planes x tiles are mapped onto it).
PROGRESS_STEPS = 1000
#: Post-processing at most this many pixels (all planes together) runs at once, on the main
#: thread: at most about 90 ms on two busy cores (measured at 724 x 724 with the slowest
#: post-processing so far), within the 100 ms a slider step may take, and the layer follows the
#: slider with no lag (the cut by shape adds about 8 ms CPU at 724 x 724). Anything larger (0.2 to
#: 1 s at 2048 x 2048) runs in a worker, so the window never freezes.
SYNC_POSTPROCESS_PIXELS = 2**19
#: Closing the widget waits at most this long for a re-threshold to stop (it stops between planes:
#: a 2048 x 2048 plane takes up to about a second).
CLOSE_WAIT_S = 10.0
#: The largest diameter the diameter box takes (pixels); a diameter larger than the image is
#: refused anyway, with a sentence.
MAX_DIAMETER_PX = 100_000.0


@dataclass(eq=False)  # compared by identity: a result belongs to one run's cache
class _Cache:
    """The probability maps of the last finished run, from which every re-threshold starts.

    Float maps given here are stored compactly (:class:`~._layers.CompactProbabilities`).
    """

    image: Image
    probabilities: _layers.CompactProbabilities
    boundary_threshold: float
    model_key: tuple[str, int]  # weights file and its modification time
    neck_ratio: float = 0.0  # the model's, like the boundary threshold
    seed_min_size: int = 0  # the model's too, at the scale of the run
    diameter: float | None = None  # the nucleus diameter the network ran for (None: not resized)
    diameter_estimated: bool = False
    scale: float = 1.0  # the factor the image was resized by for the network

    def __post_init__(self) -> None:
        if not isinstance(self.probabilities, _layers.CompactProbabilities):
            self.probabilities = _layers.CompactProbabilities.from_float(self.probabilities)


@dataclass(frozen=True)
class _Settings:
    """The post-processing options a result is made with (the threshold, min size and split controls)."""

    threshold: float
    min_size: int
    split: bool

    @classmethod
    def calibrated(cls, metadata: dict, split: bool) -> _Settings:
        """The threshold and minimum size calibrated for a model (package defaults if it has none)."""
        return cls(float(metadata.get("threshold", DEFAULT_THRESHOLD)),
                   int(metadata.get("min_size", DEFAULT_MIN_SIZE)), split)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~.postprocess.labels_from_probabilities` (but the boundary threshold)."""
        return {"threshold": self.threshold, "min_size": self.min_size, "split": self.split}


@dataclass(eq=False)
class _Job:
    """A re-threshold running in a worker: of which cache, with which settings."""

    worker: Any
    cache: _Cache
    settings: _Settings


class _TileProgress(QObject):
    """Tiles done and total in the plane being predicted, emitted from the worker thread."""

    done = Signal(int, int)


@dataclass
class _Output:
    """A Labels layer the widget wrote: for which image, and fingerprints of what it wrote and of
    what its count and table were last made from (they differ after hand edits)."""

    image: Image
    checksum: int
    counted: int | None = None
    measured: int | None = None  # the fingerprint of the labels the layer's table was measured on


class NucleiSegWidget(QWidget):
    """Dock widget of napari-nucleiseg.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose image layers are segmented and which receives the results.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        #: Run the prediction in the calling thread instead of a worker (for tests and scripts).
        self.run_synchronously: bool = False
        self._cache: _Cache | None = None
        #: The Labels layer each segmented image (by unique id) writes to ...
        self._outputs: dict[Any, Labels] = {}
        #: ... and, for every Labels layer the widget made, what it last wrote there.
        self._written: dict[Labels, _Output] = {}
        self._probability_layers: dict[Any, Image] = {}
        self._shown: Labels | None = None  # the layer whose count is shown and whose table is exported
        self._model: Any = None  # the last loaded NucleiModel, reused while its file is unchanged
        self._model_key: tuple[str, int] | None = None
        self._worker: Any = None
        self._running_image: Image | None = None  # the image being segmented
        self._run_settings: _Settings | None = None  # the settings its first result is made with
        #: The nucleus diameter asked for (pixels); None: estimate it from the image (Auto) ...
        self._diameter: float | None = None
        self._run_diameter: float | None = None  # ... and the one the run under way was asked for
        self._rerun = False  # the diameter changed during a run: run again when it ends
        #: The min size the model calls for at the scale of the last run (at 1 before any run):
        #: a min size box left at it follows the scale of the next run.
        self._default_min_size: int = DEFAULT_MIN_SIZE
        #: The re-threshold running in a worker (at most one: a list, so closing the widget can stop it) ...
        self._jobs: list[_Job] = []
        #: ... and the cache and settings of the result last written (or that failed): the output
        #: is up to date when they are the current ones.
        self._result_key: tuple[_Cache, _Settings] | None = None
        self._closed = False  # closed widgets start no re-threshold
        self._cancel = threading.Event()
        self._plane: tuple[int, int] = (0, 1)  # plane being predicted, number of planes
        self._writing = False  # see _self_writing
        self._edited: set[Labels] = set()  # hand-edited layers whose count is not yet updated
        self._count_timer = QTimer(self, singleShot=True, interval=0)
        self._count_timer.timeout.connect(self._recount_edited)
        self._redrawn: set[Labels] = set()  # written layers redrawn since they were last checked
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_CHECK_MS)
        self._redraw_timer.timeout.connect(self._check_redrawn)
        self._count_requests = 0  # counts made in workers: only the newest request's is shown
        self._stale_tables: set[Labels] = set()
        self._measuring: set[Labels] = set()  # layers whose table a worker is measuring
        self._table_timer = QTimer(self, singleShot=True, interval=TABLE_DELAY_MS)
        self._table_timer.timeout.connect(self._refresh_stale_tables)
        self._build_ui()
        self._last_model_index = self.model_combo.currentIndex()  # to go back to when a custom file is refused
        self._tiles = _TileProgress()  # no parent: the worker may still report while the widget goes
        self._tiles.done.connect(self._on_tile_progress)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.moved.connect(self._on_layers_changed)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        # Closing the widget mid-run stops the workers (not via self: it is going).
        self.destroyed.connect(partial(_stop_workers, self._cancel, self._jobs))
        self._on_layers_changed()
        self._on_model_changed()

    # ---- building the UI ------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.image_combo = QComboBox(toolTip="The image layer to segment (gray, RGB, or a stack of them)")
        self.model_combo = QComboBox()
        for name in BUNDLED_MODELS:
            self.model_combo.addItem(name, name)
        self.model_combo.addItem(CUSTOM_WEIGHTS_ITEM, None)
        self.model_combo.setCurrentIndex(BUNDLED_MODELS.index(DEFAULT_MODEL))
        self._describe_bundled_models()
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)

        self.segment_button = QPushButton("Segment", toolTip="Run the network on the image")
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.progress_bar = QProgressBar(maximum=PROGRESS_STEPS, textVisible=True, visible=False)
        self.probability_check = QCheckBox("Show probability map")

        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.05, 0.95)
        self.threshold_slider.setSingleStep(0.01)
        self.threshold_slider.setDecimals(2)
        self.threshold_slider.setToolTip("Nucleus probability above which a pixel is nucleus")
        self.min_size_spin = QSpinBox(minimum=0, maximum=100_000, suffix=" px", toolTip="Smaller objects are dropped")
        self.split_check = QCheckBox("Split touching nuclei", checked=True)
        self.split_check.setToolTip("Separate touching nuclei along the boundaries the model predicts, and cut "
                                    "\"8\"-shaped objects at their neck (as calibrated for the model)")
        self.diameter_auto_check = QCheckBox("Auto", checked=True)
        self.diameter_auto_check.setToolTip("Estimate the nuclei's diameter from the image")
        self.diameter_spin = QDoubleSpinBox(minimum=0.0, maximum=MAX_DIAMETER_PX, decimals=1, suffix=" px",
                                            enabled=False, toolTip="The nuclei's median diameter, in pixels")
        self.diameter_spin.setKeyboardTracking(False)  # one run when the number is entered, not one a keystroke
        self.count_label = QLabel("No segmentation yet")
        self.count_label.setWordWrap(True)
        self.export_button = QPushButton("Export CSV...", toolTip="Save the per-nucleus table of the result")

        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        diameter_row = QHBoxLayout()
        diameter_row.addWidget(self.diameter_auto_check)
        diameter_row.addWidget(self.diameter_spin, 1)
        form.addRow("Nucleus diameter", diameter_row)
        run_box = QVBoxLayout()  # a hidden progress bar leaves no gap here, unlike a row of its own
        run_box.addLayout(buttons)
        run_box.addWidget(self.progress_bar)
        form.addRow(run_box)
        form.addRow(self.probability_check)
        form.addRow("Threshold", self.threshold_slider)
        form.addRow("Min size", self.min_size_spin)
        form.addRow(self.split_check)
        form.addRow(self.count_label)
        form.addRow(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addStretch(1)

        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.threshold_slider.valueChanged.connect(self._on_postprocess_changed)
        self.min_size_spin.valueChanged.connect(self._on_postprocess_changed)
        self.split_check.toggled.connect(self._on_postprocess_changed)
        self.probability_check.toggled.connect(self._show_probabilities)
        self.diameter_auto_check.toggled.connect(self._on_diameter_auto_toggled)
        self.diameter_spin.valueChanged.connect(self._on_diameter_entered)
        self.export_button.clicked.connect(self._on_export_clicked)

    def _describe_bundled_models(self) -> None:
        for index, name in enumerate(BUNDLED_MODELS):
            try:
                tooltip = _layers.describe_weights(read_metadata(bundled_weights_path(name)))
            except WeightsError as error:
                tooltip = str(error)
            self.model_combo.setItemData(index, tooltip, Qt.ItemDataRole.ToolTipRole)

    # ---- image layer picker ---------------------------------------------------------------

    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, event=None) -> None:
        """Rebuild the image list, keeping the chosen layer, and follow renames of every image."""
        current = self.image_layer
        layers = self._image_layers()
        self.image_combo.clear()
        for layer in layers:
            self.image_combo.addItem(layer.name, layer)
            layer.events.name.connect(self._on_layers_changed)  # connecting twice is a no-op
        added = getattr(event, "value", None) if event is not None and event.type == "inserted" else None
        if added in layers and not self._writing:
            self.image_combo.setCurrentIndex(layers.index(added))  # the image the user just opened
        elif current in layers:
            self.image_combo.setCurrentIndex(layers.index(current))

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if isinstance(layer, Image):
            layer.events.name.disconnect(self._on_layers_changed)
            self._outputs.pop(layer.unique_id, None)
            self._probability_layers.pop(layer.unique_id, None)
            if self._cache is not None and self._cache.image is layer:
                self._cache = self._result_key = None  # free the probability maps ...
                self._request_result()  # ... and stop working on them
        self._written.pop(layer, None)
        self._edited.discard(layer)
        self._redrawn.discard(layer)
        self._stale_tables.discard(layer)
        if layer is self._shown:
            self._shown = None
            self.count_label.setText("No segmentation shown")
            if self._written:  # show (and export) the most recent result still open
                self._show_count(list(self._written)[-1])
        self._on_layers_changed()

    def _on_active_layer(self, event=None) -> None:
        """Selecting one of the widget's Labels layers shows its count, and Export writes its table."""
        layer = self.viewer.layers.selection.active
        if layer in self._written and layer is not self._shown:
            self._show_count(layer)

    @property
    def image_layer(self) -> Image | None:
        """The image layer chosen in the picker, if any."""
        return self.image_combo.currentData()

    # ---- model picker ---------------------------------------------------------------------

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) == CUSTOM_WEIGHTS_ITEM:
            path, _ = QFileDialog.getOpenFileName(self, "Open a napari-nucleiseg weights file", "",
                                                  "Weights (*.safetensors);;All files (*)")
            if not path or not self.set_weights_file(path):
                self.model_combo.setCurrentIndex(self._last_model_index)
        self._last_model_index = self.model_combo.currentIndex()

    def set_weights_file(self, path: str | Path) -> bool:
        """Use the weights file at ``path``, after checking it; on a bad file, say why and return False."""
        path = Path(path)
        try:
            metadata = read_metadata(path)
        except WeightsError as error:
            show_error(str(error))
            return False
        index = self.model_combo.findData(str(path))
        if index < 0:
            index = self.model_combo.count() - 1  # custom files go just above "Custom weights file..."
            self.model_combo.insertItem(index, path.name, str(path))
        self.model_combo.setItemData(index, f"{path}\n{_layers.describe_weights(metadata)}", Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentIndex(index)
        self._last_model_index = index
        return True

    def _weights_path(self) -> Path:
        source = self.model_combo.currentData()
        if source in BUNDLED_MODELS:
            return bundled_weights_path(source)
        if source is None:
            raise WeightsError("Choose a model or a weights file first.")
        return Path(source)

    def _on_model_changed(self, index: int | None = None) -> None:
        """Before any run, the chosen model's calibrated threshold and minimum size are the start.

        Once a result is shown the controls keep describing it; the new model's values are
        applied when its first run finishes (see :meth:`_on_run_returned`). The diameter controls
        are for models that record the diameter they were trained at.
        """
        try:
            metadata = read_metadata(self._weights_path())
        except WeightsError:
            metadata = {}
        trained = metadata.get("diameter")
        self.diameter_auto_check.setEnabled(trained is not None)
        self.diameter_spin.setEnabled(trained is not None and self._diameter is not None)
        self.diameter_auto_check.setToolTip(
            "Estimate the nuclei's diameter from the image" if trained is not None
            else "This model records no nucleus diameter: images are segmented at their own scale")
        if self._cache is not None:
            return
        if trained is not None and self._diameter is None:
            with signals_blocked(self.diameter_spin):  # a start for a diameter of one's own: the model's
                self.diameter_spin.setValue(float(trained))
        self._apply_calibration(metadata)

    def _apply_calibration(self, metadata: dict) -> None:
        self._show_settings(_Settings.calibrated(metadata, self.split_check.isChecked()))

    def _show_settings(self, settings: _Settings) -> None:
        """Set the threshold and min size controls (re-thresholding nothing); the min size is now the default."""
        with signals_blocked(self.threshold_slider), signals_blocked(self.min_size_spin):
            self.threshold_slider.setValue(settings.threshold)
            self.min_size_spin.setValue(settings.min_size)
        self._default_min_size = settings.min_size

    def _settings(self) -> _Settings:
        """The post-processing options the controls show."""
        return _Settings(self.threshold_slider.value(), self.min_size_spin.value(), self.split_check.isChecked())

    # ---- segmenting -----------------------------------------------------------------------

    def segment(self) -> None:
        """Segment the chosen image with the chosen model (in a worker thread unless synchronous)."""
        self._segment(self.image_layer)

    def _segment(self, image: Image | None) -> None:
        if self.running:
            return
        if image is None:
            others = [f"'{layer.name}' is a {type(layer).__name__} layer" for layer in self.viewer.layers]
            detail = f" ({', '.join(others[:2])})" if others else ""
            show_error(f"There is no image layer to segment{detail}; open an image first.")
            return
        try:
            if image.multiscale:
                raise ImageError(f"'{image.name}' is a multiscale image, which cannot be segmented; "
                                 "open its full-resolution level as an image.")
            leading, plane = _layers.stack_shape(image.data.shape, image.rgb)
            weights = self._weights_path()
            metadata = read_metadata(weights)
        except (ImageError, WeightsError) as error:
            show_error(str(error))
            return
        shortfall = _layers.memory_shortfall((*leading, *plane))
        if shortfall is not None:
            show_error(shortfall)
            return
        self._cancel.clear()
        self._plane = (0, int(np.prod(leading)))
        self._running_image = image
        # The worker makes the first labels too; with another model than the last run's, the
        # controls will take its calibrated values (see _on_run_returned).
        key = _layers.file_key(weights)
        new_model = self._cache is not None and self._cache.model_key != key
        split = self.split_check.isChecked()
        self._run_settings = _Settings.calibrated(metadata, split) if new_model else self._settings()
        options = self._run_settings.options()
        if new_model or self._run_settings.min_size == self._default_min_size:
            options["min_size"] = None  # the model's at the scale of this run, known once the diameter is
        self._run_diameter, self._rerun = self._diameter, False
        estimating = self._diameter is None and metadata.get("diameter") is not None
        self._set_running(True, "Estimating the nucleus diameter..." if estimating else "Loading the model...")
        run = partial(_layers.predict_stack, image.data, (*leading, *plane), weights,
                      model=self._model if self._model_key == key else None, diameter=self._diameter,
                      postprocess=options, on_tile=self._tiles.done.emit, cancelled=self._cancel.is_set)
        if self.run_synchronously:
            generator = run()
            try:
                while True:
                    self._on_plane_done(next(generator))
            except StopIteration as stop:
                self._on_run_returned(stop.value)
            self._on_run_finished()
            return
        self._worker = thread_worker(run, start_thread=False, ignore_errors=True)()
        self._worker.yielded.connect(self._on_plane_done)
        self._worker.returned.connect(self._on_run_returned)
        self._worker.finished.connect(self._on_run_finished)
        self._worker.start()

    @property
    def running(self) -> bool:
        """Whether a segmentation is running."""
        return self._running_image is not None

    def cancel(self) -> None:
        """Stop the run at the next plane or tile; the layers stay as they were."""
        self._cancel.set()
        self._rerun = False
        self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool, stage: str = "") -> None:
        self.segment_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.progress_bar.setVisible(running)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat(stage)

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

    def _on_run_finished(self) -> None:
        image = self._running_image
        self._worker = self._running_image = None
        self._set_running(False)
        if self._rerun and image in self.viewer.layers:
            self._segment(image)  # the diameter changed while the network ran

    def _on_run_returned(self, outcome: _layers.Prediction | _layers.Failure) -> None:
        image = self._running_image
        self._set_running(False)
        if isinstance(outcome, _layers.Failure):
            (show_info if outcome.cancelled else show_error)(outcome.message)
            return
        probabilities, model, key = outcome.probabilities, outcome.model, outcome.model_key
        settings = replace(self._run_settings, min_size=outcome.min_size)
        default_min_size = model.min_size_at(outcome.scale)
        if self._cache is not None and self._cache.model_key != key:
            self._show_settings(settings)  # another model than the last run's: its calibration, at this scale
        elif self.min_size_spin.value() == self._default_min_size:  # left at the default: it follows the scale
            with signals_blocked(self.min_size_spin):
                self.min_size_spin.setValue(default_min_size)
        self._default_min_size = default_min_size
        self._model, self._model_key = model, key
        self._cache = _Cache(image, probabilities, model.boundary_threshold, key, model.neck_ratio,
                             model.seed_min_size_at(outcome.scale), outcome.diameter, outcome.diameter_estimated,
                             outcome.scale)
        self._show_diameter(self._cache)
        self._write_result(self._cache, settings, outcome.labels)
        self._request_result()  # the controls moved during the run: their newest settings follow
        self._show_probabilities()

    # ---- nucleus diameter -----------------------------------------------------------------

    def set_diameter(self, diameter: float | None) -> bool:
        """Segment for nuclei ``diameter`` pixels across, or estimate it (None: "Auto").

        Once an image is segmented, a new diameter segments it again (the network sees the image
        at another scale). A diameter that is not a positive number of pixels, or is larger than
        the image, is refused with a sentence and changes nothing; returns whether it was taken.
        """
        image = self._cache.image if self._cache is not None else self.image_layer
        plane = None
        if image is not None and not image.multiscale:
            with suppress(ImageError):  # an image that cannot be segmented says so when it is tried
                plane = _layers.stack_shape(image.data.shape, image.rgb)[1]
        try:
            check_diameter(diameter, plane)
        except ValueError as error:
            show_error(str(error))
            self._show_diameter_setting()
            return False
        diameter = None if diameter is None else float(diameter)
        if diameter == self._diameter:
            return True
        self._diameter = diameter
        self._show_diameter_setting()
        if self.running:
            self._rerun = self._diameter != self._run_diameter
        elif self._cache is not None and self._cache.image in self.viewer.layers:
            self._segment(self._cache.image)
        return True

    def _on_diameter_auto_toggled(self, auto: bool) -> None:
        if auto:
            self.set_diameter(None)
        else:
            # The box holds the diameter of the result shown: it stands, now as the user's own
            # (nothing runs again), and is the start for one of theirs.
            self._diameter = self.diameter_spin.value() or None
            self._show_diameter_setting()

    def _on_diameter_entered(self, value: float) -> None:
        if not self.diameter_auto_check.isChecked():
            self.set_diameter(value)

    def _show_diameter_setting(self) -> None:
        """The Auto box and the number show the diameter asked for (a refused number is undone)."""
        auto = self._diameter is None
        with signals_blocked(self.diameter_auto_check), signals_blocked(self.diameter_spin):
            self.diameter_auto_check.setChecked(auto)
            if not auto:
                self.diameter_spin.setValue(self._diameter)
        self.diameter_spin.setEnabled(not auto and self.diameter_auto_check.isEnabled())

    def _show_diameter(self, cache: _Cache) -> None:
        """After a run: "Auto" says what it estimated, and the number box holds it."""
        text = "Auto"
        if cache.diameter_estimated:
            text = f"Auto (estimated {cache.diameter:.1f} px)"
            if self._diameter is None:  # not while the user has since entered a number of their own
                with signals_blocked(self.diameter_spin):
                    self.diameter_spin.setValue(cache.diameter)
        elif self._run_diameter is None and self._model.diameter is not None:
            text = "Auto (no estimate: not resized)"
        self.diameter_auto_check.setText(text)

    # ---- post-processing and output layers --------------------------------------------------

    def _on_postprocess_changed(self, *_) -> None:
        self._request_result()

    @property
    def postprocessing(self) -> bool:
        """Whether a re-threshold is running in a worker (its result not yet shown)."""
        return bool(self._jobs)

    def _request_result(self) -> None:
        """Bring the output up to date with the controls; the newest settings win.

        Small images are post-processed here and now. Larger ones go to a worker; while it runs,
        further changes are only noted (the controls hold them) and, once it finishes, the newest
        settings are computed next. A worker's single plane finishes and is shown (the slider
        passed there); a stack, or work for a cache since replaced, stops at its next plane.
        """
        cache = self._cache
        up_to_date = cache is None or self._closed or self._result_key == (cache, self._settings())
        if self._jobs:
            (job,) = self._jobs
            stack = len(job.cache.probabilities.shape) > 3
            if job.cache is not cache or (stack and job.settings != self._settings()):
                job.worker.quit()
            return  # _on_postprocess_finished comes back here
        if up_to_date:
            return
        if self.run_synchronously or cache.probabilities.pixels <= SYNC_POSTPROCESS_PIXELS:
            self._update_result()
            return
        settings = self._settings()
        worker = thread_worker(_layers.postprocess_stack, start_thread=False)(
            cache.probabilities, boundary_threshold=cache.boundary_threshold, neck_ratio=cache.neck_ratio,
            seed_min_size=cache.seed_min_size, **settings.options())
        self._jobs.append(_Job(worker, cache, settings))
        worker.returned.connect(self._on_postprocess_returned)
        worker.finished.connect(self._on_postprocess_finished)
        worker.start()

    def closeEvent(self, event) -> None:
        """Stop the re-threshold under way and wait for it, so that no worker outlives the widget.

        (A script that ends with a worker still running would crash as Python exits.) Closing
        its dock in napari does not close the widget: napari takes it out of the window, and
        destroying it later cancels a run (see ``__init__``).
        """
        self._closed = True
        for job in self._jobs:
            job.worker.quit()
            deadline = time.monotonic() + CLOSE_WAIT_S
            while job.worker.is_running and time.monotonic() < deadline:
                time.sleep(0.01)
        super().closeEvent(event)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._closed:
            self._closed = False
            self._request_result()

    def _on_postprocess_returned(self, outcome: np.ndarray | _layers.Failure) -> None:
        (job,) = self._jobs
        self._write_result(job.cache, job.settings, outcome)

    def _on_postprocess_finished(self) -> None:
        self._jobs.clear()
        self._request_result()

    def _update_result(self) -> None:
        """Post-process the cached probabilities with the controls' settings here and now, and write the result."""
        cache, settings = self._cache, self._settings()
        steps = _layers.postprocess_stack(cache.probabilities, boundary_threshold=cache.boundary_threshold,
                                          neck_ratio=cache.neck_ratio, seed_min_size=cache.seed_min_size,
                                          **settings.options())
        self._write_result(cache, settings, _layers.run_to_end(steps))

    def _write_result(self, cache: _Cache, settings: _Settings, outcome: np.ndarray | _layers.Failure) -> None:
        """Write labels made from ``cache`` with ``settings``, with their count and (soon) table.

        A result for a cache since replaced is dropped. Whether the output layer was edited by
        hand is checked now, as the result lands: labels computed before an edit never replace it.
        """
        if cache is not self._cache:
            return
        self._result_key = (cache, settings)
        if isinstance(outcome, _layers.Failure):
            show_error(outcome.message)
            return
        labels = outcome
        layer = self._outputs.get(cache.image.unique_id)
        if layer is None or layer not in self.viewer.layers:
            layer = self._add_labels_layer(cache.image, labels)
        elif self._written[layer].checksum != _layers.checksum(layer.data):
            edited = layer
            layer = self._add_labels_layer(cache.image, labels)
            show_info(f"'{edited.name}' was edited by hand and is kept; the new result is in '{layer.name}'.")
        else:
            self._write(layer, labels)
        self._outputs[cache.image.unique_id] = layer
        layer.metadata.update(diameter=cache.diameter, diameter_estimated=cache.diameter_estimated, scale=cache.scale)
        # fresh labels are numbered 1..N, and the widget knows their checksum
        self._mark_changed(layer, count=int(labels.max()), checksum=self._written[layer].checksum)

    def _add_labels_layer(self, image: Image, labels: np.ndarray) -> Labels:
        taken = {layer.name for layer in self.viewer.layers}
        name = _layers.unique_name(f"{image.name} nuclei", taken)
        with self._self_writing():
            layer = self.viewer.add_labels(labels, name=name, **_placement(image))
        self._written[layer] = _Output(image, _layers.checksum(labels))
        layer.events.paint.connect(self._on_hand_edit)
        layer.events.data.connect(self._on_hand_edit)
        layer.events.set_data.connect(self._on_redrawn)
        return layer

    def _write(self, layer: Labels, labels: np.ndarray) -> None:
        with self._self_writing():
            layer.data = labels
        self._written[layer].checksum = _layers.checksum(labels)

    @contextmanager
    def _self_writing(self):
        """Layer events fired inside are the widget's own doing: not hand edits, not new images."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def _on_hand_edit(self, event) -> None:
        # napari emits `paint` just before it writes the pixels: recount once control returns.
        if not self._writing:
            self._edited.add(event.source)
            self._count_timer.start()

    def _on_redrawn(self, event) -> None:
        # Undo and redo change the pixels and redraw the layer without a paint event; so do
        # moving through a stack's planes and other redraws, which change nothing: check which.
        if not self._writing:
            self._redrawn.add(event.source)
            self._redraw_timer.start()

    def _check_redrawn(self) -> None:
        while self._redrawn:
            layer = self._redrawn.pop()
            output = self._written.get(layer)
            if output is not None and _layers.checksum(layer.data) != output.counted:
                self._mark_changed(layer)

    def _recount_edited(self) -> None:
        while self._edited:
            layer = self._edited.pop()
            if layer in self._written:
                self._mark_changed(layer)

    def _mark_changed(self, layer: Labels, count: int | None = None, checksum: int | None = None) -> None:
        """Show the layer's count at once (a large layer's when a worker has it); measure its table
        when the changes pause."""
        if count is None and layer.data.size > COUNT_IN_WORKER_PIXELS:
            self._count_in_worker(layer)
        else:
            self._written[layer].counted = _layers.checksum(layer.data) if checksum is None else checksum
            self._show_count(layer, count)
        self._stale_tables.add(layer)
        self._table_timer.start()

    def _count_in_worker(self, layer: Labels) -> None:
        self._shown = layer
        self.count_label.setText(f"Counting the nuclei in '{layer.name}'...")
        self._count_requests += 1
        # The live array, not a copy (a copy takes as long as the count): if the brush moves on
        # meanwhile, that stroke asks for a newer count, and only the newest is shown.
        worker = thread_worker(_count_and_fingerprint, start_thread=False)(layer.data)
        worker.returned.connect(partial(self._on_counted, layer, self._count_requests))
        worker.start()

    def _on_counted(self, layer: Labels, request: int, counted: tuple[int, int]) -> None:
        output = self._written.get(layer)
        if output is None or self._closed:
            return
        count, output.counted = counted
        if request == self._count_requests and layer is self._shown:
            self._show_count(layer, count)

    def _show_count(self, layer: Labels, count: int | None = None) -> None:
        if count is None:
            if layer.data.size > COUNT_IN_WORKER_PIXELS:
                self._count_in_worker(layer)
                return
            count = _layers.count_labels(layer.data)
        self._shown = layer
        text = f"{count} {'nucleus' if count == 1 else 'nuclei'} in '{layer.name}'"
        planes = int(np.prod(layer.data.shape[:-2]))
        if planes > 1:  # each plane is segmented on its own: a nucleus in 5 z-planes counts 5 times
            text += f", summed over its {planes} planes"
        self.count_label.setText(text)

    def _refresh_stale_tables(self) -> None:
        """Measure the tables of changed layers in workers: a large image's table takes seconds.

        Not while a re-threshold runs (the slider is moving: the table would be stale before it
        is done, and it would hold up the re-threshold), and one table of a layer at a time.
        """
        busy = bool(self._jobs)
        for layer in list(self._stale_tables):
            if layer not in self._written:  # removed from the viewer meanwhile
                self._stale_tables.discard(layer)
            elif not busy and layer not in self._measuring:
                self._stale_tables.discard(layer)
                labels = np.array(layer.data)  # a snapshot: the user may paint on while it is measured
                worker = thread_worker(_layers.nuclei_table, start_thread=False)(labels, *self._table_image(layer))
                worker.returned.connect(partial(_set_features, layer, self._written[layer], _layers.checksum(labels)))
                measuring = self._measuring  # not via self: the widget may be closed first
                measuring.add(layer)
                worker.finished.connect(partial(measuring.discard, layer))
                worker.start()
        if self._stale_tables:
            self._table_timer.start()  # try again in a moment

    def _table_image(self, layer: Labels) -> tuple[Any, bool, _layers.PixelSize | None]:
        """The image that mean intensities come from (None if it was swapped for one of another shape),
        and the physical pixel size, when the layer has one."""
        pixel = _pixel_size(layer)
        if layer not in self._written:  # a Labels layer of the user's own
            return None, False, pixel
        source = self._written[layer].image
        same_shape = source.data.shape[: layer.ndim] == layer.data.shape
        return (source.data if same_shape else None), source.rgb, pixel

    def _show_probabilities(self, *_) -> None:
        cache = self._cache
        if cache is None or not self.probability_check.isChecked():
            return
        nucleus = cache.probabilities.nucleus_image()
        layer = self._probability_layers.get(cache.image.unique_id)
        if layer is not None and layer in self.viewer.layers:
            layer.data = nucleus
            return
        with self._self_writing():  # not an image the user opened: the picker keeps its choice
            self._probability_layers[cache.image.unique_id] = self.viewer.add_image(
                nucleus, name=f"{cache.image.name} nucleus probability", colormap="magma", blending="additive",
                opacity=0.6, contrast_limits=(0, 1), **_placement(cache.image),
            )

    # ---- export ---------------------------------------------------------------------------

    @property
    def labels_layer(self) -> Labels | None:
        """The Labels layer whose count the widget shows: the last one written or edited."""
        return self._shown

    def _on_export_clicked(self) -> None:
        layer = self.labels_layer
        if layer is None:
            show_warning("Segment an image first; there is no table to export.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export the nuclei table", f"{layer.name}.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path, layer)

    def export_csv(self, path: str | Path, layer: Labels | None = None) -> bool:
        """Write the per-nucleus table of ``layer`` (default: :attr:`labels_layer`) to ``path``."""
        layer = layer or self.labels_layer
        if layer is None:
            show_warning("Segment an image first; there is no table to export.")
            return False
        output = self._written.get(layer)
        current = _layers.checksum(layer.data)
        if output is None or output.measured != current:  # not measured since the last edit: measure now
            self._stale_tables.discard(layer)
            layer.features = _layers.nuclei_table(np.asarray(layer.data), *self._table_image(layer))
            if output is not None:
                output.measured = current
        path = Path(path)
        # Written beside the target and then renamed over it: a write that fails half-way (a full
        # disk) leaves an existing file of that name as it was.
        partial_path = path.with_name(f".{path.name}.partial")
        try:
            if not path.parent.is_dir():
                raise FileNotFoundError(0, f"the folder {path.parent} does not exist")
            if path.is_file() and not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
                # The rename below would replace it without asking.
                raise PermissionError(0, "the file is read-only")
            layer.features.drop(columns="index", errors="ignore").to_csv(partial_path, index=False)
            partial_path.replace(path)
        except OSError as error:
            with suppress(OSError):
                partial_path.unlink()
            show_error(f"Cannot write {path}: {error.strerror or error}.")
            return False
        show_info(f"Saved {len(layer.features)} nuclei to {path}.")
        return True


def _stop_workers(cancel: threading.Event, jobs: list[_Job], *_) -> None:
    """Cancel the run and quit the re-threshold of a widget that is being destroyed."""
    cancel.set()
    for job in jobs:
        job.worker.quit()


def _placement(image: Image) -> dict[str, Any]:
    """Where ``image`` lies in the world (pixel size and its unit, offset, rotation, shear, affine):
    results lie on it."""
    return {"scale": image.scale, "translate": image.translate, "rotate": image.rotate, "shear": image.shear,
            "affine": image.affine, "units": image.units}


def _pixel_size(layer: Any) -> _layers.PixelSize | None:
    """The layer's pixel size in y and x with their unit, unless they are plain pixels (or differ in unit)."""
    units = [f"{unit:~}" for unit in getattr(layer, "units", ())[-2:]]
    if len(units) != 2 or units[0] != units[1] or units[0] in ("px", "pixel"):
        return None
    unit = units[0].replace("µ", "u").replace(" ", "")
    scale, translate = layer.scale[-2:], layer.translate[-2:]
    return _layers.PixelSize(float(scale[0]), float(scale[1]), unit, (float(translate[0]), float(translate[1])))


def _count_and_fingerprint(labels: np.ndarray) -> tuple[int, int]:
    return _layers.count_labels(labels), _layers.checksum(labels)


def _set_features(layer: Labels, output: _Output, measured: int, table) -> None:
    """Give ``layer`` the table measured on labels of checksum ``measured``, unless they changed since."""
    if _layers.checksum(layer.data) == measured:
        layer.features = table
        output.measured = measured
