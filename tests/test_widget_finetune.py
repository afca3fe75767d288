"""The Fine-tune section of the dock widget and the user's own models in the Model picker, in a real
napari viewer, driven the way a user drives them (issue 15).

Tiny random models (conftest's ``tiny_weights``) are fine-tuned for a few seconds on a small
synthetic field of nuclei; the user's model folder is a temporary one in every test.
"""

from __future__ import annotations

import gc
import shutil

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_nucleiseg.user_models import MODELS_DIR_VARIABLE
from napari_nucleiseg.weights import read_metadata

from conftest import blob_image, disk
from test_widget import RUN_TIMEOUT_MS, click_segment, labels_layers, notifications, open_widget  # noqa: F401

pytestmark = pytest.mark.gui

#: A few seconds of training: enough for several steps of a tiny model.
SHORT_BUDGET_MIN = 0.05
CENTERS = ((40, 40), (40, 130), (110, 80), (150, 150), (160, 40))


@pytest.fixture(autouse=True)
def models_dir(tmp_path, monkeypatch):
    """The user's model folder, empty, in ``tmp_path``."""
    folder = tmp_path / "my models"
    monkeypatch.setenv(MODELS_DIR_VARIABLE, str(folder))
    return folder


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_weights, models_dir):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert widget.set_weights_file(tiny_weights["unet"])
    widget.finetune_panel.expand(animate=False)
    return viewer, widget


def nuclei_field(shape=(192, 192)) -> tuple[np.ndarray, np.ndarray]:
    """A gray image of bright disks and its true labels, 1..5."""
    image = blob_image(shape, centers=CENTERS, radius=12)
    truth = np.zeros(shape, dtype=np.int32)
    for number, center in enumerate(CENTERS, start=1):
        truth[disk(shape, center, 12)] = number
    return image, truth


def corrected_result(viewer, widget, qtbot):
    """``(image layer, result layer)``: the field segmented by the widget, then corrected by hand to the truth."""
    image, truth = nuclei_field()
    layer = viewer.add_image(image, name="cells")
    click_segment(qtbot, widget)
    result = widget.labels_layer
    result.data = truth  # the correction: what a user paints and erases, all at once
    return layer, result


def fine_tune(qtbot, widget, name: str | None = None, minutes: float = SHORT_BUDGET_MIN) -> None:
    panel = widget.finetune_panel
    panel.minutes_spin.setValue(minutes)
    if name is not None:
        panel.name_edit.setText(name)
    qtbot.mouseClick(panel.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_TIMEOUT_MS)


def saved_files(folder) -> list[str]:
    """Every file in the user's model folder, hidden ones (a .partial) too."""
    return sorted(path.name for path in folder.rglob("*")) if folder.exists() else []


def items(combo) -> list[str]:
    return [combo.itemText(index) for index in range(combo.count())]


def test_fine_tuning_saves_a_model_the_picker_chooses_and_keeps_after_reopening(
    viewer_and_widget, make_napari_viewer, models_dir, notifications, qtbot  # noqa: F811
):
    viewer, widget = viewer_and_widget
    _, result = corrected_result(viewer, widget, qtbot)
    own = viewer.add_labels(nuclei_field()[1][::-1].copy(), name="my own labels")  # a layer the user made
    corrected, painted = np.array(result.data), np.array(own.data)
    panel = widget.finetune_panel
    panel.pairs.tick(own)
    assert [(pair.labels.name, pair.image.name) for pair in panel.pairs.pairs()] == [
        ("cells nuclei", "cells"), ("my own labels", "cells")]  # the result's image; the one of its shape
    assert panel.name_edit.text().startswith("tiny-unet-finetuned-")

    fine_tune(qtbot, widget, "my cells")

    assert notifications.messages["error"] == []
    assert saved_files(models_dir) == ["my cells.safetensors"]
    assert widget.model_combo.currentText() == "my cells"  # listed, and chosen
    assert items(widget.model_combo)[3] == "my cells"
    tuned = read_metadata(models_dir / "my cells.safetensors")
    assert tuned["name"] == "my cells" and tuned["fine_tuned"]["base"]["name"] == "tiny-unet"
    assert tuned["fine_tuned"]["nuclei"] == 10 and tuned["fine_tuned"]["steps"] >= 1
    assert np.array_equal(result.data, corrected) and np.array_equal(own.data, painted)  # never modified
    assert "Saved your model 'my cells'" in panel.status_label.text()
    assert panel.name_edit.text().startswith("my cells-finetuned-")  # the next one's name

    widget.model_menu.ask_name = lambda current: "my cells v2"  # renamed first (QA: Segment with it refused)
    widget.model_menu.rename_action.trigger()
    qtbot.mouseClick(panel.segment_button, Qt.MouseButton.LeftButton)  # one click: the image again, with it
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    assert [layer.name for layer in labels_layers(viewer)] == [
        "cells nuclei", "my own labels", "cells nuclei (my cells v2)"]
    assert np.array_equal(result.data, corrected) and notifications.messages["error"] == []

    widget.close()  # napari restarted: a new window, a new widget
    again = open_widget(make_napari_viewer())
    assert items(again.model_combo) == ["UNet", "UNet++", "HRNet", "my cells v2", "Custom weights file..."]
    assert "fine-tuned from" in again.model_combo.itemData(3, Qt.ItemDataRole.ToolTipRole)


