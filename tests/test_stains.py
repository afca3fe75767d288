"""Brown nuclei: immunohistochemistry's brown (DAB) read as hematoxylin when the user says the marker is nuclear.

No IHC images with nucleus labels are at hand: the bundled H&E sample is restained as a Ki-67 section
(training.data.restain_as_ihc), half of its nuclei brown; its nuclei are those HRNet finds in the H&E
picture. The option is off by default (it would read the brown rings of a membrane marker as nuclei).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from imageio import v3 as iio

from napari_nucleiseg import segment
from napari_nucleiseg._sample_data import read_sample
from napari_nucleiseg.cli import main
from napari_nucleiseg.stains import BROWN_MIN_EXCESS, brown_as_hematoxylin, brown_note, brown_share, stain_white
from training.data import restain_as_ihc
from training.ihc_check import found_share

from conftest import blob_image


@pytest.fixture(scope="module")
def section():
    """``(section, truth, brown, blue)``: the tissue sample (256 x 320) restained as a Ki-67 section."""
    tissue = read_sample("tissue")[..., :3]
    truth = segment(tissue, model="hrnet").labels
    nuclei = np.unique(truth[truth > 0])
    brown, blue = nuclei[nuclei % 2 == 0], nuclei[nuclei % 2 == 1]
    return restain_as_ihc(tissue, np.isin(truth, brown)), truth, brown, blue


def test_brown_nuclei_are_found_with_the_option_and_mostly_missed_without(section):
    image, truth, brown, blue = section
    off = segment(image, model="hrnet")
    on = segment(image, model="hrnet", brown_nuclei=True)
    assert not off.brown_nuclei and on.brown_nuclei
    assert found_share(off.labels, truth, brown) < 0.5  # measured 0.21 (of 52)
    assert found_share(on.labels, truth, brown) >= 0.75  # 0.87
    assert found_share(on.labels, truth, brown) >= found_share(on.labels, truth, blue) - 0.05  # as blue ones are


def test_brown_nuclei_changes_nothing_where_there_is_no_brown():
    """H&E, gray fluorescence and a fluorescence overlay are read as they are with the option on."""
    tissue = read_sample("tissue")[:256, :256]
    fluorescence = read_sample("fluorescence")
    for image in (tissue, fluorescence, np.stack([fluorescence // 4, fluorescence, fluorescence // 2], axis=-1)):
        off, on = segment(image, model="unet"), segment(image, model="unet", brown_nuclei=True)
        np.testing.assert_array_equal(on.labels, off.labels)
        np.testing.assert_array_equal(on.probabilities, off.probabilities)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_brown_nuclei_is_one_sentence(value):
    with pytest.raises(ValueError, match=r"^brown_nuclei must be True or False, not .*$"):
        segment(blob_image(), "unet", brown_nuclei=value)


def test_only_brown_is_recoloured_and_only_in_brightfield():
    white = (240.0, 235.0, 230.0)  # a lamp a little warm
    purple, pink, glass, brown = (90, 60, 150), (230, 140, 200), white, (150, 95, 50)
    pixels = np.array([[purple, pink, glass, brown]], dtype=np.uint8)
    out = brown_as_hematoxylin(pixels, white)
    assert np.array_equal(out[0, :3], pixels[0, :3].astype(np.float32))  # H&E and the glass keep their values
    density = -np.log(out[0, 3] / np.array(white))
    assert density[2] - density[1] <= BROWN_MIN_EXCESS < -np.diff(np.log(pixels[0, 3, 1:] / np.array(white[1:])))[0]
    assert out[0, 3].sum() < pixels[0, 3].astype(float).sum()  # as dark: hematoxylin for DAB, not white
    assert stain_white(np.tile(pixels, (64, 16, 1))) is not None
    fluorescence = np.zeros((64, 64, 3), np.uint8)  # a dark ground: no stain in transmitted light
    fluorescence[20:30, 20:30] = (40, 200, 10)
    for image in (fluorescence, np.repeat(read_sample("fluorescence")[..., None], 3, axis=-1),
                  read_sample("tissue")[..., :3]):
        assert stain_white(image) is None and brown_share(image) == 0


def test_the_note_says_when_an_image_holds_brown_and_how_it_was_read(section):
    image = section[0]
    assert brown_share(image) > 0.05
    off, on = brown_note(image, False, "do this"), brown_note(image, True, "do this")
    assert "brown" in off and "Ki-67" in off and off.endswith("do this.")
    assert "read as hematoxylin" in on and "\n" not in on
    for other in (read_sample("tissue"), read_sample("fluorescence"), image[..., 0]):  # H&E, gray
        assert brown_note(other, False, "do this") is None


def test_colour_noise_and_colour_fringes_are_not_brown():
    """Review: a brightfield image's colour noise, and its blue 1 px off (a lens's colour fringes), had 4.8% and
    1.1% of their pixels brown, and the note said so; brown counts in areas only."""
    gray = read_sample("brightfield").astype(float)
    noisy = np.clip(gray[..., None] + np.random.default_rng(0).normal(0, 8, (*gray.shape, 3)), 0, 255)
    fringed = np.stack([gray, gray, np.roll(gray, 1, axis=1)], axis=-1)
    for image in (noisy.astype(np.uint8), fringed.astype(np.uint8)):
        assert stain_white(image) is not None  # brown pixels there are ...
        assert brown_share(image) < 0.01 and brown_note(image, False, "do this") is None  # ... but no brown areas


def test_the_note_finds_brown_areas_of_a_large_or_lazy_image_and_ignores_colours_that_are_not_finite(section):
    """Second review: the areas were looked for on the strided sample, where a nucleus of a 4096 x 5120 image is a
    pixel or two: its brown share fell from 12% to 0.7% or 0, and whole slides never got the note."""
    import dask.array as da

    slide = np.tile(section[0], (16, 16, 1))  # 4096 x 5120: sampled every 5th pixel
    assert brown_share(slide) > 0.05  # measured 0.105 (the section itself 0.118)
    assert brown_note(da.from_array(slide, chunks=(1024, 1024, 3)), False, "do this") is not None
    tissue = read_sample("tissue")[..., :3].astype(np.float32)
    tissue[::7, ::3, 1] = np.nan  # H&E with a colour missing in some pixels: no brown there
    assert stain_white(tissue) is None and brown_share(tissue) == 0


def test_an_rgb_stack_reads_brown_in_every_plane(section):
    from napari_nucleiseg.api import load_model
    from napari_nucleiseg.pipeline import run_to_end, segment_planes

    image, truth, brown, _ = section
    run = run_to_end(segment_planes(np.stack([image, image]), load_model("hrnet"), rgb=True, brown_nuclei=True))
    assert run.brown_nuclei
    for plane in run.labels:
        assert found_share(plane, truth, brown) >= 0.75


def test_the_command_line_reads_brown_with_the_option_records_it_and_says_when_it_is_off(capsys, section, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "ki67.png", section[0])
    counts = {}
    for option in ([], ["--brown-nuclei"]):
        out = tmp_path / ("on" if option else "off")
        assert main(["segment", str(folder), "--out", str(out), "--model", "hrnet", *option]) == 0
        counts[bool(option)] = pd.read_csv(out / "counts.csv").iloc[0]
        stderr = capsys.readouterr().err
        assert ("--brown-nuclei" in stderr) is not bool(option)  # the hint, only where the option is off
    assert (bool(counts[False]["brown_nuclei"]), bool(counts[True]["brown_nuclei"])) == (False, True)
    assert counts[True]["nuclei"] == segment(section[0], model="hrnet", brown_nuclei=True).count
    assert counts[True]["nuclei"] > counts[False]["nuclei"]


def test_the_command_line_reads_brown_in_a_large_image_block_by_block(capsys, monkeypatch, section, tmp_path):
    import tifffile
    import zarr

    import napari_nucleiseg.large

    monkeypatch.setattr(napari_nucleiseg.large, "LARGE_IMAGE_PIXELS", 1_000_000)
    image, truth, brown, _ = section
    tiles = (4, 4)  # 1024 x 1280 px
    tifffile.imwrite(tmp_path / "slide.tif", np.tile(image, (*tiles, 1)), tile=(256, 256))
    assert main(["segment", str(tmp_path / "slide.tif"), "--out", str(tmp_path / "out"), "--model", "hrnet",
                 "--brown-nuclei"]) == 0
    row = pd.read_csv(tmp_path / "out" / "counts.csv").iloc[0]
    assert row["labels_file"] == "slide_labels.ome.zarr" and bool(row["brown_nuclei"]) is True
    labels = zarr.open_group(str(tmp_path / "out" / "slide_labels.ome.zarr"), mode="r")["0"][:]
    offsets = np.arange(tiles[0] * tiles[1]).reshape(tiles).repeat(truth.shape[0], 0).repeat(truth.shape[1], 1)
    tiled = np.where(np.tile(truth, tiles) > 0, np.tile(truth, tiles) + offsets * (truth.max() + 1), 0)
    tiled_brown = (brown[None, :] + np.arange(tiles[0] * tiles[1])[:, None] * (truth.max() + 1)).ravel()
    assert found_share(labels, tiled, tiled_brown) >= 0.75
    assert "--brown-nuclei" not in capsys.readouterr().err  # no hint: the option is on


def test_a_large_image_reads_brown_block_by_block(section, tmp_path):
    from napari_nucleiseg.api import load_model
    from napari_nucleiseg.large import segment_large

    image, truth, brown, _ = section
    model = load_model("hrnet")
    results = {on: segment_large(image, model, tmp_path / f"{on}.zarr", brown_nuclei=on, block=256)
               for on in (False, True)}
    assert results[True].brown_nuclei and not results[False].brown_nuclei
    found = {on: found_share(np.asarray(result.labels), truth, brown) for on, result in results.items()}
    assert found[False] < 0.5 and found[True] >= 0.75
    with pytest.raises(ValueError, match="brown_nuclei must be True or False"):
        segment_large(image, model, tmp_path / "bad.zarr", brown_nuclei="yes")


def test_fine_tuning_with_brown_nuclei_learns_from_the_image_as_segment_reads_it(section, tmp_path):
    """A model fine-tuned on an IHC section corrected with Brown nuclei on learns from the brown read as
    hematoxylin, as it will see it, and says so in its file (the widget then ticks the box)."""
    from napari_nucleiseg.learn.finetune import finetune, prepare_examples
    from napari_nucleiseg.weights import read_metadata

    image, truth, brown, _ = section
    as_is = prepare_examples([image], [truth]).pairs[0][0]
    read = prepare_examples([image], [truth], brown_nuclei=True).pairs[0][0]
    assert as_is.dtype == read.dtype == np.uint8 and np.array_equal(as_is, image)
    changed = np.any(read != image, axis=-1)
    assert changed[np.isin(truth, brown)].mean() > 0.5 and changed[truth == 0].mean() < 0.05  # the brown nuclei
    white = stain_white(image)
    expected = brown_as_hematoxylin(image, white)
    assert np.abs(read.astype(float) - expected).max() <= 0.5  # as segment(brown_nuclei=True) reads it

    on = finetune([image], [truth], "unet", out=tmp_path / "ihc.safetensors", minutes=1, max_steps=1,
                  brown_nuclei=True)
    off = finetune([image], [truth], "unet", out=tmp_path / "he.safetensors", minutes=1, max_steps=1)
    assert read_metadata(on)["brown_nuclei"] is True and read_metadata(on)["fine_tuned"]["brown_nuclei"] == [True]
    assert "brown_nuclei" not in read_metadata(off) and read_metadata(off)["fine_tuned"]["brown_nuclei"] == [False]
    gray = read_sample("fluorescence")  # nothing to read as hematoxylin: the file does not say it was
    plain = finetune([gray], [segment(gray, "unet").labels], "unet", out=tmp_path / "gray.safetensors", minutes=1,
                     max_steps=1, brown_nuclei=True)
    assert "brown_nuclei" not in read_metadata(plain)
    with pytest.raises(ValueError, match="brown_nuclei must be True or False, or one of them per image"):
        prepare_examples([image], [truth], brown_nuclei=[True, False])

    iio.imwrite(tmp_path / "ki67.png", image)
    iio.imwrite(tmp_path / "ki67_labels.tif", truth.astype(np.uint16))
    assert main(["finetune", str(tmp_path / "ki67.png"), "--labels", str(tmp_path / "ki67_labels.tif"), "--from",
                 "unet", "--out", str(tmp_path / "cli.safetensors"), "--minutes", "0.2", "--brown-nuclei"]) == 0
    assert read_metadata(tmp_path / "cli.safetensors")["brown_nuclei"] is True
