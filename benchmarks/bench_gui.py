"""What the user of the plugin waits for outside the network: prints a table.

1. ``import napari_nucleiseg`` in a fresh interpreter (median of several), and
   whether it imported torch, napari or Qt (it must not import torch).
2. The slider update at 2048x2048 in a real napari viewer: re-threshold + split +
   relabel (``labels_from_probabilities``), measure (``measure_nuclei``), writing
   the Labels layer's data and features, and the canvas redraw, each timed, on a
   synthetic probability map of about 5,000 blurred nuclei, some touching.
   With the plugin's widget present, also the same update driven through its
   threshold slider.
3. Opening the dock widget: constructing ``NucleiSegWidget(viewer)`` and docking it.

Needs a display: run it as ``xvfb-run -a python benchmarks/bench_gui.py`` on a
machine without one. Timings through xvfb use software OpenGL, so the redraw
costs more than on a laptop's GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description, synthetic_image, synthetic_probabilities  # noqa: E402

#: Thresholds the slider moves through; each differs from the last, so every update is real work.
THRESHOLDS = (0.45, 0.55, 0.5, 0.6, 0.4)

IMPORT_PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
seconds = time.perf_counter() - start
heavy = {{name: name in sys.modules for name in ("torch", "napari", "qtpy", "PyQt5", "PyQt6", "pandas", "skimage")}}
print(json.dumps({{"seconds": seconds, "imported": heavy}}))
"""


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def import_times(module: str, repeats: int) -> tuple[list[float], dict[str, bool]]:
    """Seconds to import ``module`` in each of ``repeats`` fresh interpreters, and what it pulled in."""
    times, imported = [], {}
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        times.append(result["seconds"])
        imported = result["imported"]
    return times, imported


def bench_import(repeats: int) -> None:
    rows = []
    torch_free = True
    for module in ("napari_nucleiseg", "napari_nucleiseg._sample_data"):
        times, imported = import_times(module, repeats)
        pulled = ", ".join(name for name, present in imported.items() if present) or "none of them"
        torch_free &= not imported["torch"]
        rows.append([f"import {module}", ms(statistics.median(times)), ms(min(times)), pulled])
    print(f"## Import ({repeats} fresh interpreters each)\n")
    print(format_table(["what", "median ms", "min ms", "also imported (torch, napari, qtpy, PyQt5, PyQt6, pandas, skimage)"],
                       rows))
    print(f"\ntorch imported: {'no (as required)' if torch_free else 'YES: importing the package must not import torch'}\n")


class Redraw:
    """Forces a redraw of the viewer's canvas and waits for its draw event."""

    def __init__(self, viewer) -> None:
        self.draws = 0
        self.canvas = None
        try:  # napari has no public handle on its vispy canvas
            self.canvas = viewer.window._qt_viewer.canvas
            self.canvas.events.draw.connect(self._count)
        except AttributeError:
            pass

    def _count(self, event=None) -> None:
        self.draws += 1

    def __call__(self, app) -> bool:
        """Process pending events and paint once; True when a draw event was seen."""
        before = self.draws
        app.processEvents()
        if self.canvas is not None:
            self.canvas.native.repaint()
            app.processEvents()
        return self.draws > before


def bench_slider(viewer, app, size: int, repeats: int, neck_ratio: float = 0.0) -> dict[str, float]:
    """Median seconds (wall) of each step of a slider update at ``size``x``size``; CPU time printed beside.

    CPU time (``time.process_time``, all threads of this process) is what a step costs even
    when other processes share the cores; wall time is what the user waits on this machine.
    """
    from napari_nucleiseg import postprocess

    probabilities = synthetic_probabilities(size)
    image = synthetic_image(size)
    viewer.add_image(image, name="image")
    labels = postprocess.labels_from_probabilities(probabilities, 0.5)
    layer = viewer.add_labels(labels, name="nuclei")
    redraw = Redraw(viewer)
    redraw(app)
    measure = getattr(postprocess, "measure_nuclei", None)
    names = ("labels_from_probabilities", "measure_nuclei", "layer.data =", "layer.features =", "redraw")
    steps: dict[str, list[float]] = {name: [] for name in names}
    cpu_steps: dict[str, list[float]] = {name: [] for name in names}
    counts, drawn = [], True

    def timed(name, function):
        start, cpu = time.perf_counter(), time.process_time()
        result = function()
        steps[name].append(time.perf_counter() - start)
        cpu_steps[name].append(time.process_time() - cpu)
        return result

    for round_ in range(repeats):
        threshold = THRESHOLDS[round_ % len(THRESHOLDS)]
        labels = timed("labels_from_probabilities",
                       lambda: postprocess.labels_from_probabilities(probabilities, threshold, neck_ratio=neck_ratio))
        counts.append(int(labels.max()))
        if measure is not None:
            table = timed("measure_nuclei", lambda: measure(labels, image))
        timed("layer.data =", lambda: setattr(layer, "data", labels))
        if measure is not None:
            timed("layer.features =", lambda: setattr(layer, "features", table))
        drawn &= timed("redraw", lambda: redraw(app))
    viewer.layers.clear()
    medians = {name: statistics.median(times) for name, times in steps.items() if times}
    cpu_medians = {name: statistics.median(times) for name, times in cpu_steps.items() if times}
    print(f"## Slider update, {size}x{size}, {len(THRESHOLDS)} thresholds cycled, neck ratio {neck_ratio:g}, "
          f"median of {repeats}\n")
    print(f"{min(counts)}-{max(counts)} nuclei per update"
          + ("" if measure else "; postprocess.measure_nuclei does not exist yet: measuring skipped")
          + ("" if drawn else "; no draw event was seen: the redraw time is a lower bound") + "\n")
    rows = [[name, ms(seconds), ms(cpu_medians[name])] for name, seconds in medians.items()]
    without_table = [k for k in medians if k not in ("measure_nuclei", "layer.features =")]
    rows.append(["total without the table (what the slider waits for)",
                 ms(sum(medians[k] for k in without_table)), ms(sum(cpu_medians[k] for k in without_table))])
    rows.append(["total with the table", ms(sum(medians.values())), ms(sum(cpu_medians.values()))])
    print(format_table(["step", "median ms", "median CPU ms"], rows))
    print("\nTarget: <= 100 ms.\n")
    return medians