def test_each_result_is_paired_with_the_image_it_was_made_of_among_images_of_one_size(viewer_and_widget, qtbot):
    """QA: two images of one size segmented in turn; the second's result was listed (and trained) with the
    first image, silently: the list refreshed when the layer was added, before the widget recorded whose it is."""
    viewer, widget = viewer_and_widget
    first_image, second_image = nuclei_field()[0], nuclei_field()[0][::-1].copy()
    for image, name in ((first_image, "first"), (second_image, "second")):
        viewer.add_image(image, name=name)
        click_segment(qtbot, widget)
    second_result = viewer.layers["second nuclei"]
    second_result.data = nuclei_field()[1][::-1].copy()  # corrected: ticked
    viewer.layers["first nuclei"].data = nuclei_field()[1]
    pairs = [(pair.labels.name, pair.image.name) for pair in widget.finetune_panel.pairs.pairs()]
    assert sorted(pairs) == [("first nuclei", "first"), ("second nuclei", "second")]


def test_a_painted_result_is_ticked_and_an_undone_one_not_without_fingerprinting_each_result_per_layer_added(
        viewer_and_widget, monkeypatch, qtbot):
    """QA: each layer added fingerprinted every result again to tell if it was edited (23-77 ms per large
    result); that is now looked at again only after an edit or a redraw of that result."""
    viewer, widget = viewer_and_widget
    viewer.add_image(nuclei_field()[0], name="cells")
    click_segment(qtbot, widget)
    result, pairs = widget.labels_layer, widget.finetune_panel.pairs

    def ticked() -> list[str]:
        return [pairs.item(row, 0).text() for row in range(pairs.rowCount())
                if pairs.item(row, 0).checkState() == Qt.CheckState.Checked]

    record = widget.outputs.record(result)
    looked = []
    edited = type(record).edited
    monkeypatch.setattr(type(record), "edited", lambda self: (looked.append(1), edited(self))[1])
    for number in range(3):
        viewer.add_image(nuclei_field()[0], name=f"other {number}")
    assert ticked() == [] and looked == []

    result.paint((40, 40), 7)  # as the brush does: a paint event
    qtbot.waitUntil(lambda: ticked() == ["cells nuclei"], timeout=5_000)
    result.undo()  # redrawn without a paint event: looked at again when the list is rebuilt
    viewer.add_image(nuclei_field()[0], name="after undo")
    assert ticked() == []


def test_cancel_leaves_nothing_behind(viewer_and_widget, models_dir, notifications, qtbot):  # noqa: F811
    viewer, widget = viewer_and_widget
    corrected_result(viewer, widget, qtbot)
    panel = widget.finetune_panel
    panel.minutes_spin.setValue(5)
    qtbot.mouseClick(panel.finetune_button, Qt.MouseButton.LeftButton)
    assert panel.running and not panel.progress_bar.isHidden(), notifications.messages
    qtbot.waitUntil(lambda: panel.progress_bar.text().startswith("step"), timeout=RUN_TIMEOUT_MS)
    assert "left" in panel.progress_bar.text() and "loss" in panel.progress_bar.text()
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_TIMEOUT_MS)
    assert saved_files(models_dir) == []  # no model, no .partial
    assert notifications.messages["info"][-1] == "Fine-tuning cancelled; no model was saved."
    assert widget.model_combo.currentText() == "tiny-unet.safetensors" and not panel.segment_button.isEnabled()
    # Objects alive at the start are kept from the garbage collector while training, not after: QA found
    # 551,941 frozen for good after one fine-tune, so layers taken out later were never collected.
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=10_000)  # (the import of training may end last)


