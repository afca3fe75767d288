"""PyTorch model definitions. Importing this package imports torch."""

from .registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model"]
