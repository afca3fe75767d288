"""The dock widget in a real napari viewer, driven the way a user drives it.

Most tests replace the network with :class:`FakeNetwork`, whose probabilities are read off the
image, so thresholds, splitting and counts have known answers and the number of network runs
can be counted. One test runs a real (tiny, untrained) weights file end to end.

Small images are re-thresholded at once, large ones in a worker; the tests of the worker path
send small images there (fixture ``in_a_worker``) and slow or hold the post-processing with
:class:`SlowPostprocessing`, so that what happens while it runs is certain.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMessageBox

from napari_nucleiseg import _outputs, _widget, compact, errors, pipeline, postprocess, segment
from napari_nucleiseg._run import PROGRESS_STEPS
from napari_nucleiseg._widget import NucleiSegWidget

pytestmark = pytest.mark.gui

#: In images fed to FakeNetwork, pixels of this value are nucleus boundary (channel 1).
BOUNDARY_VALUE = 150
RUN_TIMEOUT_MS = 60_000


class FakeNetwork:
    """Stands in for the network (``NucleiSegWidget.predict``): nucleus probability = gray value / 255.

    Counts its calls, reports one tile of progress, and can be slowed down to test cancelling.
    """

    def __init__(self, delay: float = 0.0):
        self.calls = 0
        self.scales: list[float] = []  # the factor each image was to be resized by
        self.augments: list[bool] = []  # whether each was to be averaged over flips
        self.delay = delay
        self.started = threading.Event()

    def __call__(self, image, model, *, progress=None, cancelled=None, scale=1.0, augment=False):
        self.calls += 1
        self.scales.append(scale)
        self.augments.append(augment)
        self.started.set()
        deadline = time.monotonic() + self.delay
        while time.monotonic() < deadline:
            if cancelled is not None and cancelled():
                raise errors.Cancelled("Segmentation cancelled.")
            time.sleep(0.01)
        gray = np.asarray(image, dtype=np.float32)
        if gray.ndim == 3:
            gray = gray[..., :3].mean(axis=-1)
        if progress is not None:
            progress(1, 1)
        return np.stack([gray / 255, (gray == BOUNDARY_VALUE).astype(np.float32)])


class SlowPostprocessing:
    """Stands in for ``postprocess.labels_from_probabilities``: records the thresholds it is asked for,
    takes ``delay`` seconds longer, and waits while :attr:`gate` is closed (it starts open)."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.thresholds: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self._labels_from_probabilities = postprocess.labels_from_probabilities

    def __call__(self, probabilities, threshold=0.5, **options):
        self.thresholds.append(threshold)
        self.entered.set()
        assert self.gate.wait(RUN_TIMEOUT_MS / 1000)
        time.sleep(self.delay)
        return self._labels_from_probabilities(probabilities, threshold, **options)


class Notifications:
    """Records what the widget shows the user, by kind."""

    def __init__(self, monkeypatch):
        self.messages: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
        for kind, messages in self.messages.items():
            monkeypatch.setattr(_widget, f"show_{kind}", messages.append)


def disk(shape, center, radius):
    yy, xx = np.indices(shape)
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def blobs(values=(90, 140, 200, 240), shape=(64, 200), radius=9) -> np.ndarray:
    """Separate disks of the given gray values along a row: nucleus probabilities ~ value / 255."""
    image = np.zeros(shape, dtype=np.uint8)
    for k, value in enumerate(values):
        image[disk(shape, (shape[0] // 2, 25 + 45 * k), radius)] = value
    return image


def touching_pair(shape=(64, 96)) -> np.ndarray:
    """Two overlapping disks whose contact line the (fake) network calls boundary."""
    image = np.zeros(shape, dtype=np.uint8)
    left, right = disk(shape, (32, 36), 14), disk(shape, (32, 60), 14)
    image[left | right] = 220
    contact = np.zeros(shape, dtype=bool)
    contact[:, 47:49] = True
    image[(left | right) & contact] = BOUNDARY_VALUE
    return image


@pytest.fixture
def notifications(monkeypatch):
    return Notifications(monkeypatch)


@pytest.fixture
def fake_network(viewer_and_widget):
    """The widget's network replaced by a :class:`FakeNetwork` (the estimate of a diameter still runs the real one)."""
    network = FakeNetwork()
    viewer_and_widget[1].predict = network
    return network


@pytest.fixture
def in_a_worker(viewer_and_widget):
    """Images of any size are re-thresholded in a worker, as large ones are."""
    viewer_and_widget[1].rethresholder.sync_pixels = 0


@pytest.fixture
def slow_postprocessing(monkeypatch):
    """Install a :class:`SlowPostprocessing` (after segmenting, so that the run itself is not slowed)."""
    installed = []

    def install(delay: float = 0.0) -> SlowPostprocessing:
        slow = SlowPostprocessing(delay)
        monkeypatch.setattr(postprocess, "labels_from_probabilities", slow)
        installed.append(slow)
        return slow

    yield install
    for slow in installed:
        slow.gate.set()  # never leave a worker waiting


def open_widget(viewer) -> NucleiSegWidget:
    """The dock widget as napari opens it from its menu: napari gives it a proxy of the viewer."""
    dock, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Nuclei segmentation")
    assert isinstance(widget, NucleiSegWidget) and widget.viewer is not viewer  # the proxy
    return widget


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_weights):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert widget.set_weights_file(tiny_weights["unet"])
    return viewer, widget


def click_segment(qtbot, widget: NucleiSegWidget) -> None:
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)


def wait_for_table(qtbot, layer, rows: int) -> None:
    """The table is measured shortly after the last change (the count follows at once)."""
    qtbot.waitUntil(lambda: len(layer.features) == rows, timeout=5_000)


def shown_count(widget: NucleiSegWidget) -> int:
    """The number of nuclei the widget shows ("12 nuclei in 'image nuclei'"); None while it counts."""
    first = widget.count_label.text().split()[0]
    return int(first) if first.isdigit() else None


def click_export(qtbot, widget: NucleiSegWidget, monkeypatch, path) -> None:
    """Export, choosing ``path`` in the save dialog."""
    monkeypatch.setattr(_widget.QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(path), ""))
    qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
    wait_for_export(qtbot, widget)


def wait_for_export(qtbot, widget: NucleiSegWidget) -> None:
    """Until the CSV is written (in a thread; the button says "Exporting..." meanwhile)."""
    qtbot.waitUntil(widget.export_button.isEnabled, timeout=10_000)
    assert widget.export_button.text() == "Export CSV..."


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def labels_layers(viewer):
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def wait_for_postprocessing(qtbot, widget: NucleiSegWidget) -> None:
    """Until the re-thresholds in workers are done and the newest settings are shown."""
    qtbot.waitUntil(lambda: not widget.postprocessing, timeout=RUN_TIMEOUT_MS)