def test_bad_input_gets_one_sentence_and_writes_nothing(viewer_and_widget, models_dir, notifications, qtbot):  # noqa: F811
    viewer, widget = viewer_and_widget
    panel = widget.finetune_panel
    errors = notifications.messages["error"]
    fine_tune(qtbot, widget)
    assert errors[-1] == "There is no Labels layer to learn from; segment an image and correct its labels first."

    image, result = corrected_result(viewer, widget, qtbot)
    panel.pairs.tick(result, False)
    fine_tune(qtbot, widget)
    assert errors[-1] == "Tick the Labels layers you corrected under Fine-tune first."

    wrong = viewer.add_labels(np.ones((50, 60), dtype=np.int32), name="wrong")
    panel.pairs.tick(wrong, image=image)
    fine_tune(qtbot, widget)
    assert errors[-1] == "'wrong' is 50 x 60 pixels but its image 'cells' is 192 x 192 pixels; choose the image it corrects."
    two = viewer.add_image(np.stack([image.data, image.data]), name="two channels")
    panel.pairs.tick(wrong, image=two)
    wrong.data = np.ones((192, 192), dtype=np.int32)
    fine_tune(qtbot, widget)
    assert errors[-1] == ("'wrong' is 192 x 192 pixels but its image 'two channels' is 2 x 192 x 192 pixels; choose "
                          "the image it corrects (for one of its channels, right-click it in the layer list, Split "
                          "Stack, and choose the channel with the nuclei).")
    viewer.layers.remove(two)
    panel.pairs.tick(wrong, False)
    panel.pairs.tick(result)

    made_of = image.data
    image.data = made_of[::-1].copy()  # (QA: the result would be learnt with data it was not made of)
    fine_tune(qtbot, widget)
    assert errors[-1] == ("'cells nuclei' holds the nuclei of the data 'cells' had before it was given new data; "
                          "segment 'cells' again and correct that result.")
    image.data = made_of  # its own data back: the pair holds again

    empty_corner = viewer.add_shapes([[[0, 180], [0, 192], [10, 192], [10, 180]]], shape_type="rectangle",
                                     name="checked")
    panel.choose_regions(empty_corner)
    fine_tune(qtbot, widget)  # refused by the training core, in the worker
    assert errors[-1] == ("There is no labelled nucleus in the checked regions of any image; paint (or keep) the "
                          "nuclei there first.")
    empty_corner.data = [[[300, 300], [300, 400], [400, 400], [400, 300]]]
    fine_tune(qtbot, widget)
    assert errors[-1] == ("No shape of 'checked' lies over the images chosen; draw rectangles over the nuclei you "
                          "checked, or choose Whole images.")
    panel.choose_regions(None)

    fine_tune(qtbot, widget, "a/b")
    assert errors[-1] == "'a/b' cannot be a model's name: use letters, digits, spaces, '-' or '_'."

    models_dir.mkdir()
    (models_dir / "taken.safetensors").write_bytes(b"mine")
    panel.confirm = lambda question: False  # the user does not want it replaced
    fine_tune(qtbot, widget, "taken")
    assert errors[-1] == "There is a model called 'taken' already; choose another name."
    fine_tune(qtbot, widget, "taken.safetensors")  # (QA: asked nothing, then named an option the widget lacks)
    assert errors[-1] == "There is a model called 'taken' already; choose another name."
    assert (models_dir / "taken.safetensors").read_bytes() == b"mine"
    fine_tune(qtbot, widget, "UNet")
    assert errors[-1] == "'UNet' is the name of the bundled UNet; give your model another name."

    assert saved_files(models_dir) == ["taken.safetensors"] and len(errors) == 11
    for message in errors:
        assert "\n" not in message and "Traceback" not in message and message.endswith(".")
    assert panel.status_label.text() == errors[-1]


