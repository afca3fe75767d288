"""Score label images written by ``nucleiseg segment`` against DSB2018 ground truth.

Shows that the command line, with the shipped weights, gives the figures of weights/README.md::

    nucleiseg segment $(python training/score_folder.py --list-images --split val) --out /tmp/val-unet
    python training/score_folder.py /tmp/val-unet --split val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import find_dataset_root, list_ids, load_pair  # noqa: E402
from metrics import instance_scores, pixel_confusion, pixel_scores  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="the --out folder of nucleiseg segment")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--list-images", action="store_true", help="print the split's image paths and exit")
    args = parser.parse_args(argv)
    ids = list_ids(args.data, args.split)
    if args.list_images:
        print(" ".join(str(find_dataset_root(args.data) / "images" / f"{i}.png") for i in ids))
        return {}
    confusion, per_image = np.zeros(4, dtype=np.int64), []
    for sample_id in ids:
        _, truth = load_pair(args.data, sample_id)
        labels = tifffile.imread(args.folder / f"{sample_id}_labels.tif")
        confusion += pixel_confusion(labels, truth)
        per_image.append(instance_scores(labels, truth))
    summary = {
        **pixel_scores(confusion),
        "dsb_score": float(np.mean([s["dsb_score"] for s in per_image])),
        "f1_iou50": float(np.mean([s["f1_iou50"] for s in per_image])),
        "count_error_median": float(np.median([s["count_error"] for s in per_image])),
        "n_images": len(per_image),
    }
    print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
