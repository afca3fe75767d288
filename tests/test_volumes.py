"""3-D nuclei from Z stacks (issue 17, item 5): the planes' nuclei linked by overlap, measured as
volumes, through the API's stack result and ``nucleiseg segment`` on Z and TZ TIFFs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_nucleiseg.cli import main
from napari_nucleiseg.tables import PixelSize, nuclei_table
from napari_nucleiseg.volumes import link_planes, measure_volumes


def balls(shape, centers, radius) -> np.ndarray:
    """``(Z, Y, X)`` labels of balls, one label per ball."""
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for number, (z, y, x) in enumerate(centers, start=1):
        labels[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = number
    return labels


def per_plane(labels: np.ndarray) -> np.ndarray:
    """The labels as a plane-by-plane segmentation gives them: each plane's objects numbered on from the
    last plane's, and those under 10 pixels (a ball's tip) dropped, as a model's smallest nucleus does."""
    out = np.zeros_like(labels)
    offset = 0
    for z in range(labels.shape[0]):
        ids, sizes = np.unique(labels[z][labels[z] > 0], return_counts=True)
        ids = ids[sizes >= 10]
        for number, value in enumerate(ids, start=offset + 1):
            out[z][labels[z] == value] = number
        offset += ids.size
    return out


def test_the_sections_of_each_nucleus_get_one_label_and_neighbours_stay_apart():
    # two nuclei side by side (their sections touch), and two above one another with an empty plane between
    truth = balls((18, 64, 64), [(5, 20, 20), (6, 20, 32), (2, 48, 30), (15, 48, 30)], radius=6)
    truth[:, :, 26] = np.where(truth[:, :, 26] == 2, 0, truth[:, :, 26])
    planes = per_plane(truth)
    assert len(np.unique(planes)) - 1 > 30  # every section its own object
    linked = link_planes(planes, axis=0)
    assert len(np.unique(linked)) - 1 == 4
    for number in range(1, 5):  # each true ball is one linked label, and no label spans two balls
        assert len(np.unique(linked[(truth == number) & (linked > 0)])) == 1
    assert linked.dtype == np.uint16 and np.array_equal(linked > 0, planes > 0)


def test_time_points_are_never_linked_and_z_is_found_among_the_leading_axes():
    ball = balls((6, 40, 40), [(3, 20, 20)], radius=5)
    stack = np.stack([per_plane(ball), per_plane(ball) + np.where(ball > 0, 100, 0)])  # (T, Z, Y, X)
    linked = link_planes(stack, axis=1)
    assert len(np.unique(linked[0])) - 1 == 1 and len(np.unique(linked[1])) - 1 == 1
    assert np.unique(linked[0][linked[0] > 0]) != np.unique(linked[1][linked[1] > 0])
    with pytest.raises(ValueError):
        link_planes(stack, axis=2)  # Y is not a leading axis


def test_the_table_of_3d_nuclei_holds_volumes_and_centroids():
    truth = balls((10, 50, 50), [(4, 15, 15), (5, 35, 30)], radius=4)
    image = np.where(truth == 1, 200, np.where(truth == 2, 100, 10)).astype(np.uint8)
    table = measure_volumes(truth, image)
    assert list(table["label"]) == [1, 2]
    assert list(table["volume"]) == [int((truth == 1).sum()), int((truth == 2).sum())]
    assert table["centroid_z"].tolist() == pytest.approx([4, 5]) and table["centroid_x"].tolist() == pytest.approx([15, 30])
    assert list(table["first_plane"]) == [0, 1] and list(table["last_plane"]) == [8, 9]
    assert table["mean_intensity"].tolist() == pytest.approx([200, 100])
    saturated = image.astype(np.float32)
    saturated[4, 15, 15], saturated[5, 35, 30] = np.inf, np.nan  # left out of the means, as in 2-D
    assert measure_volumes(truth, saturated)["mean_intensity"].tolist() == pytest.approx([200, 100])
    stack = np.stack([truth, np.where(truth == 1, 1, 0)])  # (T, Z, Y, X): 2 nuclei, then 1
    both = nuclei_table(stack, None, False, PixelSize(0.5, 0.5, "um", (10.0, 0.0), z=2.0, z_origin=-3.0), volume_axis=1)
    assert list(both["axis_0"]) == [0, 0, 1] and "area" not in both
    assert both["volume_um3"].tolist() == pytest.approx(both["volume"] * 0.5)
    # the centroid in micrometres along z as along y and x (QA: z was given in planes only)
    assert both["centroid_z_um"].tolist() == pytest.approx(-3.0 + 2.0 * both["centroid_z"])
    assert both["centroid_y_um"].tolist() == pytest.approx(10.0 + 0.5 * both["centroid_y"])
    assert list(both.columns).index("centroid_z_um") + 1 == list(both.columns).index("centroid_y_um")


