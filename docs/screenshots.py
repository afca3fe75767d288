"""Drive the real napari window through the plugin's key steps and save a screenshot of each.

    xvfb-run -a python docs/screenshots.py                      # the default bundled model (HRNet)
    xvfb-run -a python docs/screenshots.py --weights FILE.safetensors

Writes to docs/images/:

1_open.png        the sample image and the widget
2_segmented.png   after Segment: one Labels layer, the count
3_threshold.png   the threshold slider moved: the same layer follows, the network does not run again
4_painted.png     a nucleus painted by hand with napari's brush: the count follows
5_kept.png        the threshold moved after the edit: the edited layer is kept, the result is a new layer
21_table.png      the table of nuclei sorted by area, its first row clicked: the view goes to that nucleus
6_stack.png       a stack being segmented plane by plane: progress bar and Cancel
widget.png        the widget alone

Look at them before putting them in the README.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QRect, Qt
from qtpy.QtWidgets import QApplication
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
WINDOW_SIZE = (1500, 900)


def wait(seconds: float = 0.3) -> None:
    """Let Qt draw (and workers report) for a moment."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a weights file to use instead of the default bundled model")
    parser.add_argument("--sample", default="fluorescence", choices=["fluorescence", "tissue", "brightfield"])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    viewer, widget = open_window(args.sample)
    if args.weights is not None and not widget.set_weights_file(args.weights):
        raise SystemExit(f"cannot use {args.weights}")
    shot = shooter(viewer, args.out, lambda: widget.count_label.text())

    shot("1_open.png")

    widget.segment_button.click()
    wait_for_run(widget)
    labels = widget.labels_layer
    if labels is None:
        raise SystemExit("the segmentation produced no layer; see the notifications above")
    shot("2_segmented.png")

    # The table: sorted by area, largest first; a click on its first row goes to that nucleus.
    table = widget.table_view
    table.sortByColumn(table.columns.index("area"), Qt.SortOrder.DescendingOrder)
    table.selectRow(0)
    table.clicked.emit(table.model().index(0, 0))
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 3
    labels.show_selected_label = True  # napari's "show selected": that nucleus alone
    wait()
    viewer.screenshot(str(args.out / "21_table.png"), canvas_only=False, flash=False)
    labels.show_selected_label = False
    print(f"{args.out / '21_table.png'}: label {labels.selected_label}, {table.row_values(0)['area']} px")

    widget.threshold_slider.setValue(round(widget.threshold_slider.value() + 0.2, 2))
    shot("3_threshold.png")

    # A hand correction: paint a nucleus where the model found none (the spot farthest from any
    # nucleus and from the image border), in a bright colour, then move the threshold.
    distance = ndi.distance_transform_edt(np.pad(labels.data == 0, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(distance), distance.shape)
    labels.brush_size = int(np.clip(2 * distance[y, x] - 6, 5, 30))
    first_free = int(labels.data.max()) + 1
    labels.selected_label = max(range(first_free, first_free + 50), key=lambda v: labels.get_color(v)[:3].sum())
    labels.paint((y, x), labels.selected_label)
    shot("4_painted.png")
    widget.threshold_slider.setValue(round(widget.threshold_slider.value() - 0.2, 2))
    shot("5_kept.png")

    # A stack: the sample and flipped copies of it, segmented plane by plane.
    image = viewer.layers[0]
    planes = [image.data, image.data[::-1], image.data[:, ::-1], image.data[::-1, ::-1]] * 4
    for layer in list(viewer.layers)[1:]:
        layer.visible = False
    viewer.add_image(np.stack(planes), name="stack", rgb=image.rgb)
    widget.segment_button.click()
    while widget.running and widget.progress_bar.value() < widget.progress_bar.maximum() * 0.4:
        wait(0.02)
    shot("6_stack.png")
    wait_for_run(widget)
    wait(2.0)  # the table of the last result is measured in a worker

    height = widget.layout().sizeHint().height()
    widget.grab(QRect(0, 0, widget.width(), height)).save(str(args.out / "widget.png"))
    print(args.out / "widget.png")
    wait(2.0)  # the table of the last result is measured in a worker; napari.run() would await it on quit
    viewer.close()


def open_window(sample: str | None = None):
    """``(viewer, widget)``: a napari window of the screenshots' size, the plugin's widget docked as a
    user docks it, and one of its samples open (if ``sample``)."""
    try:  # napari's one-time "PyQt5 is deprecated" toast would cover the image in every picture
        import napari._qt.qt_main_window as qt_main_window

        qt_main_window.SHOW_QT_WARNING = False
    except (ImportError, AttributeError):
        pass
    viewer = napari.Viewer(title="napari-nucleiseg")
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    if sample is not None:
        viewer.open_sample("napari-nucleiseg", sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-nucleiseg", "Nuclei segmentation")
    return viewer, widget


def shooter(viewer, out: Path, describe):
    """``shot(name)``: save a screenshot of the whole window as ``out/name`` and print ``describe()``."""
    def shot(name: str) -> None:
        wait()  # let the dock widget settle the canvas size first
        viewer.reset_view()
        wait()
        path = out / name
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"{path}: {describe()}")

    return shot


def wait_for_run(widget, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while widget.running and time.monotonic() < deadline:
        wait(0.1)


if __name__ == "__main__":
    main()
