"""How much fine-tuning on a few corrected images helps (issue 15), and what it costs in memory.

A model trained on DSB2018 alone (``--base``: the HRNet of commit 2ff4f24, which records no
nucleus diameter, so every image runs as it is, at scale 1) is fine-tuned with
:func:`napari_nucleiseg.finetune` on ``k`` images of a set, then it and the base are scored
(the DSB2018 score, mean over images) on the other images of that set. Each row is repeated
for seeds 0, 1, 2 (``--seeds``), each drawing its own ``k`` images.

Rows (``--parts test``):

- ``monuseg``: MoNuSeg 2018 ``test`` (14 images, 1000 x 1000); k = 2, 3 min; scored on the other 12;
- ``consep``: CoNSeP ``test``; k = 8 tiles of one source image, 3 min; scored on ``--consep-tiles``
  tiles (default 40) drawn once from the sources no seed trains on, the same tiles for every seed;
- ``val_x3``: ``--val-count`` (default 20) DSB2018 ``val`` images drawn once, each with its labels
  enlarged 3x (:func:`training.evaluate.rescaled_sample`); k = 2, 2 min; scored on the other 18.

The learning rate is chosen first on training parts only (``--parts lr``): MoNuSeg ``train``,
k = 2 (seed 0), 2 min, scored on 10 other train images, for each of ``--lrs``. The test rows run
with ``--lr`` (set by monkeypatching ``napari_nucleiseg.learn.finetune.LEARNING_RATE``).

Memory (``--parts memory``): a fresh process fine-tunes on 2 MoNuSeg ``test`` images of
1000 x 1000 for ``--memory-minutes``; its resident-set high-water mark (``ru_maxrss``), and the
same mark once imports, model and images are loaded.

Scoring is :mod:`training.evaluate`'s: ``pipeline_prediction(..., "none")`` (what
``segment(image, model, diameter=None)`` runs for a model without a diameter), the model's own
post-processing settings, :func:`training.metrics.instance_scores`.

The tables of benchmarks/README.md (about 10 + 36 min on 2 cores), one command after the other, each
merging its parts into ``--json``::

    mkdir -p runs && git show 2ff4f24:weights/hrnet.safetensors > runs/hrnet_dsb.safetensors
    OMP_NUM_THREADS=2 nohup python benchmarks/bench_finetune.py --parts lr > runs/bench_finetune_lr.log 2>&1 &
    OMP_NUM_THREADS=2 nohup python benchmarks/bench_finetune.py --parts memory test --lr 1e-3 \\
        > runs/bench_finetune.log 2>&1 &

A quick check that it runs: ``--smoke`` (budgets of 0.1 min, 2 images scored per row, no JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description  # noqa: E402

DATA = REPO.parent / "shared" / "data"
MONUSEG = DATA / "monuseg2018"
CONSEP = DATA / "consep"
DSB2018 = DATA / "dsb2018"
DEFAULT_BASE = REPO / "runs" / "hrnet_dsb.safetensors"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "finetune.json"
#: Targets of issue 15: the least gain in DSB2018 score per row, the most memory (GB).
TARGET_GAIN = {"monuseg": 0.15, "consep": 0.10, "val_x3": 0.15}
TARGET_MEMORY_GB = 2.0
#: Seed of the draws that are the same for every seed (CoNSeP's scored tiles, val's subset).
FIXED_DRAW_SEED = 1234


@dataclass
class Row:
    """One measure: ``draw(seed) -> (training ids, scored ids)`` over ``samples``."""

    name: str
    minutes: float
    samples: dict  # id -> training.evaluate.Sample
    draw: object
    note: str
    runs: list[dict] = field(default_factory=list)


def tile_source(sample_id: str) -> str:
    """CoNSeP's tile ``test_3_005`` comes from source image ``test_3``."""
    return sample_id.rsplit("_", 1)[0]


def load(folder: Path, ids: list[str], factor: float = 1.0) -> dict:
    """``{id: training.evaluate.Sample}``, resized by ``factor`` as evaluate.py's ``val_x<factor>`` sets."""
    from training.data import load_pair
    from training.evaluate import Sample, rescaled_sample

    return {i: rescaled_sample(Sample(i, *load_pair(folder, i)), factor) for i in ids}


