"""Issue 16, part 3: a screen of many images on a dask cluster (``nucleiseg segment --workers``), and a run
killed half-way then resumed (``--resume``).

Takes the first ``--images`` DSB2018 stage1_train images (sizes as they come: mostly 256 x 256, some up to
1000 x 1000; ``--synthetic`` makes gray images of round nuclei instead) and runs the real command line, each
run in a fresh process into a fresh folder, with the bundled ``--model``:

- ``in-process``: no cluster option (torch's own threads: all the cores);
- ``workers 1``, ``workers 2``: a LocalCluster of 1 or 2 single-threaded worker processes;
- ``killed``: ``--workers 2 --resume``, sent SIGKILL once half the images are recorded as done;
- ``resumed``: the same command again: it must segment only the rest, rewrite no finished image, and leave
  outputs identical (tables byte for byte, label files byte for byte) to the uninterrupted ``workers 2`` run.

Printed: wall time (from starting the command to its end, the cluster's start included), images per minute
(and between the first and the last label file written, without the start), the speed-up of 2 workers over
1 in wall time (target >= 1.7x on 2 cores), and what the resumed run did. The full
measurement (200 images, about 10 min with UNet on 2 idle cores)::

    python benchmarks/bench_cluster.py --images 200 --model unet --json benchmarks/results/cluster.json

A quick check that it runs: ``python benchmarks/bench_cluster.py --images 8``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DSB_IMAGES = REPO.parent / "shared" / "data" / "dsb2018" / "stage1_train" / "images"
#: How often the killed run's records are counted (it is killed as soon as half are there).
POLL_S = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="how many images the screen has (default 200)")
    parser.add_argument("--model", default="unet", help="bundled model (default unet)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic images instead of DSB2018's")
    parser.add_argument("--skip-in-process", action="store_true", help="do not time the run without a cluster")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as temporary:
        folder = Path(temporary)
        images = screen(folder / "images", args.images, args.synthetic)
        results = {"images": args.images, "model": args.model, "source": "synthetic" if args.synthetic else
                   "DSB2018 stage1_train", "cpus": os.cpu_count(), "runs": {}}
        kinds = ([] if args.skip_in_process else [("in-process", [])]) + [
            ("workers 1", ["--workers", "1"]), ("workers 2", ["--workers", "2"])]
        for kind, options in kinds:
            out = folder / kind.replace(" ", "-")
            seconds, stdout = timed(segment(images, out, args.model, *options))
            steady = steady_rate(out)
            results["runs"][kind] = {"seconds": round(seconds, 2), "images_per_minute": round(60 * args.images
                                                                                               / seconds, 1),
                                     "images_per_minute_after_the_first": round(steady, 1)}
            print(f"{kind:>11}: {seconds:7.1f} s, {60 * args.images / seconds:6.1f} images/min "
                  f"({steady:6.1f} after the first image)  {stdout.strip()}", flush=True)
        one, two = results["runs"]["workers 1"], results["runs"]["workers 2"]
        results["speedup_2_over_1"] = round(one["seconds"] / two["seconds"], 2)
        print(f"2 workers over 1: {results['speedup_2_over_1']:.2f}x (target >= 1.7x on 2 cores)")
        if "in-process" in results["runs"]:
            results["speedup_2_over_in_process"] = round(results["runs"]["in-process"]["seconds"] / two["seconds"], 2)
            print(f"2 workers over one process: {results['speedup_2_over_in_process']:.2f}x")
        results["resume"] = killed_and_resumed(images, folder, args.model, args.images, folder / "workers-2")
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            print(f"wrote {args.json}")


def screen(folder: Path, count: int, synthetic: bool) -> Path:
    """A folder of ``count`` images: links to DSB2018's first ones, or synthetic gray images."""
    folder.mkdir(parents=True)
    if not synthetic:
        sources = sorted(DSB_IMAGES.glob("*.png"))[:count]
        if len(sources) < count:
            sys.exit(f"{DSB_IMAGES} holds {len(sources)} images, not {count}; use --synthetic")
        for index, source in enumerate(sources):
            (folder / f"image{index:04d}.png").symlink_to(source)
        return folder
    import imageio.v3 as iio

    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import synthetic_image

    for index in range(count):
        iio.imwrite(folder / f"image{index:04d}.png", synthetic_image(256, seed=index))  # 16-bit gray
    return folder


def segment(images: Path, out: Path, model: str, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "napari_nucleiseg.cli", "segment", str(images), "--out", str(out),
               "--model", model, *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed(process: subprocess.Popen) -> tuple[float, str]:
    start = time.perf_counter()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0 or stderr.strip():
        sys.exit(f"the run failed ({process.returncode}): {stderr.strip()}")
    return seconds, stdout


def steady_rate(out: Path) -> float:
    """Images per minute between the first and the last label file written (the cluster's start left out)."""
    times = sorted(path.stat().st_mtime_ns for path in out.glob("*_labels.tif"))
    return 60e9 * (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def killed_and_resumed(images: Path, folder: Path, model: str, count: int, uninterrupted: Path) -> dict:
    """Kill a ``--workers 2 --resume`` run when half its images are recorded, run it again, compare."""
    out = folder / "killed"
    records = out / ".nucleiseg" / "done"
    options = ("--workers", "2", "--resume")
    start = time.perf_counter()
    killed = segment(images, out, model, *options)
    while len(list(records.glob("*.json"))) < count / 2:
        if killed.poll() is not None:
            sys.exit(f"the run to kill ended first: {killed.communicate()}")
        time.sleep(POLL_S)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    killed_seconds = time.perf_counter() - start
    recorded = {path.stem for path in records.glob("*.json")}
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("*_labels.tif")
              if path.stem in recorded}

    seconds, stdout = timed(segment(images, out, model, *options))
    said = re.search(r"Segmented (\d+) of the (\d+) images left \((\d+) of (\d+) were done before\)", stdout)
    segmented, left, kept = (int(said.group(n)) for n in (1, 2, 3)) if said else (None, None, None)
    rewritten = sum(1 for name, identity in before.items()
                    if (out / name).stat().st_ino != identity[0] or (out / name).stat().st_mtime_ns != identity[1])
    differing = different_files(out, uninterrupted)
    result = {"killed_after_s": round(killed_seconds, 2), "recorded_when_killed": len(recorded),
              "resumed_seconds": round(seconds, 2), "resumed_segmented": segmented, "resumed_left": left,
              "kept": kept, "finished_images_rewritten": rewritten, "files_differing_from_uninterrupted": differing}
    print(f"killed at {killed_seconds:.1f} s with {len(recorded)} of {count} images recorded; the rerun with "
          f"--resume took {seconds:.1f} s, segmented {segmented} of the {left} left and kept {kept}; "
          f"finished images written again: {rewritten}; files that differ from the uninterrupted run: "
          f"{differing or 'none'}")
    return result


def different_files(out: Path, reference: Path) -> list[str]:
    """The tables and label files of ``out`` whose bytes differ from ``reference``'s (or that one lacks)."""
    names = {path.name for folder in (out, reference) for path in folder.glob("*_labels.tif")}
    names |= {"counts.csv", "nuclei.csv"}
    return sorted(name for name in names if not (out / name).is_file() or not (reference / name).is_file()
                  or (out / name).read_bytes() != (reference / name).read_bytes())


if __name__ == "__main__":
    main()
