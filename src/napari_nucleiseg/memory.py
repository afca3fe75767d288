"""Whether segmenting an image fits in the memory that is free: a run that runs out is killed by
the system, with everything unsaved, so the widget and the command line ask first."""

from __future__ import annotations

import numpy as np

#: Memory a segmentation holds, from the peak of a whole run measured at 4096 x 4096 (19.5 bytes a
#: pixel above the loaded model, benchmarks/README.md), with some margin: per pixel of the whole
#: image (its stored probabilities, 3 bytes, and labels, up to 4), per pixel of the plane being
#: worked on (its float32 probabilities and the post-processing's label maps), and the model with
#: its activations. The image itself is already in memory.
BYTES_PER_IMAGE_PIXEL = 7
BYTES_PER_PLANE_PIXEL = 16
BYTES_FIXED = 300 * 2**20


def free_memory() -> int | None:
    """Bytes of memory free now; None when it cannot be told (no psutil, or a platform it cannot read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # do not guess
        return None


def memory_shortfall(shape: tuple[int, ...]) -> str | None:
    """A sentence for the user when segmenting an image of ``shape`` ``(*leading, Y, X)`` would need
    more memory than is free (a run that runs out is killed by the system, with everything unsaved);
    None when it fits, or when the free memory cannot be told."""
    available = free_memory()
    if available is None:
        return None
    pixels = int(np.prod(shape, dtype=np.float64))
    needed = pixels * BYTES_PER_IMAGE_PIXEL + shape[-2] * shape[-1] * BYTES_PER_PLANE_PIXEL + BYTES_FIXED
    if needed <= available:
        return None
    size = " x ".join(str(side) for side in shape)
    return (f"Segmenting an image of {size} pixels needs about {needed / 2**30:.1f} GB of memory and "
            f"{available / 2**30:.1f} GB is free; close other programs, or segment the image in parts.")
