"""Write weights/README.md: one model card per bundled weights file and one table of all of them.

Everything comes from the files themselves (the metadata that train.py and evaluate.py wrote)
and from the JSON of an evaluate.py run (for the Otsu baseline)::

    python -m training.model_card weights/unet.safetensors weights/unetpp.safetensors \
        weights/hrnet.safetensors --evaluation runs/eval-unet.json --out weights/README.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from napari_nucleiseg.weights import read_metadata

#: The targets of the training issue, on val with splitting on.
TARGETS = {"mean_iou": 0.90, "dsb_score": 0.55, "f1_iou50": 0.80, "count_error_median": 0.10}
COLUMNS = (
    ("mean_iou", "mean IoU (case study)"),
    ("foreground_iou", "foreground IoU"),
    ("dice", "Dice"),
    ("dsb_score", "DSB2018 score"),
    ("f1_iou50", "F1 @ IoU 0.5"),
    ("count_error_median", "count error (median)"),
)


def _cell(key: str, value: float) -> str:
    """``value`` as the tables show it: one more digit where rounding would hide that it misses its target."""
    if key.startswith("count_error"):
        text = f"{value:.1%}"
        if key in TARGETS and value > TARGETS[key] and round(value, 3) <= TARGETS[key]:
            text = f"{value:.2%}"
    else:
        text = f"{value:.3f}"
        if key in TARGETS and value < TARGETS[key] and round(value, 3) >= TARGETS[key]:
            text = f"{value:.4f}"
    return text


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| method | " + " | ".join(title for _, title in COLUMNS) + " |",
             "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |"]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(k, metrics[k]) for k, _ in COLUMNS) + " |")
    target = {k: v for k, v in TARGETS.items()}
    lines.append("| *target* | " + " | ".join(
        ("≥ " if k != "count_error_median" else "≤ ") + _cell(k, target[k]) if k in target else "" for k, _ in COLUMNS
    ) + " |")
    return "\n".join(lines)


def shortfalls(metrics: dict) -> list[str]:
    missed = []
    for key, goal in TARGETS.items():
        ok = metrics[key] <= goal if key.startswith("count_error") else metrics[key] >= goal
        if not ok:
            missed.append(f"{key} {_cell(key, metrics[key])} (target {_cell(key, goal)})")
    return missed


def training_stages(training: dict) -> list[dict]:
    """The runs that made a model, first to last: each run's facts, then those of the file it continued."""
    stages, stage = [], training
    while stage:
        stages.append(stage)
        stage = stage.get("continued_from")
    return stages[::-1]


def training_lines(training: dict) -> list[str]:
    """The model card's lines on how long it trained and how to reproduce it."""
    stages = training_stages(training)
    epochs = sum(int(stage.get("epochs", 0)) for stage in stages)
    minutes = sum(float(stage.get("minutes", 0)) for stage in stages)
    if len(stages) == 1:
        kept = f"- kept epoch: {training['epochs']} (best validation score at threshold 0.5), after "
    else:
        kept = (f"- trained in {len(stages)} runs, each starting from the weights the one before kept (`--init`): "
                + " + ".join(str(stage.get("epochs", "?")) for stage in stages)
                + f" = {epochs} epochs, after ")
    lines = [kept + f"{round(minutes, 1)} min of training on {training['hardware']} ({training['device']})"]
    for number, stage in enumerate(stages[1:], start=2):
        depth, before = stage_depth(stage), stage_depth(stages[number - 2])
        if depth is not None and depth != before:
            lines.append(f"- run {number} of these made the model deeper (`--depth {depth}`): it started from the "
                         "levels the file before had, and its deepest level was new")
    for number, stage in enumerate(stages, start=1):
        teacher = stage_teacher(stage)
        if teacher:
            averaged = " averaged over 4 flips/transpositions" if teacher["tta"] else ""
            lines.append(f"- run {number} of these was distilled from `{teacher['file']}`: the loss went "
                         f"{teacher['weight']:.0%} towards that model's probabilities on the "
                         f"training images{averaged} (warped with each crop), the rest towards the true masks")
        weights = stage_head_weights(stage)
        if weights:
            lines.append(f"- run {number} of these weighted the loss of UNet++'s output heads (shallowest first) "
                         f"{' : '.join(f'{w:g}' for w in weights)}" + ("; a head weighted 0 is left out of the "
                                                                      "file's inference too" if 0 in weights else ""))
        if stage.get("contact_weight"):
            lines.append(f"- run {number} of these weighted the cross-entropy of the pixels where two nuclei touch "
                         f"{stage['contact_weight']:g}x (`--contact-weight`)")
    commands = [f"`{stage['command']}`" for stage in stages if "command" in stage]
    lines.append("- reproduce: " + ", then ".join(commands) + ", then ")
    return lines


