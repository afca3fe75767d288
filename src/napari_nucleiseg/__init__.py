"""napari-nucleiseg: find cell nuclei in microscopy images with small trained networks.

Importing this package is cheap: torch is imported only when a model runs.

>>> from napari_nucleiseg import segment
>>> result = segment(image, model="hrnet")       # doctest: +SKIP
>>> result.labels, result.count, result.table     # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import SegmentationResult, segment

__all__ = ["SegmentationResult", "__version__", "segment"]
