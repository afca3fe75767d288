"""The dock widget: pick an image and a model, segment, tune the result, correct it by hand, export.

Controls and wiring only. The parts it wires together:

- a :class:`~._run.SegmentationRun` runs the pipeline (:mod:`.pipeline`) in a worker, with progress
  and Cancel, and keeps the model; a multiscale image, or a plane too large to hold whole, it segments
  block by block into an OME-Zarr store instead, shown as one lazy multiscale layer (:mod:`._large_layer`);
- a :class:`~._rethreshold.Rethresholder` re-labels the probability maps of a run as the threshold,
  minimum size and boxes change (the network does not run again; a new nucleus diameter runs it again);
- a :class:`~._target.SettingsTarget` says which result layer those controls act on (the last one
  written, or the one selected), keeps each result's maps within a memory budget, and shows the
  3-D box for Z stacks;
- :class:`~._outputs.OutputLayers` writes the Labels layers, sees hand edits, and keeps each
  layer's count and table;
- a :class:`~._finetune_panel.FineTunePanel` (the collapsible Fine-tune section) teaches the model
  chosen from corrected labels, and :class:`~._model_menu.UserModelMenu` renames or deletes the
  models the user made.

Nothing the user made is overwritten: the widget updates its Labels layer in place only while
the layer holds exactly what the widget last wrote; once the user has edited it by hand, a new
result goes to a new layer.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from functools import partial
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._controls import ChannelPicker, CountLabel, DiameterControl, ImagePicker, ModelPicker, PostprocessControls
from ._finetune_panel import FineTunePanel
from ._large_layer import LargeFinished, layer_for, store_path
from ._model_menu import UserModelMenu
from ._outputs import (
    OutputLayers,
    export_csv,
    labels_axis_labels,
    placement,
    plane_columns,
    table_to_export,
    write_exported,
)
from ._rethreshold import Cache, Rethresholder
from ._run import PROGRESS_STEPS, Failure, Finished, Refused, SegmentationRun, check_runnable
from ._table_view import NucleiTable
from ._target import SettingsTarget, TargetLabel
from .channels import reads_colour, take_channel
from .errors import WeightsError
from .scale import resize_shortfall, smoothing_note
from .settings import PostprocessSettings
from .stains import colour_note

#: How the widget's note on a fluorescence overlay says to segment one channel.
OVERLAY_CHOOSE_CHANNEL = "choose it under Channel"
BROWN_CHOOSE = "tick Brown nuclei and segment again"


#: Widgets whose dock was closed, kept hidden in their viewer's window (which owns them) until napari opens
#: the widget again: weak references, so that a window closed meanwhile takes its widget with it.
_CLOSED: list[weakref.ref] = []


class NucleiSegDock(QWidget):
    """What napari calls to open the dock widget (napari.yaml): the viewer's widget whose dock was closed,
    with its results, their probabilities and its settings, else a new :class:`NucleiSegWidget`.

    QA: closed with the dock's close button and opened again from the menu, a new widget knew none of the
    results: the threshold no longer moved them, and their count and table were gone.

    napari's menus take only a QWidget class (or a magicgui factory or function, given no viewer), and pass
    the viewer to what its ``__init__`` asks for by name; ``__new__`` returns the widget, so ``__init__``
    never runs.
    """

    def __new__(cls, napari_viewer):
        return _closed_widget_of(napari_viewer) or NucleiSegWidget(napari_viewer)

    def __init__(self, napari_viewer):  # pragma: no cover - never called (see the class's docstring)
        raise AssertionError("NucleiSegDock() returns a NucleiSegWidget")


def _closed_widget_of(viewer) -> NucleiSegWidget | None:
    """The kept widget of ``viewer`` (napari hands each widget a proxy of it), taken off :data:`_CLOSED`."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    for ref in list(_CLOSED):
        widget = ref()
        if widget is None or not _alive(widget):
            _CLOSED.remove(ref)
        elif getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer:
            _CLOSED.remove(ref)
            return widget
    return None


