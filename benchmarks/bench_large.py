"""Issue 16, part 2: an image larger than memory, segmented block by block (napari_nucleiseg.large).

Writes a gray mosaic of real nuclei (DSB2018 val fluorescence images, training.data.dsb_mosaic,
repeated with flips) of ``--side`` px as a tiled TIFF, then, each in a fresh process:

- ``large``: the TIFF opened lazily (tifffile's zarr store) and segmented by ``segment_large`` into a
  zarr store; wall time, time per megapixel, peak memory (``ru_maxrss``), nuclei;
- ``whole``: a ``--reference`` px crop of the same mosaic segmented whole by ``segment()`` (what the
  CLI does for an image that fits), for the time per megapixel to compare with.

Targets (issue 16): peak memory <= 2 GB for 30,000 x 30,000; time per megapixel within 1.3x that of
4096 x 4096. About 15 min for 30,000 px with HRNet on 2 idle cores::

    python benchmarks/bench_large.py --side 30000 --model hrnet --threads 2 --json benchmarks/results/large.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "data" / "dsb2018"
TILE = 512


def write_mosaic(path: Path, side: int, base_side: int = 4096) -> None:
    """A ``side`` px tiled TIFF of ``base_side`` px mosaics of DSB2018 val, flipped in turn, written a
    tile row at a time (the whole never in memory)."""
    import tifffile

    sys.path.insert(0, str(REPO))
    from training.data import dsb_mosaic

    base = dsb_mosaic(DSB, base_side)
    flips = [base, base[::-1], base[:, ::-1], base[::-1, ::-1]]

    def tiles():
        for y in range(0, side, TILE):
            for x in range(0, side, TILE):
                tile = np.zeros((TILE, TILE), np.uint8)
                by, bx = y // base_side, x // base_side
                source = flips[(by + 2 * bx) % 4]
                part = source[y % base_side : y % base_side + TILE, x % base_side : x % base_side + TILE]
                tile[: part.shape[0], : part.shape[1]] = part  # base_side is a multiple of TILE
                yield tile

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(TILE, TILE), bigtiff=True)


def child(kind: str, path: Path, model_name: str, threads: int, reference: int, out: Path) -> dict:
    import torch

    torch.set_num_threads(threads)
    import tifffile
    import zarr

    from napari_nucleiseg.api import load_model, segment
    from napari_nucleiseg.large import segment_large

    model = load_model(model_name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    if kind == "large":
        data = zarr.open_array(tifffile.imread(path, aszarr=True), mode="r")
        result = segment_large(data, model, out / "labels.zarr")
        pixels, nuclei, extra = data.shape[0] * data.shape[1], result.count, {"blocks": result.blocks,
                                                                               "left_out": result.left_out}
    else:
        with tifffile.TiffFile(path) as tif:
            image = zarr.open_array(tif.aszarr(), mode="r")[:reference, :reference]
        start = time.perf_counter()
        result = segment(image, model)
        pixels, nuclei, extra = image.size, result.count, {}
    seconds = time.perf_counter() - start
    return {"kind": kind, "model": model_name, "megapixels": pixels / 1e6, "seconds": round(seconds, 1),
            "seconds_per_megapixel": round(seconds / (pixels / 1e6), 3), "nuclei": int(nuclei),
            "diameter": None if result.diameter is None else round(float(result.diameter), 1),
            "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "memory_after_loading_gb": round(before, 2), **extra}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=30000)
    parser.add_argument("--reference", type=int, default=4096)
    parser.add_argument("--model", default="hrnet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("large", "whole"))
    parser.add_argument("--tiff", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.tiff, args.model, args.threads, args.reference, args.out)))
        return
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        tiff = Path(tmp) / "mosaic.tif"
        start = time.perf_counter()
        write_mosaic(tiff, args.side)
        print(f"mosaic {args.side} x {args.side} written in {time.perf_counter() - start:.0f} s "
              f"({tiff.stat().st_size / 2**30:.2f} GB)", flush=True)
        rows = []
        for kind in ("whole", "large"):
            command = [sys.executable, __file__, "--child", kind, "--tiff", str(tiff), "--out", tmp, "--model",
                       args.model, "--threads", str(args.threads), "--reference", str(args.reference)]
            row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    whole, large = rows
    ratio = large["seconds_per_megapixel"] / whole["seconds_per_megapixel"]
    print(f"\n| image | model | s | s/MPx | peak memory | nuclei | diameter |\n|---|---|---|---|---|---|---|")
    for row in rows:
        name = f"{args.reference}² whole" if row["kind"] == "whole" else f"{args.side}² in blocks"
        print(f"| {name} | {row['model']} | {row['seconds']} | {row['seconds_per_megapixel']} | "
              f"{row['peak_memory_gb']} GB | {row['nuclei']} | {row['diameter']} |")
    print(f"\ntime per megapixel, blocks / whole: {ratio:.2f} (target <= 1.3); "
          f"peak memory {large['peak_memory_gb']} GB (target <= 2)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": ratio, "threads": args.threads}, indent=1) + "\n")


if __name__ == "__main__":
    main()
