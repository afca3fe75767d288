"""Training targets, augmentation and the crops a network trains on.

The same for training the shipped models (``training/train.py``) and for fine-tuning on a user's
corrected labels (:mod:`.finetune`), where only the regions the user checked may train: a
``known`` mask goes through every warp with the image and the labels, and the loss leaves out the
pixels outside it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import color
from skimage.segmentation import find_boundaries
from torch.utils.data import Dataset

from ..preprocess import normalize_image
from ..scale import MAX_SCALE, median_diameter, rescale_image


def make_targets(labels: np.ndarray) -> np.ndarray:
    """``(2, H, W)`` float32 targets: nucleus mask and nucleus boundary.

    The boundary is each nucleus's inner rim (``find_boundaries(mode="inner")``):
    where two nuclei touch, it draws the line that the watershed splits along.
    """
    nucleus = labels > 0
    boundary = find_boundaries(labels, mode="inner") & nucleus
    return np.stack([nucleus, boundary]).astype(np.float32)


class Augmenter:
    """Random geometric and photometric changes for images unlike the training set.

    Geometry (one warp): flips, 90-degree rotations, scale 0.6-1.6 and an elastic
    deformation (a coarse random displacement grid, smoothed, as in the U-Net paper).
    Appearance: brightness, contrast, gamma, hue and saturation, colour -> gray and
    gray -> tinted colour, inversion (fluorescence <-> brightfield look), blur, noise; with
    ``low_res`` (a probability), the crop seen as the plugin sees an image of tiny nuclei that it
    enlarged (:func:`coarsen`).
    """

    #: Jitter of the scale around the one that brings an image's median nucleus to ``diameter``:
    #: a factor drawn log-uniformly from this range, so the network also copes with an estimate
    #: of the diameter that is off by up to about 30%.
    SCALE_JITTER = (0.7, 1.4)

    def __init__(self, crop_size: int, rng: np.random.Generator, diameter: float | None = None,
                 log_gain: float = 0.0, low_res: float = 0.0) -> None:
        self.crop_size = crop_size
        self.rng = rng
        self.diameter = diameter
        self.log_gain = log_gain
        self.low_res = low_res

    def __call__(self, image: np.ndarray, labels: np.ndarray, soft: np.ndarray | None = None,
                 image_diameter: float | None = None,
                 known: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Return a normalised ``(3, S, S)`` float32 crop and its ``(2, S, S)`` targets.

        ``image`` is ``(H, W, 3)``: uint8, or floats scaled to [0, 1].

        With ``soft``, ``(H, W, C)`` maps of the whole image (a teacher's probabilities),
        they go through the same warp (linear interpolation) and are returned after
        the targets: ``(2 + C, S, S)``. The random draws are the same either way.

        With ``known``, an ``(H, W)`` bool mask of the pixels whose labels were checked, a third
        array is returned: the ``(1, S, S)`` float32 mask of the crop's pixels that may train. It
        leaves out a pixel's width along the mask's edge too, where a nucleus cut by the edge
        would otherwise draw a boundary that is not there. Labels outside ``known`` never reach
        the targets.
        """
        pixels = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        extra = [] if soft is None else [soft.astype(np.float32)]
        if known is not None:
            labels = np.where(known, labels, 0)
            extra.append(known.astype(np.float32)[..., None])
        if extra:
            pixels = np.concatenate([pixels, *extra], axis=-1)
        pixels, labels = self.warp_crop(pixels, labels, self.scale_for(image_diameter))
        image = self.appearance(np.ascontiguousarray(pixels[..., :3]), labels)
        if self.low_res and self.rng.random() < self.low_res:
            image = coarsen(image, self.rng)
        normalized = normalize_image(image, log_gain=self.log_gain)
        targets = make_targets(labels)
        if soft is not None:
            targets = np.concatenate([targets, np.clip(pixels[..., 3:3 + soft.shape[-1]], 0, 1).transpose(2, 0, 1)])
        crop = np.ascontiguousarray(normalized.transpose(2, 0, 1)), np.ascontiguousarray(targets)
        if known is None:
            return crop
        trained = ndi.binary_erosion(pixels[..., -1] > 0.5, structure=np.ones((3, 3), bool), border_value=1)
        return (*crop, trained[None].astype(np.float32))

    def scale_for(self, image_diameter: float | None) -> float:
        """The zoom of one crop (>1 enlarges): towards :attr:`diameter` with jitter, or, without a
        target diameter or nuclei to measure, 0.6-1.6 as before diameters were recorded."""
        if self.diameter is None or not image_diameter:
            return float(np.exp(self.rng.uniform(np.log(0.6), np.log(1.6))))
        low, high = self.SCALE_JITTER
        toward = min(max(self.diameter / image_diameter, 1 / MAX_SCALE), MAX_SCALE)  # (as segment resizes at most)
        return toward * float(np.exp(self.rng.uniform(np.log(low), np.log(high))))

    def warp_crop(self, image: np.ndarray, labels: np.ndarray,
                  scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        rng, size = self.rng, self.crop_size
        height, width = labels.shape
        if scale is None:
            scale = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))  # >1 zooms in
        extent = size / scale
        cy = rng.uniform(min(extent / 2, height / 2), max(height - extent / 2, height / 2))
        cx = rng.uniform(min(extent / 2, width / 2), max(width - extent / 2, width / 2))
        grid = (np.arange(size, dtype=np.float32) - size / 2 + 0.5) / scale
        yy, xx = np.meshgrid(grid + cy, grid + cx, indexing="ij")
        if rng.random() < 0.5:
            coarse = rng.normal(0, 1, size=(2, 5, 5)).astype(np.float32)
            zoom = size / 5
            displacement = ndi.zoom(coarse, (1, zoom, zoom), order=3)[:, :size, :size]
            strength = rng.uniform(0, 4) / scale
            yy += displacement[0] * strength
            xx += displacement[1] * strength
        coords = np.stack([yy, xx])
        # Beyond the image (a shrunk image smaller than the crop) both the image and the labels are
        # mirrored, and each mirrored copy of a nucleus gets a label of its own.
        warped = np.stack(
            [ndi.map_coordinates(image[..., c], coords, order=1, mode="mirror") for c in range(image.shape[-1])],
            axis=-1,
        )
        warped_labels = ndi.map_coordinates(labels, coords, order=0, mode="mirror")
        copy_rows = np.floor_divide(np.rint(coords[0]).astype(np.int64), max(height - 1, 1))
        copy_columns = np.floor_divide(np.rint(coords[1]).astype(np.int64), max(width - 1, 1))
        copies = (copy_rows - copy_rows.min()) * 1000 + (copy_columns - copy_columns.min())
        if copies.max() > 0:
            warped_labels = np.where(warped_labels > 0, warped_labels + copies * (int(labels.max()) + 1), 0)
        k = int(rng.integers(4))
        warped, warped_labels = np.rot90(warped, k), np.rot90(warped_labels, k)
        if rng.random() < 0.5:
            warped, warped_labels = warped[:, ::-1], warped_labels[:, ::-1]
        return np.ascontiguousarray(warped), np.ascontiguousarray(warped_labels)

    def appearance(self, image: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        rng = self.rng
        is_gray = np.allclose(image[..., 0], image[..., 1], atol=1e-3) and np.allclose(image[..., 1], image[..., 2], atol=1e-3)
        if not is_gray and rng.random() < 0.5:  # stain: H&E intensities jittered in HED space
            image = hed_jitter(image, rng)
        if labels is not None and image.mean() < 0.5 and rng.random() < 0.25:
            image = brighten_some_nuclei(image, labels, rng)
        if not is_gray and rng.random() < 0.2:  # colour -> gray
            image = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
            is_gray = True
        if rng.random() < 0.2:  # fluorescence <-> brightfield / stained-tissue look
            image = 1.0 - image
        if is_gray and rng.random() < 0.2:  # gray -> tinted colour, e.g. a stain
            tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
            image = 1.0 - (1.0 - image) * tint if image.mean() > 0.5 else image * tint
        elif not is_gray and rng.random() < 0.5:  # hue and saturation
            hsv = color.rgb2hsv(np.clip(image, 0, 1))
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.1, 0.1)) % 1.0
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 1)
            image = color.hsv2rgb(hsv).astype(np.float32)
        if rng.random() < 0.5:  # contrast, brightness
            image = (image - image.mean()) * rng.uniform(0.6, 1.4) + image.mean() + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.4:  # gamma
            image = np.clip(image, 0, None) ** float(np.exp(rng.uniform(np.log(0.4), np.log(2.0))))
        if rng.random() < 0.2:  # blur
            image = ndi.gaussian_filter(image, sigma=(rng.uniform(0.3, 1.2),) * 2 + (0,))
        if rng.random() < 0.3:  # noise
            image = image + rng.normal(0, rng.uniform(0.005, 0.05) * (image.std() + 1e-3), image.shape)
        return image.astype(np.float32)