def test_a_base_model_deleted_since_is_taken_out_of_the_model_list(viewer_and_widget, models_dir, notifications,
                                                                   tiny_weights, qtbot):
    """QA: fine-tuning from a model of the user's whose file was deleted said 'no such file' but left it listed and
    chosen, where Segment takes it out of the list and says so."""
    viewer, widget = viewer_and_widget
    corrected_result(viewer, widget, qtbot)
    models_dir.mkdir()
    shutil.copy(tiny_weights["unet"], models_dir / "base A.safetensors")
    combo = widget.model_combo
    assert widget.set_weights_file(models_dir / "base A.safetensors") and combo.currentText() == "base A"
    (models_dir / "base A.safetensors").unlink()
    fine_tune(qtbot, widget, "new")
    message = notifications.messages["error"][-1]
    assert "no such file" in message and message.endswith(
        "; it is taken out of the Model list, and tiny-unet.safetensors is chosen again.")
    assert "base A" not in items(combo) and combo.currentText() == "tiny-unet.safetensors"
    assert saved_files(models_dir) == []


def test_rectangles_pass_their_boxes_in_the_images_pixels(viewer_and_widget, monkeypatch, qtbot):
    """The checked regions are the shapes' bounding boxes in the image's pixels, cut to it."""
    from napari_nucleiseg import _finetune_panel

    viewer, widget = viewer_and_widget
    image, result = corrected_result(viewer, widget, qtbot)
    image.scale = result.scale = (0.5, 0.5)
    shapes = viewer.add_shapes([[[10, 10], [10, 30], [25, 30], [25, 10]], [[-5, 80], [-5, 200], [20, 200], [20, 80]]],
                               shape_type="rectangle", name="checked")  # in world units: 2 pixels each
    widget.finetune_panel.choose_regions(shapes)
    asked = {}
    monkeypatch.setattr(_finetune_panel, "finetune_in_worker",
                        lambda **job: asked.update(job) or _finetune_panel.Failure("Not this time."))
    fine_tune(qtbot, widget)
    assert asked["regions"] == [[(20, 50, 20, 60), (0, 40, 160, 192)]]
    assert asked["labels"][0] is not result.data and np.array_equal(asked["labels"][0], result.data)


def test_a_result_made_without_its_border_nuclei_trains_away_from_its_border(viewer_and_widget, models_dir,
                                                                            monkeypatch, qtbot):
    """QA: labels made with Exclude border lost the nuclei touching the border, and fine-tuning read them as
    background: a band of 1.5 nucleus diameters along the border is left out (unknown) instead."""
    from napari_nucleiseg import _finetune_panel

    viewer, widget = viewer_and_widget
    widget.exclude_border_check.setChecked(True)
    image, result = corrected_result(viewer, widget, qtbot)
    assert result.metadata["exclude_border"] and result.metadata["diameter"] is None  # (a tiny model: not resized)
    asked = {}
    monkeypatch.setattr(_finetune_panel, "finetune_in_worker",
                        lambda **job: asked.update(job) or _finetune_panel.Failure("Not this time."))
    fine_tune(qtbot, widget)
    assert asked["regions"] == [[(30, 162, 30, 162)]]  # 192 x 192, a band of 1.5 x 20 px
    shapes = viewer.add_shapes([[[0, 0], [0, 100], [100, 100], [100, 0]]], shape_type="rectangle", name="checked")
    widget.finetune_panel.choose_regions(shapes)
    fine_tune(qtbot, widget)
    assert asked["regions"] == [[(30, 100, 30, 100)]]  # a checked rectangle, cut to the band
    # A rectangle within the band leaves nothing to train on: refused (QA: the whole image trained, band and all).
    shapes.data = [[[2, 2], [2, 40], [25, 40], [25, 2]]]
    asked.clear()
    fine_tune(qtbot, widget)
    assert asked == {}
    assert widget.finetune_panel.status_label.text() == (
        "'cells nuclei' was segmented with Exclude border: its nuclei near the border were left out, and nothing "
        "checked lies far enough inside to train on. Untick Exclude border and segment again, or check a region "
        "nearer the middle.")
    # Beside a result that trains, it is left out and the outcome says so (review: it was dropped without a word).
    widget.exclude_border_check.setChecked(False)
    image, truth = nuclei_field((400, 400))
    viewer.add_image(image, name="larger")
    click_segment(qtbot, widget)
    widget.labels_layer.data = truth
    widget.finetune_panel.pairs.tick(result)
    widget.finetune_panel.choose_regions(None)
    shapes.data = [[[2, 2], [2, 40], [25, 40], [25, 2]], [[200, 200], [200, 380], [380, 380], [380, 200]]]
    monkeypatch.setattr(_finetune_panel, "finetune_in_worker",
                        lambda **job: asked.update(job) or _finetune_panel.Tuned(models_dir / "x.safetensors", []))
    widget.finetune_panel.picker.set_weights_file = lambda path: None  # (no file: the run is faked)
    widget.finetune_panel.choose_regions(shapes)
    fine_tune(qtbot, widget)
    assert [len(boxes) for boxes in asked["regions"]] == [2]  # the second result only
    assert widget.finetune_panel.status_label.text().endswith(
        "'cells nuclei' did not train: made with Exclude border, nothing checked of it lies far enough inside.")


