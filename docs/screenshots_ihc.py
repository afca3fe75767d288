"""Screenshots of the real napari window for an immunohistochemistry section (Brown nuclei).

    PYTHONPATH=. xvfb-run -a python docs/screenshots_ihc.py

Writes to docs/images/:

22_ihc_off.png    a Ki-67-like section (the bundled H&E sample restained: hematoxylin, and half of its nuclei
                  brown with DAB), segmented as it is: most brown nuclei are missed, and a note says the
                  image holds brown
23_ihc_on.png     the same with Brown nuclei ticked: brown nuclei found as blue ones are

The labels are shown as outlines so the stain under them shows. No IHC image with nucleus labels is at hand;
the restaining is training.data.restain_as_ihc's. Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_nucleiseg import segment
from napari_nucleiseg._sample_data import read_sample

HERE = Path(__file__).resolve().parent


def ki67_section() -> np.ndarray:
    """``(Y, X, 3)`` uint8: the tissue sample restained, every other nucleus HRNet finds in it brown."""
    from training.data import restain_as_ihc

    tissue = read_sample("tissue")[..., :3]
    nuclei = segment(tissue, model="hrnet").labels
    return restain_as_ihc(tissue, (nuclei > 0) & (nuclei % 2 == 0))


def main() -> None:
    from screenshots import open_window, shooter, wait, wait_for_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    viewer, widget = open_window()
    viewer.add_image(ki67_section(), rgb=True, name="Ki-67 section")
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("hrnet"))
    shot = shooter(viewer, args.out, lambda: f"brown nuclei {widget.brown_check.isChecked()} | "
                                             f"{widget.count_label.text()}")
    for checked, name in ((False, "22_ihc_off.png"), (True, "23_ihc_on.png")):
        widget.brown_check.setChecked(checked)
        widget.segment_button.click()
        wait_for_run(widget)
        wait(1.0)
        viewer.layers["Ki-67 section nuclei"].contour = 2
        shot(name)
    wait(2.0)
    viewer.close()


if __name__ == "__main__":
    main()
