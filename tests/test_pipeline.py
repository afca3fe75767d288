"""The pipeline and the Qt-free helpers of the widget: stacks as planes, stack labels, compact maps, names, tooltips, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nucleiseg import _outputs, _rethreshold, _run, pipeline, tables
from napari_nucleiseg import compact as compact_maps
from napari_nucleiseg.errors import ImageError
from napari_nucleiseg.settings import PostprocessSettings
from napari_nucleiseg.weights import describe_weights


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
    assert pipeline.stack_shape(shape, rgb) == (leading, plane)


@pytest.mark.parametrize(
    ("shape", "rgb"),
    [((7,), False), ((5, 3), True), ((5, 7, 2), True), ((0, 7), False), ((3, 0, 7), False), ((256, 256, 2), False)],
)
def test_stack_shape_rejects_what_holds_no_plane_in_one_sentence(shape, rgb):
    with pytest.raises(ImageError) as error:
        pipeline.stack_shape(shape, rgb)
    assert str(error.value).endswith(".") and "\n" not in str(error.value)


def test_labels_of_a_stack_are_numbered_on_through_the_planes():
    probabilities = np.zeros((3, 2, 20, 20), dtype=np.float32)
    probabilities[0, 0, 2:8, 2:8] = 1
    probabilities[1, 0, 2:8, 2:8] = 1
    probabilities[1, 0, 12:18, 12:18] = 1
    labels = pipeline.labels_from_stack(probabilities, PostprocessSettings(threshold=0.5, min_size=1, split=False))
    assert labels.shape == (3, 20, 20)
    assert [sorted(set(np.unique(plane)) - {0}) for plane in labels] == [[1], [2, 3], []]


def test_border_nuclei_of_a_stack_are_excluded_plane_by_plane_and_the_rest_numbered_on():
    probabilities = np.zeros((3, 2, 20, 20), dtype=np.float32)
    probabilities[0, 0, 2:8, 2:8] = 1
    probabilities[0, 0, 12:20, 12:18] = 1  # touches the bottom edge of plane 0 ...
    probabilities[1, 0, 12:18, 12:18] = 1  # ... and of no other plane
    probabilities[2, 0, 0:6, 5:9] = 1
    labels = pipeline.labels_from_stack(probabilities, PostprocessSettings(threshold=0.5, min_size=1, split=False,
                                                                           exclude_border=True))
    assert [sorted(set(np.unique(plane)) - {0}) for plane in labels] == [[1], [2], []]
    assert labels[1, 15, 15] == 2


def test_a_single_plane_keeps_its_shape():
    probabilities = np.zeros((2, 20, 20), dtype=np.float32)
    probabilities[0, 2:8, 2:8] = 1
    labels = pipeline.labels_from_stack(probabilities, PostprocessSettings(threshold=0.5, min_size=1, split=False))
    assert labels.shape == (20, 20) and labels.max() == 1


def test_the_table_of_a_stack_says_which_plane_each_nucleus_is_in():
    labels = np.zeros((2, 10, 10), dtype=np.uint16)
    labels[0, 1:3, 1:3] = 1
    labels[1, 5:9, 5:9] = 2
    image = np.full((2, 10, 10), 50, dtype=np.uint8)
    table = tables.nuclei_table(labels, image, rgb=False)
    assert table["label"].tolist() == table["index"].tolist() == [1, 2]
    assert table["axis_0"].tolist() == [0, 1]
    assert table["area"].tolist() == [4, 16]
    assert table["mean_intensity"].tolist() == [50, 50]


def test_checksum_changes_with_one_pixel():
    labels = np.zeros((64, 64), dtype=np.uint16)
    before = _outputs.checksum(labels)
    labels[10, 10] = 1
    assert _outputs.checksum(labels) != before


def test_unique_name_counts_up():
    assert _outputs.unique_name("a nuclei", set()) == "a nuclei"
    assert _outputs.unique_name("a nuclei", {"a nuclei", "a nuclei [2]"}) == "a nuclei [3]"


def test_describe_weights_names_the_training_data_and_the_validation_scores():
    text = describe_weights(
        {
            "architecture": "unet",
            "training": {"data": "DSB2018 stage1_train, 596 images", "epochs": 40, "minutes": 31.5},
            "metrics": {"val": {"dsb_score": 0.61234, "mean_iou": 0.8}, "notes": "text is skipped"},
            "threshold": 0.45,
            "min_size": 12,
        }
    )
    assert "DSB2018 stage1_train, 596 images" in text
    assert "DSB2018 score 0.61" in text and "mean IoU 0.80" in text  # in words, not the file's keys
    assert "Threshold 0.45" in text


# ---- the compact probability cache ------------------------------------------------------------

#: Every threshold the widget's slider can take (0.05 to 0.95 in steps of 0.01).
SLIDER_THRESHOLDS = [round(0.05 + 0.01 * step, 2) for step in range(91)]


def touching_nuclei(shape=(96, 128), seed=0) -> np.ndarray:
    """``(2, Y, X)`` float32 maps a network might give: blurred, partly touching disks and their rims."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.indices(shape)
    for label, (y, x) in enumerate(rng.uniform((8, 8), (shape[0] - 8, shape[1] - 8), size=(14, 2)), start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= rng.uniform(5, 10) ** 2] = label
    nucleus = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0)
    rim = find_boundaries(labels, mode="inner") & (labels > 0)
    boundary = np.clip(ndi.gaussian_filter(rim.astype(np.float32), 0.7) * 2, 0, 1)
    return np.stack([nucleus, boundary]).astype(np.float32)