def bench_widget_slider(viewer, app, size: int, repeats: int, neck_ratio: float = 0.0) -> None:
    """The same update driven through the widget's own threshold slider (needs its private cache)."""
    from napari_nucleiseg import _widget

    widget = _widget.NucleiSegWidget(viewer)
    image_layer = viewer.add_image(synthetic_image(size), name="image")
    probabilities = synthetic_probabilities(size)
    try:
        from napari_nucleiseg._rethreshold import Cache
        from napari_nucleiseg.compact import CompactProbabilities
        from napari_nucleiseg.settings import PostprocessSettings

        widget.run_synchronously = True  # every slider step labelled at once, as small images are
        settings = PostprocessSettings(threshold=0.5, boundary_threshold=0.5, neck_ratio=neck_ratio)
        cache = Cache(image_layer, CompactProbabilities.from_float(probabilities), settings, ("synthetic", 0))
        widget.rethresholder.set_cache(cache)
        widget.rethresholder.request()
    except (AttributeError, TypeError) as error:
        print(f"## Slider update through the widget: skipped (its internals changed: {error})\n")
        return
    redraw = Redraw(viewer)
    redraw(app)
    slider, update_times = widget.threshold_slider, []
    for round_ in range(repeats):
        start = time.perf_counter()
        slider.setValue(THRESHOLDS[round_ % len(THRESHOLDS)])
        redraw(app)
        update_times.append(time.perf_counter() - start)
    widget.close()
    viewer.layers.clear()
    print(f"## Slider update through NucleiSegWidget, {size}x{size}, median of {repeats}\n")
    print(format_table(["step", "median ms"],
                       [["slider.setValue -> labels written and drawn", ms(statistics.median(update_times))]]))
    print("\n(The widget measures the table later, once the slider rests: measure_nuclei above.)\n")


def bench_widget_open(viewer, app, repeats: int) -> None:
    start = time.perf_counter()
    try:
        from napari_nucleiseg import _widget
    except ImportError as error:
        print(f"## Widget open: skipped (napari_nucleiseg._widget cannot be imported yet: {error})\n")
        return
    import_s = time.perf_counter() - start
    torch_after_import = "torch" in sys.modules
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        widget = _widget.NucleiSegWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name="Nuclei segmentation")
        app.processEvents()
        times.append(time.perf_counter() - start)
        viewer.window.remove_dock_widget(dock)
        widget.close()
        app.processEvents()
    print(f"## Widget open (construct NucleiSegWidget(viewer) + dock it), {repeats} times\n")
    print(format_table(["step", "ms"], [
        ["import napari_nucleiseg._widget (napari already imported)", ms(import_s)],
        ["first open", ms(times[0])],
        [f"median of the next {len(times) - 1}", ms(statistics.median(times[1:])) if len(times) > 1 else "-"],
    ]))
    print(f"\ntorch imported by the widget module: {'yes' if torch_after_import else 'no'}; "
          f"after opening it: {'yes' if 'torch' in sys.modules else 'no'}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("import", "slider", "widget"),
                        default=["import", "slider", "widget"])
    parser.add_argument("--size", type=int, default=2048, help="image side for the slider update")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--neck-ratio", type=float, default=0.4,
                        help="the cut by shape in the slider update (0.4: the default model's, HRNet; 0: off)")
    args = parser.parse_args(argv)

    print(f"Machine: {machine_description()}\n")
    if "import" in args.parts:
        bench_import(args.repeats)
    if not {"slider", "widget"} & set(args.parts):
        return 0
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM") == "offscreen"):
        print("No display: run the viewer parts as `xvfb-run -a python benchmarks/bench_gui.py`.")
        return 1
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    app.processEvents()
    try:
        if "widget" in args.parts:
            bench_widget_open(viewer, app, args.repeats)
        if "slider" in args.parts:
            bench_slider(viewer, app, args.size, args.repeats, args.neck_ratio)
            if "napari_nucleiseg._widget" in sys.modules or "widget" in args.parts:
                try:
                    bench_widget_slider(viewer, app, args.size, args.repeats, args.neck_ratio)
                except ImportError as error:
                    print(f"## Slider update through the widget: skipped ({error})\n")
    finally:
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