def monuseg_row(part: str, k: int, minutes: float, scored: int | None) -> Row:
    from training.data import list_ids

    ids = list_ids(MONUSEG / part, None)

    def draw(seed: int):
        chosen = sorted(np.random.default_rng(seed).choice(ids, k, replace=False).tolist())
        rest = [i for i in ids if i not in chosen]
        return chosen, rest[:scored]

    note = f"MoNuSeg `{part}` ({len(ids)} images): k = {k}, {minutes:g} min, scored on {scored or len(ids) - k} others"
    return Row(f"monuseg_{part}" if part != "test" else "monuseg", minutes, load(MONUSEG / part, ids), draw, note)


def consep_row(k: int, minutes: float, scored: int, seeds: list[int]) -> Row:
    from training.data import list_ids

    ids = list_ids(CONSEP / "test", None)
    sources = sorted({tile_source(i) for i in ids})

    def chosen_tiles(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        source = str(rng.choice(sources))
        tiles = [i for i in ids if tile_source(i) == source]
        return sorted(rng.choice(tiles, k, replace=False).tolist())

    used = {tile_source(chosen_tiles(seed)[0]) for seed in seeds}
    others = [i for i in ids if tile_source(i) not in used]
    scored_ids = sorted(np.random.default_rng(FIXED_DRAW_SEED).choice(others, min(scored, len(others)),
                                                                      replace=False).tolist())

    def draw(seed: int):
        return chosen_tiles(seed), scored_ids

    note = (f"CoNSeP `test` ({len(ids)} tiles of {len(sources)} images): k = {k} tiles of 1 image, {minutes:g} min, "
            f"scored on {len(scored_ids)} tiles drawn once from the {len(sources) - len(used)} images no seed trains on")
    needed = sorted({*scored_ids, *(i for seed in seeds for i in chosen_tiles(seed))})
    return Row("consep", minutes, load(CONSEP / "test", needed), draw, note)


def val_row(k: int, minutes: float, count: int, factor: float = 3.0) -> Row:
    from training.data import list_ids

    ids = sorted(np.random.default_rng(FIXED_DRAW_SEED).choice(list_ids(DSB2018, "val"), count,
                                                               replace=False).tolist())

    def draw(seed: int):
        chosen = sorted(np.random.default_rng(seed).choice(ids, k, replace=False).tolist())
        return chosen, [i for i in ids if i not in chosen]

    note = (f"DSB2018 `val` x{factor:g} ({count} images drawn once, labels enlarged alike): k = {k}, {minutes:g} min, "
            f"scored on the other {count - k}")
    return Row(f"val_x{factor:g}", minutes, load(DSB2018, ids, factor), draw, note)


def dsb_score(model, sample) -> float:
    """The DSB2018 score of ``model`` on ``sample``, segmented as ``segment(diameter=None)`` does for it."""
    from training.evaluate import pipeline_prediction, prediction_labels
    from training.metrics import instance_scores

    labels = prediction_labels(model, pipeline_prediction(sample.image, model, "none"))
    return float(instance_scores(labels, sample.truth)["dsb_score"])


#: With ``--steps-per-minute``, a row's budget is that many steps a minute instead of the wall clock:
#: the gain then does not depend on what else the machine runs (``fine_tuned``).
STEPS_PER_MINUTE: float | None = None


def fine_tuned(base: Path, samples: list, minutes: float, seed: int, lr: float, folder: Path):
    """The fine-tuned model (loaded) and the ``fine_tuned`` record of its file: ``minutes`` of the wall
    clock, or ``minutes`` x :data:`STEPS_PER_MINUTE` steps whatever they take."""
    import napari_nucleiseg.learn.finetune as finetune_module
    from napari_nucleiseg import finetune
    from napari_nucleiseg.weights import load_weights

    finetune_module.LEARNING_RATE = lr
    out = folder / f"tuned-{time.monotonic_ns()}.safetensors"
    steps = None if STEPS_PER_MINUTE is None else max(1, round(STEPS_PER_MINUTE * minutes))
    path = finetune([s.image for s in samples], [s.truth for s in samples], base, out=out,
                    minutes=minutes if steps is None else 600.0, max_steps=steps, seed=seed,
                    log=lambda text: print("  note:", text, flush=True))
    model = load_weights(path)
    return model, model.metadata["fine_tuned"]


def run_row(row: Row, base: Path, seeds: list[int], lr: float, base_scores: dict, folder: Path, log) -> dict:
    """Fine-tune and score ``row`` for each seed; the summary."""
    from napari_nucleiseg.weights import load_weights

    base_model = load_weights(base)
    for seed in seeds:
        chosen, scored = row.draw(seed)
        for sample_id in scored:
            if (row.name, sample_id) not in base_scores:
                base_scores[row.name, sample_id] = dsb_score(base_model, row.samples[sample_id])
        start = time.perf_counter()
        model, record = fine_tuned(base, [row.samples[i] for i in chosen], row.minutes, seed, lr, folder)
        tuned = [dsb_score(model, row.samples[i]) for i in scored]
        before = [base_scores[row.name, i] for i in scored]
        run = {"seed": seed, "lr": lr, "trained_on": chosen, "scored": len(scored), "steps": record["steps"],
               "minutes": record["minutes"], "final_loss": record["final_loss"],
               "lr_recorded": record["settings"]["lr"], "base": float(np.mean(before)),
               "fine_tuned": float(np.mean(tuned)), "seconds": round(time.perf_counter() - start, 1)}
        run["gain"] = run["fine_tuned"] - run["base"]
        row.runs.append(run)
        log(f"{row.name} seed {seed} lr {lr:g}: {record['steps']} steps, base {run['base']:.3f} -> "
            f"{run['fine_tuned']:.3f} (gain {run['gain']:+.3f}) on {len(scored)} images; trained on {', '.join(chosen)}")
    gains = [r["gain"] for r in row.runs]
    return {"row": row.name, "note": row.note, "lr": lr, "minutes": row.minutes,
            "base": float(np.mean([r["base"] for r in row.runs])),
            "fine_tuned": float(np.mean([r["fine_tuned"] for r in row.runs])),
            "gain": float(np.mean(gains)), "gain_min": float(min(gains)), "gain_max": float(max(gains)),
            "gain_std": float(np.std(gains)), "steps": [r["steps"] for r in row.runs],
            "target_gain": TARGET_GAIN.get(row.name), "runs": row.runs}


def memory_child(base: Path, minutes: float) -> None:
    """In a fresh process: fine-tune on 2 MoNuSeg ``test`` images; print the marks as JSON."""
    import napari_nucleiseg.learn.finetune  # noqa: F401  (torch and the training core)
    from napari_nucleiseg.weights import load_weights

    load_weights(base)
    from training.data import list_ids

    samples = list(load(MONUSEG / "test", list_ids(MONUSEG / "test", None)[:2]).values())
    loaded = high_water_kb()
    with tempfile.TemporaryDirectory() as folder:
        _, record = fine_tuned(base, samples, minutes, 0, 3e-4, Path(folder))
    print(json.dumps({"loaded_kb": loaded, "peak_kb": high_water_kb(), "steps": record["steps"],
                      "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "images": [list(s.image.shape) for s in samples]}))


def high_water_kb() -> int:
    """This process's resident-set high-water mark (kB), ``VmHWM``. Not ``ru_maxrss``: a child started
    by ``subprocess`` inherits in it the parent's mark at the exec (Linux keeps the larger of the two)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_memory(base: Path, minutes: float) -> dict:
    child = subprocess.run([sys.executable, __file__, "--memory-child", "--base", str(base),
                            "--memory-minutes", str(minutes)], capture_output=True, text=True, check=True)
    marks = json.loads(child.stdout.strip().splitlines()[-1])
    return {"minutes": minutes, "steps": marks["steps"], "images": marks["images"],
            "loaded_gb": marks["loaded_kb"] * 1024 / 1e9, "peak_gb": marks["peak_kb"] * 1024 / 1e9,
            "ru_maxrss_gb": marks["ru_maxrss_kb"] * 1024 / 1e9,
            "parent_at_start_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "target_gb": TARGET_MEMORY_GB}


def spread(summary: dict) -> str:
    return f"{summary['gain_min']:+.3f} .. {summary['gain_max']:+.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="weights trained on DSB2018 alone")
    parser.add_argument("--parts", nargs="+", default=["lr", "test", "memory"], choices=["lr", "test", "memory"])
    parser.add_argument("--rows", nargs="+", default=["monuseg", "consep", "val_x3"],
                        choices=["monuseg", "consep", "val_x3"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3], help="tried on MoNuSeg train")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate of the test rows (default: the module's LEARNING_RATE)")
    parser.add_argument("--consep-tiles", type=int, default=40)
    parser.add_argument("--val-count", type=int, default=20)
    parser.add_argument("--memory-minutes", type=float, default=1.0)
    parser.add_argument("--steps-per-minute", type=float, default=None,
                        help="budget each row in steps (this many a minute of its budget) instead of wall time, "
                             "so a busy machine does not change the result (e.g. the rate of an idle machine)")
    parser.add_argument("--smoke", action="store_true", help="0.1 min budgets, 2 images scored per row, no JSON")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.base, args.memory_minutes)
        return
    if not args.base.is_file():
        parser.error(f"{args.base} not found; mkdir -p runs && git show 2ff4f24:weights/hrnet.safetensors > {args.base}")

    import torch

    import napari_nucleiseg.learn.finetune as finetune_module

    lr = args.lr if args.lr is not None else finetune_module.LEARNING_RATE
    global STEPS_PER_MINUTE
    STEPS_PER_MINUTE = args.steps_per_minute
    smoke = args.smoke
    minutes = (lambda m: 0.1) if smoke else (lambda m: m)
    scored_limit = 2 if smoke else None
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {text}", flush=True)

    run = {"machine": machine_description(), "torch_threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M %Z"), "base": str(args.base),
           "command": " ".join(["OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "(unset)"), "python",
                                *sys.argv])}
    report = {}  # one entry per part run, each with ``run``; merged into ``--json``
    log(run["machine"] + f", {run['torch_threads']} torch threads")
    if "memory" in args.parts:
        memory = measure_memory(args.base, 0.1 if smoke else args.memory_minutes)
        report["memory"] = {"run": run, **memory}
        log(f"peak memory fine-tuning on 2 images of 1000 x 1000: {memory['peak_gb']:.2f} GB "
            f"({memory['loaded_gb']:.2f} GB once loaded; {memory['steps']} steps in {memory['minutes']:g} min; "
            f"target <= {TARGET_MEMORY_GB:g} GB)")
    base_scores: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        if "lr" in args.parts:
            choice = []
            for candidate in args.lrs:
                row = monuseg_row("train", 2, minutes(2.0), scored_limit or 10)
                choice.append(run_row(row, args.base, [0], candidate, base_scores, Path(folder), log))
            report["lr_choice"] = {"run": run, "rows": choice}
            print(format_table(["lr", "base", "fine-tuned", "gain", "steps"],
                               [[f"{s['lr']:g}", f"{s['base']:.3f}", f"{s['fine_tuned']:.3f}", f"{s['gain']:+.3f}",
                                 str(s["steps"][0])] for s in choice]), flush=True)
        if "test" in args.parts:
            makers = {"monuseg": lambda: monuseg_row("test", 2, minutes(3.0), scored_limit),
                      "consep": lambda: consep_row(8, minutes(3.0), scored_limit or args.consep_tiles, args.seeds),
                      "val_x3": lambda: val_row(2, minutes(2.0), 4 if smoke else args.val_count)}
            rows = []
            for name in args.rows:
                row = makers[name]()
                log(row.note)
                rows.append(run_row(row, args.base, args.seeds, lr, base_scores, Path(folder), log))
            report["test"] = {"run": run, "lr": lr, "rows": rows}
            print(format_table(
                ["row", "base", "fine-tuned", "gain (mean)", "gain min .. max", "target", "steps per run"],
                [[s["row"], f"{s['base']:.3f}", f"{s['fine_tuned']:.3f}", f"{s['gain']:+.3f}", spread(s),
                  f">= +{s['target_gain']:.2f}", ", ".join(map(str, s["steps"]))] for s in rows]), flush=True)
    run["seconds"] = round(time.perf_counter() - started)
    if not smoke and args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        kept = json.loads(args.json.read_text()) if args.json.is_file() else {}
        args.json.write_text(json.dumps({**kept, **report}, indent=1) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