def test_the_sample_segmented_with_real_weights_gives_labels_count_and_table(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    viewer.open_sample("napari-nucleiseg", "fluorescence")
    image = viewer.layers[0]
    assert widget.image_combo.currentText() == image.name
    # The tiny model's calibrated values are the starting point of the controls.
    assert widget.threshold_slider.value() == pytest.approx(0.45)
    assert widget.min_size_spin.value() == 7

    click_segment(qtbot, widget)

    (labels,) = labels_layers(viewer)
    assert labels.name == f"{image.name} nuclei"
    assert labels.data.shape == image.data.shape
    count = len(np.unique(labels.data[labels.data > 0]))
    assert shown_count(widget) == count and widget.count_label.text().endswith(f" in '{labels.name}'")
    wait_for_table(qtbot, labels, count)
    assert labels.features["area"].sum() == np.count_nonzero(labels.data)


def test_a_very_noisy_gray_image_is_smoothed_and_the_widget_says_so(viewer_and_widget, notifications, qtbot):
    from skimage.io import imread

    from napari_nucleiseg.weights import bundled_weights_path

    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(bundled_weights_path("hrnet"))
    gray = imread(Path(__file__).parents[1] / "src" / "napari_nucleiseg" / "samples" / "fluorescence.png")
    noisy = (np.random.default_rng(0).poisson(gray.astype(float) / gray.max() * 8) + 100).astype(np.uint16)
    viewer.add_image(noisy, name="dark frame")
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.metadata["noise_smoothing"] == 1.5 and 80 <= labels.data.max() <= 135  # 108 in the clean sample
    assert ("'dark frame': It is very noisy, so it was smoothed (a Gaussian of 1.5 px) before the nuclei were sized "
            "and found; the table's intensities are its own.") in notifications.messages["info"]


def test_an_image_auto_cannot_size_is_said_with_what_to_do(viewer_and_widget, notifications, qtbot):
    """QA: a noisy field judged empty showed only 'Auto (no estimate: not resized)' (the CLI now says more)."""
    from napari_nucleiseg.weights import bundled_weights_path

    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(bundled_weights_path("hrnet"))
    viewer.add_image(np.random.default_rng(0).poisson(5, (200, 200)).astype(np.uint16), name="noise")
    click_segment(qtbot, widget)
    assert ("'noise': No nucleus size could be estimated (it looks empty, or too noisy to size), so it was segmented "
            "at its own scale; if it holds nuclei, type their diameter beside Auto.") in notifications.messages["info"]
    widget.diameter_auto_check.setChecked(False)
    spin = widget.diameter_spin
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin, "12")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    wait_for_run(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.metadata["diameter"] == 12.0  # given: run again, and nothing more said of it
    assert sum("No nucleus size could be estimated" in message for message in notifications.messages["info"]) == 1


def test_threshold_min_size_and_split_rerun_only_the_postprocessing(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    image = viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.max() == 4 and shown_count(widget) == 4

    counts = {}
    for threshold in (0.5, 0.7, 0.9):
        widget.threshold_slider.setValue(threshold)  # what dragging the slider emits, tick by tick
        counts[threshold] = labels.data.max()
        assert shown_count(widget) == counts[threshold]
    assert counts == {0.5: 3, 0.7: 2, 0.9: 1}

    widget.threshold_slider.setValue(0.3)
    widget.min_size_spin.setValue(int(disk((64, 64), (32, 32), 9).sum()) + 1)  # bigger than every disk
    assert labels.data.max() == 0 and shown_count(widget) == 0

    assert fake_network.calls == 1  # the network ran once; everything after re-used its output
    assert labels_layers(viewer) == [labels]  # ... and went to the same layer, in place
    assert image.name in widget.image_combo.currentText()


def test_splitting_separates_touching_nuclei(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    viewer.add_image(touching_pair(), name="pair")
    widget.split_check.setChecked(True)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.max() == 2

    widget.split_check.setChecked(False)
    assert labels.data.max() == 1 and widget.count_label.text().startswith("1 nucleus in")
    widget.split_check.setChecked(True)
    assert labels.data.max() == 2
    assert fake_network.calls == 1


def test_excluding_border_nuclei_relabels_the_result_without_the_network_and_is_exported(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    viewer, widget = viewer_and_widget
    image = blobs()
    image[disk(image.shape, (32, 199), 9)] = 200  # a fifth nucleus, cut by the right edge
    viewer.add_image(image, name="edge")
    widget.threshold_slider.setValue(0.3)
    assert not widget.exclude_border_check.isChecked()  # off until the user asks
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.max() == 5 and shown_count(widget) == 5

    widget.exclude_border_check.setChecked(True)
    assert labels.data.max() == 4 and labels.data[32, 195] == 0
    assert widget.count_label.text() == "4 nuclei in 'edge nuclei', not counting those touching the border"
    click_export(qtbot, widget, monkeypatch, tmp_path / "inner.csv")
    inner = pd.read_csv(tmp_path / "inner.csv")
    assert list(inner["label"]) == [1, 2, 3, 4] and inner["exclude_border"].tolist() == [True] * 4

    painted = labels.data.copy()  # QA: a nucleus painted at the border is counted; the line said it was not
    painted[0:6, 100:110] = 9
    labels.data = painted
    qtbot.waitUntil(lambda: widget.count_label.text().startswith("5 nuclei"), timeout=5_000)
    assert widget.count_label.text() == ("5 nuclei in 'edge nuclei', leaving out the nuclei found touching the border "
                                         "(those painted there are counted)")
    labels.data = np.where(painted == 9, 0, painted).astype(painted.dtype)  # erased again: the result as made
    qtbot.waitUntil(lambda: widget.count_label.text().startswith("4 nuclei"), timeout=5_000)
    assert widget.count_label.text().endswith(", not counting those touching the border")

    widget.exclude_border_check.setChecked(False)
    assert labels.data.max() == 5 and widget.count_label.text() == "5 nuclei in 'edge nuclei'"
    click_export(qtbot, widget, monkeypatch, tmp_path / "all.csv")
    assert pd.read_csv(tmp_path / "all.csv")["exclude_border"].tolist() == [False] * 5
    assert fake_network.calls == 1 and labels_layers(viewer) == [labels]

    labels.fill((32, 25), 0)  # a hand edit: ticking the box again leaves it alone
    edited = labels.data.copy()
    widget.exclude_border_check.setChecked(True)
    new, kept = labels_layers(viewer)  # the new result goes under the edited layer, which stays on top
    assert kept is labels and np.array_equal(labels.data, edited)
    assert new.data.max() == 4 and shown_count(widget) == 4
    assert fake_network.calls == 1 and notifications.messages["error"] == []


def joined_pair(shape=(64, 160)) -> np.ndarray:
    """An "8" of two disks (radius 10, centres 18 apart) with no boundary between them, and four
    single nuclei of radius 7: the network saw one object where the eye sees two."""
    image = np.zeros(shape, dtype=np.uint8)
    for center, radius in [((32, 30), 10), ((32, 48), 10), ((12, 90), 7), ((50, 90), 7), ((12, 130), 7),
                           ((50, 130), 7)]:
        image[disk(shape, center, radius)] = 220
    return image


def test_a_model_change_shows_its_settings_at_once_and_reset_brings_them_back(
    viewer_and_widget, fake_network, tiny_weights, tmp_path, qtbot
):
    """Issue 17, item 9: the slider showed a hand-set 0.30 after a model change, then jumped to the new
    model's value when its run ended."""
    from napari_nucleiseg.weights import save_weights

    from conftest import build_tiny, tiny_metadata

    viewer, widget = viewer_and_widget
    strict = save_weights(tmp_path / "strict.safetensors", build_tiny("unet"),
                          tiny_metadata("unet") | {"threshold": 0.65})
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    assert shown_count(widget) == 4

    assert widget.set_weights_file(strict)
    assert widget.threshold_slider.value() == pytest.approx(0.65)  # at once, before any run
    assert shown_count(widget) == 4  # the result shown is not re-thresholded by a model change
    widget.threshold_slider.setValue(0.3)  # the user's own value is what the run uses, and it stays
    click_segment(qtbot, widget)
    assert widget.threshold_slider.value() == pytest.approx(0.3) and shown_count(widget) == 4

    widget.postprocess_controls.reset_button.click()
    assert widget.threshold_slider.value() == pytest.approx(0.65)
    wait_for_postprocessing(qtbot, widget)
    assert shown_count(widget) == 2  # the result follows the model's settings (240 and 200 / 255 > 0.65)
    assert fake_network.calls == 2


def test_splitting_cuts_an_eight_by_its_shape_with_the_models_neck_ratio(viewer_and_widget, fake_network, qtbot,
                                                                       tmp_path):
    from napari_nucleiseg.weights import save_weights

    from conftest import build_tiny, tiny_metadata

    viewer, widget = viewer_and_widget
    necked = save_weights(tmp_path / "necked.safetensors", build_tiny("unet"),
                          tiny_metadata("unet") | {"neck_ratio": 0.3, "seed_min_size": 4})
    assert widget.set_weights_file(necked)
    viewer.add_image(joined_pair(), name="eight")
    widget.split_check.setChecked(True)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert widget.rethresholder.cache.settings.neck_ratio == 0.3
    assert widget.rethresholder.cache.settings.seed_min_size == 4
    assert labels.data.max() == 6 and shown_count(widget) == 6
    halves = labels.data[32, 25], labels.data[32, 53]
    assert 0 not in halves and halves[0] != halves[1]

    widget.split_check.setChecked(False)  # the cut is part of splitting
    assert labels.data.max() == 5 and shown_count(widget) == 5


def test_hand_edits_update_the_count_and_table_and_are_never_overwritten(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.5)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.max() == 3

    # Paint a new nucleus in the empty corner with napari's brush, as a user would.
    labels.brush_size = 7
    labels.selected_label = 4
    labels.paint((8, 8), 4)
    painted = labels.data == 4
    assert painted.any()
    qtbot.waitUntil(lambda: shown_count(widget) == 4, timeout=5_000)
    wait_for_table(qtbot, labels, 4)
    assert list(labels.features["label"]) == [1, 2, 3, 4]
    assert labels.features.set_index("label").loc[4, "area"] == painted.sum()

    # Erase one nucleus: the count follows.
    labels.fill((32, 115), 0)
    qtbot.waitUntil(lambda: shown_count(widget) == 3, timeout=5_000)

    # Moving the threshold after the edit writes a new layer and keeps the edited one as it is.
    edited = labels.data.copy()
    widget.threshold_slider.setValue(0.3)
    second, first = labels_layers(viewer)  # issue 17, item 10: the corrections stay in sight, on top
    assert first is labels and np.array_equal(first.data, edited) and first.visible
    assert second.name == "blobs nuclei [2]" and second.data.max() == 4
    # ... drawn as outlines: the erased nucleus, found again by the new threshold, does not look un-erased
    assert second.contour > 0 and first.contour == 0
    # ... and the edited layer stays selected: napari's paint and erase tools go on acting on it (QA: the new
    # result, selected, took the next erasures unseen under the edited layer)
    assert viewer.layers.selection.active is first
    assert any(message.startswith("Your corrections are kept: ") for message in notifications.messages["info"])
    assert widget.count_label.text() == ("4 nuclei in 'blobs nuclei [2]' (under your edited 'blobs nuclei', "
                                         "which stays on top)")

    # The new layer is the widget's own until edited: it follows the slider in place.
    widget.threshold_slider.setValue(0.7)
    assert labels_layers(viewer) == [second, first] and second.data.max() == 2

    # Export writes the selected new result; the message says so, and where the corrections are (QA: a nudge of
    # the slider after a correction, then Export, wrote the table without them, 'Saved 24 nuclei to ...').
    viewer.layers.selection.active = second
    click_export(qtbot, widget, monkeypatch, tmp_path / "nuclei.csv")
    assert notifications.messages["info"][-1] == (
        f"Saved the 2 nuclei of 'blobs nuclei [2]' to {tmp_path / 'nuclei.csv'}. Your corrections are in "
        "'blobs nuclei': select it and Export CSV for their table.")
    viewer.layers.selection.active = first
    click_export(qtbot, widget, monkeypatch, tmp_path / "edited.csv")
    assert notifications.messages["info"][-1] == f"Saved the 3 nuclei of 'blobs nuclei' to {tmp_path / 'edited.csv'}."

    # Segmenting again never discards edits either.
    second.data_setitem((np.array([60]), np.array([5])), 9)  # an edit napari records (and emits)
    click_segment(qtbot, widget)
    assert [layer.name for layer in labels_layers(viewer)] == ["blobs nuclei [3]", "blobs nuclei [2]", "blobs nuclei"]
    assert np.array_equal(first.data, edited) and second.data[60, 5] == 9
    third = viewer.layers["blobs nuclei [3]"]
    assert third.contour > 0
    viewer.layers.remove(second)  # the edited layer above it taken out: the result under it is drawn filled again
    assert third.contour == 0 and first.contour == 0


@pytest.mark.parametrize("counted_in_a_worker", [False, True], ids=["small", "large"])
def test_undo_and_redo_of_a_hand_edit_update_the_count_and_table(
    viewer_and_widget, fake_network, monkeypatch, qtbot, counted_in_a_worker
):
    gate = threading.Event()
    gate.set()
    if counted_in_a_worker:  # as a layer over COUNT_IN_WORKER_PIXELS is; the gate holds the worker
        count = _outputs.count_and_fingerprint
        monkeypatch.setattr(_outputs, "count_and_fingerprint", lambda labels: gate.wait(RUN_TIMEOUT_MS) and count(labels))
    viewer, widget = viewer_and_widget
    if counted_in_a_worker:
        widget.outputs.count_in_worker_pixels = 0
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.5)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    labels.brush_size = 7
    labels.selected_label = 4
    gate.clear()
    labels.paint((8, 8), 4)
    if counted_in_a_worker:  # the brush is not held up: the count follows from a worker
        qtbot.waitUntil(lambda: widget.count_label.text() == "Counting the nuclei in 'blobs nuclei'...", timeout=5_000)
    gate.set()
    qtbot.waitUntil(lambda: widget.count_label.text() == "4 nuclei in 'blobs nuclei'", timeout=5_000)
    wait_for_table(qtbot, labels, 4)

    labels.undo()  # Ctrl+Z: napari puts the pixels back and redraws, without a paint event
    assert labels.data.max() == 3
    qtbot.waitUntil(lambda: shown_count(widget) == 3, timeout=5_000)
    wait_for_table(qtbot, labels, 3)

    labels.redo()
    qtbot.waitUntil(lambda: shown_count(widget) == 4, timeout=5_000)
    wait_for_table(qtbot, labels, 4)
    assert list(labels.features["label"]) == [1, 2, 3, 4]

    labels.undo()  # the stroke undone, then a new result written in place: the stroke is not redone onto it (QA)
    qtbot.waitUntil(lambda: shown_count(widget) == 3, timeout=5_000)
    widget.threshold_slider.setValue(0.3)
    qtbot.waitUntil(lambda: shown_count(widget) == 4, timeout=5_000)
    assert labels_layers(viewer) == [labels]
    written = np.array(labels.data)
    labels.redo()
    assert np.array_equal(labels.data, written)


def test_count_and_export_follow_the_labels_layer_the_user_selects(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="four")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    viewer.add_image(blobs((200, 200)), name="two")
    click_segment(qtbot, widget)
    four, two = labels_layers(viewer)
    assert widget.count_label.text() == "2 nuclei in 'two nuclei'"

    viewer.layers.selection.active = four  # the user clicks the first result in the layer list
    assert widget.count_label.text() == "4 nuclei in 'four nuclei'"
    wait_for_table(qtbot, four, 4)
    measured = []
    measure = _outputs.nuclei_table
    with monkeypatch.context() as patch:  # (the wait for the export's thread lets background measures run too)
        patch.setattr(_outputs, "nuclei_table", lambda *args: measured.append(
            threading.current_thread() is threading.main_thread()) or measure(*args))
        click_export(qtbot, widget, patch, tmp_path / "four.csv")
    assert len(pd.read_csv(tmp_path / "four.csv")) == 4
    assert True not in measured  # the table measured in the background is written, not measured again here

    viewer.layers.remove(four)  # the shown result is deleted: the other one is shown and exported
    assert widget.count_label.text() == "2 nuclei in 'two nuclei'"
    click_export(qtbot, widget, monkeypatch, tmp_path / "two.csv")
    assert len(pd.read_csv(tmp_path / "two.csv")) == 2
    viewer.layers.remove(two)
    assert widget.count_label.text() == "No segmentation shown"
    assert notifications.messages["error"] == []


def test_export_csv_writes_the_table_as_the_user_edited_it(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    labels.fill((32, 25), 0)  # the user deletes a nucleus, then exports at once

    path = tmp_path / "nuclei.csv"
    click_export(qtbot, widget, monkeypatch, path)

    table = pd.read_csv(path)
    assert list(table["label"]) == [2, 3, 4]
    assert table["area"].sum() == np.count_nonzero(labels.data)
    assert {"centroid_y", "centroid_x", "mean_intensity"} <= set(table.columns)
    assert "index" not in table.columns
    assert table["mean_intensity"].round().tolist() == [140, 200, 240]
    assert notifications.messages["error"] == []

    assert not widget.export_csv(tmp_path / "no such folder" / "nuclei.csv")
    (message,) = notifications.messages["error"]
    assert message.startswith("Cannot write") and "\n" not in message


def test_export_writes_the_table_of_the_labels_layer_selected_a_corrected_copy_too(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    """QA: a copy of the result corrected by hand and selected; Export wrote the uncorrected result's table."""
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    result = segment_new_image(qtbot, viewer, widget, blobs(), "blobs")
    copy = viewer.add_labels(np.array(result.data), name="my corrections")
    copy.fill((32, 25), 0)  # one nucleus erased in the copy
    copy.features = pd.DataFrame({"index": [2, 3, 4], "cell_class": ["tumour", "stroma", "tumour"]})  # the user's
    suggested = []
    monkeypatch.setattr(_widget.QFileDialog, "getSaveFileName",
                        lambda parent, caption, name, *args: (suggested.append(name), (str(tmp_path / "mine.csv"), ""))[1])
    viewer.layers.selection.active = copy
    qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
    wait_for_export(qtbot, widget)
    assert suggested == ["my corrections.csv"] and len(pd.read_csv(tmp_path / "mine.csv")) == 3
    # measured on the image it lies on, and the user's own columns left as they were (review: both were lost)
    assert pd.read_csv(tmp_path / "mine.csv")["mean_intensity"].round().tolist() == [140, 200, 240]
    assert copy.features["cell_class"].tolist() == ["tumour", "stroma", "tumour"]
    assert notifications.messages["info"][-1].startswith("Saved the 3 nuclei of 'my corrections'")
    viewer.layers.selection.active = viewer.layers["blobs"]  # an image selected: the result shown, as before
    click_export(qtbot, widget, monkeypatch, tmp_path / "result.csv")
    assert len(pd.read_csv(tmp_path / "result.csv")) == 4


def test_a_column_added_to_a_results_table_is_kept_through_hand_edits(
    viewer_and_widget, fake_network, monkeypatch, qtbot, tmp_path
):
    """QA: a column another plugin or the user added to a result's table (a cell class) was dropped at the next
    erase; a new result (the slider) starts a new table."""
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    result = segment_new_image(qtbot, viewer, widget, blobs(), "blobs")
    wait_for_table(qtbot, result, 4)
    result.features = result.features.assign(cell_class=["a", "b", "c", "d"])
    result.fill((32, 25), 0)  # nucleus 1 erased
    result.paint((10, 190), 9)  # a new one painted
    qtbot.waitUntil(lambda: len(result.features) == 4 and 9 in set(result.features["label"]), timeout=5_000)
    classes = dict(zip(result.features["label"], result.features["cell_class"]))
    assert {label: classes[label] for label in (2, 3, 4)} == {2: "b", 3: "c", 4: "d"} and pd.isna(classes[9])
    click_export(qtbot, widget, monkeypatch, tmp_path / "classes.csv")
    assert pd.read_csv(tmp_path / "classes.csv")["cell_class"].tolist()[:3] == ["b", "c", "d"]


def test_a_duplicated_result_is_measured_on_the_image_it_was_segmented_from(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    """QA: a copy of A's result (Layers > Duplicate Layer), exported after B's result (same shape) was shown,
    had B's intensities."""
    from napari.layers._layer_actions import _duplicate_layer

    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    a_result = segment_new_image(qtbot, viewer, widget, blobs((200,) * 4), "A")
    b_result = segment_new_image(qtbot, viewer, widget, blobs((100,) * 4), "B")
    viewer.layers.selection.active = a_result
    _duplicate_layer(viewer.layers)
    copy = viewer.layers.selection.active
    assert copy is not a_result and np.array_equal(copy.data, a_result.data)
    copy.fill((32, 25), 0)  # one nucleus erased in the copy
    viewer.layers.selection.active = b_result  # B's result looked at, then the copy again
    viewer.layers.selection.active = copy
    click_export(qtbot, widget, monkeypatch, tmp_path / "copy.csv")
    assert pd.read_csv(tmp_path / "copy.csv")["mean_intensity"].round().tolist() == [200] * 3
    viewer.layers.remove(viewer.layers["A"])  # its image closed: measured on the image under it, as before
    viewer.layers.selection.active = copy
    click_export(qtbot, widget, monkeypatch, tmp_path / "without_a.csv")
    assert pd.read_csv(tmp_path / "without_a.csv")["mean_intensity"].round().tolist() == [100] * 3
    assert notifications.messages["error"] == []


def test_export_adds_csv_to_a_name_typed_without_it_and_asks_before_replacing_that_file(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    # QA: "mytable" typed in the save dialog was written as "mytable", without .csv.
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    monkeypatch.setattr(_widget.QFileDialog, "getSaveFileName", lambda *args: (str(tmp_path / "mytable"), ""))
    qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
    # written in a thread (50,000 rows held the window a second): the button says so until it is done
    assert not widget.export_button.isEnabled() and widget.export_button.text() == "Exporting..."
    wait_for_export(qtbot, widget)
    assert notifications.messages["info"][-1] == f"Saved the 4 nuclei of 'blobs nuclei' to {tmp_path / 'mytable.csv'}."
    assert [path.name for path in tmp_path.iterdir()] == ["mytable.csv"]
    assert len(pd.read_csv(tmp_path / "mytable.csv")) == 4

    # The dialog asked about "mytable" (there is none): replacing "mytable.csv" is asked here.
    widget.threshold_slider.setValue(0.5)
    typed, suggested, asked = [], [], []
    monkeypatch.setattr(_widget.QFileDialog, "getSaveFileName",
                        lambda parent, caption, name, *args: (suggested.append(name), (typed.pop(0), ""))[1])
    for answer in (QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes):
        monkeypatch.setattr(_widget.QMessageBox, "question",
                            lambda parent, title, text, *args, answer=answer: (asked.append(text), answer)[1])
        typed[:] = [str(tmp_path / "mytable"), ""]  # No goes back to the dialog, where the user cancels
        qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
        wait_for_export(qtbot, widget)
        rows = 4 if answer == QMessageBox.StandardButton.No else 3
        assert len(pd.read_csv(tmp_path / "mytable.csv")) == rows
    assert asked == ["mytable.csv already exists. Do you want to replace it?"] * 2
    assert suggested == ["blobs nuclei.csv", str(tmp_path / "mytable.csv"), "blobs nuclei.csv"]
    assert [path.name for path in tmp_path.iterdir()] == ["mytable.csv"]
    click_export(qtbot, widget, monkeypatch, tmp_path / "nuclei 2024.05.03")  # a dot, but no suffix of letters
    click_export(qtbot, widget, monkeypatch, tmp_path / "nuclei.txt")  # a suffix of the user's: as typed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mytable.csv", "nuclei 2024.05.03.csv", "nuclei.txt"]
    assert notifications.messages["error"] == []


def test_a_stack_is_segmented_plane_by_plane_with_progress(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    stack = np.stack([blobs((200,)), blobs((200, 200)), blobs((200, 200, 200))])
    image = viewer.add_image(stack, name="stack")
    progress = []
    widget.progress_bar.valueChanged.connect(progress.append)

    click_segment(qtbot, widget)

    (labels,) = labels_layers(viewer)
    assert labels.data.shape == stack.shape == image.data.shape
    assert fake_network.calls == 3
    assert [len(np.unique(plane[plane > 0])) for plane in labels.data] == [1, 2, 3]
    assert shown_count(widget) == 6  # every nucleus of the stack has its own label
    here = int(viewer.dims.current_step[0]) + 1  # (plane i holds i + 1 nuclei)
    assert widget.count_label.text() == (f"6 nuclei in 'stack nuclei', summed over its 3 planes ({here} in the plane "
                                         "shown); "
                                         "if they are channels, choose the one with the nuclei under Channel")
    assert len(set(progress)) >= 3 and max(progress) == PROGRESS_STEPS
    wait_for_table(qtbot, labels, 6)
    assert labels.features["axis_0"].tolist() == [0, 1, 1, 2, 2, 2]


def test_the_table_of_nuclei_is_shown_follows_edits_and_takes_the_viewer_to_a_nucleus(
    viewer_and_widget, fake_network, qtbot
):
    viewer, widget = viewer_and_widget
    table = widget.table_view
    assert table.isHidden()  # nothing segmented yet
    image = blobs(values=(200, 200, 200), radius=9)
    image[disk(image.shape, (32, 115), 14)] = 200  # the middle nucleus is the largest
    viewer.add_image(image, name="blobs")
    widget.threshold_slider.setValue(0.5)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    wait_for_table(qtbot, labels, 3)
    assert not table.isHidden() and table.rows == 3
    assert "index" not in table.columns and {"label", "area", "centroid_y", "centroid_x"} <= set(table.columns)

    # Sorted by area, largest first, as a user clicks the column's name twice.
    table.sortByColumn(table.columns.index("area"), Qt.SortOrder.DescendingOrder)
    largest = table.row_values(0)
    assert largest["area"] == labels.features["area"].max()
    table.clicked.emit(table.model().index(0, 0))
    assert labels.selected_label == largest["label"] == labels.data[32, 115]
    assert np.allclose(camera(viewer).center[-2:], (largest["centroid_y"], largest["centroid_x"]))
    table.setCurrentIndex(table.model().index(0, 0))
    qtbot.keyClick(table, Qt.Key.Key_Down)  # the arrow keys go from nucleus to nucleus
    second = table.row_values(1)
    assert labels.selected_label == second["label"] != largest["label"]
    assert np.allclose(camera(viewer).center[-2:], (second["centroid_y"], second["centroid_x"]))

    # A nucleus painted by hand gets its row; the table follows the layer.
    labels.brush_size = 7
    labels.paint((8, 8), 9)
    qtbot.waitUntil(lambda: table.rows == 4, timeout=5_000)
    assert 9 in {table.row_values(row)["label"] for row in range(4)}

    viewer.layers.remove(labels)
    assert table.isHidden() and table.rows == 0
    click_segment(qtbot, widget)  # another result: its table in its own order, not sorted by a column of the last
    (labels,) = labels_layers(viewer)
    wait_for_table(qtbot, labels, 3)
    assert [table.row_values(row)["label"] for row in range(3)] == [1, 2, 3]


def test_a_row_of_a_stacks_table_moves_the_slider_to_its_plane(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    stack = np.stack([blobs((200,)), blobs((200, 200)), blobs((200, 200, 200))])
    viewer.add_image(stack, name="stack", scale=(1, 2, 2))
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    wait_for_table(qtbot, labels, 6)
    viewer.dims.set_point(0, 0)
    assert widget.table_view.model().headerData(0, Qt.Orientation.Horizontal) == "plane"  # as Export CSV names it
    last = [row for row in range(6) if widget.table_view.row_values(row)["axis_0"] == 2][-1]
    values = widget.table_view.row_values(last)
    widget.table_view.clicked.emit(widget.table_view.model().index(last, 0))
    assert viewer.dims.current_step[0] == 2
    assert labels.selected_label == values["label"]
    assert np.allclose(camera(viewer).center[-2:], (2 * values["centroid_y"], 2 * values["centroid_x"]))  # world


def test_an_rgb_stack_is_recognised_by_the_layers_rgb_flag(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    gray = np.stack([blobs((200,)), blobs((200, 200))])
    viewer.add_image(np.repeat(gray[..., None], 3, axis=-1), name="rgb stack", rgb=True)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.shape == gray.shape
    assert labels.data.max() == 3 and fake_network.calls == 2


def test_cancel_stops_between_planes_and_leaves_the_layers_alone(
    viewer_and_widget, monkeypatch, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    slow = FakeNetwork(delay=0.5)
    widget.predict = slow
    viewer.add_image(np.stack([blobs()] * 8), name="long stack")

    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(slow.started.is_set, timeout=RUN_TIMEOUT_MS)
    assert widget.cancel_button.isEnabled() and not widget.segment_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)  # the window answers mid-run
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)

    assert slow.calls < 8
    assert labels_layers(viewer) == []
    assert notifications.messages["info"] == ["Segmentation cancelled; the run added and changed no layer."]
    assert widget.segment_button.isEnabled() and not widget.progress_bar.isVisible()


def test_taking_the_image_out_mid_run_stops_the_run_and_adds_nothing(
    viewer_and_widget, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    slow = FakeNetwork(delay=0.5)
    widget.predict = slow
    other = viewer.add_image(blobs(), name="other")
    image = viewer.add_image(np.stack([blobs()] * 8), name="long stack")

    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(slow.started.is_set, timeout=RUN_TIMEOUT_MS)
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)

    assert slow.calls < 8  # stopped, not run to the end for nothing
    assert list(viewer.layers) == [other]
    assert notifications.messages["info"] == [
        "'long stack' was taken out during the run, so the run was stopped; no layer was added."]
    assert notifications.messages["error"] == [] and widget.segment_button.isEnabled()


def test_new_data_given_to_the_image_mid_run_adds_no_result_of_the_old_data(
    viewer_and_widget, notifications, qtbot
):
    """QA: data replaced during a run (by the user or another plugin) got labels of the old data, measured on
    the new (mean intensity 17.9 where the old data gave 50.2), or 1024 x 1024 labels on a 512 x 700 image."""
    viewer, widget = viewer_and_widget
    slow = FakeNetwork(delay=0.3)
    widget.predict = slow
    image = viewer.add_image(np.stack([blobs()] * 3), name="stack")
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(slow.started.is_set, timeout=RUN_TIMEOUT_MS)
    image.data = np.stack([blobs((200,))] * 3)  # the same shape, one nucleus a plane
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)

    assert labels_layers(viewer) == []
    assert notifications.messages["info"] == [
        "'stack' was given new data during the run, so no layer was added (its nuclei would be those of the data "
        "it had); press Segment to segment the new data."]
    click_segment(qtbot, widget)  # and the new data is segmented as any image
    assert shown_count(widget) == 3


def test_the_probability_map_can_be_shown(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    click_segment(qtbot, widget)
    widget.probability_check.setChecked(True)
    probability = viewer.layers["blobs nucleus probability"]
    assert probability.data.shape == (64, 200)
    # The cache keeps probabilities in steps of 1 / NUCLEUS_LEVELS, read back as their middle.
    assert probability.data.max() == pytest.approx(240 / 255, abs=0.5 / compact.NUCLEUS_LEVELS)
    # The map is no image to segment: the picker does not offer it, even once the image is gone.
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["blobs"]
    viewer.layers.remove("blobs")
    assert widget.image_combo.count() == 0 and widget.image_layer is None


def test_results_lie_where_the_image_lies_in_the_world(viewer_and_widget, fake_network, qtbot):
    # A calibrated, rotated image: the labels and the probability map must overlay it exactly.
    viewer, widget = viewer_and_widget
    image = viewer.add_image(blobs(), name="blobs", scale=(0.5, 0.25), translate=(10, -4), rotate=30, shear=[0.2])
    click_segment(qtbot, widget)
    widget.probability_check.setChecked(True)
    (labels,) = labels_layers(viewer)
    for result in (labels, viewer.layers["blobs nucleus probability"]):
        for pixel in [(0, 0), (32, 25), (63, 199)]:
            np.testing.assert_allclose(result.data_to_world(pixel), image.data_to_world(pixel))


@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.5, 0.25)], ids=["square", "oblong"])
def test_the_table_gives_sizes_in_the_images_unit_when_it_has_one(viewer_and_widget, fake_network, qtbot, scale):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="plain")
    viewer.add_image(blobs(), name="calibrated", scale=scale, translate=(10, 20), units=("um", "um"))
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)  # the image just opened: "calibrated"
    widget.image_combo.setCurrentIndex(0)
    click_segment(qtbot, widget)
    calibrated, plain = (viewer.layers[f"{name} nuclei"] for name in ("calibrated", "plain"))
    wait_for_table(qtbot, calibrated, 4)
    wait_for_table(qtbot, plain, 4)
    table = calibrated.features
    np.testing.assert_allclose(table["area_um2"], table["area"] * scale[0] * scale[1])
    np.testing.assert_allclose(table["centroid_x_um"], 20 + table["centroid_x"] * scale[1])
    # lengths only where a pixel is as long as it is wide
    assert ("perimeter_um" in table) == (scale[0] == scale[1])
    assert not any(column.endswith("_um") or column.endswith("_um2") for column in plain.features)


def test_a_pixel_size_given_to_the_image_after_a_run_reaches_its_result_and_table(
    viewer_and_widget, fake_network, monkeypatch, qtbot, tmp_path
):
    # QA: set after a first run, the pixel size never reached the result: drawn 3x too large, no um columns.
    viewer, widget = viewer_and_widget
    image = viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    widget.probability_check.setChecked(True)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    wait_for_table(qtbot, labels, 4)

    def lies_on_the_image(*results):
        for result in results:
            assert result.units == image.units
            for pixel in [(0, 0), (63, 199)]:
                np.testing.assert_allclose(result.data_to_world(pixel), image.data_to_world(pixel))

    def exported_at_once(scale):
        click_export(qtbot, widget, monkeypatch, tmp_path / "nuclei.csv")
        table = pd.read_csv(tmp_path / "nuclei.csv")
        np.testing.assert_allclose(table["area_um2"], table["area"] * scale**2)
        np.testing.assert_allclose(table["centroid_x_um"], 20 + table["centroid_x"] * scale)
        return table

    image.scale, image.translate, image.units = (0.325, 0.325), (10, 20), ("um", "um")
    lies_on_the_image(labels, viewer.layers["blobs nucleus probability"])  # at once (review: until a re-label,
    # it lay where it was, and Export had no um; the probability map until it was shown again)
    assert len(exported_at_once(0.325)) == 4
    click_segment(qtbot, widget)  # Segment again: the same labels, in place
    assert labels_layers(viewer) == [labels]
    lies_on_the_image(labels, viewer.layers["blobs nucleus probability"])

    image.scale = (0.5, 0.5)
    widget.threshold_slider.setValue(0.5)  # re-labelled in place
    assert labels_layers(viewer) == [labels] and labels.data.max() == 3
    lies_on_the_image(labels)
    assert len(exported_at_once(0.5)) == 3

    # A layer edited by hand follows the image too, its pixels as they are; the next result goes to a new layer.
    labels.paint((8, 8), 4)
    qtbot.waitUntil(lambda: shown_count(widget) == 4, timeout=5_000)
    edited = labels.data.copy()
    image.scale = (0.25, 0.25)
    lies_on_the_image(labels)
    widget.threshold_slider.setValue(0.7)
    second, first = labels_layers(viewer)
    assert first is labels and np.array_equal(first.data, edited)
    lies_on_the_image(second)
    assert len(exported_at_once(0.25)) == 4  # the edited layer, still selected
    viewer.layers.selection.active = second
    assert len(exported_at_once(0.25)) == 2


def test_the_widget_opened_picks_the_image_selected(make_napari_viewer):
    """QA: the tissue sample opened, then the fluorescence sample (selected by napari), then the widget opened:
    it chose the tissue sample, and Segment segmented the image the user was not looking at."""
    viewer = make_napari_viewer()
    viewer.add_image(blobs(), name="first")
    viewer.add_image(blobs()[::-1].copy(), name="second")
    assert viewer.layers.selection.active.name == "second"
    assert open_widget(viewer).image_combo.layer.name == "second"


def test_the_image_picker_follows_added_renamed_and_removed_layers(viewer_and_widget):
    viewer, widget = viewer_and_widget
    items = lambda: [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]  # noqa: E731
    first = viewer.add_image(blobs(), name="first")
    viewer.add_points([[1, 1]], name="points")
    second = viewer.add_image(blobs(), name="second")
    assert items() == ["first", "second"] and widget.image_layer is second  # the image just opened
    viewer.layers.selection.active = first  # selected in the layer list: the image to segment
    assert widget.image_layer is first
    viewer.layers.selection.active = viewer.layers["points"]  # not an image: the choice stays
    assert widget.image_layer is first
    viewer.layers.remove_selected()  # napari then selects another layer by itself: not the user's choice
    assert viewer.layers.selection.active in (first, second) and widget.image_layer is first
    viewer.add_points([[1, 1]], name="points")
    widget.image_combo.setCurrentIndex(1)
    widget.image_combo.setCurrentIndex(0)
    first.name = "renamed"
    assert items() == ["renamed", "second"] and widget.image_layer is first
    viewer.layers.remove(first)
    assert items() == ["second"] and widget.image_layer is second
    viewer.layers.remove(second)
    assert items() == [] and widget.image_layer is None


@pytest.mark.parametrize("names", [["DAPI", "Ki-67"], ["C1 GFP", "C2 Hoechst 33342", "C3 mCherry"]])
def test_of_the_channels_opened_together_the_nuclear_stain_is_picked(viewer_and_widget, qtbot, names):
    """QA: a file opened as a layer per channel (channel_axis, as readers split CZI, ND2 or LIF files) had
    the last channel picked, the one napari selects (a marker: 30 nuclei against 62), without a word."""
    viewer, widget = viewer_and_widget
    channels = np.stack([blobs()] * len(names))
    layers = viewer.add_image(channels, channel_axis=0, name=names)
    nuclear = next(layer for layer in layers if "DAPI" in layer.name or "Hoechst" in layer.name)
    assert viewer.layers.selection.active is layers[-1] and widget.image_layer is nuclear
    qtbot.wait(20)  # the next event loop: then the user's own choice in the layer list counts
    marker = layers[-1]
    viewer.layers.selection.active = nuclear
    viewer.layers.selection.active = marker  # the user clicks the marker
    assert widget.image_layer is marker
    plain = viewer.add_image(channels, channel_axis=0, name=[f"C{k}" for k in range(len(names))])  # none: the last
    assert widget.image_layer is plain[-1]


def test_a_nuclear_channel_taken_out_or_of_another_shape_is_not_picked(viewer_and_widget):
    """Review: DAPI opened with GFP and taken out again before the event loop ran, then another image opened,
    raised ValueError (the picker went for the DAPI no longer there)."""
    viewer, widget = viewer_and_widget
    dapi, gfp = viewer.add_image(np.stack([blobs()] * 2), channel_axis=0, name=["DAPI", "GFP"])
    viewer.layers.remove(dapi)
    other = viewer.add_image(blobs(), name="segment me")
    assert widget.image_layer is other
    viewer.add_image(blobs()[:32], name="nuclei of a crop")  # another shape: no sibling of the next one
    last = viewer.add_image(blobs(), name="marker")
    assert widget.image_layer is last


def test_the_model_picker_describes_models_and_opens_custom_weights_files(
    viewer_and_widget, tiny_weights, notifications, monkeypatch, tmp_path
):
    viewer, widget = viewer_and_widget
    combo = widget.model_combo
    tooltip = lambda index: combo.itemData(index, Qt.ItemDataRole.ToolTipRole)  # noqa: E731
    assert [combo.itemText(i) for i in range(combo.count())] == [  # issue 17, item 11: by their names
        "UNet", "UNet++", "HRNet", "tiny-unet.safetensors", "Custom weights file...",
    ]
    assert [combo.itemData(i) for i in range(3)] == ["unet", "unetpp", "hrnet"]
    assert "Trained on: none: random initialisation" in tooltip(combo.currentIndex())
    for index in range(3):  # bundled models: what they are good at, or that they are missing
        assert ("Scores on images it was not trained on" in tooltip(index) and "Licence" in tooltip(index)
                and "dsb_score" not in tooltip(index)) or "missing" in tooltip(index)

    def choose_custom(path):
        monkeypatch.setattr(_widget.QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
        custom = combo.findText("Custom weights file...")
        combo.setCurrentIndex(custom)
        combo.activated.emit(custom)  # what picking the item with the mouse emits

    choose_custom(tiny_weights["hrnet"])
    assert combo.currentText() == "tiny-hrnet.safetensors"
    assert "Architecture: hrnet" in tooltip(combo.currentIndex())

    (tmp_path / "empty.safetensors").write_bytes(b"")
    choose_custom(tmp_path / "empty.safetensors")
    assert notifications.messages["error"] == ["empty.safetensors: the file is empty."]
    assert combo.currentText() == "tiny-hrnet.safetensors"  # back to the last good choice

    choose_custom("")  # the dialog was cancelled
    assert combo.currentText() == "tiny-hrnet.safetensors"


def test_a_weights_file_refused_when_it_runs_leaves_the_list_for_the_last_good_model(
    viewer_and_widget, tiny_weights, notifications, qtbot, tmp_path
):
    """Issue 17, item 12: a file that passes the check of its metadata but fails when it is loaded (tensors
    of another architecture) no longer stays chosen, nor piles up in the list."""
    from napari_nucleiseg.weights import save_weights

    from conftest import build_tiny, tiny_metadata

    viewer, widget = viewer_and_widget
    combo = widget.model_combo
    items = lambda: [combo.itemText(i) for i in range(combo.count())]  # noqa: E731
    viewer.add_image(blobs(), name="blobs")
    for attempt in range(2):
        mixed = save_weights(tmp_path / f"mixed-{attempt}.safetensors", build_tiny("hrnet"), tiny_metadata("unet"))
        assert widget.set_weights_file(mixed)
        click_segment(qtbot, widget)
        message = notifications.messages["error"][-1]
        assert message.startswith(f"{mixed.name}: the tensors do not match a 'unet' model: ")
        assert message.endswith("; it is taken out of the Model list, and tiny-unet.safetensors is chosen again.")
        assert combo.currentText() == "tiny-unet.safetensors"
        assert items() == ["UNet", "UNet++", "HRNet", "tiny-unet.safetensors", "Custom weights file..."]
    assert labels_layers(viewer) == []
    click_segment(qtbot, widget)  # the last good model runs
    assert len(labels_layers(viewer)) == 1 and len(notifications.messages["error"]) == 2


def test_every_control_says_what_it_does(viewer_and_widget, fake_network, qtbot):
    """Issue 17, item 11: a tooltip on every control, its row's name, and the count line."""
    from qtpy.QtWidgets import QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLabel

    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([blobs(), blobs()], axis=-1), name="two channels")  # the Channel row shows too
    click_segment(qtbot, widget)

    def tooltip(control) -> str:  # Qt shows the nearest one: the control's own, or its parent's
        while control is not widget and not control.toolTip():
            control = control.parentWidget()
        return control.toolTip() if control is not widget else ""

    kinds = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLabel)
    controls = [child for child in widget.findChildren(kinds) if child.isVisibleTo(widget)]
    assert len(controls) > 20
    assert [control for control in controls if not tooltip(control)] == []
    for control in (widget.cancel_button, widget.probability_check, widget.count_label, widget.export_button,
                    widget.channel_combo, widget.channel_combo.label, widget.diameter_control):
        assert control.toolTip()
    assert widget.model_combo.toolTip().startswith("The network that finds the nuclei")
    assert "Architecture: unet" in widget.model_combo.toolTip()  # and the chosen model's description


def test_a_long_layer_name_does_not_widen_the_dock(viewer_and_widget, fake_network, qtbot):
    """Issue 17, item 11: a 200-character name made the dock about 500 px wide (1,600 here), until napari
    restarted; the pickers elide it, the count line shortens it (whole in its tooltip)."""
    viewer, widget = viewer_and_widget
    name = "a" * 200
    viewer.add_image(blobs(), name=name)
    click_segment(qtbot, widget)
    qtbot.wait(10)
    widget.layout().activate()
    assert widget.image_combo.currentText() == name and shown_count(widget) == 3
    assert widget.sizeHint().width() < 450 and widget.minimumSizeHint().width() < 450
    assert widget.image_combo.sizeHint().width() < 300 and widget.count_label.sizeHint().width() < 450
    assert not widget.image_combo.grab().isNull()  # painted elided
    assert "…" in widget.count_label.text() and f"'{name} nuclei'" in widget.count_label.toolTip()
    viewer.add_image(blobs(), name="short")
    click_segment(qtbot, widget)
    assert widget.count_label.text() == "3 nuclei in 'short nuclei'"
    assert widget.count_label.toolTip() == widget.count_label.HELP


def test_running_synchronously_gives_what_the_worker_gives(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    click_segment(qtbot, widget)
    threaded = labels_layers(viewer)[0].data.copy()
    viewer.layers.remove(labels_layers(viewer)[0])
    widget.run_synchronously = True
    widget.segment()
    assert not widget.running
    assert np.array_equal(labels_layers(viewer)[0].data, threaded) and threaded.max() == 3


def start_a_long_run(make_napari_viewer, tiny_weights, qtbot):
    """``(viewer, dock, widget, network)``: the widget docked as napari docks it, segmenting a stack of
    20 planes with a slow fake network, which has started."""
    slow = FakeNetwork(delay=0.3)
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Nuclei segmentation")
    widget.predict = slow
    widget.set_weights_file(tiny_weights["unet"])
    viewer.add_image(np.stack([blobs()] * 20), name="long stack")
    widget.segment()
    qtbot.waitUntil(slow.started.is_set, timeout=RUN_TIMEOUT_MS)
    return viewer, dock, widget, slow


def test_closing_the_widget_mid_run_stops_the_worker(make_napari_viewer, tiny_weights, monkeypatch, qtbot):
    viewer, dock, widget, slow = start_a_long_run(make_napari_viewer, tiny_weights, qtbot)
    viewer.window.remove_dock_widget(dock)
    widget.deleteLater()
    with qtbot.waitSignal(widget.destroyed, timeout=5_000):
        pass
    calls = slow.calls
    time.sleep(1.0)
    assert slow.calls <= calls + 1 < 20  # at most the plane under way finishes
    assert labels_layers(viewer) == []


def test_the_docks_close_button_mid_run_cancels_the_run(make_napari_viewer, tiny_weights, qtbot):
    """Issue 17, item 13: napari's close button takes the widget out of its dock and keeps it (it is
    neither closed nor destroyed); the run under way must stop there and add no layer."""
    viewer, dock, widget, slow = start_a_long_run(make_napari_viewer, tiny_weights, qtbot)
    dock.title.close_button.click()
    calls = slow.calls
    qtbot.wait(1500)
    assert slow.calls <= calls + 1 < 20  # at most the plane under way finishes
    assert labels_layers(viewer) == [] and not widget.running


def test_the_widget_opened_again_after_its_dock_was_closed_still_acts_on_its_results(
    viewer_and_widget, fake_network, qtbot
):
    """QA: napari's close button, then Plugins > Nuclei segmentation again: a new widget knew none of the
    results (the threshold no longer moved them; their count and table were gone). The widget comes back with
    them, and its settings."""
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.max() == 4 and shown_count(widget) == 4

    widget.parentWidget().title.close_button.click()  # the dock's close button
    qtbot.waitUntil(lambda: not widget.isVisible(), timeout=5_000)
    again = open_widget(viewer)

    assert again.count_label.text().startswith("4 nuclei in 'blobs nuclei'")
    assert again.threshold_slider.value() == pytest.approx(0.3)
    again.threshold_slider.setValue(0.7)
    assert labels.data.max() == 2 and shown_count(again) == 2  # the same result, re-labelled in place
    assert labels_layers(viewer) == [labels] and fake_network.calls == 1  # without the network
    wait_for_table(qtbot, labels, 2)
    assert again.table_view.model().rowCount() == 2


def test_the_plugins_menu_opens_the_widget_and_after_its_dock_was_closed_brings_it_back(
    make_napari_viewer, tiny_weights, qtbot
):
    """QA: Plugins > Nuclei segmentation (napari's menu action, which takes only a QWidget class) raised a
    TypeError and opened nothing once napari.yaml named a factory that was not one."""
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()

    def open_from_menu() -> NucleiSegWidget:
        widget, _ = get_app_model().commands.execute_command("napari-nucleiseg.open_widget").result()
        assert isinstance(widget, NucleiSegWidget)
        qtbot.waitUntil(lambda: widget.parentWidget() is not None, timeout=5_000)  # docked
        return widget

    widget = open_from_menu()
    widget.predict = FakeNetwork()
    assert widget.set_weights_file(tiny_weights["unet"])
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    assert shown_count(widget) == 4
    widget.parentWidget().title.close_button.click()
    qtbot.waitUntil(lambda: not widget.isVisible(), timeout=5_000)
    assert open_from_menu() is widget and widget.count_label.text().startswith("4 nuclei in 'blobs nuclei'")

    # A widget of a script's, docked again by it after its dock was closed, is no longer kept for the menu (review)
    own = NucleiSegWidget(viewer)
    dock = viewer.window.add_dock_widget(own, name="mine")
    dock.title.close_button.click()
    qtbot.waitUntil(lambda: any(ref() is own for ref in _widget._CLOSED), timeout=5_000)
    viewer.window.add_dock_widget(own, name="mine again")
    assert not any(ref() is own for ref in _widget._CLOSED)


def test_bad_input_gets_one_sentence_and_no_traceback(viewer_and_widget, notifications, monkeypatch, tmp_path, qtbot):
    viewer, widget = viewer_and_widget
    errors = notifications.messages["error"]

    click_segment(qtbot, widget)  # nothing open
    viewer.add_points([[1, 1]], name="spots")
    click_segment(qtbot, widget)  # only a Points layer
    assert errors[0] == "There is no image layer to segment; open an image first."
    assert "'spots' is a Points layer" in errors[1]

    not_ours = tmp_path / "not ours.safetensors"
    not_ours.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    model_before = widget.model_combo.currentText()
    assert not widget.set_weights_file(not_ours)
    assert "not a napari-nucleiseg weights file" in errors[-1]
    assert widget.model_combo.currentText() == model_before

    # The bundled weights are not installed: say so when the user picks one.
    monkeypatch.setattr("napari_nucleiseg.weights.weights_dir", lambda: tmp_path)
    viewer.add_image(blobs(), name="blobs")
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("unet"))
    click_segment(qtbot, widget)
    assert "bundled weights of 'unet' are missing" in errors[-1]

    assert labels_layers(viewer) == []
    for message in errors:
        assert "\n" not in message and "Traceback" not in message and message.endswith(".")


def test_a_weights_file_of_another_architecture_is_reported_after_loading(
    viewer_and_widget, notifications, tmp_path, qtbot
):
    from napari_nucleiseg.weights import read_metadata, save_weights

    viewer, widget = viewer_and_widget
    from conftest import build_tiny

    metadata = read_metadata(widget.model_combo.weights_path())  # a tiny unet's metadata on hrnet tensors
    wrong = save_weights(tmp_path / "wrong.safetensors", build_tiny("hrnet"), metadata)
    assert widget.set_weights_file(wrong)
    viewer.add_image(blobs(), name="blobs")
    click_segment(qtbot, widget)
    (message,) = notifications.messages["error"]
    assert message.startswith("wrong.safetensors: the tensors do not match a 'unet' model")
    assert labels_layers(viewer) == []


def test_tiny_constant_and_odd_valued_images_segment_without_error(viewer_and_widget, notifications, qtbot):
    viewer, widget = viewer_and_widget
    odd = np.linspace(-5.0, 5.0, 33 * 45, dtype=np.float32).reshape(33, 45)
    odd[3, 4], odd[10, 10], odd[20, 30] = np.nan, np.inf, -np.inf
    images = [np.full((1, 1), 7, dtype=np.uint8), np.full((40, 50), 100, dtype=np.uint16), odd]
    for index, data in enumerate(images):
        viewer.add_image(data, name=f"image {index}")
        click_segment(qtbot, widget)
    assert notifications.messages["error"] == []
    assert [layer.data.shape for layer in labels_layers(viewer)] == [image.shape for image in images]


def test_two_models_results_lie_side_by_side_and_neither_overwrites_the_other(
    viewer_and_widget, fake_network, tiny_weights, notifications, qtbot
):
    """Issue 17, item 6: a run with another model goes to its own layer, named for its model; the earlier result is
    hidden, so the new one shows alone (QA: three models' results one over the other were unreadable)."""
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="cells")
    click_segment(qtbot, widget)
    (first,) = labels_layers(viewer)
    before = first.data.copy()
    assert first.name == "cells nuclei" and first.metadata["model"] == "tiny-unet"

    assert widget.set_weights_file(tiny_weights["hrnet"])
    click_segment(qtbot, widget)
    first_again, second = labels_layers(viewer)
    assert first_again is first and np.array_equal(first.data, before)  # not overwritten, though unedited
    assert second.name == "cells nuclei (tiny-hrnet)" and second.metadata["model"] == "tiny-hrnet"
    assert second.visible and not first.visible
    assert notifications.messages["info"][-1] == ("Hidden: 'cells nuclei' (an earlier result of 'cells'), so that "
                                                  "'cells nuclei (tiny-hrnet)' shows alone; tick the eye in the layer "
                                                  "list to compare.")
    first.visible = True  # the user compares: a re-threshold of the new result leaves it shown

    widget.threshold_slider.setValue(0.3)  # moves the second model's result, in its own layer
    qtbot.waitUntil(lambda: not np.array_equal(second.data, before) and shown_count(widget) == 4, timeout=5_000)
    assert np.array_equal(first.data, before) and len(labels_layers(viewer)) == 2 and first.visible


def _dapi_and_marker(channels_last: bool = False) -> np.ndarray:
    """A two-channel image: DAPI (3 nuclei the fake network finds) and a marker with 2 other bright spots."""
    dapi = blobs()
    marker = np.zeros_like(dapi)
    for k in range(2):
        marker[disk(dapi.shape, (15, 40 + 60 * k), 8)] = 220
    return np.stack([dapi, marker], axis=-1 if channels_last else 0)


def test_a_channels_last_image_is_segmented_in_the_channel_chosen_never_summed(
    viewer_and_widget, notifications, fake_network, qtbot
):
    """(Y, X, 2) was refused with advice (issue 17, item 2); a Channel choice now does it in the widget."""
    viewer, widget = viewer_and_widget
    image = viewer.add_image(_dapi_and_marker(channels_last=True), name="two channels")
    assert not widget.channel_combo.isHidden() and widget.channel_combo.currentText() == "channel 0"
    assert [widget.channel_combo.itemText(i) for i in range(widget.channel_combo.count())] == ["channel 0", "channel 1"]
    click_segment(qtbot, widget)
    (dapi,) = labels_layers(viewer)
    assert dapi.data.shape == (*image.data.shape[:2], 1) and shown_count(widget) == 3
    assert np.array_equal(dapi.extent.world[:, :2], image.extent.world[:, :2])  # on the image's rows and columns
    assert dapi.name == "two channels channel 0 nuclei" and dapi.metadata["channel"] == 0
    wait_for_table(qtbot, dapi, 3)
    assert dapi.features["mean_intensity"].round().tolist() == [140, 200, 240]  # measured in channel 0
    # channel 0 by default, and said so (QA: a file with DAPI second was segmented in its marker without a word)
    assert notifications.messages["info"] == ["'two channels': Channel 0 of 2 is segmented (none was chosen); if "
                                              "the nuclei are in another, choose it under Channel."]

    widget.channel_combo.setCurrentIndex(1)
    click_segment(qtbot, widget)
    marker = labels_layers(viewer)[-1]
    assert marker is not dapi and shown_count(widget) == 2 and marker.name == "two channels channel 1 nuclei"
    assert np.array_equal(labels_layers(viewer)[0].data, dapi.data)  # the DAPI result is kept
    assert notifications.messages["error"] == [] and len(notifications.messages["info"]) == 1  # chosen: no note


def test_an_image_of_six_channels_last_offers_each_channel(viewer_and_widget, notifications, fake_network, qtbot):
    """(Y, X, 6), as a multiplexed stain: refused with advice to use a Channel picker it did not show."""
    viewer, widget = viewer_and_widget
    six = np.concatenate([_dapi_and_marker(channels_last=True)] * 3, axis=-1)
    viewer.add_image(six, name="six", scale=(0.5, 0.25, 1), units=("um", "um", "pixel"))
    assert widget.channel_combo.count() == 6 and widget.channel_combo.currentText() == "channel 0"
    widget.channel_combo.setCurrentIndex(2)
    click_segment(qtbot, widget)
    (dapi,) = labels_layers(viewer)
    assert dapi.data.shape == (*six.shape[:2], 1) and shown_count(widget) == 3 and dapi.metadata["channel"] == 2
    wait_for_table(qtbot, dapi, 3)  # in the image's unit: its y and x pixels, not its x and channel axes
    np.testing.assert_allclose(dapi.features["area_um2"], dapi.features["area"] * 0.5 * 0.25)
    np.testing.assert_allclose(dapi.features["centroid_x_um"], dapi.features["centroid_x"] * 0.25)
    assert notifications.messages["error"] == []


def test_a_cmyk_jpeg_opened_by_napari_is_refused_with_how_to_segment_it(viewer_and_widget, notifications, qtbot,
                                                                         tmp_path):
    """QA: napari reads a CMYK JPEG's four inks as RGBA: an H&E picture gave 13,270 nuclei and a note calling it
    a fluorescence overlay; a gray one nothing, 'transparent everywhere'. The command line converts such files."""
    from PIL import Image as Picture

    viewer, widget = viewer_and_widget
    path = tmp_path / "cmyk.jpg"
    Picture.fromarray(np.repeat(blobs()[..., None], 3, axis=2)).convert("CMYK").save(path, quality=95)
    (layer,) = viewer.open(path)
    assert layer.rgb and layer.data.shape[-1] == 4  # napari's reading, which the widget cannot change
    widget.segment()
    assert notifications.messages["error"] == [
        "'cmyk' is a CMYK JPEG, which napari opens as its four inks (cyan, magenta, yellow, black) shown as red, "
        "green, blue and transparency; save it as an RGB picture (in Fiji: Image > Type > RGB Color), or segment the "
        f'file with the command line, which converts it: nucleiseg segment "{path}" --out nuclei-results.']
    assert labels_layers(viewer) == []


def test_a_gray_image_with_a_last_axis_of_one_is_segmented_as_gray(viewer_and_widget, notifications, fake_network, qtbot):
    """QA: a (Y, X, 1) TIFF (or array) was refused: 'planes of 696 x 1 pixels ... choose the widget's Channel',
    a picker it did not show. segment() and the command line take it as gray."""
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs()[..., None], name="one")
    assert not widget.channel_combo.isHidden() and widget.channel_combo.currentText() == "channel 0"
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (nuclei,) = labels_layers(viewer)
    assert nuclei.data.shape == (*blobs().shape, 1) and shown_count(widget) == 4
    assert notifications.messages["error"] == []


def test_a_two_plane_image_nothing_names_is_offered_as_channels_and_the_count_says_so(
    viewer_and_widget, fake_network, qtbot
):
    """Issue 17, bug 3: a DAPI + marker (2, Y, X) image opened as it comes (nothing names its first
    axis) was counted over both planes without a word."""
    viewer, widget = viewer_and_widget
    viewer.add_image(_dapi_and_marker(), name="dapi+marker")
    assert not widget.channel_combo.isHidden()
    assert widget.channel_combo.currentText() == "all 2, as planes of a stack"  # a short stack, unless told
    click_segment(qtbot, widget)
    assert shown_count(widget) == 5 and "if they are channels, choose the one with the nuclei under Channel" in (
        widget.count_label.text())

    widget.channel_combo.setCurrentIndex(widget.channel_combo.findText("channel 0"))
    click_segment(qtbot, widget)
    assert shown_count(widget) == 3 and widget.count_label.text() == "3 nuclei in 'dapi+marker channel 0 nuclei'"
    assert widget.channel_combo.currentText() == "channel 0"  # the choice stays as result layers come and go
    viewer.layers.remove(labels_layers(viewer)[0])
    assert widget.channel_combo.currentText() == "channel 0"
    assert labels_layers(viewer)[-1].data.shape == (64, 200)


def test_a_short_second_axis_nothing_names_is_offered_as_channels_and_the_count_says_so(
    viewer_and_widget, fake_network, qtbot
):
    """QA: a (Z, C, Y, X) DAPI + marker stack added as a plain array was counted over its 12 planes, the
    marker's spots with the nuclei, without the hint or the Channel choice a (C, Y, X) image gets."""
    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([_dapi_and_marker()] * 5), name="zcyx")  # (5, 2, 64, 200): 5 planes of 2 channels
    assert not widget.channel_combo.isHidden()
    assert widget.channel_combo.currentText() == "all 2, as planes of a stack"  # as before, unless told
    click_segment(qtbot, widget)
    assert shown_count(widget) == 25 and "if they are channels, choose the one with the nuclei under Channel" in (
        widget.count_label.text())

    widget.channel_combo.setCurrentIndex(widget.channel_combo.findText("channel 0"))
    click_segment(qtbot, widget)
    assert viewer.layers["zcyx channel 0 nuclei"].data.shape == (5, 1, 64, 200)
    assert widget.count_label.text().startswith("15 nuclei in 'zcyx channel 0 nuclei'")

    viewer.add_image(np.zeros((3, 2, 64, 200), np.uint8), name="two short axes")  # which is C? no guess
    assert widget.channel_combo.isHidden()


