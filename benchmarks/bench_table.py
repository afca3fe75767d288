"""The widget's table of nuclei on a large result: how long the main thread is held when the table is
shown, sorted by a column, and refreshed while sorted (each slider move or hand edit refreshes it).

    xvfb-run -a python benchmarks/bench_table.py [--rows 100000]

A block-by-block result of a slide or mosaic holds tens of thousands of nuclei (README: 14,137 in an
8192² mosaic). Qt's sort proxy, used at first, compared rows through Python calls: 13 s per sort and
14 s per refresh at 100,000 rows (session 23's review); the table now sorts with numpy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_nucleiseg._table_view import NucleiTable

    rng = np.random.default_rng(0)
    n = args.rows
    table = pd.DataFrame({"index": np.arange(1, n + 1), "label": np.arange(1, n + 1),
                          "area": rng.integers(10, 500, n), "centroid_y": rng.random(n) * 8192,
                          "centroid_x": rng.random(n) * 8192, "mean_intensity": rng.random(n) * 255,
                          "eccentricity": rng.random(n), "perimeter": rng.random(n) * 80,
                          "equivalent_diameter": rng.random(n) * 25, "solidity": rng.random(n)})
    viewer = napari.Viewer(show=False)
    layer = viewer.add_labels(np.zeros((16, 16), np.int32), name="result")
    view = NucleiTable(viewer)
    view.show()
    layer.features = table

    def timed(what: str, step) -> None:
        start = time.perf_counter()
        step()
        QApplication.processEvents()
        print(f"{what}: {time.perf_counter() - start:.3f} s")

    timed(f"show {n} rows", lambda: view.show_layer(layer))
    timed("sort by area, descending", lambda: view.sortByColumn(view.columns.index("area"), Qt.SortOrder.DescendingOrder))
    assert view.row_values(0)["area"] == table["area"].max()
    timed("refresh while sorted (new features)", lambda: setattr(layer, "features", table.sample(frac=1, random_state=1)))
    assert view.row_values(0)["area"] == table["area"].max()
    viewer.close()


if __name__ == "__main__":
    main()
