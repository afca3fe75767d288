"""The Python API: segment() with real weights files, and an import that stays light."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import napari_nucleiseg
from napari_nucleiseg import SegmentationResult, segment
from napari_nucleiseg.api import load_model, result_from_probabilities
from napari_nucleiseg.inference import Cancelled, predict_probabilities
from napari_nucleiseg.postprocess import MEASUREMENT_COLUMNS, count_nuclei, labels_from_probabilities
from napari_nucleiseg.preprocess import ImageError
from napari_nucleiseg.settings import PostprocessSettings
from napari_nucleiseg.weights import WeightsError, load_weights, save_weights

from conftest import (
    TINY_BOUNDARY_THRESHOLD,
    TINY_KWARGS,
    TINY_MIN_SIZE,
    TINY_THRESHOLD,
    blob_image,
    build_tiny,
    tiny_metadata,
)

IMAGE = blob_image((96, 128))


@pytest.mark.parametrize("name", sorted(TINY_KWARGS))
def test_segment_returns_consistent_labels_table_and_count(tiny_weights, name):
    result = segment(IMAGE, tiny_weights[name])
    assert isinstance(result, SegmentationResult)
    assert result.labels.shape == IMAGE.shape and result.labels.dtype == np.uint16
    assert result.probabilities.shape == (2, *IMAGE.shape) and result.probabilities.dtype == np.float32
    assert result.count == count_nuclei(result.labels) == result.labels.max()
    assert list(result.table.columns) == list(MEASUREMENT_COLUMNS)
    assert list(result.table["label"]) == list(range(1, result.count + 1))
    assert result.table["mean_intensity"].notna().all()
    assert result.model_name == f"tiny-{name}"


def test_default_settings_come_from_the_weights_file(tiny_weights):
    result = segment(IMAGE, tiny_weights["unet"])
    assert (result.threshold, result.boundary_threshold, result.min_size) == (
        TINY_THRESHOLD, TINY_BOUNDARY_THRESHOLD, TINY_MIN_SIZE,
    )
    assert result.split is True
    expected = labels_from_probabilities(
        result.probabilities, TINY_THRESHOLD, min_size=TINY_MIN_SIZE, boundary_threshold=TINY_BOUNDARY_THRESHOLD
    )
    np.testing.assert_array_equal(result.labels, expected)


class ChannelNetwork:
    """A network whose nucleus probability is the image's red channel and boundary probability its
    green one (logits 20 (value - 0.5)): segment() then sees maps a test draws."""

    def __new__(cls):
        import torch

        class _Network(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.unused = torch.nn.Parameter(torch.zeros(()))  # inference reads the device off a parameter

            def forward(self, x):
                return 20 * (x[:, :2] - 0.5)

        return _Network().eval()


def channel_model(**metadata):
    from napari_nucleiseg.weights import NucleiModel

    return NucleiModel(ChannelNetwork(), {
        "architecture": "channels", "kwargs": {}, "threshold": 0.5, "boundary_threshold": 0.5, "min_size": 2,
        "normalization": {"method": "percentile", "percentiles": [0.0, 100.0]}, **metadata}, name="channels")


def _disk(shape, center, radius):
    yy, xx = np.indices(shape)
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def drawn(nucleus: np.ndarray, boundary: np.ndarray | None = None) -> np.ndarray:
    """The RGB image for which :class:`ChannelNetwork` predicts these masks."""
    image = np.zeros((*nucleus.shape, 3), dtype=np.uint8)
    image[..., 0] = 255 * nucleus
    if boundary is not None:
        image[..., 1] = 255 * boundary
    image[0, 0] = (255, 255, 255)  # every channel spans 0..255 (a speck below the min size)
    return image


def test_the_models_neck_ratio_cuts_by_shape_unless_overridden():
    shape = (64, 160)
    eight = _disk(shape, (32, 30), 10) | _disk(shape, (32, 48), 10)  # two nuclei the network did not split
    singles = [_disk(shape, center, 7) for center in [(12, 90), (50, 90), (12, 130), (50, 130)]]
    image = drawn(eight | np.logical_or.reduce(singles))
    result = segment(image, channel_model(neck_ratio=0.3), diameter=None)
    assert result.neck_ratio == 0.3 and result.count == 6  # the model's neck ratio cut the "8"
    assert result.labels[32, 25] != result.labels[32, 53]
    unsplit = segment(image, channel_model(neck_ratio=0.3), neck_ratio=0)
    assert unsplit.neck_ratio == 0.0 and unsplit.count == 5
    assert segment(image, channel_model()).count == 5  # a file without one: no cut by shape


def test_the_models_seed_min_size_is_used_unless_overridden():
    shape = (64, 64)
    nucleus = _disk(shape, (32, 32), 12)
    boundary = np.zeros(shape, dtype=bool)
    boundary[:, 41:43] = True  # cuts off a cap of 10 pixels: a speck of seed
    image = drawn(nucleus, boundary & nucleus)
    result = segment(image, channel_model(seed_min_size=40))
    assert result.seed_min_size == 40 and result.count == 1  # the speck seeds nothing
    assert segment(image, channel_model(seed_min_size=40), seed_min_size=0).count == 2
    assert segment(image, channel_model()).count == 2  # a file without one: every seed counts


def test_nuclei_touching_the_border_are_left_out_only_when_asked():
    shape = (64, 96)
    image = drawn(_disk(shape, (32, 40), 10) | _disk(shape, (32, 90), 10))  # the second is cut by the right edge
    everything = segment(image, channel_model())
    assert everything.count == 2 and not everything.exclude_border
    inner = segment(image, channel_model(), exclude_border=True)
    assert inner.exclude_border and inner.settings.exclude_border
    assert inner.count == 1 and inner.labels[32, 90] == 0 and inner.labels[32, 40] == 1
    assert list(inner.table["label"]) == [1] and inner.table.loc[0, "centroid_x"] == pytest.approx(40)
    np.testing.assert_array_equal(inner.probabilities, everything.probabilities)


def test_explicit_settings_are_used(tiny_weights):
    result = segment(IMAGE, tiny_weights["hrnet"], threshold=0.6, min_size=3, split=False, boundary_threshold=0.2)
    assert (result.threshold, result.min_size, result.split, result.boundary_threshold) == (0.6, 3, False, 0.2)
    expected = labels_from_probabilities(result.probabilities, 0.6, min_size=3, split=False)
    np.testing.assert_array_equal(result.labels, expected)


def test_extreme_thresholds(tiny_weights):
    everything = segment(IMAGE, tiny_weights["unet"], threshold=0.0, split=False)
    assert everything.count == 1 and (everything.labels == 1).all()
    nothing = segment(IMAGE, tiny_weights["unet"], threshold=1.0)
    assert nothing.count == 0 and len(nothing.table) == 0
    assert list(nothing.table.columns) == list(MEASUREMENT_COLUMNS)


def test_probabilities_are_those_of_the_model(tiny_weights):
    result = segment(IMAGE, tiny_weights["unetpp"])
    np.testing.assert_array_equal(result.probabilities, predict_probabilities(IMAGE, load_weights(tiny_weights["unetpp"])))


def test_model_as_path_string_or_loaded_model(tiny_weights):
    path = tiny_weights["unet"]
    by_path = segment(IMAGE, path)
    by_string = segment(IMAGE, str(path))
    by_model = segment(IMAGE, load_weights(path))
    np.testing.assert_array_equal(by_path.labels, by_string.labels)
    np.testing.assert_array_equal(by_path.labels, by_model.labels)


def test_loaded_models_are_cached_until_the_file_changes(tmp_path):
    path = save_weights(tmp_path / "m.safetensors", build_tiny("unet"), tiny_metadata("unet"))
    first = load_model(path)
    assert load_model(str(path)) is first
    save_weights(path, build_tiny("unet", seed=1), tiny_metadata("unet") | {"threshold": 0.3})
    second = load_model(path)
    assert second is not first and second.settings.threshold == 0.3


def test_rethresholding_cached_probabilities(tiny_weights):
    result = segment(IMAGE, tiny_weights["unet"])
    again = result_from_probabilities(result.probabilities, IMAGE, PostprocessSettings(threshold=0.3, min_size=0),
                                      model_name=result.model_name)
    assert again.threshold == 0.3
    np.testing.assert_array_equal(again.labels, labels_from_probabilities(result.probabilities, 0.3, min_size=0))
    assert again.count == len(again.table)


def test_progress_and_cancel_reach_the_network(tiny_weights):
    calls = []
    segment(IMAGE, tiny_weights["unet"], progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    with pytest.raises(Cancelled):
        segment(IMAGE, tiny_weights["unet"], cancelled=lambda: True)


@pytest.mark.parametrize(
    "model, fragment",
    [("unett", "unet, unetpp, hrnet"), ("missing/model.safetensors", "no such file")],
)
def test_unknown_models_are_a_weights_error(model, fragment):
    with pytest.raises(WeightsError, match=fragment):
        segment(IMAGE, model)


def test_bad_weights_file_is_a_weights_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="broken.safetensors"):
        segment(IMAGE, path)


@pytest.mark.parametrize("settings", [{"threshold": 1.5}, {"threshold": float("nan")}, {"min_size": -1},
                                      {"boundary_threshold": -0.1}, {"neck_ratio": 1.5}, {"seed_min_size": -3},
                                      {"seed_min_size": 2.5}])
def test_bad_settings_are_value_errors(tiny_weights, settings):
    with pytest.raises(ValueError):
        segment(IMAGE, tiny_weights["unet"], **settings)


def test_bad_image_is_an_image_error(tiny_weights):
    with pytest.raises(ImageError):
        segment(np.zeros((3, 40, 40, 2)), tiny_weights["unet"])


def test_import_leaves_torch_and_qt_unimported():
    code = (
        "import sys, napari_nucleiseg\n"
        "from napari_nucleiseg import segment, SegmentationResult\n"
        "import napari_nucleiseg.cli\n"
        "heavy = sorted(m for m in ('torch', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari')\n"
        "               if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_public_api():
    assert {"segment", "SegmentationResult", "__version__"} <= set(napari_nucleiseg.__all__)


@pytest.mark.parametrize("settings, name", [
    ({"threshold": "0.5"}, "threshold"), ({"threshold": True}, "threshold"), ({"min_size": float("inf")}, "min_size"),
    ({"seed_min_size": float("inf")}, "seed_min_size"), ({"split": "no"}, "split"), ({"neck_ratio": "0"}, "neck_ratio"),
    ({"exclude_border": "yes"}, "exclude_border"), ({"exclude_border": 1}, "exclude_border"),
])
def test_settings_of_the_wrong_type_are_one_sentence_before_any_work(tiny_weights, settings, name):
    with pytest.raises(ValueError, match=f"^{name} must be") as raised:
        segment(IMAGE, tiny_weights["unet"], **settings)
    assert "\n" not in str(raised.value)
    if name in ("threshold", "neck_ratio"):  # QA: "must be between 0 and 1, not '0.5'" read as wrong
        assert str(raised.value).startswith(f"{name} must be a number between 0 and 1")


@pytest.mark.parametrize("model", [None, 123, ""])
def test_a_model_that_is_no_model_is_one_sentence(model):
    with pytest.raises(WeightsError, match="^Unknown model"):
        segment(IMAGE, model)


def test_a_tensor_that_requires_grad_is_one_sentence():
    import torch

    with pytest.raises(ImageError, match="detach"):
        segment(torch.zeros(32, 32, requires_grad=True), "unet")


def test_channel_segments_one_channel_alone_never_summed():
    """Issue 17, item 4: DAPI + marker, channels first or last; the marker's spots are not counted."""
    from napari_nucleiseg._sample_data import read_sample

    dapi = read_sample("fluorescence")
    marker = np.zeros_like(dapi)
    marker[20:40, 20:300] = 255  # a bright bar: not DAPI's nuclei
    alone = segment(dapi, model="hrnet")
    for image in (np.stack([dapi, marker]), np.stack([dapi, marker], axis=-1)):
        result = segment(image, model="hrnet", channel=0)
        assert result.labels.shape == dapi.shape and result.count == alone.count
        np.testing.assert_array_equal(result.labels, alone.labels)
    with pytest.raises(ImageError, match=r"has 2 channels \(0 to 1\), not a channel 2"):
        segment(np.stack([dapi, marker]), model="hrnet", channel=2)
    with pytest.raises(ImageError, match="The image is gray: it has one channel"):  # (channel 0 is itself)
        segment(dapi, model="hrnet", channel=1)


