"""Training and evaluation scripts: metrics on hand-made labels, calibration on synthetic
probabilities, and smoke tests of train.py and evaluate.py on a few real DSB2018 images."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_nucleiseg.inference import predict_probabilities
from napari_nucleiseg.learn.loss import model_loss, segmentation_loss
from napari_nucleiseg.models import build_model
from napari_nucleiseg.postprocess import labels_from_probabilities
from napari_nucleiseg.weights import load_weights, read_metadata, save_weights
from training import data, evaluate, model_card, train
from training.data import balanced_weights, image_kind, list_ids, load_pair, make_targets
from training.evaluate import label
from training.metrics import instance_scores, pixel_confusion, pixel_scores

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data" / "dsb2018"
needs_data = pytest.mark.skipif(not (DATA / "splits.json").is_file(), reason=f"DSB2018 data not found at {DATA}")


def boxes(shape, corners) -> np.ndarray:
    """Label image with one rectangle ``(y0, y1, x0, x1)`` per object, labelled 1..N."""
    labels = np.zeros(shape, dtype=np.int32)
    for index, (y0, y1, x0, x1) in enumerate(corners, start=1):
        labels[y0:y1, x0:x1] = index
    return labels


THREE = boxes((40, 40), [(2, 10, 2, 10), (20, 30, 5, 12), (5, 15, 25, 35)])  # 64, 70 and 100 pixels


# metrics.py ----------------------------------------------------------------------------------


def test_perfect_prediction_scores_one_whatever_the_label_values():
    predicted = np.where(THREE > 0, THREE * 7 + 300, 0).astype(np.uint16)
    scores = instance_scores(predicted, THREE)
    assert scores["dsb_score"] == 1.0 and scores["f1_iou50"] == 1.0 and scores["count_error"] == 0.0
    assert (scores["n_truth"], scores["n_predicted"]) == (3, 3)
    assert pixel_scores(pixel_confusion(predicted, THREE)) == {"mean_iou": 1.0, "foreground_iou": 1.0, "dice": 1.0}


@pytest.mark.parametrize("offset", [2**31, -5])
def test_label_values_far_from_zero_are_matched_too(offset):
    predicted = np.where(THREE > 0, THREE.astype(np.int64) + offset, 0)
    truth = np.where(THREE == 3, 0, THREE)
    scores = instance_scores(predicted, truth)
    assert (scores["n_truth"], scores["n_predicted"]) == (2, 3)
    assert scores["dsb_score"] == pytest.approx(2 / 3)


def test_one_missed_object_is_one_false_negative_at_every_threshold():
    predicted = np.where(THREE == 3, 0, THREE)
    scores = instance_scores(predicted, THREE)
    assert scores["dsb_score"] == pytest.approx(2 / 3)  # TP 2, FP 0, FN 1 at every IoU threshold
    assert scores["f1_iou50"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert scores["count_error"] == pytest.approx(1 / 3)
    tp, fp, fn, tn = pixel_confusion(predicted, THREE)
    assert (tp, fp, fn, tn) == (134, 0, 100, 1600 - 234)
    assert pixel_scores([tp, fp, fn, tn])["foreground_iou"] == pytest.approx(134 / 234)


def test_partial_overlap_matches_only_below_its_iou():
    truth = boxes((20, 30), [(5, 15, 5, 15)])
    shifted = boxes((20, 30), [(5, 15, 7, 17)])  # IoU 80 / 120 = 0.67: a hit at 0.5, 0.55, 0.6, 0.65
    scores = instance_scores(shifted, truth)
    assert scores["dsb_score"] == pytest.approx(4 / 10)
    assert scores["f1_iou50"] == 1.0


def test_merging_two_nuclei_costs_instance_score_but_no_pixel_score():
    truth = boxes((20, 30), [(5, 15, 5, 11), (5, 15, 11, 13)])  # touching: 60 and 20 pixels
    merged = (truth > 0).astype(np.int32)
    scores = instance_scores(merged, truth)
    # IoU with the big one 60/80 = 0.75: a hit at 0.5..0.7 (5 thresholds) with FN 1, then FP 1 + FN 2.
    assert scores["dsb_score"] == pytest.approx(5 * (1 / 2) / 10)
    assert scores["f1_iou50"] == pytest.approx(2 / 3)
    assert scores["count_error"] == pytest.approx(0.5)
    assert pixel_scores(pixel_confusion(merged, truth))["mean_iou"] == 1.0


def test_splitting_one_nucleus_in_halves_matches_nothing():
    truth = boxes((20, 30), [(5, 15, 5, 15)])
    halves = boxes((20, 30), [(5, 15, 5, 10), (5, 15, 10, 15)])  # IoU 0.5 each: not above 0.5
    scores = instance_scores(halves, truth)
    assert scores["dsb_score"] == 0.0 and scores["f1_iou50"] == 0.0
    assert scores["count_error"] == 1.0
    assert pixel_scores(pixel_confusion(halves, truth))["dice"] == 1.0


def test_empty_prediction_of_an_empty_image_is_perfect():
    empty = np.zeros(THREE.shape, dtype=np.int32)
    assert pixel_scores(pixel_confusion(empty, empty)) == {"mean_iou": 1.0, "foreground_iou": 1.0, "dice": 1.0}
    assert instance_scores(empty, empty)["dsb_score"] == 1.0
    assert instance_scores(THREE, empty)["dsb_score"] == 0.0


def test_pixel_scores_of_a_pooled_confusion():
    scores = pixel_scores(pixel_confusion(np.array([1, 1, 1, 0, 0, 0, 0, 0]), np.array([1, 1, 0, 1, 0, 0, 0, 0])))
    assert scores["foreground_iou"] == pytest.approx(2 / 4)
    assert scores["mean_iou"] == pytest.approx((2 / 4 + 4 / 6) / 2)
    assert scores["dice"] == pytest.approx(4 / 6)


# evaluate.py: baselines and calibration -----------------------------------------------------


@pytest.mark.parametrize("dark_nuclei", [False, True])
def test_otsu_baseline_takes_the_minority_side_as_nuclei(dark_nuclei):
    truth = boxes((60, 60), [(5, 15, 5, 15), (30, 42, 30, 44)])
    gray = np.where(truth > 0, 200, 30).astype(np.uint8)
    if dark_nuclei:  # stained tissue or brightfield: dark nuclei on a bright background
        gray = 255 - gray
    labels = evaluate.otsu_labels(np.stack([gray, gray, gray // 2], axis=-1))
    assert instance_scores(labels, truth)["dsb_score"] == 1.0


def synthetic_probabilities(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible ``(2, H, W)`` probabilities: blurred nucleus and boundary targets, plus small false blobs."""
    nucleus, boundary = (ndi.gaussian_filter(t, 1.0) for t in make_targets(truth))
    blobs = np.zeros_like(nucleus)
    for y, x in rng.integers(2, min(truth.shape) - 4, size=(6, 2)):
        blobs[y : y + 2, x : x + rng.integers(1, 4)] = rng.uniform(0.4, 0.8)  # 2-6 pixels of debris
    return np.clip(np.stack([np.maximum(nucleus, blobs), boundary * 1.5]), 0, 1).astype(np.float32)


def test_calibration_finds_the_best_grid_point_of_the_plugin_post_processing():
    rng = np.random.default_rng(1)
    truths = [boxes((48, 48), [(3, 13, 3, 14), (3, 13, 14, 24), (28, 40, 8, 20)]),
              boxes((48, 48), [(10, 22, 10, 22), (22, 30, 12, 25), (30, 44, 30, 44)])]
    samples = [evaluate.Sample(str(i), np.zeros((*t.shape, 3), np.uint8), t) for i, t in enumerate(truths)]
    probabilities = [synthetic_probabilities(t, rng) for t in truths]
    grid = {"thresholds": [0.3, 0.5, 0.7], "boundary_thresholds": [0.2, 0.5], "min_sizes": [0, 8]}

    best, points = evaluate.calibrate(probabilities, samples, *grid.values())

    brute_force = {}
    for t in grid["thresholds"]:
        for b in grid["boundary_thresholds"]:
            for m in grid["min_sizes"]:
                brute_force[t, b, m] = np.mean([
                    instance_scores(labels_from_probabilities(p, t, min_size=m, boundary_threshold=b), s.truth)[
                        "dsb_score"]
                    for p, s in zip(probabilities, samples)])
    assert {(p["threshold"], p["boundary_threshold"], p["min_size"]): p["dsb_score"] for p in points} == \
        pytest.approx(brute_force)
    assert len(set(np.round(list(brute_force.values()), 6))) > 2, "the grid should matter on this data"
    assert brute_force[best.threshold, best.boundary_threshold, best.min_size] == max(brute_force.values())


