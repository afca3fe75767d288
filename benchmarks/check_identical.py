"""Check that a refactoring changed no label: segment the 68 DSB2018 ``val`` images with every
bundled model, through the Python API (what the CLI runs) and through the widget's pipeline, and
save the labels or compare them with labels saved before.

    # on the commit before the change
    python benchmarks/check_identical.py --save runs/identical_before
    # after it
    python benchmarks/check_identical.py --compare runs/identical_before

Prints, per model and path, how many images have bit-identical labels; exits 1 if any differ.
The widget's path is the pipeline the dock widget runs (compact probability maps, the model's
settings, Auto diameter): ``_run.run_in_worker``, or on a commit from before the pipeline
module, the widget's private ``_layers.predict_stack`` it replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DSB2018 = REPO.parent / "shared" / "data" / "dsb2018"
MODELS = ("unet", "unetpp", "hrnet")


def val_images(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    from skimage.io import imread

    names = json.loads((DSB2018 / "splits.json").read_text())["val"][:limit]
    return [(name, imread(DSB2018 / "stage1_train" / "images" / f"{name}.png")) for name in names]


def api_labels(image: np.ndarray, model: str) -> np.ndarray:
    from napari_nucleiseg import segment

    return segment(image, model).labels


def widget_labels(image: np.ndarray, model: str) -> np.ndarray:
    """The labels the dock widget shows first, with the model's calibrated settings and Auto diameter."""
    from napari_nucleiseg.weights import bundled_weights_path, read_metadata

    metadata = read_metadata(bundled_weights_path(model))
    try:
        from napari_nucleiseg import pipeline
    except ImportError:  # before the pipeline module: the widget's own generator
        from napari_nucleiseg import _layers

        options = {"threshold": float(metadata["threshold"]), "min_size": None, "split": True}
        steps = _layers.predict_stack(image, image.shape[:2], bundled_weights_path(model), postprocess=options)
        outcome = _layers.run_to_end(steps)
        return outcome.labels
    from napari_nucleiseg._run import run_in_worker

    # The widget's first run: the threshold and split of its controls (the model's calibration), the
    # min size left at its default (the model's at the run's scale), Auto diameter.
    chosen = {"threshold": float(metadata["threshold"]), "split": True}
    steps = run_in_worker(image, image.ndim == 3, bundled_weights_path(model), settings=chosen)
    return pipeline.run_to_end(steps).planes.labels


PATHS = {"api": api_labels, "widget": widget_labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="folder to save the labels in")
    action.add_argument("--compare", type=Path, help="folder of labels saved before")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--paths", nargs="+", choices=tuple(PATHS), default=list(PATHS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N val images")
    args = parser.parse_args(argv)

    images = val_images(args.limit)
    differing = 0
    for model in args.models:
        for path in args.paths:
            started = time.perf_counter()
            labels = {name: PATHS[path](image, model) for name, image in images}
            file = f"{model}_{path}.npz"
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(args.save / file, **labels)
                print(f"{model:7s} {path:7s} saved {len(labels)} label images  {time.perf_counter() - started:.0f} s")
                continue
            before = np.load(args.compare / file)
            same = [name for name in labels if name in before and before[name].dtype == labels[name].dtype
                    and np.array_equal(before[name], labels[name])]
            differing += len(labels) - len(same)
            print(f"{model:7s} {path:7s} {len(same)}/{len(labels)} images bit-identical  "
                  f"{time.perf_counter() - started:.0f} s")
            for name in sorted(set(labels) - set(same))[:5]:
                print(f"    differs: {name}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