def test_a_users_model_is_renamed_and_deleted_from_the_picker(
    make_napari_viewer, tiny_weights, models_dir, notifications, qtbot  # noqa: F811
):
    models_dir.mkdir()
    shutil.copy(tiny_weights["unet"], models_dir / "mine.safetensors")
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    combo, menu = widget.model_combo, widget.model_menu
    assert combo.currentText() == "HRNet" and not menu.isEnabled()  # a bundled model: nothing to rename
    assert widget.set_weights_file(tiny_weights["hrnet"]) and not menu.isEnabled()  # nor a file from elsewhere
    combo.setCurrentIndex(combo.findText("mine"))
    assert menu.isEnabled()

    menu.ask_name = lambda current: "better.safetensors"  # (QA: became better.safetensors.safetensors)
    menu.rename_action.trigger()
    assert saved_files(models_dir) == ["better.safetensors"]
    assert read_metadata(models_dir / "better.safetensors")["name"] == "better"  # the name its layers get
    assert combo.currentText() == "better" and "mine" not in items(combo)
    assert notifications.messages["info"][-1] == "The model 'mine' is now called 'better'."

    (models_dir / "taken.safetensors").write_bytes(b"x")
    menu.ask_name = lambda current: "taken"
    menu.rename_action.trigger()
    assert notifications.messages["error"][-1] == "There is a model called 'taken' already; choose another name."
    menu.ask_name = lambda current: "two\nlines"  # (QA: a newline went into the file's name)
    menu.rename_action.trigger()
    assert notifications.messages["error"][-1] == ("'two\\nlines' cannot be a model's name: use letters, digits, "
                                                   "spaces, '-' or '_'.")
    assert saved_files(models_dir) == ["better.safetensors", "taken.safetensors"]

    asked = []
    menu.confirm = lambda question: asked.append(question) or False
    menu.delete_action.trigger()
    assert (models_dir / "better.safetensors").exists() and asked[0].startswith("Delete your model 'better'?")
    menu.confirm = lambda question: True
    menu.delete_action.trigger()
    assert saved_files(models_dir) == ["taken.safetensors"]
    assert "better" not in items(combo) and combo.currentText() == "tiny-hrnet.safetensors"
    assert notifications.messages["info"][-1] == "Deleted your model 'better'; tiny-hrnet.safetensors is chosen."
    assert tiny_weights["hrnet"].exists()


def test_a_stack_with_one_corrected_plane_trains_on_it_and_says_so(viewer_and_widget, models_dir, qtbot):
    viewer, widget = viewer_and_widget
    image, truth = nuclei_field()
    viewer.add_image(np.stack([image, image[::-1], image[:, ::-1]]), name="stack")
    labels = np.zeros((3, *truth.shape), dtype=np.int32)
    labels[1] = truth[::-1]  # only the middle plane was corrected
    viewer.add_labels(labels, name="middle plane corrected")
    panel = widget.finetune_panel
    assert [(pair.labels.name, pair.image.name) for pair in panel.pairs.pairs()] == []  # not a result: not ticked
    panel.pairs.tick(viewer.layers["middle plane corrected"])
    fine_tune(qtbot, widget, "from a stack")
    assert saved_files(models_dir) == ["from a stack.safetensors"]
    assert panel.status_label.text().endswith("Trained on plane 1 of the 3 of the image: the others hold no "
                                              "labelled nucleus.")
    assert read_metadata(models_dir / "from a stack.safetensors")["fine_tuned"]["images"][0]["plane"] == 1