def _alive(widget: QWidget) -> bool:
    """Whether Qt has not deleted ``widget`` (with its window)."""
    try:
        widget.isVisible()
    except RuntimeError:
        return False
    return True


class NucleiSegWidget(QWidget):
    """Dock widget of napari-nucleiseg, for ``napari_viewer``: its image layers are segmented, and
    the results go to it."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._run_diameter: float | None = None  # the diameter the run under way was asked for (None: Auto)
        self._run_data = None  # the image data the run under way reads
        self._rerun = False  # the diameter changed during a run: run again when it ends
        self._run_switches = (False, False)  # the run's Average 4 flips and Brown nuclei (a rerun keeps them)
        self._run_channel: tuple[int, int] | None = None  # (axis, index) of the channel the run segments
        self._estimated_image: int | None = None  # the image (unique id) the diameter line speaks of
        self._estimate_check = QTimer(self, singleShot=True, interval=0)
        self._estimate_check.timeout.connect(self._forget_estimate_of_another_image)
        self._dock: weakref.ref | None = None  # the widget the widget was last put in (napari's dock)
        self.outputs = OutputLayers(self.viewer, self._show_count, busy=lambda: self.rethresholder.running,
                                    parent=self)
        self._build_ui()
        self.run = SegmentationRun(self.progress_bar, self._on_run_returned, self._on_run_finished, parent=self)
        self.rethresholder = Rethresholder(self.postprocess_controls.values, self._on_result, parent=self)
        self.target = SettingsTarget(self.viewer, self.outputs, self.rethresholder, self.postprocess_controls,
                                     self.target_label, parent=self)
        self.postprocess_controls.changed.connect(self.target.controls_changed)
        self.channel_combo.currentIndexChanged.connect(self._on_image_changed)  # the 3-D box follows the channel
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        # Axis labels named after the image was opened (z, c): the Channel picker and the 3-D box follow
        self.viewer.dims.events.axis_labels.connect(self._on_image_changed)
        # Closing the widget mid-run stops the workers (not via self: it is going).
        self.destroyed.connect(partial(_stop_workers, self.run.cancel_event, self.rethresholder.jobs))
        self._on_model_changed()
        self._on_image_changed()

    # ---- for tests and scripts ------------------------------------------------------------

    @property
    def run_synchronously(self) -> bool:
        """Run the network and the post-processing in the calling thread instead of workers."""
        return self.run.synchronous

    @run_synchronously.setter
    def run_synchronously(self, value: bool) -> None:
        self.run.synchronous = self.rethresholder.synchronous = bool(value)

    predict = property(lambda self: self.run.predict, lambda self, predict: setattr(self.run, "predict", predict),
                       doc="The network's probabilities for a plane (:data:`~.pipeline.Predict`); None: the real one.")

    # ---- building the UI ------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.image_combo = ImagePicker(self.viewer, adding=lambda: self.outputs.writing)
        self.channel_combo = ChannelPicker(self.viewer)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.model_combo = ModelPicker(error=lambda message: show_error(message))
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)

        self.segment_button = QPushButton("Segment", toolTip="Run the network on the image")
        self.cancel_button = QPushButton("Cancel", enabled=False, toolTip="Stop the run; no layer is changed")
        self.progress_bar = QProgressBar(maximum=PROGRESS_STEPS, textVisible=True, visible=False)
        self.probability_check = QCheckBox("Show probability map", toolTip="Add the map the threshold cuts as a layer")

        self.postprocess_controls = PostprocessControls(self)
        controls = self.postprocess_controls
        self.threshold_slider, self.min_size_spin = controls.threshold_slider, controls.min_size_spin
        self.split_check, self.exclude_border_check = controls.split_check, controls.exclude_border_check
        self.volumes_check = controls.volumes_check
        self.target_label = TargetLabel()
        self.diameter_control = DiameterControl()
        self.diameter_auto_check, self.diameter_spin = self.diameter_control.auto_check, self.diameter_control.spin
        self.augment_check = QCheckBox(
            "Average 4 flips (4x slower)",
            toolTip="Test-time augmentation: the network sees the image as it is and flipped three ways, and the "
                    "four maps are averaged; a little more accurate (about +0.01 on DSB2018 val), four "
                    "times the network's time. Takes effect at the next Segment (a new diameter redoes a result "
                    "as it was made).")
        self.brown_check = QCheckBox(
            "Brown nuclei (IHC: Ki-67, ER, PR, p53)",
            toolTip="For immunohistochemistry whose marker stains nuclei: the brown (DAB) of a brightfield "
                    "picture is read as hematoxylin, so brown nuclei are found as blue ones are; the models "
                    "learnt nuclei from hematoxylin and miss most brown ones.\n\nLeave it off for markers of "
                    "membranes or cytoplasm (HER2, CD3, cytokeratin): their brown would be read as nuclei. "
                    "Gray, fluorescence and H&E images without brown are read as they are; yellow or orange "
                    "stains count as brown. Takes effect at the next Segment (a new diameter redoes a result "
                    "as it was made).")
        self.count_label = CountLabel("No segmentation yet")
        self.table_view = NucleiTable(self.viewer)
        self.table_view.headers = lambda layer: plane_columns(labels_axis_labels(self.viewer, layer),
                                                              set(layer.features.columns))
        self.export_button = QPushButton("Export CSV...", toolTip="Save the per-nucleus table of the result")
        self.model_menu, self.finetune_panel = _fine_tuning_controls(self)

        _lay_out(self)

        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.probability_check.toggled.connect(self._show_probabilities)
        self.diameter_control.asked.connect(self.set_diameter)
        controls.reset_button.clicked.connect(self.reset_settings)
        self.export_button.clicked.connect(self._on_export_clicked)

    # ---- image layer picker ---------------------------------------------------------------

    def _show_count(self, layer: Labels | None, text: str) -> None:
        """The count line and the table, of the result ``layer`` (None: none shown)."""
        self.count_label.setText(text + self.channel_combo.hint(self.outputs.record(layer)))
        self.table_view.show_layer(layer)

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        self.table_view.forget(layer)
        if layer is self.run.image and not self.run.in_blocks:
            self.cancel()  # its result would have nowhere to go (a store keeps a run in blocks')
        self.outputs.removed(layer)
        self.target.removed(layer)  # frees the maps of a result or image taken out
        self.image_combo.removed(layer)

    def _show_result_diameter(self) -> None:
        """The diameter controls show the diameter of the result the settings act on (after a run cancelled: QA
        typed 16 px, cancelled, and the box said 16 px beside a result made at Auto's 26.5 px)."""
        cache = self.rethresholder.cache
        if cache is None:
            return
        auto = cache.diameter_estimated or cache.diameter is None
        self.diameter_control.take(None if auto else cache.diameter)
        self.diameter_control.show_used(cache.diameter, cache.diameter_estimated, cache.diameter is not None, auto)

    def _on_image_changed(self, *_) -> None:
        self.channel_combo.follow(self.image_layer)
        self.target.offer(self.image_layer, self.channel_combo.channel)
        # Once the picker has settled (it rebuilds its list as layers come and go, passing other images):
        self._estimate_check.start()

    def _forget_estimate_of_another_image(self) -> None:
        """"Auto (estimated ...)" is said of the image it was estimated on; not beside another image."""
        if self.image_layer is not None and self.image_layer.unique_id != self._estimated_image:
            self.diameter_control.forget_estimate()

    @property
    def image_layer(self) -> Image | None:
        """The image layer chosen in the picker, if any."""
        return self.image_combo.layer

    # ---- model picker ---------------------------------------------------------------------

    def set_weights_file(self, path: str | Path) -> bool:
        """Use the weights file at ``path``, after checking it; on a bad file, say why and return False."""
        return self.model_combo.set_weights_file(path)

    def _on_model_changed(self, index: int | None = None) -> None:
        """The chosen model's calibrated settings show at once (the next run starts from them; the result
        shown is not re-thresholded). They are not the settings of a result of another model: the controls
        then let go of it, so that a nudge of the slider does not re-label it with them (its min size of
        100 px took 108 HRNet nuclei down to 73). The diameter controls are for models that record a diameter."""
        metadata = self.model_combo.metadata()
        cache = self.rethresholder.cache
        if cache is not None and cache.model_key[0] != self._chosen_weights():
            self._let_go_of_result()
        self.diameter_control.for_model(metadata.get("diameter"), self.rethresholder.cache is None)
        self.postprocess_controls.show(PostprocessSettings.from_metadata(metadata))
        if metadata.get("brown_nuclei") is True and not self.brown_check.isChecked():
            self.brown_check.setChecked(True)  # fine-tuned on brown read as hematoxylin: it sees images so
            show_info(f"'{metadata.get('name') or self.model_combo.currentText()}' learnt from images whose brown "
                      "was read as hematoxylin: Brown nuclei is ticked.")

    def _let_go_of_result(self) -> None:
        """The controls act on no result (they show another model's settings, for the next run). A result
        layer still selected is deselected: selecting it again is what makes it their target (a click
        on the layer selected already changes nothing, so the QA user saw it selected and unchanged)."""
        self.target.release()
        self.target.offer(self.image_layer, self.channel_combo.channel)
        if self.target.result(self.viewer.layers.selection.active) is not None:
            self.viewer.layers.selection.active = None

    def _chosen_weights(self) -> str | None:
        """The path of the weights file chosen under Model (None if it cannot be found)."""
        try:
            return str(self.model_combo.weights_path())
        except WeightsError:
            return None

    def reset_settings(self) -> None:
        """The calibrated settings of the model that made the result the controls act on (its min size at
        that result's scale), applied; with no such result, those of the model chosen."""
        cache = self.rethresholder.cache
        if cache is not None and cache.model_settings is not None:
            self.postprocess_controls.reset(cache.model_settings)
            return
        settings = PostprocessSettings.from_metadata(self.model_combo.metadata())
        self.postprocess_controls.reset(settings.at_scale(cache.scale) if cache is not None else settings)

    # ---- segmenting -----------------------------------------------------------------------

    def segment(self) -> None:
        """Segment the chosen image with the chosen model (in a worker thread unless synchronous)."""
        self._segment(self.image_layer)

    @property
    def running(self) -> bool:
        """Whether a segmentation is running."""
        return self.run.running

    def _segment(self, image: Image | None, switches: tuple[bool, bool] | None = None) -> None:
        """Segment ``image``; ``switches``, (Average 4 flips, Brown nuclei), of the result a rerun at another
        diameter redoes (None: the check boxes')."""
        if self.running:
            return
        cache = self.rethresholder.cache
        if image is not self.image_layer:  # a rerun at another diameter: the channel of the result
            self._run_channel = cache.channel if cache is not None and cache.image is image else None
        else:
            self._on_image_changed()  # its shape or axis labels may have changed since it was picked
            self._run_channel = self.channel_combo.channel
            if (default := self.channel_combo.unchosen_default()) is not None and image is not None:
                show_info(f"'{image.name}': {default}")
        try:
            planes, weights, metadata, in_blocks = check_runnable(image, self.viewer.layers,
                                                                  self.model_combo.weights_path, self._run_channel)
        except Refused as refusal:
            show_error(self.model_combo.refuse(str(refusal), refusal.weights))  # a bad file leaves the list
            return
        # The worker makes the first labels too, with the controls' settings; a min size left at its
        # default is the model's at the scale of this run, known once the diameter is.
        chosen = self.target.settings_for_run(image, self._run_channel)
        self._run_diameter, self._rerun = self.diameter_control.diameter, False
        self._run_data = image.data  # (new data given to the layer during the run: its result is not shown)
        if switches is None:
            switches = (self.augment_check.isChecked(), self.brown_check.isChecked())
        self._run_switches = augment, brown_nuclei = switches
        estimating = self._run_diameter is None and metadata.get("diameter") is not None
        self._set_running(True)
        stage = "Estimating the nucleus diameter..." if estimating else "Loading the model..."
        if in_blocks:  # multiscale, or one plane too large to hold whole: into a store in the cache folder
            self.run.start_in_blocks(image, weights, store_path(image.name), settings=chosen,
                                     diameter=self._run_diameter, channel=self._run_channel, stage=stage,
                                     augment=augment, brown_nuclei=brown_nuclei)
        else:
            self.run.start(image, planes, weights, settings=chosen, diameter=self._run_diameter,
                           channel=self._run_channel, stage=stage, augment=augment, brown_nuclei=brown_nuclei)

    def cancel(self) -> None:
        """Stop the run at the next plane or tile; the layers stay as they were."""
        self.run.cancel()
        self._rerun = False
        self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        self.segment_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_run_finished(self, image: Image | None) -> None:
        self._set_running(False)
        if self._rerun and image is not None and image in self.viewer.layers:
            self._segment(image, self._run_switches)  # the diameter changed while the network ran

    def _on_run_returned(self, outcome: Finished | LargeFinished | Failure) -> None:
        image = self.run.image
        run_data, self._run_data = self._run_data, None  # (the image's data is not held after the run)
        self._set_running(False)
        if image is not None and image not in self.viewer.layers and not isinstance(outcome, LargeFinished):
            show_info(f"'{image.name}' was taken out during the run, so the run was stopped; no layer was added.")
            return
        if isinstance(outcome, Finished) and image is not None and image.data is not run_data:
            show_info(f"'{image.name}' was given new data during the run, so no layer was added (its nuclei would "
                      "be those of the data it had); press Segment to segment the new data.")
            return
        if isinstance(outcome, Failure):
            (show_info if outcome.cancelled else show_error)(self.model_combo.refuse(outcome.message, outcome.weights))
            if outcome.cancelled:
                self._show_result_diameter()
            return
        model = outcome.model
        previous = self.rethresholder.cache
        new_model = previous is not None and previous.model_key != outcome.model_key  # its calibration, at this scale
        run = outcome.result if isinstance(outcome, LargeFinished) else outcome.planes
        # Another model chosen during the run: the controls show its settings, for the next run; the result
        # keeps those it was made with (QA: UNet++'s came out at UNet's threshold, with UNet++'s min size).
        chosen_since = self._chosen_weights() != outcome.model_key[0]
        if not chosen_since:
            self.postprocess_controls.after_run(run.settings, model.settings_at(run.scale).min_size, new_model)
        self.diameter_control.show_used(run.diameter, run.diameter_estimated, model.diameter is not None,
                                        self._run_diameter is None)
        self._estimated_image = image.unique_id
        shortfall = resize_shortfall(run.diameter, run.scale, model.diameter)
        if shortfall is not None:
            show_info(shortfall)
        smoothed = smoothing_note(run.noise_smoothing)
        if smoothed is not None:
            show_info(f"'{image.name}': {smoothed}")
        if run.diameter is None and self._run_diameter is None and model.diameter is not None:  # Auto sized nothing
            show_info(f"'{image.name}': No nucleus size could be estimated (it looks empty, or too noisy to size), so "
                      "it was segmented at its own scale; if it holds nuclei, type their diameter beside Auto.")
        if isinstance(outcome, LargeFinished):
            self._show_in_blocks(image, outcome)
        else:
            cache = Cache.of_run(image, run, outcome.model_key, self._run_channel, model.name,
                                 model.settings_at(run.scale))
            self.rethresholder.start_from(cache, run.settings, run.labels, follow=not chosen_since)
            self._show_probabilities()
        if chosen_since:
            self._let_go_of_result()
        if reads_colour(image.rgb, self._run_channel):  # (not one colour of it, read as gray)
            data = image.data[0] if image.multiscale else image.data
            if self._run_channel is not None:  # a channel of colour planes: what the run read
                data = take_channel(data, *self._run_channel)
            plane = data[(0,) * (data.ndim - 3)] if data.ndim > 3 else data
            # (reads a sample of a lazy plane and a few windows of it, not all of it)
            note = colour_note(plane, run.brown_nuclei, OVERLAY_CHOOSE_CHANNEL, BROWN_CHOOSE)
            if note is not None:
                show_info(f"'{image.name}': {note}")

    def _show_in_blocks(self, image: Image, outcome: LargeFinished) -> None:
        """The result of ``image`` segmented block by block: one lazy multiscale layer of its store's levels,
        with the run's table; the settings' target, which they cannot re-label. An image taken out during
        the run gets no layer; its labels stay in the store."""
        if image not in self.viewer.layers:
            show_info(f"'{image.name}' was taken out during the run; its labels are in {outcome.store}.")
            return
        channel = self._run_channel
        layer = self.outputs.write_lazy(image, layer_for(outcome, channel, placement(image, channel)),
                                        channel=channel, model=outcome.model.name)
        self.target.write_in_blocks(layer, outcome.result.settings, image, channel)

    # ---- nucleus diameter -----------------------------------------------------------------

    def set_diameter(self, diameter: float | None) -> bool:
        """Segment for nuclei ``diameter`` pixels across, or estimate it (None: "Auto"); once an image is
        segmented, a new diameter segments it again (the network sees it at another scale). A diameter
        that is not a positive number of pixels, or is larger than the image, is refused with a sentence
        and changes nothing; returns whether it was taken."""
        cache = self.rethresholder.cache
        new = self.diameter_control.ask(diameter, cache.image if cache is not None else self.image_layer, show_error)
        if new and self.running:
            self._rerun = self.diameter_control.diameter != self._run_diameter
        elif new and cache is not None and cache.image in self.viewer.layers:
            self._segment(cache.image, (cache.augmented, cache.brown_nuclei))
        return new is not None

    # ---- results --------------------------------------------------------------------------

    @property
    def postprocessing(self) -> bool:
        """Whether a re-threshold is running in a worker (its result not yet shown)."""
        return self.rethresholder.running

    def _on_result(self, cache: Cache, settings: PostprocessSettings, outcome: np.ndarray | Failure) -> None:
        """Write labels made from ``cache`` with ``settings``, with their count and (soon) table.

        Whether the output layer was edited by hand is checked now, as the result lands: labels
        computed before an edit never replace it.
        """
        if isinstance(outcome, Failure):
            show_error(outcome.message)
            return
        known = set(self.outputs.records)
        layer, edited = self.target.write(cache, settings, outcome)
        hidden = self.outputs.hide_other_results(layer) if layer.unique_id not in known else []
        if hidden:
            earlier = "an earlier result" if len(hidden) == 1 else "earlier results"
            names = ", ".join(repr(name) for name in hidden)
            show_info(f"Hidden: {names} ({earlier} of '{cache.image.name}'), so that '{layer.name}' shows alone; tick "
                      "the eye in the layer list to compare.")
        if edited is not None:
            # (the point first: a toast shows its first words, and file names are long; QA)
            show_info(f"Your corrections are kept: '{edited.name}', edited by hand, stays on top; the new result is in "
                      f"'{layer.name}', under it, drawn as outlines.")

    def closeEvent(self, event) -> None:
        """Cancel the run and stop the re-threshold (waiting for it): no worker outlives the widget."""
        self.cancel()
        self.finetune_panel.cancel()
        self.rethresholder.close()
        self.outputs.closed = True
        super().closeEvent(event)

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.close()  # the dock's close button: napari takes the widget out of its dock, and keeps it
            self._keep_in_window()
        elif event.type() == QEvent.Type.ParentChange and not isinstance(self.parent(), QMainWindow):
            self._dock = weakref.ref(self.parent())  # docked (again: a hidden window shows no widget)
            _CLOSED[:] = [ref for ref in _CLOSED if ref() is not self]  # (review: docked again by a script)
            self._reopen()
        return super().event(event)

    def _keep_in_window(self) -> None:
        """Keep the closed widget, hidden, in the viewer's window (its dock's, which napari has not removed
        yet), for napari to open again (:class:`NucleiSegDock`); the window owns it from then on."""
        window = None if self._dock is None else self._dock()
        while window is not None and _alive(window) and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is not None and _alive(window):
            self.setParent(window)  # (hidden: a widget given a parent is)
            _CLOSED.append(weakref.ref(self))

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._reopen()

    def _reopen(self) -> None:
        self.outputs.closed = False
        self.rethresholder.reopen()

    def _show_probabilities(self, *_) -> None:
        cache = self.rethresholder.cache
        if cache is not None and self.probability_check.isChecked():
            self.outputs.show_probabilities(cache.image, cache.probabilities.nucleus_image(), cache.channel)

    # ---- export ---------------------------------------------------------------------------

    @property
    def labels_layer(self) -> Labels | None:
        """The Labels layer whose count the widget shows: the last one written or edited."""
        return self.outputs.shown

    def _on_export_clicked(self) -> None:
        layer = self.layer_to_export()  # none: export_csv says there is nothing to export
        path = layer and self._ask_csv_path(f"{layer.name}.csv")
        if layer is None or path:
            self.export_in_background(path or "", layer)

    def export_in_background(self, path: str | Path, layer: Labels | None) -> None:
        """:meth:`export_csv`, the table taken now and written in a thread (QA: 52,351 rows held the window
        0.5-1.7 s); the button says "Exporting..." until it is written, and a message then says how it went."""
        table, saved = table_to_export(self.outputs, Path(path), layer)
        if table is None:
            show_warning(saved)
            return
        button = self.export_button
        button.setEnabled(False)
        button.setText("Exporting...")
        worker = thread_worker(write_exported, start_thread=False)(table, Path(path), saved)
        worker.returned.connect(_tell)
        worker.finished.connect(partial(_export_done, button))
        worker.start()

    def layer_to_export(self) -> Labels | None:
        """The Labels layer selected in the layer list (a result, or one of the user's: a corrected copy of a
        result; QA: the copy selected, the uncorrected result was exported), else the result whose count is
        shown (:attr:`labels_layer`). A multiscale layer of the user's is not measured here: the shown result."""
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and (not active.multiscale or self.outputs.is_shown(active)):
            return active
        return self.labels_layer

    def _ask_csv_path(self, suggested: str) -> str:
        """The file the user chooses in the save dialog ("" if cancelled); a name typed without a suffix of
        letters (``mytable``, ``nuclei 2024.05.03``) gets ``.csv``, and a file of that name is replaced only
        if the user says so (the dialog asked about the name as typed)."""
        while True:
            path, _ = QFileDialog.getSaveFileName(self, "Export the nuclei table", suggested, "*.csv")
            if not path or Path(path).suffix[1:].isalpha():
                return path
            path += ".csv"
            button = QMessageBox.StandardButton
            if not Path(path).exists() or QMessageBox.question(
                    self, "Export the nuclei table", f"{Path(path).name} already exists. Do you want to replace it?",
                    button.Yes | button.No, button.No) == button.Yes:
                return path
            suggested = path  # No: back to the dialog, as the dialog itself does

    def export_csv(self, path: str | Path, layer: Labels | None = None) -> bool:
        """Write the per-nucleus table of ``layer`` (default: :attr:`labels_layer`) to ``path``
        (:func:`~._outputs.export_csv`); says how it went, returns whether it was written."""
        level, message = export_csv(self.outputs, Path(path), layer or self.labels_layer)
        _tell((level, message))
        return level == "info"


def _tell(how: tuple[str, str]) -> None:
    """Show ``(level, sentence)`` as a notification of that level."""
    level, message = how
    {"info": show_info, "warning": show_warning, "error": show_error}[level](message)


def _export_done(button: QPushButton) -> None:
    """The Export button, usable again after a write (unless the widget was closed meanwhile)."""
    with contextlib.suppress(RuntimeError):  # its C++ object deleted with the widget: nothing to restore
        button.setText("Export CSV...")
        button.setEnabled(True)


def _stop_workers(cancel: threading.Event, jobs: list, *_) -> None:
    """Cancel the run and quit the re-threshold of a widget that is being destroyed."""
    cancel.set()
    for job in jobs:
        job.worker.quit()


def _fine_tuning_controls(widget: NucleiSegWidget) -> tuple[UserModelMenu, FineTunePanel]:
    """The menu that renames and deletes the user's models, and the Fine-tune section."""
    tell = {"error": lambda message: show_error(message), "info": lambda message: show_info(message)}
    return (UserModelMenu(widget.model_combo, **tell),
            FineTunePanel(widget.viewer, widget.outputs, widget.model_combo, segment_with=partial(_segment_image, widget),
                          brown_nuclei=lambda: widget.brown_check.isChecked(), **tell))


def _segment_image(widget: NucleiSegWidget, image: Image) -> None:
    """Choose the Image layer ``image`` in ``widget`` and segment it with the model chosen."""
    widget.image_combo.choose(image)
    widget.segment()


def _lay_out(widget: NucleiSegWidget) -> None:
    """The widget's controls in a form, top to bottom in the order of the work."""
    buttons = QHBoxLayout()
    buttons.addWidget(widget.segment_button)
    buttons.addWidget(widget.cancel_button)
    form = QFormLayout()
    form.addRow("Image", widget.image_combo)
    form.addRow(widget.channel_combo.label, widget.channel_combo)
    model_row = QHBoxLayout()
    model_row.addWidget(widget.model_combo, 1)
    model_row.addWidget(widget.model_menu)
    form.addRow("Model", model_row)
    form.addRow("Nucleus diameter", widget.diameter_control)
    form.addRow(widget.augment_check)
    form.addRow(widget.brown_check)
    run_box = QVBoxLayout()  # a hidden progress bar leaves no gap here, unlike a row of its own
    run_box.addLayout(buttons)
    run_box.addWidget(widget.progress_bar)
    form.addRow(run_box)
    form.addRow(widget.probability_check)
    form.addRow(widget.target_label)
    form.addRow("Threshold", widget.threshold_slider)
    form.addRow("Min size", widget.min_size_spin)
    form.addRow(widget.split_check)
    form.addRow(widget.exclude_border_check)
    form.addRow(widget.volumes_check)
    form.addRow(widget.postprocess_controls.reset_button)
    form.addRow(widget.count_label)
    form.addRow(widget.table_view)
    form.addRow(widget.export_button)
    widget.progress_bar.setToolTip("The run's progress: planes, then tiles of a large image")
    for row in range(form.rowCount()):  # a row's name says what its control says (the first paragraph)
        label, field = (form.itemAt(row, role) for role in (QFormLayout.LabelRole, QFormLayout.FieldRole))
        control = None if field is None else field.widget() if field.widget() is not None else (
            field.layout() and field.layout().itemAt(0).widget())  # not `or`: an empty combo box is falsy
        if label is not None and control is not None:
            label.widget().setToolTip(control.toolTip().split("\n\n")[0])
    layout = QVBoxLayout(widget)
    layout.addLayout(form)
    layout.addWidget(widget.finetune_panel)
    layout.addStretch(1)