def test_an_axis_the_viewer_names_as_channels_starts_at_channel_0_and_z_stays_planes(
    viewer_and_widget, fake_network, qtbot
):
    viewer, widget = viewer_and_widget
    image = viewer.add_image(_dapi_and_marker(), name="named")
    viewer.dims.axis_labels = ("c", "y", "x")
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("named"))
    click_segment(qtbot, widget)  # napari does not tell plugins of new axis labels: Segment looks again
    assert widget.channel_combo.currentText() == "channel 0" and shown_count(widget) == 3

    viewer.dims.axis_labels = ("z", "y", "x")
    assert widget.channel_combo.isHidden()  # before Segment
    click_segment(qtbot, widget)
    assert widget.channel_combo.isHidden() and shown_count(widget) == 5
    assert labels_layers(viewer)[-1].data.shape == image.data.shape
    # a z axis: the planes' nuclei are linked into 3-D nuclei by default (these do not overlap)
    assert widget.count_label.text() == "5 nuclei in 'named nuclei', counted in 3-D (5 sections over its 2 planes)"


def test_an_rgb_stack_whose_axis_the_viewer_names_c_offers_each_picture_as_a_channel(
    viewer_and_widget, fake_network, notifications, qtbot
):
    """QA: the viewer labels an RGB layer's axes without its colours, and the Channel picker read those labels one
    axis off: two RGB pictures on an axis named c were offered as red, green and blue of both at once."""
    viewer, widget = viewer_and_widget
    pictures = np.repeat(_dapi_and_marker()[..., None], 3, axis=-1)  # (2, Y, X, 3): DAPI's picture, the marker's
    viewer.add_image(pictures, name="two pictures", rgb=True, axis_labels=("c", "y", "x"))
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("two pictures"))
    items = [widget.channel_combo.itemText(i) for i in range(widget.channel_combo.count())]
    assert items == ["channel 0", "channel 1", "all 2, as planes of a stack"]
    click_segment(qtbot, widget)
    assert shown_count(widget) == 3 and labels_layers(viewer)[-1].data.shape == pictures.shape[1:3]
    widget.channel_combo.setCurrentIndex(1)
    click_segment(qtbot, widget)
    assert shown_count(widget) == 2  # the marker's picture alone
    assert notifications.messages["error"] == []


