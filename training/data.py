"""DSB2018 image/label pairs, training targets, augmentation and the dataset of crops that train.py
and average_checkpoints.py draw from.

Two layouts are read:

- ours: ``<root>/images/<id>.png`` (or ``.jpg``, CoNSeP) + ``<root>/labels/<id>.png`` (uint16
  instance labels), optionally with ``<root>/../splits.json`` naming the ids of each split
  (DSB2018; MoNuSeg and CoNSeP have a folder per split instead, see :func:`holdout_split`);
- Kaggle's: ``<root>/<id>/images/<id>.png`` + ``<root>/<id>/masks/*.png`` (one binary mask per nucleus).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import color
from skimage.io import imread
from skimage.segmentation import find_boundaries
from torch.utils.data import Dataset

from napari_nucleiseg.preprocess import as_rgb, normalize_image
from napari_nucleiseg.scale import median_diameter  # noqa: F401  (re-exported: train.py, evaluate.py, score_folder.py)


def find_dataset_root(data: Path) -> Path:
    """Accept the dsb2018 folder itself or its ``stage1_train`` subfolder."""
    data = Path(data)
    if (data / "stage1_train").is_dir():
        return data / "stage1_train"
    return data


def list_ids(data: Path, split: str | None) -> list[str]:
    """Ids of ``split`` (from splits.json beside the data) or every id in the folder."""
    root = find_dataset_root(data)
    if split:
        for candidate in (root / "splits.json", root.parent / "splits.json"):
            if candidate.is_file():
                return sorted(json.loads(candidate.read_text())[split])
        raise FileNotFoundError(f"no splits.json beside {root} to pick the {split!r} split from")
    if (root / "images").is_dir():
        return sorted(p.stem for p in (root / "images").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return sorted(p.name for p in root.iterdir() if (p / "images").is_dir())


def load_pair(data: Path, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W, 3)`` uint8 (alpha dropped) and instance labels ``(H, W)`` int32."""
    root = find_dataset_root(data)
    found = [root / "images" / f"{sample_id}{suffix}" for suffix in (".png", ".jpg", ".jpeg")]
    found = [path for path in found if path.is_file()]
    if found:
        image = imread(found[0])
        labels = imread(root / "labels" / f"{sample_id}.png").astype(np.int32)
    else:
        folder = root / sample_id
        image = imread(folder / "images" / f"{sample_id}.png")
        labels = np.zeros(image.shape[:2], dtype=np.int32)
        for index, mask_path in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
            labels[imread(mask_path) > 0] = index
    return np.ascontiguousarray(as_rgb(image)), labels


