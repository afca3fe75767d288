"""Probability maps of a stack of planes in 3 bytes a pixel, not 8: what the widget keeps of a run
to re-threshold it, proven to give the masks of the float32 maps (see :class:`CompactProbabilities`)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The widget keeps the probability maps of its last run to re-threshold them, for every plane
#: of a stack: as float32 that is 8 bytes a pixel (800 MB for 100 planes of 1024 x 1024). It keeps
#: the nucleus probability as uint16 in steps of 1 / NUCLEUS_LEVELS and the boundary probability
#: as uint8 in steps of 1 / BOUNDARY_LEVELS instead: 3 bytes a pixel. Both are multiples of 100
#: (and of 1000 for the nucleus), so every threshold on the slider's 0.01 grid lies on a step:
#: see :class:`CompactProbabilities` for why such thresholds give exactly the mask of the float32
#: maps. A uint8 nucleus map (2 bytes a pixel) was measured and rejected: the watershed that
#: splits touching nuclei floods in the order of the nucleus probability, and 200 levels made so
#: many ties that the count changed on two of the three bundled samples.
NUCLEUS_LEVELS = 60_000
BOUNDARY_LEVELS = 200


class CompactProbabilities:
    """Nucleus and boundary probabilities of a stack of planes in 3 bytes a pixel, not 8.

    Reads like a ``(*leading, 2, Y, X)`` float32 array one whole plane at a time
    (``maps[index]`` is a ``(2, Y, X)`` float32 array, ready for
    :func:`~napari_nucleiseg.postprocess.labels_from_probabilities`) and is filled one plane at a
    time (``maps[index] = plane``), so the float32 maps of a whole stack never exist.

    A nucleus probability ``p`` is stored as ``q = ceil(p * NUCLEUS_LEVELS)`` and read back as
    the middle of its step, ``(q - 1/2) / NUCLEUS_LEVELS`` (0 stays 0). For a threshold
    ``t = k / NUCLEUS_LEVELS``: ``p > t`` if and only if ``p * NUCLEUS_LEVELS > k``, if and only
    if ``q > k``, if and only if the value read back is above ``t``, by half a step, far more than
    any rounding (``p * NUCLEUS_LEVELS`` is exact in float64 for a float32 ``p``). So at any
    threshold with up to three decimals, the nucleus mask is that of the float32 map but at
    pixels exactly at the threshold: numpy compares a float32 map with a Python float in float32,
    and a pixel equal to the threshold rounded to float32 is not above it there, though it may be
    above the threshold itself, as the compact map says (a ``>=`` would also differ only there).
    Boundary probabilities, compared with ``<``, are rounded down and read back as ``(q + 1/2) /
    BOUNDARY_LEVELS`` (capped at 1) for the same reason: their masks are kept for boundary
    thresholds on a 0.005 grid. What can change is the watershed split of touching nuclei, which
    floods in the order of the nucleus probability: neighbours less than 1/60,000 apart become
    ties, which can move a split line by a pixel or two. NaN is stored as 0, as post-processing
    reads it.
    """

    def __init__(self, leading: tuple[int, ...], plane: tuple[int, int]):
        self.nucleus = np.zeros((*leading, *plane), dtype=np.uint16)
        self.boundary = np.zeros((*leading, *plane), dtype=np.uint8)

    @classmethod
    def from_float(cls, probabilities: np.ndarray) -> CompactProbabilities:
        """The compact form of ``(*leading, 2, Y, X)`` float probabilities."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim < 3 or probabilities.shape[-3] != 2:
            raise ValueError(f"probabilities must have shape (*leading, 2, Y, X), not {probabilities.shape}")
        leading = probabilities.shape[:-3]
        maps = cls(leading, probabilities.shape[-2:])
        for index in np.ndindex(*leading):
            maps[index] = probabilities[index]
        return maps

    @property
    def shape(self) -> tuple[int, ...]:
        """``(*leading, 2, Y, X)``, the shape of the float maps this stands for."""
        return (*self.nucleus.shape[:-2], 2, *self.nucleus.shape[-2:])

    @property
    def pixels(self) -> int:
        """Pixels in all planes together (the work of post-processing them all)."""
        return self.nucleus.size

    @property
    def nbytes(self) -> int:
        return self.nucleus.nbytes + self.boundary.nbytes

    def __setitem__(self, index: tuple[int, ...], plane: np.ndarray) -> None:
        """Store the ``(2, Y, X)`` float probabilities of the plane at ``index``."""
        nucleus, boundary = self.nucleus[index], self.boundary[index]  # views of the plane
        for top in range(0, nucleus.shape[0], _STORE_ROWS):  # a band at a time: the float64 steps stay small
            rows = slice(top, top + _STORE_ROWS)
            nucleus[rows] = np.ceil(_scaled(plane[0, rows], NUCLEUS_LEVELS))
            boundary[rows] = np.floor(_scaled(plane[1, rows], BOUNDARY_LEVELS))

    def __getitem__(self, index: tuple[int, ...]) -> np.ndarray:
        """The ``(2, Y, X)`` float32 probabilities of the plane at ``index`` (one index per leading axis)."""
        nucleus, boundary = self.nucleus[index], self.boundary[index]
        out = np.empty((2, *nucleus.shape), dtype=np.float32)  # filled in place: no second copy of the maps
        np.take(_NUCLEUS_VALUES, nucleus, out=out[0], mode="clip")  # "raise" would buffer a copy
        np.take(_BOUNDARY_VALUES, boundary, out=out[1], mode="clip")
        return out

    def nucleus_image(self) -> Any:
        """The ``(*leading, Y, X)`` float32 nucleus probability, to show as an image layer.

        A plane is an array; a stack is a dask array read plane by plane as napari shows it, so
        showing it costs no memory.
        """
        if self.nucleus.ndim == 2:
            return _NUCLEUS_VALUES[self.nucleus]
        import dask.array as da

        planes = da.from_array(self.nucleus, chunks=(1,) * (self.nucleus.ndim - 2) + self.nucleus.shape[-2:],
                               name=False)  # (no hash of every pixel first: QA, 0.2 s of a 30-plane stack)
        return planes.map_blocks(_NUCLEUS_VALUES.__getitem__, dtype=np.float32)


#: Rows of a plane stored at a time.
_STORE_ROWS = 256


def _scaled(probability: np.ndarray, levels: int) -> np.ndarray:
    """``probability * levels`` in float64 (exact for float32 input), NaN as 0, within [0, levels]."""
    scaled = np.nan_to_num(np.asarray(probability, dtype=np.float64), nan=0.0) * levels
    return np.clip(scaled, 0, levels, out=scaled)


#: The probability each stored level is read back as (see :class:`CompactProbabilities`).
_NUCLEUS_VALUES = np.concatenate([[0.0], (np.arange(1, NUCLEUS_LEVELS + 1) - 0.5) / NUCLEUS_LEVELS]).astype(np.float32)
_BOUNDARY_VALUES = (np.minimum(np.arange(BOUNDARY_LEVELS + 1) + 0.5, BOUNDARY_LEVELS) / BOUNDARY_LEVELS).astype(
    np.float32
)