def test_the_nuclei_of_a_channel_after_the_first_axis_lie_on_the_image_and_follow_its_sliders(
    viewer_and_widget, fake_network, notifications, qtbot
):
    """A (Z, C, Y, X) image: the result lay on the viewer's last three axes (C, Y, X), so its planes
    followed the C slider and a row of the table moved the C slider to the nucleus's plane."""
    viewer, widget = viewer_and_widget
    dapi = np.stack([blobs((200,)), blobs((200, 200)), blobs((200, 200, 200))])  # 1, 2 and 3 nuclei
    marker = np.zeros_like(dapi)
    marker[:, 5:15, 5:15] = 250
    image = viewer.add_image(np.stack([marker, dapi], axis=1), name="zcyx", axis_labels=("z", "c", "y", "x"),
                             scale=(3, 1, 0.5, 0.5))
    widget.channel_combo.setCurrentIndex(widget.channel_combo.findText("channel 1"))
    assert viewer.dims.current_step[1] == 0
    click_segment(qtbot, widget)
    (nuclei,) = labels_layers(viewer)
    assert nuclei.data.shape == (3, 1, 64, 200)
    # the view goes to channel 1, where the result lies (QA: it stayed at 0, where a brush stroke painted the
    # hidden labels, and napari raised an error)
    assert viewer.dims.current_step[1] == 1
    assert widget.count_label.text() == ("3 nuclei in 'zcyx channel 1 nuclei', counted in 3-D "
                                         "(6 sections over its 3 planes)")
    assert np.array_equal(nuclei.extent.world[:, [0, 2, 3]], image.extent.world[:, [0, 2, 3]])
    assert np.array_equal(nuclei.extent.world[:, 1], [1, 1])  # at channel 1 of the C axis
    widget.probability_check.setChecked(True)
    probability = next(layer for layer in viewer.layers if layer.name == "zcyx nucleus probability")
    assert np.array_equal(probability.extent.world, nuclei.extent.world)
    wait_for_table(qtbot, nuclei, 3)

    viewer.dims.set_point(0, 0)
    deepest = int(np.argmax([widget.table_view.row_values(row)["centroid_z"] for row in range(3)]))
    widget.table_view.clicked.emit(widget.table_view.model().index(deepest, 0))
    assert viewer.dims.current_step[0] == 2 and viewer.dims.current_step[1] == 1  # Z to its plane, C stays

    nuclei.paint((0, 0, 8, 8), 9)  # a hand edit in the first plane
    qtbot.waitUntil(lambda: shown_count(widget) == 4, timeout=5_000)
    wait_for_table(qtbot, nuclei, 4)
    widget.threshold_slider.setValue(0.7)  # the edited layer is kept; a new one lies on the image too
    wait_for_postprocessing(qtbot, widget)
    second = labels_layers(viewer)[0]
    assert second is not nuclei and second.data.shape == (3, 1, 64, 200) and nuclei.data[0, 0, 8, 8] == 9

    widget.channel_combo.setCurrentIndex(widget.channel_combo.findText("channel 0"))  # the marker
    click_segment(qtbot, widget)
    assert np.array_equal(probability.extent.world[:, 1], [0, 0])  # the map moved to channel 0 with it
    assert viewer.dims.current_step[1] == 0
    assert notifications.messages["error"] == []


