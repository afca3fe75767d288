"""Screenshots of the real napari window: 3-D nuclei from a Z stack, and which result the settings act
on (issue 17, items 5 and 8).

    xvfb-run -a python docs/screenshots_3d_and_target.py

Writes to docs/images/:

18_stack_3d.png        a Z stack (made from the fluorescence sample: each nucleus a flattened ball
                       through some of 7 planes, its axis named z) segmented with "3-D nuclei (link
                       planes)" ticked, as it is for a Z axis: the count of 3-D nuclei and of their
                       sections, each nucleus one colour through the planes (drawn in 3-D)
19_sliders_target.png  the fluorescence and tissue samples segmented, the tissue result's threshold
                       lowered and its border nuclei excluded, then the fluorescence result selected in
                       the layer list: the line names it, and the controls show the settings it was made
                       with (the tissue result keeps its own)

Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
PLANES = 7
#: The planes are drawn this many pixels apart in the 3-D view, and seen from an angle, so that each
#: nucleus shows as one column of colour.
PLANE_SPACING = 6
CAMERA_ANGLES = (-20, 35, 60)


def z_stack(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(PLANES, Y, X)`` from a 2-D image of nuclei: each bright object is a ball flattened to its
    outline, centred on a plane of its own, whose sections shrink to nothing over about 3 planes each side."""
    rng = np.random.default_rng(seed)
    foreground = image > np.percentile(image, 60)
    objects, count = ndi.label(foreground)
    depth = ndi.distance_transform_edt(foreground)
    radius = np.asarray(ndi.maximum(depth, objects, np.arange(count + 1)))
    centre = rng.uniform(2.0, PLANES - 3.0, count + 1)
    half = rng.uniform(2.2, 3.5, count + 1)
    background = np.percentile(image, 20)
    planes = []
    for z in range(PLANES):
        u = np.clip(np.abs(z - centre[objects]) / half[objects], 0, 1)
        inside = foreground & (u < 1) & (depth >= radius[objects] * (1 - np.sqrt(1 - u**2)))
        planes.append(np.where(inside, image, background))
    return np.stack(planes).astype(image.dtype)


def main() -> None:
    from screenshots import open_window, shooter, wait, wait_for_run

    from napari_nucleiseg._sample_data import read_sample

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()

    # 18: a Z stack, its nuclei linked through the planes
    viewer, widget = open_window()
    stack = viewer.add_image(z_stack(read_sample("fluorescence")), name="z stack", axis_labels=("z", "y", "x"),
                             scale=(PLANE_SPACING, 1, 1))
    widget.segment_button.click()
    wait_for_run(widget)
    wait(1.0)
    stack.visible = False
    viewer.dims.ndisplay = 3
    wait()
    viewer.reset_view()
    viewer.camera.angles = CAMERA_ANGLES
    viewer.camera.zoom *= 0.9
    wait()
    viewer.screenshot(str(args.out / "18_stack_3d.png"), canvas_only=False, flash=False)
    print(f"{args.out / '18_stack_3d.png'}: {widget.count_label.text()} | 3-D: {widget.volumes_check.isChecked()}")
    wait(2.0)
    viewer.close()

    # 19: two results; the settings act on the one selected
    viewer, widget = open_window("fluorescence")
    shot = shooter(viewer, args.out, lambda: f"{widget.target_label.text()} | {widget.count_label.text()} | "
                                             f"threshold {widget.threshold_slider.value()}")
    widget.segment_button.click()
    wait_for_run(widget)
    fluorescence_result = viewer.layers[-1]
    viewer.open_sample("napari-nucleiseg", "tissue")
    widget.segment_button.click()
    wait_for_run(widget)
    widget.threshold_slider.setValue(round(widget.threshold_slider.value() - 0.15, 2))  # the tissue result's
    widget.exclude_border_check.setChecked(True)
    wait(1.0)
    for layer in list(viewer.layers)[-2:]:  # the tissue sample and its result lie on the fluorescence one
        layer.visible = False
    viewer.layers.selection.active = fluorescence_result  # its own settings come back
    wait(1.0)
    shot("19_sliders_target.png")
    wait(2.0)
    viewer.close()


if __name__ == "__main__":
    main()
