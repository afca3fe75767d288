"""Write a weights file as a BioImage.IO model package (spec 0.5), for deepImageJ, QuPath, ilastik and
bioimageio.core.

The package holds the network twice, as TorchScript (what deepImageJ and QuPath run) and as a PyTorch
state dict with the architecture's own source; the input's percentile normalisation as preprocessing;
the 2-channel probability output; test tensors; a cover; and a README that says what the spec cannot
express (the logarithmic compression, which the exported network therefore applies itself; resizing to
the nucleus diameter; our post-processing) and how the model was trained and validated.

bioimageio.spec is imported only when a package is written: it is the optional extra
``napari-nucleiseg[bioimageio]``. Torch is imported too (the network is traced).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .weights import BUNDLED_MODELS, MODEL_TITLES, NucleiModel

#: The input's height and width: any multiple of SIZE_STEP from MIN_SIDE up. A multiple of 32 is a
#: multiple of every bundled network's downsampling (8 or 16), so the network never pads its input
#: itself (the TorchScript trace records no padding), and of inference.PAD_MULTIPLE.
SIZE_STEP = 32
MIN_SIDE = 96
#: No halo is declared: bioimageio.core pads a whole image by the halo (mirrored) before predicting,
#: which changes the probabilities near its edges (by up to 0.8 for a halo of 32 px), so the package
#: would no longer give napari-nucleiseg's. The README says how to tile instead.
#: The test image: the top left TEST_SIDE x TEST_SIDE pixels of this bundled sample.
TEST_SAMPLE = "fluorescence"
TEST_SIDE = 256
#: The spec's tolerance for reproducing the test output (its default); the exported network matches
#: our inference far closer (float32 throughout).
TOLERANCE = 1e-3
#: The network the package's source defines, and the file it lies in.
CALLABLE = "NucleiSegNetwork"
#: The licence phrases a weights file's ``licence`` may hold, most restrictive first, with their SPDX
#: identifiers: a package names one licence, that of the weights (the most restrictive of their data).
LICENCE_PHRASES = (
    ("CC BY-NC-SA 4.0", "CC-BY-NC-SA-4.0"),
    ("CC BY-NC 4.0", "CC-BY-NC-4.0"),
    ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
    ("CC BY 4.0", "CC-BY-4.0"),
    ("CC0", "CC0-1.0"),
)
#: Papers of the architectures and data sets, cited by DOI (a URL would be looked up online when the
#: package is validated).
ARCHITECTURE_CITATIONS = {
    "unet": ("Ronneberger, Fischer and Brox: U-Net: Convolutional networks for biomedical image segmentation. "
             "MICCAI 2015", "10.1007/978-3-319-24574-4_28"),
    "unetpp": ("Zhou, Rahman Siddiquee, Tajbakhsh and Liang: UNet++: A nested U-Net architecture for medical "
               "image segmentation. DLMIA 2018", "10.1007/978-3-030-00889-5_1"),
    "hrnet": ("Wang et al.: Deep high-resolution representation learning for visual recognition. IEEE TPAMI 2020",
              "10.1109/TPAMI.2020.2983686"),
}
DATA_CITATIONS = {
    "DSB2018": ("Caicedo et al.: Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. "
                "Nature Methods 16, 2019 (BBBC038, CC0)", "10.1038/s41592-019-0612-7"),
    "monuseg": ("Kumar et al.: A dataset and a technique for generalized nuclear segmentation for computational "
                "pathology. IEEE TMI 2017 (MoNuSeg, CC BY-NC-SA 4.0)", "10.1109/TMI.2017.2677499"),
    "monuseg_challenge": ("Kumar et al.: A multi-organ nucleus segmentation challenge. IEEE TMI 2020",
                          "10.1109/TMI.2019.2947628"),
    "consep": ("Graham et al.: HoVer-Net: Simultaneous segmentation and classification of nuclei in multi-tissue "
               "histology images. Medical Image Analysis 58, 2019 (CoNSeP)", "10.1016/j.media.2019.101563"),
}
INSTALL_HINT = "pip install 'napari-nucleiseg[bioimageio]'"


class ExportError(ValueError):
    """A model or an output path that cannot be exported to; one sentence for the user, nothing written."""


def export_bioimageio(model: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                      licence: str | None = None) -> Path:
    """Write the BioImage.IO model package (a ``.zip``) of ``model``.

    Parameters
    ----------
    model : str or path
        A bundled model (``"unet"``, ``"unetpp"``, ``"hrnet"``) or a weights file (e.g. a fine-tuned one).
    out : path
        The package to write; it must end in ``.zip``. Written under a temporary name and renamed into
        place, so a failed export leaves nothing (and an earlier file as it was).
    overwrite : bool
        Replace ``out`` if it exists (otherwise that is an error).
    licence : str, optional
        The SPDX identifier of the weights' licence; by default read from the file's ``licence``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ExportError
        For an unknown model, an existing ``out`` without ``overwrite``, a missing extra, a licence the
        spec cannot name.
    WeightsError
        For a file that is not a usable weights file.
    """
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ExportError(f"{out.name}: a BioImage.IO package is a .zip file; give --out a name ending in .zip.")
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give --out a file name ending in .zip.")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; give --overwrite to replace it.")
    source = _weights_source(model)
    spdx = _licence(source, licence)  # checked before torch and the network are loaded
    try:
        from bioimageio.spec.model.v0_5 import LicenseId
    except ImportError:
        raise ExportError(f"exporting needs bioimageio.spec, which is not installed: {INSTALL_HINT}.") from None
    try:
        LicenseId(spdx)
    except ValueError:
        raise ExportError(f"{spdx!r} is not a licence identifier the BioImage.IO spec knows (SPDX, e.g. "
                          "CC-BY-4.0 or MIT).") from None

    from .weights import load_weights

    loaded = load_weights(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial.zip")
    try:
        with tempfile.TemporaryDirectory(prefix="nucleiseg-bioimageio-") as folder:
            description = _describe(loaded, spdx, Path(folder))
            _save_package(description, partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _weights_source(model: str | os.PathLike) -> str | Path:
    """``model`` as :func:`~napari_nucleiseg.weights.load_weights` takes it, or a sentence saying what it is not."""
    if str(model) in BUNDLED_MODELS:
        return str(model)
    path = Path(model)
    if not path.is_file():
        from .api import _users_model

        mine = _users_model(str(model))  # one of the user's models by its name, as segment and finetune take it (QA)
        if mine is not None:
            return mine
        if path.suffix or os.sep in str(model) or path.exists():
            raise ExportError(f"{model}: no such weights file.")
        raise ExportError(f"unknown model {str(model)!r}; give one of {', '.join(BUNDLED_MODELS)}, the name of one "
                          "of your models or a weights file.")
    return path


def _licence(source: str | Path, given: str | None) -> str:
    """The SPDX identifier of the weights' licence: ``given``, or the one the file's ``licence`` names."""
    from .weights import bundled_weights_path, read_metadata

    if given is not None:
        return given
    path = bundled_weights_path(source) if isinstance(source, str) else source
    text = str(read_metadata(path).get("licence") or "")
    for phrase, spdx in LICENCE_PHRASES:
        if phrase in text:
            return spdx
    raise ExportError(f"{path.name} names no licence the BioImage.IO spec knows"
                      f"{f' ({text!r})' if text else ''}; give the weights' licence with --licence "
                      "(an SPDX identifier, e.g. CC-BY-4.0).")


def network_source(architecture: str) -> str:
    """One self-contained Python file that defines :data:`CALLABLE` for ``architecture``: the package's
    own model code (its shared blocks, then the architecture's module, their relative imports dropped),
    and the exported network around it: the logarithmic compression of the input, the network, the sigmoid."""
    from .models import ARCHITECTURES

    network_class = ARCHITECTURES[architecture]
    module = sys.modules[network_class.__module__]
    own = inspect.getsource(module)
    parts = []
    for imported in re.findall(r"^from \.(\w+) import ", own, flags=re.MULTILINE):
        parts.append(inspect.getsource(sys.modules[f"{module.__package__}.{imported}"]))
    parts.append(own)
    body = []
    for text in parts:
        for line in text.splitlines():
            if line.startswith("from __future__") or line.startswith("from ."):
                if line.rstrip().endswith("("):
                    raise RuntimeError(f"a relative import over several lines cannot be inlined: {line}")
                continue
            body.append(line)
    from . import __version__

    header = (f'"""napari-nucleiseg {__version__}: the {MODEL_TITLES.get(architecture, architecture)} network '
              f"({network_class.__name__}) as exported to BioImage.IO.\n\nThe package's own model code, "
              f"in one file, and {CALLABLE}, the network as the package runs it.\n\"\"\"\n\n"
              "from __future__ import annotations\n\nimport math\n\n")
    return header + "\n".join(body) + "\n\n" + _WRAPPER.replace("NETWORK_CLASS", network_class.__name__)


