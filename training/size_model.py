"""Fit and compare size models: from what the scale sweep sees to the image's nucleus diameter.

Reads the records of ``training/size_features.py`` and reports, per val set, the share of images
whose estimate is within x1.25 of the truth and the median ratio estimate / truth, for the sweep's
hand-made rule (:func:`napari_nucleiseg.scale.estimate_diameter`) and for the fitted model
(:func:`napari_nucleiseg.scale.size_model_estimate`): a mixture over the rungs, each rung proposing
its own median object (corrected by a linear term) and a softmax over linear scores of its
statistics choosing among them, for coloured images (gray ones keep the rule). Fitted on the
coloured images of the ``fit`` set (train parts only); ``--write`` stores
it in a copy of a weights file under ``size_model``.

Example::

    python -m training.size_model runs/size/unet
    python -m training.size_model runs/size/unet --write weights/unet.safetensors --out runs/unet_sized.safetensors
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from napari_nucleiseg.scale import (ESTIMATE_LADDER, SIZE_FEATURES, rule_choice, rung_feature_rows, size_model_applies,
                                    size_model_estimate)

WITHIN = 1.25
#: Images whose sweep windows reach this mean red - blue difference are coloured (a stain); gray
#: images have none (DSB2018's fluorescence and brightfield: 0.000, the least coloured H&E tile 0.015).
MIN_COLOUR = 0.01


def rungs_of(record_stats: np.ndarray, stat_names: list[str]) -> list[dict]:
    """The sweep's rung dicts back from one record's ``(rungs, stats)`` array."""
    rungs = []
    for relative, row in zip(ESTIMATE_LADDER, record_stats):
        if np.isnan(row[0]):
            continue
        rung = {"relative": relative, **{name: float(value) for name, value in zip(stat_names, row)}}
        rung["count"] = int(rung["count"])
        if not math.isnan(rung["signed_miss"]):
            rung["estimate"] = rung["relative"] * math.exp(rung["signed_miss"])  # in trained diameters
        else:
            del rung["signed_miss"]
        rungs.append(rung)
    return rungs


def rule_estimate(rungs: list[dict]) -> float | None:
    """:func:`napari_nucleiseg.scale.estimate_diameter`'s choice, in trained diameters."""
    chosen = rule_choice(rungs)
    return None if chosen is None else chosen["estimate"]


def design(records: dict, stat_names: list[str]):
    """``(rows, estimates, mask)``: per sample and rung the feature row, the rung's log estimate (in
    trained diameters) and whether it proposes one."""
    n, k = len(records["truth"]), len(ESTIMATE_LADDER)
    rows = np.zeros((n, k, len(SIZE_FEATURES)), dtype=np.float64)
    estimates = np.zeros((n, k))
    mask = np.zeros((n, k), dtype=bool)
    for i, stats in enumerate(records["stats"]):
        rung_rows, log_estimates, proposing = rung_feature_rows(rungs_of(stats, stat_names))
        rows[i], estimates[i], mask[i] = rung_rows, log_estimates, proposing
    return rows, estimates, mask


