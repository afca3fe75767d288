"""The one CSV writer of the widget and the command line: never half-written, never a formula."""

from __future__ import annotations

import pandas as pd
import pytest

from napari_nucleiseg.tables import write_csv


def test_a_failed_write_leaves_the_existing_file_as_it_was_and_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "counts.csv"
    target.write_text("file,nuclei\nold.png,12\n")

    def disk_full(self, path, *args, **kwargs):
        open(path, "w").write("file,nu")  # half a row, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError):
        write_csv(pd.DataFrame({"file": ["new.png"], "nuclei": [3]}), target)
    assert target.read_text() == "file,nuclei\nold.png,12\n"
    assert [p.name for p in tmp_path.iterdir()] == ["counts.csv"]


def test_text_a_spreadsheet_would_run_as_a_formula_is_escaped(tmp_path):
    table = pd.DataFrame({"file": ["=HYPERLINK(\"http://x\")", "+1.png", "cells.png"], "nuclei": [1, -2, 3]})
    write_csv(table, tmp_path / "t.csv")
    read = pd.read_csv(tmp_path / "t.csv")
    assert list(read["file"]) == ["'=HYPERLINK(\"http://x\")", "'+1.png", "cells.png"]
    assert list(read["nuclei"]) == [1, -2, 3]  # numbers are numbers, negative or not
    assert list(table["file"])[0].startswith("=")  # the caller's table is left alone


def test_a_missing_folder_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "missing" / "t.csv")