def test_neck_ratio_calibration_cuts_eights_that_are_two_nuclei():
    # Each image: single nuclei and "8"s the network called one object (no boundary between
    # the halves), which the truth has as two nuclei.
    yy, xx = np.indices((64, 128))
    truths, probabilities = [], []
    for shift in (0, 3):
        truth = np.zeros((64, 128), np.int32)
        for number, (cy, cx) in enumerate([(14, 14 + shift), (50, 14), (14, 110), (50, 110 - shift)], start=1):
            truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= 49] = number
        for half, cx in enumerate((52 + shift, 68 + shift), start=5):
            truth[((yy - 32) ** 2 + (xx - cx) ** 2 <= 100) & (truth == 0)] = half
        truths.append(truth)
        probabilities.append(np.stack([truth > 0, np.zeros(truth.shape, bool)]).astype(np.float32))
    samples = [evaluate.Sample(str(i), np.zeros((*t.shape, 3), np.uint8), t) for i, t in enumerate(truths)]
    settings = evaluate.Settings(0.5, 0.5, 10)

    best, points = evaluate.calibrate_splitting(probabilities, samples, settings, [0.5], [0.0, 0.3, 0.9])

    scores = {point["neck_ratio"]: point["dsb_score"] for point in points}
    assert best.neck_ratio == 0.3 and scores[0.3] > scores[0.0] == scores[0.9]
    assert (best.threshold, best.boundary_threshold, best.min_size) == (0.5, 0.5, 10)
    assert scores[0.3] == pytest.approx(np.mean([instance_scores(label(best, p), s.truth)["dsb_score"]
                                                 for p, s in zip(probabilities, samples)]))


def test_seed_size_calibration_ignores_specks_that_split_a_nucleus(tmp_path):
    # Two touching disks with a faint boundary between them; in the left one a 3-px speck
    # where the boundary channel dips: counted as a seed, it cuts the left nucleus in two.
    yy, xx = np.indices((40, 70))
    left, right = (yy - 20) ** 2 + (xx - 22) ** 2 <= 144, (yy - 20) ** 2 + (xx - 45) ** 2 <= 144
    truth = (left * 1 + (right & ~left) * 2).astype(np.int32)
    probabilities = np.zeros((2, 40, 70), np.float32)
    probabilities[0] = truth > 0
    probabilities[1][truth > 0] = 0.001
    probabilities[1][:, 33:35] = 0.5
    probabilities[1][(yy - 20) ** 2 + (xx - 22) ** 2 <= 36] = 0.5
    probabilities[1][20, 21:24] = 0.001
    samples = [evaluate.Sample("speck", np.zeros((40, 70, 3), np.uint8), truth)]

    best, points = evaluate.calibrate_splitting([probabilities], samples, evaluate.Settings(0.5, 0.01, 0), [0.01],
                                                [0.0], seed_min_sizes=[0, 10])

    scores = {point.get("seed_min_size", 0): point["dsb_score"] for point in points}
    assert best.seed_min_size == 10 and scores[10] > scores[0]
    assert scores[10] == pytest.approx(instance_scores(label(best, probabilities), truth)["dsb_score"])
    target = evaluate.write_calibrated_weights(
        save_weights(tmp_path / "s.safetensors", build_model("unet", base_channels=4, depth=2),
                     {"name": "s", "architecture": "unet", "kwargs": {"base_channels": 4, "depth": 2}}),
        tmp_path / "cal", best, {}, {})
    assert read_metadata(target)["seed_min_size"] == 10 and load_weights(target).settings.seed_min_size == 10
    assert "seed_min_size" not in read_metadata(evaluate.write_calibrated_weights(
        target, tmp_path / "cal0", evaluate.Settings(0.5, 0.01, 0), {}, {}))


