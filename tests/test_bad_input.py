"""Bad input, tried on every surface: the Python API, the ``nucleiseg`` CLI and the dock widget.

Each bad input gets a correct result or a one-sentence error (an ``ImageError``, ``WeightsError`` or
``ValueError`` in the API, one line on stderr and the documented exit status in the CLI, one napari
notification in the widget), and nothing the user had is overwritten or lost. The tables below are
the list; what is tested elsewhere is named here rather than tested twice:

* empty 0-size image -> API: ImageError (below); CLI: skipped (below); widget: napari 0.9.2 cannot
  open a 0-size image at all, the widget's own guard is ``test_pipeline.py::test_stack_shape_rejects...``
* 1x1, constant, NaN/inf, 16-bit, float, negative -> the same result as the 8-bit image (below);
  real networks give finite maps on them (``test_inference.py``), the widget segments them
  (``test_widget.py::test_tiny_constant_and_odd_valued_images...`` and below)
* 2-channel -> one sentence everywhere (below; widget: ``test_widget.py::test_a_two_channel_image...``)
* 5-D -> API: one sentence; CLI and widget: a stack, segmented plane by plane (below)
* Z/T stacks and channels-first TIFFs without a C axis -> CLI: planes, segmented one by one, never
  colours or channels; ZC/TC stacks need ``--channel`` (below)
* more than 65,535 nuclei -> uint32 labels in the API, the CLI's TIFF and the widget's layer (below,
  marked slow; post-processing alone: ``test_postprocess.py::test_more_than_65535_nuclei_use_uint32``)
* corrupt or truncated image files -> CLI: skipped with one line (below; garbage files:
  ``test_cli.py::test_folder_with_a_corrupt_file``, ``test_only_bad_files``)
* weights of the wrong architecture, truncated, not ours -> one sentence naming the file on every
  surface (below; the loader alone: ``test_weights.py``)
* read-only output folder -> CLI and widget export: one sentence, nothing written (below); missing
  output folder -> CLI: created (``test_cli.py::test_folder_with_a_corrupt_file``), widget export:
  one sentence (``test_widget.py::test_export_csv_writes_the_table_as_the_user_edited_it``)
* cancel mid-run -> API: ``Cancelled`` between tiles (below); widget: between planes
  (``test_widget.py::test_cancel_stops_between_planes...``) and between tiles (below); CLI: Ctrl-C
  exits with status 130 and one line (below)
* threshold moved after hand edits -> the edited layer is kept and the result goes to a new one
  (``test_widget.py::test_hand_edits_update_the_count_and_table_and_are_never_overwritten``, and
  below with uint32 labels)

Most tests use :class:`PixelNetwork`, a network whose nucleus probability is a steep function of
each normalised pixel: the labels then follow from the normalisation alone, so an image re-encoded
as 16-bit, float or negative must give exactly the labels of the 8-bit original.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from safetensors.torch import save_file

import napari_nucleiseg.api
from napari_nucleiseg import segment
from napari_nucleiseg.cli import EXIT_PARTIAL, PLANAR_RGB_NOTE, UNNAMED_PLANES_NOTE, main
from napari_nucleiseg.inference import Cancelled
from napari_nucleiseg.preprocess import ImageError
from napari_nucleiseg.weights import METADATA_KEY, NucleiModel, WeightsError, save_weights

from conftest import blob_image, build_tiny, tiny_metadata

#: The 8-bit original: three bright disks (radius 12) on a noisy dark background.
BLOBS = blob_image((96, 128))
BLOB_CENTERS = ((30, 30), (60, 90), (70, 40))
#: A user id without any rights here, to make read-only folders read-only even when tests run as root.
NOBODY = 65534


class PixelNetwork(torch.nn.Module):
    """Nucleus logit ``20 * (mean of the normalised channels - 0.5)``, boundary logit -20.

    Follows the contract of the real networks, ``(B, 3, H, W)`` in and ``(B, 2, H, W)`` out. With
    ``delay``, every forward pass takes that long (to cancel a run in the middle); with
    ``interrupt_on_call``, that call raises KeyboardInterrupt, as Ctrl-C does; with
    ``fail_on_call``, that call raises torch's out-of-memory RuntimeError. ``calls`` counts them.
    """

    def __init__(self, delay: float = 0.0, interrupt_on_call: int | None = None, fail_on_call: int | None = None):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # inference reads the device off a parameter
        self.delay = delay
        self.interrupt_on_call = interrupt_on_call
        self.fail_on_call = fail_on_call
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        if self.calls == self.fail_on_call:  # what torch raises, which is no MemoryError
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 4294967296 bytes. Error code 12")
        time.sleep(self.delay)
        nucleus = x.mean(dim=1, keepdim=True)
        return torch.cat([20 * (nucleus - 0.5), torch.full_like(nucleus, -20.0)], dim=1)


def pixel_model(**network_options) -> NucleiModel:
    metadata = {
        "architecture": "pixel", "kwargs": {}, "threshold": 0.5, "boundary_threshold": 0.5, "min_size": 0,
        "normalization": {"method": "percentile", "percentiles": [1.0, 99.8]},
    }
    return NucleiModel(network=PixelNetwork(**network_options).eval(), metadata=metadata, name="pixel")


@pytest.fixture(scope="module")
def reference_labels() -> np.ndarray:
    labels = segment(BLOBS, pixel_model()).labels
    assert labels.max() == 3 and all(labels[center] > 0 for center in BLOB_CENTERS)
    return labels


def one_sentence(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


def checkerboard(shape=(512, 516), dim_every_other_row=False) -> np.ndarray:
    """One bright isolated pixel on every other row and column: 256 x 258 = 66,048 nuclei.

    With ``dim_every_other_row``, the nuclei of every other of their rows are dim (value 100,
    nucleus probability about 0.1 for :class:`PixelNetwork`), so a threshold of 0.5 keeps half.
    """
    image = np.zeros(shape, np.uint8)
    image[::2, ::2] = 255
    if dim_every_other_row:
        image[2::4, ::2] = 100
    return image


# ---- images -----------------------------------------------------------------------------------

def _with_nan_and_inf() -> np.ndarray:
    image = BLOBS.astype(np.float32)
    image[0:5, 0:5] = np.nan  # background
    image[30, 30] = np.inf  # inside a nucleus
    image[90, 5] = -np.inf  # background
    return image


#: Images that hold the picture of BLOBS in another encoding: each must give BLOBS' labels.
SAME_PICTURE = [
    pytest.param(lambda: BLOBS.astype(np.uint16) * 250, id="16-bit"),
    pytest.param(lambda: BLOBS / 255.0, id="float64-0-to-1"),
    pytest.param(lambda: BLOBS.astype(np.float32) - 1000, id="negative-float"),
    pytest.param(lambda: BLOBS.astype(np.int16) - 300, id="negative-int16"),
    pytest.param(lambda: BLOBS * 1e300, id="float64-beyond-float32-range"),
    pytest.param(lambda: BLOBS * 1e-300, id="float64-below-float32-range"),
    pytest.param(lambda: BLOBS.astype(np.float16), id="float16"),
    pytest.param(_with_nan_and_inf, id="nan-and-inf"),
    pytest.param(lambda: BLOBS > 100, id="boolean"),
    pytest.param(lambda: np.stack([BLOBS] * 3 + [np.full_like(BLOBS, 255)], axis=-1), id="rgba"),
    pytest.param(lambda: BLOBS[..., None], id="gray-with-a-channel-axis"),
]

#: Images without any nucleus: each gives empty labels of its height and width.
NOTHING_TO_FIND = [
    pytest.param(lambda: np.full((1, 1), 7, np.uint8), id="1x1"),
    pytest.param(lambda: np.full((1, 1, 3), 7, np.uint8), id="1x1-rgb"),
    pytest.param(lambda: np.zeros((40, 50), np.uint8), id="constant-zero"),
    pytest.param(lambda: np.full((40, 50), 3.5), id="constant-float"),
    pytest.param(lambda: np.full((40, 50), np.nan, np.float32), id="all-nan"),
    pytest.param(lambda: np.full((40, 50), np.inf, np.float32), id="all-inf"),
]

#: Images the API cannot segment, and a word of the one sentence that says why.
NOT_AN_IMAGE = [
    pytest.param(lambda: np.zeros((0, 0), np.uint8), "empty", id="empty-0x0"),
    pytest.param(lambda: np.zeros((0, 10), np.uint8), "empty", id="empty-0x10"),
    pytest.param(lambda: np.zeros((0, 0, 3), np.uint8), "empty", id="empty-rgb"),
    pytest.param(lambda: np.zeros((40, 50, 2), np.uint8), "one channel at a time", id="2-channel-last"),
    pytest.param(lambda: np.zeros((2, 40, 50), np.uint8), "one channel at a time", id="2-channel-first"),
    pytest.param(lambda: np.zeros((2, 3, 2, 40, 50), np.uint8), "plane by plane", id="5-D"),
    pytest.param(lambda: np.zeros((1, 1, 1, 40, 50), np.uint8), "plane by plane", id="5-D-of-one-plane"),
    pytest.param(lambda: np.zeros(10, np.uint8), "2-D", id="1-D"),
    pytest.param(lambda: np.zeros((4, 4), complex), "not supported", id="complex"),
    pytest.param(lambda: np.array([["a", "b"]]), "not supported", id="text"),
    pytest.param(lambda: [BLOBS, BLOBS], "to segment several, segment each", id="list-of-images"),  # QA: channels?
    pytest.param(lambda: (BLOBS, BLOBS, BLOBS), "segment each", id="tuple-of-images"),
]


@pytest.mark.parametrize("make_image", SAME_PICTURE)
def test_api_image_in_another_encoding_gives_the_same_labels(make_image, reference_labels):
    image = make_image()
    before = image.copy()
    result = segment(image, pixel_model())
    np.testing.assert_array_equal(result.labels, reference_labels)
    assert result.count == 3 == len(result.table)
    assert np.isfinite(result.probabilities).all()
    np.testing.assert_array_equal(image, before)  # the user's array is left as it was (NaN included)


def test_a_float_image_far_outside_float32s_range_is_sized_and_resized_as_the_image_is():
    """QA: the fluorescence sample times 1e38 or 1e-300 (float64) gave 0 nuclei whenever it was resized (cast to
    float32 before the normalisation divided it), and the Auto diameter read the wrong window (every window's
    spread underflowed to 0)."""
    from napari_nucleiseg._sample_data import read_sample

    sample = read_sample("fluorescence").astype(np.float64)
    plain = segment(sample)
    assert plain.scale != 1.0  # (resized: where it failed)
    for factor in (1e38, 1e-300):
        result = segment(sample * factor)
        assert result.count == plain.count and result.diameter == pytest.approx(plain.diameter, rel=1e-3), factor


@pytest.mark.parametrize("make_image", NOTHING_TO_FIND)
def test_api_image_without_nuclei_gives_empty_labels(make_image):
    image = make_image()
    result = segment(image, pixel_model())
    assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.uint16
    assert result.count == 0 and len(result.table) == 0
    assert np.isfinite(result.probabilities).all()


@pytest.mark.parametrize("make_image, fragment", NOT_AN_IMAGE)
def test_api_image_that_cannot_be_segmented_is_one_sentence(make_image, fragment):
    with pytest.raises(ImageError) as error:
        segment(make_image(), pixel_model())
    assert one_sentence(str(error.value)) and fragment in str(error.value)


@pytest.mark.slow
def test_api_more_than_65535_nuclei_are_uint32():
    result = segment(checkerboard(), pixel_model())
    assert result.labels.dtype == np.uint32
    assert result.count == 256 * 258 == result.labels.max() == len(result.table)
    assert result.table["label"].iloc[-1] == 256 * 258


def test_api_cancel_in_the_middle_of_a_run_stops_between_tiles():
    progress = []
    with pytest.raises(Cancelled):
        segment(np.tile(BLOBS, (20, 16)), pixel_model(),  # 1920 x 2048: many tiles
                progress=lambda done, total: progress.append((done, total)), cancelled=lambda: bool(progress))
    ((done, total),) = progress  # cancelled right after the first tiles, not after all of them
    assert done < total


# ---- weights files ----------------------------------------------------------------------------

def _good(folder: Path, name: str) -> Path:
    return save_weights(folder / name, build_tiny("unet"), tiny_metadata("unet"))


def _cut(folder: Path, name: str, keep: float) -> Path:
    """A good weights file cut to the first ``keep`` of its bytes (or to ``keep`` bytes if it is above 1)."""
    path = _good(folder, name)
    data = path.read_bytes()
    return _write(path, data[: int(keep if keep > 1 else len(data) * keep)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _raw_safetensors(folder: Path, name: str, header: dict) -> Path:
    import json

    encoded = json.dumps(header).encode()
    path = folder / name
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded)
    return path


def _ours(**fields) -> str:
    import json

    return json.dumps({"format": "napari-nucleiseg-weights", "format_version": 1, "architecture": "unet",
                       "kwargs": {}} | fields)


def _foreign_safetensors(folder: Path, name: str) -> Path:
    save_file({"weight": torch.zeros(3, 3)}, str(folder / name), metadata={"framework": "pt"})
    return folder / name


#: (makes the file in a folder, a fragment of the one sentence that must name it)
BAD_WEIGHTS = [
    pytest.param(lambda folder: save_weights(folder / "wrong-architecture.safetensors", build_tiny("hrnet"),
                                             tiny_metadata("unet")), "do not match a 'unet' model",
                 id="wrong-architecture"),
    pytest.param(lambda folder: _cut(folder, "truncated.safetensors", 0.6), "truncated", id="truncated-tensors"),
    pytest.param(lambda folder: _cut(folder, "truncated-header.safetensors", 0.01), "truncated",
                 id="truncated-header"),
    pytest.param(lambda folder: _cut(folder, "seven-bytes.safetensors", 7), "truncated", id="truncated-to-7-bytes"),
    pytest.param(lambda folder: _foreign_safetensors(folder, "foreign.safetensors"),
                 "not a napari-nucleiseg weights file", id="not-ours-safetensors"),
    pytest.param(lambda folder: _write(folder / "image.safetensors", b"\x89PNG\r\n\x1a\n" + bytes(100)),
                 "not a napari-nucleiseg weights file", id="not-ours-png"),
    pytest.param(lambda folder: _write(folder / "notes.safetensors", b"some notes, not weights"),
                 "not a napari-nucleiseg weights file", id="not-ours-text"),
    pytest.param(lambda folder: _write(folder / "hello.safetensors", b"hello"),  # not "truncated (only 5 bytes)"
                 "not a napari-nucleiseg weights file", id="not-ours-5-bytes-of-text"),
    pytest.param(lambda folder: _raw_safetensors(folder, "odd-header.safetensors",
                                                 {"__metadata__": {METADATA_KEY: _ours()}, "x": 5}),
                 "not a napari-nucleiseg weights file", id="malformed-header"),
    pytest.param(lambda folder: _raw_safetensors(folder, "odd-kwargs.safetensors",
                                                 {"__metadata__": {METADATA_KEY: _ours(kwargs="big")}}),
                 "not a mapping", id="arguments-not-a-mapping"),
    pytest.param(lambda folder: _raw_safetensors(folder, "odd-version.safetensors",
                                                 {"__metadata__": {METADATA_KEY: _ours(format_version="2")}}),
                 "not a number", id="version-not-a-number"),
    pytest.param(lambda folder: save_weights(folder / "threshold-2.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"threshold": 2.0}),
                 "its threshold must be a number between 0 and 1, not 2.0", id="threshold-out-of-range"),
    pytest.param(lambda folder: save_weights(folder / "neck-ratio.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"neck_ratio": "deep"}),
                 "its neck_ratio must be a number between 0 and 1, not 'deep'", id="neck-ratio-not-a-number"),
    pytest.param(lambda folder: save_weights(folder / "negative-layers.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"kwargs": {"base_channels": -4}}),
                 "architecture argument base_channels -4 is not a whole number from 1 to 256",
                 id="impossible-architecture-arguments"),
    pytest.param(lambda folder: _raw_safetensors(folder, "torch.safetensors", {"__metadata__": {"format": "pt"}}),
                 "not a napari-nucleiseg weights file (it has no napari-nucleiseg metadata", id="another-tools-weights"),
    # issue 18, item 13: hostile files, each refused before anything is built
    pytest.param(lambda folder: _nested_header(folder / "nested.safetensors"), "not a napari-nucleiseg weights file",
                 id="nested-json-200000-levels"),
    pytest.param(lambda folder: _raw_safetensors(folder, "infinite.safetensors", {"__metadata__": {
        METADATA_KEY: _ours(kwargs={"base_channels": 4, "depth": 3}).replace('"kwargs"', '"min_size": Infinity, "kwargs"')}}),
        "its min_size must be a whole number of pixels >= 0, not inf", id="min-size-infinity"),
    pytest.param(lambda folder: save_weights(folder / "no-branches.safetensors", build_tiny("hrnet"),
                                             tiny_metadata("hrnet") | {"kwargs": {"widths": []}}),
                 "widths [] are not a list of 1 to 6 branch widths", id="hrnet-no-branches"),
    pytest.param(lambda folder: save_weights(folder / "negative-depth.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"kwargs": {"depth": -3}}),
                 "depth -3 is not a whole number from 1 to 6", id="negative-depth"),
    pytest.param(lambda folder: save_weights(folder / "deep.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"kwargs": {"depth": 1000000}}),
                 "depth 1000000 is not a whole number from 1 to 6", id="depth-a-million"),
    pytest.param(lambda folder: save_weights(folder / "three-outputs.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"kwargs": {"out_channels": 3}}),
                 "out_channels 3 is not 2", id="three-output-channels"),
    pytest.param(lambda folder: save_weights(folder / "one-output.safetensors", build_tiny("unet"),
                                             tiny_metadata("unet") | {"kwargs": {"out_channels": 1}}),
                 "out_channels 1 is not 2", id="one-output-channel"),
    pytest.param(lambda folder: save_weights(folder / "rgba-input.safetensors", build_tiny("hrnet"),
                                             tiny_metadata("hrnet") | {"kwargs": {"in_channels": 4}}),
                 "in_channels 4 is not 3", id="four-input-channels"),
]


def _nested_header(path: Path) -> Path:
    """A header whose JSON nests 200,000 levels deep (Python's parser gives up with a RecursionError)."""
    encoded = ('{"__metadata__": {"x": ' + "[" * 200_000 + "]" * 200_000 + "}}").encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded)
    return path


