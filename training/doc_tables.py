"""The score tables of README.md and weights/README.md, generated, never copied by hand.

Two steps:

    # 1. collect what evaluate.py measured for the shipped files into weights/evaluation.json
    python -m training.doc_tables collect runs/eval_unet/report.json runs/eval_unet_scaled/report.json ...
    #    (--update: keep the other sets of weights/evaluation.json, replace those these reports measured)
    # 2. rewrite the generated blocks of the docs from it (and README's speed table from
    #    benchmarks/results/inference.json: python benchmarks/bench_inference.py --repeats 3 --json ...)
    python -m training.doc_tables write README.md weights/README.md

``weights/evaluation.json`` records the SHA-256 of each weights file it measured;
``tests/test_docs.py`` fails when a shipped file is not the one measured, or when a generated block
differs from what step 2 writes: a new weights file cannot ship with the old file's figures.
A generated block sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
from pathlib import Path

from napari_nucleiseg.weights import BUNDLED_MODELS, DEFAULT_MODEL, bundled_weights_path
from training.evaluate import DEFAULT_SETS

EVALUATION = Path(__file__).resolve().parents[1] / "weights" / "evaluation.json"
#: The sets of the tables, in order: those evaluate.py scores by default.
SETS = DEFAULT_SETS
TITLES = {"unet": "UNet", "unetpp": "UNet++", "hrnet": "HRNet"}
KEPT_METRICS = ("dsb_score", "f1_iou50", "count_error_median", "diameter_within", "diameter_ratio_median")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def collect(reports: list[Path], into: dict | None = None) -> dict:
    """The figures of evaluate.py's ``report.json`` files, by model and set, with each file's hash; with
    ``into`` (an evaluation collected before), its figures with the sets measured in ``reports`` replaced
    (a set measured again, e.g. on all its images), refused when a model's file is not the one measured there."""
    evaluation: dict = json.loads(json.dumps(into)) if into else {"models": {}, "otsu": {}, "sets": {}}
    for report_path in reports:
        report = json.loads(Path(report_path).read_text())
        for set_name, entry in report["sets"].items():
            evaluation["sets"][set_name] = {"n_images": entry["n_images"], "source": entry["source"]}
            for result in entry["results"]:
                method, metrics = result["method"], result["metrics"]
                if method.startswith("Otsu"):
                    evaluation["otsu"][set_name] = round(metrics["dsb_score"], 6)
                    continue
                if not result.get("split_nuclei", True):
                    continue
                digest = sha256(result["weights"])
                model = evaluation["models"].setdefault(method, {"weights_sha256": digest, "sets": {}})
                if model["weights_sha256"] != digest:
                    raise SystemExit(f"{report_path}: {method} was measured on another file than in the reports before")
                model["sets"][set_name] = {key: round(metrics[key], 6) for key in KEPT_METRICS if key in metrics}
    return evaluation


