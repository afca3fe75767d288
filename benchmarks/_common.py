"""Shared helpers of the benchmark scripts: synthetic nuclei, weights to time, timing, machine facts.

Synthetic data is enough here: network latency does not depend on pixel values or
weight values, and post-processing cost depends on the number and shape of the
nuclei, which the blurred disks below imitate (a few thousand round nuclei of
6-13 pixels radius, some touching, as in a dense DSB2018 fluorescence image).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Centre-to-centre spacing of the synthetic nuclei on their jittered grid: with radii up to
#: 13 pixels, neighbours touch often enough that the watershed split has real work to do.
NUCLEUS_SPACING = 26
NUCLEUS_RADII = (6, 13)


def synthetic_labels(size: int, seed: int = 0) -> np.ndarray:
    """``(size, size)`` int32 labels of round nuclei on a jittered grid; later disks overwrite earlier ones."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), dtype=np.int32)
    margin = NUCLEUS_SPACING // 2
    centres = np.arange(margin, size - margin + 1, NUCLEUS_SPACING) if size > NUCLEUS_SPACING else [size // 2]
    label = 0
    for cy in centres:
        for cx in centres:
            if rng.random() < 0.15:  # some empty places, as in real images
                continue
            r = int(rng.integers(*NUCLEUS_RADII, endpoint=True))
            y = int(np.clip(cy + rng.integers(-6, 7), 0, size - 1))
            x = int(np.clip(cx + rng.integers(-6, 7), 0, size - 1))
            y0, y1, x0, x1 = max(0, y - r), min(size, y + r + 1), max(0, x - r), min(size, x + r + 1)
            yy, xx = np.ogrid[y0 - y : y1 - y, x0 - x : x1 - x]
            # Slightly elliptic: real nuclei are not perfect disks.
            disk = (yy / (r * rng.uniform(0.8, 1.0))) ** 2 + (xx / r) ** 2 <= 1.0
            label += 1
            labels[y0:y1, x0:x1][disk] = label
    return labels


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A ``(size, size)`` uint16 fluorescence-like image: blurred bright nuclei on a noisy background."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    nuclei = (synthetic_labels(size, seed) > 0).astype(np.float32)
    image = ndi.gaussian_filter(nuclei, 1.5) * 3000 + 200
    image += rng.normal(0, 60, image.shape).astype(np.float32)
    return np.clip(image, 0, 65535).astype(np.uint16)


def synthetic_probabilities(size: int, seed: int = 0) -> np.ndarray:
    """``(2, size, size)`` float32 nucleus/boundary probabilities as a trained network would give them.

    Nucleus: the blurred mask. Boundary: the blurred inner rim of each nucleus (what the
    models are trained to find: ``find_boundaries(mode="inner")``), including where two
    nuclei touch, so a seeded watershed must split them.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    labels = synthetic_labels(size, seed)
    nucleus = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0)
    rim = find_boundaries(labels, mode="inner") & (labels > 0)
    boundary = np.clip(ndi.gaussian_filter(rim.astype(np.float32), 0.7) * 2.0, 0, 1)
    return np.stack([nucleus, boundary]).astype(np.float32)


def model_kwargs() -> dict[str, dict]:
    """The architecture arguments of the bundled models, from ``training.train``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the training package sits at the repository root
    from training.train import MODEL_KWARGS

    return MODEL_KWARGS


def weights_for(names: list[str]) -> tuple[dict[str, Path], list[str]]:
    """A weights path per model name, and notes for those that are stand-ins.

    The bundled ``weights/<name>.safetensors`` where it exists; otherwise the
    architecture of the bundled model with random weights, saved to a temporary
    file (latency does not depend on weight values).
    """
    from napari_nucleiseg.weights import WEIGHTS_SUFFIX, weights_dir

    paths, notes = {}, []
    kwargs = None
    for name in names:
        path = weights_dir() / f"{name}{WEIGHTS_SUFFIX}"
        if path.is_file():
            paths[name] = path
            continue
        if kwargs is None:
            kwargs = model_kwargs()
        from napari_nucleiseg.models import build_model
        from napari_nucleiseg.weights import save_weights

        import torch

        torch.manual_seed(0)  # the same stand-in every time, so runs compare
        network = build_model(name, **kwargs[name])
        calibrate_batch_norm(network)
        folder = Path(tempfile.mkdtemp(prefix="nucleiseg-bench-"))
        paths[name] = save_weights(
            folder / f"{name}{WEIGHTS_SUFFIX}",
            network,
            {"architecture": name, "kwargs": kwargs[name], "name": name},
        )
        notes.append(f"{name}: no trained weights in {path.parent}; timed the same architecture with random weights")
    return paths, notes


def calibrate_batch_norm(network, size: int = 128, images: int = 4) -> None:
    """Set the batch-norm statistics of a randomly initialised ``network`` from synthetic images.

    With the initial statistics (mean 0, variance 1) random layers let activations
    drift until the sigmoid saturates; calibrated, the outputs are spread out like a
    trained model's, so comparing two ways of computing them means something.
    """
    import torch

    from napari_nucleiseg.preprocess import normalize_image

    batch = np.stack([normalize_image(synthetic_image(size, seed)) for seed in range(images)])
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration passes
    network.train()
    with torch.no_grad():
        network(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous())
    network.eval()


def time_calls(function: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``function`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def machine_description() -> str:
    """One line: CPU model, cores usable by this process, load average, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{cpu}, {cores} cores, load average {load}, Python {platform.python_version()}, {platform.system()}"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += ["| " + " | ".join(str(c).rjust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)