@pytest.mark.parametrize("make_weights, fragment", BAD_WEIGHTS)
def test_api_bad_weights_file_is_one_sentence_naming_it(make_weights, fragment, tmp_path):
    path = make_weights(tmp_path)
    with pytest.raises(WeightsError) as error:
        segment(BLOBS, path)
    message = str(error.value)
    assert one_sentence(message) and message.startswith(f"{path.name}: ") and fragment in message


# ---- the CLI ----------------------------------------------------------------------------------

def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def cli_pixel_model(monkeypatch):
    """Makes the CLI use :class:`PixelNetwork` whatever --weights it is given."""
    model = pixel_model()
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: model)
    return model


def _png(image):
    return lambda path: iio.imwrite(path.with_suffix(".png"), image) or path.with_suffix(".png")


def _tiff(image, **options):
    return lambda path: tifffile.imwrite(path.with_suffix(".tif"), image, **options) or path.with_suffix(".tif")


def _bytes(suffix, data):
    return lambda path: _write(path.with_suffix(suffix), data)


def _encoded(suffix, image, keep=1.0, suffix_on_disk=None):
    """``image`` encoded as ``suffix``, cut to the first ``keep`` of its bytes, in a file named ``suffix_on_disk``."""
    if suffix == ".tif":
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, image)
        data = buffer.getvalue()
    else:
        data = iio.imwrite("<bytes>", image, extension=suffix)
    return _bytes(suffix_on_disk or suffix, data[: int(len(data) * keep)])


