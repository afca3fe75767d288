"""The controls of the dock widget that hold state of their own: the image and model pickers, the
nucleus diameter (Auto or a number of pixels), the post-processing settings, and the count line.
Messages go through the ``error`` callable the widget gives, so that everything the user is told comes
from one place."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QWidget,
)
from superqt import QLabeledDoubleSlider
from superqt.utils import signals_blocked

from .channels import COLOUR_AXIS, COLOURS, ChannelAxis, find_channel_axis, with_file_axes
from .errors import WeightsError
from .settings import PostprocessSettings
from .user_models import is_user_model, list_user_models
from .weights import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    MODEL_TITLES,
    bundled_evaluation,
    bundled_weights_path,
    describe_weights,
    fine_tune_generations,
    read_metadata,
)

CUSTOM_WEIGHTS_ITEM = "Custom weights file..."
#: What the Model picker is for (its tooltip adds the chosen model's description).
MODEL_HELP = ("The network that finds the nuclei. Point at a model in the list for what it is good at, its "
              "speed and its scores; or open a weights file of your own.")
#: The characters a picker shows of a long name (a layer or file name): the rest is elided, so that a
#: long name does not widen the dock.
SHOWN_NAME_LENGTH = 20
#: A count line's words longer than this (a long layer name) are shortened in the middle: a word cannot wrap.
LONGEST_WORD = 32
#: The largest diameter the diameter box takes (pixels); a diameter larger than the image is
#: refused anyway, with a sentence.
MAX_DIAMETER_PX = 100_000.0


class NameComboBox(QComboBox):
    """A combo box of names (layers, files) as narrow as :data:`SHOWN_NAME_LENGTH` characters whatever
    their length: a long name is elided in the middle, and whole in the list, so that it does not widen the dock."""

    def __init__(self, parent: QWidget | None = None, **properties: Any):
        super().__init__(parent, **properties)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(SHOWN_NAME_LENGTH)
        self.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def paintEvent(self, event) -> None:
        """What QComboBox paints, the current text elided to the room there is (Qt would clip it)."""
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        room = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                           QStyle.SubControl.SC_ComboBoxEditField, self).width()
        option.currentText = self.fontMetrics().elidedText(option.currentText, Qt.TextElideMode.ElideMiddle, room)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)


class ModelPicker(NameComboBox):
    """The bundled models (by title: "UNet"; the item data is the name, "unet"), the weights files chosen
    so far, and "Custom weights file..." to choose one.

    A file is checked when it is chosen; a bad one is refused with a sentence (``error``) and the
    picker goes back to the model chosen before. A file refused later, when it is run, is taken out of
    the list (:meth:`refuse`).
    """

    def __init__(self, error: Callable[[str], None], parent: QWidget | None = None):
        super().__init__(parent)
        self._error = error
        evaluation = bundled_evaluation()
        for name in BUNDLED_MODELS:
            self.addItem(MODEL_TITLES[name], name)
        self.addItem(CUSTOM_WEIGHTS_ITEM, None)
        for index, name in enumerate(BUNDLED_MODELS):
            try:
                tooltip = describe_weights(read_metadata(bundled_weights_path(name)), evaluation)
            except WeightsError as problem:
                tooltip = str(problem)
            self.setItemData(index, tooltip, Qt.ItemDataRole.ToolTipRole)
        self.setItemData(self.count() - 1, "Open a napari-nucleiseg weights file (.safetensors) of your own",
                         Qt.ItemDataRole.ToolTipRole)
        for path in list_user_models():  # the models the user fine-tuned, listed until they delete them
            with suppress(WeightsError):  # a file that cannot be read is not offered
                self._add_file(path, read_metadata(path))
        self.setCurrentIndex(BUNDLED_MODELS.index(DEFAULT_MODEL))
        self._chosen: list[str] = []  # the models chosen, the latest last: to go back to when one is refused
        self._renamed: dict[str, Path] = {}  # the user's models renamed here: old path -> new path
        self._on_changed(self.currentIndex())
        self.currentIndexChanged.connect(self._on_changed)
        self.activated.connect(self._on_activated)

    def _on_changed(self, index: int) -> None:
        source = self.itemData(index)
        if source is not None:
            with suppress(ValueError):
                self._chosen.remove(source)
            self._chosen.append(source)
        self.setToolTip(f"{MODEL_HELP}\n\n{self.itemData(index, Qt.ItemDataRole.ToolTipRole) or ''}".strip())

    def _go_back(self) -> None:
        """Choose again the last model chosen that is still in the list."""
        indices = [self.findData(source) for source in reversed(self._chosen)]
        self.setCurrentIndex(next((index for index in indices if index >= 0), BUNDLED_MODELS.index(DEFAULT_MODEL)))

    def _on_activated(self, index: int) -> None:
        if self.itemData(index) is None:  # "Custom weights file..."
            path, _ = QFileDialog.getOpenFileName(self, "Open a napari-nucleiseg weights file", "",
                                                  "Weights (*.safetensors);;All files (*)")
            if not path or not self.set_weights_file(path):
                self._go_back()

    def set_weights_file(self, path: str | Path) -> bool:
        """Use the weights file at ``path``, after checking it; on a bad file, say why and return False."""
        path = Path(path)
        try:
            metadata = read_metadata(path)
        except WeightsError as problem:
            self._error(str(problem))
            return False
        index = self._add_file(path, metadata)
        self.setCurrentIndex(index)
        self._on_changed(index)  # its tooltip, and the last model chosen, also when it was chosen already
        return True

    def _add_file(self, path: Path, metadata: dict[str, Any]) -> int:
        """The index of the weights file ``path`` in the list, added if it is not there: a model of the
        user's by its name, after the bundled ones and theirs; another file by its file name, just above
        "Custom weights file..."."""
        index = self.findData(str(path))
        if index < 0:
            users = is_user_model(path)
            index = self.count() - 1
            if users:
                index = next(i for i in range(self.count()) if self.itemData(i) not in BUNDLED_MODELS
                             and not (self.itemData(i) and is_user_model(self.itemData(i))))
            self.insertItem(index, path.stem if users else path.name, str(path))
        self.setItemData(index, f"{path}\n{_fine_tuned_line(metadata)}{describe_weights(metadata)}",
                         Qt.ItemDataRole.ToolTipRole)
        return index

    def user_model(self) -> Path | None:
        """The weights file chosen when it is a model of the user's own (which they may rename or delete)."""
        source = self.currentData()
        return Path(source) if source not in BUNDLED_MODELS and source and is_user_model(source) else None

    def renamed(self, old: Path, new: Path) -> None:
        """Follow a user's model renamed from ``old`` to ``new`` (chosen, as it was)."""
        index = self.findData(str(old))
        self.removeItem(index)
        with suppress(ValueError):
            self._chosen.remove(str(old))
        self._renamed[str(old)] = new
        self.set_weights_file(new)

    def now_called(self, path: Path) -> Path:
        """Where the user's model once at ``path`` is now, after the renames made here (``path`` if none)."""
        seen = set()
        while str(path) in self._renamed and str(path) not in seen:
            seen.add(str(path))
            path = self._renamed[str(path)]
        return path

    def forget(self, path: Path) -> None:
        """Take a deleted user's model out of the list, and choose the last model chosen before it."""
        with suppress(ValueError):
            self._chosen.remove(str(path))
        index = self.findData(str(path))
        if index == self.currentIndex():
            self._go_back()
        self.removeItem(self.findData(str(path)))

    def refuse(self, message: str, path: Path | None) -> str:
        """``message``, the sentence that says why a run was refused; when it was because of a weights file
        of the user's (``path``), the file is taken out of the list, the last good model chosen again, and
        the sentence says so."""
        index = -1 if path is None else self.findData(str(path))
        if index < 0:  # not a file of the user's, or not in the list
            return message
        with suppress(ValueError):
            self._chosen.remove(str(path))
        if index == self.currentIndex():
            self._go_back()
        self.removeItem(self.findData(str(path)))
        return f"{message.rstrip('.')}; it is taken out of the Model list, and {self.currentText()} is chosen again."

    def weights_path(self) -> Path:
        """The weights file chosen.

        Raises
        ------
        WeightsError
            When none is.
        """
        source = self.currentData()
        if source in BUNDLED_MODELS:
            return bundled_weights_path(source)
        if source is None:
            raise WeightsError("Choose a model or a weights file first.")
        return Path(source)

    def metadata(self) -> dict[str, Any]:
        """The chosen file's metadata ({} when it cannot be read: that is said when it is run)."""
        try:
            return read_metadata(self.weights_path())
        except WeightsError:
            return {}


