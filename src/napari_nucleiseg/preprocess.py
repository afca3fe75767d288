"""Turn any supported 2-D image into the network's input (numpy only, no torch).

Training and inference both call :func:`normalize_image`, so what the model
learnt on is exactly what it sees in the plugin.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .errors import ImageError  # noqa: F401 (raised here; part of this module's API)

#: Percentiles mapped to 0 and 1. The 1st percentile is the background level in
#: almost every microscopy image; the 99.8th keeps the brightest nuclei from
#: being clipped by a few hot pixels.
DEFAULT_PERCENTILES = (1.0, 99.8)

#: Gain of the logarithmic compression that models trained since session 8 apply after the
#: percentiles (``normalization.log_gain`` in their weights files): ``sign(x) log(1 + g|x|) / log(1 + g)``
#: keeps 0 and 1 where they are and lifts a nucleus at 5% of the brightest ones to 17%, so a
#: few very bright (mitotic) nuclei no longer push dim ones into the background.
DEFAULT_LOG_GAIN = 10.0

#: A few objects far brighter than all the nuclei (a saturated speck of debris, a bead, a dead cell, one mitosis)
#: would set the high percentile once they cover more than 0.2% of a one-channel image, and every nucleus would
#: fall near 0 (the bundled fluorescence sample in 16 bits with one saturated blob of 0.5% of its pixels: 1 of 53
#: nuclei found away from it, and Auto 10.6 px for 17). They are left out of the high percentile when (a) the
#: high percentile of the pixels outside the objects above half of it lies within the first share of the range
#: from the low one, (b) those objects number at most the second share of the objects of at least
#: :data:`OUTLIER_MIN_PIXELS` pixels above half of that new high (so sparse bright nuclei over a dim cytoplasm keep
#: theirs: they are the many, the cytoplasm's specks few and small) and (c) the new high stands at least the last
#: figure of noise levels above the median (not noise around one speck). The rest's objects are counted in the
#: image's pixels (a percentile sample of a large image: scaled by its step); the bright ones from 2 pixels (a hot
#: pixel is none; the nuclei of 3-4 px of DSB2018 val x0.25 over their cells are many). Colour pictures (stains,
#: brightfield) keep theirs; one channel shown in colour (:func:`pseudo_colour`, a map, an overlay) is one. Measured
#: (session 30, runs/s30/): of DSB2018's 664 train and val images one is changed (a mitosis beside 16 nuclei at
#: a third of its brightness), no val image; DSB2018 val's first 12 gray images in 16 bits with a saturated blob
#: (r = 12 px): HRNet's score away from it 0.235 -> 0.576 at Auto (0.567 without the blob).
OUTLIER_MAX_RATIO = 1 / 3
OUTLIER_MAX_SHARE = 0.25
OUTLIER_MIN_PIXELS = 10
OUTLIER_MIN_CONTRAST = 10.0

#: A sparse field: a few nuclei in a large dark field cover under 0.2% of a one-channel image, so its high
#: percentile lands in the camera noise, the noise is stretched over the whole range and the nuclei clipped (QA:
#: 1-5 nuclei of the fluorescence sample in a 1024 px field of Poisson noise: 834-3824 specks found, Auto 1.95 px;
#: with the true diameter, 0-2 of them). When the objects of at least :data:`OUTLIER_MIN_PIXELS` pixels that stand
#: the first figure of noise levels above the median cover at most the second figure times the share of pixels
#: above the high percentile (the high then lies in their dim rims or in the noise), the high is their pixels'
#: high percentile.
SPARSE_MIN_CONTRAST = 10.0
SPARSE_MAX_SHARE = 2.0

#: Padding: a region of one value at the image's darkest or brightest (the black or white fill of a stitched
#: mosaic's missing tiles, a rotated or registered image, a canvas enlarged) is not part of the picture: the
#: percentiles are the rest's, the network sees the padding at the picture's ground (:func:`_ground`), and the
#: diameter estimate and the empty-field gate look at the picture (:func:`~.scale.sweep`, :func:`~.scale.contrast`).
#: Padding is the pixels of that value that a square of :data:`PADDING_CORE` such pixels covers (an opening: the
#: zeros scattered in a dark ground are not), in regions at the image's border, at least :data:`PADDING_MIN_SHARE`
#: of the image, with at most :data:`PADDING_MAX_HOLES` holes (a picture in the middle of a canvas is one; a
#: ground of that value round the nuclei, as in a binary mask or a background-subtracted image, has one for each),
#: beside a picture that is one (nearly all, :data:`PADDING_WHOLE_PICTURE`, one region of at least
#: :data:`PADDING_MIN_PICTURE` of the image: not 1 or 2 nuclei on such a ground, which leave no holes to count),
#: when fewer than :data:`PADDING_MAX_NEAR` of the other pixels come within :data:`PADDING_NEAR` of their
#: percentile range of that value, and that range is not 0: a dark ground clipped to 0 (DSB2018 val's shrunk
#: images have such) and nuclei saturated at the top are the picture's own.
#: Measured (session 33, runs/s33/pad_probe.py): DSB2018 val, 24 images beside a black fill as wide as the image,
#: HRNet at Auto, 0.499 -> 0.549 (0.553 without it; a brightfield image was sized 117 px for 18 and scored 0);
#: beside a white fill 0.529 -> 0.549; rotated 20 degrees with black corners 0.459 -> 0.489 (most fluorescence
#: images reach black themselves: left as they are). No image of DSB2018 val, its x0.25-x3 sets, MoNuSeg or
#: CoNSeP test is touched (a first version, without the border and 'near' conditions, took the flat ground of 13
#: val x0.25 images for padding).
PADDING_MIN_SHARE = 0.05
PADDING_CORE = 9
PADDING_NEAR = 0.01
PADDING_MAX_NEAR = 0.005
PADDING_MAX_HOLES = 2
PADDING_MIN_PICTURE = 0.25
PADDING_WHOLE_PICTURE = 0.9

#: Percentiles of very large images are estimated on at most this many pixels
#: (a regular grid), so normalising a whole slide costs milliseconds, and a
#: tile sees the same normalisation as the whole image.
PERCENTILE_SAMPLE_PIXELS = 1_000_000

#: Float images whose largest magnitude lies outside this range are divided by it before
#: normalising (which does not change the result: percentiles scale with the image). Their values
#: would otherwise overflow to inf, or vanish to 0, in float32, and every pixel would become NaN.
FLOAT32_SAFE_MAGNITUDE = (1e-30, 1e30)

#: An RGB image whose colour is the same everywhere (each channel a fixed share of the dominant one: DAPI
#: saved in blue, a marker in green or with a cyan LUT, as Fiji and Zen export a channel) is one channel
#: shown in colour: the network sees it as gray (its brightest channel, :func:`pseudo_colour`). The
#: channels may stray this much (root mean square, relative to the dominant channel) from fixed shares.
PSEUDO_COLOUR_SPREAD = 0.05

#: An RGB image that overlays several fluorescence channels with the nuclear stain in blue (DAPI or
#: Hoechst beside a marker in red or green, as Fiji and Zen export a composite) is read as its blue
#: channel (:func:`overlay_nuclear_channel`): in colour the network counts the marker's cells as nuclei
#: too. Blue's median lies in the lowest share of its range (a dark ground: no stain, no brightfield),
#: blue spans at least a share of the widest channel's range, and another channel of at least that share
#: is not blue again (Pearson correlation with blue below the last figure; dark H&E tiles: 0.99).
OVERLAY_DARK_GROUND = 0.15
OVERLAY_MIN_SPAN = 0.1
OVERLAY_MAX_CORRELATION = 0.8
#: The channel :func:`overlay_nuclear_channel` reads (blue).
BLUE = 2

#: An RGB image in which each brightness has one colour, on a dark ground, is one fluorescence channel shown
#: through a colour map (viridis, magma, inferno, plasma, Fiji's Fire, as figures and exports show DAPI): the
#: network sees its place along the map as gray (:func:`colour_map`, :func:`colour_map_places`; in colour it
#: found 45 of the bundled fluorescence sample's 108 nuclei through viridis, DSB2018 score 0.441 -> 0.006).
#: Maps whose brightness does not rise along them are read badly if at all (turbo) or not recognised (hsv,
#: twilight). Over :data:`COLOUR_MAP_BINS` bins of brightness, the pixels' root-mean-square distance from their
#: bin's mean colour lies below the first figure (a share of the widest channel's range) and below the second
#: share of their distance from the best straight line through the colours, which exceeds the third (a curve,
#: not one tint); the colours span at least the fourth share (not gray) and the median brightness lies in the
#: lowest fifth share of its range (a dark ground, not a stain). Measured (session 29, runs/s29/lut_*.py):
#: DSB2018 val's 57 gray images and the bundled fluorescence sample through viridis, magma, inferno, plasma and
#: Fiji's Fire, saved as PNG: the spread 0.00-0.19 of the straight line's; the 814 colour images of DSB2018,
#: MoNuSeg and CoNSeP: 0.54 and more (0.69 and more on a dark ground), and none is read so.
COLOUR_MAP_SPREAD = 0.08
COLOUR_MAP_MAX_STRAIGHTNESS = 0.45
COLOUR_MAP_MIN_BEND = 0.02
COLOUR_MAP_MIN_HUE = 0.2
COLOUR_MAP_DARK_GROUND = 0.25
COLOUR_MAP_BINS = 256
#: ... and with each bin of at least this many pixels weighing alike, the spread lies below this share of the
#: straight line's: a DAPI + nuclear marker overlay whose marker is in a few nuclei (Ki-67) holds mostly blue,
#: and passed the figures above (38 of 60 synthetic ones, marker in 5-30% of the nuclei: 0.56 and more here);
#: colour-mapped PNGs 0.33 at most (Fiji's Fire; viridis 0.02). JPEGs of colour maps (1.0 and more: the
#: compression's colour noise fills the sparse bright bins) are not read so, and stay colour pictures.
COLOUR_MAP_BIN_PIXELS = 20
COLOUR_MAP_MAX_BIN_SPREAD = 0.4
#: ... there are at least this many such bins (colour-mapped PNGs: 16 and more; a drawing in black, red, yellow
#: and white, which is what the hot map shows, 3).
COLOUR_MAP_MIN_BINS = 8
#: ... and the path through those bins' mean colours is at most this many times as long as the distance between
#: its ends: a map is one smooth curve (colour-mapped PNGs: 1.3-2.2, Fiji's Fire the most), while two hues of
#: noise-free blobs that never share a bin of brightness zigzag between them (6.4).
COLOUR_MAP_MAX_WINDING = 3.5
#: The brightness of a colour (ITU-R BT.709 luma, as :func:`skimage.color.rgb2gray`).
LUMA = np.array([0.2125, 0.7154, 0.0721])


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Return a ``(H, W, 3)`` view or copy of a 2-D gray, RGB or RGBA ``image``.

    Gray ``(H, W)`` or ``(H, W, 1)`` is repeated into three channels; the alpha
    channel of RGBA ``(H, W, 4)`` is dropped. The dtype is kept.

    Raises
    ------
    ImageError
        For anything else: stacks, 2- or 5-channel images, empty images.
    """
    if isinstance(image, (str, bytes, os.PathLike)) or image is None:
        what = "nothing (None)" if image is None else f"the path {str(image)!r}"
        raise ImageError(f"Pass an image array, not {what}; read a file first, e.g. with skimage.io.imread.")
    try:
        image = np.asarray(image)
    except (RuntimeError, TypeError, ValueError) as error:  # e.g. a torch tensor that requires grad
        raise ImageError(f"This image cannot be read as an array ({type(error).__name__}); pass a numpy array, "
                         "e.g. tensor.detach().cpu().numpy().") from None
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.number)) or np.iscomplexobj(image):
        raise ImageError(f"Images of type {image.dtype} are not supported; expected integers or floats.")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        rgb = np.broadcast_to(image[..., None], (*image.shape, 3))
    elif image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
    else:
        raise ImageError(
            f"An image of shape {image.shape} is not a 2-D gray, RGB or RGBA image; "
            "expected (height, width), (height, width, 3) or (height, width, 4); "
            "segment stacks plane by plane, and images of other channels one channel at a time."
        )
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"The image is empty (shape {image.shape}).")
    return rgb