#: Files the CLI segments: each gives BLOBS' labels.
CLI_SAME_PICTURE = [
    pytest.param(_png(BLOBS.astype(np.uint16) * 250), id="16-bit-png"),
    pytest.param(_tiff(BLOBS.astype(np.uint16) * 250), id="16-bit-tiff"),
    pytest.param(_tiff((BLOBS / 255).astype(np.float32)), id="float32-tiff"),
    pytest.param(_tiff(BLOBS.astype(np.float32) - 1000), id="negative-float-tiff"),
    pytest.param(_tiff(BLOBS.astype(np.int16) - 300), id="negative-int16-tiff"),
    pytest.param(_tiff(BLOBS * 1e300), id="float64-beyond-float32-range-tiff"),
    pytest.param(_tiff(_with_nan_and_inf()), id="nan-and-inf-tiff"),
    pytest.param(_png(np.stack([BLOBS, np.full_like(BLOBS, 255)], axis=-1)), id="gray-alpha-png"),
    pytest.param(_tiff(np.stack([BLOBS, np.full_like(BLOBS, 255)], axis=-1), photometric="minisblack",
                       extrasamples=["unassalpha"]), id="gray-alpha-tiff"),
    pytest.param(_png(np.stack([BLOBS] * 3 + [np.full_like(BLOBS, 255)], axis=-1)), id="rgba-png"),
    pytest.param(_tiff(np.stack([BLOBS] * 3, axis=-1)), id="rgb-tiff"),
    pytest.param(_tiff(BLOBS[None, None, None]), id="5-D-tiff-of-one-plane"),
]

#: Files the CLI segments and finds nothing in: empty labels of the image's size.
CLI_NOTHING_TO_FIND = [
    pytest.param(_png(np.full((1, 1), 7, np.uint8)), (1, 1), id="1x1-png"),
    pytest.param(_png(np.zeros((40, 50), np.uint8)), (40, 50), id="constant-png"),
    pytest.param(_tiff(np.full((40, 50), np.nan, np.float32)), (40, 50), id="all-nan-tiff"),
]

#: Files the CLI skips with one line naming them, and a fragment of that line.
CLI_SKIPPED = [
    pytest.param(_tiff(np.stack([BLOBS, BLOBS], axis=-1), photometric="minisblack", planarconfig="contig"),
                 "it has 2 channels (axes YXS); choose the one that shows the nuclei with --channel N",
                 id="2-channel-tiff"),
    pytest.param(_tiff(np.stack([BLOBS] * 3, axis=-1), photometric="minisblack"), "with --channel N",
                 id="3-channel-last-gray-tiff"),
    pytest.param(_tiff(np.stack([BLOBS[:, :5]] * 3)), "too small to hold nuclei", id="stack-of-5-px-planes"),
    pytest.param(_tiff(np.zeros((0, 10), np.uint8)), "not a readable image", id="empty-tiff"),
    pytest.param(_bytes(".png", b""), "the file is empty (0 bytes", id="0-byte-png"),
    pytest.param(_bytes(".tif", b""), "the file is empty (0 bytes", id="0-byte-tiff"),  # QA: "header=b''"
    pytest.param(_bytes(".tif", b"II*\x00\x00\x00\x00\x00"), "the TIFF holds no image: was its writing interrupted?",
                 id="header-only-tiff"),  # what tifffile leaves when imwrite fails half-way
    pytest.param(_encoded(".png", BLOBS, keep=0.5), "the file is truncated", id="truncated-png"),
    pytest.param(_encoded(".tif", BLOBS, keep=0.5), "not a readable image", id="truncated-tiff"),
    pytest.param(_encoded(".tif", BLOBS, keep=0.002), "not a readable image", id="truncated-tiff-header"),
    pytest.param(_encoded(".jpg", np.stack([BLOBS] * 3, axis=-1), keep=0.7), "truncated",
                 id="truncated-jpeg"),
    pytest.param(_encoded(".jpg", np.stack([BLOBS] * 3, axis=-1), keep=0.05), "Truncated",
                 id="truncated-jpeg-header"),
    pytest.param(_encoded(".png", BLOBS, suffix_on_disk=".tif"), "not a TIFF file", id="png-named-tif"),
    pytest.param(_bytes(".png", b"not an image at all"), "not a readable image", id="text-named-png"),
]


@pytest.mark.parametrize("write", CLI_SAME_PICTURE)
def test_cli_file_in_another_encoding_gives_the_same_labels(write, capsys, tmp_path, cli_pixel_model,
                                                            reference_labels):
    source = write(tmp_path / "image")
    status, _, stderr = run_cli(capsys, source, "--out", tmp_path / "out")
    assert status == 0, stderr
    assert stderr == ""
    labels = tifffile.imread(tmp_path / "out" / "image_labels.tif")
    np.testing.assert_array_equal(labels, reference_labels)
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["nuclei"].tolist() == [3]


def _one_stain_among_others(channel: int, count: int, channels_last: bool = False) -> np.ndarray:
    """``count`` channels, BLOBS in ``channel`` and a bright nucleus-free haze in the others."""
    haze = np.full_like(BLOBS, 200)
    planes = [BLOBS if index == channel else haze for index in range(count)]
    return np.stack(planes, axis=-1 if channels_last else 0)


#: Multichannel files and ``--channel``: the nuclei are in the channel given, the others would mislead.
CLI_CHANNELS = [
    pytest.param(_tiff(_one_stain_among_others(1, 3), imagej=True, metadata={"axes": "CYX"}), 1,
                 id="imagej-3-channel-tiff"),
    pytest.param(_tiff(_one_stain_among_others(0, 2), metadata={"axes": "CYX"}), 0, id="ome-2-channel-tiff"),
    pytest.param(_tiff(_one_stain_among_others(3, 5), imagej=True, metadata={"axes": "CYX"}), 3,
                 id="imagej-5-channel-tiff"),
    pytest.param(_png(_one_stain_among_others(2, 3, channels_last=True)), 2, id="rgb-png-blue"),
    pytest.param(_tiff(_one_stain_among_others(1, 2, channels_last=True), photometric="minisblack",
                       planarconfig="contig"), 1, id="2-channel-last-tiff"),
    pytest.param(_png(BLOBS), 0, id="gray-png-channel-0"),
]


@pytest.mark.parametrize("write, channel", CLI_CHANNELS)
def test_cli_channel_picks_the_nuclear_stain_of_a_multichannel_image(write, channel, capsys, tmp_path,
                                                                     cli_pixel_model, reference_labels):
    source = write(tmp_path / "image")
    status, _, stderr = run_cli(capsys, source, "--out", tmp_path / "out", "--channel", channel)
    assert status == 0 and stderr == ""
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "image_labels.tif"), reference_labels)