class DiameterControl(QWidget):
    """"Auto" and a number of pixels: the nucleus diameter asked for (:attr:`diameter`, None: Auto).

    Emits :attr:`asked` with the diameter (or None) when the user asks for another one: the widget
    checks it and takes it (:meth:`take`) or refuses it (:meth:`show_asked` undoes the controls).
    """

    asked = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, toolTip="The nuclei's median diameter: Auto estimates it from the image, or give "
                                         "it in pixels. The image is resized so that its nuclei are the size the "
                                         "model was trained at, and the labels brought back to the image's pixels")
        self.diameter: float | None = None
        self.auto_check = QCheckBox("Auto", checked=True)
        self.auto_check.setToolTip("Estimate the nuclei's diameter from the image")
        self.spin = QDoubleSpinBox(minimum=0.0, maximum=MAX_DIAMETER_PX, decimals=1, suffix=" px", enabled=False,
                                   toolTip="The nuclei's median diameter, in pixels")
        self.spin.setKeyboardTracking(False)  # one run when the number is entered, not one a keystroke
        # Blank until there is a diameter to show (QA: the model's own 18.0 px, greyed beside "Auto" before any run,
        # read as an estimate); wide enough for 3 digits beside "Auto (estimated 132.1 px)" (QA: '132.' was cut).
        self.spin.setSpecialValueText("-")
        self.spin.setMinimumWidth(self.spin.sizeHint().width())
        self._start: float | None = None  # the number offered when Auto is unticked with the box blank
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.auto_check)
        row.addWidget(self.spin, 1)
        self.auto_check.toggled.connect(self._on_auto_toggled)
        self.spin.valueChanged.connect(self._on_entered)

    @staticmethod
    def problem(diameter: float | None, image: Any) -> str | None:
        """Why ``diameter`` cannot be used for the Image layer ``image`` (None: it can): it is not a
        positive number of pixels, or is larger than the image's planes."""
        from .errors import ImageError
        from .pipeline import stack_shape
        from .scale import check_diameter

        plane = None
        if image is not None:  # a multiscale image's planes: its full-resolution level's
            with suppress(ImageError):  # an image that cannot be segmented says so when it is tried
                plane = stack_shape(image.data.shape, image.rgb)[1]
        try:
            check_diameter(diameter, plane)
        except ValueError as error:
            return str(error)
        return None

    def take(self, diameter: float | None) -> None:
        self.diameter = diameter
        self.show_asked()

    def ask(self, diameter: float | None, image: Any, error: Callable[[str], None]) -> bool | None:
        """Take ``diameter`` (None: Auto) for the Image layer ``image`` if it can be used: True when it
        is new, False when it is the one asked for already, None when it was refused (``error`` says why,
        and the controls go back)."""
        problem = self.problem(diameter, image)
        if problem is not None:
            error(problem)
            self.show_asked()
            return None
        diameter = None if diameter is None else float(diameter)
        if diameter == self.diameter:
            self.show_asked()
            return False
        self.take(diameter)
        return True

    def _on_auto_toggled(self, auto: bool) -> None:
        if auto:
            self.asked.emit(None)
        else:
            # The box holds the diameter of the result shown: it stands, now as the user's own
            # (nothing runs again), and is the start for one of theirs; blank, the model's diameter is.
            self.take(self.spin.value() or self._start)

    def _on_entered(self, value: float) -> None:
        if not self.auto_check.isChecked():
            self.asked.emit(value)

    def show_asked(self) -> None:
        """The Auto box and the number show the diameter asked for (a refused number is undone)."""
        auto = self.diameter is None
        with signals_blocked(self.auto_check), signals_blocked(self.spin):
            self.auto_check.setChecked(auto)
            if not auto:
                self.spin.setValue(self.diameter)
        self.spin.setEnabled(not auto and self.auto_check.isEnabled())

    def for_model(self, trained: float | None, first: bool) -> None:
        """Enable the controls for a model that records the diameter it was trained at; before any
        result (``first``), its diameter is the start for one of the user's own."""
        self.auto_check.setEnabled(trained is not None)
        self.spin.setEnabled(trained is not None and self.diameter is not None)
        self.auto_check.setToolTip(
            "Estimate the nuclei's diameter from the image" if trained is not None
            else "This model records no nucleus diameter: images are segmented at their own scale")
        self._start = None if trained is None else float(trained)
        if first and self.diameter is None:
            with signals_blocked(self.spin):
                self.spin.setValue(0.0)  # (blank: no diameter of this image yet)

    def forget_estimate(self) -> None:
        """"Auto" without the estimate of an earlier run (of another image, or of one taken out)."""
        self.auto_check.setText("Auto")
        if self.diameter is None:
            with signals_blocked(self.spin):
                self.spin.setValue(0.0)

    def show_used(self, diameter: float | None, estimated: bool, resizable: bool, asked_auto: bool) -> None:
        """After a run: "Auto" says what it estimated, and the number box holds it."""
        text = "Auto"
        if estimated:
            text = f"Auto (estimated {diameter:.1f} px)"
            if self.diameter is None:  # not while the user has since entered a number of their own
                with signals_blocked(self.spin):
                    self.spin.setValue(diameter)
        elif asked_auto and resizable:
            text = "Auto (no estimate: not resized)"
        self.auto_check.setText(text)