# What a run did is read from the metadata train.py records (``kwargs``, ``teacher``, ``head_weights``
# of each stage); runs recorded before it did (session 9) are read from their command instead.

def stage_depth(stage: dict) -> int | None:
    """The ``--depth`` a training run gave its model (None: the architecture's own)."""
    if "kwargs" in stage:
        return stage["kwargs"].get("depth")
    found = re.search(r"--depth[ =](\d+)", stage.get("command", ""))
    return int(found.group(1)) if found else None


def stage_teacher(stage: dict) -> dict | None:
    """The teacher a training run distilled (file, tta, weight), if any."""
    if "teacher" in stage or "kwargs" in stage:
        return stage.get("teacher")
    found = re.search(r"--teacher[ =](\S+)", stage.get("command", ""))
    if not found:
        return None
    weight = re.search(r"--distill-weight[ =](\S+)", stage["command"])
    return {"file": found.group(1), "tta": "--teacher-tta" in stage["command"],
            "weight": float(weight.group(1)) if weight else 0.5}


def stage_head_weights(stage: dict) -> list[float] | None:
    """The loss weights a training run gave UNet++'s output heads, if any."""
    if "head_weights" in stage or "kwargs" in stage:
        return stage.get("head_weights")
    found = re.search(r"--head-weights((?:[ =][0-9.]+)+)", stage.get("command", ""))
    return [float(w) for w in found.group(1).replace("=", " ").split()] if found else None


def _run_folder(training: dict, architecture: str) -> str:
    """The ``--out`` folder of the last training command (where its best.safetensors is)."""
    found = re.search(r"--out[ =](\S+)", training.get("command", ""))
    return found.group(1) if found else f"runs/{architecture}"


def card(path: Path) -> str:
    meta = read_metadata(path)
    training = meta["training"]
    val = meta["metrics"]["val"]
    missed = shortfalls(val)
    *history, reproduce = training_lines(training)
    return "\n".join([
        f"## `{path.name}`: {meta['architecture']}",
        "",
        f"- architecture: `{meta['architecture']}` {json.dumps(meta['kwargs'])}, {training['parameters']:,} parameters",
        f"- file: {path.stat().st_size / 1e6:.2f} MB (float16)",
        f"- trained on: {training['data']}; crops {training['crop_size']}, batch {training['batch_size']}, "
        f"Adam lr {training['lr']}, seed {training['seed']}",
        *history,
        reproduce + calibration_steps(meta),
        f"- calibrated on {meta['metrics'].get('calibrated_on', 'val')}: threshold {meta['threshold']}, "
        f"boundary threshold {meta['boundary_threshold']}, minimum size {meta['min_size']} px, "
        f"neck ratio {meta.get('neck_ratio', 0)}" + ("" if meta.get("neck_ratio") else " (no cut by shape)")
        + (f"; seeds of fewer than {meta['seed_min_size']} px seed no nucleus" if meta.get("seed_min_size") else "")
        + heads_note(meta),
        f"- val, splitting on: mean IoU {val['mean_iou']:.3f}, DSB2018 score {val['dsb_score']:.3f}, "
        f"F1 @ 0.5 {val['f1_iou50']:.3f}, median count error {val['count_error_median']:.1%}",
        f"- falls short of: {', '.join(missed)}" if missed else "- meets every target",
        *kind_lines(val),
        "",
    ])


