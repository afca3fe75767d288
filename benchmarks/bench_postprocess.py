"""Where the slider update's post-processing time goes, and measured candidates to make it faster.

Times each step of ``postprocess.labels_from_probabilities`` and ``measure_nuclei``
on a synthetic ``(2, N, N)`` probability map, then candidate replacements that give
the same results (checked and reported below):

- holes filled by labelling the background once (``ndi.label``) instead of
  ``ndi.binary_fill_holes``'s iterated dilation;
- the watershed fed only the band between the seeds and the seeds' outer rings,
  not every seed pixel (equal up to how ties between equal probabilities are broken);
- small-object removal and renumbering in one lookup table instead of
  ``relabel_sequential``;
- the perimeter of every nucleus in one vectorised pass (scikit-image's
  4-neighbourhood perimeter formula) instead of one ``regionprops`` call per nucleus.

Post-processing is single-threaded numpy/scipy/scikit-image, so CPU time
(``time.process_time``) is reported next to wall time: it is what the step costs
even when other processes share the CPU.

Example::

    python benchmarks/bench_postprocess.py --size 2048 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.measure import regionprops_table
from skimage.segmentation import relabel_sequential, watershed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description, synthetic_image, synthetic_probabilities  # noqa: E402

from napari_nucleiseg import postprocess  # noqa: E402


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes(mask)``: background components that do not touch the border are holes."""
    background, count = ndi.label(~mask)
    outside = np.zeros(count + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = True  # label 0 is the mask itself
    return ~outside[background] | mask


def split_nuclei(nucleus: np.ndarray, mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """``watershed(-nucleus, label(seeds), mask=mask)`` plus numbered orphans, flooding only the band
    between the seeds.

    A seed pixel whose four neighbours carry its own label can only ever get that label,
    so it need not enter the watershed's priority queue: only the outer ring of each
    seed and the unlabelled band go in (a few tenths of the mask instead of all of it).
    Equal to the whole-image watershed up to how it breaks ties between pixels of equal
    probability (a few pixels per million move to the neighbouring nucleus).
    """
    markers, marker_count = ndi.label(seeds)  # the default cross: connectivity 1, as in the package
    inner = seeds.copy()
    inner[1:] &= markers[:-1] == markers[1:]
    inner[:-1] &= markers[1:] == markers[:-1]
    inner[:, 1:] &= markers[:, :-1] == markers[:, 1:]
    inner[:, :-1] &= markers[:, 1:] == markers[:, :-1]
    labels = watershed(-nucleus, np.where(inner, 0, markers), mask=mask & ~inner)
    labels[inner] = markers[inner]
    # Parts of the mask no seed reached stay objects, numbered after the seeds.
    orphans, _ = ndi.label(mask & (labels == 0))
    return np.where(orphans > 0, orphans + marker_count, labels)


def drop_small_and_renumber(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove labels under ``min_size`` pixels and renumber 1..N (uint16 or uint32), with one lookup table."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    dtype = np.uint16 if keep.sum() <= np.iinfo(np.uint16).max else np.uint32
    table = np.zeros(sizes.size, dtype=dtype)
    table[keep] = np.arange(1, keep.sum() + 1, dtype=dtype)
    return table[labels]


def fast_labels_from_probabilities(probabilities, threshold=0.5, *, min_size=10, split=True, boundary_threshold=0.5):
    """A candidate for ``postprocess.labels_from_probabilities`` with the same results."""
    nucleus = np.nan_to_num(probabilities[0].astype(np.float32, copy=False), nan=0.0)
    mask = fill_holes(nucleus > threshold)
    if split:
        seeds = mask & (np.nan_to_num(probabilities[1], nan=0.0) < boundary_threshold)
        labels = split_nuclei(nucleus, mask, seeds)
    else:
        labels = ndi.label(mask)[0]
    return drop_small_and_renumber(labels, min_size)


#: scikit-image's perimeter weights (skimage.measure.perimeter, neighborhood=4), indexed by the
#: convolution value of a border pixel with PERIMETER_KERNEL.
PERIMETER_WEIGHTS = np.zeros(50)
PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2
PERIMETER_KERNEL = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]])