def scores_table(evaluation: dict) -> str:
    """DSB2018 score per set and model, with (share of diameters within +-25% / median estimate : true)."""
    models = [name for name in BUNDLED_MODELS if name in evaluation["models"]]
    header = ["set (images)"] + [TITLES.get(m, m) + (" (default)" if m == DEFAULT_MODEL else "") for m in models]
    lines = ["| " + " | ".join(header + ["Otsu"]) + " |", "| --- |" + " ---: |" * (len(models) + 1)]
    for set_name in (s for s in SETS if s in evaluation["sets"]):
        cells = [f"{set_name} ({evaluation['sets'][set_name]['n_images']})"]
        for model in models:
            scores = evaluation["models"][model]["sets"].get(set_name)
            if scores is None:
                cells.append("not measured")
                continue
            cell = f"{scores['dsb_score']:.3f}"
            if "diameter_within" in scores:
                cell += f" ({scores['diameter_within']:.0%} / {scores['diameter_ratio_median']:.2f})"
            cells.append(cell)
        otsu = evaluation["otsu"].get(set_name)
        cells.append("" if otsu is None else f"{otsu:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The targets of issue 14, for every model: DSB2018 score on val, on MoNuSeg and CoNSeP test, each
#: rescaled val set within this much of val, and the diameter within +-25% on this share of every set.
TARGETS = {"val": 0.55, "monuseg_test": 0.40, "consep_test": 0.30}
RESCALED_WITHIN = 0.05
DIAMETER_SHARE = 0.90


def _verdict(score: float, goal: float) -> str:
    return "met" if score >= goal else f"**missed** by {goal - score:.3f}"


def targets_table(evaluation: dict) -> str:
    """Each target of issue 14, for every model: its figure, met or missed and by how much."""
    models = [name for name in BUNDLED_MODELS if name in evaluation["models"]]
    lines = ["| target | " + " | ".join(TITLES.get(m, m) for m in models) + " |",
             "| --- |" + " --- |" * len(models)]
    sets = {model: evaluation["models"][model]["sets"] for model in models}

    def row(title: str, cell) -> None:
        lines.append(f"| {title} | " + " | ".join(cell(sets[model]) for model in models) + " |")

    row("DSB2018 val >= 0.55", lambda s: f"{s['val']['dsb_score']:.3f}: {_verdict(s['val']['dsb_score'], TARGETS['val'])}")
    rescaled = [name for name in SETS if name.startswith("val_x")]

    def within(s: dict) -> str:
        parts = []
        for name in rescaled:
            if name in s:
                gap = s[name]["dsb_score"] - s["val"]["dsb_score"]
                parts.append(f"{name[4:]} {gap:+.3f}" + ("" if gap >= -RESCALED_WITHIN else " **missed**"))
        return ", ".join(parts) or "not measured"

    row(f"val x0.25 / x0.5 / x2 / x3 within {RESCALED_WITHIN} of val (difference)", within)

    def diameters(s: dict) -> str:
        shares = {name: s[name]["diameter_within"] for name in SETS if name in s and "diameter_within" in s[name]}
        missed = [f"{name} {share:.0%}" for name, share in shares.items() if share < DIAMETER_SHARE]
        return ("met on every set" if not missed else "**missed** on " + ", ".join(missed)) if shares else "-"

    row(f"diameter within +-25% on >= {DIAMETER_SHARE:.0%} of every set", diameters)
    for name, title in (("monuseg_test", "MoNuSeg test >= 0.40"), ("consep_test", "CoNSeP test >= 0.30")):
        row(title, lambda s, name=name: f"{s[name]['dsb_score']:.3f}: {_verdict(s[name]['dsb_score'], TARGETS[name])}"
            if name in s else "not measured")
    return "\n".join(lines)


#: What ``python benchmarks/bench_inference.py --json`` measured, for the speed table.
SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "inference.json"


def speed_table(speed: dict) -> str:
    """Median latency per model and image size (and peak memory at the largest), from bench_inference."""
    runs = {(run["model"], run["size"]): run for run in speed["runs"]}
    models = [name for name in BUNDLED_MODELS if any(model == name for model, _ in runs)]
    sizes = sorted({size for _, size in runs})
    lines = ["| | " + " | ".join(TITLES[name] for name in models) + " |",
             "| --- |" + " ---: |" * len(models)]

    def cell(run: dict | None, with_memory: bool) -> str:
        if run is None or not run["times_s"]:
            return "-"
        seconds = statistics.median(run["times_s"])  # as bench_inference prints it
        time = f"{1000 * seconds:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
        return f"{time}, {run['peak_mb'] / 1024:.2f} GB" if with_memory else time

    for size in sizes:
        largest = size == sizes[-1]
        title = f"{size} x {size}" + (" (tiled), peak memory" if largest else "")
        lines.append(f"| {title} | " + " | ".join(cell(runs.get((name, size)), largest) for name in models) + " |")
    return "\n".join(lines)


BLOCKS = {"scores": scores_table, "targets": targets_table}


def write_blocks(text: str, evaluation: dict, speed: dict | None = None) -> str:
    """``text`` with every generated block rewritten from ``evaluation`` (and ``speed``, the
    benchmark's results; default: :data:`SPEED`)."""
    def rewrite(match: re.Match) -> str:
        name = match.group(1)
        if name == "speed":
            table = speed_table(speed if speed is not None else json.loads(SPEED.read_text()))
        else:
            table = BLOCKS[name](evaluation)
        return f"<!-- generated: {name} -->\n{table}\n<!-- end generated: {name} -->"

    return re.sub(r"<!-- generated: (\w+) -->\n.*?\n<!-- end generated: \1 -->", rewrite, text, flags=re.S)


def stale_models(evaluation: dict) -> list[str]:
    """The bundled models whose shipped file is not the one measured (or was not measured)."""
    return [name for name in BUNDLED_MODELS
            if evaluation["models"].get(name, {}).get("weights_sha256") != sha256(bundled_weights_path(name))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect", help="evaluate.py report.json files -> weights/evaluation.json")
    gather.add_argument("reports", type=Path, nargs="+")
    gather.add_argument("--out", type=Path, default=EVALUATION)
    gather.add_argument("--update", action="store_true",
                        help="keep the sets of --out that the reports do not measure, replace those they do")
    write = commands.add_parser("write", help="rewrite the generated blocks of these markdown files")
    write.add_argument("files", type=Path, nargs="+")
    write.add_argument("--evaluation", type=Path, default=EVALUATION)
    args = parser.parse_args(argv)
    if args.command == "collect":
        evaluation = collect(args.reports, json.loads(args.out.read_text()) if args.update else None)
        args.out.write_text(json.dumps(evaluation, indent=1) + "\n")
        print(f"wrote {args.out}: {', '.join(evaluation['models'])} on {', '.join(evaluation['sets'])}")
        return
    evaluation = json.loads(args.evaluation.read_text())
    stale = stale_models(evaluation)
    if stale:
        print(f"warning: the shipped {', '.join(stale)} file is not the one measured in {args.evaluation}")
    for path in args.files:
        path.write_text(write_blocks(path.read_text(), evaluation))
        print(f"rewrote the generated blocks of {path}")


if __name__ == "__main__":
    main()