_WRAPPER = '''
class NucleiSegNetwork(nn.Module):
    """``(B, 3, H, W)`` normalised float32 in, ``(B, 2, H, W)`` nucleus and boundary probabilities out.

    The input is the image after the percentile normalisation (``scale_range`` and ``clip`` in the
    package's preprocessing). The logarithmic compression that napari-nucleiseg applies after them
    (``sign(x) log(1 + g|x|) / log(1 + g)``, ``g = log_gain``) has no preprocessing step in the spec,
    so it is done here; the sigmoid turns the logits into probabilities.
    """

    def __init__(self, *, log_gain: float = 0.0, heads: list[int] | None = None, **kwargs) -> None:
        super().__init__()
        self.log_gain = float(log_gain)
        self.network = NETWORK_CLASS(**kwargs)
        if heads is not None:  # UNet++: the output heads the weights file averages
            self.network.inference_heads = tuple(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.log_gain > 0:
            x = torch.sign(x) * torch.log1p(self.log_gain * torch.abs(x)) / math.log1p(self.log_gain)
        return torch.sigmoid(self.network(x))
'''


def network_kwargs(model: NucleiModel) -> dict[str, Any]:
    """The keyword arguments of :data:`CALLABLE` for ``model``."""
    kwargs = dict(model.metadata["kwargs"])
    kwargs["log_gain"] = model.log_gain
    if "heads" in model.metadata:
        kwargs["heads"] = list(model.metadata["heads"])
    return kwargs


