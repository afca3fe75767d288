"""Placeholder: replaced by the post-processing helper."""
from __future__ import annotations
SegmentationResult = None
def segment(*args, **kwargs):
    raise NotImplementedError
