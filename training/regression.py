"""The regression figures of the shipped weights: each bundled model's DSB2018 score on the first
8 DSB2018 ``val`` images (sorted ids), and on each of the three bundled sample images (what a new
user segments first) against its truth, segmented as a user's call segments them (``segment()``,
Auto diameter, the file's own settings).

The samples are cut from DSB2018 ``val`` images (``src/napari_nucleiseg/samples/README.md``), so
their truth is those images' labels, cropped the same way.

    python -m training.regression --write weights/regression.json

``weights/regression.json`` is what the model cards promise for those images;
``tests/test_shipped_weights.py`` checks that today's files and pipeline still give it (within
:data:`TOLERANCE`), so a change that quietly degrades the shipped models fails the tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_nucleiseg import segment
from napari_nucleiseg._sample_data import SAMPLES, read_sample
from napari_nucleiseg.weights import BUNDLED_MODELS
from training.data import list_ids, load_pair
from training.metrics import instance_scores

DSB2018 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"
#: Images of the regression set: enough to catch a broken model or pipeline, few enough for CI.
N_IMAGES = 8
#: How far a model's score may drift from its recorded figure (the rounding of a float16 file
#: or a library's resampling moves it by a few thousandths; a broken model by tenths).
TOLERANCE = 0.02


#: Bundled sample -> (DSB2018 val image it was cut from, (rows, columns) of the crop or None).
SAMPLE_SOURCES = {
    "fluorescence": ("0402a81e75262469925ea893b6706183832e85324f7b1e08e634129f5d522cdd", None),
    "tissue": ("65c8527c16a016191118e8adc3d307fe3a73d37cbe05597a95aebd75daf8d051", None),
    "brightfield": ("4217e25defac94ff465157d53f5a24b8a14045b763d8606ec4a97d71d99ee381",
                    (slice(192, 704), slice(320, 832))),
}


def sample_truth(name: str, data: Path = DSB2018) -> np.ndarray:
    """The labels of bundled sample ``name``: its source image's, cropped as the sample was."""
    image_id, crop = SAMPLE_SOURCES[name]
    _, labels = load_pair(data, image_id)
    return labels if crop is None else labels[crop]


def sample_scores(models=BUNDLED_MODELS, data: Path = DSB2018) -> dict[str, dict[str, float]]:
    """Each model's DSB2018 score on each bundled sample, against the sample's truth."""
    pairs = {name: (read_sample(name), sample_truth(name, data)) for name in SAMPLES}
    return {model: {name: float(instance_scores(segment(image, model).labels, truth)["dsb_score"])
                    for name, (image, truth) in pairs.items()} for model in models}


def regression_ids(data: Path = DSB2018, n: int = N_IMAGES) -> list[str]:
    return list_ids(data, "val")[:n]


def regression_scores(models=BUNDLED_MODELS, data: Path = DSB2018, n: int = N_IMAGES) -> dict[str, float]:
    """Each model's mean DSB2018 score over the regression images."""
    pairs = [load_pair(data, image_id) for image_id in regression_ids(data, n)]
    return {model: float(np.mean([instance_scores(segment(image, model).labels, truth)["dsb_score"]
                                  for image, truth in pairs])) for model in models}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DSB2018)
    parser.add_argument("--write", type=Path, default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    scores = regression_scores(data=args.data)
    samples = sample_scores(data=args.data)
    record = {"images": regression_ids(args.data), "dsb_score": {k: round(v, 4) for k, v in scores.items()},
              "samples": {model: {name: round(v, 4) for name, v in by_name.items()} for model, by_name in samples.items()},
              "tolerance": TOLERANCE, "how": "python -m training.regression --write weights/regression.json"}
    print(json.dumps(record, indent=2))
    if args.write:
        args.write.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