#: The metadata key that marks an Image layer the widget added to show a nucleus probability: the
#: picker does not offer it (a map of the network's output is no image to segment).
PROBABILITY_MAP_KEY = "nucleiseg_probability_of"


#: Names of a nuclear stain's channel: of the layers opened together (a reader's layer per channel), the one
#: whose name matches is picked, not the last one (napari selects the last: often a marker).
NUCLEAR_NAME = re.compile(r"(?<![a-z-])(dapi|hoechst|draq ?[57]|nuclei|nucleus|sir-?dna|nuc(blue|red|spot)|to-?pro|sytox|"
                          r"h2b)(?![a-z])", re.IGNORECASE)


class ImagePicker(NameComboBox):
    """The image layers of the viewer, by name: follows layers added, renamed, moved and removed, and
    picks an image the user opens (not one the widget adds: ``adding()`` says which) or selects in the
    layer list; of several opened together, the one named as a nuclear stain (:data:`NUCLEAR_NAME`),
    if any. The probability maps the widget shows are not offered."""

    def __init__(self, viewer, adding: Callable[[], bool], parent: QWidget | None = None):
        super().__init__(parent, toolTip="The image layer to segment (gray, RGB, or a stack of them)")
        self.viewer = viewer
        self._adding = adding
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.moved.connect(self.refresh)
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        # napari selects a layer by itself when one is deleted: that is not the user choosing an image.
        self._removing = QTimer(self, singleShot=True, interval=0)
        viewer.layers.events.removing.connect(self._on_removing)
        # The layers opened in one go (before the event loop runs again): a file's channels, one layer each.
        self._opened: list[Any] = []
        self._opening = QTimer(self, singleShot=True, interval=0, timeout=self._opened.clear)
        self.refresh()
        self._on_active_layer()  # the image selected when the widget opens (QA: the first one was picked)

    def _on_removing(self, event=None) -> None:
        self._removing.start()

    def _on_active_layer(self, event=None) -> None:
        """An image selected in the layer list is the one to segment (another kind of layer changes nothing;
        nor does the layer napari selects when one is deleted)."""
        if self._removing.isActive():
            return
        active = self._nuclear_sibling(self.viewer.layers.selection.active)  # (napari selects what it adds)
        ids = [self.itemData(index).unique_id for index in range(self.count())]
        if active is not None and getattr(active, "unique_id", None) in ids:
            self.setCurrentIndex(ids.index(active.unique_id))

    def _nuclear_sibling(self, layer: Any) -> Any:
        """``layer``, or the layer of its shape opened with it whose name says it holds the nuclei when its own
        does not (a file's channels, one layer each)."""
        if layer not in self._opened or NUCLEAR_NAME.search(layer.name):
            return layer
        return next((other for other in self._opened if NUCLEAR_NAME.search(other.name)
                     and other.data.shape == layer.data.shape), layer)  # (removed(): those taken out are not)

    @property
    def layer(self) -> Any:
        """The image layer chosen, if any."""
        return self.currentData()

    def refresh(self, event=None) -> None:
        """Rebuild the list, keeping the chosen layer, and follow renames of every image."""
        from napari.layers import Image

        current = self.layer
        layers = [layer for layer in self.viewer.layers
                  if isinstance(layer, Image) and PROBABILITY_MAP_KEY not in layer.metadata]
        ids = [layer.unique_id for layer in layers]
        self.clear()
        for layer in layers:
            self.addItem(layer.name, layer)
            self.setItemData(self.count() - 1, layer.name, Qt.ItemDataRole.ToolTipRole)  # the whole name
            layer.events.name.connect(self.refresh)  # connecting twice is a no-op
        added = getattr(event, "value", None) if event is not None and event.type == "inserted" else None
        if added is not None and getattr(added, "unique_id", None) in ids and not self._adding():
            self._opened.append(added)
            self._opening.start()
            self.setCurrentIndex(ids.index(self._nuclear_sibling(added).unique_id))  # the image the user opened
        elif current is not None and current.unique_id in ids:
            self.setCurrentIndex(ids.index(current.unique_id))

    def choose(self, layer: Any) -> None:
        """Choose the image layer ``layer`` (as the user does)."""
        ids = [self.itemData(index).unique_id for index in range(self.count())]
        self.setCurrentIndex(ids.index(layer.unique_id))

    def removed(self, layer: Any) -> None:
        """Forget a layer taken out of the viewer."""
        with suppress(TypeError, ValueError):
            layer.events.name.disconnect(self.refresh)
        self._opened[:] = [opened for opened in self._opened if opened is not layer]
        self.refresh()


