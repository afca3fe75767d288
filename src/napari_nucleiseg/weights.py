"""One self-describing weights file per model: tensors plus the metadata to rebuild and use it.

The file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: it
cannot run code when loaded (unlike a pickle), and its header holds our
metadata as JSON under the key ``"nucleiseg"``::

    {
      "format": "napari-nucleiseg-weights", "format_version": 1,
      "architecture": "unet", "kwargs": {...},
      "normalization": {"method": "percentile", "percentiles": [1.0, 99.8]},
      "threshold": 0.5, "boundary_threshold": 0.5, "min_size": 10, "neck_ratio": 0.3,
      "training": {...}, "metrics": {...}, "package_version": "..."
    }
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import WeightsError
from .settings import FILE_SETTINGS, PostprocessSettings, check_settings

if TYPE_CHECKING:
    import numpy as np

    from .preprocess import Normalization

FORMAT_NAME = "napari-nucleiseg-weights"
FORMAT_VERSION = 1
#: The largest safetensors header read (bytes): ours are a few kB; a larger length is not a header.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "nucleiseg"
#: The settings a file may record apart for the diameter estimate (:attr:`NucleiModel.estimate_settings`).
ESTIMATE_SETTINGS = ("threshold", "boundary_threshold")
WEIGHTS_SUFFIX = ".safetensors"


BUNDLED_MODELS = ("unet", "unetpp", "hrnet")
#: How the bundled models are named to the user.
MODEL_TITLES = {"unet": "UNet", "unetpp": "UNet++", "hrnet": "HRNet"}
#: The model used when none is named: the most accurate of the three on most sets
#: (weights/evaluation.json); its speed beside the others is in benchmarks/README.md.
DEFAULT_MODEL = "hrnet"


@dataclass
class NucleiModel:
    """A network ready for inference, with the metadata of the file it came from."""

    network: Any  # torch.nn.Module, in eval mode
    metadata: dict[str, Any]
    path: Path | None = None
    name: str = field(default="")
    #: Whether the brown (DAB) of a brightfield picture is read as hematoxylin (the user's "Brown nuclei",
    #: :mod:`.stains`); set for a run by :meth:`reading`, never by a file.
    brown_nuclei: bool = False

    def reading(self, brown_nuclei: bool) -> NucleiModel:
        """The model that reads brown as hematoxylin or not (the same network; itself when unchanged)."""
        brown_nuclei = bool(brown_nuclei)
        return self if brown_nuclei == self.brown_nuclei else dataclasses.replace(self, brown_nuclei=brown_nuclei)

    def normalization(self, rgb: np.ndarray, step: int = 1) -> Normalization:
        """How the network sees the ``(H, W, 3)`` image ``rgb`` (or a sample of it, read every ``step`` pixels), as
        it was trained to, and as :attr:`brown_nuclei` says."""
        from .preprocess import Normalization

        return Normalization.of(rgb, self.percentiles, self.log_gain, self.brown_nuclei, step)

    @property
    def settings(self) -> PostprocessSettings:
        """The post-processing settings calibrated for the model, in the pixels of its own frame."""
        return PostprocessSettings.from_metadata(self.metadata)

    def settings_at(self, scale: float) -> PostprocessSettings:
        """:attr:`settings` for an image resized by ``scale`` for the network: the sizes in its own pixels."""
        return self.settings.at_scale(scale)

    @property
    def estimate_settings(self) -> PostprocessSettings:
        """The settings the Auto diameter estimate labels with (its sweep and its recheck): :attr:`settings`
        with the thresholds of ``metadata["estimate"]`` where the file records them. A file whose output
        thresholds were chosen again (``training/calibrate_auto.py``) keeps there the ones its size model
        was fitted with, so that the estimate, and the diameter users get, stay as they were."""
        recorded = self.metadata.get("estimate") or {}
        return self.settings.replace(**{key: recorded[key] for key in ESTIMATE_SETTINGS if key in recorded})

    @property
    def log_gain(self) -> float:
        """Logarithmic compression after the percentiles (:data:`~.preprocess.DEFAULT_LOG_GAIN`); 0: none."""
        return float(self.metadata.get("normalization", {}).get("log_gain", 0.0))

    @property
    def diameter(self) -> float | None:
        """Median nucleus diameter (pixels) in the frame the network was trained on; None: not recorded
        (the network is run on the image as it is)."""
        value = self.metadata.get("diameter")
        return None if value is None else float(value)

    def scale_for(self, diameter: float | None, shape: tuple[int, ...] | None = None) -> float:
        """The factor an image (of ``shape``) with nuclei ``diameter`` pixels across is resized by for the
        network (1: no diameter, or close enough to the model's; see :func:`~napari_nucleiseg.scale.scale_factor`)."""
        from .scale import scale_factor

        return scale_factor(diameter, self.diameter, shape)

    @property
    def percentiles(self) -> tuple[float, float]:
        low, high = self.metadata.get("normalization", {}).get("percentiles", (1.0, 99.8))
        return float(low), float(high)


def weights_dir() -> Path:
    """The folder of bundled weights: inside the installed package, or the repo's ``weights/``."""
    packaged = Path(str(resources.files("napari_nucleiseg"))) / "weights"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "weights"


def bundled_model_name(text: str) -> str | None:
    """The bundled model that ``text`` names, by its name or its title in any case (``"HRNet"``,
    ``"UNet++"``, ``"unetpp"``); None for any other text."""
    wanted = text.strip().lower()
    for name, title in MODEL_TITLES.items():
        if wanted in (name, title.lower()):
            return name
    return None


def bundled_weights_path(name: str) -> Path:
    """Path of the bundled weights file of model ``name`` (one of :data:`BUNDLED_MODELS`)."""
    if name not in BUNDLED_MODELS:
        raise WeightsError(f"Unknown model {name!r}; expected one of: {', '.join(BUNDLED_MODELS)}.")
    path = weights_dir() / f"{name}{WEIGHTS_SUFFIX}"
    if not path.is_file():
        raise WeightsError(f"The bundled weights of {name!r} are missing ({path}); reinstall napari-nucleiseg.")
    return path

def fine_tune_generations(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The fine-tunes a weights file's ``metadata`` records, newest first (each as its ``fine_tuned`` entry
    without ``earlier``): none for a bundled model, one per generation for a fine-tune of a fine-tune."""
    tuned = metadata.get("fine_tuned")
    if not isinstance(tuned, dict):
        return []
    earlier = [entry for entry in tuned.get("earlier") or [] if isinstance(entry, dict)]
    return [{key: value for key, value in tuned.items() if key != "earlier"}, *earlier]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read and check the metadata of a weights file without importing torch.

    Raises
    ------
    WeightsError
        If the file is missing, empty, truncated, not a safetensors file, or not ours.
    """
    path = Path(path)
    if path.is_dir():  # (QA: a folder was "no such file")
        raise WeightsError(f"{path.name} is a folder, not a weights file: choose a .safetensors file in it ({path}).")
    if not path.is_file():
        raise WeightsError(f"{path.name}: no such file ({path}).")
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(f"{path.name}: the file is empty.")
    try:
        stream = open(path, "rb")
    except OSError as error:  # e.g. no permission to read it
        raise WeightsError(f"{path.name}: the file cannot be read ({error.strerror or error}).") from None
    with stream:
        prefix = stream.read(8)
        # The bytes there are can tell a weights file cut short from another file (a text file of
        # 5 bytes is not a truncated weights file): a header length is small, and the header a JSON object.
        header_size = int.from_bytes(prefix, "little")  # the bytes missing of a short file count as 0
        if header_size <= 0 or header_size > MAX_HEADER_BYTES or stream.read(1) not in (b"{", b""):
            raise WeightsError(f"{path.name}: not a napari-nucleiseg weights file (no safetensors header).")
        if len(prefix) < 8:
            raise WeightsError(f"{path.name}: the file is truncated (only {size} bytes).")
        if 8 + header_size > size:
            raise WeightsError(f"{path.name}: the file is truncated (its header is cut off).")
        stream.seek(8)
        try:
            header = json.loads(stream.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise WeightsError(f"{path.name}: not a napari-nucleiseg weights file (unreadable header).") from None
    tensors = {key: entry for key, entry in header.items() if key != "__metadata__"} if isinstance(header, dict) else {}
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict) or not all(
        _is_tensor_entry(entry) for entry in tensors.values()
    ):
        raise WeightsError(f"{path.name}: not a napari-nucleiseg weights file (unreadable header).")
    data_end = max((entry["data_offsets"][1] for entry in tensors.values()), default=0)
    if 8 + header_size + data_end > size:
        raise WeightsError(
            f"{path.name}: the file is truncated ({size} bytes, expected {8 + header_size + data_end})."
        )
    raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        raise WeightsError(f"{path.name}: a safetensors file, but not a napari-nucleiseg weights file (it has no "
                           "napari-nucleiseg metadata: another tool's weights?).")
    try:
        metadata = json.loads(raw)
    except (TypeError, json.JSONDecodeError, RecursionError):
        raise WeightsError(f"{path.name}: its napari-nucleiseg metadata is unreadable.") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise WeightsError(f"{path.name}: not a napari-nucleiseg weights file.")
    version = metadata.get("format_version", 0)
    if not _is_number(version):
        raise WeightsError(f"{path.name}: its format version {version!r} is not a number.")
    if version > FORMAT_VERSION:
        raise WeightsError(f"{path.name}: written by a newer napari-nucleiseg (format {version}); please upgrade.")
    for key in ("architecture", "kwargs"):
        if key not in metadata:
            raise WeightsError(f"{path.name}: its metadata lacks {key!r}.")
    problem = _metadata_problem(metadata)
    if problem is not None:
        raise WeightsError(f"{path.name}: {problem}.")
    return metadata


#: The architecture arguments a weights file may give, each with its bounds, checked before anything is
#: built: a hand-edited or hostile file (depth 1,000,000, widths [], 4 output channels) gets a sentence,
#: not minutes of building, an IndexError, or an error at inference. The inputs are always RGB and the
#: outputs nucleus and boundary.
_UNET_ARGUMENTS = {"in_channels": (3, 3), "out_channels": (2, 2), "base_channels": (1, 256), "depth": (1, 6)}
ARCHITECTURE_ARGUMENTS: dict[str, dict[str, tuple[int, int]]] = {
    "unet": _UNET_ARGUMENTS,
    "unetpp": _UNET_ARGUMENTS,
    "hrnet": {"in_channels": (3, 3), "out_channels": (2, 2), "stem_channels": (1, 256), "widths": (1, 512),
              "blocks": (1, 8)},
}
#: HRNet's ``widths`` is a list of this many branch widths at most.
MAX_BRANCHES = 6


def _kwargs_problem(architecture: str, kwargs: dict[str, Any]) -> str | None:
    """What is wrong with the architecture arguments of a known architecture, if anything."""
    allowed = ARCHITECTURE_ARGUMENTS.get(architecture)
    if allowed is None:
        return None  # an unknown architecture: loading says so
    for name, value in kwargs.items():
        if name not in allowed:
            return f"its architecture argument {name!r} is not one of {architecture}'s ({', '.join(allowed)})"
        low, high = allowed[name]
        values = value if name == "widths" else [value]
        if name == "widths" and not (isinstance(value, list) and 1 <= len(value) <= MAX_BRANCHES):
            return f"its widths {value!r} are not a list of 1 to {MAX_BRANCHES} branch widths"
        if not all(type(v) is int and low <= v <= high for v in values):
            bounds = str(low) if low == high else f"a whole number from {low} to {high}"
            return f"its architecture argument {name} {value!r} is not {bounds}"
    return None


def _is_tensor_entry(entry: Any) -> bool:
    """Whether ``entry`` is a safetensors header entry with integer ``data_offsets`` (begin, end)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    return isinstance(offsets, list) and len(offsets) == 2 and all(type(offset) is int for offset in offsets)


def _is_number(value: Any) -> bool:
    """A finite int or float, not a bool (JSON's Infinity and NaN are not numbers of pixels or thresholds)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metadata_problem(metadata: dict[str, Any]) -> str | None:
    """What is wrong with the types or ranges of ``metadata`` (a hand-edited file), if anything:
    caught here, such values would fail later, far from the file, with a bare TypeError."""
    if not isinstance(metadata["architecture"], str):
        return f"its architecture {metadata['architecture']!r} is not a name"
    if not isinstance(metadata["kwargs"], dict):
        return f"its architecture arguments {metadata['kwargs']!r} are not a mapping of names to values"
    problem = _kwargs_problem(metadata["architecture"], metadata["kwargs"])
    if problem is not None:
        return problem
    try:  # the post-processing settings it calibrates: checked as the API checks them
        check_settings(**{key: metadata[key] for key in FILE_SETTINGS if key in metadata})
    except ValueError as error:
        return f"its {error}"
    estimate = metadata.get("estimate", {})
    if not isinstance(estimate, dict):
        return f"its estimate settings {estimate!r} are not a mapping"
    try:
        check_settings(**{key: estimate[key] for key in ESTIMATE_SETTINGS if key in estimate})
    except ValueError as error:
        return f"its estimate's {error}"
    normalization = metadata.get("normalization", {})
    percentiles = normalization.get("percentiles", (1.0, 99.8)) if isinstance(normalization, dict) else None
    if not (
        isinstance(percentiles, (list, tuple)) and len(percentiles) == 2 and all(map(_is_number, percentiles))
        and 0 <= percentiles[0] < percentiles[1] <= 100
    ):
        return f"its normalization percentiles {percentiles!r} are not two increasing numbers in [0, 100]"
    log_gain = normalization.get("log_gain", 0.0)
    if not (_is_number(log_gain) and 0 <= log_gain < 1e6):
        return f"its normalization log_gain {log_gain!r} is not a number >= 0"
    diameter = metadata.get("diameter")
    if diameter is not None and not (_is_number(diameter) and 1 <= diameter <= 1000):
        return f"its nucleus diameter {diameter!r} is not a number of pixels between 1 and 1000"
    return _size_model_problem(metadata.get("size_model"))


def _size_model_problem(size_model: Any) -> str | None:
    """What is wrong with a file's ``size_model`` (see :func:`~napari_nucleiseg.scale.size_model_estimate`)."""
    from .scale import SIZE_FEATURES

    if size_model is None:
        return None
    lengths = {"mean": len(SIZE_FEATURES), "scale": len(SIZE_FEATURES),
               "gate": len(SIZE_FEATURES) + 1, "correction": len(SIZE_FEATURES) + 1}
    if not (isinstance(size_model, dict) and size_model.get("kind") == "rung-mixture"
            and size_model.get("features") == list(SIZE_FEATURES)
            and all(isinstance(size_model.get(key), list) and len(size_model[key]) == length
                    and all(_is_number(value) and math.isfinite(value) for value in size_model[key])
                    for key, length in lengths.items())
            and all(value > 0 for value in size_model["scale"])
            and _is_number(size_model.get("min_colour")) and 0 <= size_model["min_colour"] <= 1):
        return ("its size_model is not a rung-mixture over this version's features "
                f"({', '.join(SIZE_FEATURES)}) with finite numbers and a min_colour between 0 and 1")
    return None


def save_weights(path: str | Path, network: Any, metadata: dict[str, Any], *, half: bool = True) -> Path:
    """Write ``network``'s state dict and ``metadata`` to ``path`` (float16 unless ``half=False``).

    ``metadata`` must hold ``architecture`` and ``kwargs``; format fields and
    the package version are added.
    """
    import torch
    from safetensors.torch import save_file

    from . import __version__

    path = Path(path)
    full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__}
    full.update(metadata)
    for key in ("architecture", "kwargs"):
        if key not in full:
            raise ValueError(f"metadata needs {key!r}")
    tensors = {}
    for key, tensor in network.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        tensors[key] = tensor.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(full)})
    return path


