"""Score label images written by ``nucleiseg segment`` against ground truth.

Reads ``<folder>/<id>_labels.tif`` for every truth image and prints the figures of
evaluate.py's tables (pooled mean IoU, DSB2018 score, F1 @ IoU 0.5, median count error; with
the ``counts.csv`` of a run whose model records a diameter, how often the estimate was within
+-25% of the true median diameter). Shows that the command line, with the shipped weights,
gives the figures of weights/README.md::

    nucleiseg segment $(python -m training.score_folder --list-images --split val) --out /tmp/val-unet
    python -m training.score_folder /tmp/val-unet --split val

A test set, with its folder of truth labels (``<id>.png``, the image's stem)::

    nucleiseg segment ../shared/data/monuseg2018/test/images --out /tmp/monuseg-hrnet
    python -m training.score_folder /tmp/monuseg-hrnet --truth ../shared/data/monuseg2018/test/labels
    nucleiseg segment ../shared/data/consep/test/images --out /tmp/consep-hrnet
    python -m training.score_folder /tmp/consep-hrnet --truth ../shared/data/consep/test/labels

or any set of evaluate.py by name (``--set monuseg_test``, ``--set consep_test``). DSB2018 val
rescaled by a factor, as evaluate.py builds it (``--set val_x<factor>``): its images do not
exist as files, so ``--list-images`` writes them (PNG) to ``--write-images`` first; the truth
is rescaled the same way when scoring::

    nucleiseg segment $(python -m training.score_folder --list-images --set val_x2 --write-images /tmp/val_x2) \
        --out /tmp/val_x2-hrnet
    python -m training.score_folder /tmp/val_x2-hrnet --set val_x2

(``nucleiseg segment --weights FILE`` for a weights file other than the bundled ones.)
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import tifffile

from training.data import find_dataset_root, median_diameter
from training.evaluate import TEST_SET_FOLDERS, diameter_summary, parse_sets, resolve_set, set_ids, set_samples
from training.metrics import instance_scores, pixel_confusion, summarize

#: Files a truth labels folder may hold (the stem is the image's id).
TRUTH_SUFFIXES = (".png", ".tif", ".tiff")


def truth_labels(folder: Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``(id, labels)`` of the first ``limit`` label images (sorted stems) of ``folder``, as int32."""
    from skimage.io import imread

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in TRUTH_SUFFIXES)[:limit]
    if not paths:
        raise SystemExit(f"no label images ({', '.join(TRUTH_SUFFIXES)}) in {folder}")
    return [(path.stem, imread(path).astype(np.int32)) for path in paths]


def read_diameters(folder: Path) -> dict[str, tuple[float | None, bool]]:
    """``{image stem: (diameter_px, diameter_estimated)}`` from the run's ``counts.csv`` ({} without one)."""
    path = Path(folder) / "counts.csv"
    if not path.is_file():
        return {}
    diameters = {}
    with path.open(newline="") as stream:
        for row in csv.DictReader(stream):
            if "diameter_px" not in row:
                return {}
            value = float(row["diameter_px"]) if row["diameter_px"] not in ("", "nan") else None
            diameters[Path(row["file"]).stem] = (value, row.get("diameter_estimated") == "True")
    return diameters


def score_folder(folder: Path, truths, diameters: dict | None = None) -> dict:
    """Summary of the ``<id>_labels.tif`` of ``folder`` against ``truths`` (``(id, labels)`` pairs).

    A missing or misshapen labels file is an error naming it: a partial run would score better
    or worse than the whole set.
    """
    confusion, per_image, rows = np.zeros(4, dtype=np.int64), [], []
    for sample_id, truth in truths:
        path = Path(folder) / f"{sample_id}_labels.tif"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: segment every image of the set into {folder}")
        labels = tifffile.imread(path)
        if labels.shape != truth.shape:
            raise SystemExit(f"{path} is {labels.shape[0]} x {labels.shape[1]}, its truth {truth.shape[0]} x "
                             f"{truth.shape[1]}: segment the set's own images (--set, --write-images)")
        confusion += pixel_confusion(labels, truth)
        per_image.append(instance_scores(labels, truth))
        used, estimated = (diameters or {}).get(sample_id, (None, False))
        rows.append({"diameter_true": median_diameter(truth), "diameter_used": used, "diameter_estimated": estimated})
    summary = summarize(per_image, confusion)
    if any(row["diameter_estimated"] for row in rows):
        summary.update(diameter_summary(rows))
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="the --out folder of nucleiseg segment")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--split", default="val", help="DSB2018 split of the sets val and val_x<factor>")
    parser.add_argument("--set", default="val", help="a set of evaluate.py: val, val_x<factor> (e.g. val_x0.5), "
                                                     + ", ".join(TEST_SET_FOLDERS))
    for name, folder in TEST_SET_FOLDERS.items():
        parser.add_argument(f"--{name.split('_')[0]}", type=Path, default=folder, dest=name,
                            help=f"folder of the set {name} (default {folder})")
    parser.add_argument("--truth", type=Path, help="a folder of truth label images <id>.png instead of a set")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (sorted ids)")
    parser.add_argument("--list-images", action="store_true", help="print the set's image paths and exit")
    parser.add_argument("--write-images", type=Path, metavar="DIR",
                        help="with --list-images: write the set's images to DIR as <id>.png (needed for val_x<factor>)")
    args = parser.parse_args(argv)
    try:
        (name,) = parse_sets(args.set)
    except ValueError as error:
        parser.error(f"--set: {error}")
    eval_set = resolve_set(name, args.data, args.split, {n: getattr(args, n) for n in TEST_SET_FOLDERS})
    if args.list_images:
        if args.write_images:
            from skimage.io import imsave

            args.write_images.mkdir(parents=True, exist_ok=True)
            paths = []
            for sample in set_samples(eval_set, args.limit):
                paths.append(args.write_images / f"{sample.id}.png")
                imsave(paths[-1], np.ascontiguousarray(sample.image), check_contrast=False)
        elif eval_set.factor != 1:
            parser.error(f"the images of {name} are resized: write them with --write-images DIR")
        else:
            root = find_dataset_root(eval_set.folder) / "images"
            paths = [next(root / f"{i}{s}" for s in (".png", ".jpg", ".jpeg") if (root / f"{i}{s}").is_file())
                     for i in set_ids(eval_set, args.limit)]
        print(" ".join(str(path) for path in paths))
        return {}
    if args.folder is None:
        parser.error("give the --out folder of nucleiseg segment to score")
    if args.truth:
        truths = truth_labels(args.truth, args.limit)
    else:
        truths = ((sample.id, sample.truth) for sample in set_samples(eval_set, args.limit))
    summary = score_folder(args.folder, truths, read_diameters(args.folder))
    print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