class ChannelPicker(NameComboBox):
    """The channel of the chosen image to segment, for an image with a channel axis
    (:func:`~napari_nucleiseg.channels.find_channel_axis`); hidden, with its label, for any other.

    An axis named as channels starts at channel 0. A short axis before the plane that nothing names starts
    at "all, as planes" (it may be a stack), and the count says how to choose a channel. An RGB layer without
    such an axis offers its colours (:data:`~napari_nucleiseg.channels.COLOUR_AXIS`), starting at the colour
    picture: QA, a 16-bit ``(Y, X, 3)`` array of fluorescence channels (RGB to napari) with the nuclei in red
    was read as its blue marker, and only napari's Split RGB could change it.
    """

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent, toolTip="The channel that shows the nuclei (e.g. DAPI): only it is segmented "
                                         "and counted")
        self.viewer = viewer
        self.label = QLabel("Channel", toolTip=self.toolTip())
        self.axis: ChannelAxis | None = None
        self._shown_for: tuple | None = None
        self._chosen: dict[tuple, int] = {}  # the choice made for each layer (and shape), kept while it lasts
        self.currentIndexChanged.connect(self._remember)

    def _remember(self, index: int) -> None:
        if self._shown_for is not None and index >= 0:
            self._chosen[self._shown_for] = index

    def unchosen_default(self) -> str | None:
        """One sentence when the channel to segment is the first of an axis named as channels that the user has
        not chosen from (said once per layer); else None. QA: a ZCYX file with DAPI second was segmented in its
        marker channel 0 without a word, where the command line asks for --channel."""
        key = self._shown_for
        if (self.axis is None or self.axis.axis == COLOUR_AXIS or not self.axis.named or key is None
                or key in self._chosen or self.currentData() != 0):
            return None
        self._chosen[key] = 0  # (said once)
        return (f"Channel 0 of {self.axis.count} is segmented (none was chosen); if the nuclei are in another, "
                "choose it under Channel.")

    def follow(self, layer: Any) -> None:
        """Offer the channels of ``layer`` (an Image layer or None), keeping the choice made for the
        layer while its shape and axis labels stay the same."""
        axis_labels = self.axis_labels(layer)
        key = None if layer is None else (layer.unique_id, tuple(layer.data.shape), layer.rgb, axis_labels)
        if key == self._shown_for:
            return
        self._shown_for = key
        self.axis = None if layer is None else find_channel_axis(  # a multiscale layer's: its full level's
            layer.data.shape, layer.rgb, axis_labels, image_metadata(layer))
        colours = self.axis is None and layer is not None and layer.rgb
        if colours:
            self.axis = ChannelAxis(COLOUR_AXIS, len(COLOURS), named=True)
        with signals_blocked(self):
            self.clear()
            if colours:
                self.addItem("all colours, as a picture", None)
                for index, colour in enumerate(COLOURS):
                    self.addItem(colour, index)
                self.setCurrentIndex(self._chosen.get(key, 0))
            elif self.axis is not None:
                if self.axis.axis < layer.data.ndim - (3 if layer.rgb else 2) and not self.axis.named:
                    self.addItem(f"all {self.axis.count}, as planes of a stack", None)
                for index in range(self.axis.count):
                    self.addItem(f"channel {index}", index)
                if self.axis.axis < layer.data.ndim - (3 if layer.rgb else 2) and self.axis.named:
                    self.addItem(f"all {self.axis.count}, as planes of a stack", None)
                self.setCurrentIndex(self._chosen.get(key, 0))
        self.setVisible(self.axis is not None)
        self.label.setVisible(self.axis is not None)

    def axis_labels(self, layer: Any) -> tuple[str, ...]:
        """:func:`layer_axis_labels` of ``layer`` in this picker's viewer."""
        return layer_axis_labels(self.viewer, layer)

    def hint(self, record: Any) -> str:
        """What to add to the count of a result (an :class:`~._outputs.OutputLayer`, or None) made of
        all the planes of an image that may hold channels: how to choose one."""
        if record is None or record.channel is not None:
            return ""
        image = record.image
        metadata = image_metadata(image)  # (the file's header, when napari's reader named no axes)
        axes = str(metadata.get("axes", "")).upper()
        if not image.rgb and len(axes) == image.data.ndim and "S" in axes[:-2]:  # (QA: as the CLI's PLANAR_RGB_NOTE)
            count = image.data.shape[axes.index("S")]
            return ("; its file's tags say it is one RGB picture with its colours stored one after another: if it is, "
                    f"save it with its colours last, (H, W, {count}), and open that to segment it in colour")
        if find_channel_axis(image.data.shape, image.rgb, self.axis_labels(image), metadata) is None:
            return ""
        return "; if they are channels, choose the one with the nuclei under Channel"

    @property
    def channel(self) -> tuple[int, int] | None:
        """``(axis, index)`` of the channel chosen; None: the whole image."""
        index = self.currentData()
        return None if self.axis is None or index is None else (self.axis.axis, index)


