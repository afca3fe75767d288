"""What Auto diameter costs: the estimate (the scale sweep) against one network pass at the scale
it picks, and the whole Auto run against today's run without resizing. Prints a table.

Images: the synthetic fluorescence nuclei of ``_common`` (radius 6-13 px, median diameter
about 19 px) at 256², 1024² and 4096², and the 1024² one enlarged 3x (nuclei about 57 px across,
3072²), which Auto shrinks. Times are the median of ``--repeats`` calls after a warm-up, on
``--threads`` threads; peak memory is not measured here (see bench_inference.py, which runs
``--diameter auto`` in a fresh process per image).

Example::

    python benchmarks/bench_diameter.py --models hrnet --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description, synthetic_image  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["unet", "unetpp", "hrnet"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024, 4096])
    args = parser.parse_args(argv)
    import torch

    from napari_nucleiseg.api import load_model
    from napari_nucleiseg.inference import predict_probabilities
    from napari_nucleiseg.scale import estimate_diameter, rescale_image

    torch.set_num_threads(args.threads)
    images = {f"{size}²": synthetic_image(size) for size in args.sizes}
    images["3072² (1024² x3: big nuclei)"] = rescale_image(synthetic_image(1024), 3.0)

    def timed(function, repeats):
        function()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            value = function()
            times.append(time.perf_counter() - start)
        return float(np.median(times)), value

    rows = []
    for name in args.models:
        model = load_model(name)
        for label, image in images.items():
            repeats = 1 if image.size > 4_000_000 else args.repeats
            estimate_s, diameter = timed(lambda: estimate_diameter(image, model), repeats)
            scale = model.scale_for(diameter)
            final_s, _ = timed(lambda: predict_probabilities(image, model, scale=scale), repeats)
            today_s, _ = timed(lambda: predict_probabilities(image, model), repeats)
            rows.append([name, label, f"{diameter:.1f}" if diameter else "-", f"{scale:.2f}",
                         f"{estimate_s * 1000:.0f}", f"{final_s * 1000:.0f}", f"{estimate_s / final_s:.2f}",
                         f"{(estimate_s + final_s) / today_s:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    print(machine_description() + f", {args.threads} threads")
    print(format_table(["model", "image", "estimate (px)", "scale", "estimate ms", "pass at that scale ms",
                        "estimate / pass", "Auto / today"], rows))


if __name__ == "__main__":
    main()
