"""Screenshots of the real napari window: two models side by side, and a hand edit kept on top
(issue 17, items 6 and 10).

    xvfb-run -a python docs/screenshots_compare.py

Writes to docs/images/:

12_two_models.png   the fluorescence sample segmented with HRNet, then with UNet: two layers, the
                    UNet one drawn as outlines over the HRNet one
13_edit_on_top.png  a nucleus painted by hand into the UNet result and its largest erased, then the
                    threshold moved: the new result goes under the edited layer, which stays on top, drawn
                    as outlines (the erased nucleus shows as an outline), and the count says so

Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent


def main() -> None:
    from screenshots import open_window, shooter, wait, wait_for_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    viewer, widget = open_window("fluorescence")
    shot = shooter(viewer, args.out, lambda: f"{[layer.name for layer in viewer.layers]} | {widget.count_label.text()}")

    widget.model_combo.setCurrentIndex(widget.model_combo.findData("hrnet"))
    widget.segment_button.click()
    wait_for_run(widget)
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("unet"))
    widget.segment_button.click()
    wait_for_run(widget)
    unet = viewer.layers[-1]
    viewer.layers[1].visible = True  # HRNet's result, which the new one hid: its eye ticked, to compare
    unet.contour = 2
    shot("12_two_models.png")

    # A hand correction in the UNet result: a nucleus painted where it found none.
    distance = ndi.distance_transform_edt(np.pad(unet.data == 0, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(distance), distance.shape)
    unet.contour = 0
    unet.brush_size = int(np.clip(2 * distance[y, x] - 6, 5, 30))
    unet.selected_label = int(unet.data.max()) + 1
    unet.paint((y, x), unet.selected_label)
    # ... and one erased: the largest it found (the new result finds it again, drawn as an outline under the edit).
    areas = np.bincount(unet.data.ravel())
    areas[[0, unet.selected_label]] = 0
    unet.fill(tuple(int(c) for c in np.argwhere(unet.data == np.argmax(areas))[0]), 0)
    wait()
    viewer.layers[1].visible = False  # HRNet's result
    widget.threshold_slider.setValue(round(widget.threshold_slider.value() - 0.2, 2))
    wait(1.0)
    shot("13_edit_on_top.png")
    wait(2.0)
    viewer.close()


if __name__ == "__main__":
    main()
