"""Opening images larger than memory lazily (napari_nucleiseg.lazy_io): TIFF, OME-TIFF, OME-Zarr."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_nucleiseg.errors import ImageError
from napari_nucleiseg.lazy_io import is_zarr, open_lazy

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 255, (600, 700), dtype=np.uint8)
RGB = RNG.integers(0, 255, (600, 700, 3), dtype=np.uint8)


def test_a_tiled_tiff_opens_lazily_as_its_pixels(tmp_path):
    tifffile.imwrite(tmp_path / "gray.tif", GRAY, tile=(256, 256))
    tifffile.imwrite(tmp_path / "rgb.tif", RGB, tile=(256, 256), photometric="rgb")
    gray, rgb = open_lazy(tmp_path / "gray.tif"), open_lazy(tmp_path / "rgb.tif")
    assert (gray.axes, gray.rgb, rgb.axes, rgb.rgb) == ("YX", False, "YXS", True)
    assert type(gray.data).__module__.startswith("dask")  # nothing read yet
    assert np.array_equal(np.asarray(gray.data[100:400, 50:650]), GRAY[100:400, 50:650])
    assert np.array_equal(np.asarray(rgb.data[::3, ::5]), RGB[::3, ::5])
    gray.close()
    rgb.close()


def test_a_channel_of_an_ome_tiff_is_chosen_and_a_missing_choice_is_one_sentence(tmp_path):
    stack = np.stack([GRAY, 255 - GRAY])
    tifffile.imwrite(tmp_path / "two.ome.tif", stack, tile=(256, 256), metadata={"axes": "CYX"})
    assert np.array_equal(np.asarray(open_lazy(tmp_path / "two.ome.tif", channel=1).data), 255 - GRAY)
    with pytest.raises(ImageError, match="--channel 0..1"):
        open_lazy(tmp_path / "two.ome.tif")
    with pytest.raises(ImageError, match="Channel 2 does not exist"):
        open_lazy(tmp_path / "two.ome.tif", channel=2)


def test_three_channels_of_a_tiff_are_channels(tmp_path):
    """QA: a DAPI, GFP, Cy5 OME-TIFF mosaic (axes CYX) was read as one colour picture, without a word (the small
    file was refused, asking for --channel)."""
    stack = np.moveaxis(RGB, -1, 0)
    tifffile.imwrite(tmp_path / "three.ome.tif", stack, tile=(256, 256),
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP", "Cy5"]}})
    with pytest.raises(ImageError, match="--channel 0..2"):
        open_lazy(tmp_path / "three.ome.tif")
    assert np.array_equal(np.asarray(open_lazy(tmp_path / "three.ome.tif", channel=2).data), RGB[..., 2])


def write_ome_zarr(path, levels, axes):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    for index, level in enumerate(levels):
        group.create_array(str(index), data=level, chunks=(1,) * (level.ndim - 2) + (256, 256))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": name} for name in axes],
                                   "datasets": [{"path": str(i)} for i in range(len(levels))]}]


def test_an_ome_zarr_opens_at_its_full_resolution(tmp_path):
    write_ome_zarr(tmp_path / "gray.zarr", [GRAY[None, None], GRAY[None, None, ::2, ::2]], "czyx"[-4:])
    write_ome_zarr(tmp_path / "rgb.zarr", [np.moveaxis(RGB, -1, 0)], "cyx")
    assert is_zarr(tmp_path / "gray.zarr") and not is_zarr(tmp_path)
    gray, rgb = open_lazy(tmp_path / "gray.zarr"), open_lazy(tmp_path / "rgb.zarr")
    assert gray.axes == "YX" and np.array_equal(np.asarray(gray.data), GRAY)
    assert rgb.rgb and np.array_equal(np.asarray(rgb.data), RGB)


@pytest.mark.parametrize("multiscales", [
    {"datasets": [{"path": "0"}]},  # a dict, not a list of images
    [{"datasets": [{"path": "9"}]}],  # no such array
    [{"datasets": []}],
    [{"datasets": [{"path": "0"}], "axes": [{"label": "y"}, {"label": "x"}]}],  # axes without names
    [{"version": "0.4"}],
    ["0"],
])
def test_ome_zarr_metadata_not_as_the_specification_has_it_is_one_sentence(tmp_path, multiscales):
    import zarr

    write_ome_zarr(tmp_path / "odd.zarr", [GRAY], "yx")
    zarr.open_group(str(tmp_path / "odd.zarr"), mode="r+").attrs["multiscales"] = multiscales
    with pytest.raises(ImageError, match="as the specification has it") as refused:
        open_lazy(tmp_path / "odd.zarr")
    assert str(refused.value).count(". ") == 0  # one sentence


def test_a_stack_is_one_sentence(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", np.stack([GRAY] * 4), metadata={"axes": "ZYX"})
    with pytest.raises(ImageError, match="not one 2-D plane"):
        open_lazy(tmp_path / "z.tif")
