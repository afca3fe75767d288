"""The per-nucleus tables of label images and stacks, and the one way they are written to CSV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

@dataclass(frozen=True)
class PixelSize:
    """The physical size of a pixel along y and x, in ``unit`` (an ASCII symbol such as ``um``), and
    where pixel (0, 0) lies: the image's scale, offset and units in napari."""

    y: float
    x: float
    unit: str
    origin: tuple[float, float] = (0.0, 0.0)
    z: float | None = None  # between planes, for the volumes of 3-D nuclei; None: not known
    z_origin: float = 0.0  # where plane 0 lies along z (the image's offset there in napari)


def physical_columns(table, pixel: PixelSize):
    """``table`` with the measurements in ``pixel.unit`` added: area and centroid, and, for square
    pixels, perimeter and equivalent diameter; for 3-D nuclei their centroid, and their centroid's z and
    their volume when the spacing of the planes is known."""
    unit = pixel.unit
    table[f"centroid_y_{unit}"] = pixel.origin[0] + table["centroid_y"] * pixel.y
    table[f"centroid_x_{unit}"] = pixel.origin[1] + table["centroid_x"] * pixel.x
    if "volume" in table:
        if pixel.z is not None:
            # (QA: the centroid's y and x were given in the unit, its z only in planes)
            table.insert(table.columns.get_loc(f"centroid_y_{unit}"), f"centroid_z_{unit}",
                         pixel.z_origin + table["centroid_z"] * pixel.z)
            table[f"volume_{unit}3"] = table["volume"] * (pixel.z * pixel.y * pixel.x)
        return table
    table.insert(table.columns.get_loc(f"centroid_y_{unit}"), f"area_{unit}2", table["area"] * (pixel.y * pixel.x))
    if np.isclose(pixel.y, pixel.x):
        for column in ("perimeter", "equivalent_diameter"):
            table[f"{column}_{unit}"] = table[column] * pixel.x
    return table


def nuclei_table(labels: np.ndarray, image: Any, rgb: bool, pixel: PixelSize | None = None,
                 volume_axis: int | None = None):
    """Per-nucleus measurements of a ``(*leading, Y, X)`` label stack as a DataFrame.

    One row per nucleus, with the plane's position on the leading axes (``axis_0``, ...) for
    stacks, and an ``index`` column equal to ``label`` so napari shows a nucleus's row
    under the mouse. Lengths are in pixels; with ``pixel``, columns in its unit follow.

    With ``volume_axis`` (a leading axis whose planes were linked into 3-D nuclei,
    :func:`~napari_nucleiseg.volumes.link_planes`), one row per 3-D nucleus
    (:func:`~napari_nucleiseg.volumes.measure_volumes`), with its position on the other leading axes.
    """
    import pandas as pd

    from .postprocess import measure_nuclei
    from .volumes import measure_volumes

    leading = labels.shape[: labels.ndim - 2]
    outer = [axis for axis in range(len(leading)) if axis != volume_axis]
    tables = []
    for position in np.ndindex(*(leading[axis] for axis in outer)):
        index: list[Any] = list(position)
        if volume_axis is not None:
            index.insert(volume_axis, slice(None))
        index = tuple(index)
        plane_image = np.asarray(image[index]) if image is not None else None
        if plane_image is not None and rgb:
            plane_image = plane_image[..., :3]
        plane_labels = np.asarray(labels[index])
        table = measure_nuclei(plane_labels, plane_image) if volume_axis is None else measure_volumes(
            plane_labels, plane_image)
        for column, (axis, value) in enumerate(zip(outer, position)):
            table.insert(column, f"axis_{axis}", value)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    table.insert(0, "index", table["label"].to_numpy())
    return physical_columns(table, pixel) if pixel is not None else table


def count_labels(labels: np.ndarray) -> int:
    """The number of nuclei in a label image or stack (distinct non-zero labels)."""
    from .postprocess import count_nuclei

    return int(count_nuclei(np.asarray(labels)))


#: Text cells that begin with one of these are read as a formula by spreadsheet programs (a file
#: named "=HYPERLINK(...).tif" would run in Excel): they are written with a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def read_csv_as_written(path: Any) -> Any:
    """A table :func:`write_csv` wrote, back as it was: text cells unescaped (``'-ctrl.png`` is ``-ctrl.png``),
    and columns of whole numbers with empty cells (a 2-D image's ``volume`` beside a stack's) whole numbers
    (``Int64``), not floats that would be written back as ``314.0`` (review)."""
    import pandas as pd

    table = pd.read_csv(path)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)  # each cell as it was written
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            table[column] = values.map(unescaped)
        elif pd.api.types.is_float_dtype(values) and values.notna().any():
            cells = text[column][text[column] != ""]
            if cells.str.fullmatch(r"-?\d+").all():  # written as whole numbers (a float column's 1.0 stays)
                table[column] = values.astype("Int64")
    return table


def unescaped(cell: Any) -> Any:
    """A text cell as it was before :func:`_escaped` (a quote put before a formula's first character)."""
    if isinstance(cell, str) and len(cell) > 1 and cell[0] == "'" and cell[1] in FORMULA_STARTS:
        return cell[1:]
    return cell


def write_csv(table: Any, path: Any) -> None:
    """Write ``table`` (a DataFrame) to ``path`` as CSV, without its index, never half-written.

    It is written beside the target and renamed over it: a write that fails half-way (a full
    disk, a stop) leaves an existing file of that name as it was, and no partial file. Text cells
    that a spreadsheet would run as a formula are escaped (:data:`FORMULA_STARTS`).

    Raises
    ------
    OSError
        When the folder is missing, the file read-only, or the disk full; nothing is left behind.
    """
    import os
    from pathlib import Path

    from ._batch import write_atomically

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(0, f"the folder {path.parent} does not exist")
    if path.is_file() and not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
        raise PermissionError(0, "the file is read-only")  # the rename below would replace it without asking
    escaped = _escaped(table)
    write_atomically(path, lambda partial: escaped.to_csv(partial, index=False))


def _escaped(table: Any) -> Any:
    """``table`` with its formula-like text cells prefixed by an apostrophe (a copy only when needed)."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    text = [column for column in table.columns
            if is_object_dtype(table[column].dtype) or is_string_dtype(table[column].dtype)]
    risky = [column for column in text
             if table[column].map(lambda cell: isinstance(cell, str) and cell.startswith(FORMULA_STARTS)).any()]
    if not risky:
        return table
    table = table.copy()
    for column in risky:
        table[column] = table[column].map(
            lambda cell: "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell)
    return table
