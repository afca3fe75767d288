"""Bundled sample images (see ``samples/README.md``), read only when the user opens one.

Reading a sample needs scikit-image, never torch.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

#: name -> (file in ``samples/``, layer name); the name is what napari.yaml's commands pass.
SAMPLES = {
    "fluorescence": ("fluorescence.png", "fluorescence sample"),
    "tissue": ("tissue.png", "tissue sample"),
    "brightfield": ("brightfield.png", "brightfield sample"),
}


def read_sample(name: str) -> np.ndarray:
    """The sample image ``name`` as uint8: ``(H, W)`` for gray samples, ``(H, W, 3)`` for colour ones."""
    from skimage.io import imread

    filename, _ = SAMPLES[name]
    with resources.as_file(resources.files("napari_nucleiseg") / "samples" / filename) as path:
        image = imread(path)
    if image.ndim == 3:
        image = image[..., :3]  # drop alpha, if a sample ever carries one
    return np.ascontiguousarray(image)


def _layer_data(name: str) -> list[tuple]:
    image = read_sample(name)
    return [(image, {"name": SAMPLES[name][1], "rgb": image.ndim == 3}, "image")]


def fluorescence_sample() -> list[tuple]:
    """Gray fluorescence: bright nuclei on a dark background."""
    return _layer_data("fluorescence")


def tissue_sample() -> list[tuple]:
    """Purple stained tissue: dark purple nuclei on a pink background."""
    return _layer_data("tissue")


def brightfield_sample() -> list[tuple]:
    """Brightfield: dark nuclei in gray cells on a light background."""
    return _layer_data("brightfield")
