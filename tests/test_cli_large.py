"""The command line on images larger than memory: a large TIFF or an OME-Zarr is segmented block by block
into <name>_labels.ome.zarr, with its rows in counts.csv and nuclei.csv, never half-written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

import napari_nucleiseg.large
from napari_nucleiseg.large import segment_large

from conftest import blob_image
from test_bad_input import cli_pixel_model, pixel_model, run_cli  # noqa: F401 (fixtures)
from test_lazy_io import write_ome_zarr

#: 1200 x 1200 px, 144 nuclei: "large" once the limit is lowered to 1 MPx.
BIG = np.tile(blob_image((100, 100), centers=((50, 50),), radius=12), (12, 12))


@pytest.fixture
def large_from_1_mpx(monkeypatch):
    monkeypatch.setattr(napari_nucleiseg.large, "LARGE_IMAGE_PIXELS", 1_000_000)


def test_a_large_tiff_is_segmented_block_by_block_into_an_ome_zarr(capsys, tmp_path, cli_pixel_model,
                                                                    large_from_1_mpx):
    tifffile.imwrite(tmp_path / "slide.tif", BIG, tile=(256, 256))
    tifffile.imwrite(tmp_path / "small.tif", BIG[:300, :300])
    status, stdout, stderr = run_cli(capsys, tmp_path, "--out", tmp_path / "out")
    assert status == 0, stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "counts.csv", "nuclei.csv", "slide_labels.ome.zarr", "small_labels.tif"]
    labels = zarr.open_group(str(out / "slide_labels.ome.zarr"), mode="r")["0"][:]
    expected = segment_large(BIG, pixel_model(), tmp_path / "api.zarr")
    assert np.array_equal(labels, expected.labels[:]) and expected.count == 144
    counts = pd.read_csv(out / "counts.csv").set_index("labels_file")
    assert counts.loc["slide_labels.ome.zarr", "nuclei"] == 144
    assert (counts.loc["slide_labels.ome.zarr", "height"], counts.loc["slide_labels.ome.zarr", "width"]) == BIG.shape
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert (nuclei["file"] == str(tmp_path / "slide.tif")).sum() == 144
    assert list(nuclei.columns[:2]) == ["file", "label"]  # (QA: an 'index' column beside 'label', for the slide only)


def test_an_ome_zarr_is_an_input_and_a_rerun_needs_overwrite(capsys, tmp_path, cli_pixel_model):
    write_ome_zarr(tmp_path / "plate.ome.zarr", [BIG[None], BIG[None, ::2, ::2]], "cyx")
    status, _, stderr = run_cli(capsys, tmp_path / "plate.ome.zarr", "--out", tmp_path / "out")
    assert status == 0, stderr
    written = tmp_path / "out" / "plate_labels.ome.zarr"
    assert zarr.open_group(str(written), mode="r")["0"].shape == BIG.shape
    status, _, stderr = run_cli(capsys, tmp_path / "plate.ome.zarr", "--out", tmp_path / "out")
    assert status == 1 and "plate_labels.ome.zarr" in stderr and "--overwrite" in stderr
    status, _, _ = run_cli(capsys, tmp_path / "plate.ome.zarr", "--out", tmp_path / "out", "--overwrite")
    assert status == 0 and written.is_dir() and not list((tmp_path / "out").glob("replaced-*"))


def test_resume_keeps_an_ome_zarr_done_and_segments_it_again_once_changed(capsys, tmp_path, tiny_weights):
    """Review: once every run recorded what it finished, an OME-Zarr input (a folder) could not be fingerprinted
    (IsADirectoryError: 'no image could be segmented'), as with --resume before."""
    store = tmp_path / "plate.ome.zarr"
    write_ome_zarr(store, [BIG[None, :400, :400]], "cyx")
    command = (store, "--out", tmp_path / "out", "--weights", tiny_weights["unet"])
    status, _, stderr = run_cli(capsys, *command)
    assert status == 0, stderr
    status, stdout, stderr = run_cli(capsys, *command, "--resume")
    assert status == 0 and stdout.startswith("Nothing left to segment") and stderr == ""
    chunk = next(path for path in sorted(store.rglob("*")) if path.is_file() and path.name[0].isdigit())
    chunk.write_bytes(chunk.read_bytes())  # written again: the store counts as changed
    status, stdout, _ = run_cli(capsys, *command, "--resume")
    assert status == 0 and stdout.startswith("Segmented 1 of 1 images")


def test_overwrite_of_one_image_keeps_the_rows_of_a_large_image_a_stack_and_a_name_a_formula_would_start(
        capsys, tmp_path, cli_pixel_model):
    """Review of --overwrite keeping the other images' rows: an OME-Zarr's labels (a folder), a name starting with
    '-' (written after a quote) lost their rows; whole numbers read back beside a stack's empty cells came out
    as 314.0; a run stopped before its first image left no tables."""
    import imageio.v3 as iio

    folder = tmp_path / "in"
    folder.mkdir()
    write_ome_zarr(folder / "plate.ome.zarr", [BIG[None]], "cyx")
    tifffile.imwrite(folder / "stack.tif", np.stack([BIG[:300, :300]] * 3), imagej=True, metadata={"axes": "ZYX"})
    iio.imwrite(folder / "-ctrl.png", BIG[:200, :200])
    iio.imwrite(folder / "b.png", BIG[:200, :300])
    out = tmp_path / "out"
    assert run_cli(capsys, *(folder / name for name in ("plate.ome.zarr", "stack.tif", "-ctrl.png", "b.png")),
                   "--out", out)[0] == 0
    before = (out / "nuclei.csv").read_text().splitlines()
    counts_before = (out / "counts.csv").read_text().splitlines()

    status, _, stderr = run_cli(capsys, folder / "b.png", "--out", out, "--overwrite")
    assert status == 0 and "keep the rows of 3 earlier images" in stderr
    # The other images' lines exactly as they were, b's (the same settings) too: no 314.0 for 314.
    assert (out / "nuclei.csv").read_text().splitlines() == before
    assert (out / "counts.csv").read_text().splitlines() == counts_before

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    import napari_nucleiseg.cli as cli

    original = cli._outcomes
    try:
        cli._outcomes = stop  # stopped before b is done: the others' rows are still written
        status, _, stderr = run_cli(capsys, folder / "b.png", "--out", out, "--overwrite")
    finally:
        cli._outcomes = original
    assert status == 130
    kept = pd.read_csv(out / "counts.csv")
    assert sorted(kept["labels_file"]) == ["'-ctrl_labels.tif", "plate_labels.ome.zarr", "stack_labels.tif"]


def test_a_stopped_run_leaves_no_half_written_labels(capsys, tmp_path, monkeypatch, large_from_1_mpx):
    model = pixel_model(interrupt_on_call=3)  # Ctrl+C in the third block
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: model)
    tifffile.imwrite(tmp_path / "slide.tif", BIG, tile=(256, 256))
    monkeypatch.setattr(napari_nucleiseg.large, "BLOCK_SIDE", 512)
    status, _, _ = run_cli(capsys, tmp_path / "slide.tif", "--out", tmp_path / "out")
    assert status == 130
    assert list((tmp_path / "out").iterdir()) == []  # no labels, no partial folder, no tables


def test_augment_reaches_a_large_image_and_is_recorded(capsys, tmp_path, cli_pixel_model, large_from_1_mpx):
    tifffile.imwrite(tmp_path / "slide.tif", BIG, tile=(256, 256))
    status, _, stderr = run_cli(capsys, tmp_path / "slide.tif", "--out", tmp_path / "out", "--augment")
    assert status == 0, stderr
    row = pd.read_csv(tmp_path / "out" / "counts.csv").loc[0]
    assert row["labels_file"] == "slide_labels.ome.zarr" and row["nuclei"] == 144
    assert bool(row["augmented"]) is True


def test_a_large_image_s_pixel_size_gives_micrometres_and_its_labels_keep_it(capsys, tmp_path, cli_pixel_model,
                                                                             large_from_1_mpx):
    """QA: block-by-block images (slides, where micrometres matter most) got pixels only in nuclei.csv,
    and their OME-Zarr labels no calibration, where a small TIFF's got both."""
    import zarr

    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "slide.tif", BIG, tile=(256, 256), resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")
    write_ome_zarr(folder / "plate.ome.zarr", [BIG[None]], "cyx")
    group = zarr.open_group(str(folder / "plate.ome.zarr"), mode="r+")
    group.attrs["multiscales"] = [{**group.attrs["multiscales"][0],
                                   "axes": [{"name": "c", "type": "channel"},
                                            {"name": "y", "type": "space", "unit": "nanometer"},
                                            {"name": "x", "type": "space", "unit": "nanometer"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [1.0, 2.0, 2.0]},
                                       {"type": "translation", "translation": [0.0, 4.0, 8.0]}]}],
                                   "coordinateTransformations": [{"type": "scale", "scale": [1.0, 325.0, 325.0]}]}]
    tifffile.imwrite(folder / "scan.tif", BIG, tile=(256, 256), resolution=(72, 72), resolutionunit="INCH")
    out = tmp_path / "out"
    status, _, stderr = run_cli(capsys, folder / "slide.tif", folder / "plate.ome.zarr", folder / "scan.tif",
                                "--out", out)
    assert status == 0, stderr
    nuclei = pd.read_csv(out / "nuclei.csv")
    # the OME-Zarr: 2 x 325 nm a pixel, pixel (0, 0) at (4, 8) x 325 nm = (1.3, 2.6) um
    for name, size, (y0, x0) in (("slide.tif", 0.25, (0, 0)), ("plate.ome.zarr", 0.65, (1.3, 2.6))):
        rows = nuclei[nuclei["file"].str.endswith(name)]
        assert len(rows) == 144
        np.testing.assert_allclose(rows["area_um2"], rows["area"] * size**2)
        np.testing.assert_allclose(rows["centroid_x_um"], x0 + rows["centroid_x"] * size)
        np.testing.assert_allclose(rows["centroid_y_um"], y0 + rows["centroid_y"] * size)
        np.testing.assert_allclose(rows["equivalent_diameter_um"], rows["equivalent_diameter"] * size)
        written = zarr.open_group(str(out / f"{name.split('.')[0]}_labels.ome.zarr"), mode="r").attrs["multiscales"][0]
        assert [axis["unit"] for axis in written["axes"]] == ["micrometer"] * 2
        scales = [d["coordinateTransformations"][0]["scale"] for d in written["datasets"]]
        np.testing.assert_allclose(scales[0], [size, size])
        np.testing.assert_allclose(scales[1], [2 * size, 2 * size])
        shifts = [t["translation"] for d in written["datasets"] for t in d["coordinateTransformations"]
                  if t["type"] == "translation"]
        assert shifts == ([[y0, x0]] * len(scales) if x0 else [])
    assert nuclei.loc[nuclei["file"].str.endswith("scan.tif"), "area_um2"].isna().all()  # 72 dpi: no microscope's
    scan = zarr.open_group(str(out / "scan_labels.ome.zarr"), mode="r").attrs["multiscales"][0]
    assert "unit" not in scan["axes"][0]


