"""Properties of post-processing that hold for every probability map (hypothesis finds counterexamples).

For ``labels_from_probabilities`` followed by ``count_nuclei`` and ``measure_nuclei``: labels are
1..N without gaps; the count is the number of distinct labels; splitting never merges (each nucleus
found with ``split=True`` lies inside one nucleus found without); ``min_size`` removes exactly the
nuclei smaller than it, and with ``min_size <= 1`` the nuclei cover exactly the hole-filled
thresholded mask; the table has one row per label, whatever the labels.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from napari_nucleiseg.postprocess import count_nuclei, labels_from_probabilities, measure_nuclei

#: Small maps and few examples: every example runs the whole post-processing, twice or more.
MAX_SIDE = 40
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)

sides = st.integers(1, MAX_SIDE)
thresholds = st.floats(0.0, 1.0)


@st.composite
def speckle(draw) -> np.ndarray:
    """``(2, H, W)`` maps of independent pixels: few values (so that regions form), and NaN."""
    shape = (2, draw(sides), draw(sides))
    values = st.sampled_from([0.0, 0.2, 0.45, 0.5, 0.55, 0.8, 1.0, np.nan])
    return draw(arrays(np.float32, shape, elements=values))


@st.composite
def disks(draw) -> np.ndarray:
    """``(2, H, W)`` maps of overlapping disks, each with its own nucleus probability, and a
    boundary probability high on their rims: touching nuclei that splitting should separate."""
    height, width = draw(sides), draw(sides)
    yy, xx = np.indices((height, width))
    maps = np.zeros((2, height, width), np.float32)
    for _ in range(draw(st.integers(0, 8))):
        cy, cx = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        radius = draw(st.floats(0.5, 10.0))
        distance = np.hypot(yy - cy, xx - cx)
        inside = distance <= radius
        maps[0][inside] = np.maximum(maps[0][inside], draw(st.floats(0.0, 1.0, width=32)))
        maps[1][inside & (distance > radius - 1.5)] = draw(st.floats(0.0, 1.0, width=32))
    return maps


probability_maps = st.one_of(speckle(), disks())


def segment(probabilities, threshold, *, split, min_size=0, boundary_threshold=0.5) -> np.ndarray:
    return labels_from_probabilities(
        probabilities, threshold, min_size=min_size, split=split, boundary_threshold=boundary_threshold
    )


@PROPERTY_SETTINGS
@given(probability_maps, thresholds, thresholds, st.booleans(), st.integers(0, 30))
def test_labels_are_consecutive_and_counted(probabilities, threshold, boundary_threshold, split, min_size):
    labels = segment(probabilities, threshold, split=split, min_size=min_size, boundary_threshold=boundary_threshold)
    assert labels.shape == probabilities.shape[1:] and labels.dtype == np.uint16
    found = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(found, np.arange(1, found.size + 1))  # 1..N, no gaps
    assert count_nuclei(labels) == found.size == labels.max()


@PROPERTY_SETTINGS
@given(probability_maps, thresholds, thresholds, st.integers(0, 30))
def test_splitting_never_merges(probabilities, threshold, boundary_threshold, min_size):
    split = segment(probabilities, threshold, split=True, min_size=min_size, boundary_threshold=boundary_threshold)
    whole = segment(probabilities, threshold, split=False, min_size=min_size, boundary_threshold=boundary_threshold)
    for label in range(1, split.max() + 1):
        containing = np.unique(whole[split == label])
        assert containing.size == 1 and containing[0] > 0, f"nucleus {label} of the split labels spans {containing}"
    if min_size <= 1:  # (with larger sizes, splitting may cut a nucleus into parts too small to keep)
        assert count_nuclei(split) >= count_nuclei(whole)


@PROPERTY_SETTINGS
@given(probability_maps, thresholds, thresholds, st.booleans(), st.integers(0, 1))
def test_without_a_minimum_size_the_nuclei_are_the_filled_mask(
    probabilities, threshold, boundary_threshold, split, min_size
):
    labels = segment(probabilities, threshold, split=split, min_size=min_size, boundary_threshold=boundary_threshold)
    nucleus = np.nan_to_num(probabilities[0], nan=0.0)  # NaN is background
    np.testing.assert_array_equal(labels > 0, ndi.binary_fill_holes(nucleus > threshold))


@PROPERTY_SETTINGS
@given(probability_maps, thresholds, st.booleans(), st.integers(2, 30))
def test_min_size_removes_exactly_the_smaller_nuclei(probabilities, threshold, split, min_size):
    everything = segment(probabilities, threshold, split=split, min_size=0)
    kept = segment(probabilities, threshold, split=split, min_size=min_size)
    areas = np.bincount(everything.ravel())
    large_enough = areas >= min_size
    large_enough[0] = False
    np.testing.assert_array_equal(kept > 0, large_enough[everything])
    assert count_nuclei(kept) == int(large_enough.sum())


@PROPERTY_SETTINGS
@given(probability_maps, thresholds, st.booleans())
def test_the_table_has_one_row_per_label(probabilities, threshold, split):
    labels = segment(probabilities, threshold, split=split)
    image = np.nan_to_num(probabilities[0]).astype(np.float64)
    table = measure_nuclei(labels, image)
    assert len(table) == count_nuclei(labels)
    assert table["label"].tolist() == list(range(1, count_nuclei(labels) + 1))
    np.testing.assert_array_equal(table["area"], np.bincount(labels.ravel())[1:])
    for row in table.itertuples():
        in_box = labels[row.bbox_min_y:row.bbox_max_y, row.bbox_min_x:row.bbox_max_x] == row.label
        assert in_box.sum() == row.area  # the whole nucleus lies in its (half-open) bounding box ...
        assert in_box[0].any() and in_box[-1].any() and in_box[:, 0].any() and in_box[:, -1].any()  # ... a tight one
        np.testing.assert_allclose(row.mean_intensity, image[labels == row.label].mean(), rtol=1e-6)


@PROPERTY_SETTINGS
@given(arrays(np.int32, st.tuples(sides, sides), elements=st.sampled_from([0, 0, 1, 2, 7, 300, 70_000])))
def test_the_table_of_hand_edited_labels_has_one_row_per_label(labels):
    """Painted labels need not be consecutive, nor connected: still one row per distinct label."""
    table = measure_nuclei(labels)
    present = np.unique(labels[labels > 0])
    assert table["label"].tolist() == present.tolist() and len(table) == count_nuclei(labels)
    np.testing.assert_array_equal(table["area"], [(labels == label).sum() for label in present])


@PROPERTY_SETTINGS
@given(probability_maps, thresholds, st.floats(0.0, 1.0), st.integers(0, 30))
def test_the_cut_by_shape_only_cuts(probabilities, threshold, neck_ratio, min_size):
    """With a neck ratio the nuclei cover the same pixels, each lies inside one nucleus found
    without it, none is under ``min_size`` (unless it was already), and labels stay 1..N."""
    plain = segment(probabilities, threshold, split=True, min_size=min_size)
    cut = labels_from_probabilities(probabilities, threshold, min_size=min_size, split=True, neck_ratio=neck_ratio)
    assert np.array_equal(cut > 0, plain > 0)
    assert set(np.unique(cut[cut > 0])) == set(range(1, count_nuclei(cut) + 1))
    assert count_nuclei(cut) >= count_nuclei(plain)
    pairs = np.unique(np.stack([cut[cut > 0], plain[cut > 0]]), axis=1)
    assert len(set(pairs[0])) == pairs.shape[1]  # one nucleus found without the cut per piece
    new = np.bincount(cut.ravel())[1:]
    assert (new[count_nuclei(plain):] >= max(min_size, 1)).all()  # the pieces cut off are not too small
