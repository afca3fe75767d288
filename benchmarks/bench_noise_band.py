"""Where a gray image's contrast alone cannot tell camera noise from tiny nuclei (``scale.NOISE_CHECK_BAND``):
does the network's sweep confidence tell when a Gaussian of ``scale.NOISE_CHECK_SIGMA`` px helps?

DSB2018 ``val``: every gray image at x0.25 (clean, nuclei of 3-5 px), and every fluorescence image with
camera (Poisson) noise of 30 photons at the peak on a background of 0.5, and of 60 on 2. For each whose
contrast lies in the band: the best rung's confidence (``scale.sweep_confidence``) as it is and smoothed, and
the DSB2018 score at Auto (``segment()``) of each. Prints one row per image, then what the rule
(smoothed when surer by ``scale.NOISE_CHECK_MARGIN``) gives: session 35 measured 65 images in the band, the 7
clean ones all less sure smoothed, 35 of the 58 noisy ones smoothed for +0.100 each (noisy mean 0.444 -> 0.504).
``segment()`` itself applies the rule; here both versions are scored with it off.

Example::

    OMP_NUM_THREADS=2 python benchmarks/bench_noise_band.py --limit 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy import ndimage as ndi  # noqa: E402

from napari_nucleiseg import scale, segment  # noqa: E402
from napari_nucleiseg.api import load_model  # noqa: E402
from training.data import image_kind, load_pair  # noqa: E402
from training.evaluate import Sample, rescaled_sample  # noqa: E402
from training.metrics import instance_scores  # noqa: E402

NOISE = ((30, 0.5), (60, 2.0))  # (photons at the peak, background)


def cases(root: Path, limit: int | None, seed: int = 0):
    """``(name, id, gray float32 image, truth)`` of the probe, in val's order."""
    rng = np.random.default_rng(seed)
    ids = json.loads((root / "splits.json").read_text())["val"][:limit]
    for sample_id in ids:
        image, truth = load_pair(root, sample_id)
        kind = image_kind(image)
        if kind == "tissue":
            continue
        small = rescaled_sample(Sample(sample_id, image, truth), 0.25)
        gray = small.image[..., :3].mean(-1) if small.image.ndim == 3 else small.image
        yield f"x0.25 {kind}", sample_id, gray.astype(np.float32), small.truth
        if kind == "fluorescence":
            level = (image[..., :3].mean(-1) if image.ndim == 3 else image).astype(np.float64)
            for peak, background in NOISE:
                mean = background + (peak - background) * level / max(1.0, level.max())
                yield f"p{peak} b{background:g}", sample_id, rng.poisson(mean).astype(np.float32), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dsb2018")
    parser.add_argument("--model", default="hrnet")
    parser.add_argument("--limit", type=int, default=None, help="the first N val images only")
    args = parser.parse_args()
    model = load_model(args.model)
    low, high = scale.NOISE_CHECK_BAND
    scale.NOISE_CHECK_BAND = (0.0, 0.0)  # the rule off in segment(): each version scored as it is
    rows = []
    print("case          id        contrast  sure as is / smoothed  score as is / smoothed")
    for name, sample_id, image, truth in cases(args.data, args.limit):
        contrast = scale.contrast(image)
        if not low <= contrast < high:
            continue
        row = {"clean": name.startswith("x0.25")}
        for tag, seen in (("as_is", image), ("smoothed", ndi.gaussian_filter(image, scale.NOISE_CHECK_SIGMA))):
            row[f"sure_{tag}"] = scale.sweep_confidence(scale.sweep(seen, model))
            labels = segment(seen, model=model).labels  # (smoothed: its contrast is then above the band)
            row[f"score_{tag}"] = instance_scores(labels, truth)["dsb_score"]
        rows.append(row)
        print(f"{name:13s} {sample_id[:8]}  {contrast:8.1f}  {row['sure_as_is']:.3f} / {row['sure_smoothed']:.3f}"
              f"          {row['score_as_is']:.3f} / {row['score_smoothed']:.3f}", flush=True)
    chosen = [r for r in rows if r["sure_smoothed"] >= r["sure_as_is"] + scale.NOISE_CHECK_MARGIN]
    groups = (("clean (x0.25)", [r for r in rows if r["clean"]]), ("noisy", [r for r in rows if not r["clean"]]))
    for label, group in groups:
        if not group:
            continue
        picked = [r for r in group if r in chosen]
        ruled = np.mean([r["score_smoothed"] if r in chosen else r["score_as_is"] for r in group])
        print(f"{label}: {len(group)} in the band, {len(picked)} smoothed by the rule; mean score as is "
              f"{np.mean([r['score_as_is'] for r in group]):.3f}, with the rule {ruled:.3f}, all smoothed "
              f"{np.mean([r['score_smoothed'] for r in group]):.3f}")


if __name__ == "__main__":
    main()