def tiny_weights(folder: Path, name: str = "tiny", fit_steps: int = 0, architecture: str = "unet") -> Path:
    """A tiny UNet (or ``architecture``) saved with ``save_weights``; ``fit_steps`` Adam steps on two
    ``train`` crops make its probabilities follow the nuclei a little, so that calibration has something
    to choose."""
    import torch

    from napari_nucleiseg.models import build_model
    from napari_nucleiseg.preprocess import normalize_image

    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 2}
    network = build_model(architecture, **kwargs)
    if fit_steps:
        pairs = [load_pair(DATA, i) for i in list_ids(DATA, "train")[:2]]
        images = torch.stack([torch.from_numpy(normalize_image(im[:128, :128]).transpose(2, 0, 1).copy())
                              for im, _ in pairs])
        targets = torch.stack([torch.from_numpy(make_targets(labels[:128, :128])) for _, labels in pairs])
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
        for _ in range(fit_steps):
            loss = segmentation_loss(network(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    metadata = {"name": name, "architecture": architecture, "kwargs": kwargs, "threshold": 0.5,
                "boundary_threshold": 0.5, "min_size": 10,
                "normalization": {"method": "percentile", "percentiles": [1.0, 99.8]}}
    return save_weights(folder / f"{name}.safetensors", network.eval(), metadata)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_scores_are_also_broken_down_by_kind_of_image():
    gray = np.full((40, 40, 3), 20, np.uint8)
    purple = np.stack([np.full((40, 40), 180), np.full((40, 40), 90), np.full((40, 40), 200)], -1).astype(np.uint8)
    samples = [evaluate.Sample("f1", gray, THREE), evaluate.Sample("t1", purple, THREE),
               evaluate.Sample("f2", gray, THREE)]
    perfect, missed_one = THREE, np.where(THREE == 3, 0, THREE)
    summary, rows = evaluate.score_method("m", [perfect, missed_one, perfect], samples)
    assert [row["kind"] for row in rows] == ["fluorescence", "tissue", "fluorescence"]
    assert list(summary["by_kind"]) == ["fluorescence", "tissue"]
    fluorescence, tissue = summary["by_kind"]["fluorescence"], summary["by_kind"]["tissue"]
    assert fluorescence["n_images"] == 2 and fluorescence["dsb_score"] == 1.0 and fluorescence["mean_iou"] == 1.0
    assert tissue["n_images"] == 1 and tissue["dsb_score"] == pytest.approx(2 / 3)
    assert tissue["count_error_median"] == pytest.approx(1 / 3)
    assert summary["dsb_score"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert "tissue (1 image) DSB2018 score 0.667" in model_card.kind_lines(summary)[0]


def test_calibrated_copy_refuses_to_overwrite_its_source(tmp_path):
    source = tiny_weights(tmp_path)
    before = digest(source)
    with pytest.raises(ValueError, match="source"):
        evaluate.write_calibrated_weights(source, tmp_path, evaluate.Settings(0.4, 0.6, 5), {}, {})
    assert digest(source) == before


@needs_data
def test_evaluate_and_calibrate_on_two_images(tmp_path):
    source = tiny_weights(tmp_path / "source", fit_steps=20)
    before = digest(source)
    out = tmp_path / "out"
    out.mkdir()
    report = evaluate.main([
        "--weights", str(source), "--data", str(DATA), "--split", "val", "--limit", "2",
        "--json", str(out / "report.json"), "--markdown", str(out / "table.md"), "--per-image", str(out / "rows.csv"),
        "--calibrate", "--thresholds", "0.3", "0.5", "0.7", "--boundary-thresholds", "0.3", "0.6",
        "--min-sizes", "0", "10", "--write-weights", str(out / "calibrated"), "--sets", "val",
    ])

    methods = [r["method"] for r in report["results"]]
    assert methods == ["tiny", "tiny, no splitting", "Otsu + connected components"]
    for result in report["results"]:
        metrics = result["metrics"]
        assert metrics["n_images"] == 2
        for key in ("mean_iou", "foreground_iou", "dice", "dsb_score", "f1_iou50"):
            assert 0.0 <= metrics[key] <= 1.0, (result["method"], key)
        # the summary is of the per-image rows written beside it
        with open(out / "rows.csv", newline="") as stream:
            rows = [row for row in csv.DictReader(stream) if row["method"] == result["method"]]
        assert len(rows) == 2
        assert metrics["count_error_mean"] == pytest.approx(np.mean([float(row["count_error"]) for row in rows]))
        assert metrics["dsb_score"] == pytest.approx(np.mean([float(row["dsb_score"]) for row in rows]))
    assert json.loads((out / "report.json").read_text())["results"] == report["results"]
    all_sets, table = (out / "table.md").read_text().split("\n## val\n")
    assert sum(line.startswith("| ") for line in all_sets.splitlines()) == 2 + 2  # header, rule, the model, Otsu
    table, by_kind = table.split("By kind of image")
    assert sum(line.startswith("| ") for line in table.splitlines()) == 2 + 3  # header, rule and a row per method
    kinds = report["results"][0]["metrics"]["by_kind"]
    assert sum(line.startswith("| ") for line in by_kind.splitlines()) == 2 + 3 * len(kinds)
    rows = list(csv.DictReader((out / "rows.csv").open()))
    assert len(rows) == 3 * 2 and {r["method"] for r in rows} == set(methods)

    # The model row is the plugin's pipeline with the calibrated settings.
    best = report["calibration"]["tiny"]["best"]
    grid_scores = [point["dsb_score"] for point in report["calibration"]["tiny"]["grid"]]
    assert len(grid_scores) == 3 * 2 * 2 and max(grid_scores) > min(grid_scores)
    splitting = report["calibration"]["tiny"]["splitting"]
    split_scores = {(p["neck_ratio"], p["boundary_threshold"]): p["dsb_score"] for p in splitting}
    assert len(split_scores) == 7 * 2  # every neck ratio with every boundary threshold
    assert max(s for (ratio, _), s in split_scores.items() if ratio == 0) == pytest.approx(max(grid_scores))
    assert report["results"][0]["metrics"]["dsb_score"] == pytest.approx(max(split_scores.values()))
    assert split_scores[best["neck_ratio"], best["boundary_threshold"]] == max(split_scores.values())
    model = load_weights(source)
    for row in rows[:2]:
        image, truth = load_pair(DATA, row["image_id"])
        labels = labels_from_probabilities(predict_probabilities(image, model), best["threshold"],
                                           min_size=best["min_size"], boundary_threshold=best["boundary_threshold"],
                                           neck_ratio=best["neck_ratio"])
        assert float(row["dsb_score"]) == pytest.approx(instance_scores(labels, truth)["dsb_score"])
    assert [r["image_id"] for r in rows[:2]] == list_ids(DATA, "val")[:2]

    calibrated = out / "calibrated" / "tiny.safetensors"
    assert report["written"] == [str(calibrated)]
    assert digest(source) == before
    metadata = read_metadata(calibrated)
    assert (metadata["threshold"], metadata["boundary_threshold"], metadata["min_size"], metadata["neck_ratio"]) == \
        (best["threshold"], best["boundary_threshold"], best["min_size"], best["neck_ratio"])
    assert metadata["metrics"]["calibrated_on"] == "val (2 images)"
    assert metadata["metrics"]["val"]["dsb_score"] == pytest.approx(report["results"][0]["metrics"]["dsb_score"],
                                                                    abs=1e-4)
    assert metadata["kwargs"] == read_metadata(source)["kwargs"]
    from safetensors.torch import load_file

    original, copied = load_file(str(source)), load_file(str(calibrated))
    assert original.keys() == copied.keys()
    assert all(copied[k].dtype == original[k].dtype and (copied[k] == original[k]).all() for k in original)
    assert load_weights(calibrated).settings.threshold == best["threshold"]


def test_head_sets_tried_for_each_kind_of_model():
    assert evaluate.head_sets(build_model("unet", base_channels=4, depth=3)) == [None]
    assert evaluate.head_sets(build_model("hrnet", stem_channels=4, widths=[4, 8, 8], blocks=1)) == [None]
    assert evaluate.head_sets(build_model("unetpp", base_channels=4, depth=3)) == [None, (1, 2), (2,)]


@needs_data
def test_calibration_chooses_the_heads_a_unetpp_averages(tmp_path):
    source = tiny_weights(tmp_path / "source", fit_steps=20, architecture="unetpp")
    out = tmp_path / "out"
    report = evaluate.main([
        "--weights", str(source), "--data", str(DATA), "--split", "val", "--limit", "2", "--per-image",
        str(out / "rows.csv"), "--calibrate", "--thresholds", "0.3", "0.5", "0.7", "--boundary-thresholds", "0.3",
        "--min-sizes", "0", "--neck-ratios", "0", "--write-weights", str(out / "calibrated"), "--sets", "val",
    ])

    calibration = report["calibration"]["tiny"]
    tried = {None if t["heads"] is None else tuple(t["heads"]): t["dsb_score"] for t in calibration["tried_heads"]}
    assert list(tried) == [None, (1,)]  # depth 2: two heads, all of them or the deeper one
    chosen = None if calibration["heads"] is None else tuple(calibration["heads"])
    assert tried[chosen] == max(tried.values())
    assert report["results"][0]["metrics"]["dsb_score"] == pytest.approx(tried[chosen])
    assert report["results"][0]["settings"].endswith("" if chosen is None else "(heads 1)")
    metadata = read_metadata(out / "calibrated" / "tiny.safetensors")
    assert metadata.get("heads") == calibration["heads"]
    assert metadata["calibration"]["head_sets"] == [None, [1]]
    # the written file, as the plugin loads it, gives the reported scores
    model = load_weights(out / "calibrated" / "tiny.safetensors")
    best = calibration["best"]
    rows = list(csv.DictReader((out / "rows.csv").open()))
    for row in rows[:2]:
        image, truth = load_pair(DATA, row["image_id"])
        labels = labels_from_probabilities(predict_probabilities(image, model), best["threshold"],
                                           min_size=best["min_size"], boundary_threshold=best["boundary_threshold"])
        assert float(row["dsb_score"]) == pytest.approx(instance_scores(labels, truth)["dsb_score"])


def test_a_calibrated_copy_keeps_only_the_heads_it_is_given(tmp_path):
    network = build_model("unetpp", base_channels=4, depth=3).eval()
    metadata = {"name": "pp", "architecture": "unetpp", "kwargs": {"base_channels": 4, "depth": 3}, "heads": [2]}
    source = save_weights(tmp_path / "pp.safetensors", network, metadata)
    settings = evaluate.Settings(0.5, 0.3, 10)
    all_heads = evaluate.write_calibrated_weights(source, tmp_path / "a", settings, {}, {})
    deeper = evaluate.write_calibrated_weights(source, tmp_path / "b", settings, {}, {}, heads=(1, 2))
    assert "heads" not in read_metadata(all_heads) and load_weights(all_heads).network.inference_heads is None
    assert read_metadata(deeper)["heads"] == [1, 2] and load_weights(deeper).network.inference_heads == (1, 2)


# evaluate.py and score_folder.py: the sets and the user's pipeline ----------------------------


def square_image(shape=(90, 120)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of bright squares of several sizes on a dark background, and their labels."""
    truth = boxes(shape, [(5, 25, 8, 28), (40, 52, 10, 22), (30, 80, 60, 110), (70, 76, 20, 26)])
    gray = np.where(truth > 0, 200, 20).astype(np.uint8)
    return np.stack([gray, gray, gray], axis=-1), truth


@pytest.mark.parametrize("factor", [0.25, 0.5, 2, 3])
def test_evaluate_rescaled_set_keeps_its_labels_on_its_nuclei(factor):
    from napari_nucleiseg.scale import rescaled_shape

    image, truth = square_image()
    sample = evaluate.rescaled_sample(evaluate.Sample("s", image, truth), factor)
    assert sample.image.shape == (*rescaled_shape(truth.shape, factor), 3) and sample.image.dtype == np.uint8
    assert sample.truth.shape == sample.image.shape[:2] and sample.truth.dtype == truth.dtype
    bright = sample.image[..., 0] > 110  # where the image's squares are, after the resize
    inside = sample.truth > 0
    assert np.count_nonzero(bright & inside) / np.count_nonzero(bright | inside) > 0.8
    kept = [i for i in np.unique(sample.truth) if i]
    assert kept == [i for i in (1, 2, 3, 4) if np.count_nonzero(truth == i) * factor**2 >= 1]  # none relabelled
    for index in kept:  # each nucleus is where the image shows it, to a pixel
        ys, xs = np.nonzero(sample.truth == index)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        assert bright[y0 : y1 + 1, x0 : x1 + 1].mean() > 0.6
        original = np.argwhere(truth == index).mean(axis=0)
        expected = (original + 0.5) * np.array(sample.truth.shape) / truth.shape - 0.5
        np.testing.assert_allclose([ys.mean(), xs.mean()], expected, atol=1.0)
    assert evaluate.rescaled_sample(evaluate.Sample("s", image, truth), 1.0).image is image


def test_evaluate_set_names_are_checked_and_kept_in_order():
    assert evaluate.parse_sets("all") == list(evaluate.DEFAULT_SETS) == [
        "val", "val_x0.25", "val_x0.5", "val_x2", "val_x3", "monuseg_test", "consep_test"]
    assert evaluate.parse_sets(" consep_test, val_x2,val ,val_x2,") == ["consep_test", "val_x2", "val"]
    assert evaluate.parse_sets("val_x1.5") == ["val_x1.5"] and evaluate.rescale_factor("val_x1.5") == 1.5
    for bad in ("nope", "val_x0", "val_x-2", "val_xnan", "val_x", "monuseg_train", ""):
        with pytest.raises(ValueError, match="val_x<factor>|no set"):
            evaluate.parse_sets(bad)

    args = evaluate.parse_args([])
    assert args.sets == list(evaluate.DEFAULT_SETS) and args.diameter == "auto" and args.limit is None
    assert [Path(w).name for w in args.weights] == ["unet.safetensors", "unetpp.safetensors", "hrnet.safetensors"]
    args = evaluate.parse_args(["--sets", "val_x0.5,monuseg_test", "--diameter", "true", "--limit", "3"])
    assert (args.sets, args.diameter, args.limit) == (["val_x0.5", "monuseg_test"], "true", 3)
    for bad in (["--sets", "val,train"], ["--diameter", "guess"], ["--limit", "0"]):
        with pytest.raises(SystemExit):
            evaluate.parse_args(bad)

    dsb = Path("dsb")
    assert evaluate.resolve_set("val", dsb) == evaluate.EvalSet("val", dsb, "val", 1.0)
    assert evaluate.resolve_set("val_x0.25", dsb, "train") == evaluate.EvalSet("val_x0.25", dsb, "train", 0.25)
    assert evaluate.resolve_set("monuseg_test", dsb) == evaluate.EvalSet(
        "monuseg_test", evaluate.TEST_SET_FOLDERS["monuseg_test"])
    assert evaluate.resolve_set("consep_test", dsb, test_folders={"consep_test": Path("c")}).folder == Path("c")


@needs_data
def test_evaluate_reads_each_set_from_its_folder():
    shared = DATA.parent
    folders = {"monuseg_test": shared / "monuseg2018" / "test", "consep_test": shared / "consep" / "test"}
    image, truth = load_pair(DATA, list_ids(DATA, "val")[0])
    for name in ("val", "val_x0.5", "monuseg_test", "consep_test"):
        eval_set = evaluate.resolve_set(name, DATA, "val", folders)
        if not (eval_set.folder / "images").is_dir() and eval_set.split is None:
            continue  # that set is not downloaded here
        (sample,) = evaluate.set_samples(eval_set, limit=1)
        assert sample.id == evaluate.set_ids(eval_set)[0]
        assert sample.image.shape[:2] == sample.truth.shape and sample.truth.max() > 0
        if name.startswith("val"):
            assert sample.truth.shape == evaluate.rescaled_sample(evaluate.Sample("", image, truth),
                                                                  eval_set.factor).truth.shape
    assert len(evaluate.set_ids(evaluate.resolve_set("val_x3", DATA), limit=4)) == 4


def diameter_model(tmp_path: Path, diameter: float = 18.0):
    """A tiny model whose file records a nucleus ``diameter`` and min sizes that change with the scale."""
    from conftest import build_tiny, tiny_metadata

    metadata = tiny_metadata("unet") | {"diameter": diameter, "min_size": 40, "seed_min_size": 12}
    return load_weights(save_weights(tmp_path / "sized.safetensors", build_tiny("unet"), metadata))


@pytest.mark.parametrize("estimate", [None, 9.0])
def test_evaluate_runs_the_models_as_segment_runs_them(tmp_path, monkeypatch, estimate):
    from conftest import blob_image

    from napari_nucleiseg import pipeline, segment

    model = diameter_model(tmp_path)
    if estimate is not None:  # a random network estimates nothing: stand in for an estimate, to resize in auto too
        monkeypatch.setattr(pipeline, "estimate_diameter", lambda image, model, **kwargs: estimate)
    image = blob_image((120, 140), centers=((20, 20), (30, 70), (60, 40), (90, 100), (100, 30), (70, 120)), radius=5)
    for mode, diameter in (("auto", None), ("true", 10.0), ("none", 18.0)):
        prediction = evaluate.pipeline_prediction(image, model, mode, 10.0)
        labels = label(evaluate.pipeline_settings(model, prediction.scale), prediction.probabilities)
        result = segment(image, model, diameter=diameter)
        np.testing.assert_array_equal(labels, result.labels, err_msg=mode)
        assert prediction.scale == result.scale, mode
        if mode != "none":
            assert (prediction.diameter, prediction.estimated) == (result.diameter, result.diameter_estimated)
        if mode == "auto":
            assert prediction.estimated == (estimate is not None) and (prediction.scale != 1) == prediction.estimated
    assert evaluate.pipeline_prediction(image, model, "true", 10.0).scale == pytest.approx(1.8)
    assert evaluate.pipeline_settings(model, 1.8).min_size == round(40 / 1.8**2)  # as segment() scales it
    assert evaluate.pipeline_prediction(image, model, "true", None).scale == 1.0  # no nuclei: as it is


def test_evaluate_counts_a_missing_diameter_estimate_as_a_miss():
    rows = [{"diameter_true": 10.0, "diameter_used": 12.0, "diameter_estimated": True},   # +20%: within
            {"diameter_true": 10.0, "diameter_used": 7.0, "diameter_estimated": True},    # -30%: not
            {"diameter_true": 20.0, "diameter_used": None, "diameter_estimated": False},  # no estimate: a miss
            {"diameter_true": None, "diameter_used": 9.0, "diameter_estimated": True}]    # no nuclei: not judged
    summary = evaluate.diameter_summary(rows)
    assert summary == {"diameter_within": pytest.approx(1 / 3), "diameter_ratio_median": pytest.approx(0.95),
                       "diameter_not_estimated": 1}
    assert evaluate.diameter_summary([])["diameter_within"] is None


@needs_data
def test_evaluate_writes_one_table_row_per_set_and_model(tmp_path):
    diameter_model(tmp_path)
    out = tmp_path / "out"
    report = evaluate.main(["--weights", str(tmp_path / "sized.safetensors"), "--data", str(DATA), "--limit", "1",
                            "--sets", "val_x0.5,val", "--out", str(out)])

    assert list(report["sets"]) == ["val_x0.5", "val"] and report["set"] == "val"
    assert report["results"] == report["sets"]["val"]["results"]
    text = (out / "sets.md").read_text()
    rows = [line.split(" | ") for line in text.split("\n\n")[0].splitlines()[2:]]
    assert [(r[0], r[2]) for r in rows] == [("| val_x0.5", "tiny-unet"), ("| val_x0.5", "Otsu + connected components"),
                                            ("| val", "tiny-unet"), ("| val", "Otsu + connected components")]
    assert rows[0][-2].endswith("%")  # the model records a diameter: its estimates are judged (a random one's miss)
    assert rows[1][-2:] == ["-", "- |"]  # Otsu has none
    assert "\n## val_x0.5\n" in text and "\n## val\n" in text
    per_image = list(csv.DictReader((out / "per_image.csv").open()))
    assert [(r["set"], r["method"]) for r in per_image] == [
        (name, method) for name in ("val_x0.5", "val")
        for method in ("tiny-unet", "tiny-unet, no splitting", "Otsu + connected components")]
    first = per_image[0]
    image, truth = load_pair(DATA, first["image_id"])
    small = evaluate.rescaled_sample(evaluate.Sample("", image, truth), 0.5)
    assert (int(first["height"]), int(first["width"])) == small.truth.shape
    assert float(first["diameter_true"]) == pytest.approx(data.median_diameter(small.truth))
    assert json.loads((out / "report.json").read_text())["sets"]["val"]["n_images"] == 1


def test_score_folder_scores_label_files_against_a_truth_folder(tmp_path):
    import tifffile
    from skimage.io import imsave

    from training import score_folder

    truth_folder, run = tmp_path / "labels", tmp_path / "run"
    truth_folder.mkdir()
    run.mkdir()
    imsave(truth_folder / "a.png", THREE.astype(np.uint16), check_contrast=False)
    imsave(truth_folder / "b.png", THREE.astype(np.uint16), check_contrast=False)
    tifffile.imwrite(run / "a_labels.tif", THREE.astype(np.uint16))
    tifffile.imwrite(run / "b_labels.tif", np.where(THREE == 3, 0, THREE).astype(np.uint16))
    summary = score_folder.main([str(run), "--truth", str(truth_folder)])
    assert summary["n_images"] == 2 and summary["dsb_score"] == pytest.approx((1 + 2 / 3) / 2)
    assert "diameter_within" not in summary  # no counts.csv of a model with a diameter
    (run / "b_labels.tif").unlink()
    with pytest.raises(SystemExit, match="b_labels.tif is missing"):
        score_folder.main([str(run), "--truth", str(truth_folder)])


@needs_data
def test_score_folder_scores_a_rescaled_val_set(tmp_path, capsys):
    import tifffile
    from skimage.io import imread

    from training import score_folder

    images = tmp_path / "images"
    assert score_folder.main(["--list-images", "--set", "val_x0.5", "--write-images", str(images), "--data", str(DATA),
                              "--limit", "2"]) == {}
    paths = capsys.readouterr().out.split()
    ids = list_ids(DATA, "val")[:2]
    assert paths == [str(images / f"{i}.png") for i in ids]
    run = tmp_path / "run"
    run.mkdir()
    for sample_id, path in zip(ids, paths):
        expected = evaluate.rescaled_sample(evaluate.Sample(sample_id, *load_pair(DATA, sample_id)), 0.5)
        np.testing.assert_array_equal(imread(path), expected.image)  # the files are the set's images
        tifffile.imwrite(run / f"{sample_id}_labels.tif", expected.truth.astype(np.uint16))
    summary = score_folder.main([str(run), "--set", "val_x0.5", "--data", str(DATA), "--limit", "2"])
    assert summary["dsb_score"] == 1.0 and summary["n_images"] == 2
    with pytest.raises(SystemExit, match="truth"):  # labels of the images as they are, scored against x2
        score_folder.main([str(run), "--set", "val_x2", "--data", str(DATA), "--limit", "2"])
    with pytest.raises(SystemExit):  # resized images exist only once written
        score_folder.main(["--list-images", "--set", "val_x2", "--data", str(DATA)])


# train.py ------------------------------------------------------------------------------------


@needs_data
def test_training_smoke_writes_usable_weights_and_resumes(tmp_path, capsys):
    args = ["--model", "unet", "--data", str(DATA), "--limit", "2", "--max-batches", "2", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--out", str(tmp_path)]
    state = train.main([*args, "--epochs", "1"])
    assert state["epoch"] == 1

    model = load_weights(tmp_path / "best.safetensors")
    assert model.metadata["training"]["epochs"] == 1
    image, _ = load_pair(DATA, list_ids(DATA, "val")[0])
    probabilities = predict_probabilities(image[:70, :90], model)
    assert probabilities.shape == (2, 70, 90) and probabilities.dtype == np.float32
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0

    resumed = train.main([*args, "--epochs", "2", "--resume"])
    assert "resumed from epoch 1" in capsys.readouterr().out
    assert resumed["epoch"] == 2
    assert [entry["epoch"] for entry in resumed["history"]] == [1, 2]
    assert [e["epoch"] for e in json.loads((tmp_path / "history.json").read_text())] == [1, 2]


@needs_data
def test_training_can_start_from_a_weights_file(tmp_path, capsys):
    args = ["--model", "unet", "--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--epochs", "1", "--val-split", ""]
    train.main([*args, "--out", str(tmp_path / "a")])
    first = load_weights(tmp_path / "a" / "best.safetensors").network.state_dict()
    train.main([*args, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "best.safetensors"), "--lr", "0"])
    assert "initialised from" in capsys.readouterr().out
    continued = load_weights(tmp_path / "b" / "best.safetensors")
    second = continued.network.state_dict()
    # the file says what it continued from, so a model card can add the runs up
    history = continued.metadata["training"]["continued_from"]
    assert history["file"] == str(tmp_path / "a" / "best.safetensors") and history["epochs"] == 1
    assert "--out " + str(tmp_path / "a") in history["command"]
    # lr 0: the parameters stay those of the file (batch-norm running statistics still move)
    weights = [k for k in first if k.endswith("weight")]
    assert weights and all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in weights)

    other = build_model("hrnet", stem_channels=4, widths=[4, 8], blocks=1)
    save_weights(tmp_path / "hrnet.safetensors", other, {"architecture": "hrnet",
                 "kwargs": {"stem_channels": 4, "widths": [4, 8], "blocks": 1}})
    with pytest.raises(SystemExit, match="hrnet"):
        train.main([*args, "--out", str(tmp_path / "c"), "--init", str(tmp_path / "hrnet.safetensors")])


@needs_data
@pytest.mark.parametrize("architecture", ["unet", "unetpp"])
def test_a_deeper_model_starts_from_the_levels_of_a_shallower_one(tmp_path, capsys, architecture):
    shallow = build_model(architecture, base_channels=4, depth=2)
    for parameter in shallow.parameters():  # clearly not a fresh initialisation
        parameter.data.fill_(0.25)
    save_weights(tmp_path / "shallow.safetensors", shallow,
                 {"architecture": architecture, "kwargs": {"base_channels": 4, "depth": 2}})
    deep = build_model(architecture, base_channels=4, depth=3)
    copied, total = train.grow_depth(deep, load_weights(tmp_path / "shallow.safetensors").network, 1)
    assert 0 < copied < total
    state = deep.state_dict()
    shallow_state = shallow.state_dict()
    top = "encoders.0.0.weight" if architecture == "unet" else "nodes.0_0.0.weight"
    assert np.array_equal(state[top].numpy(), shallow_state[top].numpy())
    if architecture == "unet":  # the decoder of level 0 is the last in both: index 1 of 2, index 2 of 3
        assert np.array_equal(state["decoders.2.0.weight"].numpy(), shallow_state["decoders.1.0.weight"].numpy())
        assert np.array_equal(state["head.weight"].numpy(), shallow_state["head.weight"].numpy())
        new = "encoders.3.0.weight"
    else:
        assert np.array_equal(state["nodes.0_2.0.weight"].numpy(), shallow_state["nodes.0_2.0.weight"].numpy())
        new = "nodes.0_3.0.weight"
    assert not np.all(state[new].numpy() == 0.25)

    # through the command line, with the bundled model's own width
    bundled = REPO / "weights" / f"{architecture}.safetensors"
    depth = read_metadata(bundled)["kwargs"]["depth"]
    args = ["--model", architecture, "--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--epochs", "1", "--val-split", ""]
    train.main([*args, "--depth", str(depth + 1), "--init", str(bundled), "--out", str(tmp_path / "deeper")])
    assert f"from the depth-{depth} model" in capsys.readouterr().out
    assert read_metadata(tmp_path / "deeper" / "best.safetensors")["kwargs"]["depth"] == depth + 1
    with pytest.raises(SystemExit, match="or a shallower one"):
        train.main([*args, "--depth", str(depth - 1), "--init", str(bundled), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--depth applies to unet and unetpp"):
        train.main(["--model", "hrnet", *args[2:], "--depth", "3", "--out", str(tmp_path / "y")])


def test_model_card_adds_up_the_runs_of_a_continued_model():
    first = {"epochs": 24, "minutes": 96.8, "command": "python -m training.train --model unet --out runs/unet"}
    second = {"epochs": 10, "minutes": 40.0, "command": "python -m training.train --model unet --out runs/c2 --init a",
              "continued_from": {"file": "a", **first}}
    last = {"epochs": 5, "minutes": 20.5, "hardware": "x86_64, 1 threads", "device": "cpu",
            "command": "python -m training.train --model unet --out runs/c3 --init b",
            "continued_from": {"file": "b", **second}}
    history, reproduce = model_card.training_lines(last)
    assert "24 + 10 + 5 = 39 epochs" in history and "157.3 min" in history
    assert reproduce.index("--out runs/unet") < reproduce.index("--out runs/c2") < reproduce.index("--out runs/c3")
    assert model_card._run_folder(last, "unet") == "runs/c3"
    single, _ = model_card.training_lines(first | {"hardware": "x86_64", "device": "cpu"})
    assert single.startswith("- kept epoch: 24") and "96.8 min" in single

    # the last step names the kept epoch of the last run and the calibration grid the file records
    steps = model_card.calibration_steps({"architecture": "unet", "training": last,
                                          "calibration": {"thresholds": [0.4, 0.5], "min_sizes": [20]}})
    assert "keep epoch 5 of that run" in steps and "--checkpoint <checkpoint.pt as saved after epoch 5>" in steps
    assert "--calibrate --thresholds 0.4 0.5 --min-sizes 20 --write-weights weights/" in steps

    # a run that grew the model a level says so, once
    deeper = dict(last, command=last["command"] + " --depth 4")
    after = {"epochs": 3, "minutes": 9.0, "hardware": "x86_64", "device": "cpu",
             "command": "python -m training.train --model unet --depth 4 --out runs/c5 --init c",
             "continued_from": {"file": "c", **deeper}}
    *history, reproduce = model_card.training_lines(after)
    assert [line for line in history if "deeper" in line] == [
        "- run 3 of these made the model deeper (`--depth 4`): it started from the levels the file before had, "
        "and its deepest level was new"]


def test_model_card_names_the_teacher_of_a_distilled_run():
    first = {"epochs": 4, "minutes": 10.0, "command": "python -m training.train --model unet --out runs/a"}
    distilled = {"epochs": 6, "minutes": 30.0, "hardware": "x86_64", "device": "cpu", "continued_from": first,
                 "command": "python -m training.train --model unet --out runs/b --teacher weights/hrnet.safetensors "
                            "--teacher-tta --distill-weight 0.7"}
    lines = model_card.training_lines(distilled)
    assert [line for line in lines if "distilled" in line] == [
        "- run 2 of these was distilled from `weights/hrnet.safetensors`: the loss went 70% towards that model's "
        "probabilities on the training images averaged over 4 flips/transpositions (warped with each crop), the rest "
        "towards the true masks"]
    assert not any("distilled" in line for line in model_card.training_lines(first | {"hardware": "x", "device": "cpu"}))


def test_model_card_names_the_head_weights_of_a_unetpp_run():
    first = {"epochs": 4, "minutes": 10.0, "command": "python -m training.train --model unetpp --out runs/a"}
    weighted = {"epochs": 6, "minutes": 30.0, "hardware": "x86_64", "device": "cpu", "continued_from": first,
                "command": "python -m training.train --model unetpp --out runs/b --head-weights 0 1 1 --seed 3"}
    lines = [line for line in model_card.training_lines(weighted) if "output heads" in line]
    assert lines == ["- run 2 of these weighted the loss of UNet++'s output heads (shallowest first) 0 : 1 : 1; "
                     "a head weighted 0 is left out of the file's inference too"]
    meta = {"heads": [1, 2], "kwargs": {"depth": 3}}
    assert model_card.heads_note(meta) == "; output heads averaged: 1, 2 of 0-2 (0 = shallowest)"
    assert model_card.heads_note({"kwargs": {"depth": 3}, "calibration": {"head_sets": [None, [1, 2], [2]]}}) == \
        "; output heads averaged: all"
    assert model_card.heads_note({"kwargs": {"depth": 4}}) == ""


@needs_data
def test_teacher_maps_are_warped_with_the_crop_they_belong_to():
    image, labels = load_pair(DATA, list_ids(DATA, "train")[0])
    # a "teacher" that knows the truth exactly: its warped maps must be the crop's own targets
    exact = make_targets(labels).transpose(1, 2, 0)
    with_soft = data.Augmenter(96, np.random.default_rng(3))
    without = data.Augmenter(96, np.random.default_rng(3))
    with_nuclei = 0
    for _ in range(6):
        crop, targets = with_soft(image, labels, exact)
        plain_crop, plain_targets = without(image, labels)
        assert targets.shape == (4, 96, 96)
        # the same random draws: the image and true targets are those of a run without a teacher
        np.testing.assert_array_equal(crop, plain_crop)
        np.testing.assert_array_equal(targets[:2], plain_targets)
        truth, soft = targets[0] > 0.5, targets[2] > 0.5
        if truth.any():  # a crop may fall between the nuclei
            with_nuclei += 1
            assert (truth & soft).sum() / (truth | soft).sum() > 0.9
    assert with_nuclei >= 3


def test_distillation_loss_goes_the_chosen_share_towards_the_teacher():
    import torch

    network = build_model("unet", base_channels=4, depth=2).eval()
    images = torch.zeros((2, 3, 32, 32))
    rng = np.random.default_rng(0)
    truth = torch.from_numpy((rng.random((2, 2, 32, 32)) > 0.5).astype(np.float32))
    teacher = torch.from_numpy(rng.random((2, 2, 32, 32)).astype(np.float32))
    both = torch.cat([truth, teacher], dim=1)
    with torch.no_grad():
        towards_truth = model_loss(network, images, truth)
        towards_teacher = model_loss(network, images, teacher)
        assert model_loss(network, images, both, 0.0) == pytest.approx(float(towards_truth))
        assert model_loss(network, images, both, 1.0) == pytest.approx(float(towards_teacher))
        assert model_loss(network, images, both, 0.25) == pytest.approx(
            0.75 * float(towards_truth) + 0.25 * float(towards_teacher))
    assert float(towards_truth) != pytest.approx(float(towards_teacher))


def test_head_weights_weight_the_loss_of_each_unetpp_head():
    import torch

    network = build_model("unetpp", base_channels=4, depth=3).eval()
    images = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    truth = torch.from_numpy((np.random.default_rng(0).random((2, 2, 32, 32)) > 0.5).astype(np.float32))
    with torch.no_grad():
        each = [float(segmentation_loss(o, truth)) for o in network.forward_all(images)]
        assert float(model_loss(network, images, truth)) == pytest.approx(np.mean(each))
        assert float(model_loss(network, images, truth, head_weights=(0, 0, 1))) == pytest.approx(each[2])
        assert float(model_loss(network, images, truth, head_weights=(1, 2, 2))) == pytest.approx(
            (each[0] + 2 * each[1] + 2 * each[2]) / 5)
        with pytest.raises(ValueError, match="2 head weights"):
            model_loss(network, images, truth, head_weights=(1, 1))
    assert len(set(round(e, 6) for e in each)) == 3


def test_contact_weight_weighs_only_the_line_where_two_nuclei_touch():
    import torch

    from napari_nucleiseg.learn.loss import contact_pixels

    labels = np.zeros((40, 60), dtype=np.int32)
    labels[5:15, 5:15], labels[5:15, 15:25] = 1, 2  # two nuclei touching along x = 15
    labels[25:35, 40:50] = 3  # a lone nucleus
    targets = torch.from_numpy(make_targets(labels))[None]
    contact = contact_pixels(targets)[0, 0].numpy() > 0
    assert contact[6:14, 14:16].all() and not contact[:, :14].any() and not contact[:, 16:].any()
    assert not contact[20:].any()  # the lone nucleus's rim borders the background

    logit = 8.0 * (2 * targets - 1)  # confident and right everywhere ...
    merged, rimless = logit.clone(), logit.clone()
    merged[0, 1][torch.from_numpy(contact)] = -8.0  # ... but for the line between the two
    rimless[0, 1, 25, 40:50] = -8.0  # ... or a piece of the lone nucleus's rim
    with torch.no_grad():
        base = float(segmentation_loss(logit, targets))
        merged_cost = [float(segmentation_loss(merged, targets, contact_weight=w)) - base for w in (1.0, 5.0)]
        rim_cost = [float(segmentation_loss(rimless, targets, contact_weight=w)) - base for w in (1.0, 5.0)]
        outside = torch.ones((1, 1, 40, 60))
        outside[..., :, 10:30] = 0  # the contact line is not a pixel that may train
        unknown = [float(segmentation_loss(merged, targets, outside, contact_weight=w))
                   - float(segmentation_loss(logit, targets, outside, contact_weight=w)) for w in (1.0, 5.0)]
    assert merged_cost[1] > 2.5 * merged_cost[0] > 0  # the cross-entropy part weighs 5x
    assert rim_cost[1] == pytest.approx(rim_cost[0], rel=0.05)
    assert unknown == pytest.approx([0.0, 0.0], abs=1e-6)


@needs_data
def test_head_weights_are_recorded_and_checked(tmp_path):
    args = ["--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2", "--crop-size", "64",
            "--workers", "0", "--epochs", "1", "--val-split", "", "--depth", "2"]
    train.main(["--model", "unetpp", *args, "--head-weights", "1", "3", "--out", str(tmp_path / "pp")])
    assert read_metadata(tmp_path / "pp" / "best.safetensors")["training"]["head_weights"] == [1.0, 3.0]
    assert "heads" not in read_metadata(tmp_path / "pp" / "best.safetensors")
    # a head weighted 0 is not trained, so the file's inference leaves it out
    train.main(["--model", "unetpp", *args, "--head-weights", "0", "1", "--out", str(tmp_path / "deep")])
    assert load_weights(tmp_path / "deep" / "best.safetensors").network.inference_heads == (1,)
    with pytest.raises(SystemExit, match="needs 2 non-negative weights"):
        train.main(["--model", "unetpp", *args, "--head-weights", "1", "2", "2", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="applies to UNet\\+\\+"):
        train.main(["--model", "unet", *args, "--head-weights", "1", "--out", str(tmp_path / "bad")])


def test_teacher_averaged_over_flips_undoes_each_flip():
    import torch

    # a pixel-wise network sees each pixel the same whatever the flip: undone correctly, the
    # average over flips is its plain prediction; a flip left in place would move the nuclei
    torch.manual_seed(0)
    pixelwise = torch.nn.Conv2d(3, 2, kernel_size=1)
    rng = np.random.default_rng(1)
    image = (rng.random((40, 57, 3)) * 255).astype(np.uint8)
    image[5:15, 3:20] = 255
    plain, = train.teacher_maps(pixelwise, [image], "cpu", tta=False)
    averaged, = train.teacher_maps(pixelwise, [image], "cpu", tta=True)
    assert plain.shape == averaged.shape == (40, 57, 2) and plain.dtype == np.float16
    np.testing.assert_allclose(averaged.astype(np.float32), plain.astype(np.float32), atol=2e-3)
    assert np.abs(plain[::-1].astype(np.float32) - plain.astype(np.float32)).max() > 0.01


@needs_data
def test_training_with_a_teacher_caches_its_maps_and_records_it(tmp_path, capsys):
    teacher = tiny_weights(tmp_path, "teacher")
    args = ["--model", "unet", "--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--epochs", "1", "--val-split", "", "--teacher", str(teacher),
            "--distill-weight", "0.7"]
    train.main([*args, "--out", str(tmp_path / "run")])
    assert "teacher maps of 2 images" in capsys.readouterr().out
    recorded = load_weights(tmp_path / "run" / "best.safetensors").metadata["training"]["teacher"]
    assert recorded == {"file": str(teacher), "tta": False, "weight": 0.7}
    # a second run with the same teacher and images reads them back; another teacher does not
    train.main([*args, "--out", str(tmp_path / "run"), "--epochs", "2", "--resume"])
    assert "teacher maps read from" in capsys.readouterr().out
    other = tiny_weights(tmp_path, "other", fit_steps=1)
    train.main([*args[:-4], "--teacher", str(other), "--out", str(tmp_path / "run")])
    assert "teacher maps of 2 images" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="distill-weight"):
        train.main([*args[:-2], "--distill-weight", "1.5", "--out", str(tmp_path / "bad")])


def test_image_kinds_and_balanced_sampling_weights():
    gray = np.full((8, 8, 3), 30, np.uint8)
    light = np.full((8, 8, 3), 200, np.uint8)
    purple = np.stack([np.full((8, 8), 180), np.full((8, 8), 90), np.full((8, 8), 200)], -1).astype(np.uint8)
    assert [image_kind(i) for i in (gray, light, purple)] == ["fluorescence", "brightfield", "tissue"]

    kinds = ["fluorescence"] * 8 + ["tissue"] * 2
    weights = balanced_weights(kinds, {"fluorescence": 0.6, "tissue": 0.25, "brightfield": 0.15})
    assert weights.sum() == pytest.approx(1.0)
    # no brightfield image: the other two kinds share everything, 0.6 : 0.25
    assert weights[8:].sum() == pytest.approx(0.25 / 0.85) and np.allclose(weights[:8], weights[0])


@needs_data
def test_balanced_sampling_trains(tmp_path, capsys):
    train.main(["--model", "unet", "--data", str(DATA), "--limit", "3", "--max-batches", "1", "--batch-size", "2",
                "--crop-size", "64", "--workers", "0", "--epochs", "1", "--val-split", "", "--sampling", "balanced",
                "--shares", "brightfield=0.3", "--out", str(tmp_path)])
    assert "kinds: " in capsys.readouterr().out
    training = load_weights(tmp_path / "best.safetensors").metadata["training"]
    assert training["sampling"] == "balanced"
    # the file records the shares the crops were drawn with: brightfield 0.3 beside the others' defaults, all
    # scaled to add up to 1 (0.6 / 0.25 / 0.3 -> 0.52 / 0.22 / 0.26)
    assert training["shares"]["brightfield"] == pytest.approx(0.3 / 1.15, abs=1e-3)
    assert training["shares"]["fluorescence"] == pytest.approx(0.6 / 1.15, abs=1e-3)
    assert sum(training["shares"].values()) == pytest.approx(1, abs=1e-3)


def test_training_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert all(option in usage for option in ("--sampling", "--schedule", "--init", "--time-budget", "60%/25%/15%"))


@needs_data
def test_cosine_schedule_anneals_the_learning_rate_and_resumes(tmp_path, capsys):
    args = ["--model", "unet", "--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--val-split", "", "--schedule", "cosine", "--lr", "1e-3",
            "--epochs", "4", "--out", str(tmp_path)]
    interrupted = train.main([*args, "--time-budget", "0"])  # stops after its first epoch
    assert interrupted["epoch"] == 1
    state = train.main([*args, "--resume"])
    assert "resumed from epoch 1" in capsys.readouterr().out
    rates = [entry["lr"] for entry in state["history"]]
    assert len(rates) == 4 and all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(1e-5)  # --lr / 100 after the last epoch
    assert load_weights(tmp_path / "best.safetensors").metadata["training"]["schedule"] == "cosine"


@needs_data
def test_export_checkpoint_writes_the_last_or_an_earlier_epoch(tmp_path):
    import shutil

    import torch

    from training import export_checkpoint

    args = ["--model", "unet", "--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--val-split", "", "--out", str(tmp_path)]
    train.main([*args, "--epochs", "1"])
    shutil.copy(tmp_path / "checkpoint.pt", tmp_path / "ep1.pt")
    train.main([*args, "--epochs", "2", "--resume"])

    last = load_weights(export_checkpoint.main([str(tmp_path), "--out", str(tmp_path / "last.safetensors")]))
    first = load_weights(export_checkpoint.main([str(tmp_path), "--checkpoint", str(tmp_path / "ep1.pt"),
                                                 "--out", str(tmp_path / "first.safetensors")]))
    assert last.metadata["training"]["epochs"] == 2 and first.metadata["training"]["epochs"] == 1
    saved = torch.load(tmp_path / "ep1.pt", weights_only=False)["model"]
    # float16 in the file: equal to the epoch-1 parameters up to half precision, unlike the epoch-2 ones
    key = next(k for k in saved if k.endswith("weight"))
    exported = first.network.state_dict()[key].float()
    assert torch.allclose(exported, saved[key].float(), atol=1e-3, rtol=1e-3)
    assert not torch.equal(last.network.state_dict()[key], first.network.state_dict()[key])


@needs_data
def test_averaged_epochs_are_the_mean_of_their_weights_with_batch_norm_measured_again(tmp_path):
    import shutil

    import torch

    from training import average_checkpoints

    args = ["--model", "unet", "--data", str(DATA), "--limit", "2", "--max-batches", "1", "--batch-size", "2",
            "--crop-size", "64", "--workers", "0", "--val-split", "", "--lr", "0.05", "--out", str(tmp_path)]
    for epoch in (1, 2):
        train.main([*args, "--epochs", str(epoch), *(["--resume"] if epoch > 1 else [])])
        shutil.copy(tmp_path / "checkpoint.pt", tmp_path / f"ep{epoch}.pt")

    with pytest.raises(SystemExit, match="ep3.pt"):
        average_checkpoints.main([str(tmp_path), "--epochs", "1-3", "--out", str(tmp_path / "x.safetensors")])
    out = average_checkpoints.main([str(tmp_path), "--epochs", "1-2", "--out", str(tmp_path / "avg.safetensors"),
                                    "--data", str(DATA), "--limit", "2"])
    averaged = load_weights(out)
    assert averaged.metadata["training"]["averaged_epochs"] == [1, 2]
    assert averaged.metadata["training"]["epochs"] == 2
    states = [torch.load(tmp_path / f"ep{e}.pt", weights_only=False)["model"] for e in (1, 2)]
    result = averaged.network.state_dict()
    conv = next(k for k in result if k.endswith("weight") and result[k].ndim == 4)
    assert torch.allclose(result[conv].float(), (states[0][conv] + states[1][conv]) / 2, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(states[0][conv], states[1][conv], atol=1e-3, rtol=1e-3)
    # batch norm statistics are measured on training crops, not averaged
    mean = next(k for k in result if k.endswith("running_mean"))
    assert not torch.allclose(result[mean].float(), (states[0][mean] + states[1][mean]) / 2, atol=1e-3)


def test_epoch_lists_for_averaging():
    import argparse

    from training.average_checkpoints import parse_epochs

    assert parse_epochs("15-18,20") == [15, 16, 17, 18, 20]
    assert parse_epochs("3") == [3]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_epochs("0-2")


def test_model_card_figures_do_not_round_up_to_a_target_they_miss():
    assert model_card._cell("dsb_score", 0.54991) == "0.5499"  # not "0.550", which reads as met
    assert model_card._cell("dsb_score", 0.5512) == "0.551"
    assert model_card._cell("count_error_median", 0.10004) == "10.00%"
    assert model_card._cell("count_error_median", 0.0851) == "8.5%"
    assert model_card.shortfalls({"mean_iou": 0.93, "dsb_score": 0.54991, "f1_iou50": 0.85,
                                  "count_error_median": 0.08}) == ["dsb_score 0.5499 (target 0.550)"]


def _auto_point(threshold, val, kinds, monuseg, consep, boundary=0.1, samples=(0.45, 0.33, 0.28)):
    return {"threshold": threshold, "boundary_threshold": boundary, "dsb2018": val,
            "kinds": dict(zip(("fluorescence", "tissue", "brightfield"), kinds)), "monuseg": monuseg, "consep": consep,
            "samples": dict(zip(("fluorescence", "tissue", "brightfield"), samples))}


def test_auto_thresholds_raise_the_stained_parts_only_where_val_holds():
    from training import calibrate_auto

    own = _auto_point(0.6, 0.560, (0.61, 0.33, 0.43), 0.27, 0.13)
    loses_val = _auto_point(0.7, 0.557, (0.61, 0.33, 0.43), 0.40, 0.30)  # the best parts, but val -0.003
    loses_a_kind = _auto_point(0.8, 0.560, (0.61, 0.30, 0.43), 0.35, 0.25)  # tissue -0.03
    small_gain = _auto_point(0.6, 0.559, (0.61, 0.33, 0.42), 0.272, 0.131, boundary=0.15)  # +0.002
    gain = _auto_point(0.6, 0.5585, (0.60, 0.32, 0.415), 0.28, 0.14, boundary=0.2)  # +0.01, losses within limits

    assert calibrate_auto.choose([loses_val, loses_a_kind, small_gain], own) is None
    assert calibrate_auto.choose([loses_val, loses_a_kind, small_gain, gain], own) is gain
    assert calibrate_auto.choose([gain, dict(gain, boundary_threshold=0.3)], own) is gain  # ties: the first


def test_auto_thresholds_pass_over_a_point_that_loses_a_sample_for_the_next_best():
    from training import calibrate_auto

    own = _auto_point(0.7, 0.517, (0.57, 0.28, 0.34), 0.20, 0.10)
    best_but_tissue = _auto_point(0.5, 0.530, (0.58, 0.31, 0.37), 0.23, 0.12, boundary=0.15,
                                  samples=(0.45, 0.3099, 0.28))  # the tissue sample -0.0201
    next_best = _auto_point(0.6, 0.528, (0.58, 0.30, 0.36), 0.22, 0.12, boundary=0.15)
    assert calibrate_auto.choose([best_but_tissue, next_best], own) is next_best
    assert calibrate_auto.choose([best_but_tissue], own) is None


@needs_data
def test_auto_thresholds_copy_keeps_the_other_settings_and_records_the_choice(tmp_path, monkeypatch):
    from training import calibrate_auto
    from training.calibrate import write_metadata_copy

    source = tiny_weights(tmp_path / "source", fit_steps=20)
    write_metadata_copy(source, source, {"metrics": {"val_at_true_diameter_dsb_score": {"dsb2018": 0.1}}})
    before = digest(source)
    for limit in ("MIN_PARTS_GAIN", "MAX_VAL_LOSS", "MAX_KIND_LOSS", "MAX_SAMPLE_LOSS"):  # the best parts' point is taken, whatever it is
        monkeypatch.setattr(calibrate_auto, limit, 1.0 if limit != "MIN_PARTS_GAIN" else -1.0)
    monkeypatch.setattr(calibrate_auto, "THRESHOLDS", (0.3, 0.5))
    monkeypatch.setattr(calibrate_auto, "BOUNDARY_THRESHOLDS", (0.3,))
    chosen = calibrate_auto.main([str(source), "--out", str(tmp_path / "out"), "--data", str(DATA.parent),
                                  "--limit", "1"])

    assert digest(source) == before
    copy = read_metadata(tmp_path / "out" / "tiny.safetensors")
    assert (copy["threshold"], copy["boundary_threshold"]) == (chosen["threshold"], 0.3)
    assert copy["min_size"] == 10  # what the grid does not search stays the file's
    assert copy["estimate"] == {"threshold": 0.5, "boundary_threshold": 0.5}  # the Auto diameter stays the source's
    record = copy["calibration"]["auto_thresholds"]
    assert record["after"]["threshold"] == chosen["threshold"] and record["before"]["threshold"] == 0.5
    assert "1 dsb2018, 1 monuseg, 1 consep" in record["on"] and "3 bundled samples" in record["on"]
    assert set(record["after"]["samples"]) == {"fluorescence", "tissue", "brightfield"}
    assert set(copy["metrics"]["val_at_auto_dsb_score"]) == {"dsb2018", "monuseg", "consep"}
    assert "val_at_true_diameter_dsb_score" not in copy["metrics"]  # measured with the thresholds replaced

    # Chosen again, a copy keeps the thresholds of the first file's estimate, not its own new ones.
    calibrate_auto.main([str(tmp_path / "out" / "tiny.safetensors"), "--out", str(tmp_path / "again"),
                         "--data", str(DATA.parent), "--limit", "1"])
    assert read_metadata(tmp_path / "again" / "tiny.safetensors")["estimate"] == copy["estimate"]


@needs_data
def test_a_teacher_that_records_a_diameter_sees_big_nuclei_at_its_own_size():
    from napari_nucleiseg.scale import median_diameter, rescale_image, rescale_labels, rescaled_shape

    # a DSB2018 val image enlarged 3x (nuclei of about 50 px): the shipped HRNet run on it as it is cuts
    # and misses nuclei; run in its frame with the true diameter, as the student's crops are rescaled,
    # its maps are what the plugin predicts there and cover the nuclei
    image, truth = load_pair(DATA, list_ids(DATA, "val")[1])
    shape = rescaled_shape(truth.shape, 3.0)
    image, truth = rescale_image(image, 3.0), rescale_labels(truth, shape)
    teacher = REPO / "weights" / "hrnet.safetensors"
    framed, = train.framed_teacher_maps(load_weights(teacher), [image], [truth], tta=False)
    plain, = train.teacher_maps(load_weights(teacher).network, [image], "cpu", tta=False)
    assert framed.shape == plain.shape == (*truth.shape, 2) and framed.dtype == np.float16
    assert median_diameter(truth) > 2 * load_weights(teacher).diameter

    def dice(found):
        found, true = found[..., 0] > 0.5, truth > 0
        return 2 * (found & true).sum() / (found.sum() + true.sum())

    assert dice(framed) > 0.85  # measured 0.90
    assert dice(framed) > dice(plain) + 0.1  # 0.60 as it is