def test_cli_multichannel_tiff_without_channel_or_with_a_wrong_one_is_one_line(capsys, tmp_path, cli_pixel_model):
    source = _tiff(_one_stain_among_others(1, 3), imagej=True, metadata={"axes": "CYX"})(tmp_path / "stains")
    status, _, stderr = run_cli(capsys, source, "--out", tmp_path / "out")
    assert status == 1
    assert stderr.splitlines()[0] == (f"nucleiseg: skipped {source}: it has 3 channels (axes CYX); choose the one "
                                      "that shows the nuclei with --channel N (0 to 2)")
    status, _, stderr = run_cli(capsys, source, "--out", tmp_path / "out", "--channel", 3)
    assert status == 1 and "it has 3 channels (0 to 2), not a channel 3" in stderr.splitlines()[0]
    assert not list((tmp_path / "out").glob("*.tif"))


def _planes(count: int, *, channel_axis: int | None = None, channels: int = 2, nuclei_in: int = 1) -> np.ndarray:
    """``count`` planes: BLOBS in the even ones, nothing in the odd ones; with ``channel_axis``, BLOBS in
    channel ``nuclei_in`` and a bright nucleus-free haze in the others."""
    stack = np.stack([BLOBS if index % 2 == 0 else np.zeros_like(BLOBS) for index in range(count)])
    if channel_axis is None:
        return stack
    haze = np.full_like(stack, 200)
    return np.stack([stack if index == nuclei_in else haze for index in range(channels)], axis=channel_axis)


def _good_image(folder: Path, channel: int | None) -> Path:
    """A 2-D image the CLI segments beside a stack, with or without ``--channel`` (up to 4)."""
    if channel is None:
        iio.imwrite(folder / "good.png", BLOBS)
        return folder / "good.png"
    tifffile.imwrite(folder / "good.tif", np.stack([BLOBS] * 5), imagej=True, metadata={"axes": "CYX"})
    return folder / "good.tif"


#: Stacks the CLI segments plane by plane: the file, ``--channel`` (None: not given), the labels' shape
#: and the nuclei.csv column that says a nucleus's plane.
CLI_STACKS = [
    pytest.param(_tiff(_planes(3), imagej=True, metadata={"axes": "ZYX"}), None, (3,), "z", id="imagej-ZYX"),
    pytest.param(_tiff(_planes(3), ome=True, metadata={"axes": "TYX"}), None, (3,), "t", id="ome-TYX"),
    pytest.param(_tiff(_planes(4)), None, (4,), "plane", id="plain-4-planes"),
    pytest.param(_tiff(_planes(3), photometric="minisblack"), None, (3,), "plane", id="plain-3-planes-minisblack"),
    pytest.param(_tiff(_planes(5)), None, (5,), "plane", id="plain-5-planes"),
    pytest.param(_tiff(_planes(3, channel_axis=1), imagej=True, metadata={"axes": "ZCYX"}), 1, (3,), "z",
                 id="imagej-ZCYX-channel-1"),
    pytest.param(_tiff(_planes(3, channel_axis=1, channels=3, nuclei_in=2), ome=True, metadata={"axes": "TCYX"}),
                 2, (3,), "t", id="ome-TCYX-channel-2"),
    pytest.param(_tiff(_planes(3, channel_axis=0, nuclei_in=0), ome=True, metadata={"axes": "CZYX"}), 0, (3,),
                 "z", id="ome-CZYX-channel-0"),
    pytest.param(_tiff(np.stack([_planes(4)] * 3, axis=-1)), None, (4,), "plane", id="rgb-planes"),
    pytest.param(_tiff(_planes(4).reshape(2, 2, *BLOBS.shape)), None, (2, 2), "plane_1", id="4-D"),
]


def test_cli_channel_picks_a_channel_of_a_short_axis_the_file_does_not_name(capsys, tmp_path, cli_pixel_model,
                                                                           reference_labels):
    """QA: DAPI + marker saved as a plain (2, H, W) array gave the nuclei of both with --channel 0 (145 where DAPI
    has 108), and --channel 1 was refused; the Python API and the widget take such an axis for channels."""
    source = tmp_path / "dapi+marker.tif"
    tifffile.imwrite(source, np.stack([BLOBS, np.zeros_like(BLOBS)]))
    for channel, nuclei in ((0, 3), (1, 0)):
        out = tmp_path / f"out{channel}"
        status, _, stderr = run_cli(capsys, source, "--out", out, "--channel", channel)
        assert status == 0 and stderr == ""
        labels = tifffile.imread(out / "dapi+marker_labels.tif")
        assert labels.shape == BLOBS.shape and labels.max() == nuclei
        np.testing.assert_array_equal(labels > 0, reference_labels > 0 if nuclei else np.zeros(BLOBS.shape, bool))
    status, _, _ = run_cli(capsys, source, "--out", tmp_path / "planes")  # not told: planes, as before
    assert status == 0 and tifffile.imread(tmp_path / "planes" / "dapi+marker_labels.tif").shape == (2, *BLOBS.shape)


@pytest.mark.parametrize("write, channel, planes, column", CLI_STACKS)
def test_cli_a_stack_is_segmented_plane_by_plane_into_labels_of_its_shape(write, channel, planes, column, capsys,
                                                                          tmp_path, cli_pixel_model,
                                                                          reference_labels):
    source = write(tmp_path / "stack")
    good = _good_image(tmp_path, channel)
    status, _, stderr = run_cli(capsys, source, good, "--out", tmp_path / "out", "--no-3d",
                                *(["--channel", channel] if channel is not None else []))
    # (tifffile saves a plain (4, H, W) array tagged as RGB stored planar unless told otherwise: the log says so;
    # a short axis the file does not name may be channels: the log says that too)
    notes = (PLANAR_RGB_NOTE.format(count=4), UNNAMED_PLANES_NOTE.format(count=planes[0]))
    assert status == 0 and stderr in ("", *(f"nucleiseg: note: {source}: {note}\n" for note in notes))
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    assert labels.shape == (*planes, *BLOBS.shape)
    flat = labels.reshape(-1, *BLOBS.shape)
    for index, plane in enumerate(flat):  # BLOBS' nuclei in the even planes, none in the odd ones
        expected = reference_labels > 0 if index % 2 == 0 else np.zeros(BLOBS.shape, bool)
        np.testing.assert_array_equal(plane > 0, expected)
    found = len(np.unique(labels)) - 1  # each plane's nuclei numbered on through the stack
    assert found == 3 * len(range(0, len(flat), 2))

    counts = pd.read_csv(tmp_path / "out" / "counts.csv").set_index("file")
    assert counts.loc[str(source), "nuclei"] == found  # the total over the planes
    assert counts.loc[str(source), "planes"] == len(flat) and counts.loc[str(good), "planes"] == 1
    assert (counts.loc[str(source), "height"], counts.loc[str(source), "width"]) == BLOBS.shape
    nuclei = pd.read_csv(tmp_path / "out" / "nuclei.csv")
    assert nuclei.columns[0] == "file" and nuclei.columns[len(planes)] == column
    in_stack = nuclei[nuclei["file"] == str(source)]
    assert len(in_stack) == found and in_stack[column].notna().all()
    assert nuclei.loc[nuclei["file"] == str(good), column].isna().all()  # a 2-D image has no plane
    if len(planes) == 1:  # the plane of each nucleus is the plane its label is in
        for row in in_stack.itertuples():
            assert labels[int(getattr(row, column)), int(row.centroid_y), int(row.centroid_x)] == row.label


#: Files whose ``--channel`` is refused, or that need one: the file, the option and a fragment of the line.
CLI_CHANNEL_REFUSED = [
    pytest.param(_tiff(_planes(2)), 4, "it has 2 channels (0 to 1), not a channel 4", id="plain-2-planes-channel-4"),
    pytest.param(_tiff(_planes(5)), 1, "it has one channel (its 5 planes are segmented one by one); --channel 1",
                 id="plain-5-planes-channel-1"),
    pytest.param(_tiff(_planes(3, channel_axis=1), imagej=True, metadata={"axes": "ZCYX"}), None,
                 "it has 2 channels (axes ZCYX); choose the one that shows the nuclei with --channel N (0 to 1)",
                 id="imagej-ZCYX-without-channel"),
    pytest.param(_tiff(_planes(3, channel_axis=1), ome=True, metadata={"axes": "TCYX"}), None,
                 "it has 2 channels (axes TCYX); choose", id="ome-TCYX-without-channel"),
    pytest.param(_tiff(_planes(3, channel_axis=1), imagej=True, metadata={"axes": "ZCYX"}), 2,
                 "it has 2 channels (0 to 1), not a channel 2", id="imagej-ZCYX-channel-2"),
]