def test_compact_probabilities_take_3_bytes_a_pixel_and_read_back_within_half_a_step():
    rng = np.random.default_rng(1)
    probabilities = rng.random((4, 2, 30, 40), dtype=np.float32)
    compact = compact_maps.CompactProbabilities.from_float(probabilities)
    assert compact.shape == probabilities.shape and compact.pixels == 4 * 30 * 40
    assert compact.nbytes == 3 * compact.pixels  # float32 maps: 8 bytes a pixel
    for index in range(4):
        plane = compact[(index,)]
        assert plane.dtype == np.float32 and plane.shape == (2, 30, 40)
        assert np.abs(plane[0] - probabilities[index, 0]).max() <= 0.5 / compact_maps.NUCLEUS_LEVELS + 1e-7
        assert np.abs(plane[1] - probabilities[index, 1]).max() <= 0.5 / compact_maps.BOUNDARY_LEVELS + 1e-7


def test_thresholds_on_the_slider_grid_give_exactly_the_masks_of_the_float32_maps():
    # Random values, and values exactly at, just below and just above every slider threshold.
    grid = np.array(SLIDER_THRESHOLDS, dtype=np.float32)
    edges = np.concatenate([grid, np.nextafter(grid, 0), np.nextafter(grid, 1), [0, 1]]).astype(np.float32)
    values = np.concatenate([np.random.default_rng(2).random(20_000, dtype=np.float32), edges])
    probabilities = np.stack([values, values[::-1]]).reshape(2, 1, -1)
    plane = compact_maps.CompactProbabilities.from_float(probabilities)[()]
    # numpy compares a float32 map with a Python float in float32: a pixel whose value is the
    # threshold rounded to float32 is not above it, though it may be above the threshold itself,
    # which is what the compact maps keep. Those pixels aside, the masks are the same.
    for threshold in SLIDER_THRESHOLDS:
        exact = np.float64(probabilities[0]) > threshold
        np.testing.assert_array_equal(plane[0] > threshold, exact)
        elsewhere = probabilities[0] != np.float32(threshold)
        np.testing.assert_array_equal((plane[0] > threshold)[elsewhere], (probabilities[0] > threshold)[elsewhere])
    for boundary_threshold in np.round(np.arange(0.005, 1.0, 0.005), 3):  # boundaries are compared with <
        exact = np.float64(probabilities[1]) < boundary_threshold
        np.testing.assert_array_equal(plane[1] < boundary_threshold, exact)
        elsewhere = probabilities[1] != np.float32(boundary_threshold)
        np.testing.assert_array_equal((plane[1] < boundary_threshold)[elsewhere],
                                      (probabilities[1] < boundary_threshold)[elsewhere])


