"""The ``nucleiseg segment`` command: files and folders in, label images and tables out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_nucleiseg import segment
from napari_nucleiseg.api import load_model
from napari_nucleiseg.cli import EXIT_PARTIAL, _tiff_calibration, main, tiff_pixel_size

from conftest import blob_image

GOOD = {"a.png": (96, 128), "b.tif": (80, 72)}


@pytest.fixture
def folder(tmp_path):
    """Two good images (one PNG, one TIFF), one corrupt PNG and a stray text file."""
    images = tmp_path / "images"
    images.mkdir()
    iio.imwrite(images / "a.png", np.stack([blob_image(GOOD["a.png"])] * 3, axis=-1))
    tifffile.imwrite(images / "b.tif", blob_image(GOOD["b.tif"], centers=((20, 20), (50, 40))).astype(np.uint16) * 200)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (images / "notes.txt").write_text("not an image")
    return images


def run(capsys, *args):
    status = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_folder_with_a_corrupt_file(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out" / "nested"  # created, parents too
    status, stdout, stderr = run(capsys, folder, "--out", out, "--weights", tiny_weights["hrnet"])

    assert status == EXIT_PARTIAL
    error_lines = stderr.strip().splitlines()
    assert len(error_lines) == 1 and "broken.png" in error_lines[0]
    assert "Traceback" not in stderr and "notes.txt" not in stderr
    assert "Segmented 2 of 3 images" in stdout

    counts = pd.read_csv(out / "counts.csv")
    assert sorted(counts["file"].map(lambda f: f.split("/")[-1])) == ["a.png", "b.tif"]
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert nuclei.columns[0] == "file"
    for row in counts.itertuples():
        stem = row.file.split("/")[-1].rsplit(".", 1)[0]
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.shape == GOOD[row.file.split("/")[-1]]
        assert labels.dtype == np.uint16
        assert row.nuclei == labels.max() == len(np.unique(labels)) - 1
        assert (nuclei["file"] == row.file).sum() == row.nuclei
    assert counts["nuclei"].sum() > 0
    assert not (out / "broken_labels.tif").exists()
    assert not list(out.glob("*_probability.tif"))


def test_outputs_match_the_python_api(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    status, _, _ = run(
        capsys, folder / "a.png", "--out", out, "--weights", tiny_weights["unet"],
        "--threshold", "0.4", "--min-size", "3", "--no-split", "--save-probability",
    )
    assert status == 0
    expected = segment(iio.imread(folder / "a.png"), tiny_weights["unet"], threshold=0.4, min_size=3, split=False)
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), expected.labels)
    probability = tifffile.imread(out / "a_probability.tif")
    assert probability.dtype == np.float32
    np.testing.assert_allclose(probability, expected.probabilities, atol=1e-6)
    counts = pd.read_csv(out / "counts.csv")
    assert counts.loc[0, "nuclei"] == expected.count
    assert (counts.loc[0, "threshold"], counts.loc[0, "min_size"], counts.loc[0, "split"]) == (0.4, 3, False)
    nuclei = pd.read_csv(out / "nuclei.csv")
    np.testing.assert_allclose(nuclei["area"], expected.table["area"])


def test_neck_ratio_is_passed_on_and_recorded(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    status, _, _ = run(capsys, folder / "a.png", "--out", out, "--weights", tiny_weights["unet"], "--neck-ratio", "0.2")
    assert status == 0
    expected = segment(iio.imread(folder / "a.png"), tiny_weights["unet"], neck_ratio=0.2)
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), expected.labels)
    assert pd.read_csv(out / "counts.csv").loc[0, "neck_ratio"] == 0.2
    assert pd.read_csv(out / "counts.csv").loc[0, "seed_min_size"] == 0  # the file's: every seed counts


def test_augment_is_passed_on_and_recorded(capsys, folder, tmp_path, tiny_weights):
    weights = tiny_weights["unet"]
    status, _, _ = run(capsys, folder / "a.png", "--out", tmp_path / "one", "--weights", weights)
    assert status == 0
    status, _, stderr = run(capsys, folder / "a.png", "--out", tmp_path / "four", "--weights", weights, "--augment")
    assert status == 0, stderr
    expected = segment(iio.imread(folder / "a.png"), weights, augment=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "four" / "a_labels.tif"), expected.labels)
    one, four = (pd.read_csv(tmp_path / out / "counts.csv").loc[0] for out in ("one", "four"))
    assert (one["augmented"], four["augmented"]) == (False, True)
    assert four["nuclei"] == expected.count


def test_exclude_border_changes_the_counts_and_is_recorded(capsys, folder, tmp_path, tiny_weights):
    weights = tiny_weights["hrnet"]  # its random nuclei reach the edges of a.png
    status, _, _ = run(capsys, folder / "a.png", "--out", tmp_path / "all", "--weights", weights)
    assert status == 0
    status, _, _ = run(capsys, folder / "a.png", "--out", tmp_path / "inner", "--weights", weights, "--exclude-border")
    assert status == 0
    expected = segment(iio.imread(folder / "a.png"), weights, exclude_border=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "inner" / "a_labels.tif"), expected.labels)
    everything, inner = (pd.read_csv(tmp_path / out / "counts.csv").loc[0] for out in ("all", "inner"))
    assert inner["nuclei"] == expected.count < everything["nuclei"]
    assert (everything["exclude_border"], inner["exclude_border"]) == (False, True)
    assert len(pd.read_csv(tmp_path / "inner" / "nuclei.csv")) == expected.count


def test_real_image(capsys, dsb_image_paths, tmp_path, tiny_weights):
    source = dsb_image_paths[0]
    status, _, stderr = run(capsys, source, "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == 0, stderr
    labels = tifffile.imread(tmp_path / "out" / f"{source.stem}_labels.tif")
    assert labels.shape == iio.imread(source).shape[:2]


def test_existing_outputs_are_not_overwritten(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    arguments = [folder, "--out", out, "--weights", tiny_weights["unet"]]
    assert run(capsys, *arguments)[0] == EXIT_PARTIAL
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert {"a_labels.tif", "b_labels.tif", "counts.csv", "nuclei.csv"} <= set(before)

    # A different threshold would change the outputs, if they were written.
    status, _, stderr = run(capsys, *arguments, "--threshold", "0.1")
    assert status == 1
    assert "--overwrite" in stderr and "a_labels.tif" in stderr and "counts.csv" in stderr
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before

    status, _, _ = run(capsys, *arguments, "--threshold", "0.1", "--overwrite")
    assert status == EXIT_PARTIAL
    assert pd.read_csv(out / "counts.csv")["threshold"].eq(0.1).all()
    assert (out / "a_labels.tif").read_bytes() != before["a_labels.tif"]


def test_overwrite_of_one_image_keeps_the_rows_of_the_others(capsys, folder, tmp_path, tiny_weights):
    """QA: re-running one image of a finished batch with --overwrite (another threshold) left the tables with
    its row alone and deleted the earlier ones; the other images' label files stayed without a row."""
    out = tmp_path / "out"
    assert run(capsys, folder, "--out", out, "--weights", tiny_weights["unet"])[0] == EXIT_PARTIAL
    counts, nuclei = pd.read_csv(out / "counts.csv"), pd.read_csv(out / "nuclei.csv")
    names = lambda table: [Path(file).name for file in table["file"]]  # noqa: E731
    assert names(counts) == ["a.png", "b.tif"]

    status, stdout, stderr = run(capsys, folder / "b.tif", "--out", out, "--weights", tiny_weights["unet"],
                                 "--threshold", "0.1", "--overwrite")
    assert status == 0 and "Segmented 1 of 1 images" in stdout
    assert "keep the rows of 1 earlier image not given to this run" in stderr
    again, nuclei_again = pd.read_csv(out / "counts.csv"), pd.read_csv(out / "nuclei.csv")
    assert names(again) == ["a.png", "b.tif"] and again.loc[0, "threshold"] != 0.1
    pd.testing.assert_series_equal(again.iloc[0], counts.iloc[0])  # a's row as it was
    assert again.loc[1, "threshold"] == 0.1
    a_file = counts.loc[0, "file"]
    pd.testing.assert_frame_equal(nuclei_again[nuclei_again["file"] == a_file], nuclei[nuclei["file"] == a_file])
    assert (nuclei_again["file"] == again.loc[1, "file"]).sum() == again.loc[1, "nuclei"]
    assert not list(out.glob("replaced-*"))  # what it replaced is deleted, as before

    (out / "a_labels.tif").unlink()  # a row describes the label file beside it: none, no row
    assert run(capsys, folder / "b.tif", "--out", out, "--weights", tiny_weights["unet"], "--overwrite")[0] == 0
    assert names(pd.read_csv(out / "counts.csv")) == ["b.tif"]


