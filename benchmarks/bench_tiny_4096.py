"""The worst case of Auto at 4096²: nuclei of about 9-10 px, which Auto enlarges as far as
``scale.MAX_SCALED_PIXELS`` allows (1.54x), so the network runs on 40 MPx and its maps are shrunk
back from there. Prints the time of ``segment(image, model=...)`` and the process's peak memory.

Run each measurement in a fresh process (peak memory is the process's)::

    python benchmarks/bench_tiny_4096.py make   # writes runs/tiny4096.npy: the 8192² synthetic image, shrunk 2x
    python benchmarks/bench_tiny_4096.py new    # today's pipeline
    python benchmarks/bench_tiny_4096.py old    # the maps shrunk back without anti-aliasing (before session 22)
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import synthetic_image

IMAGE = Path(__file__).resolve().parents[1] / "runs" / "tiny4096.npy"


def point_sampled(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``resize_probabilities`` as it was before session 22: linear zoom, no anti-aliasing."""
    from scipy import ndimage as ndi

    zoom = (shape[0] / probabilities.shape[1], shape[1] / probabilities.shape[2])
    out = np.empty((probabilities.shape[0], *shape), np.float32)
    for channel, plane in enumerate(probabilities):
        out[channel] = ndi.zoom(plane, zoom, order=1, mode="nearest", grid_mode=True, output=np.float32)
    return np.clip(out, 0, 1, out=out)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["make", "new", "old"])
    parser.add_argument("--model", default="hrnet")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.mode == "make":
        from napari_nucleiseg.scale import rescale_image

        IMAGE.parent.mkdir(exist_ok=True)
        np.save(IMAGE, rescale_image(synthetic_image(8192), 0.5))
        return
    import torch

    import napari_nucleiseg.scale
    from napari_nucleiseg import segment

    torch.set_num_threads(args.threads)
    if args.mode == "old":
        napari_nucleiseg.scale.resize_probabilities = point_sampled
    image = np.load(IMAGE)
    baseline = peak_gb()
    start = time.perf_counter()
    result = segment(image, model=args.model)
    print(f"{args.mode}: {args.model} {time.perf_counter() - start:.1f} s, peak {peak_gb():.2f} GB (baseline "
          f"{baseline:.2f} GB), diameter {result.diameter:.1f} px, scale {result.scale:.2f}, "
          f"{int(result.labels.max())} nuclei")


if __name__ == "__main__":
    main()
