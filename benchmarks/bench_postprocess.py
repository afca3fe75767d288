"""Post-processing at 2048x2048: the package against the implementation it replaced, A/B.

Times ``postprocess.labels_from_probabilities`` (split and not) and ``measure_nuclei``
on a synthetic ``(2, N, N)`` probability map (about 5,200 nuclei at 2048², some
touching), each against the reference: the package's code before the speed work of
issue 5, kept below verbatim (whole-image scikit-image watershed, ``binary_fill_holes``,
``relabel_sequential``; ``regionprops`` for perimeter and solidity). Then where the
package's time goes, step by step, and how its results differ from the reference's.

Rounds are interleaved (reference and package alternate, in alternating order), so a
change in background load hits both. Post-processing is single-threaded
numpy/scipy/scikit-image: CPU time (``time.process_time``) is the measure that holds
when other processes share the CPU; wall time is printed beside it.

Example::

    python benchmarks/bench_postprocess.py --size 2048 --repeats 5
    python benchmarks/bench_postprocess.py --probabilities probs.npy   # a saved (2, H, W) map instead
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.measure import regionprops_table
from skimage.segmentation import relabel_sequential, watershed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description, synthetic_image, synthetic_probabilities  # noqa: E402

from napari_nucleiseg import postprocess  # noqa: E402


# --- the reference: the package before issue 5's speed work ------------------------------------------


def reference_labels_from_probabilities(probabilities, threshold=0.5, *, min_size=10, split=True,
                                        boundary_threshold=0.5):
    nucleus = np.nan_to_num(probabilities[0].astype(np.float32, copy=False), nan=0.0)
    mask = ndi.binary_fill_holes(nucleus > threshold)
    if split:
        boundary = np.nan_to_num(probabilities[1], nan=0.0)
        seeds = mask & (boundary < boundary_threshold)
        markers = connected_components(seeds, connectivity=1)
        labels = watershed(-nucleus, markers, mask=mask)
        orphans = connected_components(mask & (labels == 0), connectivity=1)
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    else:
        labels = connected_components(mask, connectivity=1)
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        too_small = sizes < min_size
        too_small[0] = False
        labels[too_small[labels]] = 0
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.uint16 if labels.max(initial=0) <= 65535 else np.uint32, copy=False)


def reference_measure_nuclei(labels, image):
    """The columns of ``measure_nuclei`` as the package computed them before (gray ``image`` only)."""
    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    order = np.argsort(flat[foreground], kind="stable")
    foreground = foreground[order]
    pixel_labels = flat[foreground]
    starts = np.flatnonzero(np.r_[True, pixel_labels[1:] != pixel_labels[:-1]])
    area = np.diff(np.r_[starts, foreground.size])
    ys, xs = np.divmod(foreground, labels.shape[1])
    centroid_y = np.add.reduceat(ys, starts) / area
    centroid_x = np.add.reduceat(xs, starts) / area
    repeat = np.repeat(np.arange(area.size), area)
    dy, dx = ys - centroid_y[repeat], xs - centroid_x[repeat]
    table = {
        "label": pixel_labels[starts].astype(np.int64), "area": area.astype(np.int64),
        "centroid_y": centroid_y, "centroid_x": centroid_x,
        "bbox_min_y": np.minimum.reduceat(ys, starts), "bbox_min_x": np.minimum.reduceat(xs, starts),
        "bbox_max_y": np.maximum.reduceat(ys, starts) + 1, "bbox_max_x": np.maximum.reduceat(xs, starts) + 1,
        "mean_intensity": np.add.reduceat(image.astype(np.float64).ravel()[foreground], starts) / area,
        "eccentricity": postprocess._eccentricity(np.add.reduceat(dy * dy, starts) / area,
                                                  np.add.reduceat(dx * dx, starts) / area,
                                                  np.add.reduceat(dy * dx, starts) / area),
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
    }
    shape = regionprops_table(labels, properties=("label", "perimeter", "solidity"))
    table["perimeter"], table["solidity"] = shape["perimeter"], shape["solidity"]
    return pd.DataFrame(table, columns=list(postprocess.MEASUREMENT_COLUMNS))


# --- timing ------------------------------------------------------------------------------------------


def interleaved(functions: dict, repeats: int) -> tuple[dict, dict]:
    """Results and ``(median wall s, median CPU s, CPU s of every round)`` of each function, rounds interleaved."""
    times = {name: ([], []) for name in functions}
    results = {}
    names = list(functions)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = functions[name]()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return results, {name: (statistics.median(w), statistics.median(c), c) for name, (w, c) in times.items()}


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--boundary-threshold", type=float, default=0.5)
    parser.add_argument("--min-size", type=int, default=10)
    parser.add_argument("--neck-ratio", type=float, default=0.3,
                        help="also time the package with this cut by shape (split_by_shape) against without")
    parser.add_argument("--seed-min-size", type=int, default=0,
                        help="also time the package with this smallest seed (seed_min_size) against without")
    parser.add_argument("--probabilities", type=Path, help="a saved (2, H, W) .npy map instead of the synthetic one")
    args = parser.parse_args(argv)

    print(f"Machine: {machine_description()}\n")
    if args.probabilities:
        probabilities = np.load(args.probabilities)
        image = probabilities[0]
        source = f"{args.probabilities.name} {probabilities.shape[1]}x{probabilities.shape[2]}"
    else:
        probabilities = synthetic_probabilities(args.size)
        image = synthetic_image(args.size)
        source = f"synthetic {args.size}x{args.size}"
    settings = dict(min_size=args.min_size, boundary_threshold=args.boundary_threshold)

    rows, notes = [], []
    for split in (True, False):
        labels, times = interleaved({
            "reference": lambda: reference_labels_from_probabilities(probabilities, args.threshold, split=split,
                                                                     **settings),
            "package": lambda: postprocess.labels_from_probabilities(probabilities, args.threshold, split=split,
                                                                     **settings),
        }, args.repeats)
        rows.append(row(f"labels_from_probabilities(split={split})", times))
        before, after = labels["reference"], labels["package"]
        notes.append(f"split={split}: {int(after.max())} nuclei (reference {int(before.max())}), dtype "
                     f"{after.dtype} ({before.dtype}), same mask {np.array_equal(after > 0, before > 0)}, "
                     f"{int((after != before).sum())} of {int((before > 0).sum())} nucleus pixels labelled "
                     "differently")
        if split:
            split_labels = after
    for option, value in (("neck_ratio", args.neck_ratio), ("seed_min_size", args.seed_min_size)):
        if not value:
            continue
        labels, times = interleaved({
            "reference": lambda: postprocess.labels_from_probabilities(probabilities, args.threshold, **settings),
            "package": lambda: postprocess.labels_from_probabilities(probabilities, args.threshold, **settings,
                                                                     **{option: value}),
        }, args.repeats)
        rows.append(row(f"(package) {option} 0 -> {value:g}", times))
        notes.append(f"{option} {value:g}: {int(labels['package'].max())} nuclei instead of "
                     f"{int(labels['reference'].max())}")
    tables, times = interleaved({
        "reference": lambda: reference_measure_nuclei(split_labels, image),
        "package": lambda: postprocess.measure_nuclei(split_labels, image),
    }, max(1, min(args.repeats, 3)))
    rows.append(row("measure_nuclei", times))
    differences = {column: float(np.nanmax(np.abs(tables["package"][column].to_numpy(dtype=float)
                                                   - tables["reference"][column].to_numpy(dtype=float))))
                   for column in postprocess.MEASUREMENT_COLUMNS}
    worst = max(differences, key=differences.get)

    print(f"{source}, threshold {args.threshold}, boundary threshold {args.boundary_threshold}, min size "
          f"{args.min_size}; {args.repeats} interleaved rounds (measure_nuclei: {max(1, min(args.repeats, 3))})\n")
    print(format_table(["", "reference CPU ms", "package CPU ms", "CPU speed-up", "reference wall ms",
                        "package wall ms", "package CPU ms, every round"], rows))
    print("\nResults, package against reference:")
    for note in notes:
        print(f"  labels, {note}")
    print(f"  measure_nuclei: same rows {tables['package']['label'].equals(tables['reference']['label'])}, "
          f"largest difference {differences[worst]:.1e} ({worst}); by column: "
          + ", ".join(f"{column} {value:.0e}" for column, value in differences.items() if value))
    print_steps(probabilities, args.threshold, args.boundary_threshold, args.min_size, split_labels, args.repeats)
    return 0


def row(name: str, times: dict) -> list[str]:
    (wall_a, cpu_a, _), (wall_b, cpu_b, every) = times["reference"], times["package"]
    return [name, ms(cpu_a), ms(cpu_b), f"{cpu_a / cpu_b:.1f}x", ms(wall_a), ms(wall_b),
            " ".join(ms(c) for c in every)]


def print_steps(probabilities, threshold, boundary_threshold, min_size, labels, repeats) -> None:
    """CPU time of each step of the package's post-processing (its private helpers; skipped if they changed)."""
    steps = ("_framed", "_fill_holes", "_split_touching", "_renumbered", "_row_runs", "_perimeters", "_convex_areas")
    if not all(hasattr(postprocess, step) for step in steps):
        print("\n(The package's steps have changed: step timings skipped.)")
        return
    p = postprocess
    nucleus = probabilities[0].astype(np.float32, copy=False)
    rows = []

    def step(name, function):
        cpu = []
        for _ in range(repeats):
            start = time.process_time()
            result = function()
            cpu.append(time.process_time() - start)
        rows.append([name, ms(statistics.median(cpu))])
        return result

    mask = step("threshold into a framed mask", lambda: p._framed(nucleus, np.greater, threshold))
    mask = step("fill holes (label the background once)", lambda: p._fill_holes(mask))
    seeds = step("seeds", lambda: p._framed(probabilities[1], np.less, boundary_threshold) & mask)
    step("  of the split: label seeds", lambda: ndi.label(seeds))
    step("  of the split: label the band around them", lambda: ndi.label(mask ^ seeds))
    parts, sizes = step("split: seeds, band regions, watershed of the contested ones",
                        lambda: p._split_touching(nucleus, mask, seeds))
    step("drop small, renumber, write", lambda: p._renumbered(mask.shape, parts, sizes, min_size))
    runs = step("measure: runs along the rows", lambda: p._row_runs(labels))
    present, ids = np.unique(runs[0], return_inverse=True)
    step("measure: perimeters", lambda: p._perimeters(labels, present))
    ys, x0 = np.divmod(runs[1], labels.shape[1])
    top, bottom = np.full(present.size, labels.shape[0]), np.zeros(present.size, np.int64)
    np.minimum.at(top, ids, ys)
    np.maximum.at(bottom, ids, ys)
    step("measure: convex hull areas (solidity)", lambda: p._convex_areas(ids, ys, x0, x0 + runs[2] - 1, top, bottom))
    print(f"\nThe package's steps (median CPU ms of {repeats}):\n")
    print(format_table(["step", "CPU ms"], rows))


if __name__ == "__main__":
    sys.exit(main())
