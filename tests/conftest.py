"""Shared fixtures: tiny, randomly initialised models saved as real weights files.

Nothing here is trained; the files exist so that loading, inference, the API and
the CLI can be tested without the bundled weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

#: Smallest sensible size of each architecture: a forward pass on a 256 x 256
#: image takes milliseconds, so tests that run the whole pipeline stay fast.
TINY_KWARGS = {
    "unet": {"base_channels": 4, "depth": 3},
    "unetpp": {"base_channels": 4, "depth": 3},
    "hrnet": {"stem_channels": 4, "widths": [4, 8, 8], "blocks": 1},
}

#: Calibrated values written into the tiny weights files, deliberately unlike the
#: package defaults so tests can tell that they were read from the file.
TINY_THRESHOLD = 0.45
TINY_BOUNDARY_THRESHOLD = 0.55
TINY_MIN_SIZE = 7

#: Logits of a freshly initialised network hardly vary across an image. The output
#: layers of the tiny models are rescaled so that, on a typical image, each logit
#: has mean 0 and this standard deviation: probabilities then spread over most of
#: [0, 1] and follow the image, so comparisons between two ways of computing them
#: (tiled or not, saved or not) have something to compare.
LOGIT_SPREAD = 3.0

# The tests run tiny models on small images, where more threads cost more than they
# give (and CI and development machines share two cores with training). Set before
# torch is first imported; an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
DSB_IMAGES = SHARED / "data" / "dsb2018" / "stage1_train" / "images"


def tiny_metadata(name: str) -> dict:
    """Metadata of a tiny test model of architecture ``name``."""
    return {
        "architecture": name,
        "kwargs": TINY_KWARGS[name],
        "name": f"tiny-{name}",
        "normalization": {"method": "percentile", "percentiles": [1.0, 99.8]},
        "threshold": TINY_THRESHOLD,
        "boundary_threshold": TINY_BOUNDARY_THRESHOLD,
        "min_size": TINY_MIN_SIZE,
        "training": {"data": "none: random initialisation, for tests only"},
        "metrics": {},
    }


def build_tiny(name: str, seed: int = 0):
    """A tiny network of architecture ``name``: random weights, non-trivial batch-norm statistics, heads
    scaled to :data:`LOGIT_SPREAD`; in eval mode."""
    import torch

    from napari_nucleiseg.models import build_model

    torch.manual_seed(seed)
    network = build_model(name, **TINY_KWARGS[name])
    # Fresh batch norms (mean 0, variance 1) hide bugs in how running statistics are saved.
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    _standardize_heads(network.eval())
    return network.eval()


def _standardize_heads(network) -> None:
    import torch

    from napari_nucleiseg.preprocess import normalize_image

    heads = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 2]
    outputs = {}
    hooks = [h.register_forward_hook(lambda m, i, o: outputs.__setitem__(m, o)) for h in heads]
    image = normalize_image(blob_image((64, 64), centers=((16, 16), (40, 44)), seed=123))
    with torch.no_grad():
        network(torch.from_numpy(image).permute(2, 0, 1)[None])
        for head in heads:
            mean = outputs[head].mean(dim=(0, 2, 3))
            scale = LOGIT_SPREAD / outputs[head].std(dim=(0, 2, 3))
            head.weight.mul_(scale[:, None, None, None])
            head.bias.copy_((head.bias - mean) * scale)
    for hook in hooks:
        hook.remove()


@pytest.fixture(autouse=True)
def user_models_elsewhere(tmp_path_factory, monkeypatch):
    """No test lists or writes the models of the user running the tests: their model folder
    (NUCLEISEG_MODELS_DIR) is an empty temporary one, unless a test names another."""
    monkeypatch.setenv("NUCLEISEG_MODELS_DIR", str(tmp_path_factory.mktemp("user_models")))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    """``{"unet": path, "unetpp": path, "hrnet": path}``: tiny random models saved with ``save_weights``."""
    from napari_nucleiseg.weights import save_weights

    folder = tmp_path_factory.mktemp("tiny_weights")
    return {
        name: save_weights(folder / f"tiny-{name}.safetensors", build_tiny(name), tiny_metadata(name))
        for name in TINY_KWARGS
    }


@pytest.fixture(scope="session")
def dsb_image_paths() -> list[Path]:
    """A few real DSB2018 images from ../shared, or skip when they are not there."""
    paths = sorted(DSB_IMAGES.glob("*.png"))[:3] if DSB_IMAGES.is_dir() else []
    if not paths:
        pytest.skip(f"DSB2018 images not found in {DSB_IMAGES}")
    return paths


def disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean ``shape`` array, True within ``radius`` of ``center``."""
    yy, xx = np.indices(shape)
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def blob_image(shape=(96, 128), centers=((30, 30), (60, 90), (70, 40)), radius=12, seed=0) -> np.ndarray:
    """A ``shape`` uint8 gray image of bright disks on a noisy dark background."""
    rng = np.random.default_rng(seed)
    image = rng.normal(20, 5, shape)
    for center in centers:
        image[disk(shape, center, radius)] += 150
    return np.clip(image, 0, 255).astype(np.uint8)