def test_one_existing_output_blocks_the_whole_run(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_labels.tif").write_bytes(b"keep me")
    status, _, stderr = run(capsys, folder, "--out", out, "--weights", tiny_weights["unet"])
    assert status == 1 and "b_labels.tif" in stderr
    assert sorted(path.name for path in out.iterdir()) == ["b_labels.tif"]
    assert (out / "b_labels.tif").read_bytes() == b"keep me"


def test_one_existing_output_is_named_as_one(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    out.mkdir()
    (out / "counts.csv").write_text("mine")
    status, _, stderr = run(capsys, folder, "--out", out, "--weights", tiny_weights["unet"])
    assert status == 1 and "holds counts.csv; use --overwrite to replace it." in stderr


def test_what_a_folder_holds_besides_images_is_named_not_passed_over(capsys, tmp_path, tiny_weights):
    """QA: a subfolder of images and files that are not images were ignored without a word."""
    images = tmp_path / "images"
    (images / "day 2").mkdir(parents=True)
    (images / "scans.tif").mkdir()  # a folder named as an image (QA: passed over without a word)
    iio.imwrite(images / "a.png", blob_image())
    iio.imwrite(images / "day 2" / "b.png", blob_image())
    (images / "notes.txt").write_text("plate 3")  # notes and metadata beside images are not worth a word
    (images / ".DS_Store").write_bytes(b"")
    (images / "c.czi").write_bytes(b"ZISRAWFILE")
    (images / "nuclei-results").mkdir()  # an earlier run's results, beside the images: not a folder to search
    (images / "nuclei-results" / "counts.csv").write_text("file,nuclei\n")
    status, _, stderr = run(capsys, images, "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == 0  # what there is to segment is segmented
    assert (f"left out of {images}: 1 image (c.czi; not png, tif, tiff, jpg or jpeg: save such images as TIFF); "
            "2 subfolders (day 2, scans.tif; not searched: give a subfolder as an input)") in stderr
    assert "notes.txt" not in stderr and ".DS_Store" not in stderr
    assert len(pd.read_csv(tmp_path / "out" / "counts.csv")) == 1


def test_export_takes_the_model_titles_segment_takes(tmp_path):
    from napari_nucleiseg._cli_export import _model_name

    assert [_model_name(text) for text in ("HRNet", "UNet++", "unet", "mine.safetensors")] == [
        "hrnet", "unetpp", "unet", "mine.safetensors"]


def test_resume_measures_labels_corrected_since_again(capsys, tmp_path, tiny_weights):
    """QA: after labels 1 and 2 were erased from a finished image's label file, --resume said there was nothing
    left to do and kept 12 rows for a file holding 10 nuclei (the help: a row always describes the label file)."""
    from test_batch_stops import check_consistent

    images = tmp_path / "images"
    images.mkdir()
    iio.imwrite(images / "a.png", blob_image())
    tifffile.imwrite(images / "stack.tif", np.stack([blob_image(seed=plane) for plane in range(2)]), imagej=True,
                     metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    command = (images, "--out", out, "--weights", tiny_weights["unet"], "--resume")
    assert run(capsys, *command)[0] == 0
    before = pd.read_csv(out / "counts.csv").set_index("labels_file")["nuclei"]
    columns = list(pd.read_csv(out / "nuclei.csv").columns)  # the stack's nuclei are 3-D (its axis is Z)
    for name in ("a_labels.tif", "stack_labels.tif"):
        labels = tifffile.imread(out / name)
        labels[labels == labels.max()] = 0  # one nucleus erased by hand
        tifffile.imwrite(out / name, labels)
    status, stdout, stderr = run(capsys, *command)
    assert status == 0 and stdout.startswith("Nothing left to segment")
    assert f"a_labels.tif was changed since it was segmented: measured again ({before['a_labels.tif']} -> " \
           f"{before['a_labels.tif'] - 1} nuclei)" in stderr
    after = check_consistent(out).set_index("labels_file")["nuclei"]
    assert after.to_dict() == {name: count - 1 for name, count in before.items()}
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert len(nuclei) == after.sum() and list(nuclei.columns) == columns and "volume" in columns
    assert run(capsys, *command)[2] == ""  # recorded: said once

    shutil.copy2(out / "a_labels.tif", tmp_path / "a.tif")  # copied back with its times: the same bytes
    os.utime(out / "a_labels.tif", ns=(1, 1))
    assert run(capsys, *command)[2] == ""
    (out / "a_labels.tif").write_bytes((tmp_path / "a.tif").read_bytes()[:300])  # damaged (a crash while saving)
    status, stdout, stderr = run(capsys, *command)
    assert status == 0 and "a_labels.tif was changed since it was segmented and could not be measured again" in stderr
    assert pd.read_csv(out / "counts.csv").set_index("labels_file")["nuclei"].to_dict() == after.to_dict()


def test_resume_keeps_what_a_plain_run_and_an_overwrite_run_finished(capsys, tmp_path, tiny_weights):
    """QA: --resume after a plain run segmented its finished images again ('their file or the settings changed':
    a plain run recorded nothing); after an --overwrite run with --threshold 0.9 it kept that run's labels but
    took them for a hand edit of the first run's, and wrote the first run's threshold (0.6) beside them."""
    from test_batch_stops import check_consistent

    images = tmp_path / "images"
    images.mkdir()
    for seed, name in enumerate(("a", "b")):
        iio.imwrite(images / f"{name}.png", blob_image(seed=seed))
    out = tmp_path / "out"
    command = (images, "--out", out, "--weights", tiny_weights["unet"])
    assert run(capsys, *command, "--threshold", "0.6")[0] == 0
    status, stdout, stderr = run(capsys, *command, "--threshold", "0.6", "--resume")
    assert status == 0 and stdout.startswith("Nothing left to segment: all 2 images were done before") and stderr == ""

    assert run(capsys, *command, "--threshold", "0.9", "--overwrite")[0] == 0
    nine = check_consistent(out)
    status, stdout, stderr = run(capsys, *command, "--threshold", "0.9", "--resume")
    assert status == 0 and stdout.startswith("Nothing left to segment") and stderr == ""
    assert check_consistent(out).equals(nine) and (nine["threshold"] == 0.9).all()
    status, stdout, _ = run(capsys, *command, "--threshold", "0.6", "--resume")  # other settings: done again
    assert status == 0 and stdout.startswith("Segmented 2 of 2 images")
    assert (check_consistent(out)["threshold"] == 0.6).all()


@pytest.mark.parametrize("first", [(), ("--resume",)])
def test_resume_with_other_images_keeps_the_rows_of_the_earlier_ones(capsys, tmp_path, tiny_weights, first):
    """QA: a new image segmented with --resume into a folder of earlier results (a plain run's, or a resumed
    one's) rewrote counts.csv and nuclei.csv with its row alone, without --overwrite, and said nothing."""
    images = tmp_path / "images"
    images.mkdir()
    for seed, name in enumerate(("a", "b", "new")):
        iio.imwrite(images / f"{name}.png", blob_image(seed=seed))
    out = tmp_path / "out"
    weights = ("--out", out, "--weights", tiny_weights["unet"])
    assert run(capsys, images / "a.png", images / "b.png", *weights, *first)[0] == 0
    tables = {name: (out / name).read_bytes() for name in ("counts.csv", "nuclei.csv")}

    status, _, stderr = run(capsys, images / "new.png", *weights, "--resume")
    assert status == 2 and "holds the rows of images this run is not given" in stderr and "a.png, " in stderr
    assert {name: (out / name).read_bytes() for name in tables} == tables  # nothing written
    assert not (out / "new_labels.tif").exists()
    status, _, _ = run(capsys, images / "a.png", images / "b.png", images / "new.png", *weights, "--resume")
    assert status == 0
    assert sorted(pd.read_csv(out / "counts.csv")["labels_file"]) == ["a_labels.tif", "b_labels.tif", "new_labels.tif"]


def test_a_short_axis_the_file_does_not_name_is_segmented_as_planes_and_said_so(capsys, tmp_path, tiny_weights):
    """QA: DAPI + a marker saved as a plain (2, H, W) array gave their nuclei summed in one row with no word on
    stderr (the widget's count says it); a Z the file names is no question."""
    plain, named = tmp_path / "plain.tif", tmp_path / "named.tif"
    tifffile.imwrite(plain, np.stack([blob_image(), blob_image(seed=1)]))
    tifffile.imwrite(named, np.stack([blob_image(), blob_image(seed=1)]), imagej=True, metadata={"axes": "ZYX"})
    status, _, stderr = run(capsys, plain, named, "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == 0
    assert stderr.strip().splitlines() == [
        f"nucleiseg: note: {plain}: its 2 planes (an axis the file does not name) were segmented one by one and their "
        "nuclei counted together; if they are channels, give --channel N for the one with the nuclei."]
    status, _, stderr = run(capsys, plain, "--out", tmp_path / "3d", "--weights", tiny_weights["unet"], "--3d")
    assert status == 0 and stderr == ""  # linked into 3-D nuclei, as asked (review: the note said otherwise)
    timelapse = tmp_path / "timelapse.tif"
    tifffile.imwrite(timelapse, np.stack([blob_image(), blob_image(seed=1)]), imagej=True, metadata={"axes": "TYX"})
    status, _, stderr = run(capsys, timelapse, "--out", tmp_path / "t", "--weights", tiny_weights["unet"], "--3d")
    assert status == 0 and stderr.strip().splitlines() == [  # (QA: --3d did nothing here, without a word)
        f"nucleiseg: note: {timelapse}: its planes are time points (T), which are never linked into 3-D nuclei "
        "(--3d); each was segmented on its own."]
    plain4d = tmp_path / "plain4d.tif"  # two unnamed axes: nothing to link, and no time points either (review)
    tifffile.imwrite(plain4d, np.stack([np.stack([blob_image(), blob_image(seed=1)])] * 2))
    status, _, stderr = run(capsys, plain4d, "--out", tmp_path / "q", "--weights", tiny_weights["unet"], "--3d")
    assert status == 0 and "time points" not in stderr


def test_hashing_an_input_stops_when_a_stop_is_asked_for(tmp_path):
    """Review: every run hashes its inputs, a whole slide's for minutes from a network disk; Ctrl+C waited."""
    from napari_nucleiseg._manifest import HASH_CHUNK, input_fingerprint

    big = tmp_path / "slide.tif"
    big.write_bytes(bytes(3 * HASH_CHUNK))
    chunks = []

    def check():
        chunks.append(1)
        if len(chunks) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        input_fingerprint(big, check)
    assert chunks == [1]  # stopped after the first chunk of three


def test_the_channel_given_is_recorded(capsys, tmp_path, tiny_weights):
    """QA: the same file segmented with --channel 0 and --channel 1 gave tables that could not be told apart."""
    source = tmp_path / "dapi+marker.tif"
    tifffile.imwrite(source, np.stack([blob_image(), blob_image(seed=1)]), imagej=True, metadata={"axes": "CYX"})
    for channel in (0, 1):
        assert run(capsys, source, "--out", tmp_path / f"c{channel}", "--weights", tiny_weights["unet"],
                   "--channel", channel)[0] == 0
        assert pd.read_csv(tmp_path / f"c{channel}" / "counts.csv")["channel"].tolist() == [channel]
    plain = tmp_path / "plain.png"
    iio.imwrite(plain, blob_image())
    assert run(capsys, plain, "--out", tmp_path / "plain", "--weights", tiny_weights["unet"])[0] == 0
    assert pd.read_csv(tmp_path / "plain" / "counts.csv")["channel"].isna().all()  # not given: empty


def test_only_bad_files(capsys, tmp_path, tiny_weights):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    (bad / "y.tif").write_bytes(b"II*\x00garbage")
    status, _, stderr = run(capsys, bad, tmp_path / "missing.png", "--out", tmp_path / "out", "--weights",
                            tiny_weights["unet"])
    assert status == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 4  # one line per bad input, then that nothing was segmented
    for name in ("missing.png", "x.png", "y.tif"):
        assert sum(name in line for line in lines) == 1
    assert not (tmp_path / "out" / "counts.csv").exists()


def test_unsupported_image_shape_is_skipped(capsys, folder, tmp_path, tiny_weights):
    tifffile.imwrite(folder / "stack.tif", np.zeros((5, 4, 32), np.uint8), photometric="minisblack")
    status, _, stderr = run(capsys, folder, "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == EXIT_PARTIAL
    assert "stack.tif" in stderr and "too small to hold nuclei" in stderr and "broken.png" in stderr
    assert len(pd.read_csv(tmp_path / "out" / "counts.csv")) == 2


def test_a_z_stack_gives_what_the_python_api_gives_plane_by_plane(capsys, tmp_path, tiny_weights):
    planes = [blob_image((80, 72)), blob_image((80, 72), centers=((20, 20), (50, 40))), np.zeros((80, 72), np.uint8)]
    tifffile.imwrite(tmp_path / "z.tif", np.stack(planes), imagej=True, metadata={"axes": "ZYX"})
    status, _, stderr = run(capsys, tmp_path / "z.tif", "--out", tmp_path / "out", "--weights", tiny_weights["unet"],
                            "--save-probability", "--no-3d")  # plane by plane, as the API
    assert status == 0, stderr
    with tifffile.TiffFile(tmp_path / "out" / "z_labels.tif") as written:
        assert written.series[0].axes == "ZYX"
        labels = written.asarray()
    probability = tifffile.imread(tmp_path / "out" / "z_probability.tif")
    assert labels.shape == (3, 80, 72) and probability.shape == (3, 2, 80, 72)
    expected = [segment(plane, tiny_weights["unet"]) for plane in planes]
    nuclei = pd.read_csv(tmp_path / "out" / "nuclei.csv")
    for z, plane in enumerate(expected):
        np.testing.assert_array_equal(labels[z] > 0, plane.labels > 0)
        assert len(np.unique(labels[z][labels[z] > 0])) == plane.count == (nuclei["z"] == z).sum()
        np.testing.assert_allclose(probability[z], plane.probabilities, atol=1e-6)
    assert pd.read_csv(tmp_path / "out" / "counts.csv").loc[0, "nuclei"] == sum(plane.count for plane in expected)


def test_empty_folder(capsys, tmp_path, tiny_weights):
    (tmp_path / "empty").mkdir()
    status, _, stderr = run(capsys, tmp_path / "empty", "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == 1 and "empty" in stderr


def test_bad_weights_file_is_one_sentence(capsys, folder, tmp_path):
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(b"")
    status, _, stderr = run(capsys, folder, "--out", tmp_path / "out", "--weights", weights)
    assert status == 1
    # The weights are loaded before any image is read: one line, and nothing else happened.
    assert len(stderr.strip().splitlines()) == 1
    assert "bad.safetensors" in stderr and "empty" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_output_folder_that_cannot_be_created(capsys, folder, tmp_path, tiny_weights):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, _, stderr = run(capsys, folder / "a.png", "--out", blocker / "out", "--weights", tiny_weights["unet"])
    assert status == 1
    assert len(stderr.strip().splitlines()) == 1 and "output folder" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    "arguments",
    [
        [],  # no INPUT, no --out
        ["x.png"],  # no --out
        ["x.png", "--out", "o", "--threshold", "1.5"],
        ["x.png", "--out", "o", "--threshold", "high"],
        ["x.png", "--out", "o", "--min-size", "-3"],
        ["x.png", "--out", "o", "--neck-ratio", "2"],
        ["x.png", "--out", "o", "--model", "resnet"],
        ["x.png", "--out", "o", "--model", "unet", "--weights", "w.safetensors"],
    ],
)
def test_usage_errors_exit_with_2(capsys, tmp_path, monkeypatch, arguments):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    status, _, stderr = run(capsys, *arguments)
    assert status == 2
    assert stderr
    assert not (tmp_path / "o").exists()


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "segment" in capsys.readouterr().err


def test_the_exit_status_says_whether_every_image_was_segmented(capsys, folder, tmp_path, tiny_weights):
    good, weights = [folder / "a.png", folder / "b.tif"], ["--weights", tiny_weights["unet"]]
    status, _, stderr = run(capsys, *good, folder / "a.png", "--out", tmp_path / "all", *weights)
    assert status == 0 and stderr == ""  # a path named twice leaves no image out
    status, _, stderr = run(capsys, *good, folder / "notes.txt", "--out", tmp_path / "glob", *weights)
    assert status == 0 and "not a png" in stderr  # a shell glob's text file: no image left out

    status, stdout, stderr = run(capsys, *good, folder / "gone.png", "--out", tmp_path / "some", *weights)
    assert status == EXIT_PARTIAL and "Segmented 2 of 2 images" in stdout
    assert stdout.strip().endswith("1 more input could not be found or read (see above).")  # QA
    assert stderr.strip().splitlines() == [f"nucleiseg: skipped {folder / 'gone.png'}: no such file or folder"]

    status, _, stderr = run(capsys, folder / "broken.png", folder / "gone.png", "--out", tmp_path / "none", *weights)
    assert status == 1 and "no image could be segmented" in stderr


def test_same_stem_twice_is_a_usage_error(capsys, folder, tmp_path, tiny_weights):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(folder / "a.png", other / "a.tif")
    status, _, stderr = run(capsys, folder / "a.png", other / "a.tif", "--out", tmp_path / "out",
                            "--weights", tiny_weights["unet"])
    assert status == 2 and stderr.strip() == (f"nucleiseg: {folder / 'a.png'} and {other / 'a.tif'} would both write "
                                              "a_labels.tif; segment them into different --out folders.")
    shutil.copy(folder / "a.png", other / "A.tif")  # the same file where names ignore case (macOS, Windows)
    status, _, stderr = run(capsys, folder / "a.png", other / "A.tif", "--out", tmp_path / "out",
                            "--weights", tiny_weights["unet"])
    assert status == 2 and "would both write A_labels.tif (names that differ only in case" in stderr
    assert not (tmp_path / "out").exists()


def test_the_same_file_twice_is_segmented_once(capsys, folder, tmp_path, tiny_weights):
    status, _, _ = run(capsys, folder, folder / "a.png", "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == EXIT_PARTIAL
    assert len(pd.read_csv(tmp_path / "out" / "counts.csv")) == 2


def test_help_exits_cleanly(capsys):
    assert main(["segment", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--save-probability" in help_text and "--diameter auto|PX" in help_text


def test_version_is_printed(capsys):
    from napari_nucleiseg import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nucleiseg (napari-nucleiseg) {__version__}"


def test_without_model_or_weights_the_bundled_default_model_runs(capsys, tmp_path):
    from napari_nucleiseg.weights import DEFAULT_MODEL, bundled_weights_path

    if not bundled_weights_path(DEFAULT_MODEL).is_file():
        pytest.skip("the bundled weights are not installed")
    image = blob_image((96, 128), centers=((30, 30), (60, 90), (70, 40)))
    iio.imwrite(tmp_path / "blobs.png", image)
    status, _, stderr = run(capsys, tmp_path / "blobs.png", "--out", tmp_path / "out")
    assert status == 0, stderr
    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    assert counts["model"].tolist() == [DEFAULT_MODEL]
    expected = segment(image, DEFAULT_MODEL)  # the API's default is the same model
    assert counts["nuclei"].tolist() == [expected.count] and expected.model_name == segment(image).model_name


def shipped_weights(name: str):
    """The path of a bundled weights file, or skip when the bundled weights are not installed."""
    from napari_nucleiseg.weights import WeightsError, bundled_weights_path

    try:
        return bundled_weights_path(name)
    except WeightsError:
        pytest.skip("the bundled weights are not installed")


#: What the weights file made by ``sized_weights`` says its network was trained at; the nuclei of
#: the fluorescence sample are about 12 px across, so its images are resized (by about 1.5).
TRAINED_DIAMETER = 18.0


@pytest.fixture
def sample_png(tmp_path):
    """The bundled fluorescence sample cropped to 256 x 256, as a PNG."""
    from napari_nucleiseg._sample_data import read_sample

    path = tmp_path / "sample.png"
    iio.imwrite(path, read_sample("fluorescence")[:256, :256])
    return path


@pytest.fixture(scope="module")
def sized_weights(tmp_path_factory):
    """The shipped HRNet re-saved with a training diameter of TRAINED_DIAMETER recorded."""
    from napari_nucleiseg.weights import load_weights, save_weights

    model = load_weights(shipped_weights("hrnet"))
    return save_weights(tmp_path_factory.mktemp("sized") / "hrnet-18px.safetensors", model.network,
                        model.metadata | {"diameter": TRAINED_DIAMETER})


@pytest.fixture(scope="module")
def unsized_weights(tmp_path_factory):
    """The shipped UNet re-saved without a training diameter, as files made before session 8 are."""
    from napari_nucleiseg.weights import load_weights, save_weights

    model = load_weights(shipped_weights("unet"))
    metadata = {key: value for key, value in model.metadata.items() if key != "diameter"}
    return save_weights(tmp_path_factory.mktemp("unsized") / "unet-no-diameter.safetensors", model.network, metadata)


def test_a_given_diameter_is_recorded_in_counts(capsys, sample_png, tmp_path):
    out = tmp_path / "out"
    status, _, stderr = run(capsys, sample_png, "--out", out, "--weights", shipped_weights("unet"), "--diameter", "30")
    assert status == 0, stderr
    counts = pd.read_csv(out / "counts.csv")
    assert counts["diameter_px"].tolist() == [30.0]
    assert counts["diameter_estimated"].tolist() == [False]
    trained = load_model(shipped_weights("unet")).diameter
    assert counts["scale"].tolist() == [pytest.approx(trained / 30)]  # resized so 30 px nuclei arrive at its size


def test_without_a_recorded_diameter_auto_segments_the_image_as_it_is(capsys, sample_png, tmp_path, unsized_weights):
    out = tmp_path / "out"
    status, _, stderr = run(capsys, sample_png, "--out", out, "--weights", unsized_weights)
    assert status == 0, stderr
    counts = pd.read_csv(out / "counts.csv")
    assert counts["diameter_px"].isna().all()  # written empty
    assert counts["diameter_estimated"].tolist() == [False] and counts["scale"].tolist() == [1.0]
    expected = segment(iio.imread(sample_png), unsized_weights)
    np.testing.assert_array_equal(tifffile.imread(out / "sample_labels.tif"), expected.labels)


def test_auto_estimates_the_diameter_for_a_model_that_records_one(capsys, sample_png, tmp_path, sized_weights):
    from napari_nucleiseg.scale import scale_factor

    out = tmp_path / "out"
    status, _, stderr = run(capsys, sample_png, "--out", out, "--weights", sized_weights, "--diameter", "auto")
    assert status == 0, stderr
    counts = pd.read_csv(out / "counts.csv")
    assert counts["diameter_estimated"].tolist() == [True]
    row = counts.iloc[0]
    assert 0 < row["diameter_px"] < 256
    assert row["scale"] == pytest.approx(scale_factor(row["diameter_px"], TRAINED_DIAMETER))
    assert row["scale"] != 1.0  # the image was resized for the network ...
    labels = tifffile.imread(out / "sample_labels.tif")
    assert labels.shape == (256, 256)  # ... and its labels came back at full resolution
    assert row["nuclei"] == labels.max() > 0
    expected = segment(iio.imread(sample_png), sized_weights)  # the same as the Python API
    assert (expected.diameter, expected.scale) == pytest.approx((row["diameter_px"], row["scale"]))
    np.testing.assert_array_equal(labels, expected.labels)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "big"])
def test_a_bad_diameter_is_a_usage_error_before_any_work(capsys, tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    iio.imwrite(tmp_path / "x.png", blob_image())
    status, stdout, stderr = run(capsys, "x.png", "--out", "o", "--diameter", value)
    assert status == 2
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--diameter" in errors[0] and value in errors[0]
    assert "Traceback" not in stderr and not stdout
    assert [path.name for path in tmp_path.iterdir()] == ["x.png"]


def test_an_image_smaller_than_the_diameter_is_skipped(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    # a.png is 96 x 128 pixels, b.tif 80 x 72: a diameter of 100 fits only in a.png.
    status, stdout, stderr = run(capsys, folder, "--out", out, "--weights", tiny_weights["unet"], "--diameter", "100")
    assert status == EXIT_PARTIAL
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and sum("broken.png" in line for line in lines) == 1
    (refused,) = [line for line in lines if "b.tif" in line]
    assert "diameter of 100 pixels is larger than the image (80 x 72 pixels)" in refused
    assert "Segmented 1 of 3 images" in stdout
    counts = pd.read_csv(out / "counts.csv")
    assert counts["file"].str.endswith("a.png").tolist() == [True] and counts["diameter_px"].tolist() == [100.0]
    assert not (out / "b_labels.tif").exists()


def test_overwrite_that_cannot_move_an_old_output_aside_changes_nothing(capsys, folder, tmp_path, tiny_weights,
                                                                        monkeypatch):
    # A file held open elsewhere (counts.csv in a spreadsheet on Windows) or locked cannot be moved.
    from napari_nucleiseg import _batch

    out = tmp_path / "out"
    arguments = [folder, "--out", out, "--weights", tiny_weights["unet"]]
    assert run(capsys, *arguments)[0] == EXIT_PARTIAL
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    replace = os.replace

    def locked(source, target):
        if Path(source).name == "a_labels.tif":
            raise PermissionError(1, "Operation not permitted")
        return replace(source, target)

    monkeypatch.setattr(_batch.os, "replace", locked)
    status, _, stderr = run(capsys, *arguments, "--threshold", "0.1", "--overwrite")
    assert status == 1 and "Traceback" not in stderr
    assert "cannot move" in stderr and "a_labels.tif" in stderr and "no file was changed" in stderr
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before  # the tables moved first are back


def test_overwrite_keeps_the_old_output_of_an_image_that_fails_this_time(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    arguments = [folder, "--out", out, "--weights", tiny_weights["unet"]]
    assert run(capsys, *arguments)[0] == EXIT_PARTIAL
    old_b = (out / "b_labels.tif").read_bytes()
    (folder / "b.tif").write_bytes(b"II*\x00" + b"\x00" * 20)  # b cannot be read any more

    status, _, stderr = run(capsys, *arguments, "--overwrite")
    assert status == EXIT_PARTIAL
    assert not (out / "b_labels.tif").exists()  # no row of the new tables would describe it
    (aside,) = out.glob("replaced-*")
    # the replaced ones are gone; the earlier tables, which hold b's row, are kept with its labels
    assert sorted(path.name for path in aside.iterdir()) == ["b_labels.tif", "counts.csv", "nuclei.csv"]
    assert (aside / "b_labels.tif").read_bytes() == old_b
    assert f"the earlier tables hold rows the new ones do not; they are kept in {aside}." in stderr
    assert f"the earlier outputs of the images not segmented this time are kept in {aside} (b_labels.tif)" in stderr


def test_overwrite_that_segments_nothing_leaves_the_old_outputs_in_place(capsys, folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    arguments = [folder, "--out", out, "--weights", tiny_weights["unet"]]
    assert run(capsys, *arguments)[0] == EXIT_PARTIAL
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}

    status, _, stderr = run(capsys, *arguments, "--overwrite", "--diameter", "5000")  # larger than every image
    assert status == 1
    assert "the earlier outputs are left as they were" in stderr
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


def test_nuclei_that_cannot_be_brought_to_the_models_size_are_said_so(capsys, sample_png, tmp_path, sized_weights):
    out = tmp_path / "out"
    status, _, stderr = run(capsys, sample_png, "--out", out, "--weights", sized_weights, "--diameter", "250")
    assert status == 0, stderr
    assert f"nucleiseg: note: {sample_png}: Nuclei reached 31.2 px, not the 18 px the model works best at" in stderr
    assert "shrunk 8.00x, the most an image is shrunk" in stderr
    status, _, stderr = run(capsys, sample_png, "--out", tmp_path / "fits", "--weights", sized_weights,
                            "--diameter", "12")
    assert status == 0 and "note" not in stderr  # brought to 18 px: nothing to say


def test_the_output_folder_may_not_be_the_folder_of_the_images(capsys, folder, tiny_weights):
    status, _, stderr = run(capsys, folder, "--out", folder, "--weights", tiny_weights["unet"])
    assert status == 2 and "is the folder of the images" in stderr
    assert f"--out {folder / 'nuclei-results'}" in stderr
    assert not list(folder.glob("*_labels.tif")) and not (folder / "counts.csv").exists()
    status, _, stderr = run(capsys, folder / "a.png", folder / "b.tif", "--out", folder, "--weights",
                            tiny_weights["unet"])  # as a shell glob gives them
    assert status == 2 and "is the folder of the images" in stderr
    status, _, stderr = run(capsys, folder, "--out", "", "--weights", tiny_weights["unet"])
    assert status == 2 and "give a folder" in stderr


def test_a_bundled_model_may_be_named_by_its_title(capsys, folder, tmp_path):
    status, _, stderr = run(capsys, folder / "a.png", "--out", tmp_path / "out", "--model", "UNet++")
    assert status == 0, stderr
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["model"].tolist() == ["unetpp"]


def test_an_ome_tiff_gives_labels_named_after_the_image(capsys, folder, tmp_path, tiny_weights):
    ome = tmp_path / "cells.ome.tif"
    shutil.copy(folder / "b.tif", ome)
    status, _, stderr = run(capsys, ome, "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    assert status == 0, stderr
    assert [path.name for path in (tmp_path / "out").glob("*_labels.tif")] == ["cells_labels.tif"]


def test_a_run_logged_to_a_file_says_now_and_then_how_far_it_is(capsys, folder, tmp_path, tiny_weights, monkeypatch):
    from napari_nucleiseg import cli

    (folder / "broken.png").unlink()
    iio.imwrite(folder / "c.png", blob_image((64, 64)))
    monkeypatch.setattr(cli, "PROGRESS_LINE_SECONDS", 0.0)  # a line after each image but the last
    status, _, stderr = run(capsys, folder, "--out", tmp_path / "out", "--weights", tiny_weights["hrnet"])
    assert status == 0
    lines = stderr.strip().splitlines()
    assert [line.split(" images done")[0] for line in lines] == ["nucleiseg: 1 of 3", "nucleiseg: 2 of 3"]
    assert all(line.endswith(" left.") and "about" in line for line in lines)


def test_a_tiff_s_pixel_size_gives_lengths_in_micrometres_and_its_labels_keep_it(capsys, tmp_path, tiny_weights):
    """QA: nuclei.csv had pixels only, whatever the file recorded, and the label TIFFs lost the calibration."""
    folder = tmp_path / "calibrated"
    folder.mkdir()
    image = blob_image((96, 128))
    tifffile.imwrite(folder / "imagej.tif", image, imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                     metadata={"unit": "um"})
    tifffile.imwrite(folder / "cells.ome.tif", image, metadata={
        "axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    tifffile.imwrite(folder / "scanned.tif", image, resolution=(72, 72), resolutionunit="INCH")  # no microscope's
    out = tmp_path / "out"
    status, _, stderr = run(capsys, folder, "--out", out, "--weights", tiny_weights["hrnet"])
    assert status == 0 and stderr == ""
    nuclei = pd.read_csv(out / "nuclei.csv")
    nuclei["name"] = nuclei["file"].map(lambda name: Path(name).name)
    for name, size in (("imagej.tif", 0.325), ("cells.ome.tif", 0.5)):
        rows = nuclei[nuclei["name"] == name]
        assert len(rows) > 0
        np.testing.assert_allclose(rows["area_um2"], rows["area"] * size**2)
        np.testing.assert_allclose(rows["equivalent_diameter_um"], rows["equivalent_diameter"] * size)
        np.testing.assert_allclose(rows["centroid_x_um"], rows["centroid_x"] * size)
    assert nuclei.loc[nuclei["name"] == "scanned.tif", "area_um2"].isna().all()
    with tifffile.TiffFile(out / "imagej_labels.tif") as tiff:
        numerator, denominator = tiff.pages.first.tags["XResolution"].value
        assert tiff.pages.first.tags["ResolutionUnit"].value == 3  # centimetres
        assert 1e4 * denominator / numerator == pytest.approx(0.325, rel=1e-4)


def test_a_z_stack_s_labels_keep_its_plane_spacing(capsys, tmp_path, tiny_weights):
    """QA: the label TIFF of a Z stack from Fiji kept the pixel size but lost the spacing of its planes, so the
    nuclei opened beside their image in 3-D came out flattened."""
    stack = np.stack([blob_image((64, 80))] * 3)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    out = tmp_path / "out"
    status, _, stderr = run(capsys, tmp_path / "stack.tif", "--out", out, "--weights", tiny_weights["hrnet"],
                            "--save-probability")
    assert status == 0, stderr
    for name in ("stack_labels.tif", "stack_probability.tif"):
        with tifffile.TiffFile(out / name) as tiff:
            assert tiff.series[0].axes.startswith("Z") and tiff.is_imagej  # (a hyperstack: Fiji opens it calibrated)
            recorded = tiff_pixel_size(tiff)
            assert (recorded.y, recorded.x, recorded.z) == pytest.approx((0.25, 0.25, 1.5))
    assert tifffile.imread(out / "stack_labels.tif").shape == stack.shape
    # 32-bit labels (more than 65,535 nuclei), which ImageJ's format cannot hold: OME-TIFF, the spacing kept
    many = np.arange(3 * 64 * 80, dtype=np.uint32).reshape(3, 64, 80)
    pixel = tiff_pixel_size(tifffile.TiffFile(tmp_path / "stack.tif"))
    tifffile.imwrite(tmp_path / "many.tif", many, **_tiff_calibration(pixel, "Z", "ZYX", many.dtype))
    with tifffile.TiffFile(tmp_path / "many.tif") as tiff:
        recorded = tiff_pixel_size(tiff)
        assert tiff.is_ome and (recorded.y, recorded.x, recorded.z) == pytest.approx((0.25, 0.25, 1.5))
        assert np.array_equal(tiff.asarray(), many)
    assert "ome" not in _tiff_calibration(pixel, "QQZ", "QQZYX", np.uint32)  # (OME takes one Q: the spacing is lost)


def test_an_image_auto_cannot_size_says_so_and_what_to_do(capsys, tmp_path):
    """QA: a field of noise (and a noisy one whose nuclei were plain to see) was judged empty, segmented at its own
    scale, and the log said nothing."""
    noise = tmp_path / "noise.tif"
    tifffile.imwrite(noise, np.random.default_rng(0).poisson(5, (200, 200)).astype(np.uint16))
    status, _, stderr = run(capsys, noise, "--out", tmp_path / "out")
    assert status == 0 and stderr.strip().splitlines() == [
        f"nucleiseg: note: {noise}: no nucleus size could be estimated (it looks empty, or too noisy to size), so it "
        "was segmented at its own scale; if it holds nuclei, give their diameter with --diameter PX."]
    status, _, stderr = run(capsys, noise, "--out", tmp_path / "given", "--diameter", "12")
    assert status == 0 and stderr == ""


def test_a_picture_with_transparent_pixels_says_nothing_is_found_there(capsys, tmp_path):
    """QA: an H&E section with its left half transparent (alpha 0) had as many nuclei found there as in the rest,
    without a word."""
    from napari_nucleiseg._sample_data import read_sample

    tissue = read_sample("tissue")
    rgba = np.dstack([tissue, np.full(tissue.shape[:2], 255, np.uint8)])
    rgba[:, : tissue.shape[1] // 2, 3] = 0
    iio.imwrite(tmp_path / "half.png", rgba)
    status, _, stderr = run(capsys, tmp_path / "half.png", "--out", tmp_path / "out", "--diameter", "16")
    assert status == 0
    assert (f"nucleiseg: note: {tmp_path / 'half.png'}: Its transparent pixels (alpha 0, 50% of it) are left out: "
            "nothing is found there.") in stderr.splitlines()
    labels = tifffile.imread(tmp_path / "out" / "half_labels.tif")
    assert not labels[:, : tissue.shape[1] // 2].any() and labels.max() > 15
    # One colour of it (--channel): nothing there either (review: 23 nuclei where the picture gives 13).
    status, _, stderr = run(capsys, tmp_path / "half.png", "--out", tmp_path / "blue", "--diameter", "16",
                            "--channel", "2")
    assert status == 0, stderr
    assert not tifffile.imread(tmp_path / "blue" / "half_labels.tif")[:, : tissue.shape[1] // 2].any()


def test_an_overlay_of_fluorescence_channels_says_it_was_read_as_blue(capsys, tmp_path, tiny_weights):
    """QA: DAPI in blue beside a marker in red was segmented as a colour picture, silently; it is read as its
    blue channel now, and the run says so and how to choose another."""
    from napari_nucleiseg._sample_data import read_sample

    from test_inference import marker_overlay

    folder = tmp_path / "in"
    folder.mkdir()
    dapi = read_sample("fluorescence")
    iio.imwrite(folder / "composite.png", marker_overlay(dapi))
    iio.imwrite(folder / "dapi.png", dapi)
    iio.imwrite(folder / "green.png", marker_overlay(dapi)[..., [0, 2, 1]])  # nuclei in green: no blue
    status, _, stderr = run(capsys, folder, "--out", tmp_path / "out", "--weights", tiny_weights["hrnet"])
    assert status == 0
    blue, green = stderr.strip().splitlines()
    assert blue.startswith(f"nucleiseg: note: {folder / 'composite.png'}: Read as its blue channel")
    assert green.startswith(f"nucleiseg: note: {folder / 'green.png'}: It looks like an overlay")
    assert all(line.endswith("run it with --channel 0 (red) or --channel 1 (green).") for line in (blue, green))
    # The table gives each colour's mean: the nuclear stain's (blue: the DAPI's intensity) and the marker's.
    nuclei = pd.read_csv(tmp_path / "out" / "nuclei.csv")
    composite, alone = (nuclei[nuclei["file"].str.endswith(name)].set_index("label") for name in ("composite.png",
                                                                                                   "dapi.png"))
    assert alone[["mean_red", "mean_green", "mean_blue"]].isna().all().all()  # a gray image: empty
    np.testing.assert_allclose(composite["mean_blue"], alone["mean_intensity"])  # the same nuclei, same stain
    assert (composite["mean_red"] > 0).mean() > 0.5 and (composite["mean_green"] == 0).all()
    status, _, stderr = run(capsys, folder / "composite.png", "--out", tmp_path / "red", "--channel", "0",
                            "--weights", tiny_weights["hrnet"])
    assert status == 0 and stderr == ""  # a channel chosen: no note


def test_one_channel_shown_through_a_colour_map_says_how_it_was_read(capsys, tmp_path, tiny_weights):
    """QA: DAPI saved through viridis was segmented as a colour picture (45 of 108 nuclei), silently."""
    from napari_nucleiseg._sample_data import read_sample

    from test_inference import through_colour_map

    image = tmp_path / "dapi viridis.png"
    iio.imwrite(image, through_colour_map(read_sample("fluorescence"), "viridis"))
    status, _, stderr = run(capsys, image, "--out", tmp_path / "out", "--weights", tiny_weights["hrnet"])
    assert status == 0
    assert stderr.startswith(f"nucleiseg: note: {image}: Read as one channel shown through a colour map")


def test_an_earlier_probability_file_is_replaced_with_its_labels_never_left_stale(capsys, folder, tmp_path,
                                                                                  tiny_weights):
    """QA: HRNet's probability file stayed beside the UNet labels of an --overwrite run without
    --save-probability, and a later --resume --save-probability took it as its own ('Nothing left to segment')."""
    out = tmp_path / "out"
    first = [folder / "a.png", "--out", out, "--weights", tiny_weights["hrnet"], "--save-probability"]
    assert run(capsys, *first)[0] == 0 and (out / "a_probability.tif").is_file()
    other = [folder / "a.png", "--out", out, "--weights", tiny_weights["unet"]]
    assert run(capsys, *other, "--overwrite")[0] == 0
    assert not (out / "a_probability.tif").exists() and not list(out.glob("replaced-*"))  # replaced, like its labels
    status, stdout, _ = run(capsys, *other, "--resume", "--save-probability")
    assert status == 0 and stdout.startswith("Segmented 1 of 1 images") and (out / "a_probability.tif").is_file()
    written = (out / "a_probability.tif").read_bytes()
    assert run(capsys, *other, "--resume", "--save-probability")[1].startswith("Nothing left to segment")
    assert (out / "a_probability.tif").read_bytes() == written


def test_earlier_tables_the_new_ones_do_not_cover_are_kept_aside(capsys, folder, tmp_path, tiny_weights):
    """QA: a counts.csv saved from a spreadsheet with ';' (unreadable as ours) was deleted by --resume with the
    rows of images it was not given; so were the other images' rows by --overwrite after nuclei.csv was deleted."""
    out = tmp_path / "out"
    weights = ["--weights", tiny_weights["unet"]]
    assert run(capsys, folder / "a.png", "--out", out, *weights)[0] == 0
    edited = (out / "counts.csv").read_text().replace(",", ";")
    (out / "counts.csv").write_text(edited)
    status, _, stderr = run(capsys, folder / "b.tif", "--out", out, *weights, "--resume")
    assert status == 0
    (aside,) = out.glob("replaced-*")
    assert (aside / "counts.csv").read_text() == edited and f"they are kept in {aside}" in stderr
    assert pd.read_csv(out / "counts.csv")["labels_file"].tolist() == ["b_labels.tif"]
    shutil.rmtree(aside)

    assert run(capsys, folder, "--out", out, *weights, "--overwrite")[0] == EXIT_PARTIAL
    before = (out / "counts.csv").read_text()
    (out / "nuclei.csv").unlink()
    status, _, stderr = run(capsys, folder / "b.tif", "--out", out, *weights, "--overwrite")
    assert status == 0
    (aside,) = out.glob("replaced-*")
    assert (aside / "counts.csv").read_text() == before and f"they are kept in {aside}" in stderr


def test_an_overwrite_that_segments_nothing_keeps_the_records_resume_needs(capsys, folder, tmp_path, tiny_weights):
    """QA: it deleted the records of the finished images while putting their files back, so a later --resume
    segmented them again and set the hand-corrected labels aside, 'their file or the settings changed'."""
    out = tmp_path / "out"
    arguments = [folder / "a.png", folder / "b.tif", "--out", out, "--weights", tiny_weights["unet"]]
    assert run(capsys, *arguments)[0] == 0
    labels = tifffile.imread(out / "a_labels.tif")
    labels[labels == labels.max()] = 0  # corrected by hand
    tifffile.imwrite(out / "a_labels.tif", labels)
    status, _, stderr = run(capsys, *arguments, "--overwrite", "--diameter", "5000")  # larger than every image
    assert status == 1 and "the earlier outputs are left as they were" in stderr
    status, stdout, stderr = run(capsys, *arguments, "--resume")
    assert status == 0 and stdout.startswith("Nothing left to segment") and not list(out.glob("replaced-*"))
    assert "a_labels.tif was changed since it was segmented: measured again" in stderr
    assert np.array_equal(tifffile.imread(out / "a_labels.tif"), labels)


def test_overwrite_of_one_image_measures_the_others_corrected_labels_again(capsys, folder, tmp_path, tiny_weights):
    """QA: --overwrite of one image copied the other's row (35 nuclei) beside its label file, corrected by hand
    since, holding 32."""
    out = tmp_path / "out"
    weights = ["--weights", tiny_weights["unet"]]
    assert run(capsys, folder / "a.png", folder / "b.tif", "--out", out, *weights)[0] == 0
    labels = tifffile.imread(out / "a_labels.tif")
    labels[labels == labels.max()] = 0  # corrected by hand
    tifffile.imwrite(out / "a_labels.tif", labels)
    status, _, stderr = run(capsys, folder / "b.tif", "--out", out, *weights, "--overwrite", "--threshold", "0.1")
    assert status == 0 and "a_labels.tif was changed since it was segmented: measured again" in stderr
    counts = pd.read_csv(out / "counts.csv").set_index("labels_file")
    assert counts.loc["a_labels.tif", "nuclei"] == len(np.unique(labels[labels > 0]))
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert (nuclei["file"] == counts.loc["a_labels.tif", "file"]).sum() == counts.loc["a_labels.tif", "nuclei"]
    # recorded with a's own settings, measured once: its record says so, not the --overwrite run's threshold
    import json

    record = json.loads((out / ".nucleiseg" / "done" / "a_labels.json").read_text())
    assert record["settings"]["threshold"] is None and record["row"]["nuclei"] == counts.loc["a_labels.tif", "nuclei"]