def test_nothing_is_found_under_the_transparent_pixels_of_an_rgba_image(tmp_path):
    """QA: an H&E section with its left half transparent (alpha 0, its colours kept) had as many nuclei found
    there, and exported, as with alpha 255 everywhere (193 of 193)."""
    from napari_nucleiseg._sample_data import read_sample

    tissue = read_sample("tissue")
    opaque = np.dstack([tissue, np.full(tissue.shape[:2], 255, np.uint8)])
    half = opaque.copy()
    cut = tissue.shape[1] // 2
    half[:, :cut, 3] = 0
    whole = segment(opaque, model="hrnet", diameter=16)
    shown = segment(half, model="hrnet", diameter=16)
    assert whole.count > 40 and not shown.labels[:, :cut].any()
    right = [label for label in np.unique(whole.labels[:, cut + 20:]) if label and not (whole.labels[:, :cut + 20] == label).any()]
    assert len(right) > 15 and shown.count >= len(right)  # the nuclei of the shown half, as before
    ours, theirs = shown.labels[:, cut + 20:] > 0, whole.labels[:, cut + 20:] > 0  # (normalised on the shown half)
    assert (ours & theirs).sum() / (ours | theirs).sum() > 0.9
    np.testing.assert_array_equal(segment(opaque[..., :3], model="hrnet", diameter=16).labels, whole.labels)
    clear = opaque.copy()
    clear[..., 3] = 0  # transparent everywhere: napari shows nothing, and nothing is found
    assert segment(clear, model="hrnet", diameter=16).count == 0
    # Block by block (a whole slide with a transparent background), wholly transparent blocks included (review:
    # judged per block, an alpha of 0 everywhere in a block was taken for an unused channel).
    from napari_nucleiseg.large import segment_large

    width = tissue.shape[1]
    tiled = np.tile(half, (2, 2, 1))  # columns: transparent, shown, transparent, shown
    blocks = segment_large(tiled, "hrnet", tmp_path / "labels.zarr", diameter=16, block=128)
    in_blocks = np.asarray(blocks.labels[:])
    assert not in_blocks[:, :cut].any() and not in_blocks[:, width:width + cut].any()
    assert len(np.unique(in_blocks[:, cut + 20:width - 20])) > 15


