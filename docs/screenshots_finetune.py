"""Screenshots of the real napari window: teaching the model from the user's corrections (issue 15).

    xvfb-run -a python docs/screenshots_finetune.py [--minutes 1]

The purple tissue sample is segmented with HRNet; its labels are then corrected inside a rectangle
as a user would (there, the sample's true labels from DSB2018, read from ../shared/data), the
rectangle drawn in a Shapes layer; HRNet is fine-tuned on it from the Fine-tune section, and the
image segmented again with the new model. The new model goes to a temporary folder, not the
user's. Writes to docs/images/:

14_finetune_before.png     HRNet's result on the tissue sample, the Fine-tune section still closed
15_finetune_corrected.png  the result corrected by hand in the checked rectangle; the Fine-tune section
                           open, the corrected layer ticked with its image, the rectangle as the region
16_finetune_running.png    fine-tuning: steps, loss and time left, and Cancel
17_finetune_after.png      the new model chosen under Model and its result in a layer of its own, beside
                           the corrected one

Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TRUTH = HERE.parents[1] / "shared" / "data" / "dsb2018" / "stage1_train" / "labels" / (
    "65c8527c16a016191118e8adc3d307fe3a73d37cbe05597a95aebd75daf8d051.png")  # the tissue sample's labels
#: The rectangle the user checked and corrected (y0, y1, x0, x1): the top half of the 256 x 320 sample.
CHECKED = (0, 128, 0, 320)
#: Taller than the other screenshots' window: the Fine-tune section lies under the results.
WINDOW_SIZE = (1500, 1250)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="the fine-tuning's time budget")
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    models = tempfile.TemporaryDirectory(prefix="nucleiseg-screenshots-")
    os.environ["NUCLEISEG_MODELS_DIR"] = models.name
    from skimage.io import imread

    from screenshots import open_window, shooter, wait, wait_for_run

    viewer, widget = open_window("tissue")
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    panel = widget.finetune_panel
    shot = shooter(viewer, args.out, lambda: f"{[layer.name for layer in viewer.layers]} | "
                                             f"{widget.count_label.text()} | {panel.progress_bar.text()} | "
                                             f"{panel.status_label.text()}")
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("hrnet"))
    widget.segment_button.click()
    wait_for_run(widget)
    result = widget.labels_layer
    shot("14_finetune_before.png")

    # The correction: inside the rectangle, the nuclei as they are (the true labels, numbered after
    # the result's own); outside it, the result as HRNet left it.
    y0, y1, x0, x1 = CHECKED
    truth = imread(TRUTH).astype(np.int32)
    corrected = np.array(result.data)
    inside = truth[y0:y1, x0:x1]
    corrected[y0:y1, x0:x1] = np.where(inside > 0, inside + int(corrected.max()), 0)
    result.data = corrected
    checked = viewer.add_shapes([[[y0, x0], [y0, x1 - 1], [y1 - 1, x1 - 1], [y1 - 1, x0]]], shape_type="rectangle",
                                name="checked", edge_color="yellow", face_color="transparent", edge_width=3)
    viewer.layers.selection.active = result
    panel.expand(animate=False)
    panel.choose_regions(checked)
    panel.minutes_spin.setValue(args.minutes)
    panel.name_edit.setText("hrnet-my-tissue")
    wait(1.0)
    shot("15_finetune_corrected.png")

    panel.finetune_button.click()
    while panel.running and panel.progress_bar.value() < panel.progress_bar.maximum() * 0.4:
        wait(0.1)
    shot("16_finetune_running.png")
    while panel.running:
        wait(0.2)
    if panel.last_model is None:
        raise SystemExit(f"the fine-tuning did not finish: {panel.status_label.text()}")

    panel.segment_button.click()
    wait_for_run(widget)
    wait(1.0)
    tuned = widget.labels_layer
    checked.visible = False
    tuned.contour = 2  # outlines over the corrected layer: where they differ shows
    print(f"true nuclei {int(truth.max())}; HRNet {int(np.unique(result.data[result.data > 0]).size - 0)} after "
          f"the correction; the fine-tuned model {int(tuned.data.max())}")
    shot("17_finetune_after.png")
    wait(2.0)
    viewer.close()
    models.cleanup()


if __name__ == "__main__":
    main()