def test_labels_from_the_compact_cache_equal_those_of_the_float32_maps():
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    probabilities = touching_nuclei()
    compact = compact_maps.CompactProbabilities.from_float(probabilities)
    for threshold in SLIDER_THRESHOLDS[::5]:
        options = {"threshold": threshold, "min_size": 5, "boundary_threshold": 0.5}
        exact = pipeline.labels_from_stack(probabilities, PostprocessSettings(split=False, **options))
        np.testing.assert_array_equal(pipeline.labels_from_stack(compact, PostprocessSettings(split=False, **options)), exact)
        # Splitting touching nuclei floods in the order of the nucleus probability: values less
        # than a step (1/60,000) apart become ties, which may move a split line a little.
        split = pipeline.labels_from_stack(probabilities, PostprocessSettings(split=True, **options))
        compact_split = pipeline.labels_from_stack(compact, PostprocessSettings(split=True, **options))
        assert compact_split.max() == split.max()
        np.testing.assert_array_equal(compact_split > 0, split > 0)
        split_lines = find_boundaries(split, mode="thick") & (split > 0)
        near_split_lines = ndi.binary_dilation(split_lines, iterations=2)
        assert not np.any((compact_split != split) & ~near_split_lines)


def test_nan_is_stored_as_background():
    probabilities = np.full((2, 4, 4), np.nan, dtype=np.float32)
    nucleus, boundary = compact_maps.CompactProbabilities.from_float(probabilities)[()]
    assert not nucleus.any()  # no nucleus ...
    assert (boundary < 0.005).all()  # ... and no boundary, below any boundary threshold


def test_the_nucleus_map_of_a_stack_is_shown_plane_by_plane():
    probabilities = np.random.default_rng(3).random((3, 2, 10, 12), dtype=np.float32)
    compact = compact_maps.CompactProbabilities.from_float(probabilities)
    image = compact.nucleus_image()
    assert image.shape == (3, 10, 12) and image.dtype == np.float32
    assert not isinstance(image, np.ndarray)  # lazy: a float32 copy of a long stack is what was saved
    np.testing.assert_array_equal(np.asarray(image[1]), compact[(1,)][0])
    single = compact_maps.CompactProbabilities.from_float(probabilities[0]).nucleus_image()
    np.testing.assert_array_equal(single, compact[(0,)][0])


def test_label_planes_can_stop_between_planes_and_numbers_on_through_the_stack():
    probabilities = np.zeros((3, 2, 20, 20), dtype=np.float32)
    probabilities[:, 0, 2:8, 2:8] = 1
    steps = pipeline.label_planes(probabilities, PostprocessSettings(threshold=0.5, min_size=1, split=False))
    assert [next(steps), next(steps)] == [1, 2]  # a worker may stop here
    with pytest.raises(StopIteration) as done:
        next(steps)
    assert [int(plane.max()) for plane in done.value.value] == [1, 2, 3]
    single = pipeline.label_planes(probabilities[0], PostprocessSettings(threshold=0.5, min_size=1, split=False))
    with pytest.raises(StopIteration):
        next(single)  # one plane: nothing to stop between


def test_labelling_in_a_worker_returns_a_failure_instead_of_raising(monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("napari_nucleiseg.postprocess.labels_from_probabilities", broken)
    outcome = pipeline.run_to_end(_rethreshold.label_in_worker(np.zeros((2, 2, 8, 8), dtype=np.float32),
                                                          PostprocessSettings(threshold=0.5)))
    assert isinstance(outcome, _run.Failure)
    assert outcome.message == "Not enough memory to find the nuclei of an image of shape (2, 8, 8)."
