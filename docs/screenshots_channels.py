"""Screenshots of the real napari window for a two-channel image (issue 17, item 4).

    xvfb-run -a python docs/screenshots_channels.py

Writes to docs/images/:

10_planes.png     DAPI + a marker as a (2, Y, X) image that nothing names (a TIFF opened as it
                  comes): segmented as two planes, the count says how to choose a channel
11_channel.png    the same image with Channel 0 chosen: DAPI's nuclei alone, in a layer of their own
24_rgb_colour.png a 16-bit (Y, X, 3) array (RGB to napari) of DAPI in red beside the marker in green
                  and blue, with Channel 'red' chosen: DAPI's nuclei alone

The DAPI channel is the bundled fluorescence sample; the marker channel is made up: bright
blurred spots between the nuclei, which the model takes for nuclei when it is given them.

Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_nucleiseg._sample_data import read_sample

HERE = Path(__file__).resolve().parent


def dapi_and_marker(seed: int = 0) -> np.ndarray:
    """``(2, Y, X)`` uint8: the fluorescence sample, and spots where it has no nuclei."""
    dapi = read_sample("fluorescence")
    rng = np.random.default_rng(seed)
    background = ndi.distance_transform_edt(dapi < np.percentile(dapi, 60))
    spots = np.zeros(dapi.shape, dtype=np.float32)
    ys, xs = np.nonzero(background > 12)
    for index in rng.choice(len(ys), size=25, replace=False):
        spots[ys[index], xs[index]] = 1.0
    marker = ndi.gaussian_filter(ndi.binary_dilation(spots > 0, iterations=5).astype(np.float32), 2)
    marker = np.clip(marker / marker.max() * 230 + rng.normal(8, 3, dapi.shape), 0, 255).astype(np.uint8)
    return np.stack([dapi, marker])


def main() -> None:
    from screenshots import open_window, shooter, wait, wait_for_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    viewer, widget = open_window()
    viewer.add_image(dapi_and_marker(), name="DAPI + marker")
    shot = shooter(viewer, args.out, lambda: f"{widget.channel_combo.currentText()} | {widget.count_label.text()}")

    viewer.dims.set_current_step(0, 1)  # the marker plane: what would be counted with DAPI's
    widget.segment_button.click()
    wait_for_run(widget)
    shot("10_planes.png")

    widget.channel_combo.setCurrentIndex(widget.channel_combo.findText("channel 0"))
    widget.segment_button.click()
    wait_for_run(widget)
    viewer.dims.set_current_step(0, 0)
    viewer.layers["DAPI + marker nuclei"].visible = False
    shot("11_channel.png")

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    dapi, marker = dapi_and_marker().astype(np.uint16) * 257
    viewer.add_image(np.stack([dapi, marker, marker // 2 + 2000], axis=-1), name="three channels")
    widget.channel_combo.setCurrentIndex(widget.channel_combo.findText("red"))
    widget.segment_button.click()
    wait_for_run(widget)
    shot("24_rgb_colour.png")
    wait(2.0)
    viewer.close()


if __name__ == "__main__":
    main()
