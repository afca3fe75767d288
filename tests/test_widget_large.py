"""The dock widget on images larger than memory (issue 16, part 2), in a real napari viewer: multiscale
layers and planes of at least LARGE_IMAGE_PIXELS pixels are segmented block by block into an OME-Zarr
store in the cache folder and shown as one lazy multiscale Labels layer.

The images are small (1.5k px) with LARGE_IMAGE_PIXELS and the block side lowered, and the model is
the tiny untrained UNet: what is tested is the widget's path, not the segmentation (tests/test_large.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from napari.layers import Labels
from qtpy.QtCore import Qt

from napari_nucleiseg import inference, large
from napari_nucleiseg._large_layer import segment_in_blocks
from napari_nucleiseg.errors import Cancelled
from napari_nucleiseg.weights import load_weights

from conftest import blob_image
from test_widget import click_export, click_segment, labels_layers, notifications, open_widget  # noqa: F401

pytestmark = pytest.mark.gui

SIDE = 1536
BLOCK = 512


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_weights, monkeypatch, tmp_path):
    """The widget with the tiny UNet, blocks of 512 px, and the user's cache folder in ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(large, "BLOCK_SIDE", BLOCK)
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert widget.set_weights_file(tiny_weights["unet"])
    return viewer, widget


def cache_folder(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "napari-nucleiseg" / "large"


def tiled_blobs(side: int = SIDE) -> np.ndarray:
    """A ``side`` x ``side`` uint8 image of bright disks, tiled from :func:`conftest.blob_image`."""
    tile = blob_image((192, 256), centers=((40, 40), (100, 160), (150, 60), (60, 210)), radius=14)
    return np.tile(tile, (side // 192 + 1, side // 256 + 1))[:side, :side]


def slow_blocks(monkeypatch, seconds: float) -> None:
    """Each block's network takes ``seconds`` more, polling Cancel: the run lasts long enough to act in it."""
    predict = inference.predict_probabilities

    def slow(image, model, *, cancelled=None, **options):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cancelled is not None and cancelled():
                raise Cancelled("Segmentation cancelled.")
            time.sleep(0.01)
        return predict(image, model, cancelled=cancelled, **options)

    monkeypatch.setattr(inference, "predict_probabilities", slow)


def block_formats(widget) -> list[str]:
    """The progress bar's texts as each block is reported (recorded after the widget shows them)."""
    shown: list[str] = []
    widget.run._blocks.done.connect(lambda *_: shown.append(widget.progress_bar.format()))
    return shown


def test_a_multiscale_image_is_segmented_block_by_block_into_one_lazy_multiscale_labels_layer(
    viewer_and_widget, tiny_weights, tmp_path, qtbot
):
    viewer, widget = viewer_and_widget
    image = tiled_blobs()
    viewer.add_image([image, image[::2, ::2]], multiscale=True, name="slide", scale=(0.5, 0.5), translate=(10, 20))
    shown = block_formats(widget)
    click_segment(qtbot, widget)

    (layer,) = labels_layers(viewer)
    qtbot.waitUntil(lambda: layer.visible, timeout=2_000)  # added hidden, shown in a later turn of the event loop
    assert viewer.layers.selection.active is layer
    assert layer.multiscale and len(layer.data) == 2 and all(isinstance(level, da.Array) for level in layer.data)
    assert layer.data[0].shape == (SIDE, SIDE) and layer.data[1].shape == (SIDE // 2, SIDE // 2)
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (10, 20)
    store = Path(layer.metadata["store"])
    assert store.parent == cache_folder(tmp_path) and store.name.startswith("slide-") and store.suffixes[-2:] == [
        ".ome", ".zarr"]
    assert layer.metadata["block_by_block"] and layer.metadata["model"] == "tiny-unet"
    assert layer.metadata["settings"]["threshold"] == pytest.approx(widget.threshold_slider.value())

    reference = large.segment_large(image, load_weights(tiny_weights["unet"]), tmp_path / "reference.zarr")
    assert reference.blocks == 9 and reference.count > 50
    assert np.array_equal(np.asarray(layer.data[0]), reference.labels[:])
    assert np.array_equal(np.asarray(layer.data[1]), reference.levels[1][:])
    assert len(layer.features) == reference.count
    assert (layer.features["label"] == layer.features["index"]).all()
    whole = f"{reference.count} nuclei in 'slide nuclei' (segmented block by block; labels in {store})"
    assert whole in widget.count_label.toolTip() and widget.count_label.text().startswith(f"{reference.count} nuclei")
    assert shown[0] == "block 1/9" and shown[-1] == "block 9/9"


def test_the_worker_builds_the_layer_hidden_with_its_table_and_reads_the_halved_level_but_not_the_full_one(
    tiny_weights, monkeypatch, tmp_path
):
    """What the main thread is left to do is adding the layer: the worker function returns it built."""
    monkeypatch.setattr(large, "BLOCK_SIDE", BLOCK)
    out = tmp_path / "slide.ome.zarr"
    where = {"scale": (0.5, 0.5), "translate": (10, 20), "units": ("um", "um")}
    finished = segment_in_blocks(tiled_blobs(), False, tiny_weights["unet"], out, channel=None, placement=where)

    layer = finished.layer
    assert isinstance(layer, Labels) and not layer.visible and layer.multiscale
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (10, 20)
    assert layer.metadata["block_by_block"] and layer.metadata["store"] == str(out)
    features = layer.features
    assert len(features) == finished.result.count > 50 and (features["label"] == features["index"]).all()
    assert np.allclose(features["area_um2"], features["area"] * 0.25)
    full, half = (np.asarray(level) for level in layer.data)
    shutil.rmtree(out)  # the store gone: the halved level was read into memory, the full one is read as shown
    assert np.array_equal(np.asarray(layer.data[1]), half) and half.any()
    assert full.any() and not np.asarray(layer.data[0]).any()


def test_an_image_moved_during_the_run_gets_its_result_where_it_lies_at_the_end(viewer_and_widget, monkeypatch, qtbot):
    viewer, widget = viewer_and_widget
    slow_blocks(monkeypatch, 0.3)
    image = tiled_blobs()
    slide = viewer.add_image([image, image[::2, ::2]], multiscale=True, name="slide", scale=(0.5, 0.5),
                             units=("um", "um"))
    widget.segment()
    qtbot.waitUntil(lambda: widget.progress_bar.format() == "block 1/9", timeout=30_000)
    slide.scale = (0.25, 0.25)  # the layer the worker builds lies where the image lay at the start
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)

    (layer,) = labels_layers(viewer)
    assert tuple(layer.scale) == (0.25, 0.25)
    assert np.allclose(layer.features["area_um2"], layer.features["area"] * 0.0625)


def test_a_dask_layer_over_the_large_size_goes_block_by_block_the_settings_say_they_cannot_change_it_and_export(
    viewer_and_widget, notifications, monkeypatch, tmp_path, qtbot
):
    viewer, widget = viewer_and_widget
    monkeypatch.setattr(large, "LARGE_IMAGE_PIXELS", 1_000_000)
    viewer.add_image(tiled_blobs()[:256, :256], name="small")
    click_segment(qtbot, widget)  # under the size: segmented whole, its settings re-label it
    (small,) = labels_layers(viewer)
    assert not small.multiscale and widget.target_label.text() == "Settings apply to: 'small nuclei'"

    viewer.add_image(da.from_array(tiled_blobs(), chunks=512), name="mosaic")
    click_segment(qtbot, widget)
    mosaic = labels_layers(viewer)[-1]
    assert mosaic.multiscale and mosaic.metadata["block_by_block"] and mosaic.name == "mosaic nuclei"
    sentence = ("'mosaic nuclei' was segmented block by block: change the settings and press Segment to run it "
                "again")
    assert widget.target_label.text() == sentence
    labels_before = mosaic.data[0]
    widget.threshold_slider.setValue(0.8)  # re-labels nothing: no maps are kept
    qtbot.wait(300)
    assert mosaic.data[0] is labels_before and len(labels_layers(viewer)) == 2
    assert widget.target_label.text() == sentence and widget.labels_layer.unique_id == mosaic.unique_id

    path = tmp_path / "mosaic.csv"
    click_export(qtbot, widget, monkeypatch, path)
    exported = pd.read_csv(path)
    assert len(exported) == len(mosaic.features) > 50 and "index" not in exported
    assert notifications.messages["info"][-1] == f"Saved the {len(exported)} nuclei of '{mosaic.name}' to {path}."

    viewer.layers.selection.active = small  # the small result is the target again, its table exported
    assert widget.target_label.text() == "Settings apply to: 'small nuclei'"
    assert widget.labels_layer.unique_id == small.unique_id
    viewer.layers.selection.active = mosaic
    assert widget.target_label.text() == sentence and widget.count_label.text().startswith(f"{len(exported)} nuclei")

    viewer.add_image(da.zeros((2, SIDE, SIDE), dtype=np.uint8, chunks=512), name="stack")
    click_segment(qtbot, widget)
    assert "stack of 2 planes" in notifications.messages["error"][-1] and len(labels_layers(viewer)) == 2


def test_cancel_mid_run_stops_within_2_s_and_leaves_no_layer_and_no_store(
    viewer_and_widget, notifications, monkeypatch, tmp_path, qtbot
):
    viewer, widget = viewer_and_widget
    slow_blocks(monkeypatch, 1.0)
    image = tiled_blobs()
    viewer.add_image([image, image[::2, ::2]], multiscale=True, name="slide")
    widget.segment()
    qtbot.waitUntil(lambda: widget.progress_bar.format() == "block 1/9", timeout=30_000)
    assert any(cache_folder(tmp_path).iterdir())  # the store is being written
    clicked = time.monotonic()
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=5_000)
    assert time.monotonic() - clicked < 2.0
    assert labels_layers(viewer) == [] and list(cache_folder(tmp_path).iterdir()) == []
    assert notifications.messages["info"][-1] == "Segmentation cancelled; the run added and changed no layer."
    assert not widget.progress_bar.isVisible() and widget.segment_button.isEnabled()


def test_an_image_taken_out_during_the_run_gets_no_layer_and_the_user_is_told_where_its_labels_are(
    viewer_and_widget, notifications, tmp_path, qtbot
):
    viewer, widget = viewer_and_widget
    image = tiled_blobs(1024)
    viewer.add_image([image, image[::2, ::2]], multiscale=True, name="slide")
    widget.segment()
    viewer.layers.remove("slide")
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    (store,) = cache_folder(tmp_path).iterdir()
    assert labels_layers(viewer) == []
    assert notifications.messages["info"][-1] == f"'slide' was taken out during the run; its labels are in {store}."


def test_the_channel_chosen_of_a_large_image_is_segmented_block_by_block(viewer_and_widget, monkeypatch, qtbot):
    """Of a plane under 1024 px (one level in the store), the layer is the one level, not multiscale."""
    viewer, widget = viewer_and_widget
    monkeypatch.setattr(large, "LARGE_IMAGE_PIXELS", 1_000_000)
    nuclei = tiled_blobs(1000)
    channels = da.stack([da.zeros_like(nuclei), da.from_array(nuclei, chunks=512)])  # nothing in channel 0
    viewer.add_image(channels, name="dapi and marker", axis_labels=("c", "y", "x"))
    widget.channel_combo.setCurrentIndex(widget.channel_combo.findData(1))
    click_segment(qtbot, widget)
    (layer,) = labels_layers(viewer)
    assert layer.metadata["block_by_block"] and not layer.multiscale and isinstance(layer.data, da.Array)
    assert layer.name == "dapi and marker channel 1 nuclei" and layer.metadata["channel"] == 1
    assert layer.data.shape == nuclei.shape and len(layer.features) > 20