def stack_image(shape=(7, 96, 96)) -> np.ndarray:
    """A Z stack of three bright balls on a dark, noisy background."""
    truth = balls(shape, [(3, 28, 28), (3, 30, 68), (3, 70, 48)], radius=11)
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(20, 4, shape) + np.where(truth > 0, 160, 0), 0, 255).astype(np.uint8)


def run(tmp_path, name, data, axes, *extra) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    folder = tmp_path / name
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", data, imagej=True, metadata={"axes": axes})
    out = tmp_path / f"{name}-out"
    assert main(["segment", str(folder), "--out", str(out), "--model", "unet", "--diameter", "22", *extra]) == 0
    return pd.read_csv(out / "counts.csv"), pd.read_csv(out / "nuclei.csv"), tifffile.imread(out / "stack_labels.tif")


def test_cli_links_a_z_stack_into_3d_nuclei_and_keeps_planes_apart_with_no_3d(tmp_path):
    counts, nuclei, labels = run(tmp_path, "z", stack_image(), "ZYX")
    assert counts["nuclei"].tolist() == [3] and bool(counts["nuclei_3d"][0])
    assert len(nuclei) == 3 and {"volume", "centroid_z", "first_plane", "last_plane"} <= set(nuclei.columns)
    assert "z" not in nuclei.columns and nuclei["centroid_z"].round().tolist() == [3, 3, 3]
    assert labels.shape == (7, 96, 96) and len(np.unique(labels)) - 1 == 3
    flat_counts, flat_nuclei, _ = run(tmp_path, "flat", stack_image(), "ZYX", "--no-3d")
    assert flat_counts["nuclei"][0] > 3 and not bool(flat_counts["nuclei_3d"][0]) and "z" in flat_nuclei