@pytest.mark.parametrize("write, channel, fragment", CLI_CHANNEL_REFUSED)
def test_cli_a_channel_that_a_stack_lacks_or_needs_is_one_line_and_the_batch_goes_on(write, channel, fragment,
                                                                                     capsys, tmp_path,
                                                                                     cli_pixel_model):
    assert_skipped_beside_a_good_image(capsys, tmp_path, write(tmp_path / "stack"), fragment, channel)


@pytest.mark.parametrize("write, shape", CLI_NOTHING_TO_FIND)
def test_cli_file_without_nuclei_gives_empty_labels(write, shape, capsys, tmp_path, cli_pixel_model):
    source = write(tmp_path / "image")
    status, _, stderr = run_cli(capsys, source, "--out", tmp_path / "out")
    assert status == 0, stderr
    labels = tifffile.imread(tmp_path / "out" / "image_labels.tif")
    assert labels.shape == shape and labels.max() == 0
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["nuclei"].tolist() == [0]
    assert len(pd.read_csv(tmp_path / "out" / "nuclei.csv")) == 0


@pytest.mark.parametrize("write, fragment", CLI_SKIPPED)
def test_cli_file_that_cannot_be_segmented_is_skipped_with_one_line(write, fragment, capsys, tmp_path,
                                                                    cli_pixel_model):
    assert_skipped_beside_a_good_image(capsys, tmp_path, write(tmp_path / "image"), fragment)


def assert_skipped_beside_a_good_image(capsys, tmp_path: Path, source: Path, fragment: str,
                                       channel: int | None = None) -> None:
    """The CLI run on ``source`` and a good image skips ``source`` in one line holding ``fragment``, writes
    nothing of it, and segments the good image."""
    good = _good_image(tmp_path, channel)
    status, stdout, stderr = run_cli(capsys, source, good, "--out", tmp_path / "out",
                                     *(["--channel", channel] if channel is not None else []))
    assert status == EXIT_PARTIAL  # the good image is still segmented
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"nucleiseg: skipped {source}: ") and fragment in line and one_sentence(line)
    assert "Segmented 1 of 2 images" in stdout
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["counts.csv", "good_labels.tif",
                                                                          "nuclei.csv"]


@pytest.mark.parametrize("make_weights, fragment", BAD_WEIGHTS)
def test_cli_bad_weights_file_is_one_line_naming_it(make_weights, fragment, capsys, tmp_path):
    weights = make_weights(tmp_path)
    iio.imwrite(tmp_path / "image.png", BLOBS)
    status, _, stderr = run_cli(capsys, tmp_path / "image.png", "--out", tmp_path / "out", "--weights", weights)
    assert status == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"nucleiseg: {weights.name}: ") and fragment in line and one_sentence(line)
    assert not (tmp_path / "out").exists()