def perimeters(labels: np.ndarray) -> np.ndarray:
    """Perimeter of every label 1..max (index 0 unused), as ``regionprops``' ``perimeter``, in one pass."""
    padded = np.pad(labels, 1)
    height, width = labels.shape

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    inner = labels > 0
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        inner &= shifted(dy, dx) == labels
    border = (labels > 0) & ~inner
    border_padded = np.pad(border, 1)
    code = border.astype(np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                same = border_padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] & (shifted(dy, dx) == labels)
                code += PERIMETER_KERNEL[1 + dy, 1 + dx] * same
    return np.bincount(labels[border], weights=PERIMETER_WEIGHTS[code[border]], minlength=int(labels.max()) + 1)


def timed(function, repeats: int):
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return result, statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)

    print(f"Machine: {machine_description()}\n")
    probabilities = synthetic_probabilities(args.size)
    image = synthetic_image(args.size)
    nucleus = probabilities[0]
    rows = []

    def step(name, function, repeats=args.repeats):
        result, wall, cpu = timed(function, repeats)
        rows.append([name, f"{1000 * wall:.0f}", f"{1000 * cpu:.0f}"])
        return result

    thresholded = step("threshold", lambda: nucleus > args.threshold)
    mask = step("  ndi.binary_fill_holes", lambda: ndi.binary_fill_holes(thresholded))
    fast_mask = step("  candidate: fill_holes (label the background)", lambda: fill_holes(thresholded))
    seeds = mask & (probabilities[1] < 0.5)
    markers = step("  connected_components(seeds)", lambda: connected_components(seeds, connectivity=1))
    flooded = step("  watershed over the whole image", lambda: watershed(-nucleus, markers, mask=mask))
    orphans = step("  orphans", lambda: connected_components(mask & (flooded == 0), connectivity=1))
    split = np.where(orphans > 0, orphans + flooded.max(), flooded)
    split_fast = step("  candidate: split_nuclei (watershed on the band only)", lambda: split_nuclei(nucleus, mask, seeds))
    step("  bincount + drop small", lambda: np.bincount(split.ravel()))
    step("  relabel_sequential", lambda: relabel_sequential(split))
    step("  candidate: drop_small_and_renumber (one lookup table)", lambda: drop_small_and_renumber(split, 10))
    labels = step("labels_from_probabilities (package)",
                  lambda: postprocess.labels_from_probabilities(probabilities, args.threshold))
    fast = step("candidate: fast_labels_from_probabilities",
                lambda: fast_labels_from_probabilities(probabilities, args.threshold))
    measure = getattr(postprocess, "measure_nuclei", None)
    if measure is not None:
        table = step("measure_nuclei (package)", lambda: measure(labels, image), repeats=1)
        step("  regionprops_table perimeter", lambda: regionprops_table(labels, properties=("label", "perimeter")), 1)
        step("  regionprops_table solidity", lambda: regionprops_table(labels, properties=("label", "solidity")), 1)
        fast_perimeter = step("  candidate: perimeters (one vectorised pass)", lambda: perimeters(labels))
    print(f"{args.size}x{args.size}, threshold {args.threshold}, {int(labels.max())} nuclei, "
          f"median of {args.repeats} (measurements: 1 run)\n")
    print(format_table(["step", "wall ms", "CPU ms"], rows))
    print("\nCandidates compared with the package's results:")
    print(f"  fill_holes == ndi.binary_fill_holes: {np.array_equal(fast_mask, mask)}")
    print(f"  fast_labels_from_probabilities: same dtype {fast.dtype == labels.dtype}, same count "
          f"{fast.max() == labels.max()}, same mask {np.array_equal(fast > 0, labels > 0)}, "
          f"{int((fast != labels).sum())} of {int((labels > 0).sum())} nucleus pixels labelled differently "
          f"(split before renumbering: {int((split_fast != split).sum())} pixels differ)")
    if measure is not None:
        difference = np.abs(fast_perimeter[1:] - table["perimeter"].to_numpy()).max()
        print(f"  perimeters == measure_nuclei perimeter: max difference {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