def test_every_control_of_the_section_says_what_it_does(viewer_and_widget):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QLineEdit

    viewer, widget = viewer_and_widget
    viewer.add_image(nuclei_field()[0], name="cells")
    viewer.add_labels(nuclei_field()[1], name="mine")
    panel = widget.finetune_panel
    kinds = (QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QLineEdit)
    controls = [child for child in panel.findChildren(kinds) if child.isVisibleTo(panel)]
    assert len(controls) > 10

    def tooltip(control) -> str:  # Qt shows the nearest one: the control's own, or its parent's
        while control is not panel and not control.toolTip():
            control = control.parentWidget()
        return control.toolTip() if control is not panel else ""

    assert [control for control in controls if not tooltip(control)] == []
    assert widget.model_menu.toolTip().startswith("Rename or delete the model chosen")


QUIT_WHILE_IMPORTING = """
import time

import napari
from qtpy.QtWidgets import QApplication

from napari_nucleiseg import _finetune_panel

_finetune_panel.import_training = lambda: time.sleep(2)  # the section's import of training, still running at quit
viewer = napari.Viewer(show=False)
_, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Nuclei segmentation")
widget.finetune_panel.expand(animate=False)
for _ in range(10):
    QApplication.processEvents()
    time.sleep(0.02)
viewer.close()
"""


def test_quitting_napari_while_the_section_imports_training_exits_cleanly(tmp_path):
    """QA: quitting right after opening Fine-tune ended the process with 'Aborted' (exit status 134): the import
    ran in a Qt worker whose signals were deleted before it finished."""
    import subprocess
    import sys

    script = tmp_path / "quit.py"
    script.write_text(QUIT_WHILE_IMPORTING)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("closed", ["widget", "window"])
def test_closing_the_widget_or_the_window_mid_training_stops_it_and_saves_nothing(viewer_and_widget, models_dir,
                                                                                   qtbot, closed):
    """Closing the window too: QA saw 'wrapped C/C++ object of type QPushButton has been deleted' when the training
    ended after it (pytest-qt fails the test on an exception in a slot)."""
    viewer, widget = viewer_and_widget
    corrected_result(viewer, widget, qtbot)
    panel = widget.finetune_panel
    panel.minutes_spin.setValue(5)
    qtbot.mouseClick(panel.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.progress_bar.text().startswith("step"), timeout=RUN_TIMEOUT_MS)
    (widget if closed == "widget" else viewer).close()
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_TIMEOUT_MS)
    assert saved_files(models_dir) == [] and panel.last_model is None


def test_a_result_made_with_brown_nuclei_teaches_the_brown_read_as_hematoxylin(
    viewer_and_widget, models_dir, notifications, qtbot  # noqa: F811
):
    """The new model learns from the section as its result read it, and choosing it ticks Brown nuclei."""
    from napari_nucleiseg._sample_data import read_sample
    from training.data import restain_as_ihc

    viewer, widget = viewer_and_widget
    tissue = read_sample("tissue")[:192, :192, :3]
    brown = np.zeros(tissue.shape[:2], dtype=bool)
    brown[:, :96] = True  # the left half restained brown
    viewer.add_image(restain_as_ihc(tissue, brown), name="ki67", rgb=True)
    widget.brown_check.setChecked(True)
    click_segment(qtbot, widget)
    result = widget.labels_layer
    assert result.metadata["brown_nuclei"] is True
    result.data = nuclei_field()[1]  # corrected
    widget.brown_check.setChecked(False)  # the box changed since: the result's own reading counts
    fine_tune(qtbot, widget, "my ki67")

    assert notifications.messages["error"] == []
    tuned = read_metadata(models_dir / "my ki67.safetensors")
    assert tuned["brown_nuclei"] is True and tuned["fine_tuned"]["brown_nuclei"] == [True]
    assert widget.model_combo.currentText() == "my ki67" and widget.brown_check.isChecked()  # chosen: ticked
    assert any("'my ki67' learnt from images whose brown was read as hematoxylin: Brown nuclei is ticked" in text
               for text in notifications.messages["info"])