def build_network(source_file: Path, model: NucleiModel) -> Any:
    """The exported network, built from ``source_file`` (:func:`network_source`) with ``model``'s weights."""
    digest = hashlib.sha256(source_file.read_bytes()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(f"nucleiseg_export_{digest}", source_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = getattr(module, CALLABLE)(**network_kwargs(model))
    network.network.load_state_dict(model.network.state_dict())
    return network.eval()


def sample_input() -> np.ndarray:
    """The package's test input: ``(1, 3, TEST_SIDE, TEST_SIDE)`` float32, raw values of a bundled sample."""
    from ._sample_data import read_sample
    from .preprocess import as_rgb

    rgb = as_rgb(read_sample(TEST_SAMPLE))[:TEST_SIDE, :TEST_SIDE]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)


def preprocess(image: np.ndarray, model: NucleiModel) -> np.ndarray:
    """What the package's preprocessing makes of ``image`` ``(1, 3, H, W)``: napari-nucleiseg's
    normalisation without its logarithmic compression (which the network applies)."""
    from .preprocess import Normalization

    rgb = image[0].transpose(1, 2, 0)
    normalized = Normalization.of(rgb, model.percentiles, log_gain=0.0)(rgb)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1)[None])


def _describe(model: NucleiModel, spdx: str, folder: Path) -> Any:
    """Write the package's files into ``folder`` and return its ModelDescr."""
    import torch
    from bioimageio.spec.model import v0_5 as spec

    from . import __version__
    from ._bioimageio_readme import readme
    from .inference import predict_normalized
    from .preprocess import Normalization

    architecture = model.metadata["architecture"]
    title = MODEL_TITLES.get(architecture, architecture)
    source_file = folder / f"nucleiseg_{architecture}.py"
    source_file.write_text(network_source(architecture))
    network = build_network(source_file, model)
    state_file = folder / "weights.pt"
    torch.save(network.state_dict(), state_file)

    image = sample_input()
    normalized = torch.from_numpy(preprocess(image, model))
    with torch.inference_mode():
        traced = _trace(network, normalized)
        output = traced(normalized).numpy()
    torchscript_file = folder / "weights_torchscript.pt"
    traced.save(str(torchscript_file))
    # The network the package runs must be napari-nucleiseg's own inference, within the spec's tolerance.
    rgb = image[0].transpose(1, 2, 0)
    ours = predict_normalized(Normalization.of(rgb, model.percentiles, model.log_gain)(rgb), model.network)
    difference = float(np.abs(output[0] - ours).max())
    if difference > TOLERANCE / 10:
        raise RuntimeError(f"the exported network differs from napari-nucleiseg's inference by {difference:.2g}")
    np.save(folder / "test_input.npy", image)
    np.save(folder / "test_output.npy", output)
    _write_samples(folder, image[0], output[0])
    _write_cover(folder / "cover.png", normalized.numpy()[0], output[0])
    (folder / "README.md").write_text(readme(model, spdx))

    image_id, output_id = spec.TensorId("image"), spec.TensorId("probabilities")
    size = spec.ParameterizedSize(min=MIN_SIDE, step=SIZE_STEP)
    percentiles = model.percentiles
    inputs = spec.InputTensorDescr(
        id=image_id,
        description="2-D image as RGB, any value range (repeat a gray image into the three channels)",
        axes=_axes(spec, ("red", "green", "blue"), lambda axis: spec.SpaceInputAxis(id=axis, size=size)),
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=spec.FileDescr(source=folder / "sample_input.png"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            # napari-nucleiseg's percentiles are taken over all channels together (colour is kept).
            spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
                axes=[spec.AxisId(a) for a in ("channel", "y", "x")],
                min_percentile=percentiles[0], max_percentile=percentiles[1])),
            # preprocess.Normalization: outliers kept from dominating the activations.
            spec.ClipDescr(kwargs=spec.ClipKwargs(min=-1.0, max=3.0)),
        ],
    )
    outputs = spec.OutputTensorDescr(
        id=output_id,
        description="nucleus probability (channel 0) and nucleus-boundary probability (channel 1)",
        axes=_axes(spec, ("nucleus", "boundary"), lambda axis: spec.SpaceOutputAxis(
            id=axis, size=spec.SizeReference(tensor_id=image_id, axis_id=axis))),
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=spec.FileDescr(source=folder / "sample_output.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    pytorch_version = spec.Version(torch.__version__.split("+")[0])
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=state_file, pytorch_version=pytorch_version,
            architecture=spec.ArchitectureFromFileDescr(source=source_file, callable=spec.Identifier(CALLABLE),
                                                        kwargs=network_kwargs(model))),
        torchscript=spec.TorchscriptWeightsDescr(source=torchscript_file, pytorch_version=pytorch_version,
                                                 parent="pytorch_state_dict"),
    )
    settings = model.settings
    return spec.ModelDescr(
        name=_package_name(model, title),
        description=(f"{title} from napari-nucleiseg: nucleus and nucleus-boundary probabilities of 2-D microscopy "
                     "images (fluorescence, brightfield, H&E); threshold and split them into nuclei as the "
                     "README says.")[:1024],
        authors=[spec.Author(name="napari-nucleiseg developers")],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in _citations(model)],
        license=spec.LicenseId(spdx),
        documentation=spec.FileDescr(source=folder / "README.md"),
        covers=[spec.FileDescr(source=folder / "cover.png")],
        tags=["nuclei", "segmentation", "instance-segmentation", "2d", "pytorch", "fluorescence-light-microscopy",
              "brightfield", "histopathology", architecture, "napari-nucleiseg"],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        config=spec.Config(**{"napari-nucleiseg": {
            "package_version": __version__, "model": model.name, "weights_sha256": _sha256(model.path),
            "threshold": settings.threshold, "boundary_threshold": settings.boundary_threshold,
            "min_size": settings.min_size, "neck_ratio": settings.neck_ratio,
            "seed_min_size": settings.seed_min_size, "diameter": model.diameter, "log_gain": model.log_gain,
        }}),
    )