def holdout_split(ids: list[str], every: int = 7) -> tuple[list[str], list[str]]:
    """``(train, val)``: a validation part split off a data set that has no val split of its own.

    Ids are grouped by their source image (CoNSeP's tiles ``train_10_000`` .. ``train_10_015``
    come from ``train_10``; MoNuSeg's ids are their own source), and every ``every``-th source,
    in sorted order, goes to val, so no source image is in both parts.
    """
    def source(sample_id: str) -> str:
        head, _, tail = sample_id.rpartition("_")
        return head if head and tail.isdigit() and len(tail) == 3 else sample_id

    sources = sorted({source(i) for i in ids})
    held = set(sources[every // 2 :: every])
    return [i for i in ids if source(i) not in held], [i for i in ids if source(i) in held]


#: The kinds of image in DSB2018, as told by :func:`image_kind`.
IMAGE_KINDS = ("fluorescence", "tissue", "brightfield")


def image_kind(image: np.ndarray) -> str:
    """``"tissue"`` (a coloured stain), ``"brightfield"`` (gray, light background) or ``"fluorescence"``.

    For an ``(H, W, 3)`` uint8 image: coloured when red and blue differ by more than 5
    grey levels on average; a gray image is brightfield when its mean is above 100.
    Enough to tell DSB2018's three kinds apart (train: 486 fluorescence, 96 tissue,
    14 brightfield).
    """
    pixels = np.asarray(image, dtype=np.float32)
    if np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 5:
        return "tissue"
    return "brightfield" if pixels.mean() > 100 else "fluorescence"


def balanced_weights(kinds: list[str], shares: dict[str, float]) -> np.ndarray:
    """Sampling weight per image so that each kind is drawn with its share (kinds absent are skipped).

    The shares of the kinds present are renormalised to sum to 1; each image of a
    kind gets ``share / count``. The weights sum to 1.
    """
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    total = sum(shares[kind] for kind in counts)
    return np.array([shares[kind] / total / counts[kind] for kind in kinds])


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
    gray -> tinted colour, inversion (fluorescence <-> brightfield look), blur, noise.
    """

    #: Jitter of the scale around the one that brings an image's median nucleus to ``diameter``:
    #: a factor drawn log-uniformly from this range, so the network also copes with an estimate
    #: of the diameter that is off by up to about 30%.
    SCALE_JITTER = (0.7, 1.4)

    def __init__(self, crop_size: int, rng: np.random.Generator, diameter: float | None = None,
                 log_gain: float = 0.0) -> None:
        self.crop_size = crop_size
        self.rng = rng
        self.diameter = diameter
        self.log_gain = log_gain

    def __call__(self, image: np.ndarray, labels: np.ndarray,
                 soft: np.ndarray | None = None, image_diameter: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return a normalised ``(3, S, S)`` float32 crop and its ``(2, S, S)`` targets.

        With ``soft``, ``(H, W, C)`` maps of the whole image (a teacher's probabilities),
        they go through the same warp (linear interpolation) and are returned after
        the targets: ``(2 + C, S, S)``. The random draws are the same either way.
        """
        pixels = image.astype(np.float32) / 255.0
        if soft is not None:
            pixels = np.concatenate([pixels, soft.astype(np.float32)], axis=-1)
        pixels, labels = self.warp_crop(pixels, labels, self.scale_for(image_diameter))
        image = self.appearance(np.ascontiguousarray(pixels[..., :3]), labels)
        normalized = normalize_image(image, log_gain=self.log_gain)
        targets = make_targets(labels)
        if soft is not None:
            targets = np.concatenate([targets, np.clip(pixels[..., 3:], 0, 1).transpose(2, 0, 1)])
        return np.ascontiguousarray(normalized.transpose(2, 0, 1)), np.ascontiguousarray(targets)

    def scale_for(self, image_diameter: float | None) -> float:
        """The zoom of one crop (>1 enlarges): towards :attr:`diameter` with jitter, or, without a
        target diameter or nuclei to measure, 0.6-1.6 as before diameters were recorded."""
        if self.diameter is None or not image_diameter:
            return float(np.exp(self.rng.uniform(np.log(0.6), np.log(1.6))))
        low, high = self.SCALE_JITTER
        return self.diameter / image_diameter * float(np.exp(self.rng.uniform(np.log(low), np.log(high))))

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
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], crop_size: int, seed: int,
                 soft: list[np.ndarray] | None = None, diameter: float | None = None,
                 log_gain: float = 0.0) -> None:
        self.pairs = pairs
        self.soft = soft
        self.crop_size = crop_size
        self.seed = seed
        self.augmenter = Augmenter(crop_size, np.random.default_rng(seed), diameter, log_gain)
        self.diameters = [median_diameter(labels) for _, labels in pairs] if diameter else [None] * len(pairs)

    def reseed(self, seed: int) -> None:
        self.augmenter.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        soft = None if self.soft is None else self.soft[index]
        image, targets = self.augmenter(*self.pairs[index], soft, self.diameters[index])
        return torch.from_numpy(image), torch.from_numpy(targets)


def worker_init(worker_id: int) -> None:
    """A DataLoader worker's own random stream."""
    info = torch.utils.data.get_worker_info()
    info.dataset.reseed(info.seed % 2**32)