def test_a_large_rgb_overlay_is_read_as_blue_with_a_note_and_channel_picks_a_colour(capsys, tmp_path,
                                                                                  cli_pixel_model, large_from_1_mpx):
    """Review: --channel was ignored for a large RGB TIFF (any number accepted), and a large overlay of
    fluorescence channels was read as its blue channel without the note small images get."""
    overlay = np.zeros((*BIG.shape, 3), dtype=np.uint8)
    overlay[..., 2] = BIG  # nuclei in blue, a marker elsewhere in red
    overlay[..., 0] = np.roll(BIG, (50, 50), axis=(0, 1)) // 2
    tifffile.imwrite(tmp_path / "overlay.tif", overlay, tile=(256, 256), photometric="rgb")
    status, _, stderr = run_cli(capsys, tmp_path / "overlay.tif", "--out", tmp_path / "out")
    assert status == 0 and "note:" in stderr and "Read as its blue channel" in stderr
    assert pd.read_csv(tmp_path / "out" / "counts.csv").loc[0, "nuclei"] == 144
    status, _, stderr = run_cli(capsys, tmp_path / "overlay.tif", "--out", tmp_path / "red", "--channel", "0")
    assert status == 0 and stderr == ""
    red = zarr.open_group(str(tmp_path / "red" / "overlay_labels.ome.zarr"), mode="r")["0"][:]
    assert red[50 + 50, 50 + 50] > 0 and red[50, 50] == 0  # the red marker's blobs, not the blue nuclei
    status, _, stderr = run_cli(capsys, tmp_path / "overlay.tif", "--out", tmp_path / "bad", "--channel", "5")
    assert status == 1 and "Channel 5 does not exist" in stderr


def test_a_large_image_says_now_and_then_how_many_of_its_blocks_are_done(capsys, tmp_path, cli_pixel_model,
                                                                         large_from_1_mpx, monkeypatch):
    """QA: an 8192 x 8192 mosaic ran 9.5 minutes without a line: progress was counted per image only."""
    from napari_nucleiseg import cli

    monkeypatch.setattr(napari_nucleiseg.large, "BLOCK_SIDE", 512)
    monkeypatch.setattr(cli, "PROGRESS_LINE_SECONDS", 0.0)  # a line after each block but the last
    tifffile.imwrite(tmp_path / "slide.tif", BIG, tile=(256, 256))
    status, _, stderr = run_cli(capsys, tmp_path, "--out", tmp_path / "out")
    assert status == 0, stderr
    lines = [line for line in stderr.splitlines() if "blocks" in line]
    assert lines and all(line.startswith("nucleiseg: slide.tif: ") and " left" in line for line in lines)
    done = [int(line.split(": ")[2].split(" of ")[0]) for line in lines]
    total = int(lines[0].split(" of ")[1].split()[0])
    assert done == list(range(1, total)) and total >= 2