def normalize_image(image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                    log_gain: float = 0.0) -> np.ndarray:
    """Normalise a 2-D image for the network.

    Parameters
    ----------
    image : ndarray
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, any integer or float dtype.
    percentiles : (float, float)
        The low and high percentiles (over all three channels together, so colour is kept)
        that map to 0 and 1.
    log_gain : float
        Above 0, values are then compressed logarithmically (see :data:`DEFAULT_LOG_GAIN`),
        as the network was trained; 0 (older weights files) leaves them linear.

    Returns
    -------
    ndarray
        ``(H, W, 3)`` float32, finite. NaN becomes the low percentile and +/-inf the
        high/low one; a constant image becomes all zeros.
    """
    rgb = as_rgb(image)
    return Normalization.of(rgb, percentiles, log_gain)(rgb)


@dataclass(frozen=True)
class Normalization:
    """How :func:`normalize_image` maps an image's values, fixed from the whole image (its
    percentiles) and applied to any part of it: tiles of a large image are normalised one at a
    time, exactly as the whole image would be, without holding it all in float32."""

    low: float = 0.0
    high: float = 1.0
    scale: float = 0.0  # 0: every pixel becomes 0 (an empty or constant image)
    divisor: float | None = None  # float images far outside float32's range are divided by it first
    log_gain: float = 0.0  # > 0: logarithmic compression after the percentiles (DEFAULT_LOG_GAIN)
    gray: bool = False  # one channel shown in colour (:func:`pseudo_colour`): its brightest channel, as gray
    channel: int | None = None  # a fluorescence overlay (:func:`overlay_nuclear_channel`): this channel, as gray
    #: One channel through a colour map (:func:`colour_map`): its place along the map, as gray
    #: (:func:`along_colour_map`: brightness -> place points); None: not such an image.
    mapped: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    #: Brown nuclei (``brown_nuclei``): the white of a brightfield picture whose brown (DAB) is read as
    #: hematoxylin (:func:`~napari_nucleiseg.stains.brown_as_hematoxylin`) first; None: colours as they are.
    white: tuple[float, float, float] | None = None
    #: Padding (:data:`PADDING_MIN_SHARE`): its value (one per channel) and the value it is given; None: none.
    padding: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @classmethod
    def of(cls, rgb: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
           log_gain: float = 0.0, brown_nuclei: bool = False, step: int = 1) -> Normalization:
        """The normalisation of the ``(H, W, 3)`` image ``rgb`` (see :func:`as_rgb`); with ``brown_nuclei``,
        the brown of a picture of stains in transmitted light is read as hematoxylin (:mod:`.stains`).
        ``step``: the grid ``rgb`` was read at, if a sample of a larger image (the objects of
        :func:`_outlier_free_high` are measured in its pixels)."""
        sample = _percentile_sample(rgb)
        step *= sample_step(rgb.shape)
        padding = find_padding(sample)  # first: a black fill beside a stain reads as a colour map
        if padding is not None:
            sample = _filled(sample, padding.mask, padding.ground)
        gray = pseudo_colour(sample)
        mapped = colour_map_places(sample) if not gray and colour_map(sample) else None
        channel = None if gray or mapped else overlay_nuclear_channel(sample)
        white = None
        if gray:
            sample = sample.max(axis=-1)
        elif mapped:
            sample = along_colour_map(sample, mapped)
        elif channel is not None:
            sample = sample[..., channel]
        elif brown_nuclei:
            from .stains import brown_as_hematoxylin, stain_white

            white = stain_white(sample)
            if white is not None:
                sample = brown_as_hematoxylin(sample, white)
        values = sample if padding is None else sample[~padding.mask]  # (the picture's own percentiles)
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
        if finite.size == 0:
            return cls(log_gain=log_gain)
        divisor = None
        if rgb.dtype.kind == "f":
            peak = float(np.abs(finite).max())
            if peak > 0 and not FLOAT32_SAFE_MAGNITUDE[0] <= peak <= FLOAT32_SAFE_MAGNITUDE[1]:
                divisor, finite = peak, finite / peak
        low, high = np.percentile(finite, percentiles)
        plane = _one_plane(sample)
        if plane is not None:
            plane = plane if divisor is None else plane / divisor
            high = _outlier_free_high(plane, float(low), float(high), percentiles[1], step)
            high = _sparse_high(plane, float(high), percentiles[1], step)
        scale = float(high - low)
        if scale <= 0:  # constant (or nearly so) image: nothing to find, and no division by zero
            scale = float(finite.max() - low)
        return cls(float(low), float(high), max(scale, 0.0), divisor, float(log_gain), gray, channel, mapped, white,
                   None if padding is None else (padding.value, padding.ground))

    def unpadded(self, rgb: np.ndarray, padded: np.ndarray | None = None) -> np.ndarray:
        """``rgb``, ``(h, w, 3)`` (or one channel of a gray image, ``(h, w, 1)``), with its padding
        (:data:`PADDING_MIN_SHARE`; ``padded``, its :meth:`padded` if known) at the picture's ground; ``rgb`` itself
        if the image has none. A gray image's broadcast view stays one (its one plane is filled: not three, nor
        resized three times after)."""
        if self.padding is None:
            return rgb
        rgb = np.asarray(rgb)
        padded = self.padded(rgb) if padded is None else padded
        if _is_one_plane(rgb):
            return np.broadcast_to(_filled(rgb[..., 0], padded, self.padding[1][:1])[..., None], rgb.shape)
        return _filled(rgb, padded, self.padding[1])

    def padded(self, rgb: np.ndarray) -> np.ndarray:
        """``(h, w)`` bool: the padding of ``rgb``, ``(h, w, 3)``, a part of the image or all of it: its pixels at
        the padding's value that a square of :data:`PADDING_CORE` such pixels covers, the edges of ``rgb`` left open
        (a saturated core or a hot pixel at that value in the picture is not filled); none if the image has none."""
        if self.padding is None:
            return np.zeros(np.shape(rgb)[:2], dtype=bool)
        rgb = np.asarray(rgb)
        if _is_one_plane(rgb):  # (a gray image's one plane is compared, not its broadcast view's three)
            return padding_mask(rgb[..., 0], self.padding[0][0], edge=True)
        return padding_mask(rgb, np.asarray(self.padding[0]), edge=True)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(h, w, 3)`` float32 network input of ``rgb``, the whole image or a part of it."""
        rgb = self.unpadded(rgb)
        if self.white is not None:
            from .stains import brown_as_hematoxylin

            rgb = brown_as_hematoxylin(rgb, self.white)
        if self.gray:
            rgb = np.broadcast_to(np.asarray(rgb).max(axis=-1)[..., None], np.shape(rgb))
        elif self.mapped:
            rgb = np.broadcast_to(along_colour_map(rgb, self.mapped)[..., None], np.shape(rgb))
        elif self.channel is not None:
            rgb = np.broadcast_to(np.asarray(rgb)[..., self.channel, None], np.shape(rgb))
        if self.divisor is not None:
            with np.errstate(over="ignore", under="ignore"):  # pixels beyond the sample's peak: +/-inf, handled below
                rgb = rgb / self.divisor
        out = np.asarray(rgb).astype(np.float32)
        if self.scale <= 0:
            out[...] = 0
            return out
        if rgb.dtype.kind == "f":
            np.nan_to_num(out, copy=False, nan=self.low, posinf=self.high, neginf=self.low)
        out -= np.float32(self.low)
        out /= np.float32(self.scale)
        # Keep very bright or very dark outliers from dominating the activations.
        np.clip(out, -1.0, 3.0, out=out)
        if self.log_gain > 0:
            sign = np.sign(out)
            np.abs(out, out=out)
            out *= np.float32(self.log_gain)
            np.log1p(out, out=out)
            out *= sign
            out /= np.float32(np.log1p(self.log_gain))
        return out


def colours_equal(pixels: np.ndarray) -> bool:
    """Whether the first three entries of the last axis of ``pixels`` (red, green, blue) are equal everywhere: a
    gray picture saved in colour."""
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2]))


def _one_plane(sample: np.ndarray) -> np.ndarray | None:
    """The ``(h, w)`` plane of a one-channel percentile sample (2-D, a gray broadcast or equal channels) as
    float64, non-finite pixels at its finite minimum; None for a colour sample."""
    if sample.ndim == 3:
        if sample.strides[-1] != 0 and not colours_equal(sample):
            return None
        sample = sample[..., 0]
    plane = np.asarray(sample, dtype=np.float64)
    finite = np.isfinite(plane)
    if not finite.all():
        plane = np.where(finite, plane, plane[finite].min() if finite.any() else 0.0)
    return plane


def _outlier_free_high(plane: np.ndarray, low: float, high: float, percentile: float, step: int = 1) -> float:
    """``high``, or the ``percentile`` of ``plane`` without a few objects far brighter than all the others (see
    :data:`OUTLIER_MAX_RATIO`); ``plane`` is read every ``step`` pixels of the image."""
    from scipy import ndimage as ndi

    from .scale import pixel_noise

    span = high - low
    if span <= 0 or plane.ndim != 2 or min(plane.shape) < 3:
        return high
    smallest = max(2, round(OUTLIER_MIN_PIXELS / step**2))  # an object of the rest, in the plane's pixels
    with np.errstate(all="ignore"):  # values near float64's limits: no verdict, the high as it is
        outliers = plane >= low + 0.5 * span
        around = ndi.binary_dilation(outliers, iterations=2)
        rest = plane[~around]
        if not outliers.any() or rest.size < plane.size // 2:
            return high
        rest_high = float(np.percentile(rest, percentile))
        if not rest_high - low <= OUTLIER_MAX_RATIO * span:
            return high
        count = _objects(outliers, 2)  # a hot pixel is none; the bright core of a nucleus of 3 px is one
        objects = _objects((plane >= low + 0.5 * (rest_high - low)) & ~around, smallest)
        if count > OUTLIER_MAX_SHARE * objects:
            return high
        noise = pixel_noise(plane)
        stands = (rest_high - float(np.median(rest))) / noise if noise > 0 else math.inf
    return rest_high if stands >= OUTLIER_MIN_CONTRAST else high


def _sparse_high(plane: np.ndarray, high: float, percentile: float, step: int = 1) -> float:
    """``high``, or, in a sparse field (:data:`SPARSE_MIN_CONTRAST`, :data:`SPARSE_MAX_SHARE`), the ``percentile``
    of the pixels of its few nuclei; ``plane`` is read every ``step`` pixels of the image."""
    from scipy import ndimage as ndi

    from .scale import pixel_noise

    if plane.ndim != 2 or min(plane.shape) < 3:
        return high
    with np.errstate(all="ignore"):  # values near float64's limits: no verdict, the high as it is
        noise = pixel_noise(plane)
        if not noise > 0:
            return high
        labels, _ = ndi.label(plane >= float(np.median(plane)) + SPARSE_MIN_CONTRAST * noise)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        objects = sizes[labels] >= max(2, round(OUTLIER_MIN_PIXELS / step**2))
        share = float(objects.mean())
        if share == 0 or share > SPARSE_MAX_SHARE * (100 - percentile) / 100:
            return high
        bright = float(np.percentile(plane[objects], percentile))
    return bright if np.isfinite(bright) and bright > high else high


class Padding(NamedTuple):
    """The padding of an image (:data:`PADDING_MIN_SHARE`)."""

    value: tuple[float, ...]  # one per channel
    ground: tuple[float, ...]  # the picture's ground (:func:`_ground`), one per channel
    mask: np.ndarray  # ``(h, w)`` bool: the padding's pixels


def find_padding(sample: np.ndarray) -> Padding | None:
    """The :class:`Padding` of an ``(h, w)`` or ``(h, w, 3)`` image (a percentile sample, rows), or None."""
    if min(sample.shape[:2]) < 3 * PADDING_CORE:
        return None
    if sample.ndim == 3 and sample.strides[-1] == 0:  # a gray image's broadcast view: its one plane is read
        found = find_padding(sample[..., 0])
        return None if found is None else Padding(found.value * 3, found.ground * 3, found.mask)
    pixels = sample.reshape(-1, sample.shape[2]) if sample.ndim == 3 else sample.reshape(-1, 1)
    brightness = pixels.sum(axis=1, dtype=np.float64)
    if not np.isfinite(brightness).any():
        return None
    for index in (int(np.nanargmin(brightness)), int(np.nanargmax(brightness))):
        value = pixels[index]
        mask = _on_border(padding_mask(sample, value if sample.ndim == 3 else value[0]))
        if mask.mean() < PADDING_MIN_SHARE or mask.all() or _holes(mask) > PADDING_MAX_HOLES or not _whole(~mask):
            continue  # (a ground of that value round the nuclei has a hole for each: a fill has none, or its picture)
        rest = sample[~mask].reshape(-1, pixels.shape[1]).astype(np.float64)
        rest = rest[np.isfinite(rest).all(axis=1)]
        if rest.shape[0] == 0:
            return None
        gray = rest.mean(axis=1)
        low, high = np.percentile(gray, DEFAULT_PERCENTILES)
        near = np.abs(gray - float(np.mean(value))) <= PADDING_NEAR * (high - low)
        if high <= low or np.mean(near) >= PADDING_MAX_NEAR:
            continue  # the picture reaches that value itself: a flat dark ground, saturated nuclei
        return Padding(tuple(float(v) for v in value), tuple(float(v) for v in _ground(rest, gray, low, high)), mask)
    return None


def _filled(image: np.ndarray, mask: np.ndarray, value: tuple[float, ...]) -> np.ndarray:
    """``image`` (``(h, w)`` or ``(h, w, c)``) with ``value`` (one per channel) where ``mask`` is, in its own dtype."""
    value = np.asarray(value, dtype=np.float64)
    if image.dtype.kind in "iub":
        value = np.round(value)
    value = value.astype(image.dtype)
    if image.ndim == 2:
        return np.where(mask, value[0], image)
    return np.where(mask[..., None], value, image)


def _is_one_plane(rgb: np.ndarray) -> bool:
    """Whether ``rgb`` is one gray plane: :func:`as_rgb`'s broadcast view of a gray image, or ``(h, w, 1)``
    (:func:`_one_plane` reads a sample's plane, equal colours too)."""
    return rgb.strides[-1] == 0 or rgb.shape[-1] == 1


def _whole(picture: np.ndarray) -> bool:
    """Whether the ``picture`` beside a fill is one (at least :data:`PADDING_MIN_PICTURE` of the image, nearly all one
    connected region): not 1 or 2 nuclei on a ground of the fill's value, which leave no holes to count."""
    from scipy import ndimage as ndi

    regions, count = ndi.label(picture)
    if count == 0 or picture.mean() < PADDING_MIN_PICTURE:
        return False
    return np.bincount(regions.ravel())[1:].max() >= PADDING_WHOLE_PICTURE * np.count_nonzero(picture)


def _holes(mask: np.ndarray) -> int:
    """How many holes the regions of ``mask`` have (regions of other pixels they enclose)."""
    from scipy import ndimage as ndi

    return int(ndi.label(ndi.binary_fill_holes(mask) & ~mask)[1])


def _on_border(mask: np.ndarray) -> np.ndarray:
    """The regions of ``mask`` that touch the border of the image."""
    from scipy import ndimage as ndi

    if not mask.any():
        return mask
    regions, _ = ndi.label(mask)
    border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    return np.isin(regions, border[border > 0])


def _ground(rest: np.ndarray, gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """The ground of a picture whose ``(n, c)`` pixels are ``rest`` (their mean over channels ``gray``, within the
    percentiles ``low`` and ``high``): the median colour of the pixels in the commonest of 64 levels of ``gray``."""
    if high <= low:
        return np.median(rest, axis=0)
    counts, edges = np.histogram(gray, bins=64, range=(low, high))
    commonest = int(np.argmax(counts))
    return np.median(rest[(gray >= edges[commonest]) & (gray <= edges[commonest + 1])], axis=0)


def padding_mask(image: np.ndarray, value: Any, edge: bool = False) -> np.ndarray:
    """``(h, w)`` pixels of ``image`` (``(h, w)`` or ``(h, w, 3)``) equal to ``value`` (one per channel) that a square
    of :data:`PADDING_CORE` such pixels covers (an opening); with ``edge``, the square may reach past the edges (a
    tile of an image: the padding goes on beyond it), and however few they are."""
    from scipy import ndimage as ndi

    equal = np.asarray(image) == value
    if equal.ndim == 3:
        equal = equal.all(axis=-1)
    if not equal.any() or (not edge and equal.mean() < PADDING_MIN_SHARE):  # (too few: no opening to compute)
        return np.zeros_like(equal)
    square = np.ones((PADDING_CORE, PADDING_CORE), dtype=bool)
    return ndi.binary_opening(equal, square, border_value=1) & equal if edge else ndi.binary_opening(equal, square)


def _objects(mask: np.ndarray, smallest: int) -> int:
    """How many connected regions of ``mask`` hold at least ``smallest`` pixels."""
    from scipy import ndimage as ndi

    labels, _ = ndi.label(mask)
    return int((np.bincount(labels.ravel())[1:] >= smallest).sum())


def _colour_pixels(rgb: np.ndarray) -> np.ndarray | None:
    """The finite pixels of an ``(H, W, 3)`` colour image as ``(N, 3)`` float64; None for a gray image (a
    broadcast view), another shape, or fewer than 100 finite pixels (too few to tell its colours)."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.strides[-1] == 0:
        return None
    pixels = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    pixels = pixels[np.isfinite(pixels).all(axis=1)]
    if pixels.shape[0] < 100:
        return None
    peak = float(np.abs(pixels).max())
    return pixels / peak if peak > 0 and not 1e-100 < peak < 1e100 else pixels  # (squares stay finite)


def pseudo_colour(rgb: np.ndarray) -> bool:
    """Whether the ``(H, W, 3)`` image ``rgb`` (or a sample of it) is one channel shown in a strong colour:
    each channel a fixed share of its brightest (dominant) channel over every pixel, to within
    :data:`PSEUDO_COLOUR_SPREAD` of it (least squares), and some channel below half of it (blue, green,
    red; cyan, magenta, yellow). A gray image (a broadcast view, R = G = B) is not, nor a tint (a brownish
    brightfield), nor a stain (H&E: purple nuclei on a pink and white ground)."""
    pixels = _colour_pixels(rgb)
    if pixels is None:
        return False
    dominant = pixels[:, int(np.argmax(pixels.sum(axis=0)))]
    energy = float(dominant @ dominant)
    if energy <= 0:
        return False
    shares = pixels.T @ dominant / energy
    spread = np.sqrt(((pixels - np.outer(dominant, shares)) ** 2).sum(axis=0) / energy)
    return bool(spread.max() < PSEUDO_COLOUR_SPREAD and shares.min() < 0.5)


def brightness(rgb: np.ndarray) -> np.ndarray:
    """The ``(H, W)`` brightness (:data:`LUMA`) of the ``(H, W, 3)`` image ``rgb``, as float64."""
    return np.asarray(rgb, dtype=np.float64) @ LUMA


def _brightness_bins(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``(N, 3)`` ``pixels``' brightness, their bin of :data:`COLOUR_MAP_BINS` equal bins from the darkest to
    the brightest, the bins' pixel counts and the bins' summed colours ``(COLOUR_MAP_BINS, 3)``."""
    luma = pixels @ LUMA
    darkest, brightest = float(luma.min()), float(luma.max())
    scale = COLOUR_MAP_BINS / (brightest - darkest) if brightest > darkest else 0.0
    bins = np.clip(((luma - darkest) * scale).astype(np.intp), 0, COLOUR_MAP_BINS - 1)
    counts = np.bincount(bins, minlength=COLOUR_MAP_BINS)
    sums = np.stack([np.bincount(bins, pixels[:, c], minlength=COLOUR_MAP_BINS) for c in range(3)], axis=1)
    return luma, bins, counts, sums


def colour_map_places(rgb: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Where along its colour map each brightness of the colour-mapped image ``rgb`` (:func:`colour_map`; or a
    sample of it) lies: the mean brightness of each bin of :func:`_brightness_bins` and the length of the curve
    through the bins' mean colours up to it, from the darkest. The distance a colour has travelled along the map,
    not its brightness, follows the channel: Fiji's Fire turns from black to blue with little gain in brightness
    (read by brightness: DSB2018 score 0.395, by place along the map: 0.498; viridis 0.507 / 0.504)."""
    pixels = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    pixels = pixels[np.isfinite(pixels).all(axis=1)]
    luma, bins, counts, sums = _brightness_bins(pixels)
    held = counts > 0
    means = sums[held] / counts[held, None]
    unit = float(np.abs(means).max()) or 1.0  # (steps measured in it: no overflow of float images near 1e200)
    places = unit * np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(means / unit, axis=0), axis=1))])
    return tuple(np.bincount(bins, luma, minlength=COLOUR_MAP_BINS)[held] / counts[held]), tuple(places)


def along_colour_map(rgb: np.ndarray, places: tuple[tuple[float, ...], tuple[float, ...]]) -> np.ndarray:
    """The ``(H, W)`` place along its colour map (:func:`colour_map_places`) of each pixel of ``rgb``, as float64."""
    return np.interp(brightness(rgb), *places)


def colour_map(rgb: np.ndarray) -> bool:
    """Whether the ``(H, W, 3)`` image ``rgb`` (or a sample of it) is one fluorescence channel shown through a
    colour map whose brightness rises along it (viridis, magma, inferno, plasma, Fiji's Fire): its colour a
    function of its brightness, bent (not one tint), on a dark ground (:data:`COLOUR_MAP_SPREAD` and the figures
    after it). A gray image is not, nor one channel in one colour (:func:`pseudo_colour`, a straight line), nor
    a stain (a light ground, colours that differ at one brightness), nor an overlay of several channels."""
    pixels = _colour_pixels(rgb)
    if pixels is None:
        return False
    low, high = np.percentile(pixels, [0.5, 99.5], axis=0)
    span = float((high - low).max())
    if span <= 0 or np.percentile(np.ptp(pixels, axis=1), 99) < COLOUR_MAP_MIN_HUE * span:
        return False
    luma, bins, counts, sums = _brightness_bins(pixels)
    ground_low, median, ground_high = np.percentile(luma, [0.5, 50.0, 99.5])
    if ground_high <= ground_low or median - ground_low >= COLOUR_MAP_DARK_GROUND * (ground_high - ground_low):
        return False
    deviations = ((pixels - (sums / np.maximum(counts, 1)[:, None])[bins]) ** 2).sum(axis=1)
    spread = np.sqrt(deviations.mean())
    full = counts >= COLOUR_MAP_BIN_PIXELS
    if full.sum() < COLOUR_MAP_MIN_BINS:  # a few flat colours (a drawing, a mask) or a small image: no curve
        return False
    per_bin = np.sqrt((np.bincount(bins, deviations, minlength=COLOUR_MAP_BINS)[full] / counts[full]).mean())
    path = sums[full] / counts[full, None]
    length, ends = np.linalg.norm(np.diff(path, axis=0), axis=1).sum(), np.linalg.norm(path[-1] - path[0])
    if not length <= COLOUR_MAP_MAX_WINDING * ends:
        return False
    design = np.stack([np.ones_like(luma), luma], axis=1)
    straight = np.sqrt(((pixels - design @ np.linalg.lstsq(design, pixels, rcond=None)[0]) ** 2).sum(axis=1).mean())
    return bool(spread < COLOUR_MAP_SPREAD * span and COLOUR_MAP_MIN_BEND * span < straight
                and spread < COLOUR_MAP_MAX_STRAIGHTNESS * straight and per_bin < COLOUR_MAP_MAX_BIN_SPREAD * straight)


def overlay_kind(rgb: np.ndarray) -> str | None:
    """Whether the ``(H, W, 3)`` image ``rgb`` (or a sample of it) overlays several fluorescence channels
    (:data:`OVERLAY_DARK_GROUND` and the figures after it): ``"blue"`` with the nuclear stain in blue (a dark
    ground in blue, and another channel that is not blue again), ``"other"`` without blue (red and green
    neither of them the other again, one on a dark ground), else None: a gray image, one channel in colour
    (:func:`pseudo_colour`), a stain (H&E and brightfield have a bright ground and some blue), a dark tissue
    tile (its channels rise and fall together)."""
    pixels = _colour_pixels(rgb)
    if pixels is None:
        return None
    low, median, high = np.percentile(pixels, [1.0, 50.0, 99.5], axis=0)
    span = high - low
    if span.max() <= 0:
        return None
    spans = span >= OVERLAY_MIN_SPAN * span.max()
    dark = median - low < OVERLAY_DARK_GROUND * span
    deviations = pixels - pixels.mean(axis=0)
    spread = np.sqrt((deviations**2).sum(axis=0))

    def apart(a: int, b: int) -> bool:  # neither channel the other again
        if spread[a] <= 0 or spread[b] <= 0:
            return False
        return abs(float(deviations[:, a] @ deviations[:, b]) / (spread[a] * spread[b])) < OVERLAY_MAX_CORRELATION

    if spans[BLUE]:
        return "blue" if dark[BLUE] and any(spans[other] and apart(other, BLUE) for other in (0, 1)) else None
    return "other" if spans[0] and spans[1] and (dark[0] or dark[1]) and apart(0, 1) else None


def overlay_nuclear_channel(rgb: np.ndarray) -> int | None:
    """:data:`BLUE` when the ``(H, W, 3)`` image ``rgb`` (or a sample of it) overlays fluorescence channels
    with the nuclear stain in blue (:func:`overlay_kind`), else None."""
    return BLUE if overlay_kind(rgb) == "blue" else None


def overlay_note(image: np.ndarray, choose: str) -> str | None:
    """The sentence that says how an RGB overlay of fluorescence channels (:func:`overlay_kind`) was read, or
    None for any other image; ``choose`` says how to segment one channel where the note is shown (e.g.
    "run it with --channel 0 (red) or --channel 1 (green)")."""
    if np.ndim(image) != 3 or np.shape(image)[-1] not in (3, 4):
        return None
    return overlay_sentence(as_rgb(_percentile_sample(image)), choose)  # (a lazy plane: its sample's grid only)


def overlay_sentence(sample: np.ndarray, choose: str) -> str | None:
    """:func:`overlay_note`'s sentence of an image's ``(h, w, 3)`` percentile sample (:func:`_percentile_sample`)."""
    if pseudo_colour(sample):
        return None
    if colour_map(sample):  # (before the overlay: viridis's blue rises and falls while its green rises)
        return ("Read as one channel shown through a colour map (as viridis or Fire), as gray. "
                "The table's intensities are the colours', not the channel's.")
    kind = overlay_kind(sample)
    if kind == "blue":
        return ("Read as its blue channel: it looks like an overlay of fluorescence channels, and blue is the "
                f"usual nuclear stain (DAPI, Hoechst). For another channel, {choose}.")
    if kind == "other":
        return ("It looks like an overlay of fluorescence channels without blue (the usual nuclear stain), so it "
                "was segmented as one colour picture, which finds the cells of every channel. For the nuclear "
                f"stain's channel alone, {choose}.")
    return None


def _percentile_sample(rgb: Any) -> np.ndarray:
    """``rgb`` (rows and columns first: numpy, or a dask or zarr array, which only this grid is read of) on a
    regular grid of at most :data:`PERCENTILE_SAMPLE_PIXELS` pixels."""
    step = sample_step(rgb.shape)
    return np.asarray(rgb[::step, ::step])


def sample_step(shape: tuple[int, ...]) -> int:
    """The step of :func:`_percentile_sample`'s grid over an image of ``shape`` (rows and columns first)."""
    return max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] / PERCENTILE_SAMPLE_PIXELS))))