def test_a_hyperstack_tiff_opened_by_napari_is_segmented_in_a_channel_as_its_file_says(
    viewer_and_widget, fake_network, tmp_path, qtbot
):
    """napari's reader hands an ImageJ (Z, C, Y, X) TIFF over as a bare 4-D array: its marker channel was
    segmented as more planes, and the nuclei summed over the 6 planes."""
    import tifffile

    viewer, widget = viewer_and_widget
    dapi = np.stack([blobs((200,)), blobs((200, 200)), blobs((200, 200, 200))])
    marker = np.zeros_like(dapi)
    marker[:, 5:15, 5:15] = 250
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(path, np.stack([dapi, marker], axis=1), imagej=True, metadata={"axes": "ZCYX"})
    (image,) = viewer.open(str(path), plugin="napari")
    assert image.data.shape == (3, 2, 64, 200) and "axes" not in image.metadata
    widget.image_combo.setCurrentIndex(widget.image_combo.findText(image.name))
    assert [widget.channel_combo.itemText(i) for i in range(widget.channel_combo.count())] == [
        "channel 0", "channel 1", "all 2, as planes of a stack"]
    assert not widget.volumes_check.isHidden() and widget.volumes_check.isChecked()  # its Z axis, named in the file
    click_segment(qtbot, widget)
    (nuclei,) = labels_layers(viewer)
    assert nuclei.data.shape == (3, 1, 64, 200) and widget.count_label.text().startswith(
        "3 nuclei in 'hyperstack channel 0 nuclei', counted in 3-D")


def test_a_planar_rgb_tiff_is_segmented_as_planes_and_the_count_says_how_to_read_it_in_colour(
    viewer_and_widget, fake_network, tmp_path, qtbot
):
    """QA: an RGB TIFF with its colours stored one after another (tifffile's default for a (3, H, W) array) is
    opened by napari as 3 gray planes; the count said 'if they are channels', not what the CLI says of it."""
    import tifffile

    viewer, widget = viewer_and_widget
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.stack([blobs((200,) * 3)] * 3), photometric="rgb")  # (3, 64, 200), stored planar
    (image,) = viewer.open(str(path), plugin="napari")
    assert image.data.shape == (3, 64, 200) and not image.rgb
    widget.image_combo.setCurrentIndex(widget.image_combo.findText(image.name))
    click_segment(qtbot, widget)
    assert shown_count(widget) == 9 and widget.count_label.text().endswith(
        "its file's tags say it is one RGB picture with its colours stored one after another: if it is, save it "
        "with its colours last, (H, W, 3), and open that to segment it in colour")
    assert widget.volumes_check.isHidden()  # its colours are not planes of nuclei (QA: "3-D nuclei" was offered)
    tifffile.imwrite(path, np.stack([blobs((200,) * 3)] * 3), photometric="minisblack")  # a plain stack: as before
    (stack,) = viewer.open(str(path), plugin="napari")
    widget.image_combo.setCurrentIndex(widget.image_combo.findText(stack.name))
    click_segment(qtbot, widget)
    assert "RGB picture" not in widget.count_label.text() and not widget.volumes_check.isHidden()


def test_a_time_series_hyperstack_offers_no_channels_and_its_table_names_its_time_axis(
    viewer_and_widget, fake_network, monkeypatch, tmp_path, qtbot
):
    """QA: an ImageJ TZYX hyperstack opened by napari had its 3 time points offered as channels (and the count
    said 'if they are channels'), and the table and Export named its time column 'plane_0' (the CLI: 't')."""
    import tifffile

    viewer, widget = viewer_and_widget
    stack = np.stack([blobs((200,)), blobs((200, 200)), blobs((200, 200, 200))] + [blobs((200,))] * 3)  # 6 planes
    path = tmp_path / "timelapse.tif"
    tifffile.imwrite(path, np.stack([stack] * 3), imagej=True, metadata={"axes": "TZYX"})
    (image,) = viewer.open(str(path), plugin="napari")
    widget.image_combo.setCurrentIndex(widget.image_combo.findText(image.name))
    assert widget.channel_combo.count() == 0 and widget.channel_combo.isHidden()
    click_segment(qtbot, widget)
    (nuclei,) = labels_layers(viewer)
    assert "channels" not in widget.count_label.text() and "counted in 3-D" in widget.count_label.text()
    wait_for_table(qtbot, nuclei, 9)
    click_export(qtbot, widget, monkeypatch, tmp_path / "nuclei.csv")
    exported = pd.read_csv(tmp_path / "nuclei.csv")
    assert list(exported.columns[:2]) == ["t", "label"] and sorted(set(exported["t"])) == [0, 1, 2]


