"""The widget's Qt-free helpers: stacks as planes, stack labels, names, tooltips, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nucleiseg import _layers
from napari_nucleiseg.preprocess import ImageError


@pytest.mark.parametrize(
    ("shape", "rgb", "leading", "plane"),
    [
        ((5, 7), False, (), (5, 7)),
        ((5, 7, 3), True, (), (5, 7)),
        ((50, 70, 30), False, (50,), (70, 30)),  # not RGB for napari: a stack of 50 planes of 70 x 30
        ((2, 4, 50, 70), False, (2, 4), (50, 70)),
        ((2, 50, 70, 4), True, (2,), (50, 70)),
        ((1, 1), False, (), (1, 1)),
    ],
)
def test_stack_shape_follows_the_layers_rgb_flag(shape, rgb, leading, plane):
    assert _layers.stack_shape(shape, rgb) == (leading, plane)


@pytest.mark.parametrize(
    ("shape", "rgb"),
    [((7,), False), ((5, 3), True), ((5, 7, 2), True), ((0, 7), False), ((3, 0, 7), False), ((256, 256, 2), False)],
)
def test_stack_shape_rejects_what_holds_no_plane_in_one_sentence(shape, rgb):
    with pytest.raises(ImageError) as error:
        _layers.stack_shape(shape, rgb)
    assert str(error.value).endswith(".") and "\n" not in str(error.value)


def test_labels_of_a_stack_are_numbered_on_through_the_planes():
    probabilities = np.zeros((3, 2, 20, 20), dtype=np.float32)
    probabilities[0, 0, 2:8, 2:8] = 1
    probabilities[1, 0, 2:8, 2:8] = 1
    probabilities[1, 0, 12:18, 12:18] = 1
    labels = _layers.labels_from_stack(probabilities, threshold=0.5, min_size=1, split=False)
    assert labels.shape == (3, 20, 20)
    assert [sorted(set(np.unique(plane)) - {0}) for plane in labels] == [[1], [2, 3], []]


def test_a_single_plane_keeps_its_shape():
    probabilities = np.zeros((2, 20, 20), dtype=np.float32)
    probabilities[0, 2:8, 2:8] = 1
    labels = _layers.labels_from_stack(probabilities, threshold=0.5, min_size=1, split=False)
    assert labels.shape == (20, 20) and labels.max() == 1


def test_the_table_of_a_stack_says_which_plane_each_nucleus_is_in():
    labels = np.zeros((2, 10, 10), dtype=np.uint16)
    labels[0, 1:3, 1:3] = 1
    labels[1, 5:9, 5:9] = 2
    image = np.full((2, 10, 10), 50, dtype=np.uint8)
    table = _layers.nuclei_table(labels, image, rgb=False)
    assert table["label"].tolist() == table["index"].tolist() == [1, 2]
    assert table["axis_0"].tolist() == [0, 1]
    assert table["area"].tolist() == [4, 16]
    assert table["mean_intensity"].tolist() == [50, 50]


def test_checksum_changes_with_one_pixel():
    labels = np.zeros((64, 64), dtype=np.uint16)
    before = _layers.checksum(labels)
    labels[10, 10] = 1
    assert _layers.checksum(labels) != before


def test_unique_name_counts_up():
    assert _layers.unique_name("a nuclei", set()) == "a nuclei"
    assert _layers.unique_name("a nuclei", {"a nuclei", "a nuclei [2]"}) == "a nuclei [3]"


def test_describe_weights_names_the_training_data_and_the_validation_scores():
    text = _layers.describe_weights(
        {
            "architecture": "unet",
            "training": {"data": "DSB2018 stage1_train, 596 images", "epochs": 40, "minutes": 31.5},
            "metrics": {"val": {"dsb_score": 0.61234, "mean_iou": 0.8}, "notes": "text is skipped"},
            "threshold": 0.45,
            "min_size": 12,
        }
    )
    assert "DSB2018 stage1_train, 596 images" in text
    assert "dsb_score 0.612" in text and "mean_iou 0.800" in text
    assert "Threshold 0.45" in text
