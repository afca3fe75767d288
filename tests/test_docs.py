"""The docs' score tables are generated from weights/evaluation.json, and that file measured the
weights that ship: a new weights file cannot ship with the old file's figures, nor a table be
edited by hand (``python -m training.doc_tables`` says how to regenerate them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.doc_tables import EVALUATION, stale_models, write_blocks

REPO = Path(__file__).resolve().parents[1]


def test_the_figures_are_of_the_weights_that_ship():
    assert stale_models(json.loads(EVALUATION.read_text())) == []


@pytest.mark.parametrize("doc", ["README.md", "weights/README.md"])
def test_the_score_tables_are_those_the_evaluation_gives(doc):
    text = (REPO / doc).read_text()
    assert "<!-- generated: scores -->" in text
    assert text == write_blocks(text, json.loads(EVALUATION.read_text())), (
        f"{doc}: a generated table differs; run python -m training.doc_tables write {doc}")


def test_a_changed_figure_changes_the_table():
    evaluation = json.loads(EVALUATION.read_text())
    text = (REPO / "README.md").read_text()
    evaluation["models"]["hrnet"]["sets"]["val"]["dsb_score"] = 0.123
    assert "0.123" in write_blocks(text, evaluation) and "0.123" not in text


def test_the_speed_table_is_what_the_benchmark_measured():
    from training.doc_tables import SPEED

    text = (REPO / "README.md").read_text()
    assert "<!-- generated: speed -->" in text
    speed = json.loads(SPEED.read_text())
    evaluation = json.loads(EVALUATION.read_text())
    assert text == write_blocks(text, evaluation, speed)
    speed["runs"][0]["times_s"] = [12.345]
    assert "12.3 s" in write_blocks(text, evaluation, speed) and "12.3 s" not in text


def test_collect_update_replaces_only_the_sets_measured_again_and_only_for_the_file_measured(tmp_path):
    from napari_nucleiseg.weights import bundled_weights_path
    from training.doc_tables import collect

    before = json.loads(EVALUATION.read_text())
    metrics = {"dsb_score": 0.4321, "f1_iou50": 0.8, "count_error_median": 0.1}

    def report(model: str, weights: Path) -> Path:
        path = tmp_path / f"{model}.json"
        path.write_text(json.dumps({"sets": {"val_x0.5": {"n_images": 68, "source": "val, resized x0.5", "results": [
            {"method": model, "weights": str(weights), "metrics": metrics},
            {"method": "Otsu + connected components", "metrics": {"dsb_score": 0.3}}]}}}))
        return path

    after = collect([report("hrnet", bundled_weights_path("hrnet"))], before)
    assert after["models"]["hrnet"]["sets"]["val_x0.5"]["dsb_score"] == 0.4321
    assert after["sets"]["val_x0.5"]["n_images"] == 68 and after["otsu"]["val_x0.5"] == 0.3
    for name in ("val", "val_x2", "monuseg_test"):  # the others kept as they were
        assert after["models"]["hrnet"]["sets"][name] == before["models"]["hrnet"]["sets"][name]
    assert after["models"]["unet"] == before["models"]["unet"] and before == json.loads(EVALUATION.read_text())
    with pytest.raises(SystemExit, match="another file"):  # another hrnet file's figures never mixed in
        collect([report("hrnet", bundled_weights_path("unet"))], before)
