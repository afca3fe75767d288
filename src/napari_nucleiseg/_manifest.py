"""The manifest of a resumable batch run: which images of an output folder are done, from which input and
with which settings, so that ``nucleiseg segment --resume`` segments only the rest.

Every run writes one record per finished image,
``<out>/.nucleiseg/done/<stem>_labels.json``, once the image's files are in place (atomically, like every
file of a run). A record holds:

- the input: its path, size, modification time and the SHA-256 of its bytes;
- the settings that shape the result (:func:`run_settings`: the model file's SHA-256, threshold, ...);
- the image's row of ``counts.csv`` and its rows of ``nuclei.csv``: the tables are assembled from these
  parts, so a resumed run's tables are those of a run that was never stopped.

An image is done when its record is there, its input is the same file (the same path; the same size and
modification time, or else the same SHA-256) read with the same settings, and its output files are in place.

Just before an image's labels are renamed into place, it gets a note, ``<out>/.nucleiseg/writing/<stem>_labels.json``
(the settings, and the size and modification time of the file written), which its record replaces: labels a
run killed between the two left, untouched since, are its own, not a hand-corrected result to keep
(:meth:`Manifest.written_before_a_stop`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ._batch import write_atomically

if TYPE_CHECKING:
    import argparse

    import pandas as pd

MANIFEST_FOLDER = ".nucleiseg"
#: Bumped when a record's layout changes; a record of another version is not trusted (its image is redone).
RECORD_VERSION = 1
#: Bytes read at a time when hashing a file (large enough to be fast, small enough for any memory).
HASH_CHUNK = 1 << 20

#: The command-line settings that change an image's labels, rows or files (with the model file's hash).
RESULT_SETTINGS = ("threshold", "min_size", "split", "neck_ratio", "exclude_border", "diameter", "augment",
                   "brown_nuclei", "channel", "volumes")


def file_sha256(path: Path, check: Any = None) -> str:
    """The SHA-256 of a file's bytes, as hex; ``check()``, if given, is called between chunks (a stop asked for
    raises there: a whole slide's hash takes minutes from a network disk)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
            if check is not None:
                check()
    return digest.hexdigest()


def input_fingerprint(path: Path, check: Any = None) -> dict[str, Any]:
    """What identifies an input file: path, size, modification time (ns) and SHA-256 (stat first, so that a
    file changed while it is hashed looks changed next time). An OME-Zarr store (a folder) is not hashed (a
    whole slide's chunks can be gigabytes): its size is its files' and its time the newest of theirs, so a
    store touched since counts as changed."""
    size, mtime_ns = _size_and_time(path)
    return {"path": str(path), "size": size, "mtime_ns": mtime_ns,
            "sha256": None if Path(path).is_dir() else file_sha256(path, check)}


