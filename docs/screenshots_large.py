"""Screenshot of the real napari window: an image larger than memory segmented block by block (issue 16,
part 2).

    xvfb-run -a python docs/screenshots_large.py [--side 8192] [--model unet]

Writes docs/images/20_large.png: a ``--side`` px gray mosaic of real nuclei (DSB2018 val fluorescence
images, ``training.data.dsb_mosaic``) opened as a dask-backed layer, segmented by the widget block by
block into an OME-Zarr store (in a temporary cache folder), shown as one lazy multiscale Labels layer,
zoomed in on the densest part so that the nuclei are visible; the count line says where the labels
are, and the line above the settings that they cannot change this result.

Look at it before putting it in the README.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DSB = HERE.parents[1] / "shared" / "data" / "dsb2018"
#: The part of the mosaic shown (image pixels a side), around its densest nuclei.
SHOWN_SIDE = 900


def densest_centre(table, side: int, cell: int) -> tuple[float, float]:
    """The centre of the ``cell`` px square of a ``side`` px image that holds most nuclei (by centroid)."""
    bins = max(1, side // cell)
    counts, ys, xs = np.histogram2d(table["centroid_y"], table["centroid_x"], bins=bins, range=[[0, side], [0, side]])
    y, x = np.unravel_index(np.argmax(counts), counts.shape)
    return (ys[y] + ys[y + 1]) / 2, (xs[x] + xs[x + 1]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--model", default="unet", choices=["unet", "unetpp", "hrnet"])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    cache = tempfile.TemporaryDirectory(prefix="nucleiseg-screenshot-cache-")
    os.environ["XDG_CACHE_HOME"] = cache.name  # the store goes to a temporary cache folder

    import dask.array as da
    from screenshots import open_window, wait, wait_for_run

    sys.path.insert(0, str(HERE.parent))
    from training.data import dsb_mosaic

    viewer, widget = open_window()
    viewer.add_image(da.from_array(dsb_mosaic(DSB, args.side), chunks=1024), name="mosaic")
    widget.model_combo.setCurrentIndex(widget.model_combo.findData(args.model))
    widget.segment_button.click()
    wait_for_run(widget, timeout=3600)
    labels = widget.labels_layer
    if labels is None or not labels.multiscale:
        raise SystemExit("the segmentation produced no block-by-block layer; see the notifications above")
    wait(1.0)
    canvas = viewer.window._qt_viewer.canvas.size
    viewer.camera.center = densest_centre(labels.features, args.side, SHOWN_SIDE)
    viewer.camera.zoom = min(canvas) / SHOWN_SIDE
    wait(3.0)  # napari reads the chunks of the level it shows
    path = args.out / "20_large.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"{path}: {widget.count_label.toolTip().splitlines()[-1]} | {widget.target_label.text()}")
    viewer.close()
    cache.cleanup()


if __name__ == "__main__":
    main()