class CountLabel(QLabel):
    """The count line: how many nuclei are in which result layer. It wraps, and a word too long to wrap
    (a long layer name) is shortened in the middle, whole in the tooltip: a long name does not widen the dock."""

    HELP = ("The number of nuclei in the result layer shown (it follows your edits of the layer); "
            "Export CSV saves their table")

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent, toolTip=self.HELP, wordWrap=True)
        self.setText(text)

    def setText(self, text: str) -> None:
        shown = " ".join(_shorten(word, LONGEST_WORD) for word in text.split(" "))
        super().setText(shown)
        self.setToolTip(self.HELP if shown == text else f"{self.HELP}:\n{text}")


def _fine_tuned_line(metadata: dict[str, Any]) -> str:
    """For a model the user fine-tuned: from which model, on how many nuclei, when (with a line break)."""
    tuned = metadata.get("fine_tuned")
    if not isinstance(tuned, dict):
        return ""
    bases = [(generation.get("base") or {}).get("name", "?") for generation in fine_tune_generations(metadata)]
    base, first = (MODEL_TITLES.get(name, name) for name in (bases[0], bases[-1]))
    chain = f" (fine-tuned from {first} in {len(bases)} rounds)" if len(bases) > 1 else ""
    return (f"Your model: fine-tuned from {base}{chain} on {tuned.get('nuclei', '?')} nuclei of "
            f"your images, {tuned.get('steps', '?')} steps, {str(tuned.get('date', '?'))[:10]}\n")


