"""napari-nucleiseg: find cell nuclei in microscopy images with small trained networks.

Importing this package is cheap: torch is imported only when a model runs.

>>> from napari_nucleiseg import segment
>>> result = segment(image, model="hrnet")       # doctest: +SKIP
>>> result.labels, result.count, result.table     # doctest: +SKIP

Teach a model from corrected labels (:func:`napari_nucleiseg.learn.finetune.finetune`):

>>> from napari_nucleiseg import finetune
>>> path = finetune([image], [corrected_labels], model="hrnet", minutes=2)   # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import SegmentationResult, segment

__all__ = ["SegmentationResult", "__version__", "finetune", "segment"]


def __getattr__(name: str):
    if name == "finetune":  # imported when first used: it imports torch
        from .learn.finetune import finetune

        return finetune
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
