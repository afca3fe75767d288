"""What test-time augmentation gives: each model's DSB2018 score with the probabilities of one
network pass beside ``augment=True`` (the mean of four: the image as it is, flipped up-down,
left-right, and both; each flipped back, tile by tile), each as ``segment(diameter=None)`` runs it
(Auto diameter, the file's own settings), and the time each took (the estimate included in both).

Sets: DSB2018 ``val`` and its rescaled copies (``val_x0.25`` ...), ``monuseg_val`` and
``consep_val`` (the val parts train.py holds out of MoNuSeg and CoNSeP train, which the networks
never trained on), and any folder of images/ + labels/ given as ``NAME=DIR``. No ``test`` folder
should be given: this chose to build the option (and may choose whether to make it the default).

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_tta.py --models hrnet --sets val val_x0.25 val_x0.5 \
        monuseg_val consep_val --limit 34
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_nucleiseg.pipeline import predict_at_diameter  # noqa: E402
from napari_nucleiseg.weights import bundled_weights_path, load_weights  # noqa: E402
from training import evaluate as ev  # noqa: E402
from training.data import holdout_split, list_ids  # noqa: E402
from training.metrics import instance_scores  # noqa: E402

#: Set name -> the train folder (under the shared data) whose held-out val part it is.
HELD_OUT = {"monuseg_val": ("monuseg2018", "train"), "consep_val": ("consep", "train")}

def dsb_score(model, prediction, truth: np.ndarray) -> float:
    return instance_scores(ev.prediction_labels(model, prediction), truth)["dsb_score"]


def samples(name: str, folder: Path | None, data: Path, limit: int):
    """The samples of a set: DSB2018 val (rescaled), a held-out val part, or a folder."""
    if name in HELD_OUT:
        eval_set = ev.EvalSet(name, data.parent.joinpath(*HELD_OUT[name]))
        ids = holdout_split(list_ids(eval_set.folder, None))[1][:limit]
    else:
        eval_set = ev.EvalSet(name, folder) if folder else ev.resolve_set(name, data)
        ids = ev.set_ids(eval_set, limit)
    for sample_id in ids:
        yield ev.rescaled_sample(ev.Sample(sample_id, *ev.load_pair(eval_set.folder, sample_id)), eval_set.factor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["hrnet"])
    parser.add_argument("--sets", nargs="+", default=["val", "val_x0.25", "val_x0.5"],
                        help="val, val_x<factor>, or NAME=DIR (a folder of images/ + labels/)")
    parser.add_argument("--limit", type=int, default=34, help="the first N images of each set (sorted ids)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dsb2018")
    args = parser.parse_args(argv)
    print("DSB2018 score, Auto diameter (estimated for each column)\n")
    print("| model | set | images | one pass | 4 flips | time, one pass (s) | time, 4 flips (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        model = load_weights(bundled_weights_path(name))
        for entry in args.sets:
            set_name, _, folder = entry.partition("=")
            one, four, seconds_one, seconds_four = [], [], 0.0, 0.0
            for sample in samples(set_name, Path(folder) if folder else None, args.data, args.limit):
                start = time.perf_counter()
                single = predict_at_diameter(sample.image, model)
                seconds_one += time.perf_counter() - start
                start = time.perf_counter()
                averaged = predict_at_diameter(sample.image, model, augment=True)
                seconds_four += time.perf_counter() - start
                one.append(dsb_score(model, single, sample.truth))
                four.append(dsb_score(model, averaged, sample.truth))
            print(f"| {name} | {set_name} | {len(one)} | {np.mean(one):.3f} | {np.mean(four):.3f} "
                  f"| {seconds_one:.0f} | {seconds_four:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
