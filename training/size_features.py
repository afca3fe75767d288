"""Collect what the diameter estimate's scale sweep sees, for fitting and choosing a size model.

For each image of a set, resized so that its nuclei come to a known diameter, run
:func:`napari_nucleiseg.scale.sweep` and keep each rung's statistics and the pooled input of the
network's last layer (mean and standard deviation per channel). ``training/size_model.py`` fits
and compares size models on the result.

Sets (``--sets``): ``fit`` draws from the ``train`` parts only (DSB2018 train, and the train parts
of MoNuSeg and CoNSeP that train.py trains on), each image at random sizes, nuclei 4-120 px across;
``val`` is DSB2018 val at x0.25, x0.5, x1, x2 and x3 and the held-out val parts of MoNuSeg and
CoNSeP (x0.5, x1, x2), for choosing. No test folder is read.

Example::

    OMP_NUM_THREADS=1 python -m training.size_features --weights weights/unet.safetensors --sets fit val \\
        --out runs/size/unet
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from napari_nucleiseg.scale import ESTIMATE_LADDER, median_diameter, rescale_image, rescale_labels, sweep

from .data import holdout_split, list_ids, load_pair

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repo
#: The statistics of a rung kept, in this order (NaN where a rung found nothing or was not run).
RUNG_STATS = ("count", "signed_miss", "boundary_share", "confidence", "foreground_share", "colour", "brightness")
#: Sizes drawn for the fit set: nuclei log-uniformly this many pixels across.
FIT_DIAMETERS = (4.0, 120.0)
#: Largest side of a resized image: a larger one is cropped first (the sweep looks at windows).
MAX_SIDE = 1400


def samples(set_name: str, rng: np.random.Generator, dsb_fit: int, consep_fit: int):
    """``(set, id, image, labels, factor)`` for each sample of ``fit`` or ``val``."""
    dsb, monuseg, consep = DATA / "dsb2018", DATA / "monuseg2018" / "train", DATA / "consep" / "train"
    if set_name == "fit":
        sources = [("dsb", dsb, list(rng.permutation(list_ids(dsb, "train")))[:dsb_fit], 2),
                   ("monuseg", monuseg, holdout_split(list_ids(monuseg, None))[0], 5),
                   ("consep", consep, list(rng.permutation(holdout_split(list_ids(consep, None))[0]))[:consep_fit], 2)]
        for name, folder, ids, per_image in sources:
            for sample_id in ids:
                image, labels = load_pair(folder, sample_id)
                truth = median_diameter(labels)
                if truth is None:
                    continue
                for _ in range(per_image):
                    target = math.exp(rng.uniform(*np.log(FIT_DIAMETERS)))
                    yield f"fit_{name}", sample_id, image, labels, target / truth
    else:
        for sample_id in list_ids(dsb, "val"):
            image, labels = load_pair(dsb, sample_id)
            for factor in (0.25, 0.5, 1.0, 2.0, 3.0):
                yield f"dsb_x{factor:g}", sample_id, image, labels, factor
        for name, folder in (("monuseg", monuseg), ("consep", consep)):
            for sample_id in holdout_split(list_ids(folder, None))[1]:
                image, labels = load_pair(folder, sample_id)
                for factor in (0.5, 1.0, 2.0):
                    yield f"{name}_x{factor:g}", sample_id, image, labels, factor


def resized(image: np.ndarray, labels: np.ndarray, factor: float, rng: np.random.Generator):
    """``image`` and ``labels`` resized by ``factor``, cropped first (at random) so that no side
    exceeds :data:`MAX_SIDE` after resizing."""
    side = int(MAX_SIDE / factor)
    if image.shape[0] > side or image.shape[1] > side:
        y = rng.integers(0, max(1, image.shape[0] - side + 1))
        x = rng.integers(0, max(1, image.shape[1] - side + 1))
        image, labels = image[y : y + side, x : x + side], labels[y : y + side, x : x + side]
    if factor != 1.0:
        image = rescale_image(image, factor)
        labels = rescale_labels(labels, image.shape[:2])
    return image, labels


def collect(model, set_names: list[str], rng: np.random.Generator, dsb_fit: int, consep_fit: int) -> dict:
    records = {"set": [], "id": [], "factor": [], "truth": [], "stats": [], "pooled": []}
    started = time.monotonic()
    for set_name in set_names:
        for number, (name, sample_id, image, labels, factor) in enumerate(samples(set_name, rng, dsb_fit, consep_fit)):
            truth = median_diameter(labels)
            if truth is None:  # a tile without nuclei has no diameter to find
                continue
            truth *= factor  # the whole image's nuclei, at the new size
            image, _ = resized(image, labels, factor, rng)
            if min(image.shape[:2]) < 32:
                continue
            pooled: dict[float, list[np.ndarray]] = {}

            def receive(relative, features, pooled=pooled):
                flat = features.reshape(features.shape[0], -1)
                pooled.setdefault(relative, []).append(np.concatenate([flat.mean(1), flat.std(1)]))

            rungs = {rung["relative"]: rung for rung in sweep(image, model, on_features=receive)}
            stats = np.full((len(ESTIMATE_LADDER), len(RUNG_STATS)), np.nan, dtype=np.float32)
            width = next(iter(pooled.values()))[0].size if pooled else 0
            features = np.full((len(ESTIMATE_LADDER), width), np.nan, dtype=np.float32)
            for index, relative in enumerate(ESTIMATE_LADDER):
                if relative in rungs:
                    stats[index] = [rungs[relative].get(key, np.nan) for key in RUNG_STATS]
                    features[index] = np.mean(pooled[relative], axis=0)
            for key, value in (("set", name), ("id", sample_id), ("factor", factor), ("truth", truth),
                               ("stats", stats), ("pooled", features)):
                records[key].append(value)
            if number % 25 == 0:
                print(f"{set_name} {number} {name} {sample_id} x{factor:.2f} truth {truth:.1f} "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
    return {key: np.asarray(value) for key, value in records.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", default=["fit", "val"], choices=["fit", "val"])
    parser.add_argument("--out", type=Path, required=True, help="a folder: fit.npz and val.npz go in it")
    parser.add_argument("--dsb-fit", type=int, default=240, help="DSB2018 train images in the fit set")
    parser.add_argument("--consep-fit", type=int, default=120, help="CoNSeP train tiles in the fit set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from napari_nucleiseg.api import load_model

    torch.set_grad_enabled(False)
    model = load_model(args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    for set_name in args.sets:  # one file per set, written as soon as the set is done
        records = collect(model, [set_name], np.random.default_rng(args.seed), args.dsb_fit, args.consep_fit)
        path = args.out / f"{set_name}.npz"
        np.savez_compressed(path, ladder=np.array(ESTIMATE_LADDER), stat_names=np.array(RUNG_STATS), **records)
        print(f"wrote {path}: {len(records['truth'])} samples", flush=True)


if __name__ == "__main__":
    main()