def _size_and_time(path: Path) -> tuple[int, int]:
    """A file's size and modification time (ns); a folder's files' total size and newest time."""
    if not Path(path).is_dir():
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime_ns
    stats = [os.stat(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names]
    return sum(stat.st_size for stat in stats), max((stat.st_mtime_ns for stat in stats), default=0)


def run_settings(args: argparse.Namespace, model_sha256: str) -> dict[str, Any]:
    """The settings of a ``segment`` run that shape each image's result, as recorded (JSON values)."""
    from . import __version__

    settings = {name: getattr(args, name) for name in RESULT_SETTINGS}
    return {"model_sha256": model_sha256, **settings, "version": __version__}


class Manifest:
    """The records of the images finished in an output folder (see the module's description)."""

    def __init__(self, out: Path, settings: dict[str, Any]):
        self.folder = Path(out) / MANIFEST_FOLDER / "done"
        self.writing = Path(out) / MANIFEST_FOLDER / "writing"
        # Recorded as JSON and read back: compared as the records hold them (a tuple becomes a list).
        self.settings = json.loads(json.dumps(settings))

    def path(self, labels_path: Path) -> Path:
        return self.folder / f"{Path(labels_path).stem}.json"

    def record(self, labels_path: Path, fingerprint: dict[str, Any], row: dict, table: pd.DataFrame) -> None:
        """Record an image whose files are in place: its input, this run's settings, its row and nuclei."""
        nuclei = {"columns": [str(column) for column in table.columns],
                  "dtypes": [str(dtype) for dtype in table.dtypes],
                  "rows": [[_plain(value) for value in values] for values in table.itertuples(index=False)]}
        record = {"version": RECORD_VERSION, "input": fingerprint, "settings": self.settings,
                  "row": {key: _plain(value) for key, value in row.items()}, "nuclei": nuclei,
                  "labels": _labels_identity(labels_path)}
        text = json.dumps(record)  # before any file is touched: a value JSON cannot hold fails here
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path(labels_path), lambda partial: partial.write_text(text))
        with contextlib.suppress(FileNotFoundError):
            self._note(labels_path).unlink()

    def note_written(self, labels_path: Path, written: Path) -> None:
        """Note that the labels of ``labels_path``, written under the temporary name ``written``, are about
        to be renamed into place (see the module)."""
        stat = os.stat(written)
        self.writing.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": RECORD_VERSION, "settings": self.settings, "size": stat.st_size,
                           "mtime_ns": stat.st_mtime_ns})
        write_atomically(self._note(labels_path), lambda partial: partial.write_text(text))

    def written_before_a_stop(self, labels_path: Path) -> bool:
        """Whether the labels at ``labels_path`` were written by a run with these settings that was stopped
        before it recorded them, and are as it left them: this tool's own, to replace, not to keep."""
        try:
            note = json.loads(self._note(labels_path).read_text())
            stat = os.stat(labels_path)
        except (OSError, ValueError):
            return False
        return (isinstance(note, dict) and note.get("version") == RECORD_VERSION and note.get("settings") == self.settings
                and note.get("size") == stat.st_size and note.get("mtime_ns") == stat.st_mtime_ns)

    def _note(self, labels_path: Path) -> Path:
        return self.writing / f"{Path(labels_path).stem}.json"

    def finished(self, source: Path, outputs: list[Path]) -> Done | None:
        """The row and nuclei of the image read from ``source`` if it is done (``outputs``: the files it must
        have in place, labels first), with the input recorded and whether its labels changed since; None if
        it must be segmented (again)."""
        record = self._read(outputs[0])
        if record is None or record.get("settings") != self.settings:
            return None
        in_place = all(path.is_dir() if path.suffix == ".zarr" else path.is_file() for path in outputs)  # (a store)
        if not in_place or not _same_input(record.get("input"), source):
            return None
        try:
            row, table = record["row"], _table(record["nuclei"])
        except (KeyError, TypeError, ValueError):
            return None  # a record damaged by hand: the image is segmented again
        return Done(row, table, record["input"], _labels_changed(record.get("labels"), outputs[0]))

    def corrected(self, labels_path: Path) -> tuple[Done, dict] | None:
        """The record of an image that any run finished (whatever its settings, returned with it) whose labels
        were changed since (corrected by hand); None if they were not, or no record says."""
        record = self._read(labels_path)
        if record is None or not _labels_changed(record.get("labels"), labels_path):
            return None
        try:
            row, table, settings = record["row"], _table(record["nuclei"]), dict(record["settings"])
        except (KeyError, TypeError, ValueError):
            return None
        return Done(row, table, record.get("input"), True), settings

    def forget(self, labels_path: Path) -> None:
        """Delete an image's record (before its outputs are replaced)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(labels_path).unlink()

    def _read(self, labels_path: Path) -> dict | None:
        try:
            record = json.loads(self.path(labels_path).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("version") == RECORD_VERSION else None


def _same_input(recorded: Any, source: Path) -> bool:
    """Whether ``source`` is the recorded input: the same path, and the same size and modification time or,
    when the file was touched, the same bytes."""
    if not isinstance(recorded, dict) or recorded.get("path") != str(source):
        return False
    try:
        size, mtime_ns = _size_and_time(source)
        if size != recorded.get("size"):
            return False
        return mtime_ns == recorded.get("mtime_ns") or (
            not source.is_dir() and file_sha256(source) == recorded.get("sha256"))
    except OSError:
        return False


def _table(nuclei: dict) -> pd.DataFrame:
    """The nuclei of a record as the DataFrame they were recorded from (columns, dtypes, values)."""
    import pandas as pd

    table = pd.DataFrame(nuclei["rows"], columns=nuclei["columns"], dtype=object)
    return table.astype(dict(zip(nuclei["columns"], nuclei["dtypes"])))


def _plain(value: Any) -> Any:
    """A table cell or row value as JSON holds it exactly (numpy scalars as Python numbers; floats keep every
    bit: JSON writes their shortest exact form, NaN as NaN); pandas' missing values as None."""
    import numpy as np

    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    import pandas as pd

    if value is pd.NA:
        return None
    raise TypeError(f"a value of type {type(value).__name__} cannot be recorded")


class Done(NamedTuple):
    """An image an earlier run finished (:meth:`Manifest.finished`)."""

    row: dict
    table: pd.DataFrame
    input: dict  # its input's fingerprint, as recorded (:func:`input_fingerprint`)
    labels_changed: bool  # its labels were changed since (corrected by hand): their rows are to be measured again


def _labels_changed(noted: Any, labels_path: Path) -> bool:
    """Whether the label file at ``labels_path`` differs from the one ``noted`` (:func:`_labels_identity`);
    False for a record made before labels were noted."""
    if not isinstance(noted, dict) or not noted:
        return False
    now = _stat(labels_path)
    if now is not None and all(noted.get(key) == value for key, value in now.items()):
        return False
    try:  # touched, or copied without its times: the same bytes are the same labels
        return file_sha256(labels_path) != noted.get("sha256")
    except OSError:
        return True


def _stat(path: Path) -> dict[str, int] | None:
    """The size and modification time of ``path`` (None if it cannot be read)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _labels_identity(path: Path) -> dict[str, Any] | None:
    """What identifies a label file as written: its size, modification time and SHA-256 (None if unreadable)."""
    stat = _stat(path)
    if stat is None:
        return None
    try:
        return {**stat, "sha256": file_sha256(path)}
    except OSError:
        return None
