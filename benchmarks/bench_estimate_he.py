"""How good the Auto diameter is: the share of images whose estimated median nucleus diameter is
within a factor 1.25 of the truth, and the median ratio estimate / truth, per set of images.

Two numbers per set: the estimate alone (:func:`napari_nucleiseg.scale.estimate_diameter`, the
scale sweep on one window) and the full pipeline
(:func:`napari_nucleiseg.pipeline.predict_at_diameter`, the estimate then the recheck against the
whole image's nuclei). One call per image gives both: the pipeline's estimate is recorded on its way.

Sets (validation parts only, never a test folder):

- ``monuseg``: the val part of MoNuSeg 2018 ``train`` (:func:`training.data.holdout_split`), H&E;
- ``consep``: the val part of CoNSeP ``train``, H&E (256 px tiles);
- ``dsb``, ``dsb_x0.5``, ``dsb_x2``: ``--dsb-count`` images of DSB2018 ``val`` (every other one),
  as they are and resized by 0.5 and 2 (labels resized alike; truth is their median diameter).

Truth: :func:`napari_nucleiseg.scale.median_diameter` of the labels.

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_estimate_he.py --models hrnet
    OMP_NUM_THREADS=1 python benchmarks/bench_estimate_he.py --models hrnet --no-pipeline --csv /tmp/est.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
SETS = ("monuseg", "consep", "dsb", "dsb_x0.5", "dsb_x2")
WITHIN = 1.25


def load_set(name: str, dsb_count: int):
    """``[(id, image, true diameter)]`` of one set."""
    from training.data import holdout_split, list_ids, load_pair

    from napari_nucleiseg.scale import median_diameter, rescale_image, rescale_labels

    if name in ("monuseg", "consep"):
        folder = DATA / ("monuseg2018" if name == "monuseg" else "consep") / "train"
        ids = holdout_split(list_ids(folder, None))[1]
        factor = 1.0
    else:
        folder = DATA / "dsb2018"
        ids = list_ids(folder, "val")[::2][:dsb_count]
        factor = {"dsb": 1.0, "dsb_x0.5": 0.5, "dsb_x2": 2.0}[name]
    for sample_id in ids:
        image, labels = load_pair(folder, sample_id)
        if factor != 1.0:
            image = rescale_image(image, factor)
            labels = rescale_labels(labels, image.shape[:2])
        truth = median_diameter(labels)
        if truth is not None:
            yield sample_id, image, truth


def summary(ratios: list[float | None]) -> tuple[str, str]:
    """``("within %", "median ratio")``; a missing estimate counts as a miss."""
    if not ratios:
        return "-", "-"
    hits = sum(1 for r in ratios if r is not None and abs(math.log(r)) <= math.log(WITHIN))
    known = [r for r in ratios if r is not None]
    return f"{100 * hits / len(ratios):.0f}% ({hits}/{len(ratios)})", f"{np.median(known):.2f}" if known else "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["hrnet"])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--dsb-count", type=int, default=30)
    parser.add_argument("--no-pipeline", action="store_true", help="the estimate alone (faster)")
    parser.add_argument("--csv", type=Path, help="write one row per image here")
    args = parser.parse_args(argv)
    import torch

    import napari_nucleiseg.pipeline as pipeline
    from napari_nucleiseg.api import load_model
    from napari_nucleiseg.scale import estimate_diameter

    torch.set_num_threads(1)
    recorded: list[float | None] = []

    def recording_estimate(*a, **k):
        value = estimate_diameter(*a, **k)
        recorded.append(value)
        return value

    pipeline.estimate_diameter = recording_estimate
    rows, per_image = [], []
    for model_name in args.models:
        model = load_model(model_name)
        for set_name in args.sets:
            estimates, finals = [], []
            start = time.perf_counter()
            for sample_id, image, truth in load_set(set_name, args.dsb_count):
                recorded.clear()
                if args.no_pipeline:
                    estimate, final = recording_estimate(image, model), None
                else:
                    final = pipeline.predict_at_diameter(image, model).diameter
                    estimate = recorded[0] if recorded else None
                estimates.append(None if estimate is None else estimate / truth)
                finals.append(None if final is None else final / truth)
                per_image.append([model_name, set_name, sample_id, f"{truth:.2f}",
                                  "" if estimate is None else f"{estimate:.2f}", "" if final is None else f"{final:.2f}"])
            seconds = time.perf_counter() - start
            row = [model_name, set_name, str(len(estimates)), *summary(estimates),
                   *(("-", "-") if args.no_pipeline else summary(finals)), f"{seconds:.0f}"]
            rows.append(row)
            print(" | ".join(row), flush=True)
    header = ["model", "set", "images", "estimate within 1.25x", "estimate median ratio",
              "pipeline within 1.25x", "pipeline median ratio", "seconds"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for r in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["model", "set", "id", "truth", "estimate", "pipeline"])
            writer.writerows(per_image)


if __name__ == "__main__":
    main()
