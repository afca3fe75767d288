"""Calibrate a weights file's post-processing at its trained nucleus diameter, on val parts only.

The settings a weights file carries (threshold, boundary threshold, min size, neck ratio,
smallest seed) are chosen on the validation images brought to the model's ``diameter`` with
their true median nucleus diameter, so the min sizes are in the pixels of the frame the network
works in (inference scales them with the image: ``NucleiModel.settings_at``). The images: DSB2018
``val`` and the val parts train.py holds out of MoNuSeg and CoNSeP train (every 7th source image);
never a ``test`` part. The mean DSB2018 score over all those images is maximised (each image
counts the same: 68 DSB2018, 5 MoNuSeg, 64 CoNSeP; weighting each set the same instead chose a
min size of 130 px and lost 0.015 on DSB2018 for +0.02 on MoNuSeg, +0.01 on CoNSeP: not used).
One small grid, the same for every model::

    thresholds 0.4 0.5 0.6 0.7 0.8 x boundary thresholds 0.02 0.05 0.1 0.2 0.35 x min sizes 0 15 30 45 60 80 100 130,
    then neck ratios 0 0.2 0.4 x smallest seeds 0 16 x the same boundary thresholds

Example::

    python -m training.calibrate runs/s8_hrnet/best.safetensors --out weights/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from napari_nucleiseg.inference import predict_probabilities
from napari_nucleiseg.weights import load_weights, read_metadata
from training.data import holdout_split, list_ids, load_pair
from training.evaluate import (
    Sample, calibrate, calibrate_splitting, describe, label, make_readable, write_calibrated_weights,
)
from training.train import at_diameter, licence_note

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)
BOUNDARY_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.35)
MIN_SIZES = (0, 15, 30, 45, 60, 80, 100, 130)
NECK_RATIOS = (0.0, 0.2, 0.4)
SEED_MIN_SIZES = (0, 16)


def val_pairs(data: Path, limit: int | None = None) -> dict[str, list[Sample]]:
    """The val images of each set as they are: DSB2018 ``val`` and the val parts train.py holds out
    of MoNuSeg and CoNSeP train."""
    sets = {"dsb2018": [Sample(i, *load_pair(data / "dsb2018", i)) for i in list_ids(data / "dsb2018", "val")[:limit]]}
    for name, folder in (("monuseg", "monuseg2018/train"), ("consep", "consep/train")):
        _, held = holdout_split(list_ids(data / folder, None))
        sets[name] = [Sample(i, *load_pair(data / folder, i)) for i in held[:limit]]
    return sets


def val_samples(data: Path, diameter: float, limit: int | None = None) -> dict[str, list[Sample]]:
    """The val images of each set (:func:`val_pairs`), resized so their median nucleus is ``diameter`` px across."""
    return {name: [Sample(s.id, *at_diameter(s.image, s.truth, diameter)) for s in samples]
            for name, samples in val_pairs(data, limit).items()}


def parse_args(description: str, out_help: str, argv=None) -> argparse.Namespace:
    """The command line of this script and of ``calibrate_auto``: a weights file, ``--out``, ``--data``, ``--limit``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--limit", type=int, default=None, help="images per set (smoke tests)")
    return parser.parse_args(argv)


def timed_log():
    """A ``log(message)`` that prints with the seconds since it was made."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)

    return log


def main(argv=None) -> None:
    args = parse_args(__doc__.split("\n\n")[0], "folder for the calibrated <name>.safetensors", argv)
    log = timed_log()
    model = load_weights(args.weights)
    if model.diameter is None:
        raise SystemExit(f"{args.weights} records no diameter: calibrate it with evaluate.py --calibrate")
    sets = val_samples(args.data, model.diameter, args.limit)
    samples = [sample for group in sets.values() for sample in group]
    log("val images: " + ", ".join(f"{len(group)} {name}" for name, group in sets.items()))
    probabilities = [predict_probabilities(sample.image, model) for sample in samples]
    log("probabilities done")
    settings, grid = calibrate(probabilities, samples, THRESHOLDS, BOUNDARY_THRESHOLDS, MIN_SIZES, log=log)
    settings, split_grid = calibrate_splitting(probabilities, samples, settings, BOUNDARY_THRESHOLDS, NECK_RATIOS,
                                               log=log, seed_min_sizes=SEED_MIN_SIZES)
    from training.metrics import instance_scores

    scores, offset = {}, 0
    for name, group in sets.items():
        scores[name] = round(float(np.mean([instance_scores(label(settings, p), s.truth)["dsb_score"] for p, s
                                            in zip(probabilities[offset : offset + len(group)], group)])), 4)
        offset += len(group)
    log(f"calibrated {describe(settings)}: val DSB2018 score at the true diameter {scores}")
    metadata = read_metadata(args.weights)
    heads = tuple(metadata["heads"]) if metadata.get("heads") else None
    calibration = {"grid": {"thresholds": THRESHOLDS, "boundary_thresholds": BOUNDARY_THRESHOLDS,
                            "min_sizes": MIN_SIZES, "neck_ratios": NECK_RATIOS, "seed_min_sizes": SEED_MIN_SIZES},
                   "on": "val at the true diameter: " + ", ".join(f"{len(g)} {n}" for n, g in sets.items()),
                   "command": "python -m training.calibrate " + " ".join(sys.argv[1:] if argv is None else argv)}
    target = write_calibrated_weights(args.weights, args.out, settings,
                                      {"val_at_true_diameter_dsb_score": scores}, calibration, heads)
    if not read_metadata(target).get("licence"):  # files trained before train.py wrote it
        _add_licence(target, metadata)
    log(f"-> {target}")


def write_metadata_copy(source: Path, target: Path, changes: dict) -> Path:
    """Copy the weights file ``source`` to ``target`` with ``changes`` merged into its metadata."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_nucleiseg.weights import METADATA_KEY

    with safe_open(str(source), framework="pt") as stream:
        header = dict(stream.metadata() or {})
        tensors = {key: stream.get_tensor(key) for key in stream.keys()}
    full = json.loads(header[METADATA_KEY])
    full.update(changes)
    header[METADATA_KEY] = json.dumps(full)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=header)
    make_readable(target)
    return Path(target)


def _add_licence(target: Path, metadata: dict) -> None:
    data = metadata.get("training", {}).get("data", "")
    sets = ["dsb2018"] + [name for name in ("monuseg", "consep") if name in data]
    write_metadata_copy(target, target, {"licence": licence_note(sets)})


if __name__ == "__main__":
    main()
