"""Training on several data sets at one nucleus diameter: held-out val parts, the diameter the
augmenter brings crops to, stain and intensity augmentation, the log normalisation, licences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_nucleiseg.preprocess import DEFAULT_LOG_GAIN, normalize_image
from training.data import (
    Augmenter, brighten_some_nuclei, hed_jitter, holdout_split, list_ids, load_pair, median_diameter,
)
from training.train import (BALANCED_SHARES_WITH_TISSUE, LOW_RES_VAL, at_diameter, licence_note, load_training_data,
                            parse_args, parse_share, sampling_shares)

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "data"
needs_tissue = pytest.mark.skipif(not (SHARED / "consep" / "train").is_dir(), reason="CoNSeP not found in ../shared")
needs_dsb = pytest.mark.skipif(not (SHARED / "dsb2018" / "splits.json").is_file(), reason="DSB2018 not found in ../shared")


def disks(diameter: float, size: int = 200, spacing: float | None = None) -> np.ndarray:
    """Labels of non-touching disks of one ``diameter`` on a grid."""
    spacing = spacing or diameter * 1.5
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    label = 0
    for cy in np.arange(diameter, size - diameter, spacing):
        for cx in np.arange(diameter, size - diameter, spacing):
            label += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = label
    return labels


def test_median_diameter_is_that_of_the_disks():
    assert median_diameter(disks(20)) == pytest.approx(20, rel=0.05)
    assert median_diameter(np.zeros((10, 10), dtype=np.int32)) is None


def test_holdout_keeps_every_source_image_on_one_side():
    ids = [f"train_{image}_{tile:03d}" for image in range(1, 28) for tile in range(16)]
    train, val = holdout_split(ids)
    source = lambda i: i.rsplit("_", 1)[0]  # noqa: E731
    assert {source(i) for i in train}.isdisjoint({source(i) for i in val})
    assert len({source(i) for i in val}) == 4 and len(train) + len(val) == len(ids)
    plain = [f"TCGA-{n:02d}" for n in range(37)]  # MoNuSeg: every image its own source
    train, val = holdout_split(plain)
    assert len(val) == 5 and not set(train) & set(val)


def test_crops_bring_the_median_nucleus_to_the_diameter():
    labels = disks(48, size=600)
    image = np.repeat((labels > 0)[..., None] * 200 + 20, 3, axis=-1).astype(np.uint8)
    augmenter = Augmenter(128, np.random.default_rng(0), diameter=18.0)
    low, high = Augmenter.SCALE_JITTER
    for _ in range(5):
        _, targets = augmenter(image, labels, None, median_diameter(labels))
        nucleus = targets[0] > 0
        from scipy import ndimage as ndi

        pieces, count = ndi.label(nucleus)
        areas = np.bincount(pieces.ravel())[1:]
        whole = areas[areas > 0.5 * areas.max()]  # not the disks cut by the crop's edge
        found = np.median(2 * np.sqrt(whole / np.pi))
        assert 18 * low * 0.85 <= found <= 18 * high * 1.15


def test_a_shrunk_image_is_mirrored_with_each_copy_a_nucleus_of_its_own():
    labels = disks(30, size=90, spacing=60)  # one disk in the middle... and its neighbours beyond the edge
    image = np.repeat((labels > 0)[..., None] * 200 + 20, 3, axis=-1).astype(np.uint8)
    augmenter = Augmenter(96, np.random.default_rng(1))
    warped_image, warped_labels = augmenter.warp_crop(image.astype(np.float32), labels, scale=0.5)
    assert warped_image[..., 0].std() > 0  # mirrored, not padded with a constant
    assert len(np.unique(warped_labels[warped_labels > 0])) >= 4


def test_low_res_crops_lose_the_fine_detail_but_keep_sharp_targets():
    """--low-res: some crops look like an image of tiny nuclei the plugin enlarged; the targets do not change."""
    labels = disks(18, size=300)
    rng = np.random.default_rng(0)
    image = (np.where(labels[..., None] > 0, 160, 30) + rng.normal(0, 20, (300, 300, 1))).clip(0, 255)
    image = image.repeat(3, -1).astype(np.uint8)
    for seed in range(4):  # the same draws up to the coarsening (which draws more after them)
        plain = Augmenter(128, np.random.default_rng(seed), diameter=18.0)
        coarse = Augmenter(128, np.random.default_rng(seed), diameter=18.0, low_res=1.0)
        (sharp_crop, sharp_targets), (coarse_crop, coarse_targets) = (
            plain(image, labels, None, 18.0), coarse(image, labels, None, 18.0))
        assert coarse_crop.shape == sharp_crop.shape and coarse_crop.dtype == np.float32
        np.testing.assert_array_equal(coarse_targets, sharp_targets)
        assert fine_detail(coarse_crop[0]) < 0.75 * fine_detail(sharp_crop[0])


def fine_detail(plane: np.ndarray) -> float:
    """What a 1-pixel Gaussian blur takes away from ``plane``, relative to its contrast."""
    from scipy import ndimage as ndi

    return float(np.abs(plane - ndi.gaussian_filter(plane, 1)).mean() / (plane.std() + 1e-6))


@needs_dsb
def test_a_low_res_run_also_chooses_its_epoch_on_coarsened_val_images(tmp_path):
    """With --low-res the best epoch is chosen on tiny nuclei too: DSB2018 val once more, blurred as the
    plugin sees val x0.25, with the same sharp truth; without it, val is as before."""
    common = ["--out", str(tmp_path / "run"), "--data", str(SHARED / "dsb2018"), "--limit", "3", "--diameter", "18"]
    plain = load_training_data(parse_args(common)).val_sets
    low = load_training_data(parse_args(common + ["--low-res", "0.25"])).val_sets
    assert LOW_RES_VAL not in plain and set(low) == {"dsb2018", LOW_RES_VAL}
    for (image, truth), (coarse, coarse_truth) in zip(low["dsb2018"], low[LOW_RES_VAL]):
        np.testing.assert_array_equal(coarse_truth, truth)
        assert coarse.shape == image.shape and coarse.dtype == image.dtype
        plane, coarse_plane = image[..., 0].astype(np.float32), coarse[..., 0].astype(np.float32)
        assert fine_detail(coarse_plane) < 0.75 * fine_detail(plane)


def test_a_low_res_share_outside_0_1_is_refused(tmp_path):
    for bad in ("-0.1", "1.5"):
        with pytest.raises(SystemExit):
            parse_args(["--out", str(tmp_path / "run"), "--low-res", bad])
    assert parse_args(["--out", str(tmp_path / "run"), "--low-res", "0.25"]).low_res == 0.25


def test_hed_jitter_changes_the_stain_but_not_the_picture():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(0.6, 0.15, (64, 64, 3)), 0, 1).astype(np.float32)
    image[16:32, 16:32] = (0.35, 0.2, 0.55)  # a purple (haematoxylin) nucleus on pink-ish tissue
    jittered = hed_jitter(image, np.random.default_rng(1))
    assert jittered.shape == image.shape and 0 <= jittered.min() and jittered.max() <= 1
    assert not np.allclose(jittered, image, atol=0.01)
    assert np.corrcoef(jittered.mean(-1).ravel(), image.mean(-1).ravel())[0, 1] > 0.8


def test_some_nuclei_are_made_much_brighter_and_the_rest_stay():
    labels = disks(10, size=200)
    image = np.where(labels[..., None] > 0, 0.3, 0.05).astype(np.float32).repeat(3, -1)
    bright = brighten_some_nuclei(image, labels, np.random.default_rng(0))
    ratios = np.array([bright[labels == i, 0].mean() / image[labels == i, 0].mean() for i in range(1, labels.max() + 1)])
    assert 1 <= (ratios > 2.5).sum() <= 0.1 * labels.max() + 1
    assert np.allclose(ratios[ratios <= 2.5], 1)


def test_the_log_normalisation_lifts_dim_nuclei_beside_bright_ones():
    image = np.full((100, 100), 100.0)
    image[10:30, 10:30] = 300  # a dim nucleus
    image[50:55, 50:55] = 5000  # a very bright (mitotic) one: the 99.8th percentile lands on it
    linear = normalize_image(image)[..., 0]
    compressed = normalize_image(image, log_gain=DEFAULT_LOG_GAIN)[..., 0]
    assert linear[20, 20] < 0.05 and compressed[20, 20] > 3 * linear[20, 20]
    assert compressed[0, 0] == pytest.approx(linear[0, 0]) == pytest.approx(0)
    assert compressed[52, 52] == pytest.approx(1, abs=0.01)


def test_weights_trained_on_monuseg_say_non_commercial():
    assert "non-commercial" in licence_note(["dsb2018", "monuseg", "consep"])
    assert "non-commercial" not in licence_note(["dsb2018", "consep"]) and "CC0" in licence_note(["dsb2018"])


def test_chosen_sampling_shares_replace_the_defaults_and_add_up_to_one():
    shares = sampling_shares(BALANCED_SHARES_WITH_TISSUE, [parse_share("fluorescence=0.40"), parse_share("brightfield=0.15")])
    assert sum(shares.values()) == pytest.approx(1)
    assert shares["brightfield"] == pytest.approx(0.15) and shares["fluorescence"] == pytest.approx(0.40)
    assert shares["consep"] == pytest.approx(BALANCED_SHARES_WITH_TISSUE["consep"])
    with pytest.raises(SystemExit, match="unknown kind 'phase'"):
        sampling_shares(BALANCED_SHARES_WITH_TISSUE, [("phase", 0.2)])
    for bad in ("brightfield", "brightfield=-0.1", "=0.2", "brightfield=many"):
        with pytest.raises(Exception, match="KIND=SHARE"):
            parse_share(bad)


def test_a_misspelt_share_kind_stops_the_run_before_any_data_is_loaded(tmp_path):
    with pytest.raises(SystemExit, match="unknown kind 'brightfeld'"):
        parse_args(["--out", str(tmp_path / "run"), "--data", str(tmp_path / "no such folder"),
                    "--shares", "brightfeld=0.15"])
    assert not (tmp_path / "run").exists()


@needs_tissue
def test_tissue_sets_load_and_are_brought_to_the_diameter():
    folder = SHARED / "consep" / "train"
    sample = list_ids(folder, None)[0]
    image, labels = load_pair(folder, sample)
    assert image.shape == (*labels.shape, 3) and image.dtype == np.uint8 and labels.max() > 0
    resized, truth = at_diameter(image, labels, 18.0)
    assert resized.shape[:2] == truth.shape and median_diameter(truth) == pytest.approx(18, rel=0.15)
