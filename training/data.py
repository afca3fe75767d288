"""DSB2018 image/label pairs and the kinds of image that train.py, evaluate.py and the other
training scripts read; the augmentation and crops they train on are in :mod:`napari_nucleiseg.learn`.

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
from skimage.io import imread

# The augmentation and the crops are the package's (napari_nucleiseg.learn), shared with fine-tuning;
# re-exported here for the training scripts.
from napari_nucleiseg.learn.augment import (  # noqa: F401
    Augmenter,
    CropDataset,
    brighten_some_nuclei,
    hed_jitter,
    make_targets,
    worker_init,
)
from napari_nucleiseg.preprocess import as_rgb
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


def restain_as_ihc(tissue: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The H&E picture ``tissue`` ``(H, W, 3)`` restained as an IHC section (a Ki-67 stain): hematoxylin
    alone, no eosin, and the pixels at ``positive`` (nuclei) brown with DAB (1.2 times their hematoxylin as
    DAB, 0.3 of it kept), by scikit-image's colour deconvolution; uint8. No IHC images with nucleus labels
    are at hand: this is how brown nuclei are measured (training/ihc_check.py, the tests)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(np.asarray(tissue)[..., :3])
    hematoxylin, dab = hed[..., 0].copy(), np.zeros(positive.shape)
    dab[positive], hematoxylin[positive] = 1.2 * hed[..., 0][positive], 0.3 * hed[..., 0][positive]
    stained = hed2rgb(np.stack([hematoxylin, np.zeros_like(hematoxylin), dab], axis=-1))
    return (np.clip(stained, 0, 1) * 255).astype(np.uint8)


def balanced_weights(kinds: list[str], shares: dict[str, float]) -> np.ndarray:
    """Sampling weight per image so that each kind is drawn with its share (kinds absent are skipped).

    The shares of the kinds present are renormalised to sum to 1; each image of a
    kind gets ``share / count``. The weights sum to 1.
    """
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    total = sum(shares[kind] for kind in counts)
    return np.array([shares[kind] / total / counts[kind] for kind in kinds])


def dsb_mosaic(data: Path, side: int, split: str = "val") -> np.ndarray:
    """A ``(side, side)`` uint8 gray mosaic of DSB2018's fluorescence images of ``split``, laid in rows
    (each used again when they run out; what is left black is background): a large image of real
    nuclei, for segmenting large images block by block (tests, benchmarks/bench_large.py)."""
    root = find_dataset_root(data)
    images = []
    for sample_id in list_ids(data, split):
        image, _ = load_pair(data, sample_id)
        if image_kind(image) == "fluorescence":
            images.append(image.mean(axis=-1).astype(np.uint8))
    if not images:
        raise FileNotFoundError(f"no fluorescence image in {root}")
    mosaic = np.zeros((side, side), dtype=np.uint8)
    y = x = row_height = 0
    for index in range(side * side):  # stops when the rows are full
        image = images[index % len(images)]
        height, width = image.shape
        if x + width > side:
            x, y, row_height = 0, y + row_height, 0
        if y >= side:
            break
        mosaic[y : y + height, x : x + width] = image[: side - y, : side - x]
        x, row_height = x + width, max(row_height, height)
    return mosaic
