"""The post-processing settings, declared once: how probability maps become labelled nuclei.

A :class:`PostprocessSettings` is what a weights file calibrates, what the API, the command line
and the widget let the user change, what the evaluation scores, and what the tables record. A
new setting is one field here and its use in :func:`~napari_nucleiseg.postprocess.labels_from_probabilities`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Used when a weights file does not (yet) carry calibrated values.
DEFAULT_THRESHOLD = 0.5
DEFAULT_BOUNDARY_THRESHOLD = 0.5
DEFAULT_MIN_SIZE = 10
#: Files without a calibrated ``neck_ratio`` do not cut nuclei by shape.
DEFAULT_NECK_RATIO = 0.0
#: Files without a calibrated ``seed_min_size`` let every seed seed a nucleus.
DEFAULT_SEED_MIN_SIZE = 0

#: The fields whose values are numbers of pixels: they scale with the area of an image.
SIZE_FIELDS = ("min_size", "seed_min_size")


@dataclass(frozen=True)
class PostprocessSettings:
    """How probability maps become labels (:func:`~napari_nucleiseg.postprocess.labels_from_probabilities`).

    Attributes
    ----------
    threshold : float
        Pixels with a nucleus probability above it are nucleus, in [0, 1].
    boundary_threshold : float
        With ``split``, pixels with a boundary probability at or above it seed no nucleus, in [0, 1].
    min_size : int
        Nuclei of fewer pixels are dropped.
    split : bool
        Separate touching nuclei along the predicted boundaries.
    neck_ratio : float
        With ``split``, cut objects shaped like two nuclei joined by a neck at least this deep
        relative to their thickness, in [0, 1]; 0: never.
    seed_min_size : int
        With ``split``, seeds of fewer pixels seed no nucleus of their own; 0: all do.
    exclude_border : bool
        Drop the nuclei that touch the edge of the image (of each plane of a stack): they are
        cut off, and counting practice leaves them out. A choice of the user's, never calibrated.
    link_axis : int or None
        Of a stack, the leading axis (a Z axis) along which the nuclei of neighbouring planes are
        linked into 3-D nuclei (:func:`~napari_nucleiseg.volumes.link_planes`); None: each plane's
        nuclei stay apart. A choice of the user's, never calibrated.
    """

    threshold: float = DEFAULT_THRESHOLD
    boundary_threshold: float = DEFAULT_BOUNDARY_THRESHOLD
    min_size: int = DEFAULT_MIN_SIZE
    split: bool = True
    neck_ratio: float = DEFAULT_NECK_RATIO
    seed_min_size: int = DEFAULT_SEED_MIN_SIZE
    exclude_border: bool = False
    link_axis: int | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> PostprocessSettings:
        """The settings a weights file's metadata calibrates (the defaults for what it lacks; a file
        never excludes border nuclei)."""
        defaults = cls()
        return cls(
            threshold=float(metadata.get("threshold", defaults.threshold)),
            boundary_threshold=float(metadata.get("boundary_threshold", defaults.boundary_threshold)),
            min_size=int(metadata.get("min_size", defaults.min_size)),
            neck_ratio=float(metadata.get("neck_ratio", defaults.neck_ratio)),
            seed_min_size=int(metadata.get("seed_min_size", defaults.seed_min_size)),
        )

    def validate(self) -> PostprocessSettings:
        """Return the settings, or raise a ValueError of one sentence naming the first one out of range."""
        check_settings(**dataclasses.asdict(self))
        return self

    def replace(self, **changes: Any) -> PostprocessSettings:
        """A copy with ``changes`` (None values are ignored: "keep this one", but for ``link_axis``,
        where None means no linking), validated."""
        changes = {name: value for name, value in changes.items() if value is not None or name == "link_axis"}
        return dataclasses.replace(self, **changes).validate() if changes else self

    def at_scale(self, scale: float) -> PostprocessSettings:
        """The settings for an image resized by ``scale`` for the network: the sizes, counted in the
        network's frame, in the image's own pixels."""
        if scale == 1:
            return self
        return dataclasses.replace(self, **{name: int(round(getattr(self, name) / scale**2)) if getattr(self, name)
                                           else 0 for name in SIZE_FIELDS})

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~napari_nucleiseg.postprocess.labels_from_probabilities` (one plane's)."""
        options = dataclasses.asdict(self)
        del options["link_axis"]
        return options

    def row(self) -> dict[str, Any]:
        """The settings as columns of a results table (``counts.csv``): the split's own settings are
        NaN when nuclei were not split."""
        unsplit = float("nan")
        return {
            "threshold": self.threshold,
            "min_size": self.min_size,
            "split": self.split,
            "neck_ratio": self.neck_ratio if self.split else unsplit,
            "seed_min_size": self.seed_min_size if self.split else unsplit,
            "exclude_border": self.exclude_border,
            "nuclei_3d": self.link_axis is not None,
        }


#: The settings a weights file calibrates (a file never excludes border nuclei, nor turns splitting off).
FILE_SETTINGS = ("threshold", "boundary_threshold", "min_size", "neck_ratio", "seed_min_size")


def check_settings(threshold: float = DEFAULT_THRESHOLD, boundary_threshold: float = DEFAULT_BOUNDARY_THRESHOLD,
                   min_size: int = DEFAULT_MIN_SIZE, split: bool = True, neck_ratio: float = DEFAULT_NECK_RATIO,
                   seed_min_size: int = DEFAULT_SEED_MIN_SIZE, exclude_border: bool = False,
                   link_axis: int | None = None) -> None:
    """Raise a ValueError of one sentence for the first setting out of range or of the wrong type
    (see :class:`PostprocessSettings`): a probability is a number in [0, 1], not a string or True; a
    size a whole number of pixels; ``split`` and ``exclude_border`` True or False; ``link_axis`` None
    or an axis number."""
    if link_axis is not None and not (_whole(link_axis) and isinstance(link_axis, numbers.Integral)):
        raise ValueError(f"link_axis must be None or the number of a stack's leading axis, not {link_axis!r}")
    if not isinstance(split, (bool, np.bool_)):
        raise ValueError(f"split must be True or False, not {split!r}")
    if not isinstance(exclude_border, (bool, np.bool_)):
        raise ValueError(f"exclude_border must be True or False, not {exclude_border!r}")
    if not _fraction(neck_ratio):
        raise ValueError(f"neck_ratio must be a number between 0 and 1, not {neck_ratio!r}")
    if not _whole(seed_min_size):
        raise ValueError(f"seed_min_size must be a whole number of pixels >= 0, not {seed_min_size!r}")
    if not _fraction(threshold):
        raise ValueError(f"threshold must be a number between 0 and 1, not {threshold!r}")
    if not _fraction(boundary_threshold):
        raise ValueError(f"boundary_threshold must be a number between 0 and 1, not {boundary_threshold!r}")
    if not _whole(min_size):
        raise ValueError(f"min_size must be a whole number of pixels >= 0, not {min_size!r}")


def _number(value: Any) -> bool:
    """A real number (Python or numpy), not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _fraction(value: Any) -> bool:
    return _number(value) and 0 <= value <= 1


def _whole(pixels: Any) -> bool:
    """Whether ``pixels`` is a whole number >= 0 (a Python or numpy number)."""
    return _number(pixels) and pixels >= 0 and math.isfinite(pixels) and int(pixels) == pixels