def fit(rows, estimates, mask, log_truth, groups, *, steps: int = 3000, weight_decay: float = 1e-3,
        seed: int = 0) -> dict:
    """Fit the mixture (gate and correction, on standardised features) by Adam on a robust log
    error, each of ``groups`` (the source set of each sample) weighing the same in total."""
    import torch

    torch.manual_seed(seed)
    usable = mask.any(1)
    flat = rows[mask]
    mean, scale = flat.mean(0), flat.std(0) + 1e-6
    x = torch.tensor((rows[usable] - mean) / scale, dtype=torch.float64)
    est = torch.tensor(estimates[usable])
    m = torch.tensor(mask[usable])
    y = torch.tensor(log_truth[usable])
    names, inverse, counts = np.unique(groups[usable], return_inverse=True, return_counts=True)
    sample_weight = torch.tensor(1.0 / (counts[inverse] * len(names)))
    features = x.shape[-1]
    gate = torch.zeros(features + 1, dtype=torch.float64, requires_grad=True)
    correction = torch.zeros(features + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([gate, correction], lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = x @ gate[:-1] + gate[-1]
        logits = logits.masked_fill(~m, -1e9)
        weights = torch.softmax(logits, dim=1)
        proposal = est + x @ correction[:-1] + correction[-1]
        prediction = (weights * proposal).sum(1)
        loss = (sample_weight * torch.nn.functional.smooth_l1_loss(prediction, y, beta=0.05, reduction="none")).sum()
        loss = loss + weight_decay * (gate[:-1].pow(2).sum() + correction[:-1].pow(2).sum())
        loss.backward()
        optimizer.step()
    return {"kind": "rung-mixture", "min_colour": MIN_COLOUR, "features": list(SIZE_FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
            "gate": gate.detach().tolist(), "correction": correction.detach().tolist()}


def ridge_on_pooled(pooled: np.ndarray, log_truth: np.ndarray, fitting: np.ndarray, penalty: float) -> np.ndarray:
    """Cellpose's way, for comparison: a ridge regression of the log diameter on the pooled input of
    the network's last layer at every rung (0 where a rung was not run); predictions for all samples."""
    x = np.nan_to_num(pooled.reshape(len(pooled), -1))
    mean, scale = x[fitting].mean(0), x[fitting].std(0) + 1e-6
    x = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    a = x[fitting]
    coef = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ log_truth[fitting])
    return x @ coef


def report(ratios: list[float | None]) -> str:
    hits = sum(1 for r in ratios if r is not None and abs(math.log(r)) <= math.log(WITHIN))
    known = [r for r in ratios if r is not None]
    median = f"{np.median(known):.2f}" if known else "-"
    return f"{100 * hits / max(len(ratios), 1):3.0f}% / {median}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path, help="the folder size_features.py wrote fit.npz and val.npz in")
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--ridge", type=float, default=10.0, help="ridge penalty of the pooled-feature baseline")
    parser.add_argument("--write", type=Path, help="a weights file to store the fitted model in a copy of")
    parser.add_argument("--out", type=Path, help="where the copy goes")
    args = parser.parse_args(argv)

    parts = [np.load(args.records / f"{name}.npz", allow_pickle=False) for name in ("fit", "val")]
    records = {key: np.concatenate([part[key] for part in parts])
               for key in ("set", "id", "factor", "truth", "stats", "pooled")}
    records["stat_names"] = parts[0]["stat_names"]
    stat_names = [str(name) for name in records["stat_names"]]
    trained = 18.0  # every shipped file's diameter; the records are in trained diameters below
    sets = records["set"]
    rows, estimates, mask = design(records, stat_names)
    log_truth = np.log(records["truth"] / trained)
    colour = np.nanmax(records["stats"][:, :, stat_names.index("colour")], axis=1)
    fitting = np.char.startswith(sets.astype(str), "fit_") & (colour >= MIN_COLOUR)
    model = fit(rows[fitting], estimates[fitting], mask[fitting], log_truth[fitting], sets[fitting],
                weight_decay=args.weight_decay)

    ridge = ridge_on_pooled(records["pooled"], log_truth, fitting, args.ridge)
    print(f"{'set':14s} {'n':>4s}  {'rule':>12s}  {'fitted':>12s}  {'ridge':>12s}")
    groups = sorted(set(sets.astype(str)), key=lambda s: (s.startswith("fit_"), s))
    for group in [*groups, "dsb colour (all x)"]:
        if group.startswith("dsb colour"):
            chosen = np.flatnonzero(np.char.startswith(sets.astype(str), "dsb_x") & (colour >= MIN_COLOUR))
        else:
            chosen = np.flatnonzero(sets == group)
        rule, fitted = [], []
        for i in chosen:
            truth = records["truth"][i] / trained
            guess = rule_estimate(rungs_of(records["stats"][i], stat_names))
            rule.append(None if guess is None else guess / truth)
            rungs = rungs_of(records["stats"][i], stat_names)
            guess = size_model_estimate(rungs, model) if size_model_applies(rungs, model) else rule_estimate(rungs)
            fitted.append(None if guess is None else guess / truth)
        ridged = [float(np.exp(ridge[i] - log_truth[i])) for i in chosen]
        print(f"{group:14s} {len(chosen):4d}  {report(rule):>12s}  {report(fitted):>12s}  "
              f"{report(ridged):>12s}")

    if args.write:
        from training.calibrate import write_metadata_copy

        write_metadata_copy(args.write, args.out, {"size_model": model})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
