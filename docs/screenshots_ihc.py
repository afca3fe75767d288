"""Screenshot of the real napari window for an IHC section (brown DAB-positive nuclei beside blue ones).

    xvfb-run -a python docs/screenshots_ihc.py

Writes docs/images/22_ihc.png: a MoNuSeg 2018 test image (from ../shared when present, else the bundled
tissue sample), top-left 500 x 500, restained as an IHC section with a quarter of its labelled nuclei
brown (training.data.restain_as_ihc, as training/ihc_check.py measures), segmented with HRNet at Auto,
the result drawn as outlines. Look at it before putting it in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MONUSEG_TEST = HERE.parents[1] / "shared" / "data" / "monuseg2018" / "test"


def section() -> tuple[np.ndarray, str]:
    """The IHC section and its name."""
    from training.data import list_ids, load_pair, restain_as_ihc

    if MONUSEG_TEST.is_dir():
        sample_id = list_ids(MONUSEG_TEST, None)[0]
        tissue, truth = load_pair(MONUSEG_TEST, sample_id)
        tissue, truth = tissue[:500, :500], truth[:500, :500]
    else:
        from napari_nucleiseg import segment
        from napari_nucleiseg._sample_data import read_sample

        sample_id, tissue = "tissue sample", read_sample("tissue")[..., :3]
        truth = segment(tissue, model="hrnet").labels
    nuclei = np.unique(truth[truth > 0])
    brown = nuclei[np.random.default_rng(0).random(nuclei.size) < 0.25]
    return restain_as_ihc(tissue, np.isin(truth, brown)), f"IHC (restained) {sample_id[:12]}"


def main() -> None:
    from screenshots import open_window, shooter, wait, wait_for_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    viewer, widget = open_window()
    shot = shooter(viewer, args.out, lambda: f"{widget.count_label.text()} | {widget.diameter_auto_check.text()}")
    image, name = section()
    viewer.add_image(image, name=name, rgb=True)
    widget.segment_button.click()
    wait_for_run(widget)
    result = viewer.layers[-1]
    result.contour = 2
    shot("22_ihc.png")
    wait(2.0)
    viewer.close()


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))  # training/
    main()
