"""Post-processing: probabilities -> instance labels -> counts and per-nucleus measurements."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops_table
from skimage.segmentation import clear_border, relabel_sequential, watershed

from napari_nucleiseg.postprocess import (
    MEASUREMENT_COLUMNS,
    count_nuclei,
    labels_from_probabilities,
    measure_nuclei,
    split_by_shape,
    table_columns,
)
from napari_nucleiseg.settings import PostprocessSettings

from conftest import disk

SHAPE = (64, 96)
RIM = 2.5  # pixels: width of the boundary band the network is trained to predict


def probabilities_of(disks, shape=SHAPE):
    """``(2, H, W)`` probabilities drawn from geometry: nucleus = union of the disks, boundary = rim of each."""
    nucleus = np.zeros(shape, bool)
    boundary = np.zeros(shape, bool)
    for center, radius in disks:
        inside = disk(shape, center, radius)
        nucleus |= inside
        boundary |= inside & ~disk(shape, center, radius - RIM)
    return np.stack([nucleus, boundary]).astype(np.float32)


TOUCHING = [((32, 32), 14), ((32, 58), 14)]  # centres 26 apart, radii 14: they overlap by 2 pixels


def test_two_touching_disks_are_split():
    labels = labels_from_probabilities(probabilities_of(TOUCHING), 0.5, min_size=10, split=True)
    assert count_nuclei(labels) == 2
    # Each disk is (almost all) one label of its own.
    for center, radius in TOUCHING:
        inside = disk(SHAPE, center, radius)
        ids, sizes = np.unique(labels[inside], return_counts=True)
        assert ids[sizes.argmax()] == labels[center]
        assert sizes.max() >= 0.85 * inside.sum()
    assert labels[TOUCHING[0][0]] != labels[TOUCHING[1][0]]
    # Nothing of the union is lost: the watershed fills the rims back in.
    assert np.array_equal(labels > 0, probabilities_of(TOUCHING)[0] > 0.5)


def test_two_touching_disks_stay_one_without_splitting():
    labels = labels_from_probabilities(probabilities_of(TOUCHING), 0.5, min_size=10, split=False)
    assert count_nuclei(labels) == 1


def test_separate_disks_are_separate_either_way():
    disks = [((20, 20), 8), ((40, 70), 10), ((50, 20), 6)]
    for split in (True, False):
        assert count_nuclei(labels_from_probabilities(probabilities_of(disks), min_size=10, split=split)) == 3


def test_soft_probabilities_split_too():
    # Smooth the hard geometry the way a network's output is smooth.
    from scipy.ndimage import gaussian_filter

    soft = np.stack([gaussian_filter(channel, 1.5) for channel in probabilities_of(TOUCHING)])
    assert count_nuclei(labels_from_probabilities(soft, 0.5, split=True, boundary_threshold=0.3)) == 2
    assert count_nuclei(labels_from_probabilities(soft, 0.5, split=False)) == 1


def test_threshold_changes_the_mask():
    probabilities = probabilities_of([((32, 48), 20)])
    probabilities[0] *= np.linspace(0.2, 1.0, SHAPE[1])[None, :]  # fades out towards the left
    low = labels_from_probabilities(probabilities, 0.3, min_size=0, split=False)
    high = labels_from_probabilities(probabilities, 0.7, min_size=0, split=False)
    assert (high > 0).sum() < (low > 0).sum()
    assert np.all(low[high > 0] > 0)


def test_min_size_drops_small_nuclei_and_renumbers():
    disks = [((10, 10), 3), ((40, 60), 12), ((20, 80), 2)]  # about 29, 450 and 13 pixels
    probabilities = probabilities_of(disks)
    kept = labels_from_probabilities(probabilities, min_size=100, split=False)
    assert count_nuclei(kept) == 1 and kept.max() == 1
    assert kept[40, 60] == 1 and kept[10, 10] == 0 and kept[20, 80] == 0
    assert count_nuclei(labels_from_probabilities(probabilities, min_size=20, split=False)) == 2
    assert count_nuclei(labels_from_probabilities(probabilities, min_size=0, split=False)) == 3


def test_holes_are_filled():
    probabilities = probabilities_of([((32, 48), 15)])
    probabilities[0][disk(SHAPE, (32, 48), 5)] = 0  # a dark nucleolus
    labels = labels_from_probabilities(probabilities, split=False)
    assert count_nuclei(labels) == 1
    assert labels[32, 48] == 1


def test_labels_are_consecutive_uint16():
    disks = [((12, 12 + 18 * i), 6) for i in range(5)] + [((45, 10 + 20 * i), 7) for i in range(4)]
    labels = labels_from_probabilities(probabilities_of(disks), min_size=10)
    assert labels.dtype == np.uint16
    assert labels.shape == SHAPE
    assert set(np.unique(labels)) == set(range(count_nuclei(labels) + 1))
    assert count_nuclei(labels) == len(disks)


@pytest.mark.parametrize("split", [True, False])
def test_more_than_65535_nuclei_use_uint32(split):
    # One isolated pixel on every other row and column: 256 x 258 = 66,048 nuclei.
    probabilities = np.zeros((2, 512, 516), np.float32)
    probabilities[0, ::2, ::2] = 1
    labels = labels_from_probabilities(probabilities, min_size=1, split=split)
    assert labels.dtype == np.uint32
    assert count_nuclei(labels) == 256 * 258 == labels.max()


# Joined nuclei for the cut by shape: an "8" of two disks of radius 10 whose centres are 16 apart
# (a neck 12 pixels wide, against 20 through each disk), beside single nuclei of radius 7 that set
# the median area the "8" is large against.
EIGHT = [((30, 30), 10), ((30, 46), 10)]
SINGLES = [((12, 80), 7), ((48, 80), 7), ((12, 110), 7), ((48, 110), 7)]
SHAPE_SCENE = (64, 128)


def scene(*groups):
    """Labels: each group of disks is one object (the union of its disks), numbered in order."""
    labels = np.zeros(SHAPE_SCENE, np.uint16)
    for number, group in enumerate(groups, start=1):
        for center, radius in group:
            labels[disk(SHAPE_SCENE, center, radius)] = number
    return labels


def best_iou(labels, mask):
    return max(np.count_nonzero((labels == i) & mask) / np.count_nonzero((labels == i) | mask)
               for i in np.unique(labels[mask]) if i)


def test_an_eight_is_cut_into_its_two_nuclei():
    labels = scene(EIGHT, *[[d] for d in SINGLES])
    cut = split_by_shape(labels, 0.3)
    assert count_nuclei(cut) == count_nuclei(labels) + 1 == 6
    for center, _ in EIGHT:  # each half matches its own disk (the cut runs through the neck)
        half = disk(SHAPE_SCENE, center, 10) & (labels == 1)
        half &= np.abs(np.indices(SHAPE_SCENE)[1] - center[1]) < 8
        assert best_iou(cut, half) > 0.75
    assert set(np.unique(cut)) == set(range(7))  # the first piece keeps 1, the new one is 6
    assert np.array_equal(cut[labels != 1], labels[labels != 1])  # nothing else changes
    assert np.array_equal(cut > 0, labels > 0)


def test_a_shallow_neck_or_a_plain_ellipse_is_not_cut():
    yy, xx = np.indices(SHAPE_SCENE)
    ellipse = ((yy - 30) / 9.0) ** 2 + ((xx - 38) / 20.0) ** 2 <= 1
    labels = scene(*[[d] for d in SINGLES])
    labels[ellipse] = 5
    assert np.array_equal(split_by_shape(labels, 0.2), labels)
    eight = scene(EIGHT, *[[d] for d in SINGLES])
    assert np.array_equal(split_by_shape(eight, 0.6), eight)  # the neck is 0.4 of the thickness deep, not 0.6


def test_the_cut_is_off_at_zero_and_for_nuclei_of_ordinary_size():
    labels = scene(EIGHT, *[[d] for d in SINGLES])
    assert split_by_shape(labels, 0.0) is labels
    # Among other "8"s of the same size, this one is an ordinary nucleus: not looked at.
    eights = scene(EIGHT, [((30, 80), 10), ((30, 96), 10)])
    assert np.array_equal(split_by_shape(eights, 0.3), eights)


def test_a_cut_that_leaves_a_piece_under_min_size_is_not_made():
    labels = scene(EIGHT, *[[d] for d in SINGLES])
    assert count_nuclei(split_by_shape(labels, 0.3, min_size=300)) == 5  # each half is ~290 px
    assert count_nuclei(split_by_shape(labels, 0.3, min_size=200)) == 6


def test_labels_from_probabilities_cuts_an_eight_without_a_boundary_when_splitting():
    probabilities = np.zeros((2, *SHAPE_SCENE), np.float32)  # no boundary predicted between the two
    probabilities[0] = scene(EIGHT, *[[d] for d in SINGLES]) > 0
    assert count_nuclei(labels_from_probabilities(probabilities, min_size=10, neck_ratio=0.3)) == 6
    assert count_nuclei(labels_from_probabilities(probabilities, min_size=10)) == 5  # neck_ratio 0: off
    assert count_nuclei(labels_from_probabilities(probabilities, min_size=10, split=False, neck_ratio=0.3)) == 5
    with pytest.raises(ValueError, match="neck_ratio"):
        labels_from_probabilities(probabilities, neck_ratio=1.5)


@pytest.mark.parametrize("labels", [np.zeros((4, 4, 2), np.uint16), np.zeros((4, 4), np.float32),
                                    np.full((4, 4), -1, np.int32)])
def test_the_cut_refuses_what_are_not_labels(labels):
    with pytest.raises(ValueError, match="labels"):
        split_by_shape(labels, 0.3)


def test_the_cut_goes_to_uint32_when_the_count_passes_uint16():
    labels = scene(EIGHT, *[[d] for d in SINGLES])
    labels[labels > 1] += 65535 - 5  # the singles become 65,531..65,535
    cut = split_by_shape(labels, 0.3)
    assert cut.dtype == np.uint32 and cut.max() == 65536
    assert labels.dtype == np.uint16  # the input is left alone


def test_nan_probabilities_count_as_background():
    probabilities = probabilities_of(TOUCHING)
    probabilities[:, :, :5] = np.nan
    probabilities[1, 32, 30:34] = np.nan  # NaN boundary inside a nucleus
    probabilities[0, 0:3, 60:90] = np.nan
    labels = labels_from_probabilities(probabilities, split=True)
    assert count_nuclei(labels) == 2
    assert np.all(labels[:, :5] == 0)


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("shape", [(0, 0), (0, 7), (1, 1), (40, 30)])
def test_empty_probabilities_give_empty_labels(shape, split):
    labels = labels_from_probabilities(np.zeros((2, *shape), np.float32), split=split)
    assert labels.shape == shape and labels.dtype == np.uint16
    assert count_nuclei(labels) == 0


def test_probabilities_need_two_channels():
    with pytest.raises(ValueError, match="shape"):
        labels_from_probabilities(np.zeros((64, 64), np.float32))


def test_count_ignores_background_and_gaps():
    labels = np.zeros((8, 8), np.uint32)
    labels[0, 0] = 3
    labels[5, 5:7] = 70_000
    labels[7, 7] = 3
    assert count_nuclei(labels) == 2
    assert count_nuclei(np.zeros((3, 3), np.uint16)) == 0


def whole_image_watershed(probabilities, threshold, boundary_threshold):
    """What splitting is defined as: scikit-image's seeded watershed of the whole image, seeds numbered in
    raster order, the parts of the mask no seed reaches numbered after them."""
    nucleus = np.nan_to_num(probabilities[0].astype(np.float32), nan=0.0)
    mask = ndi.binary_fill_holes(nucleus > threshold)
    seeds = mask & (np.nan_to_num(probabilities[1], nan=0.0) < boundary_threshold)
    markers, count = ndi.label(seeds)
    labels = watershed(-nucleus, markers, mask=mask)
    unreached, _ = ndi.label(mask & (labels == 0))
    return np.where(unreached > 0, unreached + count, labels)


def test_split_equals_the_whole_image_watershed():
    # Smooth random maps: blobs of every shape that touch in every way, without two equal
    # probabilities (where the watershed may break ties either way), NaN included.
    rng = np.random.default_rng(0)
    touching = 0
    for _ in range(16):
        shape = tuple(rng.integers(20, 70, size=2))
        probabilities = np.stack([ndi.gaussian_filter(rng.random(shape), rng.uniform(1, 3)) for _ in range(2)])
        probabilities = (probabilities - probabilities.min()) / np.ptp(probabilities)
        probabilities[:, rng.random(shape) < 0.01] = np.nan  # equal to each other, but NaN is background
        threshold, boundary_threshold = rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.7)
        expected = whole_image_watershed(probabilities, threshold, boundary_threshold)
        labels = labels_from_probabilities(probabilities, threshold, min_size=0, boundary_threshold=boundary_threshold)
        np.testing.assert_array_equal(labels, expected)
        touching += expected.max() > ndi.label(expected > 0)[1]  # nuclei touched: the watershed had work
    assert touching >= 8


def test_three_nuclei_meeting_at_one_point_are_three():
    meeting = [((20, 20), 11), ((20, 40), 11), ((37, 30), 11)]
    labels = labels_from_probabilities(probabilities_of(meeting), min_size=10)
    assert count_nuclei(labels) == 3
    assert len({labels[center] for center, _ in meeting}) == 3


def test_a_nucleus_made_only_of_boundary_is_kept_after_the_seeded_ones():
    probabilities = probabilities_of([((20, 20), 10), ((40, 70), 6)])
    probabilities[1][disk(SHAPE, (40, 70), 6)] = 1.0  # all boundary: no seed
    labels = labels_from_probabilities(probabilities, min_size=10)
    assert count_nuclei(labels) == 2
    assert labels[20, 20] == 1 and labels[40, 70] == 2


# --- measurements ------------------------------------------------------------------------------------


def rectangles():
    """Two rectangles with known geometry (labels 2 and 7, not consecutive) and an image of two gray levels."""
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 7:27] = 2  # 10 x 20
    labels[20:36, 30:34] = 7  # 16 x 4
    image = np.zeros((40, 50), np.uint8)
    image[5:15, 7:27] = 100
    image[20:36, 30:34] = 30
    image[20:28, 30:34] = 50  # upper half brighter: mean 40
    return labels, image


def test_measurements_of_known_shapes():
    labels, image = rectangles()
    table = measure_nuclei(labels, image)
    assert list(table.columns) == list(MEASUREMENT_COLUMNS)
    assert list(table["label"]) == [2, 7]
    first, second = table.iloc[0], table.iloc[1]
    assert first["area"] == 200 and second["area"] == 64
    assert (first["centroid_y"], first["centroid_x"]) == (9.5, 16.5)
    assert (second["centroid_y"], second["centroid_x"]) == (27.5, 31.5)
    assert tuple(first[["bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]]) == (5, 7, 15, 27)
    assert tuple(second[["bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]]) == (20, 30, 36, 34)
    assert first["mean_intensity"] == 100 and second["mean_intensity"] == 40
    assert first["equivalent_diameter"] == pytest.approx(np.sqrt(4 * 200 / np.pi))
    assert first["solidity"] == pytest.approx(1.0)
    # A 16 x 4 bar is more elongated than a 10 x 20 one; neither is a circle.
    assert 0 < first["eccentricity"] < second["eccentricity"] < 1


def test_rgb_intensity_is_the_mean_of_the_colour_channels():
    labels, gray = rectangles()
    rgb = np.stack([gray, gray * 2, np.zeros_like(gray)], axis=-1).astype(np.uint16)
    rgba = np.dstack([rgb, np.full(gray.shape, 7, np.uint16)])
    expected = measure_nuclei(labels, gray)["mean_intensity"].to_numpy()
    np.testing.assert_allclose(measure_nuclei(labels, rgb)["mean_intensity"], expected)  # (g + 2g + 0) / 3 = g
    np.testing.assert_allclose(measure_nuclei(labels, rgba)["mean_intensity"], expected)


def test_a_colour_image_gives_each_colour_s_mean_per_nucleus():
    """An overlay's marker (red) beside its nuclear stain (blue), or a tissue's stains: one mean per colour
    and nucleus, after mean_intensity; a gray image has no such columns."""
    labels, gray = rectangles()
    gray = gray.astype(np.uint16)
    rgba = np.stack([gray * 3, np.zeros_like(gray), gray, np.full(gray.shape, 7)], axis=-1).astype(np.uint16)
    table, plain = measure_nuclei(labels, rgba), measure_nuclei(labels, gray)
    assert list(table.columns) == list(table_columns(colour=True)) and list(plain.columns) == list(MEASUREMENT_COLUMNS)
    at = list(table.columns).index("mean_intensity")
    assert list(table.columns)[at + 1:at + 4] == ["mean_red", "mean_green", "mean_blue"]
    np.testing.assert_allclose(table["mean_blue"], plain["mean_intensity"])
    np.testing.assert_allclose(table["mean_red"], 3 * plain["mean_intensity"])
    assert (table["mean_green"] == 0).all()
    empty = measure_nuclei(np.zeros_like(labels), rgba)  # no nuclei: the same columns, no rows
    assert list(empty.columns) == list(table_columns(colour=True)) and empty.empty


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_nan_or_inf_pixel_is_left_out_of_a_nucleus_s_mean_intensity():
    """QA: one saturated (inf) pixel of a float image made its nucleus's mean intensity inf, and numpy
    warnings ('invalid value encountered in subtract') reached the user."""
    from napari_nucleiseg import segment
    from napari_nucleiseg._sample_data import read_sample

    image = read_sample("fluorescence").astype(np.float32)
    plain = segment(image, model="unet")
    label = int(plain.labels[tuple(np.argwhere(plain.labels > 0)[0])])
    (y, x), (v, u) = np.argwhere(plain.labels == label)[:2]
    image[y, x], image[v, u] = np.inf, np.nan
    result = segment(image, model="unet")  # (no warning: they are errors here)
    assert result.count > 0 and np.isfinite(result.table["mean_intensity"]).all()
    table = measure_nuclei(plain.labels, image).set_index("label")
    inside = (plain.labels == label) & np.isfinite(image)
    assert table.loc[label, "mean_intensity"] == pytest.approx(image[inside].mean(), rel=1e-5)
    alone = np.zeros((3, 3), np.int32)
    alone[1, 1] = 1
    assert np.isnan(measure_nuclei(alone, np.full((3, 3), np.nan))["mean_intensity"][0])  # no finite pixel


def test_without_an_image_mean_intensity_is_nan():
    labels, _ = rectangles()
    table = measure_nuclei(labels)
    assert list(table.columns) == list(MEASUREMENT_COLUMNS)
    assert table["mean_intensity"].isna().all()
    assert table["area"].notna().all()


def assert_agrees_with_scikit_image(labels, image=None):
    table = measure_nuclei(labels, image)
    properties = ("label", "area", "centroid", "bbox", "eccentricity", "perimeter", "equivalent_diameter_area",
                  "solidity") + (() if image is None else ("intensity_mean",))
    reference = regionprops_table(labels, image, properties=properties)
    pairs = {
        "label": "label", "area": "area", "centroid_y": "centroid-0", "centroid_x": "centroid-1",
        "bbox_min_y": "bbox-0", "bbox_min_x": "bbox-1", "bbox_max_y": "bbox-2", "bbox_max_x": "bbox-3",
        "mean_intensity": "intensity_mean", "eccentricity": "eccentricity", "perimeter": "perimeter",
        "equivalent_diameter": "equivalent_diameter_area", "solidity": "solidity",
    }
    assert set(pairs) == set(MEASUREMENT_COLUMNS)
    for ours, theirs in pairs.items():
        if theirs in reference:
            np.testing.assert_allclose(table[ours].to_numpy(), reference[theirs], rtol=1e-9, atol=1e-9, err_msg=ours)


def test_measurements_agree_with_scikit_image():
    labels = labels_from_probabilities(
        probabilities_of([((15, 15), 9), ((40, 30), 12), ((30, 70), 10), ((30, 82), 8), ((55, 85), 5)]), min_size=5
    )
    # Irregular shapes: cut a notch out of some nuclei.
    labels[35:45, 25:29] = 0
    assert_agrees_with_scikit_image(labels, np.random.default_rng(0).random(labels.shape))


@pytest.mark.parametrize("seed", range(6))
def test_measurements_of_painted_labels_agree_with_scikit_image(seed):
    # Hand-painted labels: scattered pixels, parts in several places, holes, shapes cut by the
    # image's edge, one-pixel lines, label values far apart.
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(5, 60, size=2))
    if seed % 2:
        labels = rng.choice([0, 0, 0, 1, 2, 300, 70_000], size=shape).astype(np.int32)
    else:
        labels = np.zeros(shape, np.int64)
        for value in rng.integers(1, 8, size=6):
            labels[disk(shape, rng.integers(0, shape, size=2), rng.uniform(0.5, 12))] = value
        labels[rng.integers(shape[0]), :] = 2**22 + 1  # a label too large for a lookup table
        labels[disk(shape, rng.integers(0, shape, size=2), 2.5)] = 0
    assert_agrees_with_scikit_image(labels, rng.random(shape))
    assert_agrees_with_scikit_image(labels)


def test_one_row_per_counted_nucleus():
    disks = [((12, 12 + 18 * i), 6) for i in range(5)] + [((45, 10 + 20 * i), 7) for i in range(4)]
    labels = labels_from_probabilities(probabilities_of(disks))
    table = measure_nuclei(labels)
    assert len(table) == count_nuclei(labels)
    assert table["area"].sum() == (labels > 0).sum()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.int64])
def test_empty_labels_give_an_empty_table_with_the_same_columns(dtype):
    table = measure_nuclei(np.zeros((30, 20), dtype), np.ones((30, 20)))
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == list(MEASUREMENT_COLUMNS)
    assert len(table) == 0
    filled = measure_nuclei(rectangles()[0])
    assert dict(table.dtypes) == dict(filled.dtypes)


def test_many_nuclei():
    # A grid of 1,600 small 4 x 3 nuclei.
    labels = np.zeros((400, 400), np.uint32)
    labels[2::10, 2::10] = np.arange(1, 1601).reshape(40, 40)
    labels = np.maximum.reduce([np.roll(labels, (dy, dx), (0, 1)) for dy in range(4) for dx in range(3)])
    table = measure_nuclei(labels, labels.astype(np.float32))
    assert len(table) == 1600 == count_nuclei(labels)
    assert (table["area"] == 12).all()
    np.testing.assert_allclose(table["mean_intensity"], table["label"])


@pytest.mark.parametrize(
    "labels, image",
    [
        (np.zeros((4, 5, 6), np.uint16), None),
        (np.zeros((4, 5), np.float32), None),
        (np.zeros((4, 5), np.uint16), np.zeros((5, 4))),
        (np.full((4, 5), -1, np.int32), None),
    ],
    ids=["3-d", "float", "image-of-another-size", "negative"],
)
def test_bad_inputs_are_value_errors(labels, image):
    with pytest.raises(ValueError):
        measure_nuclei(labels, image)


def test_a_speck_of_seed_does_not_split_a_nucleus_but_a_real_seed_does():
    # Two touching disks with a faint boundary line between them, and inside the left disk a
    # speck where the boundary channel dips (3 px): every seed counts -> the speck splits the
    # left nucleus in two; seeds of >= 10 px -> the speck is flooded from its nucleus's seed.
    yy, xx = np.indices((40, 70))
    left, right = (yy - 20) ** 2 + (xx - 22) ** 2 <= 144, (yy - 20) ** 2 + (xx - 45) ** 2 <= 144
    probabilities = np.zeros((2, 40, 70), np.float32)
    probabilities[0] = left | right
    probabilities[1][left | right] = 0.001
    probabilities[1][:, 33:35] = 0.5  # the boundary between the two
    probabilities[1][(yy - 20) ** 2 + (xx - 22) ** 2 <= 36] = 0.5  # a ring in the left disk...
    probabilities[1][20, 21:24] = 0.001  # ...around a speck of 3 px that could seed
    options = dict(min_size=0, boundary_threshold=0.01)

    assert count_nuclei(labels_from_probabilities(probabilities, **options)) == 3
    labels = labels_from_probabilities(probabilities, seed_min_size=10, **options)
    assert count_nuclei(labels) == 2
    assert labels[20, 22] == labels[20, 10] != labels[20, 45]  # the speck went with its own disk
    assert np.array_equal(labels > 0, left | right)
    assert count_nuclei(labels_from_probabilities(probabilities, seed_min_size=10, split=False, **options)) == 1
    with pytest.raises(ValueError, match="seed_min_size"):
        labels_from_probabilities(probabilities, seed_min_size=2.5)


def test_nuclei_touching_the_border_are_dropped_only_when_asked_and_the_rest_renumbered():
    # Cut by the top, the left (split from a whole nucleus it touches) and the right edge; two whole ones.
    disks = [((2, 40), 8), ((32, 8), 12), ((32, 30), 12), ((12, 70), 7), ((40, 92), 8)]
    probabilities = probabilities_of(disks)
    for split in (True, False):
        labels = labels_from_probabilities(probabilities, min_size=10, split=split)
        inner = labels_from_probabilities(probabilities, min_size=10, split=split, exclude_border=True)
        assert inner.dtype == labels.dtype
        np.testing.assert_array_equal(inner, relabel_sequential(clear_border(labels))[0])
    assert count_nuclei(labels_from_probabilities(probabilities, min_size=10)) == 5
    inner = labels_from_probabilities(probabilities, min_size=10, exclude_border=True)
    assert count_nuclei(inner) == inner.max() == 2
    assert inner[32, 30] > 0 and inner[12, 70] > 0  # a whole nucleus touching a cut one is kept
    assert not (inner[0].any() or inner[-1].any() or inner[:, 0].any() or inner[:, -1].any())


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_exclude_border_is_true_or_false_in_one_sentence(value):
    with pytest.raises(ValueError, match=f"^exclude_border must be True or False, not {value!r}$"):
        PostprocessSettings(exclude_border=value).validate()
    with pytest.raises(ValueError, match="^exclude_border must be True or False"):
        labels_from_probabilities(probabilities_of(TOUCHING), exclude_border=value)
