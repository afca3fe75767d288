"""Screenshots of the real napari window for nuclei of other sizes and stains (issue 14).

    xvfb-run -a python docs/screenshots_diameter.py

Writes to docs/images/:

7_big_fixed.png   big nuclei (the fluorescence sample enlarged 3x: about 50 px across) segmented
                  at the model's own diameter, i.e. not resized, as the plugin did before
8_big_auto.png    the same image with Auto: the estimated diameter, whole nuclei
9_tissue.png      an H&E tissue image (MoNuSeg 2018 test, from ../shared when present, else the
                  bundled tissue sample) segmented with Auto

Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skimage.io import imread

from napari_nucleiseg.scale import rescale_image

HERE = Path(__file__).resolve().parent
MONUSEG_TEST = HERE.parents[1] / "shared" / "data" / "monuseg2018" / "test" / "images"


def main() -> None:
    from screenshots import open_window, shooter, wait, wait_for_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    viewer, widget = open_window()
    shot = shooter(viewer, args.out, lambda: f"{widget.count_label.text()} | {widget.diameter_auto_check.text()}")

    sample = imread(Path(__import__("napari_nucleiseg").__file__).parent / "samples" / "fluorescence.png")
    big = rescale_image(sample, 3.0)
    viewer.add_image(big, name="big nuclei (sample x3)")
    from napari_nucleiseg.api import load_model

    widget.set_diameter(load_model("hrnet").diameter)  # the default model's own: nothing is resized
    widget.segment_button.click()
    wait_for_run(widget)
    shot("7_big_fixed.png")
    widget.set_diameter(None)
    wait_for_run(widget)
    shot("8_big_auto.png")

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    tissue = sorted(MONUSEG_TEST.glob("*.png"))
    if tissue:
        viewer.add_image(imread(tissue[0]), name=f"H&E {tissue[0].stem}", rgb=True)
    else:
        viewer.open_sample("napari-nucleiseg", "tissue")
    widget.segment_button.click()
    wait_for_run(widget)
    shot("9_tissue.png")
    wait(2.0)
    viewer.close()


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