def test_a_tiff_opened_by_napari_gives_the_table_in_the_micrometres_its_file_records(
    viewer_and_widget, fake_network, monkeypatch, tmp_path, qtbot
):
    """QA: napari's reader sets no scale from a file, so the table and Export of a TIFF recording 0.5 um pixels
    had no um columns in the widget, where the command line's nuclei.csv had them."""
    import tifffile

    viewer, widget = viewer_and_widget
    path = tmp_path / "calibrated.tif"
    tifffile.imwrite(path, blobs(), imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    (image,) = viewer.open(str(path), plugin="napari")
    assert tuple(image.scale) == (1, 1)  # napari's reader: no scale
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    wait_for_table(qtbot, labels, 4)
    np.testing.assert_allclose(labels.features["area_um2"], labels.features["area"] * 0.25)
    click_export(qtbot, widget, monkeypatch, tmp_path / "nuclei.csv")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "nuclei.csv")["equivalent_diameter_um"],
                               labels.features["equivalent_diameter"] * 0.5)


def test_a_z_axis_named_after_the_image_was_opened_ticks_the_3d_box_before_segment(
    viewer_and_widget, fake_network, qtbot
):
    """QA: the box stayed unticked until Segment, which then linked the planes all the same."""
    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([blobs()] * 3), name="stack")
    assert not widget.volumes_check.isHidden() and not widget.volumes_check.isChecked()  # an unnamed axis: off
    viewer.dims.axis_labels = ("z", "y", "x")
    assert not widget.volumes_check.isHidden() and widget.volumes_check.isChecked()
    click_segment(qtbot, widget)
    assert "counted in 3-D" in widget.count_label.text() and widget.volumes_check.isChecked()


# ---- re-thresholding in a worker: the window never freezes, the newest settings win ------------


def test_a_large_image_is_rethresholded_in_a_worker_while_the_window_stays_responsive(
    viewer_and_widget, fake_network, slow_postprocessing, qtbot
):
    viewer, widget = viewer_and_widget
    large = np.tile(blobs(), (16, 5))  # 1024 x 1000: 320 nuclei, above what is re-thresholded at once
    assert large.size > widget.rethresholder.sync_pixels
    viewer.add_image(large, name="large")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert labels.data.max() == 320 and shown_count(widget) == 320
    slow = slow_postprocessing(delay=0.5)  # at least half a second, however fast the machine

    ticks = []
    timer = _outputs.QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    start = time.monotonic()
    widget.threshold_slider.setValue(0.7)
    returned = time.monotonic()
    assert returned - start < 0.25 and widget.postprocessing
    assert labels.data.max() == 320  # the old result stays until the new one is ready
    wait_for_postprocessing(qtbot, widget)
    done = time.monotonic()
    timer.stop()

    assert slow.thresholds == [0.7]
    assert labels.data.max() == 160 and shown_count(widget) == 160  # two of the four disks of each tile
    assert labels_layers(viewer) == [labels]  # in place
    # The event loop ran all along: a 10 ms timer ticked while the worker worked.
    assert len([t for t in ticks if returned < t < done]) >= 10


def test_the_slider_moved_quickly_ends_with_the_last_value_and_its_count(
    viewer_and_widget, fake_network, in_a_worker, slow_postprocessing, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    slow = slow_postprocessing(delay=0.2)

    for threshold in (0.4, 0.5, 0.6, 0.9, 0.5, 0.7):  # faster than post-processing can follow
        widget.threshold_slider.setValue(threshold)
    assert widget.postprocessing
    wait_for_postprocessing(qtbot, widget)

    # The first value went to the worker at once; the moves made while it ran were only noted,
    # and the newest of them was computed next.
    assert slow.thresholds == [0.4, 0.7]
    assert labels.data.max() == 2 and shown_count(widget) == 2
    assert fake_network.calls == 1 and labels_layers(viewer) == [labels]

    # A slower drag: the results follow as they come, and the last one stays.
    shown = []
    labels.events.data.connect(lambda event: shown.append(int(labels.data.max())))
    for threshold in (0.6, 0.5, 0.4, 0.3, 0.5, 0.9):
        widget.threshold_slider.setValue(threshold)
        qtbot.wait(60)
    wait_for_postprocessing(qtbot, widget)
    assert shown[-1] == 1 and slow.thresholds[-1] == 0.9
    assert labels.data.max() == 1 and shown_count(widget) == 1


def test_a_stacks_rethreshold_stops_between_planes_when_the_slider_moves_on(
    viewer_and_widget, fake_network, in_a_worker, slow_postprocessing, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([blobs()] * 4), name="stack")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert shown_count(widget) == 16
    slow = slow_postprocessing(delay=0.3)

    widget.threshold_slider.setValue(0.5)
    qtbot.waitUntil(slow.entered.is_set, timeout=RUN_TIMEOUT_MS)
    widget.threshold_slider.setValue(0.9)
    wait_for_postprocessing(qtbot, widget)

    assert slow.thresholds.count(0.5) < 4 and slow.thresholds.count(0.9) == 4
    assert labels.data.max() == 4 and shown_count(widget) == 4  # one disk in each plane


def test_a_result_computed_before_a_hand_edit_goes_to_a_new_layer(
    viewer_and_widget, fake_network, in_a_worker, slow_postprocessing, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.5)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    slow = slow_postprocessing()
    slow.gate.clear()

    widget.threshold_slider.setValue(0.3)  # the worker starts on the unedited labels ...
    qtbot.waitUntil(slow.entered.is_set, timeout=RUN_TIMEOUT_MS)
    labels.brush_size = 7
    labels.selected_label = 4
    labels.paint((8, 8), 4)  # ... the user paints meanwhile ...
    qtbot.waitUntil(lambda: shown_count(widget) == 4, timeout=5_000)  # the count follows the paint
    edited = labels.data.copy()
    slow.gate.set()  # ... and then the result lands
    wait_for_postprocessing(qtbot, widget)

    second, first = labels_layers(viewer)
    assert first is labels and np.array_equal(first.data, edited) and (first.data == 4).any()
    assert second.name == "blobs nuclei [2]" and second.data.max() == 4
    assert widget.count_label.text().startswith("4 nuclei in 'blobs nuclei [2]' (under your edited")
    assert any(message.startswith("Your corrections are kept: ") for message in notifications.messages["info"])


def test_a_result_for_an_image_since_removed_is_dropped(
    viewer_and_widget, fake_network, in_a_worker, slow_postprocessing, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    image = viewer.add_image(blobs(), name="blobs")
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    before = labels.data.copy()
    slow = slow_postprocessing()
    slow.gate.clear()
    widget.threshold_slider.setValue(0.9)
    qtbot.waitUntil(slow.entered.is_set, timeout=RUN_TIMEOUT_MS)
    viewer.layers.remove(image)
    slow.gate.set()
    wait_for_postprocessing(qtbot, widget)
    assert labels_layers(viewer) == [labels] and np.array_equal(labels.data, before)
    assert notifications.messages["error"] == []


def test_running_synchronously_rethresholds_large_images_at_once(
    viewer_and_widget, fake_network, in_a_worker, qtbot
):
    viewer, widget = viewer_and_widget
    widget.run_synchronously = True
    viewer.add_image(blobs(), name="blobs")
    widget.segment()
    (labels,) = labels_layers(viewer)
    widget.threshold_slider.setValue(0.7)
    assert not widget.postprocessing and labels.data.max() == 2 and shown_count(widget) == 2


def test_the_probabilities_of_a_stack_are_cached_in_3_bytes_a_pixel(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    stack = np.stack([blobs((90, 140, 200, 240))] * 5)
    viewer.add_image(stack, name="stack")
    widget.threshold_slider.setValue(0.5)
    click_segment(qtbot, widget)
    probabilities = widget.rethresholder.cache.probabilities
    assert isinstance(probabilities, compact.CompactProbabilities)
    assert probabilities.nbytes == 3 * stack.size  # float32 maps were 8 bytes a pixel
    # Labels from the compact cache are those of the float32 maps at every threshold of the slider.
    float_maps = np.stack([fake_network(plane, None) for plane in stack])
    for threshold in np.round(np.arange(0.3, 0.96, 0.05), 2):
        widget.threshold_slider.setValue(threshold)
        settings = widget.rethresholder.cache.settings.replace(threshold=threshold,
                                                               min_size=widget.min_size_spin.value(), split=True)
        expected = pipeline.labels_from_stack(float_maps, settings)
        assert np.array_equal(labels_layers(viewer)[0].data, expected)
    widget.probability_check.setChecked(True)  # shown from the compact cache, read plane by plane
    shown = viewer.layers["stack nucleus probability"].data
    assert shown.shape == stack.shape
    assert np.asarray(shown[2]).max() == pytest.approx(240 / 255, abs=0.5 / compact.NUCLEUS_LEVELS)


# ---- nucleus diameter: the network runs at the scale of the nuclei, results at the image's ------


@pytest.fixture(scope="module")
def diameter_weights(tmp_path_factory):
    """A shipped model saved again with the diameter it was trained at (18 px) recorded, as new files are."""
    from napari_nucleiseg.weights import load_weights, save_weights

    model = load_weights("unet")
    path = tmp_path_factory.mktemp("diameter_weights") / "unet-d18.safetensors"
    # and a small min size, as the fake network's blobs are small
    return save_weights(path, model.network, model.metadata | {"diameter": 18.0, "min_size": 10})


def wait_for_run(qtbot, widget: NucleiSegWidget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)


def test_auto_diameter_is_estimated_shown_and_the_labels_are_at_full_resolution(
    viewer_and_widget, diameter_weights, notifications, qtbot
):
    from conftest import blob_image

    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    centers = [(40 + 85 * row, 40 + 85 * col) for row in range(3) for col in range(3)]
    image = viewer.add_image(blob_image((256, 256), centers=centers, radius=12), name="nuclei")  # 24 px across
    assert widget.diameter_auto_check.isChecked() and not widget.diameter_spin.isEnabled()

    click_segment(qtbot, widget)  # the real network: estimate, resize, predict, bring back

    (labels,) = labels_layers(viewer)
    assert notifications.messages["error"] == []
    estimate = labels.metadata["diameter"]
    assert labels.metadata["diameter_estimated"] is True and 16 < estimate < 36
    assert widget.diameter_auto_check.text() == f"Auto (estimated {estimate:.1f} px)"
    assert widget.diameter_auto_check.isChecked() and widget.diameter_spin.value() == pytest.approx(estimate, abs=0.05)
    model = widget.run.model
    scale = labels.metadata["scale"]
    assert scale == model.scale_for(estimate) != 1.0  # the network saw the image resized ...
    assert labels.data.shape == image.data.shape == (256, 256)  # ... and the labels are the image's
    assert shown_count(widget) == 9
    # The min size defaults to the model's at the scale of the run (in the image's pixels).
    assert widget.min_size_spin.value() == model.settings_at(scale).min_size != model.settings.min_size
    assert widget.rethresholder.cache.settings.seed_min_size == model.settings_at(scale).seed_min_size
    viewer.add_points([[1, 1]], name="points")  # the picker rebuilds its list: the estimate stays
    qtbot.wait(50)
    assert widget.diameter_auto_check.text() == f"Auto (estimated {estimate:.1f} px)"
    # Another image picked: the estimate was not its own, and is not shown beside it.
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="other")
    assert widget.image_layer is other
    qtbot.waitUntil(lambda: widget.diameter_auto_check.text() == "Auto", timeout=5_000)
    viewer.layers.selection.active = image
    assert widget.image_layer is image


def test_while_the_diameter_is_estimated_the_bar_counts_the_seconds(
    viewer_and_widget, diameter_weights, fake_network, monkeypatch, qtbot
):
    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    gate = threading.Event()

    def slow_estimate(image, model, **options):  # as a large image's estimate takes seconds
        gate.wait(30)
        return 20.0

    monkeypatch.setattr(pipeline, "estimate_diameter", slow_estimate)
    viewer.add_image(blobs(), name="blobs")
    try:
        qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
        assert widget.progress_bar.format() == "Estimating the nucleus diameter..."
        qtbot.waitUntil(lambda: widget.progress_bar.format() == "Estimating the nucleus diameter... 2 s",
                        timeout=10_000)
    finally:
        gate.set()
    wait_for_run(qtbot, widget)
    assert labels_layers(viewer)[0].metadata["diameter"] == 20.0


def test_nuclei_too_small_to_bring_to_the_models_size_are_said_so(
    viewer_and_widget, diameter_weights, fake_network, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    viewer.add_image(blobs(shape=(64, 200)), name="blobs")  # nuclei 18 px across: the model's own size
    click_segment(qtbot, widget)
    assert notifications.messages["info"] == []

    widget.diameter_auto_check.setChecked(False)
    spin = widget.diameter_spin
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin, "1")  # 1 px nuclei: the image is enlarged 8x, the most it may be
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    wait_for_run(qtbot, widget)

    assert fake_network.scales[-1] == 8.0
    (message,) = notifications.messages["info"]
    assert message.startswith("Nuclei reached 8.0 px, not the 18 px the model works best at")
    assert "nuclei of 1.0 px, enlarged 8.00x" in message
    assert notifications.messages["error"] == []


def test_a_diameter_typed_in_runs_the_network_again_and_is_recorded_as_given(
    viewer_and_widget, diameter_weights, fake_network, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    image = viewer.add_image(blobs(shape=(256, 256)), name="blobs")
    click_segment(qtbot, widget)  # Auto: estimated with the real network, predicted with the fake one
    (labels,) = labels_layers(viewer)
    assert fake_network.calls == 1

    widget.diameter_auto_check.setChecked(False)  # the estimate stays: nothing runs yet
    assert widget.diameter_spin.isEnabled() and fake_network.calls == 1
    spin = widget.diameter_spin
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin, "36")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    wait_for_run(qtbot, widget)

    assert fake_network.calls == 2 and fake_network.scales[-1] == 0.5  # one run, not one a keystroke
    assert labels_layers(viewer) == [labels]  # the result is updated in place
    assert labels.metadata == {"diameter": 36.0, "diameter_estimated": False, "scale": 0.5, "augmented": False,
                               "brown_nuclei": False, "noise_smoothing": 0.0, "exclude_border": False, "link_axis": None,
                               "model": "unet", "source_image": str(image.unique_id)}
    assert labels.data.shape == image.data.shape
    assert widget.diameter_auto_check.text() == "Auto" and not widget.diameter_auto_check.isChecked()
    assert widget.min_size_spin.value() == widget.run.model.settings_at(0.5).min_size
    assert notifications.messages["error"] == []

    widget.diameter_auto_check.setChecked(True)  # back to Auto: estimated again
    wait_for_run(qtbot, widget)
    assert fake_network.calls == 3 and labels.metadata["diameter_estimated"] is True


def test_the_threshold_after_a_diameter_run_rethresholds_the_cached_probabilities(
    viewer_and_widget, diameter_weights, fake_network, qtbot
):
    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    image = viewer.add_image(blobs(shape=(256, 256)), name="blobs")
    assert widget.set_diameter(36.0) and fake_network.calls == 0  # nothing segmented yet: nothing runs
    assert not widget.diameter_auto_check.isChecked() and widget.diameter_spin.value() == 36.0
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert fake_network.scales == [0.5]
    min_size = widget.min_size_spin.value()
    assert min_size == widget.run.model.settings_at(0.5).min_size == 4 * widget.run.model.settings.min_size

    counts = {}
    for threshold in (0.3, 0.5, 0.9):
        widget.threshold_slider.setValue(threshold)
        counts[threshold] = shown_count(widget)
    assert counts == {0.3: 4, 0.5: 3, 0.9: 1}
    assert fake_network.calls == 1  # the network ran once; the slider re-used its output
    assert widget.min_size_spin.value() == min_size and labels_layers(viewer) == [labels]
    assert labels.metadata == {"diameter": 36.0, "diameter_estimated": False, "scale": 0.5, "augmented": False,
                               "brown_nuclei": False, "noise_smoothing": 0.0, "exclude_border": False, "link_axis": None,
                               "model": "unet", "source_image": str(image.unique_id)}


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), 300.0])
def test_a_bad_diameter_gets_one_sentence_and_changes_nothing(
    viewer_and_widget, diameter_weights, fake_network, notifications, qtbot, bad
):
    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    viewer.add_image(blobs(shape=(256, 256)), name="blobs")
    widget.set_diameter(24.0)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    before, metadata = labels.data.copy(), dict(labels.metadata)

    if bad >= 0:  # what the box lets a user enter
        widget.diameter_spin.setValue(bad)
    else:
        assert not widget.set_diameter(bad)
    wait_for_run(qtbot, widget)

    (message,) = notifications.messages["error"]
    assert "diameter" in message and message.endswith(".") and "\n" not in message
    assert fake_network.calls == 1 and labels_layers(viewer) == [labels]
    assert np.array_equal(labels.data, before) and labels.metadata == metadata
    assert widget.diameter_spin.value() == 24.0 and not widget.diameter_auto_check.isChecked()