@contextmanager
def shared_folder():
    """A temporary folder that another user can reach (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="nucleiseg-bad-input-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder)


def test_cli_read_only_output_folder_is_one_line_and_nothing_is_written(tmp_path, tiny_weights):
    """Really read-only: run as an unprivileged user when the tests run as root (root may write anywhere)."""
    with shared_folder() as folder:
        iio.imwrite(folder / "image.png", BLOBS)
        weights = folder / "weights.safetensors"
        shutil.copy(tiny_weights["unet"], weights)
        weights.chmod(0o644)
        out = folder / "results"
        out.mkdir()
        (out / "image_labels.tif").write_bytes(b"an earlier result")
        out.chmod(0o555)
        command = [sys.executable, "-m", "napari_nucleiseg.cli", "segment", str(folder / "image.png"),
                   "--out", str(out), "--weights", str(weights), "--overwrite"]
        if os.geteuid() == 0:
            command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder,
                              env=os.environ | {"HOME": str(folder)})
        assert done.returncode == 1
        (line,) = done.stderr.strip().splitlines()
        assert line == f"nucleiseg: cannot write to the output folder {out}: permission denied."
        assert sorted(path.name for path in out.iterdir()) == ["image_labels.tif"]
        assert (out / "image_labels.tif").read_bytes() == b"an earlier result"


def test_cli_never_replaces_an_input_image_even_with_overwrite(capsys, tmp_path, cli_pixel_model):
    # A folder holding an image and the labels of an earlier run, segmented into itself.
    iio.imwrite(tmp_path / "cells.png", BLOBS)
    tifffile.imwrite(tmp_path / "cells_labels.tif", np.full((96, 128), 9, np.uint16))
    before = (tmp_path / "cells_labels.tif").read_bytes()
    status, _, stderr = run_cli(capsys, tmp_path, "--out", tmp_path, "--overwrite")
    assert status == 2
    (line,) = stderr.strip().splitlines()
    assert "is the folder of the images" in line  # refused before the files are even listed
    assert (tmp_path / "cells_labels.tif").read_bytes() == before
    # Given as files (a shell glob), the same.
    status, _, stderr = run_cli(capsys, tmp_path / "cells.png", tmp_path / "cells_labels.tif",
                                "--out", tmp_path, "--overwrite")
    assert status == 2
    (line,) = stderr.strip().splitlines()
    assert "is the folder of the images" in line and one_sentence(line)
    assert (tmp_path / "cells_labels.tif").read_bytes() == before


def test_cli_ctrl_c_in_the_middle_of_a_run_is_one_line(capsys, tmp_path, monkeypatch):
    model = pixel_model(interrupt_on_call=2)
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: model)
    for name in ("a", "b", "c"):
        iio.imwrite(tmp_path / f"{name}.png", BLOBS)
    status, _, stderr = run_cli(capsys, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png",
                                "--out", tmp_path / "out")
    assert status == 130
    assert stderr.strip().splitlines() == [
        "nucleiseg: interrupted; counts.csv and nuclei.csv hold the 1 of 3 images finished before it."
    ]
    assert model.network.calls == 2  # stopped at once: c was never started
    assert not (tmp_path / "out" / "c_labels.tif").exists()
    # the image finished before Ctrl+C keeps its labels and its rows in the tables
    assert (tmp_path / "out" / "a_labels.tif").exists()
    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    assert counts["file"].tolist() == [str(tmp_path / "a.png")] and counts["nuclei"].tolist() == [len(BLOB_CENTERS)]
    assert len(pd.read_csv(tmp_path / "out" / "nuclei.csv")) == len(BLOB_CENTERS)


def test_cli_disk_full_mid_run_keeps_the_tables_of_the_images_done(capsys, tmp_path, monkeypatch, cli_pixel_model):
    import errno

    for name in ("a", "b", "c"):
        iio.imwrite(tmp_path / f"{name}.png", BLOBS)
    real_imwrite, calls = tifffile.imwrite, []

    def imwrite_until_the_disk_is_full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_imwrite(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite_until_the_disk_is_full)
    status, _, stderr = run_cli(capsys, tmp_path, "--out", tmp_path / "out")
    assert status == 1
    (line,) = stderr.strip().splitlines()
    assert "No space left on device" in line and line.endswith("hold the 1 of 3 images finished before it.")
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["file"].tolist() == [str(tmp_path / "a.png")]
    assert not (tmp_path / "out" / "c_labels.tif").exists()  # the run stopped


def test_cli_an_unexpected_error_on_one_image_skips_it_and_the_run_goes_on(capsys, tmp_path, monkeypatch):
    model = pixel_model(fail_on_call=2)  # the second image's only tile
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: model)
    for name in ("a", "b", "c"):
        iio.imwrite(tmp_path / f"{name}.png", BLOBS)
    status, stdout, stderr = run_cli(capsys, tmp_path, "--out", tmp_path / "out")
    assert status == EXIT_PARTIAL and "Traceback" not in stderr and "Segmented 2 of 3 images" in stdout  # some were segmented, one skipped
    (line,) = [line for line in stderr.strip().splitlines() if "b.png" in line]
    assert line.startswith("nucleiseg: skipped") and "can't allocate memory" in line
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["file"].tolist() == [str(tmp_path / n) for n in ("a.png", "c.png")]
    assert len(pd.read_csv(tmp_path / "out" / "nuclei.csv")) == 2 * len(BLOB_CENTERS)
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.tif")) == ["a_labels.tif", "c_labels.tif"]


def test_cli_interrupted_before_any_image_is_done_writes_no_tables(capsys, tmp_path, monkeypatch):
    model = pixel_model(interrupt_on_call=1)
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: model)
    iio.imwrite(tmp_path / "a.png", BLOBS)
    status, _, stderr = run_cli(capsys, tmp_path / "a.png", "--out", tmp_path / "out")
    assert status == 130 and stderr.strip().splitlines() == ["nucleiseg: interrupted."]
    assert not (tmp_path / "out" / "counts.csv").exists()


def test_cli_overwrite_interrupted_before_any_image_says_where_the_files_it_replaced_are(capsys, tmp_path,
                                                                                        monkeypatch):
    """QA: the line read "interrupted by SIGTERM; The files ..." (a capital after the semicolon)."""
    iio.imwrite(tmp_path / "a.png", BLOBS)
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: pixel_model())
    assert run_cli(capsys, tmp_path / "a.png", "--out", tmp_path / "out")[0] == 0
    model = pixel_model(interrupt_on_call=1)
    monkeypatch.setattr(napari_nucleiseg.api, "load_model", lambda source: model)
    status, _, stderr = run_cli(capsys, tmp_path / "a.png", "--out", tmp_path / "out", "--overwrite")
    (aside,) = (tmp_path / "out").glob("replaced-*")
    assert status == 130 and stderr.strip().splitlines()[-1] == (
        f"nucleiseg: interrupted; the files this run was to replace are in {aside}.")


@pytest.mark.slow
def test_cli_more_than_65535_nuclei_are_written_as_uint32(capsys, tmp_path, cli_pixel_model):
    iio.imwrite(tmp_path / "crowded.png", checkerboard())
    status, _, stderr = run_cli(capsys, tmp_path / "crowded.png", "--out", tmp_path / "out")
    assert status == 0, stderr
    labels = tifffile.imread(tmp_path / "out" / "crowded_labels.tif")
    assert labels.dtype == np.uint32 and labels.max() == 256 * 258
    np.testing.assert_array_equal(labels > 0, checkerboard() > 0)
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["nuclei"].tolist() == [256 * 258]
    assert len(pd.read_csv(tmp_path / "out" / "nuclei.csv")) == 256 * 258


# ---- the widget -------------------------------------------------------------------------------

from test_widget import (  # noqa: E402  (the widget tests' helpers and fixtures, imported where they are needed)
    RUN_TIMEOUT_MS,
    click_segment,
    labels_layers,
    notifications,  # noqa: F401  (a fixture)
    shown_count,
    viewer_and_widget,  # noqa: F401  (a fixture)
)


@pytest.fixture
def widget_pixel_model(monkeypatch):
    """Makes the widget run :class:`PixelNetwork` after it has checked the chosen weights file."""
    model = pixel_model()
    monkeypatch.setattr("napari_nucleiseg.weights.load_weights", lambda path: model)
    return model


#: Image layers that hold BLOBS (or a stack of it) in another encoding: the widget finds BLOBS' labels.
WIDGET_IMAGES = [
    pytest.param(lambda: BLOBS.astype(np.uint16) * 250, id="16-bit"),
    pytest.param(lambda: BLOBS.astype(np.int16) - 300, id="negative-int16"),
    pytest.param(lambda: BLOBS * 1e300, id="float64-beyond-float32-range"),
    pytest.param(_with_nan_and_inf, id="nan-and-inf"),
    pytest.param(lambda: np.broadcast_to(BLOBS, (2, 1, 2, *BLOBS.shape)).copy(), id="5-D-stack"),
]


@pytest.mark.gui
@pytest.mark.parametrize("make_image", WIDGET_IMAGES)
def test_widget_image_in_another_encoding_gives_the_same_labels(
    make_image, viewer_and_widget, widget_pixel_model, notifications, reference_labels, qtbot
):
    viewer, widget = viewer_and_widget
    image = make_image()
    viewer.add_image(image, name="image")
    click_segment(qtbot, widget)
    assert notifications.messages["error"] == []
    (layer,) = labels_layers(viewer)
    assert layer.data.shape == image.shape
    planes = layer.data.reshape(-1, *reference_labels.shape)
    for index, plane in enumerate(planes):  # a stack's nuclei are numbered on through its planes
        np.testing.assert_array_equal(plane, np.where(reference_labels > 0, reference_labels + 3 * index, 0))
    assert shown_count(widget) == 3 * len(planes)


@pytest.mark.gui
@pytest.mark.parametrize("make_weights, fragment", BAD_WEIGHTS)
def test_widget_bad_weights_file_is_one_notification_naming_it(
    make_weights, fragment, viewer_and_widget, notifications, tmp_path, qtbot
):
    viewer, widget = viewer_and_widget
    combo = widget.model_combo
    chosen, models = combo.currentText(), [combo.itemText(i) for i in range(combo.count())]
    path = make_weights(tmp_path)
    viewer.add_image(BLOBS, name="blobs")
    if widget.set_weights_file(path):  # tensors of the wrong architecture show only when they are loaded
        click_segment(qtbot, widget)
    (message,) = notifications.messages["error"]
    assert one_sentence(message) and message.startswith(f"{path.name}: ") and fragment in message
    assert labels_layers(viewer) == []
    # refused, when chosen or when run (issue 17, item 12): the last good choice again, and the file not listed
    assert combo.currentText() == chosen and [combo.itemText(i) for i in range(combo.count())] == models


@pytest.mark.gui
def test_widget_weights_file_truncated_after_it_was_chosen(viewer_and_widget, notifications, tmp_path, qtbot):
    viewer, widget = viewer_and_widget
    path = _good(tmp_path, "being-rewritten.safetensors")
    assert widget.set_weights_file(path)
    path.write_bytes(path.read_bytes()[:5000])  # e.g. training is writing a new version of it
    viewer.add_image(BLOBS, name="blobs")
    click_segment(qtbot, widget)
    (message,) = notifications.messages["error"]
    assert message.startswith("being-rewritten.safetensors: the file is truncated") and one_sentence(message)
    assert message.endswith("; it is taken out of the Model list, and tiny-unet.safetensors is chosen again.")
    assert labels_layers(viewer) == [] and widget.model_combo.findText(path.name) < 0


@pytest.mark.gui
def test_widget_cancel_in_the_middle_of_one_large_image_stops_between_tiles(
    viewer_and_widget, notifications, monkeypatch, qtbot
):
    viewer, widget = viewer_and_widget
    model = pixel_model(delay=0.2)
    monkeypatch.setattr("napari_nucleiseg.weights.load_weights", lambda path: model)
    viewer.add_image(np.tile(BLOBS, (20, 16)), name="large")  # one 1920 x 2048 plane: many tiles
    qtbot.mouseClick(widget.segment_button, _widget_left_button())
    qtbot.waitUntil(lambda: "tile 1/" in widget.progress_bar.format(), timeout=RUN_TIMEOUT_MS)
    total = int(widget.progress_bar.format().split("/")[-1])
    qtbot.mouseClick(widget.cancel_button, _widget_left_button())
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    assert model.network.calls < total
    assert notifications.messages["info"] == ["Segmentation cancelled; the run added and changed no layer."]
    assert labels_layers(viewer) == [] and notifications.messages["error"] == []


def _widget_left_button():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


@contextmanager
def unprivileged():
    """Act as a user without rights on root's files while inside (a no-op for a user already)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.gui