def heads_note(meta: dict) -> str:
    """For a UNet++ file: which of its output heads inference averages (calibrated with the thresholds)."""
    if "heads" in meta:
        chosen = ", ".join(str(h) for h in meta["heads"])
        return f"; output heads averaged: {chosen} of 0-{meta['kwargs'].get('depth', 3) - 1} (0 = shallowest)"
    if "head_sets" in meta.get("calibration", {}):
        return "; output heads averaged: all"
    return ""


def calibration_steps(meta: dict) -> str:
    """How the shipped file came out of the last run: the kept epoch, exported if need be, then calibrated."""
    training = meta["training"]
    run = _run_folder(training, meta["architecture"])
    epoch = training.get("epochs", "?")
    grid = meta.get("calibration", {})
    flags = "".join(f" --{flag} {' '.join(str(v) for v in grid[key])}" for key, flag in (
        ("thresholds", "thresholds"), ("boundary_thresholds", "boundary-thresholds"), ("min_sizes", "min-sizes"),
        ("neck_ratios", "neck-ratios"), ("seed_min_sizes", "seed-min-sizes"))
        if key in grid)
    return (f"keep epoch {epoch} of that run: `{run}/best.safetensors` if train.py kept it, otherwise "
            f"`python -m training.export_checkpoint {run} --checkpoint <checkpoint.pt as saved after epoch {epoch}> "
            f"--out {run}/kept.safetensors`, then `python -m training.evaluate --weights {run}/kept.safetensors "
            f"--split val --calibrate{flags} --write-weights weights/`")


def kind_lines(val: dict) -> list[str]:
    """The card's line on how the model does on each kind of image (when evaluate.py recorded it)."""
    by_kind = val.get("by_kind")
    if not by_kind:
        return []
    return ["- val by kind of image: " + "; ".join(
        f"{kind} ({m['n_images']} image{'s' if m['n_images'] != 1 else ''}) DSB2018 score {m['dsb_score']:.3f}, "
        f"F1 {m['f1_iou50']:.3f}, median count error {m['count_error_median']:.1%}" for kind, m in by_kind.items())]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path, nargs="+")
    parser.add_argument("--evaluation", type=Path, required=True, help="an evaluate.py --json file (for Otsu)")
    parser.add_argument("--intro", type=Path, help="markdown to put above the cards")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for path in args.weights:
        meta = read_metadata(path)
        rows.append((meta["architecture"], meta["metrics"]["val"]))
        rows.append((f"{meta['architecture']}, no splitting", meta["metrics"]["val_no_splitting"]))
    otsu = next(r for r in json.loads(args.evaluation.read_text())["results"] if r["method"].startswith("Otsu"))
    rows.append(("Otsu + connected components", otsu["metrics"]))
    parts = ["# Bundled weights", ""]
    if args.intro:
        parts += [args.intro.read_text().strip(), ""]
    parts += [
        "All figures on `val` (68 images of the DSB2018 split in `../shared/data/dsb2018/splits.json`), through the",
        "plugin's own inference and post-processing (`training/evaluate.py`). Pixel scores are pooled over all",
        "pixels; DSB2018 score (mean over IoU 0.5..0.95 of TP/(TP+FP+FN)), F1 and count error are per image, then",
        "averaged (count error: median). Thresholds, minimum size and neck ratio were calibrated on `val` too, so these",
        "figures are optimistic for unseen images.",
        "",
        table(rows),
        "",
    ]
    parts += [card(path) for path in args.weights]
    text = "\n".join(parts)
    args.out.write_text(text)
    return text


if __name__ == "__main__":
    print(main())
