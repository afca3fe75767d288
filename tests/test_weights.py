"""Weights files: a round trip keeps model and metadata, and every kind of bad file says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_nucleiseg import __version__
from napari_nucleiseg.weights import (
    BUNDLED_MODELS,
    FORMAT_NAME,
    METADATA_KEY,
    MODEL_TITLES,
    SCORED_KINDS,
    SPEEDS,
    WeightsError,
    bundled_evaluation,
    bundled_weights_path,
    describe_weights,
    load_weights,
    read_metadata,
    save_weights,
    weights_dir,
)

from conftest import TINY_KWARGS, build_tiny, tiny_metadata

NAMES = sorted(TINY_KWARGS)
REPO = Path(__file__).resolve().parents[1]


def _outputs(network, seed=0):
    x = torch.rand(2, 3, 45, 37, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return network.eval()(x)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_keeps_metadata_and_outputs(tmp_path, name):
    network = build_tiny(name)
    metadata = tiny_metadata(name) | {"metrics": {"dsb_score": 0.61}, "training": {"epochs": 3}}
    path = save_weights(tmp_path / "model.safetensors", network, metadata)

    model = load_weights(path)

    for key, value in metadata.items():
        assert model.metadata[key] == value
    assert model.metadata["format"] == FORMAT_NAME
    assert model.metadata["package_version"] == __version__
    assert read_metadata(path) == model.metadata
    assert model.path == path
    assert model.name == metadata["name"]
    assert model.settings.threshold == metadata["threshold"]
    assert model.settings.boundary_threshold == metadata["boundary_threshold"]
    assert model.settings.min_size == metadata["min_size"]
    assert not model.network.training
    assert all(p.dtype == torch.float32 for p in model.network.parameters())
    # Tensors are stored as float16: outputs agree to float16 precision, as probabilities.
    expected = torch.sigmoid(_outputs(network))
    actual = torch.sigmoid(_outputs(model.network))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0.02)
    assert (actual - expected).abs().mean() < 2e-3


def test_full_precision_round_trip_is_exact(tmp_path):
    network = build_tiny("unet")
    path = save_weights(tmp_path / "model.safetensors", network, tiny_metadata("unet"), half=False)
    torch.testing.assert_close(_outputs(load_weights(path).network), _outputs(network), rtol=0, atol=0)


def test_batch_norm_statistics_survive(tmp_path):
    network = build_tiny("hrnet")
    path = save_weights(tmp_path / "model.safetensors", network, tiny_metadata("hrnet"), half=False)
    loaded = load_weights(path).network.state_dict()
    for key, tensor in network.state_dict().items():
        if "running_" in key:
            torch.testing.assert_close(loaded[key], tensor)


def test_reading_metadata_does_not_need_torch(tiny_weights, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_nucleiseg.weights import read_metadata\n"
        f"print(read_metadata({str(tiny_weights['unet'])!r})['architecture'])\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unet"


# --- bad files: each raises WeightsError naming the file ------------------------------------------


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.fixture
def good_file(tmp_path):
    return save_weights(tmp_path / "good.safetensors", build_tiny("unet"), tiny_metadata("unet"))


def _expect_error(path, *fragments):
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "absent.safetensors", "no such file")


def test_a_folder_is_said_to_be_a_folder(tmp_path):
    (tmp_path / "models").mkdir()
    _expect_error(tmp_path / "models", "is a folder, not a weights file")


def test_empty_file(tmp_path):
    _expect_error(_write_bytes(tmp_path / "empty.safetensors", b""), "empty")


@pytest.mark.parametrize("keep", [0.5, 0.01], ids=["data-cut", "header-cut"])
def test_truncated_file(tmp_path, good_file, keep):
    data = good_file.read_bytes()
    path = _write_bytes(tmp_path / "cut.safetensors", data[: max(9, int(len(data) * keep))])
    _expect_error(path, "truncated")


def test_shorter_than_a_header(tmp_path, good_file):
    _expect_error(_write_bytes(tmp_path / "stub.safetensors", good_file.read_bytes()[:5]), "truncated")


@pytest.mark.parametrize("text", [b"hello", b"hello\n", b"x = 1\ny = 2\n"], ids=["5-bytes", "6-bytes", "13-bytes"])
def test_a_short_text_file_is_not_a_weights_file_not_a_truncated_one(tmp_path, text):
    # issue 17, item 12: a text file named .safetensors was called "truncated (only 5 bytes)"
    message = _expect_error(_write_bytes(tmp_path / "notes.safetensors", text), "not a napari-nucleiseg weights file")
    assert "truncated" not in message


def test_a_weights_file_cut_after_its_first_bytes_is_truncated(tmp_path, good_file):
    for keep in (7, 8, 9):  # the header length, whole or not, then the header's first byte
        _expect_error(_write_bytes(tmp_path / "stub.safetensors", good_file.read_bytes()[:keep]), "truncated")


def test_random_bytes(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _expect_error(_write_bytes(tmp_path / "noise.safetensors", data), "not a napari-nucleiseg weights file")


def test_text_file(tmp_path):
    _expect_error(_write_bytes(tmp_path / "notes.safetensors", b"these are not weights\n" * 20), "not a")


def test_safetensors_file_that_is_not_ours(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"framework": "pt"})
    _expect_error(path, "not a napari-nucleiseg weights file")


def test_our_key_with_someone_elses_json(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={METADATA_KEY: json.dumps({"format": "other"})})
    _expect_error(path, "not a napari-nucleiseg weights file")


def test_tensors_of_another_architecture(tmp_path):
    # Metadata says unet, tensors come from an hrnet.
    path = save_weights(tmp_path / "mixed.safetensors", build_tiny("hrnet"), tiny_metadata("unet"))
    _expect_error(path, "do not match", "unet")


def test_tensors_of_another_size(tmp_path):
    metadata = tiny_metadata("unet") | {"kwargs": {"base_channels": 8, "depth": 3}}
    path = save_weights(tmp_path / "resized.safetensors", build_tiny("unet"), metadata)
    _expect_error(path, "wrong shape")


def test_unknown_architecture(tmp_path):
    path = save_weights(tmp_path / "alien.safetensors", build_tiny("unet"), tiny_metadata("unet") | {"architecture": "resnet"})
    message = _expect_error(path, "resnet")
    for name in NAMES:
        assert name in message


def test_invalid_architecture_arguments(tmp_path):
    metadata = tiny_metadata("unet") | {"kwargs": {"base_channels": 4, "flavour": "vanilla"}}
    path = save_weights(tmp_path / "odd-kwargs.safetensors", build_tiny("unet"), metadata)
    _expect_error(path, "flavour")


def test_nan_weights(tmp_path):
    network = build_tiny("unet")
    with torch.no_grad():
        next(network.parameters()).fill_(float("nan"))
    path = save_weights(tmp_path / "nan.safetensors", network, tiny_metadata("unet"))
    _expect_error(path, "NaN")


def test_file_from_a_newer_format(tmp_path):
    path = save_weights(tmp_path / "future.safetensors", build_tiny("unet"), tiny_metadata("unet") | {"format_version": 99})
    _expect_error(path, "newer")


def test_saving_needs_architecture_and_kwargs(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        save_weights(tmp_path / "x.safetensors", build_tiny("unet"), {"kwargs": {}})


def test_a_unetpp_file_names_the_heads_its_inference_averages(tmp_path):
    network = build_tiny("unetpp")
    all_heads = load_weights(save_weights(tmp_path / "all.safetensors", network, tiny_metadata("unetpp")))
    deep = load_weights(save_weights(tmp_path / "deep.safetensors", network, tiny_metadata("unetpp") | {"heads": [1, 2]}))

    assert all_heads.network.inference_heads is None
    assert deep.network.inference_heads == (1, 2)
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        heads = deep.network.forward_all(x)
        torch.testing.assert_close(deep.network(x), (heads[1] + heads[2]) / 2)
        torch.testing.assert_close(all_heads.network(x), (heads[0] + heads[1] + heads[2]) / 3, rtol=0, atol=1e-5)
        assert not torch.allclose(deep.network(x), all_heads.network(x), atol=1e-3)


@pytest.mark.parametrize("heads", [[3], [], [1, 1], [-1], ["2"], 2, [1.0]])
def test_bad_heads_in_a_unetpp_file(tmp_path, heads):
    path = save_weights(tmp_path / "heads.safetensors", build_tiny("unetpp"), tiny_metadata("unetpp") | {"heads": heads})
    _expect_error(path, "heads", "0 to 2")


def test_heads_in_a_single_output_model_file(tmp_path):
    path = save_weights(tmp_path / "unet-heads.safetensors", build_tiny("unet"), tiny_metadata("unet") | {"heads": [0]})
    _expect_error(path, "single output")


@pytest.mark.parametrize("value", [-1, 2.5, "8", True])
def test_bad_seed_min_size_in_a_file(tmp_path, value):
    path = save_weights(tmp_path / "seeds.safetensors", build_tiny("unet"), tiny_metadata("unet") | {"seed_min_size": value})
    _expect_error(path, "seed_min_size")


def test_seed_min_size_is_read_from_a_file(tmp_path):
    path = save_weights(tmp_path / "seeds.safetensors", build_tiny("unet"), tiny_metadata("unet") | {"seed_min_size": 16})
    assert load_weights(path).settings.seed_min_size == 16


def _size_model(**changes):
    from napari_nucleiseg.scale import SIZE_FEATURES

    features = len(SIZE_FEATURES)
    return {"kind": "rung-mixture", "min_colour": 0.0, "features": list(SIZE_FEATURES), "mean": [0.0] * features,
            "scale": [1.0] * features, "gate": [0.0] * (features + 1), "correction": [0.0] * (features + 1)} | changes


@pytest.mark.parametrize("change", [
    {"kind": "ridge"}, {"features": ["confidence"]}, {"gate": [0.0, 1.0]}, {"scale": [0.0] * 12},
    {"correction": ["1"] * 13}, {"mean": [float("nan")] * 12}, {"min_colour": "0.01"},
], ids=["kind", "features", "gate-length", "zero-scale", "strings", "nan", "min-colour"])
def test_a_bad_size_model_in_a_file_is_refused_naming_it(tmp_path, change):
    metadata = tiny_metadata("unet") | {"diameter": 18, "size_model": _size_model(**change)}
    path = save_weights(tmp_path / "sized.safetensors", build_tiny("unet"), metadata)
    _expect_error(path, "size_model")


def test_a_file_s_size_model_gives_its_estimate(tmp_path):
    """The same network and sweep, two size models that differ only in their correction's
    intercept (log 2): the second file's estimate is twice the first's."""
    from napari_nucleiseg.scale import SIZE_FEATURES, estimate_diameter

    from test_scale import disks_image

    image, _ = disks_image(12, 256)
    network = build_tiny("unet")
    estimates = []
    for name, shift in (("plain", 0.0), ("doubled", float(np.log(2)))):
        size_model = _size_model(correction=[0.0] * len(SIZE_FEATURES) + [shift])
        path = save_weights(tmp_path / f"{name}.safetensors", network,
                            tiny_metadata("unet") | {"diameter": 18, "min_size": 0, "size_model": size_model})
        estimates.append(estimate_diameter(image, load_weights(path)))
    assert None not in estimates
    assert estimates[1] == pytest.approx(2 * estimates[0], rel=1e-6)


def test_a_size_model_for_coloured_images_leaves_a_gray_image_to_the_sweep_s_rule(tmp_path):
    from napari_nucleiseg.preprocess import pseudo_colour
    from napari_nucleiseg.scale import SIZE_FEATURES, estimate_diameter

    from test_scale import disks_image

    image, _ = disks_image(12, 256)
    network = build_tiny("unet")
    metadata = tiny_metadata("unet") | {"diameter": 18, "min_size": 0}
    plain = load_weights(save_weights(tmp_path / "plain.safetensors", network, metadata))
    doubling = _size_model(min_colour=0.01, correction=[0.0] * len(SIZE_FEATURES) + [float(np.log(2))])
    sized = load_weights(save_weights(tmp_path / "sized.safetensors", network, metadata | {"size_model": doubling}))
    assert estimate_diameter(image, plain) is not None
    assert estimate_diameter(image, sized) == estimate_diameter(image, plain)
    coloured = np.stack([image, image // 2, 255 - image], axis=-1)  # the same nuclei in colours: the size model's
    assert not pseudo_colour(coloured)  # (not one channel shown in a colour, which is read as gray)
    assert estimate_diameter(coloured, sized) != estimate_diameter(coloured, plain)


# ---- what the Model picker's tooltips say (issue 17, item 11) ------------------------------------

EVALUATION = json.loads((weights_dir() / "evaluation.json").read_text())


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_a_bundled_model_is_described_in_plain_words_with_its_scores_per_kind_of_image(name):
    text = describe_weights(read_metadata(bundled_weights_path(name)), bundled_evaluation())
    measured = EVALUATION["models"][name]["sets"]
    assert text.startswith(f"{MODEL_TITLES[name]}") and SPEEDS[name] in text.splitlines()[0]
    for kind, (words, source) in SCORED_KINDS.items():  # the figures are weights/evaluation.json's
        scores = measured[kind]
        line = " ".join(text.split()).split(f"- {words[0].upper()}{words[1:]} ({source}")[1].split("- ")[0]
        assert f"score {scores['dsb_score']:.2f}, F1 {scores['f1_iou50']:.2f}" in line
        assert f"count off by {scores['count_error_median']:.0%}" in line
        best = max(EVALUATION["models"], key=lambda model: EVALUATION["models"][model]["sets"][kind]["dsb_score"])
        summary = " ".join(text.split()).split("Scores on images")[0]  # what it is good at
        if "on every kind of image" in summary:
            assert best == name
        else:
            best_on = summary.split("The most accurate of the bundled models on ")[-1].split(";")[0]
            assert (words in best_on) == (best == name), (kind, summary)
    assert "Licence: trained on MoNuSeg 2018" in text and "non-commercial" in text
    for jargon in ("dsb_score", "f1_iou50", "lr ", "val_during_training", "../"):
        assert jargon not in text
    assert all(len(line) <= 100 for line in text.splitlines())  # tooltips do not wrap plain text


def test_the_speed_words_follow_the_benchmark():
    speed = json.loads((REPO / "benchmarks" / "results" / "inference.json").read_text())
    for size in sorted({run["size"] for run in speed["runs"]}):
        times = {run["model"]: np.median(run["times_s"]) for run in speed["runs"] if run["size"] == size}
        fastest, middle, slowest = sorted(times, key=times.get)
        assert SPEEDS[fastest] == "the fastest of the three" and SPEEDS[slowest] == "the slowest of the three"
        assert SPEEDS[middle] == f"slower than {MODEL_TITLES[fastest]}, faster than {MODEL_TITLES[slowest]}"


def test_a_file_of_the_user_s_is_described_by_its_own_metadata_in_plain_names(tmp_path):
    metadata = tiny_metadata("unet") | {"name": "unet", "metrics": {"val": {"dsb_score": 0.41, "f1_iou50": 0.7}}}
    text = describe_weights(metadata)  # no evaluation: not a bundled file, whatever it is named
    assert text.startswith("Architecture: unet") and "Validation (val): DSB2018 score 0.41, F1 0.70" in text
    assert "Scores on images" not in text


@pytest.mark.parametrize("estimate", [{"threshold": 1.5}, {"boundary_threshold": "0.1"}, [0.6, 0.1]],
                         ids=["out-of-range", "string", "not-a-mapping"])
def test_bad_estimate_thresholds_in_a_file_are_refused_naming_them(tmp_path, estimate):
    metadata = tiny_metadata("unet") | {"diameter": 18, "estimate": estimate}
    path = save_weights(tmp_path / "estimate.safetensors", build_tiny("unet"), metadata)
    _expect_error(path, "estimate")


def test_a_file_s_estimate_thresholds_change_the_estimate_s_labels_only(tmp_path):
    metadata = tiny_metadata("unet") | {"threshold": 0.7, "boundary_threshold": 0.3,
                                        "estimate": {"threshold": 0.5, "boundary_threshold": 0.1}}
    model = load_weights(save_weights(tmp_path / "estimate.safetensors", build_tiny("unet"), metadata))
    assert (model.settings.threshold, model.settings.boundary_threshold) == (0.7, 0.3)
    assert (model.estimate_settings.threshold, model.estimate_settings.boundary_threshold) == (0.5, 0.1)
    assert model.estimate_settings.min_size == model.settings.min_size