def _axes(spec: Any, channels: tuple[str, ...], space: Any) -> list[Any]:
    """A tensor's axes: batch, channel (named ``channels``), then y and x, each made by ``space(axis_id)``."""
    return [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(name) for name in channels]),
            *(space(spec.AxisId(axis)) for axis in ("y", "x"))]


def _trace(network: Any, example: Any) -> Any:
    """TorchScript of ``network`` by tracing (UNet++'s dict of nodes cannot be scripted). The trace is
    valid for every input the package allows: sizes that are multiples of :data:`SIZE_STEP`, for which
    no branch of the network depends on the size (tests/test_bioimageio.py runs it at several)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice (it still works in 2.13)
        return torch.jit.trace(network, example, check_trace=False)


def _write_cover(path: Path, normalized: np.ndarray, probabilities: np.ndarray) -> None:
    """A 2:1 cover: the normalised test image, and beside it the nuclei in green, their boundaries in magenta."""
    import imageio.v3 as iio

    gray = np.clip(normalized.mean(axis=0), 0, 1)
    nucleus, boundary = probabilities
    overlay = np.stack([np.maximum(gray * 0.4, boundary), np.maximum(gray * 0.4, nucleus * (1 - boundary)),
                        np.maximum(gray * 0.4, boundary)], axis=-1)
    cover = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), overlay], axis=1)
    iio.imwrite(path, (cover * 255).round().astype(np.uint8))


def _write_samples(folder: Path, image: np.ndarray, probabilities: np.ndarray) -> None:
    """The sample tensors, for people to look at: the test input as an RGB picture (the bundled sample is
    8-bit), the test output as a float32 TIFF of its two channels."""
    import imageio.v3 as iio
    import tifffile

    iio.imwrite(folder / "sample_input.png", np.clip(image, 0, 255).round().astype(np.uint8).transpose(1, 2, 0))
    tifffile.imwrite(folder / "sample_output.tif", probabilities.astype(np.float32))


def _package_name(model: NucleiModel, title: str) -> str:
    """The spec's name: letters, digits, spaces and ``_+-()``, 5 to 64 characters."""
    name = f"napari-nucleiseg {title}"
    if model.name not in BUNDLED_MODELS:
        name = f"{name} ({re.sub(r'[^A-Za-z0-9_+ -]+', '-', model.name)})"
    return name[:64]