def test_widget_export_to_a_read_only_folder_is_one_notification(
    viewer_and_widget, widget_pixel_model, notifications, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(BLOBS, name="blobs")
    click_segment(qtbot, widget)
    with shared_folder() as folder:
        read_only = folder / "read-only"
        read_only.mkdir()
        (read_only / "nuclei.csv").write_text("an earlier export\n")
        read_only.chmod(0o555)
        (read_only / "nuclei.csv").chmod(0o444)
        writable = folder / "writable"
        writable.mkdir()
        writable.chmod(0o777)
        (writable / "protected.csv").write_text("a protected export\n")
        (writable / "protected.csv").chmod(0o444)
        with unprivileged():
            assert not os.access(read_only, os.W_OK, effective_ids=True)
            exported = [widget.export_csv(path) for path in
                        (read_only / "new.csv", read_only / "nuclei.csv", writable / "protected.csv")]
            assert widget.export_csv(writable / "fresh.csv")  # the user may write where it is allowed
        assert exported == [False, False, False]
        assert sorted(path.name for path in read_only.iterdir()) == ["nuclei.csv"]
        assert (read_only / "nuclei.csv").read_text() == "an earlier export\n"
        assert sorted(path.name for path in writable.iterdir()) == ["fresh.csv", "protected.csv"]
        assert (writable / "protected.csv").read_text() == "a protected export\n"
    new, existing, protected = notifications.messages["error"]
    assert new == f"Cannot write {read_only / 'new.csv'}: Permission denied."
    assert existing == f"Cannot write {read_only / 'nuclei.csv'}: the file is read-only."
    assert protected == f"Cannot write {writable / 'protected.csv'}: the file is read-only."


@pytest.mark.gui
def test_widget_export_that_fails_half_way_keeps_the_earlier_file(
    viewer_and_widget, widget_pixel_model, notifications, monkeypatch, tmp_path, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(BLOBS, name="blobs")
    click_segment(qtbot, widget)
    earlier = tmp_path / "nuclei.csv"
    earlier.write_text("an earlier export\n")

    def disk_full(self, path, **options):
        Path(path).write_text("label,ar")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    assert not widget.export_csv(earlier)
    assert earlier.read_text() == "an earlier export\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nuclei.csv"]  # no half-written file left
    assert notifications.messages["error"] == [f"Cannot write {earlier}: No space left on device."]


@pytest.mark.gui
@pytest.mark.slow
def test_widget_more_than_65535_nuclei_are_uint32_and_hand_edits_survive(
    viewer_and_widget, widget_pixel_model, notifications, monkeypatch, qtbot
):
    from napari_nucleiseg import _outputs

    viewer, widget = viewer_and_widget
    # The tables of 66,048 nuclei are measured in the background after every change; what is tested
    # here is the labels, so each table is one row, at once.
    monkeypatch.setattr(_outputs, "nuclei_table", lambda labels, *source: pd.DataFrame({"index": [1], "label": [1]}))
    viewer.add_image(checkerboard(dim_every_other_row=True), name="crowded")
    widget.min_size_spin.setValue(0)
    widget.threshold_slider.setValue(0.05)
    click_segment(qtbot, widget)
    (layer,) = labels_layers(viewer)
    assert layer.data.dtype == np.uint32 and layer.data.max() == 256 * 258 == shown_count(widget)

    widget.threshold_slider.setValue(0.5)  # half the nuclei: uint16 is enough, in the same layer
    assert labels_layers(viewer) == [layer]
    assert layer.data.dtype == np.uint16 and layer.data.max() == 128 * 258 == shown_count(widget)
    widget.threshold_slider.setValue(0.05)
    assert layer.data.dtype == np.uint32 and layer.data.max() == 256 * 258

    layer.data_setitem((np.array([1]), np.array([1])), 70_000)  # a hand edit with a label above 65,535
    qtbot.waitUntil(lambda: shown_count(widget) == 256 * 258 + 1, timeout=5_000)
    edited = layer.data.copy()
    widget.threshold_slider.setValue(0.5)
    second, first = labels_layers(viewer)
    assert first is layer and np.array_equal(first.data, edited) and first.data[1, 1] == 70_000
    assert second.data.max() == 128 * 258
    assert notifications.messages["error"] == []


def test_weights_file_without_read_permission_is_one_sentence(capsys, tiny_weights):
    with shared_folder() as folder:
        weights = folder / "private.safetensors"
        shutil.copy(tiny_weights["unet"], weights)
        weights.chmod(0o600)  # root's own: nobody else may read it
        iio.imwrite(folder / "image.png", BLOBS)
        with unprivileged():
            with pytest.raises(WeightsError) as error:
                segment(BLOBS, weights)
            status, _, stderr = run_cli(capsys, folder / "image.png", "--out", folder / "out", "--weights", weights)
    assert str(error.value) == "private.safetensors: the file cannot be read (Permission denied)."
    assert status == 1 and stderr == f"nucleiseg: {error.value}\n"


# ---- not enough memory ------------------------------------------------------------------------


from types import SimpleNamespace  # noqa: E402


@pytest.fixture
def free_memory(monkeypatch):
    """Sets how much memory psutil says is free."""
    import psutil

    def set_free(nbytes: int) -> None:
        monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=2 * nbytes, available=nbytes))
    return set_free


def test_memory_shortfall_is_a_sentence_only_when_the_image_does_not_fit(free_memory):
    from napari_nucleiseg.memory import memory_shortfall

    free_memory(8 * 2**30)
    assert memory_shortfall((4096, 4096)) is None
    message = memory_shortfall((20_000, 20_000))  # about 8.9 GB: 23 bytes a pixel
    assert one_sentence(message) and "20000 x 20000" in message and "8.0 GB is free" in message
    assert memory_shortfall((100, 4096, 4096)) is not None  # a stack holds every plane's labels


def test_cli_image_too_large_for_the_free_memory_is_skipped_in_one_line(capsys, tmp_path, cli_pixel_model,
                                                                        free_memory):
    iio.imwrite(tmp_path / "a.png", BLOBS)
    free_memory(2**20)
    status, _, stderr = run_cli(capsys, tmp_path / "a.png", "--out", tmp_path / "out")
    assert status == 1
    first_line = stderr.splitlines()[0]
    assert first_line.startswith(f"nucleiseg: skipped {tmp_path / 'a.png'}: Segmenting an image of 96 x 128")
    assert cli_pixel_model.network.calls == 0


@pytest.mark.gui
def test_widget_refuses_an_image_too_large_for_the_free_memory_before_running(
    viewer_and_widget, widget_pixel_model, notifications, free_memory, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(BLOBS, name="image")
    free_memory(2**20)
    click_segment(qtbot, widget)
    (message,) = notifications.messages["error"]
    assert one_sentence(message) and "GB is free" in message
    assert labels_layers(viewer) == [] and widget_pixel_model.network.calls == 0 and not widget.running


# ---- issue 18: files misread or dropped without a word ------------------------------------------


def test_cli_a_one_row_colour_image_keeps_its_width(capsys, tmp_path, cli_pixel_model):
    row = np.repeat(BLOBS[30:31, :, None], 3, axis=2)  # (1, 128, 3): one row of an RGB image
    iio.imwrite(tmp_path / "row.png", row)
    status, _, stderr = run_cli(capsys, tmp_path / "row.png", "--out", tmp_path / "out")
    assert status == 0, stderr
    assert tifffile.imread(tmp_path / "out" / "row_labels.tif").shape == (1, 128)


def test_cli_a_link_and_its_target_are_one_image_and_a_broken_link_is_reported(capsys, tmp_path, cli_pixel_model):
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", BLOBS)
    (folder / "b.png").symlink_to(folder / "a.png")
    (folder / "c.png").symlink_to(folder / "gone.png")
    status, stdout, stderr = run_cli(capsys, folder, "--out", tmp_path / "out")
    assert status == EXIT_PARTIAL
    assert stderr.strip().splitlines() == [
        f"nucleiseg: skipped {folder / 'c.png'}: a link to a file that does not exist",
        f"nucleiseg: skipped {folder / 'b.png'}: the same file as {folder / 'a.png'}, segmented once",
    ]
    assert "Segmented 1 of 1 images" in stdout


def test_cli_a_folder_that_cannot_be_read_is_one_line(capsys, tmp_path, cli_pixel_model, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):  # as a folder without read permission answers (chmod does not stop root)
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    status, _, stderr = run_cli(capsys, locked, "--out", tmp_path / "out")
    assert status == 1 and stderr.strip().splitlines()[0] == f"nucleiseg: cannot read folder {locked}: Permission denied"


def test_cli_an_image_whose_output_name_is_too_long_is_skipped_and_the_run_goes_on(capsys, tmp_path, cli_pixel_model):
    long_name = tmp_path / ("n" * 240 + ".png")  # fits, but not with "_labels.tif" added
    iio.imwrite(long_name, BLOBS)
    iio.imwrite(tmp_path / "short.png", BLOBS)
    status, stdout, stderr = run_cli(capsys, long_name, tmp_path / "short.png", "--out", tmp_path / "out")
    assert status == EXIT_PARTIAL and "Segmented 1 of 2 images" in stdout
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"nucleiseg: skipped {long_name}: its output name is too long") and one_sentence(line)
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["labels_file"].tolist() == ["short_labels.tif"]


