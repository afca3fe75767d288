"""The errors the package raises for its users, in one torch-free module.

Each carries one sentence for the user: the CLI prints it, the widget shows it, the API raises it.
"""

from __future__ import annotations


class ImageError(ValueError):
    """An image the segmentation cannot work on; the message is one sentence for the user."""


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and what is wrong."""


class Cancelled(Exception):
    """A run stopped because its ``cancelled`` callback returned True."""


class FineTuneError(ValueError):
    """Images, labels or settings that fine-tuning cannot work on; one sentence for the user, and
    nothing was written."""