def load_weights(source: str | Path) -> NucleiModel:
    """Load a model by bundled name (``"unet"``, ``"unetpp"``, ``"hrnet"``) or from a weights file.

    The network is returned in eval mode with float32 parameters.

    Raises
    ------
    WeightsError
        Naming the file and what is wrong: missing, empty, truncated, not ours,
        an unknown architecture, or tensors that do not fit the architecture.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import build_model

    path = bundled_weights_path(str(source)) if str(source) in BUNDLED_MODELS else Path(source)
    metadata = read_metadata(path)
    try:
        network = build_model(metadata["architecture"], **metadata["kwargs"])
    except ValueError as error:
        raise WeightsError(f"{path.name}: {error}") from None
    except (TypeError, RuntimeError, MemoryError) as error:  # e.g. negative or absurd layer sizes
        raise WeightsError(
            f"{path.name}: a {metadata['architecture']!r} model cannot be built from its arguments "
            f"{metadata['kwargs']} ({' '.join(str(error).split())[:200]})."
        ) from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{path.name}: the tensors cannot be read ({error}).") from None
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            details.append(f"{len(wrong_shape)} of the wrong shape (e.g. {wrong_shape[0]})")
        raise WeightsError(
            f"{path.name}: the tensors do not match a {metadata['architecture']!r} model: " + ", ".join(details) + "."
        )
    state = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    network.load_state_dict(state)
    network.eval()
    if "heads" in metadata:
        available = len(getattr(network, "heads", ()))
        heads = metadata["heads"]
        if available < 2:
            raise WeightsError(f"{path.name}: it names heads {heads!r} to average, but a "
                               f"{metadata['architecture']!r} model has a single output.")
        if not (isinstance(heads, list) and heads and len(set(heads)) == len(heads)
                and all(type(h) is int and 0 <= h < available for h in heads)):
            raise WeightsError(f"{path.name}: its heads {heads!r} are not distinct indices of the model's "
                               f"{available} output heads (0 to {available - 1}).")
        network.inference_heads = tuple(heads)
    if not all(torch.isfinite(p).all() for p in network.parameters()):
        raise WeightsError(f"{path.name}: the weights hold NaN or infinite values.")
    name = metadata.get("name") or path.stem
    return NucleiModel(network=network, metadata=metadata, path=path, name=name)


#: The kinds of image the bundled models were scored on (the sets of weights/evaluation.json): in the
#: user's words, and the set.
SCORED_KINDS = {
    "val": ("fluorescence", "DSB2018 val: mostly fluorescence, some brightfield and tissue"),
    "monuseg_test": ("H&E tissue", "MoNuSeg test"),
    "consep_test": ("H&E tiles", "CoNSeP test"),
    "val_x0.25": ("very small nuclei", "DSB2018 val at a quarter of its size"),
    "val_x3": ("large nuclei", "DSB2018 val at three times its size"),
}
#: How fast each bundled architecture is beside the others, in words: the order of every size of
#: README.md's speed table (benchmarks/results/inference.json, which the package does not carry;
#: tests/test_weights.py checks the words against it).
SPEEDS = {"unet": "the fastest of the three", "hrnet": "slower than UNet, faster than UNet++",
          "unetpp": "the slowest of the three"}
#: The scores a weights file records, as the tooltip names them.
SCORE_NAMES = {"dsb_score": "DSB2018 score", "mean_iou": "mean IoU", "foreground_iou": "foreground IoU",
               "dice": "Dice", "f1_iou50": "F1"}
#: Tooltips do not wrap plain text: longer lines are wrapped at this many characters.
TOOLTIP_WIDTH = 100


def bundled_evaluation() -> dict[str, Any]:
    """What ``weights/evaluation.json`` measured of the bundled models ({} when it is not installed)."""
    try:
        evaluation = json.loads((weights_dir() / "evaluation.json").read_text())
    except (OSError, ValueError):
        return {}
    return evaluation if isinstance(evaluation, dict) else {}


def describe_weights(metadata: dict[str, Any], evaluation: dict[str, Any] | None = None) -> str:
    """A tooltip for a weights file, in plain words: for a bundled model (given ``evaluation``, what
    :func:`bundled_evaluation` reads), what it is good at, its speed and its scores on each kind of image;
    for another file, its architecture and the scores it records. Then what it was trained on, its
    settings and its licence."""
    name = metadata.get("name")
    models = (evaluation or {}).get("models") or {}
    if name in SPEEDS and name in models:
        lines = _bundled_summary(name, models, (evaluation or {}).get("sets") or {})
    else:
        lines = [f"Architecture: {metadata.get('architecture', '?')}"]
        for source, scores in _score_groups(metadata.get("metrics") or {}):
            shown = ", ".join(f"{_score_name(key)} {value:.2f}" for key, value in scores.items())
            lines.append(f"Validation ({source.replace('_', ' ')}): {shown}")
    training = metadata.get("training") or {}
    if training.get("data"):  # without the folders it was read from
        lines.append(f"Trained on: {re.sub(r' [(][^()]*/[^()]*[)]', '', str(training['data']))}")
    if training.get("epochs") and name not in models:
        lines.append(f"Training: {training['epochs']} epochs, {training.get('minutes', '?')} min")
    if len(lines) == 1:
        lines.append("No training information in this file.")
    lines.append(f"Threshold {float(metadata.get('threshold', 0.5)):.2f}, min size {metadata.get('min_size', '?')} px")
    if metadata.get("diameter"):
        lines.append(f"Trained at a nucleus diameter of {float(metadata['diameter']):g} px (images are resized to it)")
    if metadata.get("licence"):
        lines.append(f"Licence: {metadata['licence']}")
    return "\n".join(textwrap.fill(line, TOOLTIP_WIDTH, subsequent_indent="    ") for line in lines)


def _bundled_summary(name: str, models: dict[str, Any], sets: dict[str, Any]) -> list[str]:
    """The bundled model ``name`` beside the others (``models``: weights/evaluation.json's), in words:
    its speed, where it is the most accurate, and its scores on each kind of image (``sets``)."""
    def scores(model: str, kind: str) -> dict[str, float]:
        return ((models.get(model) or {}).get("sets") or {}).get(kind) or {}

    kinds = [kind for kind in SCORED_KINDS if all("dsb_score" in scores(model, kind) for model in models)]
    best = {kind: max(models, key=lambda model: scores(model, kind)["dsb_score"]) for kind in kinds}
    best_on = [SCORED_KINDS[kind][0] for kind in kinds if best[kind] == name]
    behind = max((scores(best[kind], kind)["dsb_score"] - scores(name, kind)["dsb_score"] for kind in kinds
                  if best[kind] != name), default=0.0)
    behind = math.ceil(behind * 100) / 100  # "at most 0.02 below": rounded up, not down
    default = " (the default)" if name == DEFAULT_MODEL else ""
    lines = [f"{MODEL_TITLES[name]}{default}: {SPEEDS[name]}."]
    if kinds and len(best_on) == len(kinds):
        lines.append("The most accurate of the bundled models on every kind of image below.")
    elif best_on:
        lines.append(f"The most accurate of the bundled models on {_and(best_on)}; "
                     f"at most {behind:.2f} below the best on the others.")
    elif kinds:
        lines.append(f"At most {behind:.2f} below the best of the bundled models on each kind of image below.")
    if kinds:
        lines.append("Scores on images it was not trained on, with Auto diameter (score: DSB2018 score, 0 to 1, "
                     "higher is better; F1: share of nuclei matched, at half overlap; count: the median error "
                     "of the count per image):")
    for kind in kinds:
        words, source = SCORED_KINDS[kind]
        measured = scores(name, kind)
        images = (sets.get(kind) or {}).get("n_images")
        shown = [f"score {measured['dsb_score']:.2f}"]
        if "f1_iou50" in measured:
            shown.append(f"F1 {measured['f1_iou50']:.2f}")
        if "count_error_median" in measured:
            shown.append(f"count off by {measured['count_error_median']:.0%}")
        lines.append(f"- {words[0].upper()}{words[1:]} ({source}{f', {images} images' if images else ''}): "
                     + ", ".join(shown))
    return lines


def _and(words: list[str]) -> str:
    """``["a", "b", "c"]`` as "a, b and c"."""
    return " and ".join(filter(None, [", ".join(words[:-1]), words[-1]]))


def _score_name(key: str) -> str:
    """A score's name in a weights file (``dsb_score_monuseg``), as the tooltip says it (DSB2018 score on monuseg)."""
    for prefix, words in SCORE_NAMES.items():
        if key == prefix:
            return words
        if key.startswith(f"{prefix}_"):
            return f"{words} on {key.removeprefix(prefix + '_').replace('_', ' ')}"
    return key.replace("_", " ")


def _score_groups(metrics: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Numeric scores of ``metrics``, grouped by the dict they sit in (one level of nesting)."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    groups = [("scores", flat)] if flat else []
    for key, value in metrics.items():
        if isinstance(value, dict):
            scores = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if scores:
                groups.append((key, scores))
    return groups