def test_a_diameter_entered_during_a_run_runs_again_when_it_ends(
    viewer_and_widget, diameter_weights, monkeypatch, qtbot
):
    slow = FakeNetwork(delay=0.3)
    viewer, widget = viewer_and_widget
    widget.predict = slow
    assert widget.set_weights_file(diameter_weights)
    viewer.add_image(blobs(shape=(256, 256)), name="blobs")
    widget.set_diameter(24.0)
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(slow.started.is_set, timeout=RUN_TIMEOUT_MS)
    assert widget.set_diameter(36.0)  # the network is busy with 24 px: 36 px follows
    qtbot.waitUntil(lambda: slow.calls == 2 and not widget.running, timeout=RUN_TIMEOUT_MS)
    (labels,) = labels_layers(viewer)
    assert slow.scales == [0.75, 0.5] and labels.metadata["diameter"] == 36.0


def test_the_diameter_box_is_blank_until_an_image_is_sized(viewer_and_widget, diameter_weights, qtbot):
    """QA: before any run the box showed the model's own 18.0 px, greyed beside Auto, which read as an estimate;
    a diameter of 132.1 px showed as '132.'."""
    _, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    trained = widget.model_combo.metadata()["diameter"]
    assert widget.diameter_auto_check.isChecked() and widget.diameter_spin.text() == "-"
    spin = widget.diameter_spin
    assert spin.minimumWidth() >= spin.fontMetrics().horizontalAdvance("132.1 px")
    widget.diameter_auto_check.setChecked(False)  # a number of one's own: the model's diameter is the start
    assert spin.value() == trained and widget.diameter_control.diameter == trained and spin.text() != "-"


def test_a_cancelled_rerun_at_another_diameter_leaves_the_controls_at_the_results(
    viewer_and_widget, diameter_weights, notifications, qtbot
):
    """QA: a result at 24 px, 36 typed, the run cancelled: the box said 36 px beside the result made at 24."""
    slow = FakeNetwork(delay=0.5)
    viewer, widget = viewer_and_widget
    widget.predict = slow
    assert widget.set_weights_file(diameter_weights)
    viewer.add_image(np.stack([blobs(shape=(256, 256))] * 4), name="blobs")
    widget.set_diameter(24.0)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert widget.set_diameter(36.0)
    qtbot.waitUntil(lambda: widget.running and slow.calls > 4, timeout=RUN_TIMEOUT_MS)
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    assert notifications.messages["info"][-1] == "Segmentation cancelled; the run added and changed no layer."
    assert labels_layers(viewer) == [labels] and labels.metadata["diameter"] == 24.0
    assert widget.diameter_spin.value() == 24.0 and not widget.diameter_auto_check.isChecked()
    assert widget.diameter_control.diameter == 24.0


def test_average_4_flips_gives_the_apis_augmented_labels_and_is_recorded(viewer_and_widget, tiny_weights, qtbot):
    viewer, widget = viewer_and_widget
    image = viewer.add_image(blobs(values=(120, 160, 200, 240), shape=(96, 200)), name="blobs")
    one_pass = segment(image.data, tiny_weights["unet"])
    averaged = segment(image.data, tiny_weights["unet"], augment=True)
    assert not np.allclose(one_pass.probabilities, averaged.probabilities, atol=0.01)  # the box can change the maps

    widget.augment_check.setChecked(True)  # nothing runs until Segment
    assert not labels_layers(viewer)
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    np.testing.assert_array_equal(labels.data, averaged.labels)
    assert labels.metadata["augmented"] is True

    widget.augment_check.setChecked(False)
    click_segment(qtbot, widget)
    np.testing.assert_array_equal(labels_layers(viewer)[-1].data, one_pass.labels)
    assert labels_layers(viewer)[-1].metadata["augmented"] is False


def test_average_4_flips_reaches_the_network_of_a_rerun_at_another_diameter(
    viewer_and_widget, diameter_weights, fake_network, qtbot
):
    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(diameter_weights)
    viewer.add_image(blobs(shape=(256, 256)), name="blobs")
    widget.augment_check.setChecked(True)
    widget.set_diameter(24.0)
    click_segment(qtbot, widget)
    assert widget.set_diameter(36.0)
    wait_for_run(qtbot, widget)
    assert fake_network.augments == [True, True] and fake_network.scales == [0.75, 0.5]
    widget.augment_check.setChecked(False)  # for the next Segment: a new diameter redoes the result as it was made
    assert widget.set_diameter(24.0)
    wait_for_run(qtbot, widget)
    assert fake_network.augments == [True, True, True] and labels_layers(viewer)[-1].metadata["augmented"] is True
    click_segment(qtbot, widget)
    assert fake_network.augments[-1] is False


# ---- 3-D nuclei from Z stacks (issue 17, item 5) -------------------------------------------------


def z_stack() -> np.ndarray:
    """``(4, 64, 160)``: two nuclei through all 4 planes (sections of radius 6, 9, 9, 6) and a third in
    the last two: 3 nuclei, 10 sections."""
    stack = np.zeros((4, 64, 160), dtype=np.uint8)
    for z, radius in enumerate((6, 9, 9, 6)):
        for x in (30, 80):
            stack[z][disk((64, 160), (32, x), radius)] = 220
    for z in (2, 3):
        stack[z][disk((64, 160), (32, 130), 8)] = 220
    return stack


def test_a_z_stack_is_counted_in_3d_and_the_box_relabels_it_without_the_network(
    viewer_and_widget, fake_network, notifications, monkeypatch, qtbot, tmp_path
):
    viewer, widget = viewer_and_widget
    stack = z_stack()
    viewer.add_image(stack, name="z stack", axis_labels=("z", "y", "x"))
    click_segment(qtbot, widget)
    (labels,) = labels_layers(viewer)
    assert shown_count(widget) == 3 and labels.data.max() == 3
    assert widget.count_label.text() == "3 nuclei in 'z stack nuclei', counted in 3-D (10 sections over its 4 planes)"
    assert not widget.volumes_check.isHidden() and widget.volumes_check.isChecked()  # on for a Z axis
    assert len(np.unique(labels.data[:, 32, 30])) == 1  # one label through the planes
    assert labels.metadata["link_axis"] == 0
    wait_for_table(qtbot, labels, 3)
    assert labels.features["volume"].tolist() == [np.count_nonzero(labels.data == n) for n in (1, 2, 3)]
    click_export(qtbot, widget, monkeypatch, tmp_path / "3d.csv")
    table = pd.read_csv(tmp_path / "3d.csv")
    assert len(table) == 3 and {"volume", "centroid_z", "first_plane", "last_plane"} <= set(table.columns)
    assert table["first_plane"].tolist() == [0, 0, 2] and "axis_0" not in table.columns

    widget.volumes_check.setChecked(False)  # each plane's nuclei apart again, from the cached maps
    assert shown_count(widget) == 10 and "summed over its 4 planes (" in widget.count_label.text()
    click_export(qtbot, widget, monkeypatch, tmp_path / "planes.csv")
    assert pd.read_csv(tmp_path / "planes.csv")["z"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]  # the axis's label
    widget.volumes_check.setChecked(True)
    assert shown_count(widget) == 3 and labels_layers(viewer) == [labels]
    assert fake_network.calls == 4 and notifications.messages["error"] == []


def test_time_is_never_linked_and_an_unnamed_axis_only_when_ticked(viewer_and_widget, fake_network, qtbot,
                                                                     monkeypatch, tmp_path):
    viewer, widget = viewer_and_widget
    viewer.add_image(z_stack(), name="unnamed")  # nothing names its first axis: off, and it can be ticked
    assert not widget.volumes_check.isHidden() and not widget.volumes_check.isChecked()
    click_segment(qtbot, widget)
    assert shown_count(widget) == 10
    widget.volumes_check.setChecked(True)
    assert shown_count(widget) == 3

    viewer.add_image(z_stack(), name="movie", axis_labels=("t", "y", "x"))
    click_segment(qtbot, widget)
    assert widget.volumes_check.isHidden()
    here = int(viewer.dims.current_step[0])
    per_frame = [2, 2, 3, 3]  # the count of the frame on screen follows the frame (QA: only the sum was said)
    assert widget.count_label.text() == (f"10 nuclei in 'movie nuclei', summed over its 4 planes ({per_frame[here]} in "
                                         "the plane shown)")
    for step, count in ((0, 2), (3, 3)):
        viewer.dims.set_current_step(0, step)  # (counted once the slider rests)
        qtbot.waitUntil(lambda count=count: widget.count_label.text() == (
            f"10 nuclei in 'movie nuclei', summed over its 4 planes ({count} in the plane shown)"), timeout=2_000)
    viewer.dims.ndisplay = 3  # every plane on screen: no plane's count
    qtbot.waitUntil(lambda: widget.count_label.text() == "10 nuclei in 'movie nuclei', summed over its 4 planes",
                    timeout=2_000)
    viewer.dims.ndisplay = 2
    click_export(qtbot, widget, monkeypatch, tmp_path / "movie.csv")
    assert pd.read_csv(tmp_path / "movie.csv")["t"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]  # per time point

    viewer.add_image(np.stack([z_stack()] * 2), name="tz", axis_labels=("t", "z", "y", "x"))
    click_segment(qtbot, widget)
    assert widget.count_label.text() == ("6 nuclei in 'tz nuclei', counted in 3-D (20 sections over its 4 planes), "
                                         "summed over its 2 time points")
    click_export(qtbot, widget, monkeypatch, tmp_path / "tz.csv")
    table = pd.read_csv(tmp_path / "tz.csv")
    assert table["t"].tolist() == [0, 0, 0, 1, 1, 1] and "volume" in table.columns

    # an RGB stack likewise (QA: its "z" was not read, and its time points were offered for linking)
    colour = np.repeat(z_stack()[..., None], 3, axis=-1)
    viewer.add_image(colour, name="rgb movie", rgb=True, axis_labels=("t", "y", "x"))
    click_segment(qtbot, widget)
    assert widget.volumes_check.isHidden() and shown_count(widget) == 10
    viewer.add_image(colour, name="rgb z", rgb=True, axis_labels=("z", "y", "x"))
    click_segment(qtbot, widget)
    assert not widget.volumes_check.isHidden() and widget.volumes_check.isChecked()
    assert shown_count(widget) == 3 and "counted in 3-D" in widget.count_label.text()


# ---- whose result the settings move (issue 17, item 8) --------------------------------------------


def segment_new_image(qtbot, viewer, widget: NucleiSegWidget, image: np.ndarray, name: str) -> Labels:
    """Open ``image`` as ``name``, segment it, and return its result layer."""
    viewer.add_image(image, name=name)
    click_segment(qtbot, widget)
    return labels_layers(viewer)[-1]


def test_the_settings_act_on_the_selected_result_and_show_how_it_was_made(
    viewer_and_widget, fake_network, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    four = segment_new_image(qtbot, viewer, widget, blobs(), "four")
    two = segment_new_image(qtbot, viewer, widget, blobs((200, 200)), "two")
    two_image = viewer.layers["two"]
    widget.threshold_slider.setValue(0.9)  # the latest result follows
    widget.exclude_border_check.setChecked(True)
    assert two.data.max() == 0 and four.data.max() == 4

    viewer.layers.selection.active = four  # the user selects the first result: the settings it was made with
    assert widget.threshold_slider.value() == 0.3 and not widget.exclude_border_check.isChecked()
    widget.threshold_slider.setValue(0.7)
    assert four.data.max() == 2 and shown_count(widget) == 2 and two.data.max() == 0
    assert widget.target_label.text() == "Settings apply to: 'four nuclei'"

    viewer.layers.selection.active = two_image  # not a result: the settings still act on 'four nuclei'
    widget.threshold_slider.setValue(0.5)
    assert four.data.max() == 3 and two.data.max() == 0
    assert widget.target_label.text() == "Settings apply to: 'four nuclei' (still: 'two' is not a result)"
    two_image.name = "second"  # (QA: the line kept the old name)
    assert widget.target_label.text() == "Settings apply to: 'four nuclei' (still: 'second' is not a result)"

    viewer.layers.selection.active = two
    assert widget.threshold_slider.value() == 0.9 and widget.exclude_border_check.isChecked()
    assert widget.target_label.text() == "Settings apply to: 'two nuclei'"
    widget.threshold_slider.setValue(0.5)
    assert two.data.max() == 2 and four.data.max() == 3
    assert fake_network.calls == 2 and labels_layers(viewer) == [four, two]  # each in place, no network

    viewer.layers.remove(two)  # the target is taken out: the result still open is the target
    assert widget.target_label.text() == "Settings apply to: 'four nuclei'"
    assert widget.threshold_slider.value() == 0.5 and notifications.messages["error"] == []

    viewer.layers.remove("four")  # its image taken out: no word of segmenting it again (QA), nothing changes
    assert widget.target_label.text() == ("The settings cannot change 'four nuclei': its image was removed. They "
                                          "apply to the next result")
    widget.threshold_slider.setValue(0.3)
    assert four.data.max() == 3 and "its image was removed" in widget.target_label.text()


def test_choosing_another_model_shows_its_settings_for_the_next_run_and_leaves_the_result_alone(
    viewer_and_widget, fake_network, notifications, qtbot
):
    """QA: choosing UNet after an HRNet run (no Segment) showed UNet's min size of 100 px while the line
    still said the settings applied to the HRNet result; a nudge of the slider then re-labelled that result
    with UNet's min size: 108 nuclei became 73, without a word."""
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    four = segment_new_image(qtbot, viewer, widget, blobs(), "four")
    made_with = widget.postprocess_controls.values()
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("hrnet"))  # the bundled HRNet, not yet run
    assert widget.target_label.text() == "Settings apply to the next result"
    widget.threshold_slider.setValue(0.9)
    assert four.data.max() == 4 and shown_count(widget) == 4  # left as it was made

    assert viewer.layers.selection.active is None  # deselected: a click on it selects it again (QA)
    viewer.layers.selection.active = four  # selected again: the target, with the settings it was made with
    assert widget.target_label.text() == "Settings apply to: 'four nuclei'"
    assert widget.postprocess_controls.values() == made_with
    widget.threshold_slider.setValue(0.7)
    assert four.data.max() == 2 and notifications.messages["error"] == []