def _shorten(text: str, length: int) -> str:
    """``text``, when longer than ``length``, with its middle replaced by "…"."""
    if len(text) <= length:
        return text
    keep = length - 1
    return f"{text[:keep - keep // 2]}…{text[len(text) - keep // 2:]}"


def layer_axis_labels(viewer: Any, layer: Any) -> tuple[str, ...]:
    """The labels of ``layer``'s axes: its own, or where those are napari's defaults ("-3"), the
    ``viewer``'s (a layer's axes are the viewer's last ones)."""
    if layer is None:
        return ()
    own = [str(label) for label in getattr(layer, "axis_labels", ())]
    theirs = [str(label) for label in viewer.dims.axis_labels][-layer.ndim:]
    own = own if len(own) == layer.ndim else [""] * layer.ndim
    theirs = theirs if len(theirs) == layer.ndim else [""] * layer.ndim
    return tuple(viewers if is_default_label(mine) else mine for mine, viewers in zip(own, theirs))


def image_metadata(layer: Any) -> dict[str, Any]:
    """An Image layer's metadata, with the axes of the TIFF it was opened from when it names none
    (:func:`~napari_nucleiseg.channels.with_file_axes`)."""
    return with_file_axes(layer.metadata, getattr(layer.source, "path", None), layer.data.shape)


