"""Fine-tune a model on a user's corrected labels, on a laptop CPU in minutes.

The images and labels are checked first, and each problem gets one sentence
(:class:`~napari_nucleiseg.errors.FineTuneError`) before anything runs or is written. Only the
regions the user checked train: outside them a pixel is unknown, not background
(:mod:`.augment`, :mod:`.loss`). The new weights file is written under a temporary name and
renamed into place, so a cancelled, failed or killed run leaves no file behind.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._batch import NameTaken, write_atomically, write_new
from ..errors import Cancelled, FineTuneError
from ..memory import free_memory
from ..pipeline import MIN_STACK_PLANE_SIDE
from ..preprocess import as_rgb
from ..scale import median_diameter
from ..user_models import finetuned_name, is_user_model, name_problem, typed_model_name, user_model_path
from ..weights import NucleiModel, fine_tune_generations, save_weights, weights_dir
from . import DEFAULT_MINUTES
from .augment import CropDataset
from .loop import train_steps

#: Side (pixels, in the network's frame) of a training crop, and crops per step: about 1-2 steps a
#: second for the bundled networks on 2 CPU cores.
CROP_SIZE = 192
BATCH_SIZE = 4
#: Adam's learning rate, constant: a tenth of the shipped models' first training's.
LEARNING_RATE = 3e-4
#: Pixels of context kept around a checked region (they feed the network, but do not train).
REGION_MARGIN = 64
#: Fine-tuning holds each image as float32 RGB and its labels, masks and a few copies (bytes a pixel),
#: and the network, its optimiser and a batch's activations: 2 images of 1000 x 1000 took 0.71 GB above
#: the loaded state (benchmarks/bench_finetune.py --parts memory).
BYTES_PER_PIXEL = 60
BYTES_FIXED = 600 * 2**20

Region = tuple[int, int, int, int]  # y0, y1, x0, x1: rows y0..y1-1, columns x0..x1-1


@dataclass(frozen=True)
class Progress:
    """How a fine-tuning run stands, after each step."""

    steps: int
    loss: float  # of the last step
    mean_loss: float  # of the last 20 steps
    elapsed: float  # seconds
    budget: float  # seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget - self.elapsed)


@dataclass
class Examples:
    """The training material: image crops (float32 RGB in [0, 1]) with their labels, the mask of the
    pixels of each that the user checked (None: all), and a record of each image for the file."""

    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    known: list[np.ndarray | None] = field(default_factory=list)
    diameters: list[float | None] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def nuclei(self) -> int:
        return sum(record["nuclei"] for record in self.records)


def finetune(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             model: str | os.PathLike | NucleiModel = "hrnet", *, out: str | os.PathLike | None = None,
             name: str | None = None, minutes: float = DEFAULT_MINUTES,
             regions: Sequence[Sequence[Region] | None] | None = None, diameter: float | None = None,
             overwrite: bool = False, seed: int = 0, max_steps: int | None = None,
             brown_nuclei: bool | Sequence[bool] = False,
             progress: Callable[[Progress], None] | None = None, cancelled: Callable[[], bool] | None = None,
             log: Callable[[str], None] | None = None) -> Path:
    """Fine-tune ``model`` on ``images`` with their corrected ``labels``; returns the new weights file.

    Parameters
    ----------
    images, labels : sequences of arrays
        Each image ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` with its ``(H, W)`` integer labels
        (0 background, one number per nucleus); or a stack ``(P, H, W[, C])`` with ``(P, H, W)``
        labels, of which only the planes holding labelled nuclei train.
    model : str, path or NucleiModel
        The model to start from: a bundled name, or any weights file (one fine-tuned before too).
    out : path, optional
        The new weights file; default ``<user model folder>/<name>.safetensors``
        (:func:`napari_nucleiseg.user_models.user_models_dir`).
    name : str, optional
        The new model's name (default: the base's name with ``-finetuned`` and the date).
    minutes : float
        Time budget of the training.
    regions : one sequence of ``(y0, y1, x0, x1)`` rectangles per image (or None), optional
        The regions the user checked; only their pixels train. None: each image counts as checked whole; an
        empty sequence: nothing of that image was checked, and it does not train.
    diameter : float, optional
        The median nucleus diameter of the images (pixels); default: measured on the labels.
    overwrite : bool
        Replace ``out`` if it exists (never a bundled weights file, nor the base's).
    seed, max_steps : int, optional
        The random crops' seed, and a number of steps to stop after (within ``minutes``): with
        both, a run is repeatable.
    brown_nuclei : bool or sequence of bool
        Read the brown (DAB) of the images (or of each image) as hematoxylin, as ``segment(...,
        brown_nuclei=True)`` reads them (:mod:`~napari_nucleiseg.stains`): the model learns from the
        images as it will see them. The new file records it (``"brown_nuclei": true`` when every image
        was read so), and the widget ticks *Brown nuclei* when it is chosen.
    progress : callable, optional
        Called with a :class:`Progress` after each step.
    cancelled : callable, optional
        Polled before each step; when it returns True the run stops, writes nothing, and raises
        :class:`~napari_nucleiseg.errors.Cancelled`.
    log : callable, optional
        Called with a sentence about the material where one is due (planes left out).

    Raises
    ------
    FineTuneError
        One sentence for each problem of the input; nothing is written.
    """
    if not (isinstance(minutes, (int, float)) and np.isfinite(minutes) and minutes > 0):
        raise FineTuneError(f"The time budget must be a positive number of minutes, not {minutes!r}.")
    if diameter is not None and not (isinstance(diameter, (int, float)) and np.isfinite(diameter) and diameter > 0):
        raise FineTuneError(f"The nucleus diameter must be a positive number of pixels, not {diameter!r}.")
    base = _load_base(model)
    # Hashed now: the file may be renamed or deleted while the network trains (QA: the run was lost at its end).
    base_sha256 = None if base.path is None else hashlib.sha256(Path(base.path).read_bytes()).hexdigest()
    typed = name is not None and bool(name.strip())
    name = new_model_name(name, base, out)
    out_path = _output_path(out, name, base, overwrite, typed=typed and out is None)
    examples = prepare_examples(images, labels, regions, diameter, brown_nuclei)
    say = log or (lambda text: warnings.warn(text, stacklevel=3))
    for note in examples.notes:
        say(note)

    network = copy.deepcopy(base.network).float()
    frame_diameter = base.diameter
    dataset = CropDataset(examples.pairs, CROP_SIZE, seed, diameter=frame_diameter, log_gain=base.log_gain,
                          known=examples.known, diameters=examples.diameters)
    batches = _random_batches(dataset, examples, seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    budget = float(minutes) * 60
    clock = time.perf_counter()
    losses: list[float] = []

    step_ends = [clock]

    def stop() -> bool:
        # a step that would end past the budget is not begun (QA: 0.5 min took 41.5 s, a step of 11 s over)
        elapsed = time.perf_counter() - clock
        last_step = step_ends[-1] - step_ends[-2] if len(step_ends) > 1 else 0.0
        return ((cancelled is not None and cancelled()) or elapsed + last_step >= budget
                or (max_steps is not None and len(losses) >= max_steps))

    def on_step(steps: int, loss: float) -> None:
        step_ends.append(time.perf_counter())
        losses.append(loss)
        if progress is not None:
            progress(Progress(steps, loss, float(np.mean(losses[-20:])), time.perf_counter() - clock, budget))

    try:
        train_steps(network, optimizer, batches, stop=stop, on_step=on_step)
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "alloc" not in str(error).lower():
            raise
        raise FineTuneError("Fine-tuning ran out of memory; mark smaller regions you checked, or use fewer "
                            "images.") from None
    if cancelled is not None and cancelled():
        raise Cancelled("fine-tuning was cancelled")
    if not losses:
        raise FineTuneError("The time budget ended before the first training step; give it more minutes.")
    network.eval()
    metadata = _metadata(base, name, examples, steps=len(losses), minutes=(time.perf_counter() - clock) / 60,
                         loss=float(np.mean(losses[-20:])), diameter=diameter, seed=seed, base_sha256=base_sha256)
    chosen = out_path
    for _ in range(MAX_NAME_TRIES):
        try:
            _save_atomically(out_path, network, metadata, replace=overwrite)
        except NameTaken:  # another run saved under this name while this one trained: the next free one
            taken, out_path = out_path, _free_path(chosen)
            if metadata["name"] == taken.stem:
                metadata["name"] = out_path.stem
            continue
        if out_path != chosen:
            say(f"{chosen.name} was saved by another run while this one trained; this model is saved as "
                f"{out_path.name}.")
        return out_path
    raise FineTuneError(f"Could not save the model: {MAX_NAME_TRIES} names after {chosen.name} were taken meanwhile.")


#: How many free names :func:`finetune` tries when others are taken while it saves.
MAX_NAME_TRIES = 20


def _free_path(path: Path) -> Path:
    """``path`` with the first of ``-2``, ``-3``, ... after its name that no file takes."""
    number = 2
    while path.with_name(f"{path.stem}-{number}{path.suffix}").exists():
        number += 1
    return path.with_name(f"{path.stem}-{number}{path.suffix}")


def new_model_name(name: str | None, base: NucleiModel, out: str | os.PathLike | None) -> str:
    """The new model's name: ``name`` (spaces around it and a ``.safetensors`` typed after it taken off), or
    the base's name with ``-finetuned`` and the date; saved in the model folder (no ``out``), the first such
    name not taken (``-2``, ``-3``, ...), as the widget names it (review: a second run of a day was refused)."""
    if name is not None and name.strip():
        return typed_model_name(name)
    name = finetuned_name(base.name)  # (QA: from x-finetuned-DATE, x-finetuned-DATE-finetuned-DATE)
    if out is not None:
        return name
    path = user_model_path(name)
    return _free_path(path).stem if path.exists() else name


def _load_base(model: str | os.PathLike | NucleiModel) -> NucleiModel:
    if isinstance(model, NucleiModel):
        return model
    from ..api import load_model

    return load_model(model)  # a bundled name, a model of the user's by name, or a file; a WeightsError says why


def _output_path(out: str | os.PathLike | None, name: str, base: NucleiModel, overwrite: bool,
                 typed: bool = False) -> Path:
    """The file to write; refused when it exists (without ``overwrite``), or is shipped or the base."""
    problem = name_problem(name, outside_folder=out is not None and not is_user_model(Path(out).expanduser()),
                           typed=typed)
    if problem:
        raise FineTuneError(problem)
    if out is None:
        path = user_model_path(name.strip())
    else:
        path = Path(out).expanduser()
    if path.suffix != ".safetensors":
        raise FineTuneError(f"The new weights file must end in .safetensors, not {path.name!r}.")
    resolved = path.resolve()
    if resolved.parent == weights_dir().resolve():
        raise FineTuneError(f"{path} is where the bundled weights are; save the new model elsewhere.")
    if base.path is not None and resolved == Path(base.path).resolve():
        raise FineTuneError(f"{path.name} is the model being fine-tuned; save the new model under another name.")
    try:
        exists = path.exists()
    except OSError as error:  # (QA: a name too long for its folder)
        raise FineTuneError(f"Cannot write {path}: {error.strerror or error}; save the new model elsewhere.") from None
    if exists and not overwrite:
        raise FineTuneError(f"{path} already exists; choose another name, or allow overwriting it.")
    if path.is_dir():
        raise FineTuneError(f"{path} is a folder; name a file ending in .safetensors.")
    _check_writable(path)
    return path


def _check_writable(path: Path) -> None:
    """Refuse, before any training, a ``path`` whose folder cannot be made or written in (QA: the minutes of
    training were lost to a traceback at the end, for --out in /proc or under a file)."""
    existing = next((folder for folder in path.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise FineTuneError(f"Cannot write {path}: {existing} is a file, not a folder; save the new model elsewhere.")
    probe = (existing or Path.cwd()) / f".{path.name}.probe"  # no folder is made before the model is
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise FineTuneError(f"Cannot write {path}: {error.strerror or error}; save the new model elsewhere.") from None


def prepare_examples(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     regions: Sequence[Sequence[Region] | None] | None = None,
                     diameter: float | None = None, brown_nuclei: bool | Sequence[bool] = False) -> Examples:
    """The training material of :func:`finetune`, every input checked (one sentence each)."""
    if isinstance(images, np.ndarray) or isinstance(labels, np.ndarray):
        raise FineTuneError("Pass the images and the labels as lists, one entry per image.")
    images, labels = list(images), list(labels)
    if not images:
        raise FineTuneError("No image to fine-tune on.")
    if len(images) != len(labels):
        raise FineTuneError(f"{len(images)} images but {len(labels)} label images; pass one label image per image.")
    regions = [None] * len(images) if regions is None else list(regions)
    if len(regions) != len(images):
        raise FineTuneError(f"{len(images)} images but {len(regions)} region lists; pass one (or None) per image.")
    browns = [brown_nuclei] * len(images) if isinstance(brown_nuclei, (bool, np.bool_)) else list(brown_nuclei)
    if len(browns) != len(images) or not all(isinstance(b, (bool, np.bool_)) for b in browns):
        raise FineTuneError(f"brown_nuclei must be True or False, or one of them per image ({len(images)}), "
                            f"not {brown_nuclei!r}.")
    needed = sum(int(np.prod(np.shape(lab), dtype=np.float64)) for lab in labels) * BYTES_PER_PIXEL + BYTES_FIXED
    available = free_memory()
    if available is not None and needed > available:
        raise FineTuneError(f"Fine-tuning on these images needs about {needed / 2**30:.1f} GB of memory and "
                            f"{available / 2**30:.1f} GB is free; close other programs, or use fewer or smaller images.")
    examples = Examples()
    for number, (image, label, rects, brown) in enumerate(zip(images, labels, regions, browns), start=1):
        _add_image(examples, number, len(images), np.asarray(image), np.asarray(label), rects, diameter, bool(brown))
    if not examples.pairs:
        if all(r is not None and len(r) == 0 for r in regions):  # (review: said 'no labelled nucleus in any image')
            raise FineTuneError("No region of any image was checked (each region list is empty); give the regions "
                                "you checked, or None for whole images.")
        where = "in the checked regions of any image" if any(r is not None for r in regions) else "in any image"
        raise FineTuneError(f"There is no labelled nucleus {where}; paint (or keep) the nuclei there first.")
    return examples


def _which(number: int, total: int) -> str:
    return "the image" if total == 1 else f"image {number}"


def _add_image(examples: Examples, number: int, total: int, image: np.ndarray, label: np.ndarray,
               rects: Sequence[Region] | None, diameter: float | None, brown: bool = False) -> None:
    which = _which(number, total)
    if label.dtype == bool or not np.issubdtype(label.dtype, np.integer):
        raise FineTuneError(f"The labels of {which} are {label.dtype}, not integers: labels give each nucleus "
                            "its own whole number (0 for background).")
    if label.ndim not in (2, 3) or 0 in label.shape:
        raise FineTuneError(f"The labels of {which} have shape {label.shape}; expected (height, width), "
                            "or (planes, height, width) for a stack.")
    if label.min() < 0:  # (QA: -1, a common 'ignore' value, ended in a traceback)
        raise FineTuneError(f"The labels of {which} hold negative numbers (down to {label.min()}); labels give each "
                            "nucleus its own positive whole number, 0 for background.")
    if label.max() > np.iinfo(np.int32).max:  # numbered 1, 2, ... (QA: numbers from 2**31 up were lost to int32)
        from skimage.segmentation import relabel_sequential

        label = relabel_sequential(label)[0]
    _check_not_a_mask(which, label)
    if label.ndim == 3 and label.shape[-1] in (3, 4) and image.shape[:2] == label.shape[:2]:
        raise FineTuneError(f"The labels of {which} are a colour picture ({label.shape}); labels give each "
                            "nucleus its own whole number in one channel (0 for background).")
    stack = image.ndim == 4 or (image.ndim == 3 and tuple(image.shape[1:]) == tuple(label.shape))
    if label.ndim == 2 and stack:  # (QA: 'The image: An image of shape (5, 256, 256) is not a 2-D gray, RGB ...')
        raise FineTuneError(f"{which.capitalize()} is a stack of {image.shape[0]} planes {image.shape} but its labels "
                            f"are one plane {label.shape}: give labels of every plane (planes, height, width), or "
                            "one plane of the image.")
    if label.ndim == 3:
        if image.shape[:3] != label.shape or min(label.shape[1:]) < MIN_STACK_PLANE_SIDE:
            raise FineTuneError(f"{which.capitalize()} has shape {image.shape} but its labels {label.shape}: a stack "
                                "of labels needs a stack of images of the same planes, height and width.")
        used = []
        for index in range(label.shape[0]):
            before = len(examples.pairs)
            _add_plane(examples, f"{which}, plane {index}", image[index], label[index], rects, diameter,
                       record={"image": number, "plane": index}, brown=brown)
            if len(examples.pairs) > before:
                used.append(index)
        if used and len(used) < label.shape[0]:
            examples.notes.append(
                f"Trained on plane{'s' if len(used) > 1 else ''} {_listing(used)} of the {label.shape[0]} of {which}: "
                "the others hold no labelled nucleus.")
        return
    _add_plane(examples, which, image, label, rects, diameter, record={"image": number}, brown=brown)


def _listing(values: list[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _add_plane(examples: Examples, which: str, image: np.ndarray, label: np.ndarray, rects: Sequence[Region] | None,
               diameter: float | None, record: dict[str, Any], brown: bool = False) -> None:
    try:
        rgb = as_rgb(image)
    except ValueError as error:
        raise FineTuneError(f"{which.capitalize()}: {error}") from None
    if rgb.shape[:2] != label.shape:
        raise FineTuneError(f"{which.capitalize()} is {rgb.shape[0]} x {rgb.shape[1]} pixels but its labels are "
                            f"{label.shape[0]} x {label.shape[1]}; the labels must be of the image they correct.")
    height, width = label.shape
    if diameter is not None and diameter > max(height, width):  # (QA: 1e9 px trained on without a word)
        raise FineTuneError(f"A nucleus diameter of {diameter:g} pixels is larger than {which} ({height} x {width} "
                            "pixels).")
    # (an empty list is nothing checked; QA: it trained the whole image, with Exclude border's band left out)
    boxes = [(0, height, 0, width)] if rects is None else [_check_region(which, rect, label.shape) for rect in rects]
    read = _brown_as_hematoxylin(rgb) if brown else rgb
    scaled = _unit_rgb(read)
    kept = 0
    for y0, y1, x0, x1 in boxes:
        whole = (y0, y1, x0, x1) == (0, height, 0, width)
        top, bottom = max(0, y0 - REGION_MARGIN), min(height, y1 + REGION_MARGIN)
        left, right = max(0, x0 - REGION_MARGIN), min(width, x1 + REGION_MARGIN)
        crop_labels = label[top:bottom, left:right].astype(np.int32)
        known = None
        if not whole:
            known = np.zeros(crop_labels.shape, dtype=bool)
            known[y0 - top:y1 - top, x0 - left:x1 - left] = True
        checked = crop_labels if known is None else np.where(known, crop_labels, 0)
        nuclei = int(np.unique(checked[checked > 0]).size)
        if nuclei == 0:
            continue
        examples.pairs.append((np.ascontiguousarray(scaled[top:bottom, left:right]), crop_labels))
        examples.known.append(known)
        if diameter is None and nuclei <= MASK_MAX_NUMBERS:  # (QA: nuclei painted with one number: one large nucleus)
            checked = _objects(checked)  # each separate object measured on its own
        examples.diameters.append(diameter if diameter is not None else median_diameter(checked))
        kept += 1
        examples.records.append({
            **record, "shape": list(image.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
            "region": [y0, y1, x0, x1], "nuclei": nuclei, "brown_nuclei": brown and read is not rgb,
            "labelled_pixels": int(np.count_nonzero(checked)), "checked_pixels": int((y1 - y0) * (x1 - x0)),
        })


#: Labels (of an image, or a whole stack) whose nuclei share at most this many numbers ...
MASK_MAX_NUMBERS = 2
#: ... among at least this many separate objects are a mask (foreground / background), not labels. A few nuclei
#: painted with one number are measured apart (:func:`_objects`) and train as they are.
MASK_MIN_OBJECTS = 10


def _objects(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each separate object (8-connected, of one number) numbered on its own."""
    from skimage.measure import label as connected

    return connected(labels, background=0, connectivity=labels.ndim)


def _check_not_a_mask(which: str, label: np.ndarray) -> None:
    """Refuse labels that are a mask: a few numbers over many separate objects (QA: a 0/255 mask made in Fiji was
    taken as one nucleus of 110 px, the image shrunk 6x to bring it to the trained size, and touching nuclei
    taught as one; a model worse than its base was saved without a word)."""
    numbers = np.unique(label[label > 0])
    if not 0 < numbers.size <= MASK_MAX_NUMBERS:
        return
    objects = int(_objects(label).max())
    if objects >= MASK_MIN_OBJECTS:
        raise FineTuneError(
            f"The labels of {which} look like a mask, not labels: {objects} separate objects share "
            f"{'one number' if numbers.size == 1 else f'{numbers.size} numbers'}; give each nucleus its own number "
            "(0 for background), e.g. with Fiji's Analyze Particles (Show: Count Masks), or in napari with 'new' "
            "beside the label number before painting each.")


def _check_region(which: str, rect: Sequence[int], shape: tuple[int, int]) -> Region:
    try:
        y0, y1, x0, x1 = (int(round(float(v))) for v in rect)
    except (TypeError, ValueError):
        raise FineTuneError(f"A region of {which} is {rect!r}; give each as (y0, y1, x0, x1).") from None
    y0, y1, x0, x1 = max(0, min(y0, y1)), min(shape[0], max(y0, y1)), max(0, min(x0, x1)), min(shape[1], max(x0, x1))
    if y1 - y0 < 1 or x1 - x0 < 1:
        raise FineTuneError(f"A region of {which}, {tuple(rect)}, holds no pixel of its {shape[0]} x {shape[1]} image.")
    return y0, y1, x0, x1


def _brown_as_hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` with its brown read as hematoxylin, as a run with Brown nuclei reads it (the white of the whole
    image; in its own dtype); ``rgb`` itself when it holds no brightfield stain (fluorescence, gray)."""
    from ..preprocess import Normalization
    from ..stains import brown_as_hematoxylin

    white = Normalization.of(rgb, brown_nuclei=True).white
    if white is None:
        return rgb
    read = brown_as_hematoxylin(rgb, white)
    if np.issubdtype(rgb.dtype, np.integer):
        limits = np.iinfo(rgb.dtype)
        read = np.clip(np.rint(read), limits.min, limits.max).astype(rgb.dtype)
    return read


def _unit_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as float32 in [0, 1]: uint8 kept as it is (divided by 255 later), anything else
    stretched between its 0.01 and 99.99 percentiles (16-bit images use a small part of their range)."""
    if rgb.dtype == np.uint8:
        return rgb
    pixels = rgb.astype(np.float32)
    low, high = np.percentile(pixels[:: max(1, pixels.shape[0] // 512), :: max(1, pixels.shape[1] // 512)], (0.01, 99.99))
    if not high > low:
        high = low + 1.0
    return np.clip((pixels - low) / (high - low), 0, 1)


def _random_batches(dataset: CropDataset, examples: Examples, seed: int):
    """Endless batches of crops, each drawn from an example with a chance in proportion to the
    pixels checked in it (its whole area when it is checked whole)."""
    areas = np.array([mask.sum() if mask is not None else labels.size
                      for (_, labels), mask in zip(examples.pairs, examples.known)], dtype=np.float64)
    chances = areas / areas.sum()
    rng = np.random.default_rng(seed)
    while True:
        items = [dataset[int(i)] for i in rng.choice(len(dataset), size=BATCH_SIZE, p=chances)]
        yield tuple(torch.stack(parts) for parts in zip(*items))


#: What a fine-tuned model's licence adds to its base's.
TUNED_LICENCE = "fine-tuned on the user's own images"


def _tuned_licence(licence: str | None) -> str:
    """The licence of a model fine-tuned from one of ``licence``: said once, however many generations (QA: a
    third generation said 'fine-tuned on the user's own images' three times)."""
    if licence and TUNED_LICENCE in licence:
        return licence
    return (f"{licence}; " if licence else "") + TUNED_LICENCE


def _metadata(base: NucleiModel, name: str, examples: Examples, *, steps: int, minutes: float, loss: float,
              diameter: float | None, seed: int, base_sha256: str | None = None) -> dict[str, Any]:
    metadata = {key: value for key, value in base.metadata.items()
                if key not in ("format", "format_version", "package_version", "metrics", "name", "brown_nuclei")}
    if examples.records and all(record.get("brown_nuclei") for record in examples.records):
        metadata["brown_nuclei"] = True  # learnt from brown read as hematoxylin: run it so
    base_file = None if base.path is None else Path(base.path)
    licence = metadata.get("licence")
    metadata.update({
        "name": name,
        "licence": _tuned_licence(licence),
        "fine_tuned": {
            "base": {"name": base.name, "file": None if base_file is None else base_file.name,
                     "sha256": base_sha256},
            "images": examples.records,
            "nuclei": examples.nuclei,
            "labelled_pixels": sum(record["labelled_pixels"] for record in examples.records),
            "steps": steps, "minutes": round(minutes, 2), "final_loss": round(loss, 4),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "settings": {"crop_size": CROP_SIZE, "batch_size": BATCH_SIZE, "lr": LEARNING_RATE, "seed": seed,
                         "region_margin": REGION_MARGIN},
            "diameter": {"given": diameter, "images": [d for d in examples.diameters],
                         "frame": base.diameter},
            "thresholds": "inherited from the base model",
            "brown_nuclei": [bool(record.get("brown_nuclei")) for record in examples.records],
            "package_version": __version__,
            # a fine-tune of a fine-tune keeps what each earlier one learnt from (newest first)
            "earlier": fine_tune_generations(base.metadata),
        },
    })
    return metadata



def _save_atomically(path: Path, network: torch.nn.Module, metadata: dict[str, Any], replace: bool = True) -> None:
    """Write the weights under a temporary name beside ``path`` and rename it into place, readable as any
    file the user makes is (the user's umask; safetensors writes a private temporary file). Without
    ``replace``, a file at ``path`` is never replaced: NameTaken (:func:`~.._batch.write_new`)."""
    from safetensors import SafetensorError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        (write_atomically if replace else write_new)(path, lambda partial: save_weights(partial, network, metadata))
    except NameTaken:
        raise
    except (OSError, SafetensorError) as error:
        raise FineTuneError(f"Could not write {path}: {getattr(error, 'strerror', None) or error}.") from None
    with contextlib.suppress(OSError):  # written: a file system that keeps its own modes changes nothing
        os.chmod(path, _new_file_mode(path.parent))


def _new_file_mode(folder: Path) -> int:
    """The mode a file the user creates in ``folder`` gets (0o666 less the umask), read from a file made there:
    os.umask would change it for a moment, racing other threads."""
    probe = folder / f".mode-{os.getpid()}-{threading.get_ident()}.probe"
    descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return os.fstat(descriptor).st_mode & 0o777
    finally:
        os.close(descriptor)
        probe.unlink()
