"""The shipped weights still segment real images as well as their cards say: each bundled model's
DSB2018 score on 8 DSB2018 val images, through ``segment()``, within 0.02 of the figure recorded
in ``weights/regression.json`` (made by ``python -m training.regression``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_nucleiseg.weights import BUNDLED_MODELS, bundled_weights_path
from training.regression import DSB2018, TOLERANCE, regression_ids, regression_scores

RECORD = Path(__file__).resolve().parents[1] / "weights" / "regression.json"

pytestmark = pytest.mark.skipif(not (DSB2018 / "splits.json").is_file(), reason="needs ../shared/data/dsb2018")


@pytest.mark.parametrize("model", BUNDLED_MODELS)
def test_the_shipped_model_scores_what_its_card_says_on_real_val_images(model):
    record = json.loads(RECORD.read_text())
    assert record["images"] == regression_ids()  # the same images as when the figures were recorded
    assert bundled_weights_path(model).is_file()
    (score,) = regression_scores([model]).values()
    assert score == pytest.approx(record["dsb_score"][model], abs=TOLERANCE), (model, score)
    assert score > 0.3  # and the figure itself is that of a working model
