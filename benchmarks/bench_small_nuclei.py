"""How much of the score lost on shrunk images (``val_x0.25``, ``val_x0.5``) the scoring's own
resolution explains: each model segments the full-size DSB2018 ``val`` image (Auto diameter, as
``segment()`` does), its labels are shrunk to the rescaled set's shape exactly as
``training/evaluate.py`` shrinks the truth (``rescale_labels``, nearest neighbour), and scored
against that set's truth. Beside it, the score of the model on the shrunk image itself.

If the first column stays near the full-size score, the loss on shrunk images is the network's on
the enlarged, blurred image, not the metric's on objects of a few pixels. But nearest neighbour keeps
one source pixel of each block, and which one is arbitrary: two more columns shrink the same labels, and
the truth itself, keeping the source pixel before it in its block (:func:`shrink_off_phase`), an equally valid truth of the
same shrunk image. What those lose is what the scoring's resolution costs a segmentation that cannot know
the truth's phase, as none made on the shrunk image can.

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_small_nuclei.py --models hrnet --limit 34
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_nucleiseg.scale import rescale_labels  # noqa: E402
from napari_nucleiseg.weights import bundled_weights_path, load_weights  # noqa: E402
from training import evaluate as ev  # noqa: E402
from training.metrics import instance_scores  # noqa: E402


def segment_auto(model, image: np.ndarray) -> np.ndarray:
    """``model``'s labels of ``image`` as ``segment()`` makes them (Auto diameter, splitting on)."""
    return ev.prediction_labels(model, ev.pipeline_prediction(image, model, "auto"))


def shrink_off_phase(labels: np.ndarray, shape: tuple[int, int], offset: int = -1) -> np.ndarray:
    """``labels`` shrunk to ``shape`` by nearest neighbour as ``rescale_labels`` does (the source pixel
    just after each block's centre), but ``offset`` source pixels from it (-1: up and left, still in the
    block when the image is shrunk 2x or more)."""
    rows, cols = (np.clip(np.floor((np.arange(n) + 0.5) * size / n).astype(int) + offset, 0, size - 1)
                  for n, size in zip(shape, labels.shape))
    return labels[np.ix_(rows, cols)]


def dsb_score(labels: np.ndarray, truth: np.ndarray) -> float:
    return instance_scores(labels, truth)["dsb_score"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["hrnet"])
    parser.add_argument("--factors", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--limit", type=int, default=34, help="the first N val images (sorted ids)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dsb2018")
    args = parser.parse_args(argv)
    val = ev.resolve_set("val", args.data)
    ids = ev.set_ids(val, args.limit)
    print(f"{len(ids)} images of DSB2018 val; DSB2018 score, Auto diameter\n")
    print("| model | factor | full-size labels, shrunk | shrunk one source pixel off | the truth, shrunk one source "
          "pixel off | the model on the shrunk image |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        model = load_weights(bundled_weights_path(name))
        full = {factor: [] for factor in args.factors}
        shrunk = {factor: [] for factor in args.factors}
        off, truth_off = ({factor: [] for factor in args.factors} for _ in range(2))
        whole = []
        for sample_id in ids:
            sample = ev.Sample(sample_id, *ev.load_pair(val.folder, sample_id))
            labels = segment_auto(model, sample.image)
            whole.append(dsb_score(labels, sample.truth))
            for factor in args.factors:
                small = ev.rescaled_sample(sample, factor)
                full[factor].append(dsb_score(rescale_labels(labels, small.truth.shape), small.truth))
                off[factor].append(dsb_score(shrink_off_phase(labels, small.truth.shape), small.truth))
                truth_off[factor].append(dsb_score(shrink_off_phase(sample.truth, small.truth.shape), small.truth))
                shrunk[factor].append(dsb_score(segment_auto(model, small.image), small.truth))
        print(f"| {name} | 1 | {np.mean(whole):.3f} | - | - | {np.mean(whole):.3f} |")
        for factor in args.factors:
            print(f"| {name} | {factor:g} | {np.mean(full[factor]):.3f} | {np.mean(off[factor]):.3f} | "
                  f"{np.mean(truth_off[factor]):.3f} | {np.mean(shrunk[factor]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