def test_a_model_chosen_during_a_run_leaves_that_runs_result_with_its_own_models_settings(
    viewer_and_widget, tiny_weights, tmp_path, qtbot
):
    """QA: UNet++ running, UNet chosen: the UNet++ result came out at UNet's threshold (0.6, which the user
    never chose) with UNet++'s min size."""
    from napari_nucleiseg.weights import save_weights

    from conftest import build_tiny, tiny_metadata

    viewer, widget = viewer_and_widget
    strict = save_weights(tmp_path / "strict.safetensors", build_tiny("unet"),
                          tiny_metadata("unet") | {"threshold": 0.65})
    slow = FakeNetwork(delay=0.3)
    widget.predict = slow
    widget.threshold_slider.setValue(0.3)
    viewer.add_image(blobs(), name="blobs")
    qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(slow.started.is_set, timeout=RUN_TIMEOUT_MS)
    assert widget.set_weights_file(strict)  # during the run
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    wait_for_postprocessing(qtbot, widget)
    (result,) = labels_layers(viewer)
    assert result.data.max() == 4  # made at 0.3, as the run was started, not at 0.65 (2 nuclei)
    assert widget.threshold_slider.value() == pytest.approx(0.65)  # the chosen model's, for the next run
    assert widget.target_label.text() == "Settings apply to the next result"
    widget.threshold_slider.setValue(0.9)
    assert result.data.max() == 4


def test_reset_brings_back_the_settings_of_the_model_that_made_the_result(
    viewer_and_widget, fake_network, tiny_weights, tmp_path, qtbot
):
    """QA: a UNet++ result selected after HRNet was chosen was reset to HRNet's threshold and min size."""
    from napari_nucleiseg.weights import save_weights

    from conftest import build_tiny, tiny_metadata

    viewer, widget = viewer_and_widget
    strict = save_weights(tmp_path / "strict.safetensors", build_tiny("unet"),
                          tiny_metadata("unet") | {"threshold": 0.65})
    four = segment_new_image(qtbot, viewer, widget, blobs(), "four")
    own = widget.threshold_slider.value()
    assert own != pytest.approx(0.65)
    widget.threshold_slider.setValue(0.3)
    assert widget.set_weights_file(strict)  # another model chosen, no run
    viewer.layers.selection.active = four  # the result made with the first one
    widget.postprocess_controls.reset_button.click()
    wait_for_postprocessing(qtbot, widget)
    assert widget.threshold_slider.value() == pytest.approx(own)
    assert widget.target_label.text() == "Settings apply to: 'four nuclei'"


def test_results_keep_their_probabilities_within_a_budget_and_a_freed_one_says_it_needs_a_rerun(
    viewer_and_widget, fake_network, qtbot
):
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    for name in ("first", "second", "third"):
        segment_new_image(qtbot, viewer, widget, blobs(), name)
        if name == "first":  # room for the maps of two such results
            widget.target.budget_bytes = 2 * widget.rethresholder.cache.probabilities.nbytes
    first, second, third = labels_layers(viewer)
    assert [widget.target.result(layer).cache is not None for layer in (first, second, third)] == [False, True, True]

    viewer.layers.selection.active = second  # kept: it follows the slider
    widget.threshold_slider.setValue(0.7)
    assert second.data.max() == 2

    viewer.layers.selection.active = first  # freed: the line says so, and a change says it needs a rerun
    assert widget.target_label.text() == ("Settings apply to: 'first nuclei'; its probabilities were freed to "
                                          "save memory: a change needs it segmented again")
    widget.threshold_slider.setValue(0.9)
    assert first.data.max() == 4 and second.data.max() == 2 and third.data.max() == 4
    assert widget.target_label.text() == ("The settings cannot change 'first nuclei' until 'first' is segmented "
                                          "again: its probabilities were freed to save memory")
    assert fake_network.calls == 3


def test_an_image_given_new_data_after_its_run_is_not_relabelled_from_the_old_maps(
    viewer_and_widget, fake_network, qtbot
):
    """QA: new data given to the image, then the slider moved: the result was re-labelled from the old image's
    probabilities (IoU 0.84 with its nuclei, 0.09 with the new image's), the count and line as usual."""
    viewer, widget = viewer_and_widget
    image = viewer.add_image(blobs(), name="blobs")
    widget.threshold_slider.setValue(0.3)
    click_segment(qtbot, widget)
    (result,) = labels_layers(viewer)
    made = np.array(result.data)
    image.data = blobs()[:, ::-1].copy()  # (a script, or a plugin's filter: its nuclei elsewhere)
    assert widget.target_label.text() == ("Settings apply to: 'blobs nuclei'; its image was given new data: a "
                                          "change needs it segmented again")
    widget.threshold_slider.setValue(0.5)
    assert np.array_equal(result.data, made) and labels_layers(viewer) == [result]
    assert widget.target_label.text() == ("The settings cannot change 'blobs nuclei' until 'blobs' is segmented "
                                          "again: its image was given new data")
    click_segment(qtbot, widget)  # segmented again: the new data's nuclei, and the slider follows again
    assert np.array_equal(result.data > 0, (blobs(values=(0, 140, 200, 240))[:, ::-1] > 0))
    widget.threshold_slider.setValue(0.9)
    assert result.data.max() == 1 and fake_network.calls == 2


def test_a_result_renamed_is_named_anew_by_the_count_and_settings_lines(viewer_and_widget, fake_network, qtbot):
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    result = segment_new_image(qtbot, viewer, widget, blobs(), "blobs")
    result.name = "my corrections"
    assert widget.count_label.text().startswith("4 nuclei in 'my corrections'")
    assert widget.target_label.text() == "Settings apply to: 'my corrections'"


def test_a_result_deleted_during_its_rethreshold_does_not_come_back(
    viewer_and_widget, fake_network, in_a_worker, slow_postprocessing, notifications, qtbot
):
    """QA: the unedited result under an edited one deleted while a re-threshold ran: the re-threshold landed
    and made it again ('... nuclei [2]', with the 'edited by hand and is kept' note once more)."""
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    edited = segment_new_image(qtbot, viewer, widget, blobs(), "blobs")
    edited.fill((32, 25), 0)  # a hand edit: the next setting goes to a new layer under it
    widget.threshold_slider.setValue(0.4)
    wait_for_postprocessing(qtbot, widget)
    new, _ = labels_layers(viewer)
    assert new.name == "blobs nuclei [2]"
    slow = slow_postprocessing(delay=0.3)
    viewer.layers.selection.active = new
    widget.threshold_slider.setValue(0.6)
    assert widget.postprocessing and slow.entered.wait(5)
    viewer.layers.remove(new)
    wait_for_postprocessing(qtbot, widget)
    qtbot.wait(100)
    assert labels_layers(viewer) == [edited]
    assert fake_network.calls == 1


def test_a_hand_edited_result_selected_again_sends_new_settings_to_the_layer_under_it(
    viewer_and_widget, fake_network, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    widget.threshold_slider.setValue(0.3)
    edited = segment_new_image(qtbot, viewer, widget, blobs(), "blobs")
    edited.fill((32, 25), 0)  # the user deletes a nucleus
    corrected = edited.data.copy()
    widget.threshold_slider.setValue(0.5)
    new, _ = labels_layers(viewer)
    assert new.name == "blobs nuclei [2]"

    assert viewer.layers.selection.active is edited  # still selected, to go on correcting; the settings are new's
    assert widget.threshold_slider.value() == 0.5
    viewer.layers.selection.active = viewer.layers["blobs"]
    viewer.layers.selection.active = edited  # selected again: its settings as made; a change goes to the layer under it
    assert widget.threshold_slider.value() == 0.3
    widget.threshold_slider.setValue(0.7)
    assert labels_layers(viewer) == [new, edited] and new.data.max() == 2
    assert np.array_equal(edited.data, corrected) and fake_network.calls == 1
    assert widget.target_label.text() == "Settings apply to: 'blobs nuclei [2]'"  # the layer that changed


def test_an_overlay_of_fluorescence_channels_is_read_as_blue_and_the_widget_says_how_to_choose_another(
    viewer_and_widget, fake_network, notifications, qtbot
):
    """QA: DAPI in blue beside a marker in red, one RGB layer, was segmented as a colour picture, silently."""
    from napari_nucleiseg._sample_data import read_sample

    from test_inference import marker_overlay

    viewer, widget = viewer_and_widget
    dapi = read_sample("fluorescence")
    viewer.add_image(dapi, name="dapi")
    click_segment(qtbot, widget)
    assert notifications.messages["info"] == [] and len(labels_layers(viewer)) == 1
    viewer.add_image(marker_overlay(dapi), rgb=True, name="composite")
    click_segment(qtbot, widget)
    (note,) = notifications.messages["info"]
    assert note.startswith("'composite': Read as its blue channel") and "choose it under Channel" in note
    assert notifications.messages["error"] == []
    # The table gives each colour's mean: the marker's (red) beside the nuclear stain's (blue).
    composite = [layer for layer in labels_layers(viewer) if "composite" in layer.name][0]
    qtbot.waitUntil(lambda: len(composite.features) > 0, timeout=5_000)
    columns = widget.table_view.columns
    assert columns[columns.index("mean_intensity") + 1:][:3] == ["mean_red", "mean_green", "mean_blue"]
    assert (composite.features["mean_red"] > 0).any() and (composite.features["mean_green"] == 0).all()


def test_a_colour_of_an_rgb_layer_is_chosen_under_channel(viewer_and_widget, notifications, qtbot):
    """QA: a 16-bit (Y, X, 3) array of fluorescence channels (RGB to napari) with the nuclei in red and a marker in
    green and blue was read as its blue marker (18 objects where the nuclei are 24), and the note sent the user
    to napari's Split RGB. Red, green and blue are now offered under Channel."""
    from napari_nucleiseg._sample_data import read_sample

    from test_inference import marker_overlay

    from napari_nucleiseg.weights import bundled_weights_path

    viewer, widget = viewer_and_widget
    assert widget.set_weights_file(bundled_weights_path("hrnet"))  # the real network, not the tiny test one
    dapi = read_sample("fluorescence")
    viewer.add_image(dapi.astype(np.uint16) * 257, name="dapi")  # 16-bit, as the channels below
    click_segment(qtbot, widget)
    (alone,) = labels_layers(viewer)
    assert alone.data.max() > 90
    assert not widget.channel_combo.isVisible()  # a gray image has no channel to choose

    marker = marker_overlay(dapi, marker_at=1)[..., 1].astype(np.uint16) * 257
    stack = np.stack([dapi.astype(np.uint16) * 257, marker, marker // 2], axis=-1)
    image = viewer.add_image(stack, name="three", scale=(0.5, 0.5))
    assert image.rgb  # napari's guess for any (Y, X, 3)
    items = [widget.channel_combo.itemText(i) for i in range(widget.channel_combo.count())]
    assert items == ["all colours, as a picture", "red", "green", "blue"]
    assert widget.channel_combo.isVisibleTo(widget) and widget.channel_combo.currentIndex() == 0
    click_segment(qtbot, widget)  # as a picture: the marker's cells count too
    as_picture = viewer.layers["three nuclei"]
    assert not np.array_equal(as_picture.data > 0, alone.data > 0)

    widget.channel_combo.setCurrentIndex(1)  # red
    click_segment(qtbot, widget)
    red = viewer.layers["three red nuclei"]
    assert red.metadata["channel"] == "red"
    assert np.array_equal(red.data, alone.data)  # the nuclei, as the gray image alone gives them
    assert red.data.shape == dapi.shape and tuple(red.scale) == (0.5, 0.5)
    qtbot.waitUntil(lambda: len(red.features) == alone.data.max(), timeout=10_000)
    assert "mean_red" not in red.features and np.allclose(  # the table measures the red channel
        red.features["mean_intensity"].to_numpy()[:3],
        [stack[..., 0][red.data == label].mean() for label in red.features["label"][:3]])

    # A colour of an RGBA picture shows nothing where it is fully transparent, and nothing is found there
    # (review: blue of a half-transparent picture found as many nuclei in that half as in the other).
    rgba = np.dstack([stack // 257, np.full(dapi.shape, 255)]).astype(np.uint8)
    rgba[:, : dapi.shape[1] // 2, 3] = 0
    viewer.add_image(rgba, name="four")
    widget.channel_combo.setCurrentIndex(1)
    click_segment(qtbot, widget)
    four = viewer.layers["four red nuclei"]
    assert not four.data[:, : dapi.shape[1] // 2].any() and four.data[:, dapi.shape[1] // 2 + 20:].any()
    assert notifications.messages["error"] == []


def test_one_channel_shown_through_a_colour_map_is_read_as_gray_and_the_widget_says_so(
    viewer_and_widget, fake_network, notifications, qtbot
):
    """QA: DAPI saved through viridis, one RGB layer, was segmented as a colour picture, silently."""
    from napari_nucleiseg._sample_data import read_sample

    from test_inference import through_colour_map

    viewer, widget = viewer_and_widget
    viewer.add_image(through_colour_map(read_sample("fluorescence"), "magma"), rgb=True, name="dapi magma")
    click_segment(qtbot, widget)
    (note,) = notifications.messages["info"]
    assert note.startswith("'dapi magma': Read as one channel shown through a colour map")
    assert notifications.messages["error"] == [] and len(labels_layers(viewer)) == 1


def test_brown_nuclei_finds_the_brown_nuclei_of_an_ihc_section_and_the_widget_says_when_it_is_off(
    viewer_and_widget, notifications, qtbot
):
    """An IHC section (Ki-67: half of the nuclei brown) with the bundled HRNet: without Brown nuclei the widget
    finds few brown nuclei and says the image holds brown; with it, the API's brown_nuclei labels, recorded."""
    from napari_nucleiseg._sample_data import read_sample
    from training.data import restain_as_ihc
    from training.ihc_check import found_share

    viewer, widget = viewer_and_widget
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("hrnet"))
    tissue = read_sample("tissue")[..., :3]
    truth = segment(tissue, model="hrnet").labels
    brown = np.arange(2, truth.max() + 1, 2)  # half of the nuclei
    section = viewer.add_image(restain_as_ihc(tissue, np.isin(truth, brown)), rgb=True, name="ki67")
    click_segment(qtbot, widget)
    (note,) = notifications.messages["info"]
    assert note.startswith("'ki67': It holds brown (DAB) staining") and "tick Brown nuclei" in note
    (off,) = labels_layers(viewer)
    assert off.metadata["brown_nuclei"] is False
    off = off.data.copy()  # a run on the same image updates its result in place
    assert found_share(off, truth, brown) < 0.5

    widget.brown_check.setChecked(True)  # nothing runs until Segment
    assert len(labels_layers(viewer)) == 1
    click_segment(qtbot, widget)
    (on,) = labels_layers(viewer)
    expected = segment(section.data, model="hrnet", brown_nuclei=True)
    np.testing.assert_array_equal(on.data, expected.labels)
    assert on.metadata["brown_nuclei"] is True and found_share(on.data, truth, brown) >= 0.75
    assert "read as hematoxylin" in notifications.messages["info"][-1]
    assert notifications.messages["error"] == []
