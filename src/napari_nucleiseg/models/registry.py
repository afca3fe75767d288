"""The closed map from architecture names (as stored in weights files) to model classes."""

from __future__ import annotations

from typing import Any

from torch import nn

from .hrnet import HRNet
from .unet import UNet
from .unetpp import UNetPlusPlus

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "hrnet": HRNet,
}


def build_model(architecture: str, **kwargs: Any) -> nn.Module:
    """Instantiate ``architecture`` with keyword arguments ``kwargs``.

    Raises
    ------
    ValueError
        If the name is not one of :data:`ARCHITECTURES`, or the keyword
        arguments do not fit the class.
    """
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"Unknown architecture {architecture!r}; expected one of: {valid}.") from None
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ValueError(f"Invalid arguments for {architecture!r}: {error}") from None
