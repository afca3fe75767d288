"""Fit the rung score of a model's diameter estimate and write it into its weights file.

:func:`napari_nucleiseg.scale.estimate_diameter` runs the network on a ladder of scales and
keeps the rung with the smallest predicted error. This script measures, on training images
resized by random factors (nuclei from about 3 to 200 px), each rung's features and its true
error ``|log(estimate / true median diameter)|``, and fits the linear score that predicts it
(least squares, small ridge); then a log bias that centres the chosen estimates. Only ``train``
images are used (DSB2018 ``train``, the MoNuSeg and CoNSeP train parts without train.py's
held-out val part); the result is reported on DSB2018 ``val`` rescaled x0.25 to x3::

    python training/fit_diameter.py runs/hrnet/best.safetensors --out weights/hrnet.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import holdout_split, list_ids, load_pair, median_diameter  # noqa: E402

from napari_nucleiseg.scale import (  # noqa: E402
    RUNG_FEATURES, rescale_image, rescale_labels, rescaled_shape, rung_features, sweep,
)
from napari_nucleiseg.weights import load_weights, read_metadata, save_weights  # noqa: E402

#: Factors the training images are resized by (log-uniform): DSB2018's nuclei of 10-50 px become 3-200 px.
FACTOR_RANGE = (0.2, 5.0)


def rescaled(image, labels, factor):
    if factor == 1:
        return image, labels
    return rescale_image(image, factor), rescale_labels(labels, rescaled_shape(image.shape, factor))


def collect(model, pairs, factors, log=print):
    """Per image: the rungs of its sweep and its true median diameter."""
    samples = []
    start = time.perf_counter()
    for index, ((image, labels), factor) in enumerate(zip(pairs, factors)):
        image, labels = rescaled(image, labels, factor)
        truth = median_diameter(labels)
        if truth:
            samples.append((sweep(image, model), truth))
        if (index + 1) % 50 == 0:
            log(f"  {index + 1}/{len(pairs)} images, {time.perf_counter() - start:.0f} s")
    return samples


def fit(samples, ridge: float = 1e-2) -> tuple[np.ndarray, float]:
    rows, errors = [], []
    for rungs, truth in samples:
        for rung in rungs:
            rows.append(rung_features(rung))
            errors.append(abs(math.log(rung["estimate"] / truth)))
    x, y = np.array(rows), np.array(errors)
    weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    chosen = [math.log(pick(rungs, weights)["estimate"] / truth) for rungs, truth in samples if rungs]
    return weights, -float(np.median(chosen))


def pick(rungs, weights):
    return min(rungs, key=lambda rung: float(rung_features(rung) @ weights))


def report(samples, weights, log_bias) -> dict:
    ratios = [pick(rungs, weights)["estimate"] * math.exp(log_bias) / truth if rungs else float("nan")
              for rungs, truth in samples]
    ratios = np.array(ratios)
    return {"within_25": float(np.mean(np.abs(np.log(ratios)) <= math.log(1.25))),
            "median_ratio": float(np.nanmedian(ratios)), "images": len(ratios)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (may be the input)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--every", type=int, default=2, help="use every n-th training image")
    parser.add_argument("--val-every", type=int, default=1, help="use every n-th val image for the report")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = load_weights(args.weights)
    if model.diameter is None:
        raise SystemExit(f"{args.weights} records no diameter: train it with train.py --diameter")
    rng = np.random.default_rng(args.seed)
    pairs = [load_pair(args.data / "dsb2018", i) for i in list_ids(args.data / "dsb2018", "train")[:: args.every]]
    for folder in ("monuseg2018/train", "consep/train"):
        train_ids, _ = holdout_split(list_ids(args.data / folder, None))
        pairs += [load_pair(args.data / folder, i) for i in train_ids[:: args.every * 4]]
    factors = np.exp(rng.uniform(*np.log(FACTOR_RANGE), size=len(pairs)))
    print(f"sweeping {len(pairs)} training images at random scales", flush=True)
    samples = collect(model, pairs, factors)
    default = np.zeros(len(RUNG_FEATURES) + 1)
    default[0] = 1.0
    weights, log_bias = fit(samples)
    print("train: default", report(samples, default, 0.0), "fitted", report(samples, weights, log_bias), flush=True)
    val_ids = list_ids(args.data / "dsb2018", "val")[:: args.val_every]
    val_pairs = [load_pair(args.data / "dsb2018", i) for i in val_ids]
    results = {}
    for factor in (0.25, 0.5, 1.0, 2.0, 3.0):
        val_samples = collect(model, val_pairs, [factor] * len(val_pairs))
        results[f"val_x{factor:g}"] = {"default": report(val_samples, default, 0.0),
                                       "fitted": report(val_samples, weights, log_bias)}
        print(f"val x{factor:g}", results[f"val_x{factor:g}"], flush=True)
    metadata = read_metadata(args.weights)
    metadata["diameter_estimator"] = {
        "weights": [round(float(w), 6) for w in weights], "features": list(RUNG_FEATURES) + ["constant"],
        "log_bias": round(log_bias, 6), "fitted_on": f"{len(samples)} train images resized x{FACTOR_RANGE[0]}-{FACTOR_RANGE[1]}",
        "val_within_25": {k: round(v["fitted"]["within_25"], 3) for k, v in results.items()},
    }
    save_weights(args.out, model.network, metadata)
    print(json.dumps(metadata["diameter_estimator"], indent=1))


if __name__ == "__main__":
    main()