def _png_with_rows(path: Path, width: int, height: int, rows: int) -> Path:
    """A gray PNG that declares ``height`` rows and holds the pixel data of ``rows`` of them."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([100]) * width for _ in range(rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_cli_a_png_whose_rows_stop_half_way_is_refused_not_zero_filled(capsys, tmp_path, cli_pixel_model):
    short = _png_with_rows(tmp_path / "short.png", 600, 600, 10)
    status, _, stderr = run_cli(capsys, short, "--out", tmp_path / "out")
    assert status == 1
    assert stderr.strip().splitlines()[0] == (f"nucleiseg: skipped {short}: the file is truncated: its pixel data "
                                               "ends after 10 of its 600 rows")


def test_cli_a_declared_size_beyond_the_free_memory_is_refused_before_decoding(capsys, tmp_path, cli_pixel_model,
                                                                              free_memory, monkeypatch):
    import imageio.v3

    iio.imwrite(tmp_path / "wide.png", np.zeros((2000, 2000), dtype=np.uint8))  # a few kB that declare 4 MPx
    tifffile.imwrite(tmp_path / "tall.tif", np.zeros((2000, 2000), dtype=np.uint8), compression="zlib")
    free_memory(8 * 2**20)
    decoded = []
    real_imread, real_asarray = imageio.v3.imread, tifffile.TiffFile.asarray
    monkeypatch.setattr(imageio.v3, "imread", lambda *a, **k: decoded.append(a) or real_imread(*a, **k))
    monkeypatch.setattr(tifffile.TiffFile, "asarray", lambda self, *a, **k: decoded.append(a) or real_asarray(self, *a, **k))
    status, _, stderr = run_cli(capsys, tmp_path / "wide.png", tmp_path / "tall.tif", "--out", tmp_path / "out")
    assert status == 1 and decoded == []
    lines = stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["nucleiseg"] * 2
    assert all("GB of memory" in line or "GB is free" in line for line in lines[:2]), lines


def test_cli_a_16_bit_colour_png_beyond_the_free_memory_is_refused_before_decoding(capsys, tmp_path, cli_pixel_model,
                                                                                   free_memory):
    """Review: Pillow calls 16 bits of colour 'RGB', so the check counted 3 bytes a pixel where libpng decodes 6."""
    import imagecodecs

    (tmp_path / "wide.png").write_bytes(imagecodecs.png_encode(np.zeros((1000, 1000, 3), np.uint16)))
    free_memory(8 * 2**20)  # room for 3 bytes a pixel (twice over), not for 6
    status, _, stderr = run_cli(capsys, tmp_path / "wide.png", "--out", tmp_path / "out")
    assert status == 1 and "GB is free" in stderr.strip().splitlines()[0], stderr


def test_cli_a_tiff_of_pages_of_different_sizes_is_refused_with_a_sentence(capsys, tmp_path, cli_pixel_model):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.zeros((32, 32), dtype=np.uint8))
    tifffile.imwrite(path, BLOBS, append=True)
    status, _, stderr = run_cli(capsys, path, "--out", tmp_path / "out")
    assert status == 1
    (line,) = stderr.strip().splitlines()[:1]
    assert line == (f"nucleiseg: skipped {path}: it holds 2 images of different sizes (32 x 32, 96 x 128); "
                    "save each as a file of its own")
    positions = tmp_path / "positions.tif"  # two of one size (QA: they were said to differ)
    tifffile.imwrite(positions, BLOBS)
    tifffile.imwrite(positions, BLOBS, append=True)
    status, _, stderr = run_cli(capsys, positions, "--out", tmp_path / "out")
    assert stderr.strip().splitlines()[0] == (f"nucleiseg: skipped {positions}: it holds 2 images (96 x 128, 96 x 128); "
                                              "save each as a file of its own")


def test_cli_a_cmyk_jpeg_is_read_as_its_rgb_picture(capsys, tmp_path, cli_pixel_model):
    from PIL import Image

    rgb = np.repeat(BLOBS[..., None], 3, axis=2)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    status, _, stderr = run_cli(capsys, tmp_path / "cmyk.jpg", "--out", tmp_path / "out")
    assert status == 0, stderr
    labels = tifffile.imread(tmp_path / "out" / "cmyk_labels.tif")
    assert labels.max() == len(BLOB_CENTERS) and all(labels[center] > 0 for center in BLOB_CENTERS)


def test_cli_an_rgb_tiff_stored_planar_is_segmented_as_planes_and_says_so(capsys, tmp_path, cli_pixel_model):
    """QA: an H&E picture saved by tifffile.imwrite(f, (3, H, W), photometric='rgb') was segmented as 3 gray
    planes, summed (2089 nuclei for 618), without a word. tifffile saves any (3, H, W) array so unless told
    otherwise (a stack of 3 planes, mostly: napari reads them as planes), so planes they stay; the log says how."""
    rgb = np.repeat(BLOBS[..., None], 3, axis=2)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    status, _, stderr = run_cli(capsys, tmp_path / "planar.tif", "--out", tmp_path / "out")
    assert status == 0
    assert stderr.strip() == (f"nucleiseg: note: {tmp_path / 'planar.tif'}: its tags say it is an RGB picture with "
                              "its colours stored one after another, as tifffile saves a (3, H, W) array unless told "
                              "otherwise; its 3 planes were segmented one by one. If it is one colour picture, save "
                              "it with its colours last, (H, W, 3).")
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["planes"].tolist() == [3]
    tifffile.imwrite(tmp_path / "gray.tif", np.moveaxis(rgb, -1, 0)[:2], photometric="minisblack", planarconfig="separate")
    status, _, stderr = run_cli(capsys, tmp_path / "gray.tif", "--out", tmp_path / "out2")  # not RGB: no such note
    assert status == 0 and "tags say it is an RGB picture" not in stderr


def test_cli_a_png_of_16_bit_colour_is_read_whole_as_a_tiff_of_it_is(capsys, tmp_path, cli_pixel_model):
    """QA: Pillow read a 16-bit RGB PNG as 8 bits: every intensity of the table 257x too small, a marker's
    0-20,000 cut to 78 levels. The same pixels as a TIFF were right; so is the PNG now (and gray + alpha)."""
    import imagecodecs

    rgb = np.zeros((*BLOBS.shape, 3), np.uint16)
    rgb[..., 0] = np.arange(BLOBS.size, dtype=np.uint16).reshape(BLOBS.shape) * 7  # a marker, 0 to 86,000 / 2
    rgb[..., 2] = BLOBS.astype(np.uint16) * 257  # the nuclear stain, in blue
    gray_alpha = np.stack([rgb[..., 2], np.full(BLOBS.shape, 65535, np.uint16)], axis=-1)
    (tmp_path / "rgb.png").write_bytes(imagecodecs.png_encode(rgb))
    (tmp_path / "gray_alpha.png").write_bytes(imagecodecs.png_encode(gray_alpha))
    tifffile.imwrite(tmp_path / "as_tiff.tif", rgb, photometric="rgb")
    status, _, stderr = run_cli(capsys, *(tmp_path / name for name in ("rgb.png", "gray_alpha.png", "as_tiff.tif")),
                                "--out", tmp_path / "out")
    assert status == 0, stderr
    table = pd.read_csv(tmp_path / "out" / "nuclei.csv")
    of = {Path(name).name: rows.reset_index(drop=True) for name, rows in table.groupby("file")}
    columns = ["label", "area", "mean_intensity", "mean_red", "mean_green", "mean_blue"]
    pd.testing.assert_frame_equal(of["rgb.png"][columns], of["as_tiff.tif"][columns])
    assert of["rgb.png"]["mean_blue"].max() > 255 * 100  # 16-bit values, not 8-bit ones
    assert np.allclose(of["gray_alpha.png"]["mean_intensity"], of["rgb.png"]["mean_blue"])


def test_compressed_tiffs_are_read_by_a_base_install(capsys, tmp_path, cli_pixel_model):
    """Without imagecodecs (a dependency since), tifffile could not read LZW-, JPEG- or zstd-compressed TIFFs
    (microscopes' and scanners' exports): 'requires the imagecodecs package'."""
    from importlib.metadata import requires

    assert any(requirement.startswith("imagecodecs") for requirement in requires("napari-nucleiseg"))
    for compression in ("lzw", "zstd", "jpeg"):
        tifffile.imwrite(tmp_path / f"{compression}.tif", BLOBS, compression=compression)
    status, _, stderr = run_cli(capsys, *sorted(tmp_path.glob("*.tif")), "--out", tmp_path / "out")
    assert status == 0, stderr
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["nuclei"].tolist() == [len(BLOB_CENTERS)] * 3


@pytest.mark.parametrize("given, fragment", [("image.png", "not the path 'image.png'"), (None, "not nothing (None)")])
def test_api_a_path_or_nothing_instead_of_an_image_is_one_sentence(given, fragment):
    with pytest.raises(ImageError) as error:
        segment(given, pixel_model())
    assert one_sentence(str(error.value)) and fragment in str(error.value) and "imread" in str(error.value)


@pytest.mark.parametrize("shape", [(40, 50, 2), (2, 40, 50), (3, 40, 50), (40, 50, 6)])
def test_api_an_image_with_channels_names_the_channel_argument(shape):
    with pytest.raises(ImageError) as error:
        segment(np.zeros(shape, np.uint8), pixel_model())
    count = min(shape)
    assert f"segment(image, channel=N), N from 0 to {count - 1}" in str(error.value)
    assert segment(np.zeros(shape, np.uint8), pixel_model(), channel=1).labels.shape == (40, 50)


def test_api_a_one_plane_stack_and_channel_0_of_a_gray_image_are_that_image():
    """QA: segment() refused both ('has 1 channels (or planes)'; 'no channel axis'), which the command line takes."""
    image = np.zeros((40, 50), np.uint8)
    image[10:20, 10:20] = 200
    plain = segment(image, pixel_model())
    assert np.array_equal(segment(image[None], pixel_model()).labels, plain.labels)
    assert np.array_equal(segment(image, pixel_model(), channel=0).labels, plain.labels)
    with pytest.raises(ImageError, match="The image is gray: it has one channel"):
        segment(image, pixel_model(), channel=1)


def test_api_a_stack_of_many_planes_is_told_to_go_plane_by_plane():
    with pytest.raises(ImageError) as error:
        segment(np.zeros((30, 40, 50), np.uint8), pixel_model())
    assert "segment stacks plane by plane" in str(error.value) and "channel=N" not in str(error.value)


def test_api_diameter_auto_and_model_titles_are_understood():
    from napari_nucleiseg.api import load_model

    assert load_model("HRNet") is load_model("hrnet") and load_model("unet++").name == load_model("unetpp").name
    with pytest.raises(WeightsError):
        load_model("HRNets")
    image = np.zeros((40, 50), np.uint8)
    assert segment(image, pixel_model(), diameter="auto").diameter == segment(image, pixel_model()).diameter