def is_default_label(label: str) -> bool:
    """Whether an axis label is napari's default (``"-3"``, ``"axis -3"``, ``"0"``): it names nothing."""
    return label.removeprefix("axis").strip().lstrip("-").isdigit() or not label.strip()


class PostprocessControls(QObject):
    """The threshold slider, the min size box, the split box, the border box and, for a stack, the 3-D
    box: the settings a result is made with.

    Emits :attr:`changed` when the user changes one. The min size box starts at the model's min size
    at the scale of the last run (:attr:`default_min_size`); left there, it follows the next run's scale.
    The 3-D box is shown for one image or result at a time (:meth:`show_volumes`), whose labels' leading
    :attr:`volume_axis` it links.
    """

    changed = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.05, 0.95)
        self.threshold_slider.setSingleStep(0.01)
        self.threshold_slider.setDecimals(2)
        self.threshold_slider.setToolTip("Nucleus probability above which a pixel is nucleus")
        self.min_size_spin = QSpinBox(minimum=0, maximum=100_000, suffix=" px", toolTip="Smaller objects are dropped")
        self.split_check = QCheckBox("Split touching nuclei", checked=True)
        self.split_check.setToolTip("Separate touching nuclei along the boundaries the model predicts, and cut "
                                    "\"8\"-shaped objects at their neck (as calibrated for the model)")
        self.exclude_border_check = QCheckBox("Exclude nuclei touching the border", checked=False)
        self.exclude_border_check.setToolTip("Leave out of the labels, the count and the table the nuclei that "
                                             "touch the edge of the image (of each plane of a stack): they are "
                                             "cut off. The exported table records it")
        self.volumes_check = QCheckBox("3-D nuclei (link planes)", checked=False, visible=False)
        self.volumes_check.setToolTip("Link the sections of each nucleus in neighbouring planes of the Z stack "
                                      "into one 3-D nucleus (by their overlap): it has one label, counts once "
                                      "and has one row in the table, with its volume. On for a stack whose "
                                      "axis is named z; time points are never linked")
        self.volume_axis: int | None = None  # the leading axis of the labels the 3-D box links
        self.volumes_for: Any = None  # what the 3-D box is shown for (an image or result's key)
        self.reset_button = QPushButton("Reset to the model's settings",
                                        toolTip="The threshold and min size the model was calibrated with "
                                                "(its min size at the scale of the result shown)")
        self.default_min_size = PostprocessSettings().min_size
        self.threshold_slider.valueChanged.connect(self.changed)
        self.min_size_spin.valueChanged.connect(self.changed)
        self.split_check.toggled.connect(self.changed)
        self.exclude_border_check.toggled.connect(self.changed)
        self.volumes_check.toggled.connect(self.changed)

    def values(self) -> dict[str, Any]:
        """The settings the controls show, by name."""
        linked = self.volume_axis is not None and self.volumes_check.isChecked()
        return {"threshold": self.threshold_slider.value(), "min_size": self.min_size_spin.value(),
                "split": self.split_check.isChecked(), "exclude_border": self.exclude_border_check.isChecked(),
                "link_axis": self.volume_axis if linked else None}

    def show_volumes(self, axis: int | None, key: Any, linked: bool) -> None:
        """Show the 3-D box for the image or result ``key`` whose labels' leading ``axis`` may be linked
        (None: hide it), ticked when ``linked`` (re-thresholding nothing)."""
        with signals_blocked(self.volumes_check):
            self.volumes_check.setChecked(axis is not None and linked)
        self.volume_axis, self.volumes_for = axis, key
        self.volumes_check.setVisible(axis is not None)

    def offer_volumes(self, axis: int | None, named: bool, key: Any) -> None:
        """Show the 3-D box for the image ``key`` to be segmented: as it was left for it, or for another
        image, ticked when its ``axis`` is named Z (``named``)."""
        if key != self.volumes_for:
            self.show_volumes(axis, key, named)

    def link_axis_for(self, key: Any, axis: int | None, named: bool) -> int | None:
        """The axis a run of the image ``key`` links into 3-D nuclei: the 3-D box's, when it is shown for
        that image; else its ``axis`` when that is named Z (``named``)."""
        if key == self.volumes_for:
            return self.values()["link_axis"]
        return axis if named else None

    def show_result(self, settings: PostprocessSettings) -> None:
        """Show the settings a result was made with (re-thresholding nothing)."""
        with signals_blocked(self.threshold_slider), signals_blocked(self.min_size_spin), \
                signals_blocked(self.split_check), signals_blocked(self.exclude_border_check):
            self.threshold_slider.setValue(settings.threshold)
            self.min_size_spin.setValue(settings.min_size)
            self.split_check.setChecked(settings.split)
            self.exclude_border_check.setChecked(settings.exclude_border)

    def show(self, settings: PostprocessSettings) -> None:
        """Show a model's settings (re-thresholding nothing); its min size is now the default."""
        with signals_blocked(self.threshold_slider), signals_blocked(self.min_size_spin):
            self.threshold_slider.setValue(settings.threshold)
            self.min_size_spin.setValue(settings.min_size)
        self.default_min_size = settings.min_size

    def for_run(self) -> dict[str, Any]:
        """The settings a run makes its first labels with, by name (the rest are the model's at the run's
        scale): the controls' values, with a min size left at its default following the scale."""
        chosen = self.values()
        if chosen["min_size"] == self.default_min_size:
            del chosen["min_size"]
        return chosen

    def reset(self, settings: PostprocessSettings) -> None:
        """Show a model's calibrated ``settings`` and apply them (the result shown follows)."""
        self.show(settings)
        self.changed.emit()

    def after_run(self, settings: PostprocessSettings, default_min_size: int, new_model: bool) -> None:
        """Follow a finished run: a new model's ``settings`` are shown; otherwise a min size left at
        its default becomes the run's ``default_min_size``."""
        if new_model:
            self.show(settings)
        elif self.min_size_spin.value() == self.default_min_size:
            with signals_blocked(self.min_size_spin):
                self.min_size_spin.setValue(default_min_size)
        self.default_min_size = default_min_size