#: How much coarser than the crop :func:`coarsen` makes it (drawn log-uniformly): nuclei of 3-12 px,
#: which the plugin enlarges 1.5-6x to bring them to a network's 18 px.
COARSEN_FACTORS = (1.5, 6.0)


def coarsen(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ``(S, S, C)`` crop shrunk by a random factor of :data:`COARSEN_FACTORS` and enlarged back to
    ``S`` x ``S``, both with :func:`~napari_nucleiseg.scale.rescale_image`'s filters: the blur and
    the lost detail of an image of tiny nuclei after the plugin has enlarged it. The labels stay
    sharp: the network learns where the nucleus edges are from what such an image still shows."""
    low, high = COARSEN_FACTORS
    factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return coarsened(image, factor).astype(np.float32)


def coarsened(image: np.ndarray, factor: float) -> np.ndarray:
    """An ``(H, W, C)`` image shrunk ``factor`` times and enlarged back to ``H`` x ``W`` (its dtype kept)."""
    small = rescale_image(image, 1 / factor)
    zoom = (image.shape[0] / small.shape[0], image.shape[1] / small.shape[1], 1)
    return ndi.zoom(small, zoom, order=1, mode="grid-mirror", grid_mode=True)


def hed_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.15) -> np.ndarray:
    """Vary an RGB image's stain: each of its haematoxylin, eosin and DAB intensities
    (scikit-image's colour deconvolution) scaled by 1 +- ``sigma`` and shifted by +- ``sigma``
    of its range, as in Tellez et al. 2018 (Med. Image Anal.)."""
    hed = color.rgb2hed(np.clip(image, 1e-3, 1))
    spread = hed.reshape(-1, 3).std(axis=0) + 1e-3
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3) * spread
    return np.clip(color.hed2rgb(hed * alpha + beta), 0, 1).astype(np.float32)


def brighten_some_nuclei(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a few nuclei 3-20x brighter than the rest (dark-background images): what mitotic
    nuclei do in fluorescence, and what pushes a percentile normalisation's top onto them."""
    ids = np.unique(labels[labels > 0])
    if ids.size < 3:
        return image
    chosen = rng.choice(ids, size=max(1, int(ids.size * rng.uniform(0.02, 0.1))), replace=False)
    mask = np.isin(labels, chosen)
    background = float(np.percentile(image, 5))
    out = image.copy()
    out[mask] = background + (out[mask] - background) * rng.uniform(3, 20)
    return out


class CropDataset(Dataset):
    """One random augmented crop per image per epoch.

    With ``soft`` (one ``(H, W, 2)`` map per image, a teacher's probabilities), the
    targets of a crop are ``(4, S, S)``: nucleus and boundary, then the teacher's two.

    With ``known`` (one ``(H, W)`` bool mask per image, or None for an image checked whole), each
    item is ``(image, targets, trained)``: the mask of the crop's pixels that may train. The
    median nucleus diameter of an image is then measured inside its mask.
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], crop_size: int, seed: int,
                 soft: list[np.ndarray] | None = None, diameter: float | None = None,
                 log_gain: float = 0.0, known: list[np.ndarray | None] | None = None,
                 diameters: list[float | None] | None = None, low_res: float = 0.0) -> None:
        self.pairs = pairs
        self.soft = soft
        self.known = known
        self.crop_size = crop_size
        self.seed = seed
        self.augmenter = Augmenter(crop_size, np.random.default_rng(seed), diameter, log_gain, low_res)
        if diameters is not None:
            self.diameters = list(diameters)
        elif diameter:
            masks = known if known is not None else [None] * len(pairs)
            self.diameters = [median_diameter(labels if mask is None else np.where(mask, labels, 0))
                              for (_, labels), mask in zip(pairs, masks)]
        else:
            self.diameters = [None] * len(pairs)

    def reseed(self, seed: int) -> None:
        self.augmenter.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        soft = None if self.soft is None else self.soft[index]
        if self.known is None:
            return tuple(torch.from_numpy(a) for a in self.augmenter(*self.pairs[index], soft, self.diameters[index]))
        image, labels = self.pairs[index]
        known = self.known[index]
        if known is None:
            known = np.ones(labels.shape, dtype=bool)
        return tuple(torch.from_numpy(a) for a in self.augmenter(image, labels, soft, self.diameters[index], known))


def worker_init(worker_id: int) -> None:
    """A DataLoader worker's own random stream."""
    info = torch.utils.data.get_worker_info()
    info.dataset.reseed(info.seed % 2**32)