def test_the_auto_diameter_of_an_rgba_image_reads_only_what_it_shows():
    """Review: the transparent part of a picture (here the visible part enlarged 3x) set the Auto diameter
    (18.7 px for 13.4, 60 nuclei for 70)."""
    from skimage.transform import resize

    from napari_nucleiseg._sample_data import read_sample

    visible = read_sample("fluorescence")[:256, :256]
    canvas = np.zeros((768, 1024, 4), np.uint8)
    canvas[:, :768, :3] = resize(visible, (768, 768), order=1, preserve_range=True).astype(np.uint8)[..., None]
    canvas[:256, 768:, :3] = visible[..., None]
    canvas[:256, 768:, 3] = 255
    alone, inside = segment(visible, model="hrnet"), segment(canvas, model="hrnet")
    assert abs(inside.diameter / alone.diameter - 1) < 0.1 and inside.count >= 0.9 * alone.count
    assert not inside.labels[:, :768].any()


def test_augment_segments_the_mean_of_four_flips_and_is_recorded(tiny_weights):
    image = blob_image((96, 128), centers=((20, 30), (50, 90), (70, 40)))
    model = load_model(tiny_weights["hrnet"])
    result = segment(image, model, augment=True)
    assert result.augmented and not segment(image, model).augmented
    np.testing.assert_allclose(result.probabilities, predict_probabilities(image, model, augment=True), atol=1e-6)
    mirrored = segment(np.ascontiguousarray(image[:, ::-1]), model, augment=True)
    np.testing.assert_array_equal(mirrored.labels[:, ::-1] > 0, result.labels > 0)
    assert mirrored.count == result.count


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_augment_is_one_sentence(tiny_weights, value):
    with pytest.raises(ValueError, match=r"^augment must be True or False, not .*$"):
        segment(IMAGE, tiny_weights["unet"], augment=value)


@pytest.mark.parametrize("diameter", [None, 13.0])
def test_an_image_of_too_many_axes_is_named_as_such_whatever_the_diameter(diameter):
    """QA: with a diameter, a (2, 2, 96, 96) array was told its diameter of 13 px was larger than the image
    (2 x 2 pixels)."""
    from napari_nucleiseg.errors import ImageError

    with pytest.raises(ImageError, match=r"^An image of shape \(2, 2, 96, 96\) is not a 2-D gray, RGB or RGBA image"):
        segment(np.zeros((2, 2, 96, 96), np.uint8), "unet", diameter=diameter)
