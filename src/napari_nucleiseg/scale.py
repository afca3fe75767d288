"""Nucleus size: bring an image to the scale its network was trained at, and back.

A weights file records ``diameter``, the median nucleus diameter (pixels) of the frame the
network learnt in. An image whose nuclei are ``d`` pixels across is resized by
``diameter / d`` before the network sees it, and the probabilities are resized back, so
labels and measurements are always in the image's own pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Factors this close to 1 are not applied: the networks were trained with +-30% of jitter
#: around their diameter, and resampling costs time and a little sharpness.
RESCALE_TOLERANCE = 0.1


def check_diameter(diameter: float | None, shape: tuple[int, ...] | None = None) -> None:
    """Raise ``ValueError`` (one sentence) for a diameter that is not a usable number of pixels."""
    if diameter is None:
        return
    if isinstance(diameter, bool) or not isinstance(diameter, (int, float, np.integer, np.floating)):
        raise ValueError(f"The nucleus diameter must be a number of pixels, not {diameter!r}.")
    if not math.isfinite(diameter) or diameter <= 0:
        raise ValueError(f"The nucleus diameter must be a positive number of pixels, not {diameter}.")
    if shape is not None and len(shape) >= 2 and diameter > max(shape[:2]):
        raise ValueError(
            f"A nucleus diameter of {diameter:g} pixels is larger than the image ({shape[0]} x {shape[1]} pixels)."
        )


#: The network never sees an image resized by more than this factor either way (the estimate's
#: ladder spans the same range): nuclei under about 2 px or over about 150 px are taken as that.
MAX_SCALE = 8.0
#: Nor an image enlarged beyond this many pixels (about 6,300 x 6,300): the resized image and its
#: probabilities are held whole, and a wrong small diameter must not fill the memory. Larger images
#: are enlarged less (their ``scale`` says by how much).
MAX_SCALED_PIXELS = 40_000_000


def scale_factor(diameter: float | None, trained_diameter: float | None,
                 shape: tuple[int, ...] | None = None) -> float:
    """The zoom that brings nuclei of ``diameter`` to ``trained_diameter`` (1: none needed or known),
    within :data:`MAX_SCALE` either way and, for an image of ``shape``, :data:`MAX_SCALED_PIXELS`."""
    if diameter is None or trained_diameter is None:
        return 1.0
    factor = min(max(trained_diameter / diameter, 1 / MAX_SCALE), MAX_SCALE)
    if shape is not None and factor > 1:
        factor = max(1.0, min(factor, math.sqrt(MAX_SCALED_PIXELS / (shape[0] * shape[1]))))
    return 1.0 if abs(math.log(factor)) < math.log1p(RESCALE_TOLERANCE) else factor


def resize_shortfall(diameter: float | None, scale: float, trained_diameter: float | None) -> str | None:
    """One sentence for the user when nuclei of ``diameter`` could not be brought to ``trained_diameter``
    (the resize held back by :data:`MAX_SCALE` or :data:`MAX_SCALED_PIXELS`); None when they were, or
    when nothing was resized for a diameter."""
    if diameter is None or trained_diameter is None:
        return None
    reached = diameter * scale
    if abs(math.log(reached / trained_diameter)) <= math.log1p(RESCALE_TOLERANCE):
        return None
    if reached < trained_diameter:
        expect = "more nuclei missed or merged"
        if scale >= MAX_SCALE:
            how = f"enlarged {scale:.2f}x, the most an image is enlarged"
        elif scale > 1:
            how = (f"enlarged {scale:.2f}x: the enlarged image is kept within {MAX_SCALED_PIXELS / 1e6:g} megapixels; "
                   "a crop of it can be enlarged further")
        else:
            how = (f"not enlarged: the image has {MAX_SCALED_PIXELS / 1e6:g} megapixels or more already; a crop of it "
                   "can be enlarged")
    else:
        expect = "more nuclei cut in pieces"
        how = f"shrunk {1 / scale:.2f}x, the most an image is shrunk"
    # The point first: napari shows a notification's first words until it is expanded.
    return (f"Nuclei reached {reached:.1f} px, not the {trained_diameter:g} px the model works best at: expect "
            f"{expect} (nuclei of {diameter:.1f} px, {how}).")


def nucleus_diameters(labels: np.ndarray) -> np.ndarray:
    """The equivalent diameter (``2 sqrt(area / pi)``, pixels) of each nucleus present in ``labels``."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    return 2 * np.sqrt(areas[areas > 0] / np.pi)


def median_diameter(labels: np.ndarray) -> float | None:
    """The median of :func:`nucleus_diameters`; None when there are no nuclei. What a weights file's
    ``diameter``, the training's rescaling and the inference's estimate all measure."""
    diameters = nucleus_diameters(labels)
    return float(np.median(diameters)) if diameters.size else None


def rescaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (``(H, W)`` or ``(H, W, C)``) resized by ``factor``: linear interpolation, after a
    Gaussian anti-aliasing filter when shrinking; float32 (float images; float64 ones whose values float32
    cannot hold stay float64, as the normalisation divides them first) or the image's integer dtype.

    One channel at a time, and a gray image broadcast to three channels (:func:`~.preprocess.as_rgb`)
    only once, so the temporaries stay at one float32 plane of the result.
    """
    from scipy import ndimage as ndi

    if factor == 1.0:
        return image
    image = np.asarray(image)
    shape = rescaled_shape(image.shape, factor)
    planes = image[..., None] if image.ndim == 2 else image
    gray = planes.shape[-1] > 1 and planes.strides[-1] == 0  # as_rgb's view of a gray image
    out_dtype = image.dtype if image.dtype.kind in "ui" else np.dtype(np.float32)
    if image.dtype == np.float64 and not _float32_holds(planes[..., :1] if gray else planes):
        out_dtype = image.dtype  # (QA: values of 1e38 or 1e-300 overflowed or vanished: 0 nuclei when resized)
    work = np.float64 if out_dtype == np.float64 else np.float32
    out = np.empty((*shape, planes.shape[-1]), dtype=out_dtype)
    zoom = (shape[0] / image.shape[0], shape[1] / image.shape[1])
    for channel in range(1 if gray else planes.shape[-1]):
        plane = planes[..., channel].astype(work)
        if factor < 1:
            plane = ndi.gaussian_filter(plane, sigma=(1 / factor - 1) / 2, mode="mirror")
        resized = ndi.zoom(plane, zoom, order=1, mode="grid-mirror", grid_mode=True, output=work)
        if out_dtype.kind in "ui":
            info = np.iinfo(out_dtype)
            np.rint(resized, out=resized)
            np.clip(resized, info.min, info.max, out=resized)
        out[..., channel] = resized
    if gray:
        out = np.broadcast_to(out[..., :1], out.shape)
    return out[..., 0] if image.ndim == 2 else out


def _float32_holds(image: np.ndarray) -> bool:
    """Whether float32 holds the finite values of the float ``image`` (:data:`~.preprocess.FLOAT32_SAFE_MAGNITUDE`)."""
    from .preprocess import FLOAT32_SAFE_MAGNITUDE

    peak = 0.0
    for start in range(0, image.shape[0], 256):  # (rows at a time: no float64 copy of a large image)
        rows = np.abs(image[start:start + 256])
        peak = max(peak, float(np.max(rows, where=np.isfinite(rows), initial=0.0)))
    return peak == 0 or FLOAT32_SAFE_MAGNITUDE[0] <= peak <= FLOAT32_SAFE_MAGNITUDE[1]


def rescale_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of instance labels to ``shape``."""
    from skimage.transform import resize

    if labels.shape == tuple(shape):
        return labels
    return resize(labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` probability maps resized (linearly) to ``(C, *shape)``, float32 in [0, 1].

    Shrinking, each map is first blurred as :func:`rescale_image` blurs an image (a Gaussian of
    sigma ``(1 / zoom - 1) / 2`` network pixels): a pixel of the image then gets about the mean of
    the network pixels it covers, not the value at its centre. A boundary one network pixel wide,
    shrunk 4x, used to vanish or double depending on where it fell; now it always shows, at about
    a sixth of its height (so it splits nuclei at a boundary threshold up to about 0.14, not at
    0.3), and outlines no longer jump by a network pixel or two.
    """
    from scipy import ndimage as ndi

    if probabilities.shape[1:] == tuple(shape):
        return probabilities
    zoom = (shape[0] / probabilities.shape[1], shape[1] / probabilities.shape[2])
    sigma = tuple(max(0.0, (1 / factor - 1) / 2) for factor in zoom)
    out = np.empty((probabilities.shape[0], *shape), dtype=np.float32)
    for channel, plane in enumerate(probabilities):
        if any(sigma):
            plane = ndi.gaussian_filter(plane.astype(np.float32, copy=False), sigma=sigma, mode="nearest")
        out[channel] = ndi.zoom(plane, zoom, order=1, mode="nearest", grid_mode=True, output=np.float32)
    np.clip(out, 0, 1, out=out)
    return out


#: The scales :func:`estimate_diameter` tries, as nucleus diameters relative to the model's:
#: a ladder of ratio 2 from 1/8 to 8 (with a model trained at 18 px, nuclei of about 2 to 144
#: px across), so one rung always brings the nuclei within the +-30% the network was trained on.
ESTIMATE_LADDER = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Side (network pixels) of the window each rung of the ladder looks at: the network runs on at
#: most ``len(ESTIMATE_LADDER)`` windows of this size, whatever the size of the image.
ESTIMATE_WINDOW = 256
#: Fewest objects a rung must find to count.
ESTIMATE_MIN_OBJECTS = 3
#: A rung counts only if its median object is within this factor of the trained diameter: where
#: the nuclei arrive far larger, the network cuts them into pieces of about its own size, and
#: the rungs that see them at a size it knows are never far from it.
ESTIMATE_MAX_MISS = 1.75
#: How much the share of nucleus pixels called boundary lowers a rung's score (fragmentation).
ESTIMATE_BOUNDARY_PENALTY = 0.5
#: Rungs whose :func:`rung_score` is within this margin of the best count as tied, and the
#: tie goes to the largest relative size (the rung that enlarges the image least). On H&E the
#: network cuts nuclei enlarged too much into confident pieces of about its own size, which
#: score as well as whole nuclei, so the best score alone leaned to estimates 0.5-0.8 of the
#: truth; within the margin, the rung that still finds the nuclei at a smaller zoom is the one
#: that sees them whole. Chosen on the H&E val parts and DSB2018 val (as is, x0.5, x2); its
#: effect is measured by benchmarks/bench_estimate_he.py.
ESTIMATE_SCORE_MARGIN = 0.05
#: A window whose ``colour`` (:func:`_look`) is below this is gray (every DSB2018 fluorescence and
#: brightfield image: 0.000; the least coloured H&E tile: 0.015).
GRAY_COLOUR = 0.01
#: On a gray window this bright once normalised (a light background: brightfield) ...
ESTIMATE_BRIGHTFIELD = 0.85
#: ... a rung whose objects cover more than this share of the window found the cells, not their
#: nuclei: shrunk several times, whole brightfield cells look like nuclei to the network and score
#: as well as the nuclei do at the right size. Such rungs do not count. Chosen on the gray images of
#: DSB2018 train (at two random sizes each): the estimate within +-25% on brightfield went from 6 to
#: 10 of 15, on DSB2018 val (x0.25-x3) from 4 to 8 of 10, fluorescence unchanged; 0.1-0.2 and a
#: brightness of 0.6-0.8 give the same (weights/README.md, session 13). The brightness was 0.6 until
#: session 30: tissue shown in gray (an H&E section from a monochrome camera, or converted to gray), whose
#: dense nuclei cover more than 0.15 of a window at the right rungs (brightness 0.55-0.84 there; brightfield
#: cells' rungs 0.86-0.92), had those rungs dropped and got 3-10 px for nuclei of 20-35 px. The highest of
#: 0.6 / 0.8 / 0.85 / 0.9 that keeps DSB2018 train's 14 brightfield images as they were at x0.5 / x1 / x2
#: (9, 8, 8 of 14 within +-25%; 0.9: 7, 6, 7) took its tissue images in gray from 30-34 to 62-68 of 96, 12
#: MoNuSeg train crops in gray from 1-3 to 7-8 of 12; DSB2018 val, measured after: brightfield 2 of 2 as
#: before, tissue in gray 2-4 -> 7-8 of 11, its score at Auto 0.226 -> 0.299 (in colour 0.335; runs/s30/).
ESTIMATE_MAX_CELL_SHARE = 0.15


#: An image whose brightest or darkest structures stand less than this many times its pixel noise from
#: its median (:func:`contrast`) holds nothing to size: an empty field (camera noise, an empty well). The
#: sweep found specks of noise there and sized them as nuclei of 1-3 px, so the image was enlarged 8x
#: and thousands of specks counted (QA: 3,327 in a field of Poisson noise). Empty fields (Poisson and
#: Gaussian camera noise, uniform noise, a flat brightfield, salt) score 0-3.2; every image of DSB2018
#: (664: >= 22.9), of MoNuSeg and CoNSeP train (>= 10.9, >= 10.5) and the bundled samples (>= 75) far more,
#: as do 10 nuclei in an empty 2048 x 2048 field (200) (measured after: DSB2018 val x0.25 >= 14.1, MoNuSeg /
#: CoNSeP test >= 14.3 / 10.6). Passes, and is sized as before: noise smoothed before it was saved (blurred by
#: 1 px: 7.1), a very dark 8-bit field of single photons (6.8), speckle (exponential noise: 6.0); Poisson
#: noise of mean 2 scores 4.8. Nuclei only 3 noise levels above their background score about 4.8, and are
#: then segmented as they are, not resized.
MIN_CONTRAST = 5.0
#: :func:`contrast` reads at most about this many pixels (rows spread over the image).
CONTRAST_SAMPLE_PIXELS = 1_000_000
#: ... and takes the structures' level at its this-many brightest (and darkest) pixels: a few nuclei in a
#: large empty field are structure (10 nuclei of 16 px in 2048 x 2048 cover about 400 of the pixels read).
CONTRAST_TOP_PIXELS = 50
#: An image whose most extreme pixels stand out alone, the pixels below each sharing less than this share
#: of its difference from the median (:func:`structure`), holds nothing to size either: noise whose extremes
#: stand far from its median, which :func:`contrast` reads as structure, as a dark field of single photons
#: (Poisson noise of mean 0.05: contrast 11.8) or speckle (exponential noise: 6.1-6.6), where the sweep sized
#: specks of 1.6-2.0 px and 3,986 / 5,538 were counted (HRNet, 1024 x 1024, 111 s each). Such noise of any
#: kind (Poisson of mean 0.02-50, Gaussian, uniform, salt, speckle over 24 seeds, RGB; beside a black strip or
#: inside a round field stop) scores -0.02 to 0.06; a nucleus is more than a pixel across, and every image of
#: DSB2018 (664: >= 0.92), MoNuSeg (train and test, >= 0.90), CoNSeP (>= 0.65), DSB2018 val x0.25 (nuclei of
#: 3-5 px: >= 0.65), the bundled samples (>= 0.98) and 10 nuclei in an empty 2048 x 2048 field with hot
#: pixels (0.94) score far more; nuclei of 2-3 photons on a background of 0.2 score 0.33-0.43 (they are then
#: segmented as they are if below). Noise smoothed before it was saved (blurred by 1 px: 0.74) still passes.
MIN_STRUCTURE = 0.3
#: :func:`structure` looks at this many of the most extreme pixels.
STRUCTURE_PIXELS = 200


def _row_sample(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows spread over the 2-D gray or RGB ``image`` (their mean; at most about
    :data:`CONTRAST_SAMPLE_PIXELS` pixels), and the row below each, as float64 with NaN and inf as 0."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    step = max(1, math.ceil(height * width / CONTRAST_SAMPLE_PIXELS))

    def gray(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim == 3:
            rows = rows[..., :3].mean(axis=-1)
        return np.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0)

    rows = gray(pixels[0:max(height - 1, 1):step])
    return rows, gray(pixels[1::step])[:rows.shape[0]]


class _Extremes(NamedTuple):
    """What :func:`contrast` and :func:`structure` read of an image (:func:`_extremes`)."""

    rows: np.ndarray  # :func:`_row_sample`'s rows
    below: np.ndarray  # ... and the row below each
    smooth: np.ndarray  # the rows after a running median of 3 along them (a hot pixel is no structure)
    middle: float  # the median of ``smooth``
    bright: float  # how far its CONTRAST_TOP_PIXELS-th brightest pixel stands above the median
    dark: float  # ... and its CONTRAST_TOP_PIXELS-th darkest below
    picture: np.ndarray | None  # ``rows``' pixels not padding (:data:`~.preprocess.PADDING_MIN_SHARE`); None: all


def _extremes(image: np.ndarray) -> _Extremes | None:
    """:class:`_Extremes` of the 2-D gray or RGB ``image``; None for fewer than 3 columns."""
    from scipy import ndimage as ndi

    rows, below = _row_sample(image)
    if rows.shape[1] < 3:
        return None
    from .preprocess import find_padding

    padding = find_padding(rows)  # (the black or white fill of a mosaic is neither structure nor noise)
    picture = None if padding is None else ~padding.mask
    smooth = ndi.median_filter(rows, size=(1, 3), mode="nearest")
    values = smooth.ravel() if picture is None else smooth[picture]
    middle = float(np.median(values))
    k = min(CONTRAST_TOP_PIXELS, values.size)
    bottom, top = np.partition(values, k - 1)[k - 1], -np.partition(-values, k - 1)[k - 1]
    return _Extremes(rows, below, smooth, middle, float(top) - middle, middle - float(bottom), picture)


def structure(image: np.ndarray) -> float:
    """How much of their difference from the median of ``image`` (2-D gray or RGB) its extreme pixels share
    with the pixels below them: on the side where the extremes stand farther from the median (bright
    nuclei, or dark ones on a bright ground, as :func:`contrast` reads), over the :data:`STRUCTURE_PIXELS`
    most extreme pixels after a running median of 3 along the rows (so that a hot pixel is none of them),
    the median of (the row below's running median there - median) / (pixel - median). About 1 where they
    are parts of structures larger than a pixel (nuclei), about 0 for noise without spatial correlation,
    whatever its distribution. An image of fewer than 2 rows or 3 columns: infinite."""
    return _structure(_extremes(image))


def _structure(extremes: _Extremes | None) -> float:
    from scipy import ndimage as ndi

    if extremes is None or extremes.rows.shape[0] == 0 or extremes.below.shape[0] < extremes.rows.shape[0]:
        return math.inf
    values = extremes.smooth.ravel() - extremes.middle
    beside = ndi.median_filter(extremes.below, size=(1, 3), mode="nearest").ravel() - extremes.middle
    if extremes.picture is not None:
        values, beside = values[extremes.picture.ravel()], beside[extremes.picture.ravel()]
    sign = 1.0 if extremes.bright >= extremes.dark else -1.0  # the side that stands farther out
    k = min(STRUCTURE_PIXELS, values.size)
    extreme = np.argpartition(-sign * values, k - 1)[:k]
    value, next_row = sign * values[extreme], sign * beside[extreme]
    standing = value > 0
    if not standing.any():
        return 0.0
    with np.errstate(all="ignore"):  # values near float64's limits: no verdict (inf), as contrast gives none
        share = float(np.median(next_row[standing] / value[standing]))
    return share if math.isfinite(share) else math.inf


#: A gray image whose :func:`contrast` is below a bound here (and which is no :func:`empty_field`) is smoothed by a
#: Gaussian of the sigma beside it, in its own pixels, before the Auto diameter and the network read it. QA found
#: noise the networks never met in training ruin gray fluorescence whose nuclei were plain to see: camera frames
#: of 15 or 50 photons at the peak, 8-bit noise of 20 gray levels (HRNet, 12 DSB2018 val images at Auto: 0.011,
#: 0.293, 0.104 where the clean images scored 0.477); the probabilities inside true nuclei fell from 0.90 to 0.02.
#: Chosen on 24 other gray images of DSB2018 val, each with camera noise of 200, 50 and 15 photons at the peak
#: and 8-bit Gaussian noise of 8 and 20 levels (session 32): mean score at Auto over the 120 noisy versions 0.397
#: (none) -> 0.495 (these bands); a band of sigma 1 up to 22 did better there (0.519) but blurred away the nuclei
#: of 3-5 px of DSB2018 val x0.25, whose contrast is 14.1 and up (27c30f90: 0.399 -> 0.048). Every DSB2018 image
#: (22.9 and up), every image of the rescaled val sets and of MoNuSeg and CoNSeP test is read as before (colour
#: images are never smoothed).
NOISE_SMOOTHING = ((8.0, 2.0), (12.0, 1.5))
#: A gray image whose contrast is in this band, above :data:`NOISE_SMOOTHING`'s, is noisy or holds tiny nuclei: a
#: Gaussian of :data:`NOISE_CHECK_SIGMA` px helps the first (QA: 30 photons at the peak, contrast 14.3: 26-33% of
#: the nuclei found, 75-78% smoothed) and ruins the second (3-5 px nuclei of DSB2018 val x0.25, 21-22). The network
#: tells them apart: the image is smoothed when the best rung of its sweep on the smoothed image is surer
#: (:func:`sweep_confidence`) by :data:`NOISE_CHECK_MARGIN`. Chosen on DSB2018 val (session 35, HRNet, Auto,
#: benchmarks/bench_noise_band.py: its gray images at x0.25 and its fluorescence images with camera noise of 30
#: photons at the peak on 0.5 and of 60 on 2; 65 in the band): the 7 clean x0.25 images all lose confidence
#: smoothed (-0.035 to -0.086; 27c30f90 would fall 0.371 -> 0.048, 75120baa 0.509 -> 0.209); 35 of the 58 noisy
#: ones gain 0.01 or more and are smoothed, their score +0.100 on average (3 fall, by at most 0.042): the 58 noisy
#: 0.444 -> 0.504.
#: A stack is judged once, on its first plane in the band (its planes come from one camera); an image (a stack) in
#: the band costs two more sweeps.
NOISE_CHECK_BAND = (12.0, 22.0)
NOISE_CHECK_SIGMA = 1.0
NOISE_CHECK_MARGIN = 0.01


def smoothing_note(sigma: float) -> str | None:
    """What the log and the widget say of an image smoothed by ``sigma`` (:func:`noise_smoothing`); None: not."""
    if not sigma:
        return None
    return (f"It is very noisy, so it was smoothed (a Gaussian of {sigma:g} px) before the nuclei were sized and "
            "found; the table's intensities are its own.")


def noise_smoothing(image: np.ndarray, model=None, judged: dict | None = None, *, swept: list | None = None,
                    cancelled=None) -> float:
    """The sigma (in pixels) of the Gaussian that ``image`` (2-D gray, or RGB / RGBA whose colours are equal) is
    smoothed by before it is read (:data:`NOISE_SMOOTHING`; with ``model``, in :data:`NOISE_CHECK_BAND` as its
    network is surer of); 0 for a clean image, a colour one, or an :func:`empty_field` (smoothed noise would pass
    for structure). ``judged``: where the network's judgement of one plane of a stack is kept for the others.
    ``swept``: filled, when the network judged a 2-D ``image``, with the :func:`sweep` of the image as it is to be
    read (as it is, or smoothed), so that its Auto diameter need not sweep it again; ``cancelled``: polled."""
    if np.ndim(image) == 3 and not _equal_colours(image):
        return 0.0
    extremes = _extremes(image)
    if extremes is None or _empty(extremes):
        return 0.0
    contrast_ = _contrast(extremes)
    sigma = next((sigma for bound, sigma in NOISE_SMOOTHING if contrast_ < bound), 0.0)
    if sigma or model is None or getattr(model, "diameter", None) is None:
        return sigma
    low, high = NOISE_CHECK_BAND
    if not low <= contrast_ < high:
        return 0.0
    if judged is not None and "sigma" in judged:
        return judged["sigma"]
    sigma = NOISE_CHECK_SIGMA if _surer_smoothed(image, model, swept, cancelled) else 0.0
    if judged is not None:
        judged["sigma"] = sigma
    return sigma


def _surer_smoothed(image: np.ndarray, model, swept: list | None = None, cancelled=None) -> bool:
    """Whether ``model``'s network is surer of the nuclei of ``image`` smoothed by :data:`NOISE_CHECK_SIGMA`
    (``swept``: see :func:`noise_smoothing`)."""
    from scipy import ndimage as ndi

    gray = np.asarray(image, dtype=np.float32)
    gray = gray[..., 0] if gray.ndim == 3 else gray  # (colours equal: one of them)
    as_is = sweep(gray, model, cancelled=cancelled)
    smoothed = sweep(ndi.gaussian_filter(gray, NOISE_CHECK_SIGMA), model, cancelled=cancelled)
    surer = sweep_confidence(smoothed) >= sweep_confidence(as_is) + NOISE_CHECK_MARGIN
    if swept is not None and np.ndim(image) == 2:  # (the estimate sweeps a picture in colour: not this sweep)
        swept[:] = smoothed if surer else as_is  # (a sweep reads the pixels' values, not their type)
    return surer


def _equal_colours(image: np.ndarray) -> bool:
    """Whether the colours of the RGB(A) ``image`` are equal (a gray picture saved in colour), on rows spread over it."""
    from .preprocess import colours_equal

    step = max(1, image.shape[0] // 64)
    rows = np.asarray(image[::step, :, :3])
    return rows.shape[-1] == 3 and colours_equal(rows)


def empty_field(image: np.ndarray) -> bool:
    """Whether ``image`` holds nothing to size: too little :func:`contrast`, or noise alone (:func:`structure`)."""
    return _empty(_extremes(image))  # (read and smoothed once for both)


def _empty(extremes: _Extremes | None) -> bool:
    """:func:`empty_field` of what :func:`_extremes` read of an image."""
    return _contrast(extremes) < MIN_CONTRAST or _structure(extremes) < MIN_STRUCTURE


def contrast(image: np.ndarray) -> float:
    """How far the brightest or darkest structures of ``image`` (2-D gray or RGB, their mean) stand from
    its median, in units of its pixel noise: how far its :data:`CONTRAST_TOP_PIXELS`-th brightest (or
    darkest) pixel is from the median, after a running median of 3 pixels along its rows (a hot pixel is
    no structure), over the noise's standard deviation (the median absolute difference of neighbouring
    pixels / 0.954, for Gaussian noise; their mean / 1.128 where most neighbours are equal, as in a dark
    8-bit field). An image without noise (a drawing, synthetic disks) has infinite contrast; a constant one 0."""
    return _contrast(_extremes(image))


def pixel_noise(rows: np.ndarray, picture: np.ndarray | None = None) -> float:
    """The standard deviation of the pixel noise of ``rows`` (2-D): the median absolute difference of neighbouring
    pixels along the rows / 0.954, for Gaussian noise; where most neighbours are equal, their mean / 1.128, each
    difference capped at the 99th percentile of them (at least the smallest above 0), so that the two steps of each
    of a few dead or hot pixels are not read as noise (QA: 50 dead pixels in a 16-bit image whose nuclei stand 15
    levels above its ground, 0.27 -> 1.25, and it was smoothed as very noisy: 0 of 108 nuclei found; 5 hot pixels
    made it an empty field). With ``picture`` (bool, as ``rows``), only of neighbours both in it."""
    steps = np.abs(np.diff(rows, axis=1))
    if picture is not None:
        steps = steps[picture[:, 1:] & picture[:, :-1]]
        if steps.size == 0:
            return 0.0
    median = float(np.median(steps))
    if median:
        return median / 0.954
    positive = steps[steps > 0]
    if positive.size == 0:
        return 0.0
    cap = max(float(np.percentile(steps, 99)), float(positive.min()))
    return float(np.minimum(steps, cap).mean()) / 1.128


def _contrast(extremes: _Extremes | None) -> float:
    if extremes is None:
        return math.inf
    spread = max(extremes.bright, extremes.dark)
    noise = pixel_noise(extremes.rows, extremes.picture)
    if spread <= 0:
        return 0.0
    return spread / noise if noise > 0 else math.inf


@dataclass(frozen=True)
class ChoiceRule:
    """The constants of :func:`rule_choice` for one kind of image."""

    max_miss: float  # a rung counts only if its median object is within this factor of the trained size
    boundary_penalty: float  # how much its share of boundary pixels lowers its score (:func:`rung_score`)
    score_margin: float  # rungs within this margin of the best score tie; the one that enlarges least wins


#: For stained (coloured) images, and as the size model's ``rule_choice`` feature: the constants above.
STAINED_RULE = ChoiceRule(ESTIMATE_MAX_MISS, ESTIMATE_BOUNDARY_PENALTY, ESTIMATE_SCORE_MARGIN)
#: For gray images (fluorescence, brightfield): less weight on fragmentation, so that more often the rung
#: that sees the nuclei whole wins. With the stained rule the estimate on gray images was most often wrong
#: by being too small: a rung that enlarged the image so much that the network cut each nucleus into
#: pieces. Chosen on the gray images of DSB2018 train resized at random to nuclei 4-120 px (the sweep
#: records of training/size_features.py) of three networks (the shipped HRNet, session 13's HRNet and
#: UNet runs): the sweep's choice within +-25% went from 83/82/87% to 90/88/90% (val records: 83/79/83%
#: -> 85/83/87%). A wider margin and plausible range (0.1, 2.0) did better there (91-92%) but leant to
#: estimates above the truth, which cost DSB2018 val 0.011 for HRNet and once took 136 px for nuclei of
#: 12 px, so the smaller change was kept. After the whole pipeline's check of the estimate, the gain is
#: smaller (weights/README.md, session 14).
GRAY_RULE = ChoiceRule(max_miss=1.75, boundary_penalty=0.25, score_margin=0.05)


def sweep(image: np.ndarray, model, *, normalization=None, cancelled=None, on_features=None) -> list[dict]:
    """One dict per rung of :data:`ESTIMATE_LADDER` whose window is large enough to look at:
    ``relative`` (the rung), ``count`` (objects found), and, when it found any, ``estimate`` (its
    median object diameter, in the image's pixels), ``signed_miss`` (log of its median object over
    the trained diameter, in the network's pixels); always ``boundary_share``, ``confidence`` (mean
    ``|2p - 1|`` where the nucleus probability is above 0.2) and ``foreground_share`` (the window's
    share of nucleus pixels).

    ``on_features(rung, features)``, if given, receives the ``(C, h, w)`` input of the network's
    last layer on each rung's window (what the size model pools).
    """
    from .inference import _predict_tiled
    from .postprocess import labels_from_probabilities
    from .preprocess import as_rgb

    trained = model.diameter
    rgb = as_rgb(image)
    if normalization is None:
        normalization = model.normalization(rgb)
    rungs = []
    # The model's own settings for the estimate in its frame, with a low min size (fragments of a
    # nucleus too large for the network are what a rung must show) and no cut by shape.
    settings = model.estimate_settings.replace(min_size=max(3, int(0.05 * trained**2)), neck_ratio=0.0)
    hook = _last_layer_hook(model.network, on_features) if on_features is not None else None
    try:
        for relative in ESTIMATE_LADDER:
            if cancelled is not None and cancelled():
                return []
            factor = 1.0 / relative
            window = np.asarray(_busiest_window(rgb, int(round(ESTIMATE_WINDOW / factor)), normalization))
            if min(window.shape[:2]) * factor < 32:
                continue
            padded = normalization.padded(window)  # (once a rung: the fill before the resize, the share beside it)
            scaled = rescale_image(normalization.unpadded(window, padded), factor) if factor != 1 else window
            if hook is not None:
                hook.relative = relative
            probabilities = _predict_tiled(scaled, normalization, model.network, tile_size=512, overlap=64,
                                           batch_size=1, progress=None, cancelled=None, device=None)
            labels = labels_from_probabilities(probabilities, **settings.options())
            diameters = nucleus_diameters(labels)
            nucleus = probabilities[0] > settings.threshold
            likely = probabilities[0] > 0.2
            inside = ~rescale_labels(padded.astype(np.uint8), nucleus.shape).astype(bool)  # the picture, not its fill
            rung = {
                "relative": relative,
                "count": int(diameters.size),
                "boundary_share": (float((probabilities[1][nucleus] > settings.boundary_threshold).mean())
                                   if nucleus.any() else 1.0),
                "confidence": float(np.abs(2 * probabilities[0][likely] - 1).mean()) if likely.any() else 0.0,
                "foreground_share": float(nucleus[inside].mean()) if inside.any() else 0.0,
                "whole": tuple(window.shape[:2]) == tuple(rgb.shape[:2]),  # the window is the whole image
                "image_side": int(min(rgb.shape[:2])),
                **_look(window, normalization),
            }
            if diameters.size:
                found = float(np.median(diameters))
                rung.update(estimate=found * relative, signed_miss=math.log(found / trained))
            rungs.append(rung)
    finally:
        if hook is not None:
            hook.remove()
    return rungs


def _look(window: np.ndarray, normalization) -> dict:
    """What kind of image an RGB ``window`` is, once normalised: ``colour`` (mean red - blue
    difference, high for a stain) and ``brightness`` (mean value, high for brightfield and tissue).

    A gray image (:func:`~.preprocess.as_rgb`'s broadcast view) has no colour: only its one channel
    is normalised, a third of the work on the estimate's largest windows.
    """
    if window.strides[-1] == 0:
        return {"colour": 0.0, "brightness": float(np.clip(normalization(window[..., :1]), 0, 1).mean())}
    normalized = np.clip(normalization(window), 0, 1)
    return {"colour": float(np.abs(normalized[..., 0] - normalized[..., 2]).mean()),
            "brightness": float(normalized.mean())}


class _last_layer_hook:
    """Hands the input of ``network``'s last convolution to ``receive(relative, features)``."""

    def __init__(self, network, receive) -> None:
        import torch

        last = [module for module in network.modules() if isinstance(module, torch.nn.Conv2d)][-1]
        self.relative = None
        self._handle = last.register_forward_pre_hook(
            lambda module, inputs: receive(self.relative, inputs[0][0].detach().numpy()))

    def remove(self) -> None:
        self._handle.remove()


def rung_score(rung: dict, penalty: float = ESTIMATE_BOUNDARY_PENALTY) -> float:
    """How sure a rung is of its nuclei: the network's mean confidence, less a share (``penalty``) of
    fragmentation (its nucleus pixels called boundary)."""
    return rung["confidence"] - penalty * rung["boundary_share"]


def estimate_diameter(image: np.ndarray, model, *, normalization=None, cancelled=None,
                      rungs: list[dict] | None = None) -> float | None:
    """The median nucleus diameter (pixels) of ``image``, estimated with ``model``'s own network.

    A scale sweep with a self-consistency score (:func:`sweep`): for each relative size ``r``
    of :data:`ESTIMATE_LADDER`, a window of the image (its busiest, at most
    :data:`ESTIMATE_WINDOW` network pixels a side) is resized so that nuclei ``r`` times the
    model's diameter would arrive at the model's diameter, and segmented. Where the nuclei
    arrive at a size the network knows, it is sure of them; far too large, it cuts them into
    pieces of about its own size with many boundary pixels; far too small, it merges or
    loses them, unsure. Among the rungs whose median object is within
    :data:`ESTIMATE_MAX_MISS` of the trained size, those within :data:`ESTIMATE_SCORE_MARGIN`
    of the highest :func:`rung_score` (confidence less fragmentation) tie, the one that enlarges
    the image least wins, and its median object, in the image's pixels, is the estimate. None
    when no rung finds nuclei, the image is an empty field (its :func:`contrast` is below
    :data:`MIN_CONTRAST`, or its :func:`structure` below :data:`MIN_STRUCTURE`: noise), or the model
    records no diameter. Chosen on DSB2018 ``val``
    rescaled x0.25-x3 against a linear score fitted on train images and the rung nearest the
    trained size (weights/README.md); the margin on the H&E val parts of MoNuSeg and CoNSeP.

    ``rungs``: the image's sweep, when it was swept already (it is not swept again).

    :func:`napari_nucleiseg.pipeline.predict_at_diameter` then checks the estimate against the
    nuclei of the whole image at the scale it gave.
    """
    if model.diameter is None or empty_field(image):  # nothing to size
        return None
    if rungs is None:  # (given: the image was swept already, e.g. to compare the planes of a stack)
        rungs = sweep(image, model, normalization=normalization, cancelled=cancelled)
    size_model = model.metadata.get("size_model")
    if size_model is not None and size_model_applies(rungs, size_model):
        estimate = size_model_estimate(rungs, size_model)
        return None if estimate is None else estimate * model.diameter
    chosen = rule_choice(rungs)
    return None if chosen is None else chosen["estimate"]


def sweep_confidence(rungs: list[dict]) -> float:
    """How sure the network is of the nuclei it found in a sweep: the best :func:`rung_score` among the
    rungs :func:`rule_choice` may choose from (``-inf`` when it may choose none). Compares the planes of a
    short stack, which may be channels: the one that shows the nuclei scores highest (a DAPI plane beside a
    blurred marker or noise, on 9 DSB2018 fluorescence images: the DAPI plane highest on each, by 0.05-0.42
    over the marker where it scored at all and by at least 0.32 over the noise)."""
    rule, _, plausible = _choosable(rungs)
    return max((rung_score(rung, rule.boundary_penalty) for rung in plausible), default=-math.inf)


def rule_choice(rungs: list[dict]) -> dict | None:
    """The rung the hand-made rule of :func:`estimate_diameter` chooses (None: no rung found
    :data:`ESTIMATE_MIN_OBJECTS` objects), with :data:`GRAY_RULE`'s constants when every window of the
    sweep is gray and :data:`STAINED_RULE`'s otherwise."""
    rule, rungs, plausible = _choosable(rungs)
    if not rungs:
        return None
    if not plausible:
        return min(rungs, key=lambda rung: abs(rung["signed_miss"]))
    best = max(rung_score(rung, rule.boundary_penalty) for rung in plausible)
    tied = [rung for rung in plausible if rung_score(rung, rule.boundary_penalty) >= best - rule.score_margin]
    return max(tied, key=lambda rung: rung["relative"])


def _choosable(rungs: list[dict]) -> tuple[ChoiceRule, list[dict], list[dict]]:
    """``(rule, counted, plausible)``: the constants for these rungs (:data:`GRAY_RULE` when every window
    is gray, else :data:`STAINED_RULE`), the rungs that found :data:`ESTIMATE_MIN_OBJECTS` objects (not whole
    cells), and those of them whose median object is within the rule's ``max_miss`` of the trained size."""
    gray = max((rung["colour"] for rung in rungs), default=0.0) < GRAY_COLOUR
    rule = GRAY_RULE if gray else STAINED_RULE
    counted = [rung for rung in rungs if (rung["count"] >= ESTIMATE_MIN_OBJECTS or (gray and _few_fit(rung)))
               and not _found_cells(rung)]
    plausible = [rung for rung in counted if abs(rung["signed_miss"]) < math.log(rule.max_miss)]
    return rule, counted, plausible


#: A gray image at most this many times as wide as a rung's nuclei (and no wider than :data:`ESTIMATE_WINDOW`: a
#: crop) holds too few of them for :data:`ESTIMATE_MIN_OBJECTS`: a rung that saw all of it counts with 1 or 2 (QA: a 96 px crop of 1-2 nuclei of
#: 33-50 px; the rungs that saw them whole found 1 each and did not count, and the rungs that enlarged it 8x and
#: found specks set 1.6 px: 170-421 objects for 1-2).
FEW_NUCLEI_SIDES = 4.0


def _few_fit(rung: dict) -> bool:
    """Whether ``rung`` saw the whole of an image too small to hold :data:`ESTIMATE_MIN_OBJECTS` of its nuclei
    and found 1 or 2 (:data:`FEW_NUCLEI_SIDES`). Only a crop (review: a 603 x 1272 field shrunk 8x, whose 2
    clusters of 155 px outscored its nuclei of 10 px), and only nuclei that fit in it (a random network's one
    blob over a whole 120 x 140 image was sized 140 px)."""
    if FEW_NUCLEI_SIDES <= 0 or not rung.get("whole", False) or rung["count"] < 1 or "estimate" not in rung:
        return False
    side = rung.get("image_side", math.inf)
    return side <= ESTIMATE_WINDOW and rung["estimate"] < side < FEW_NUCLEI_SIDES * rung["estimate"]


def _found_cells(rung: dict) -> bool:
    """Whether a rung of a gray, light-background (brightfield) window found whole cells: its
    objects cover more than :data:`ESTIMATE_MAX_CELL_SHARE` of the window."""
    return (rung["colour"] < GRAY_COLOUR and rung["brightness"] >= ESTIMATE_BRIGHTFIELD
            and rung["foreground_share"] > ESTIMATE_MAX_CELL_SHARE)


#: What the size model (``size_model`` of a weights file, :func:`size_model_estimate`) reads of each
#: rung of the sweep, in this order.
SIZE_FEATURES = ("confidence", "boundary_share", "foreground_share", "signed_miss", "signed_miss_squared",
                 "absolute_miss", "log_count", "enough_objects", "log_relative", "colour", "brightness", "rule_choice")


def rung_feature_rows(rungs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, log_estimates, proposing)`` for the rungs of :func:`sweep`, one row per rung of
    :data:`ESTIMATE_LADDER`: the :data:`SIZE_FEATURES`, the log of the rung's median object in
    trained diameters (``log(relative) + signed_miss``), and whether it found any object (a rung
    that did not, or was not run, proposes nothing)."""
    rows = np.zeros((len(ESTIMATE_LADDER), len(SIZE_FEATURES)))
    log_estimates = np.zeros(len(ESTIMATE_LADDER))
    proposing = np.zeros(len(ESTIMATE_LADDER), dtype=bool)
    by_relative = {rung["relative"]: rung for rung in rungs}
    chosen = rule_choice(rungs)
    for index, relative in enumerate(ESTIMATE_LADDER):
        rung = by_relative.get(relative)
        if rung is None or "signed_miss" not in rung:
            continue
        miss = rung["signed_miss"]
        rows[index] = (rung["confidence"], rung["boundary_share"], rung["foreground_share"], miss, miss**2,
                       abs(miss), math.log1p(rung["count"]), float(rung["count"] >= ESTIMATE_MIN_OBJECTS),
                       math.log(relative), rung["colour"], rung["brightness"], float(rung is chosen))
        log_estimates[index] = math.log(relative) + miss
        proposing[index] = True
    return rows, log_estimates, proposing


def size_model_applies(rungs: list[dict], size_model: dict) -> bool:
    """Whether ``size_model`` is for this image: a coloured one (a stain: the largest ``colour`` of
    the sweep's windows at least the model's ``min_colour``). Gray images (fluorescence,
    brightfield) keep the hand-made rule, which does better on them."""
    return max((rung["colour"] for rung in rungs), default=0.0) >= size_model["min_colour"]


def size_model_estimate(rungs: list[dict], size_model: dict) -> float | None:
    """The median nucleus diameter, in trained diameters, that a fitted ``size_model`` reads from
    the rungs of :func:`sweep` (None when no rung found an object).

    For coloured images only (:func:`size_model_applies`). A mixture over the rungs
    (``kind: "rung-mixture"``): each rung proposes its own median object
    plus a linear correction of its standardised features (``correction``; on H&E, for example, the
    networks find nuclei smaller than they are drawn), and a softmax over linear scores of the
    same features (``gate``) weighs the proposals, on the log scale. Fitted by
    ``training/size_model.py`` on the coloured images of the train parts of the training sets
    (DSB2018's tissue, MoNuSeg, CoNSeP), resized at random.
    """
    rows, log_estimates, proposing = rung_feature_rows(rungs)
    if not proposing.any():
        return None
    x = (rows[proposing] - np.asarray(size_model["mean"])) / np.asarray(size_model["scale"])
    gate, correction = np.asarray(size_model["gate"]), np.asarray(size_model["correction"])
    logits = x @ gate[:-1] + gate[-1]
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    proposals = log_estimates[proposing] + x @ correction[:-1] + correction[-1]
    return float(math.exp(float(weights @ proposals)))


def _busiest_window(rgb: np.ndarray, side: int, normalization=None) -> np.ndarray:
    """The ``side`` x ``side`` window (or the whole image, if smaller) whose pixels vary most,
    chosen on a coarse grid: where the nuclei are, not an empty corner, nor the edge of the padding of
    ``normalization`` (:meth:`~.preprocess.Normalization.unpadded`), if it found any."""
    height, width = rgb.shape[:2]
    if height <= side and width <= side:
        return rgb
    step = max(1, side // 2)
    best, best_score = (0, 0), -1.0
    stride = max(1, side // 16)
    filling = normalization is not None and normalization.padding is not None
    divisor = getattr(normalization, "divisor", None) or 1.0  # (a float image far outside float32's range: its
    # pixels' squares under- or overflow float64 too, and every window scored 0; QA)
    for y in range(0, max(height - side, 0) + 1, step):
        # With a fill, a band of rows is filled once for its windows, not each window (tens of thousands of them on
        # a 4096 px image's smallest rung: 8.4 s, not 1.7). Its columns are every stride-th from 0, as are the
        # windows' (the ladder's sides are powers of 2: their halves are multiples of their 16ths).
        band = normalization.unpadded(np.asarray(rgb[y : y + side : stride, ::stride], dtype=np.float64)) \
            if filling else None  # (float64: a float image's values beyond float32's range, QA)
        for x in range(0, max(width - side, 0) + 1, step):
            if band is None:
                patch = np.asarray(rgb[y : y + side : stride, x : x + side : stride], dtype=np.float64)
            else:
                patch = band[:, x // stride : x // stride + -(-side // stride)]
            score = float(np.nan_to_num(patch / divisor, nan=0.0, posinf=0.0, neginf=0.0).std())  # (NaN, inf: none)
            if score > best_score:
                best, best_score = (y, x), score
    y, x = best
    return rgb[y : y + side, x : x + side]