def test_a_2d_image_beside_a_z_stack_keeps_the_plane_numbers_whole_in_nuclei_csv(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", stack_image(), imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(folder / "flat.tif", stack_image()[3])
    out = tmp_path / "mixed-out"
    assert main(["segment", str(folder), "--out", str(out), "--model", "unet", "--diameter", "22"]) == 0
    lines = (out / "nuclei.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    stack_rows = [row for row in rows if row["file"].endswith("stack.tif")]
    assert len(stack_rows) == 3 and [row["first_plane"] for row in stack_rows] == ["0", "0", "0"]
    assert {row["first_plane"] for row in rows if row["file"].endswith("flat.tif")} == {""}  # a 2-D nucleus has none


def test_cli_links_z_within_each_time_point_and_counts_them_apart(tmp_path):
    data = np.stack([stack_image(), stack_image()[:, :, ::-1]])  # (T, Z, Y, X)
    counts, nuclei, labels = run(tmp_path, "tz", data, "TZYX")
    assert counts["nuclei"].tolist() == [6]
    assert nuclei.groupby("t").size().tolist() == [3, 3] and "z" not in nuclei
    assert len(np.unique(labels[0])) - 1 == 3 and not set(np.unique(labels[0])[1:]) & set(np.unique(labels[1])[1:])


def test_linking_is_a_post_processing_setting_checked_like_the_others():
    from napari_nucleiseg.pipeline import labels_from_stack
    from napari_nucleiseg.settings import PostprocessSettings

    settings = PostprocessSettings(threshold=0.5, min_size=10)
    assert settings.replace(link_axis=0).link_axis == 0 and settings.replace(link_axis=0).replace(link_axis=None).link_axis is None
    assert "link_axis" not in settings.options() and settings.replace(link_axis=0).row()["nuclei_3d"]
    for bad in (-1, 0.5, "z", True):
        with pytest.raises(ValueError, match="link_axis must be None or the number of a stack's leading axis"):
            settings.replace(link_axis=bad)
    truth = balls((7, 48, 48), [(3, 24, 24)], radius=8)
    nucleus = np.where(truth > 0, 0.9, 0.05).astype(np.float32)
    probabilities = np.stack([nucleus, np.zeros_like(nucleus)], axis=1)  # (Z, 2, Y, X)
    assert len(np.unique(labels_from_stack(probabilities, settings))) - 1 == 7  # one per plane
    assert len(np.unique(labels_from_stack(probabilities, settings.replace(link_axis=0)))) - 1 == 1


def test_the_axis_to_link_is_a_named_z_axis_or_an_unnamed_stacks_only_axis_never_time():
    from napari_nucleiseg.volumes import find_volume_axis

    assert find_volume_axis((5, 64, 64), False, ("z", "y", "x")) == (0, True)
    assert find_volume_axis((5, 64, 64), False, ("0", "1", "2"), {"axes": "ZYX"}) == (0, True)
    assert find_volume_axis((5, 64, 64), False, ("0", "1", "2")) == (0, False)  # unnamed: the user may tick it
    assert find_volume_axis((5, 64, 64), False, ("t", "y", "x")) == (None, False)
    assert find_volume_axis((2, 5, 64, 64), False, ("t", "z", "y", "x")) == (1, True)
    assert find_volume_axis((2, 5, 64, 64), False, ()) == (None, False)  # two axes, neither named Z
    assert find_volume_axis((2, 5, 64, 64), False, ("c", "z", "y", "x"), channel_axis=0) == (0, True)  # of ZYX
    assert find_volume_axis((64, 64, 3), True, ()) == (None, False)
    # an RGB stack: the viewer labels its axes without the colours (QA: its Z was not read, its T was offered)
    assert find_volume_axis((3, 64, 64, 3), True, ("z", "y", "x")) == (0, True)
    assert find_volume_axis((3, 64, 64, 3), True, ("t", "y", "x")) == (None, False)
    assert find_volume_axis((3, 64, 64, 3), True, ("0", "1", "2"), {"axes": "ZYXS"}) == (0, True)
    assert find_volume_axis((3, 64, 64, 3), True, ("z", "t", "y", "x")) == (None, False)  # the viewer's last 3
    assert find_volume_axis((4, 3, 64, 64, 3), True, ("c", "z", "y", "x"), channel_axis=0) == (0, True)
    assert find_volume_axis((3, 64, 64), False, ("0", "1", "2"), {"axes": "SYX"}) == (None, False)  # planar RGB
    assert find_volume_axis((3, 64, 64), False, ("c", "y", "x")) == (None, False)  # channels as planes


def test_the_cli_links_a_files_z_axis_unless_told_not_and_an_unnamed_stack_only_with_3d():
    from napari_nucleiseg.cli import volume_axis

    assert volume_axis("Z", None) == 0 and volume_axis("TZ", None) == 1  # a file's Z axis, by default
    assert volume_axis("Z", False) is None  # --no-3d
    assert volume_axis("Q", None) is None and volume_axis("Q", True) == 0  # unnamed: only with --3d
    assert volume_axis("T", True) is None and volume_axis("TQ", True) is None  # never time; two unnamed axes
    assert volume_axis("", True) is None  # a single plane
