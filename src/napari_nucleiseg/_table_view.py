"""The per-nucleus table of the result shown, in the dock widget: one row per nucleus, sortable;
clicking a row takes the viewer to that nucleus and selects its label (to paint more of it, or to
see it with *show selected*).

The rows are the result layer's ``features`` (:func:`~napari_nucleiseg.tables.nuclei_table`), read
as they are whenever napari says they changed: the table follows the slider and hand edits as the
layer's table does (measured in a worker, :mod:`._outputs`). Nothing is copied row by row: the model
hands Qt the cells it draws, so a table of 100,000 nuclei costs what its columns cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView
from superqt.utils import signals_blocked

#: Columns left out of the view (all are in Export CSV): the copy of ``label`` napari needs, and the
#: bounding box, which the centroid says more readably.
HIDDEN_COLUMNS = ("index", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")
#: Rows shown without scrolling: the view never grows taller than ``VISIBLE_ROWS`` nor shrinks below
#: ``MIN_VISIBLE_ROWS``.
VISIBLE_ROWS = 8
MIN_VISIBLE_ROWS = 5


class _FeaturesModel(QAbstractTableModel):
    """A read-only view of a DataFrame's columns, sorted by one of them with numpy (a sort of 100,000 rows
    takes milliseconds; Qt's sort proxy compares rows through Python calls, seconds that freeze the window).
    The sort is kept by column name across new frames, as long as the column is there."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.columns: list[str] = []
        self.headers: dict[str, str] = {}  # a column's name as shown, where it differs (axis_0 -> z)
        self._values: list[np.ndarray] = []
        self._order: np.ndarray | None = None  # row shown -> row of the frame; None: the frame's order
        self.sort_key: tuple[str, bool] | None = None  # (column, descending)

    def set_frame(self, frame: Any) -> None:
        self.beginResetModel()
        names = [] if frame is None else [str(name) for name in frame.columns if name not in HIDDEN_COLUMNS]
        self.columns = names
        self._values = [frame[name].to_numpy() for name in names]
        if self.sort_key is not None and self.sort_key[0] not in names:
            self.sort_key = None
        self._order = self._sorted_order()
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self.sort_key = (self.columns[column], order == Qt.SortOrder.DescendingOrder) \
            if 0 <= column < len(self.columns) else None
        self._order = self._sorted_order()
        self.layoutChanged.emit()

    def _sorted_order(self) -> np.ndarray | None:
        if self.sort_key is None:
            return None
        name, descending = self.sort_key
        values = self._values[self.columns.index(name)]
        if values.dtype.kind in "iuf":
            keys = values.astype(np.float64)
            return np.argsort(-keys if descending else keys, kind="stable")  # NaN last either way
        order = np.argsort(values.astype(str), kind="stable")
        return order[::-1] if descending else order

    def source_row(self, row: int) -> int:
        return int(row if self._order is None else self._order[row])

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 (Qt's names and signature)
        return 0 if parent.isValid() or not self._values else len(self._values[0])

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return _shown(self._values[index.column()][self.source_row(index.row())])
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers.get(self.columns[section], self.columns[section])
        return None

    def row_values(self, row: int) -> dict[str, Any]:
        """The values of the ``row``-th row shown, by column."""
        source = self.source_row(row)
        return {name: values[source] for name, values in zip(self.columns, self._values)}


def _shown(value: Any) -> str:
    """A cell as text: integers whole, other numbers to 4 significant digits, NaN empty."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{float(value):.4g}"
    return str(value)


class NucleiTable(QTableView):
    """The per-nucleus table of one Labels layer of ``viewer`` (:meth:`show_layer`), hidden without one.
    Clicking a row centres the view on that nucleus, moves the sliders to its plane and selects its label."""

    HELP = ("One row per nucleus of the result shown (its layer's features; Export CSV saves every column). "
            "Click a column's name to sort; click a row (or move with the arrow keys) to go to that nucleus "
            "and select its label.")

    def __init__(self, viewer, parent=None) -> None:
        super().__init__(parent, toolTip=self.HELP)
        self.viewer = viewer
        #: ``headers(layer)``: the names to show for some of its columns, as Export CSV writes them
        #: (``{"axis_0": "z"}``); set by the widget.
        self.headers: Callable[[Any], dict[str, str]] = lambda layer: {}
        self.layer: Any = None
        self._model = _FeaturesModel(self)
        self.setModel(self._model)
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the layer's own order until a header is clicked
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setMinimumSectionSize(1)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)  # compact rows
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # Columns fit the rows in view, not 1,000 rows of each (Qt's default): at 100,000 rows a sort took
        # 0.74 s and now 0.03 s (benchmarks/bench_table.py).
        self.horizontalHeader().setResizeContentsPrecision(0)
        chrome = self.horizontalHeader().sizeHint().height() + 2 * self.frameWidth() + 16  # header, scroll bar
        row = self.verticalHeader().defaultSectionSize()
        self.setMinimumHeight(MIN_VISIBLE_ROWS * row + chrome)
        self.setMaximumHeight(VISIBLE_ROWS * row + chrome)
        self.clicked.connect(self._go_to)
        self.setVisible(False)

    def keyPressEvent(self, event) -> None:
        """The arrow keys (and Page Up/Down, Home, End) go from nucleus to nucleus, as clicks do."""
        before = self.currentIndex().row()
        super().keyPressEvent(event)
        if self.currentIndex().isValid() and self.currentIndex().row() != before:
            self._go_to(self.currentIndex())

    def show_layer(self, layer: Any) -> None:
        """Show the table of ``layer`` (None: no table), and follow its changes from now on."""
        if layer is not self.layer:
            if self.layer is not None:
                self.layer.events.features.disconnect(self._refresh)
            self.layer = layer
            if layer is not None:
                layer.events.features.connect(self._refresh)
            self.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # another table: in its own order again
        self._refresh()

    def forget(self, layer: Any) -> None:
        """``layer`` is going: show no table if it is the one shown."""
        if self.layer is not None and layer.unique_id == self.layer.unique_id:
            self.show_layer(None)

    @property
    def rows(self) -> int:
        """The number of rows (nuclei) shown."""
        return self._model.rowCount()

    @property
    def columns(self) -> list[str]:
        """The columns shown, in order."""
        return list(self._model.columns)

    def row_values(self, row: int) -> dict[str, Any]:
        """The values of the ``row``-th row as shown (sorted), by column."""
        return self._model.row_values(row)

    def _refresh(self, *_) -> None:
        features = None if self.layer is None else self.layer.features
        measured = features is not None and "label" in getattr(features, "columns", ())
        self._model.headers = self.headers(self.layer) if measured else {}
        self._model.set_frame(features if measured else None)
        key = self._model.sort_key  # kept by name: the indicator goes where that column is now
        header = self.horizontalHeader()
        with signals_blocked(header):
            if key is None:
                header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
            else:
                header.setSortIndicator(self._model.columns.index(key[0]),
                                        Qt.SortOrder.DescendingOrder if key[1] else Qt.SortOrder.AscendingOrder)
        self.setVisible(self.layer is not None)  # empty until measured: the dock does not jump

    def _go_to(self, index: QModelIndex) -> None:
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return
        values = self.row_values(index.row())
        layer.selected_label = int(values["label"])
        from ._outputs import labels_of, layer_position

        position = _data_position(values, np.ndim(labels_of(layer)))
        if position is None:
            return
        world = np.asarray(layer.data_to_world(layer_position(layer, position)), dtype=float)
        offset = self.viewer.dims.ndim - len(world)  # the viewer may have axes the layer has not
        point = list(self.viewer.dims.point)
        point[offset:] = world
        displayed = list(self.viewer.dims.displayed)
        for axis in range(offset, len(point) - 2):  # the sliders: to the nucleus's plane
            if axis not in displayed:
                self.viewer.dims.set_point(axis, point[axis])
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera  # napari >= 0.9
        camera.center = tuple(point[axis] for axis in displayed)


def _data_position(values: dict[str, Any], ndim: int) -> list[float] | None:
    """The nucleus's position in the layer's data (its plane on the leading axes, its centroid), from
    its row; None when the row has no centroid."""
    if "centroid_y" not in values or "centroid_x" not in values:
        return None
    position = [0.0] * ndim
    position[-2:] = [float(values["centroid_y"]), float(values["centroid_x"])]
    for axis in range(ndim - 2):
        if f"axis_{axis}" in values:
            position[axis] = float(values[f"axis_{axis}"])
        elif "centroid_z" in values:  # 3-D nuclei: the axis their planes were linked along
            position[axis] = float(values["centroid_z"])
    return position
