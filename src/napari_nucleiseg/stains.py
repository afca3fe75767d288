"""Brown (DAB) nuclei of immunohistochemistry, read as hematoxylin when the user says the brown marks nuclei.

The networks learnt nuclei from hematoxylin (H&E, DSB2018's tissue images). In an IHC section whose marker
is nuclear (Ki-67, ER, PR, p53: positive nuclei brown with DAB beside blue hematoxylin ones) they miss most
brown nuclei. With the user's "Brown nuclei" option (``segment(brown_nuclei=True)``, ``--brown-nuclei``, the
widget's check box), the network sees the brown re-coloured as hematoxylin (:func:`brown_as_hematoxylin`,
applied by :class:`~napari_nucleiseg.preprocess.Normalization`). It is an option, off by default, because
where the marker stains membranes or cytoplasm (HER2, CD3, cytokeratin) the brown rings would become dark
"nuclei"; the plugin cannot tell the marker, the user can. When an image holds brown and the option is
off, :func:`brown_note` says so.

Measured with ``training/ihc_check.py`` on H&E images restained as IHC sections (a quarter of the nuclei
brown), brown nuclei found, option off -> on: MoNuSeg test HRNet 38 -> 72%, UNet 63 -> 76%, UNet++ 69 -> 79%.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Optical density of one unit of a stain in red, green and blue (Ruifrok & Johnston 2001, as scikit-image's
#: ``rgb2hed``): hematoxylin, the blue-purple of every nucleus, absorbs red and green; DAB, the brown of
#: immunohistochemistry, absorbs blue most.
HEMATOXYLIN_OD = (0.650, 0.704, 0.286)
DAB_OD = (0.268, 0.570, 0.776)
#: A colour image is one of stains in transmitted light (brightfield: H&E, IHC) when its median pixel is at
#: least this share of its white (each colour's :data:`STAIN_WHITE_PERCENTILE`; fluorescence: a dark
#: ground, the bundled sample 0.12; H&E tiles of MoNuSeg and CoNSeP 0.19-0.99, 0.38 and 0.63 at their 1st
#: percentile).
STAIN_BRIGHT_GROUND = 0.25
STAIN_WHITE_PERCENTILE = 99.5
#: A pixel is brown when its optical density in blue exceeds that in green by more than this (hematoxylin's
#: is 0.42 below, eosin's 0.88 below, DAB's 0.21 above per unit; weak DAB-positive nuclei about 0.14, strong
#: ones 0.4-0.5): the gray pixels of a brightfield image, and H&E's, are left as they are.
BROWN_MIN_EXCESS = 0.1
#: :func:`brown_note` speaks when at least this share of an image's pixels is brown (see :func:`brown_share`):
#: the H&E images of MoNuSeg and CoNSeP train and DSB2018 val hold at most 0.39%; MoNuSeg train restained with
#: a quarter of its nuclei brown, 3.4% (median; 0.6% with 5% of them: a section of few positive nuclei may
#: get no note).
NOTE_MIN_BROWN_SHARE = 0.01
#: :func:`brown_share` reads a larger image in this many windows along each side, of this side (px).
NOTE_WINDOWS = 4
NOTE_WINDOW_SIDE = 256


def stain_white(rgb: np.ndarray) -> tuple[float, float, float] | None:
    """The white of the ``(H, W, 3)`` image ``rgb`` (or a sample of it), each colour's
    :data:`STAIN_WHITE_PERCENTILE`, when it shows stains in transmitted light that may hold brown: its
    median pixel is at least :data:`STAIN_BRIGHT_GROUND` of that white, and some pixel is brown
    (:data:`BROWN_MIN_EXCESS`: :func:`brown_as_hematoxylin` would change it); else None (gray, fluorescence,
    most H&E)."""
    white = _white(rgb)
    if white is None or not (_excess(np.asarray(rgb)[..., :3], white) > BROWN_MIN_EXCESS).any():
        return None
    return float(white[0]), float(white[1]), float(white[2])


def brown_share(image: Any, sample: np.ndarray | None = None) -> float:
    """The share of the pixels of the colour plane ``image`` (numpy, or a lazy dask or zarr array) in brown
    areas, of a picture of stains in transmitted light (0 for any other image): brown pixels
    (:data:`BROWN_MIN_EXCESS`, against the white of ``sample``, its percentile sample, read when not given)
    left by an opening of 3 x 3, so that colour noise, the colour fringes of a lens and stray pixels do not
    count (a gray brightfield image with colour noise of 8 gray levels: 4.8% of its pixels brown, none in
    areas; blue 1 px off: 1.1%, 0.11%; 2 px off: 2.7%, 0.75%), and nuclei do. The areas are found at full
    resolution, in :data:`NOTE_WINDOWS` x :data:`NOTE_WINDOWS` windows of :data:`NOTE_WINDOW_SIDE` px spread
    over a larger image (on a strided sample a nucleus is a pixel or two, which the opening removes). JPEG at
    low quality makes areas of H&E brown too (quality 25: 7.5%); so does any yellow or orange stain."""
    from scipy import ndimage as ndi

    from .preprocess import _percentile_sample, as_rgb

    if np.ndim(image) != 3 or np.shape(image)[-1] not in (3, 4):
        return 0.0
    if sample is None:
        sample = as_rgb(_percentile_sample(image))
    white = _white(sample)
    if white is None:
        return 0.0
    brown = total = 0
    for window in _windows(image):
        pixels = np.asarray(window)[..., :3].astype(np.float64)
        areas = ndi.binary_opening(_excess(pixels, white) > BROWN_MIN_EXCESS, np.ones((3, 3), bool))
        brown, total = brown + int(np.count_nonzero(areas)), total + areas.size
    return brown / total if total else 0.0


def _windows(image: Any) -> list[Any]:
    """The whole of a plane of at most :data:`NOTE_WINDOWS` windows' pixels, else windows of
    :data:`NOTE_WINDOW_SIDE` px on a regular grid over it (lazy slices)."""
    height, width = np.shape(image)[:2]
    side = NOTE_WINDOW_SIDE
    if height * width <= (NOTE_WINDOWS * side) ** 2:
        return [image]
    ys = np.linspace(0, max(height - side, 0), NOTE_WINDOWS).astype(int)
    xs = np.linspace(0, max(width - side, 0), NOTE_WINDOWS).astype(int)
    return [image[y : y + side, x : x + side] for y in dict.fromkeys(ys) for x in dict.fromkeys(xs)]


def _white(rgb: np.ndarray) -> np.ndarray | None:
    """The white of ``rgb`` (colour last), each colour's :data:`STAIN_WHITE_PERCENTILE` of its finite pixels;
    None when it is not a picture of stains in transmitted light (:data:`STAIN_BRIGHT_GROUND`)."""
    pixels = np.asarray(rgb)[..., :3].reshape(-1, 3).astype(np.float64)
    finite = pixels[np.isfinite(pixels).all(axis=1)]
    if finite.size == 0:
        return None
    white = np.percentile(finite, STAIN_WHITE_PERCENTILE, axis=0)
    if not (white > 0).all() or np.median(finite.mean(axis=1)) < STAIN_BRIGHT_GROUND * white.mean():
        return None
    return white


def _excess(pixels: np.ndarray, white: Any) -> np.ndarray:
    """Each pixel's optical density in blue less that in green, against ``white`` (colour last); -inf for a
    pixel with a colour that is not finite (never brown)."""
    density = _optical_density(pixels[..., 1:3], np.asarray(white)[1:3])
    excess = density[..., 1] - density[..., 0]
    excess[~np.isfinite(pixels[..., :3]).all(axis=-1)] = -np.inf
    return excess


def _optical_density(pixels: np.ndarray, white: Any) -> np.ndarray:
    """float32 optical density of ``pixels`` (colour last) against ``white``, at most log(1000); a pixel
    brighter than white, or not finite, absorbs nothing."""
    pixels = np.asarray(pixels)
    exact = np.float64 if pixels.dtype == np.float64 else np.float32  # (a float64 image may exceed float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = pixels.astype(exact, copy=False) / np.asarray(white, dtype=exact)
    np.clip(np.nan_to_num(ratio, copy=False, nan=1.0), 1e-3, 1.0, out=ratio)
    return -np.log(ratio).astype(np.float32, copy=False)


def brown_as_hematoxylin(rgb: np.ndarray, white: tuple[float, float, float]) -> np.ndarray:
    """``rgb`` (colour last) as float32 (float64 stays float64) with its brown re-coloured as hematoxylin,
    against ``white`` (:func:`stain_white`): in each pixel whose optical density in blue exceeds that in
    green by more than :data:`BROWN_MIN_EXCESS` (only DAB does, of the usual stains), the DAB that explains
    the excess (all of it from twice that margin on, a share below; no more than the pixel's density holds)
    is replaced by as much hematoxylin. Other pixels (H&E's purple and pink, gray, the glass) keep their
    values."""
    pixels = np.asarray(rgb)[..., :3]
    out = np.array(pixels, dtype=np.float64 if pixels.dtype == np.float64 else np.float32)  # (1e200 stays finite)
    excess = _excess(out, white)
    brown = excess > BROWN_MIN_EXCESS  # (a colour not finite: never brown, left as it is)
    if not brown.any():
        return out
    dab, hematoxylin = (np.asarray(od, np.float32) / np.linalg.norm(od) for od in (DAB_OD, HEMATOXYLIN_OD))
    od, excess = _optical_density(out[brown], white), excess[brown]
    # All of the DAB from twice the margin on, a share of it below (no edge where the margin is crossed).
    share = np.minimum((excess - BROWN_MIN_EXCESS) / BROWN_MIN_EXCESS, 1.0)
    amount = np.minimum(share * excess / (dab[2] - dab[1]), (od / dab).min(axis=1))
    od += amount[:, None] * (hematoxylin - dab)
    out[brown] = np.asarray(white, np.float64) * np.exp(-od.astype(np.float64))
    return out


def brown_note(image: Any, brown_nuclei: bool, choose: str, sample: np.ndarray | None = None) -> str | None:
    """The sentence that says the RGB plane ``image`` (numpy or lazy) holds brown (DAB) staining and how it was
    read, or None when it holds little or none (:data:`NOTE_MIN_BROWN_SHARE` of :func:`brown_share`, which
    ``sample``, the plane's percentile sample, spares reading again); ``choose`` says how to turn the option
    on where the note is shown (e.g. "run it with --brown-nuclei")."""
    if brown_share(image, sample) < NOTE_MIN_BROWN_SHARE:
        return None
    if brown_nuclei:
        return ("Brown (DAB) was read as hematoxylin (Brown nuclei): right where the marker stains nuclei; where "
                "it stains membranes or cytoplasm, segment without it.")
    return ("It holds brown (DAB) staining, which the models do not read as nuclei. If the marker stains nuclei "
            f"(Ki-67, ER, PR, p53), {choose}.")


def colour_note(plane: Any, brown_nuclei: bool, choose_channel: str, choose_brown: str) -> str | None:
    """What to tell the user of how a colour ``plane`` was read: as an overlay of fluorescence channels
    (:func:`~napari_nucleiseg.preprocess.overlay_note`, ``choose_channel``), or with brown staining
    (:func:`brown_note`, ``choose_brown``); None: as a colour picture. A lazy plane's percentile sample is
    read once, for both (and the brown note's windows)."""
    from .preprocess import _percentile_sample, as_rgb, overlay_sentence

    if np.ndim(plane) != 3 or np.shape(plane)[-1] not in (3, 4):
        return None
    raw = _percentile_sample(plane)
    sample = as_rgb(raw)
    read = overlay_sentence(sample, choose_channel) or brown_note(plane, brown_nuclei, choose_brown, sample)
    return " ".join(note for note in (transparency_note(raw), read) if note) or None


def transparency_note(sample: np.ndarray) -> str | None:
    """What to say of an RGBA ``sample``'s fully transparent pixels, which nothing is found under
    (:func:`~napari_nucleiseg.inference.left_out_where_transparent`); None when under 1% of it is."""
    if np.shape(sample)[-1] != 4:
        return None
    share = float(np.mean(np.asarray(sample[..., 3]) == 0))
    if share == 1.0:
        return ("It is transparent everywhere (its alpha channel is 0), so nothing is found in it; if its fourth "
                "channel is not transparency, save the picture without it.")
    if share >= 0.01:
        return f"Its transparent pixels (alpha 0, {share:.0%} of it) are left out: nothing is found there."
    return None
