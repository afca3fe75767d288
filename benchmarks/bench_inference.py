"""Latency and peak memory of CPU inference, per model and image size: prints a table.

Each (model, size) runs in a fresh Python process, so its peak memory is its own:
"peak" is ``ru_maxrss`` (the resident-set high-water mark) at the end; "baseline" is
the resident set right after importing torch and the package and loading the model,
and "import peak" the high-water mark then (importing passes through more memory
than it keeps). "peak - baseline" is what segmenting that image costs on top of a
loaded plugin; a small image may not even push the peak past the import peak.

Latency is the median of ``--repeats`` calls of ``predict_probabilities`` (normalise,
tile, predict, blend) after one warm-up call; "first call" is the warm-up call
itself (oneDNN picks and builds its kernels then), which is what a user waits
for the very first time. "CPU ms" is the median CPU time of the process per call,
all threads together: with ``--threads 1`` it measures the work even on a busy
machine, where wall times are inflated by whoever else runs.

Example::

    python benchmarks/bench_inference.py --models unet --sizes 256 1024 --repeats 5
    python benchmarks/bench_inference.py --models hrnet --sizes 4096 --repeats 1 --diameter auto
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description, median_ms, weights_for  # noqa: E402

MODELS = ("unet", "unetpp", "hrnet")
SIZES = (256, 1024, 4096)

#: What each worker prints on its last line, before its JSON result.
RESULT_PREFIX = "RESULT "


def max_rss_mb() -> float:
    """This process's resident-set high-water mark in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """This process's resident set now, in MiB (Linux; elsewhere the high-water mark stands in)."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return max_rss_mb()


def worker(weights: str, size: int, repeats: int, threads: int | None, seed: int, diameter: str = "none") -> dict:
    """Time one model on one size in this process and return the measurements.

    ``diameter``: ``none`` times ``predict_probabilities`` on the image as it is; ``auto`` (or a
    number) the whole pipeline of ``segment()``: ``predict_at_diameter``, with the estimate.
    """
    start = time.perf_counter()
    import torch

    from napari_nucleiseg.pipeline import predict_at_diameter
    from napari_nucleiseg.inference import predict_probabilities as predict_as_is
    from napari_nucleiseg.weights import load_weights

    def predict_probabilities(image, model):
        if diameter == "none":
            return predict_as_is(image, model)
        return predict_at_diameter(image, model, None if diameter == "auto" else float(diameter)).probabilities

    if threads:
        torch.set_num_threads(threads)
    model = load_weights(weights)
    import_s = time.perf_counter() - start
    baseline, baseline_peak = current_rss_mb(), max_rss_mb()

    from _common import synthetic_image

    image = synthetic_image(size, seed)
    start = time.perf_counter()
    probabilities = predict_probabilities(image, model)
    first = time.perf_counter() - start
    assert probabilities.shape == (2, size, size)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        predict_probabilities(image, model)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    return {
        "import_s": import_s,
        "first_s": first,
        "times_s": times,
        "cpu_times_s": cpu_times,
        "threads": torch.get_num_threads(),
        "baseline_mb": baseline,
        "baseline_peak_mb": baseline_peak,
        "peak_mb": max_rss_mb(),
    }


def run_worker(weights: Path, size: int, repeats: int, threads: int | None, seed: int, diameter: str = "none") -> dict:
    command = [sys.executable, __file__, "--worker", str(weights), "--sizes", str(size),
               "--repeats", str(repeats), "--seed", str(seed), "--diameter", diameter]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="square image sides in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after one warm-up call")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic image")
    parser.add_argument("--json", type=Path, default=None, help="also write all measurements here")
    parser.add_argument("--diameter", default="none",
                        help="none: predict_probabilities on the image as it is (as before diameters); auto or a "
                             "number of pixels: segment()'s pipeline (predict_at_diameter), the estimate included")
    parser.add_argument("--worker", metavar="WEIGHTS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(args.worker, args.sizes[0], args.repeats, args.threads, args.seed, args.diameter)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    print(f"Machine: {machine_description()}")
    paths, notes = weights_for(args.models)
    for note in notes:
        print(f"Note: {note}")
    what = "predict_probabilities" if args.diameter == "none" else f"predict_at_diameter (diameter {args.diameter})"
    print(f"Latency: median of {args.repeats} calls of {what} after 1 warm-up call "
          "(uint16 gray image, synthetic nuclei). Memory: resident set of a fresh process per row.\n")
    everything = []
    for name in args.models:
        rows = []
        for size in args.sizes:
            result = run_worker(paths[name], size, args.repeats, args.threads, args.seed, args.diameter)
            result.update(model=name, size=size)
            everything.append(result)
            times = result["times_s"]
            rows.append([
                f"{size}x{size}",
                f"{median_ms(times):.0f}" if times else "-",
                f"{1000 * min(times):.0f}" if times else "-",
                f"{median_ms(result['cpu_times_s']):.0f}" if times else "-",
                f"{1000 * result['first_s']:.0f}",
                f"{result['baseline_mb']:.0f}",
                f"{result['baseline_peak_mb']:.0f}",
                f"{result['peak_mb']:.0f}",
                f"{result['peak_mb'] - result['baseline_mb']:.0f}",
            ])
            print(f"  {name} {size}x{size}: done", file=sys.stderr, flush=True)
        threads = everything[-1]["threads"]
        print(f"### {name} ({threads} torch threads)\n")
        print(format_table(
            ["image", "median ms", "min ms", "CPU ms", "first call ms", "baseline MiB", "import peak MiB", "peak MiB", "peak - baseline MiB"],
            rows,
        ))
        print(flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "notes": notes, "runs": everything}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