def _citations(model: NucleiModel) -> list[tuple[str, str]]:
    """(text, DOI) of the architecture's paper and of each data set the training data name."""
    citations = [ARCHITECTURE_CITATIONS[model.metadata["architecture"]]]
    data = json.dumps(model.metadata.get("training", {})).lower()
    for key, keys in (("DSB2018", ("dsb2018",)), ("monuseg", ("monuseg",)), ("monuseg_challenge", ("monuseg",)),
                      ("consep", ("consep",))):
        if any(word in data for word in keys):
            citations.append(DATA_CITATIONS[key])
    return citations


def _sha256(path: Path | None) -> str | None:
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _save_package(description: Any, path: Path) -> None:
    """Validate ``description`` and write it, with its files, to the zip ``path``."""
    from bioimageio.spec import save_bioimageio_package

    save_bioimageio_package(description, output_path=path)
    _readable_by_all(path)


def _readable_by_all(path: Path) -> None:
    """Give every file of the zip ``path`` the permissions of a file one writes (rw-r--r--).

    bioimageio.spec writes its entries with :meth:`zipfile.ZipFile.writestr` and ``ZipFile.open(name, "w")``,
    which record 0600: unpacked on a shared server, the model's files could be read by their owner alone.
    """
    import shutil
    import zipfile

    rewritten = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
            for entry in source.infolist():
                entry.external_attr = (0o644 << 16) | (entry.external_attr & 0xFFFF)
                with source.open(entry) as data, target.open(entry, "w") as copy:
                    shutil.copyfileobj(data, copy, 1 << 20)
        os.replace(rewritten, path)
    finally:
        rewritten.unlink(missing_ok=True)
