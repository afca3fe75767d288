"""The Python API: segment the nuclei of one image in one call.

Importing this module is cheap: torch, scikit-image and pandas are imported
when :func:`segment` first runs, so ``import napari_nucleiseg`` stays fast.

>>> from napari_nucleiseg import segment
>>> result = segment(image, model="hrnet")                   # doctest: +SKIP
>>> result.count, result.labels.shape, result.table.columns   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .channels import channels_last, take_channel
from .errors import ImageError
from .settings import PostprocessSettings
from .weights import DEFAULT_MODEL

if TYPE_CHECKING:
    import pandas as pd

    from .pipeline import PlanesResult
    from .weights import NucleiModel

ModelSource = Union[str, os.PathLike, "NucleiModel"]

#: Weights files kept loaded at once; a model of the bundled size holds a few MB.
MODEL_CACHE_SIZE = 8


@dataclass(frozen=True)
class SegmentationResult:
    """What :func:`segment` found in one image, and the settings it used.

    Attributes
    ----------
    labels : ndarray
        ``(H, W)`` instance labels: 0 background, nuclei 1..N; uint16, or uint32
        above 65,535 nuclei.
    probabilities : ndarray
        ``(2, H, W)`` float32 in [0, 1]: nucleus and nucleus-boundary probability.
        Re-threshold them with :func:`napari_nucleiseg.postprocess.labels_from_probabilities`
        without running the network again.
    table : pandas.DataFrame
        One row per nucleus; columns of :func:`napari_nucleiseg.postprocess.measure_nuclei`.
    count : int
        Number of nuclei (N).
    model_name : str
        Name of the model that produced the probabilities.
    threshold, boundary_threshold : float
        Nucleus and boundary probability thresholds used.
    min_size : int
        Smallest nucleus kept, in pixels.
    split : bool
        Whether touching nuclei were separated.
    neck_ratio : float
        With ``split``, how deep a neck had to be to cut an object by shape (0: none was).
    seed_min_size : int
        With ``split``, the fewest pixels a seed needed to seed a nucleus (0: any).
    exclude_border : bool
        Whether the nuclei touching the image's edge were left out (of the labels, the
        table and the count).
    link_axis : int or None
        Of a stack (:func:`result_from_planes`), the axis along which its planes' nuclei were
        linked into 3-D nuclei; None for an image, or planes kept apart.
    diameter : float or None
        The image's median nucleus diameter (pixels) the network was run for: the one
        given, or the estimate; None when the model records no diameter of its own, or
        no estimate could be made (the image was then segmented as it is).
    diameter_estimated : bool
        Whether ``diameter`` was estimated (``segment(diameter=None)``) rather than given.
    scale : float
        The factor the image was resized by for the network (1: not resized); the labels,
        the probabilities and the table are always in the image's own pixels.
    augmented : bool
        Whether the probabilities are the mean over the image flipped four ways
        (``segment(augment=True)``).
    brown_nuclei : bool
        Whether brown (DAB) was read as hematoxylin (``segment(brown_nuclei=True)``).
    noise_smoothing : float
        The sigma (pixels) of the Gaussian a noisy gray image was smoothed by before the Auto diameter and
        the network read it (:func:`~napari_nucleiseg.scale.noise_smoothing`); 0: not smoothed. The table's
        intensities are the image's own.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    table: pd.DataFrame
    count: int
    model_name: str
    threshold: float
    boundary_threshold: float
    min_size: int
    split: bool
    neck_ratio: float = 0.0
    seed_min_size: int = 0
    diameter: float | None = None
    diameter_estimated: bool = False
    scale: float = 1.0
    exclude_border: bool = False
    link_axis: int | None = None
    augmented: bool = False
    brown_nuclei: bool = False
    noise_smoothing: float = 0.0

    @property
    def settings(self) -> PostprocessSettings:
        """The post-processing settings the labels were made with."""
        return PostprocessSettings(self.threshold, self.boundary_threshold, self.min_size, self.split,
                                   self.neck_ratio, self.seed_min_size, self.exclude_border, self.link_axis)


def segment(
    image: np.ndarray,
    model: ModelSource = DEFAULT_MODEL,
    *,
    threshold: float | None = None,
    min_size: int | None = None,
    split: bool = True,
    boundary_threshold: float | None = None,
    neck_ratio: float | None = None,
    seed_min_size: int | None = None,
    exclude_border: bool = False,
    diameter: float | None = None,
    augment: bool = False,
    brown_nuclei: bool = False,
    channel: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> SegmentationResult:
    """Find the nuclei in a 2-D image.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA; 8- or 16-bit
        integers or floats, any size (large images are processed in tiles). One channel
        shown in colour (DAPI saved in blue) is read as gray, and an overlay of fluorescence
        channels with the nuclear stain in blue as its blue channel
        (:func:`~napari_nucleiseg.preprocess.overlay_nuclear_channel`; ``channel=0`` or ``1``
        segments red or green instead).
    model : str, path or NucleiModel
        A bundled model (``"unet"``, ``"unetpp"``, ``"hrnet"``), the path of a
        weights file, or a model from :func:`load_model`. Files are loaded once
        and kept (see :func:`load_model`).
    threshold : float, optional
        Nucleus probability threshold in [0, 1]. Default: the value calibrated
        for the model, stored in its weights file.
    min_size : int, optional
        Nuclei smaller than this many pixels are dropped. Default: the model's.
    split : bool
        Separate touching nuclei along the predicted boundaries.
    boundary_threshold : float, optional
        Boundary probability above which a pixel cannot seed a nucleus when
        splitting. Default: the model's.
    neck_ratio : float, optional
        When splitting, also cut large objects shaped like two nuclei joined by a
        neck at least this deep relative to their thickness
        (:func:`~napari_nucleiseg.postprocess.split_by_shape`); 0 turns it off.
        Default: the model's.
    seed_min_size : int, optional
        When splitting, seeds of fewer pixels seed no nucleus of their own
        (:func:`~napari_nucleiseg.postprocess.labels_from_probabilities`); 0: all do.
        Default: the model's.
    exclude_border : bool
        Leave out the nuclei that touch the edge of the image (they are cut off): they
        are in neither the labels, the table nor the count.
    diameter : float, optional
        The median nucleus diameter in the image, in pixels. The image is resized so that
        its nuclei arrive at the size the network was trained on (the weights file's
        ``diameter``), and the results are brought back to the image's pixels. Default:
        estimated from the image (:func:`~napari_nucleiseg.scale.estimate_diameter`; ``"auto"``
        says the same). A model without a recorded diameter runs on the image as it is.
    augment : bool
        Test-time augmentation: the network sees the image as it is and flipped three ways,
        and the four maps are averaged. Slightly more accurate (DSB2018 val 0.547 -> 0.558
        with session 12's HRNet), four times the network's time.
    brown_nuclei : bool
        For immunohistochemistry whose marker stains nuclei (Ki-67, ER, PR, p53): the brown (DAB) of a
        brightfield picture is read as hematoxylin, so brown nuclei are found as blue ones are (the
        networks learnt nuclei from hematoxylin and miss most brown ones). Leave it off for markers of
        membranes or cytoplasm (HER2, CD3, cytokeratin): their brown would be read as nuclei. Gray,
        fluorescence and H&E images without brown are read as they are.
    channel : int, optional
        Segment this channel (from 0) of a multichannel image alone, as a gray image: the
        last axis of ``(H, W, C)`` (C of 2 to 4, RGB included), else the first axis of
        ``(C, H, W)``. Counts are never summed over channels. Default: the image as it is.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)`` while the network runs.
    cancelled : callable, optional
        Polled between tiles; when it returns True the run stops with
        ``napari_nucleiseg.errors.Cancelled``.

    Returns
    -------
    SegmentationResult
        Labels, probabilities, the per-nucleus table, the count and the settings used.

    Raises
    ------
    napari_nucleiseg.errors.WeightsError
        If the model cannot be found or its weights file is unusable.
    napari_nucleiseg.errors.ImageError
        If the image is not a 2-D gray, RGB or RGBA image.
    ValueError
        For a setting out of range, e.g. a diameter that is not a positive number of pixels.
    napari_nucleiseg.errors.Cancelled
        If ``cancelled()`` returned True.
    """
    from .pipeline import check_switches, run_to_end, segment_planes
    from .preprocess import as_rgb
    from .scale import check_diameter

    nuclei_model = load_model(model)
    if isinstance(image, (str, bytes, os.PathLike)) or image is None:
        as_rgb(image)  # raises the one sentence: a path, or nothing, is no image
    if isinstance(image, (list, tuple)) and len(image) > 1 and all(np.ndim(item) >= 2 for item in image):
        raise ImageError(f"Pass one image, not a {type(image).__name__} of {len(image)}; to segment several, segment "
                         "each: [segment(image) for image in images].")  # (QA: it read as channels)
    if np.ndim(image) == 3 and np.shape(image)[0] == 1 and np.shape(image)[-1] not in (3, 4):
        image = np.asarray(image)[0]  # a stack of one plane (as the command line reads one): that plane
    if channel is not None:
        image = one_channel(image, channel)
    elif np.ndim(image) == 3 and np.shape(image)[-1] not in (1, 3, 4):
        shape = tuple(np.shape(image))
        axis = _channel_axis(shape)
        count = shape[axis]
        if axis == 2 or count <= 4:  # channels (more than 4 first are planes of a stack: as_rgb says so below)
            raise ImageError(f"An image of shape {shape} has {count} channels (or planes); segment one channel at a "
                             f"time: segment(image, channel=N), N from 0 to {count - 1}.")
    if isinstance(diameter, str) and diameter.strip().lower() == "auto":
        diameter = None  # as the command line's --diameter auto
    as_rgb(image)  # the one-sentence ImageError for anything but one 2-D image, before any work
    check_diameter(diameter, np.shape(image))
    check_switches(augment=augment, brown_nuclei=brown_nuclei)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]  # gray with a channel axis
    chosen = {"threshold": threshold, "min_size": min_size, "split": split, "boundary_threshold": boundary_threshold,
              "neck_ratio": neck_ratio, "seed_min_size": seed_min_size, "exclude_border": exclude_border}
    run = segment_planes(image, nuclei_model, chosen, rgb=np.ndim(image) == 3, diameter=diameter, augment=augment,
                         brown_nuclei=brown_nuclei, compact=False, on_progress=progress, cancelled=cancelled)
    return result_from_planes(run_to_end(run), image, model_name=nuclei_model.name)


def one_channel(image: Any, channel: int) -> np.ndarray:
    """Channel ``channel`` of ``image``: of its last axis when that holds channels (2-15 entries beside
    larger rows and columns, or 2-4), else of its first.

    Raises
    ------
    ImageError
        For an image without channels, or a channel it does not have (one sentence).
    """
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise TypeError(f"channel must be a whole number (from 0), not {channel!r}.")
    shape = np.shape(image)
    if len(shape) == 2 and channel == 0:
        return np.asarray(image)  # a gray image is its one channel (as the command line's --channel 0)
    if len(shape) == 2:
        raise ImageError(f"The image is gray: it has one channel (0), not a channel {channel}.")
    if len(shape) != 3:
        raise ImageError(f"An image of shape {tuple(shape)} has no channel axis to take channel {channel} from; "
                         "expected (H, W, C) or (C, H, W).")
    axis = _channel_axis(shape)
    if not 0 <= channel < shape[axis]:
        raise ImageError(f"The image has {shape[axis]} channels (0 to {shape[axis] - 1}), not a channel {channel}.")
    return take_channel(np.asarray(image), axis, channel)


def _channel_axis(shape: tuple[int, ...]) -> int:
    """The channel axis of an image of 3 axes: its last when it holds channels
    (:func:`~napari_nucleiseg.channels.channels_last`, or has 2-4 entries), else its first."""
    return 2 if channels_last(shape) or 2 <= shape[2] <= 4 else 0


def result_from_planes(planes: PlanesResult, image: np.ndarray | None = None, *,
                       model_name: str = "") -> SegmentationResult:
    """The :class:`SegmentationResult` of one image segmented by :func:`~napari_nucleiseg.pipeline.segment_planes`.

    For a stack (the command line's Z or T stacks), labels and probabilities keep its leading axes, and
    the table (:func:`~napari_nucleiseg.tables.nuclei_table`) says each nucleus's plane in ``axis_0``, ...
    With ``settings.link_axis`` (a Z axis), the planes' nuclei were linked along it into 3-D nuclei:
    one label, one row (their volume) and one count each.
    """
    from .postprocess import count_nuclei, measure_nuclei
    from .tables import nuclei_table

    labels, settings = planes.labels, planes.settings
    volume_axis = settings.link_axis if settings.link_axis is not None and settings.link_axis < labels.ndim - 2 \
        else None
    if labels.ndim == 2:
        table = measure_nuclei(labels, image)
    else:
        table = nuclei_table(labels, image, rgb=image is not None and np.ndim(image) > labels.ndim,
                             volume_axis=volume_axis).drop(columns="index")
    return SegmentationResult(
        labels=labels,
        probabilities=planes.probabilities,
        table=table,
        count=count_nuclei(labels),
        model_name=model_name,
        threshold=float(settings.threshold),
        boundary_threshold=float(settings.boundary_threshold),
        min_size=int(settings.min_size),
        split=bool(settings.split),
        neck_ratio=float(settings.neck_ratio),
        seed_min_size=int(settings.seed_min_size),
        exclude_border=bool(settings.exclude_border),
        link_axis=volume_axis,
        diameter=None if planes.diameter is None else float(planes.diameter),
        diameter_estimated=bool(planes.diameter_estimated),
        scale=float(planes.scale),
        augmented=bool(planes.augmented),
        brown_nuclei=bool(planes.brown_nuclei),
        noise_smoothing=float(planes.noise_smoothing),
    )


def result_from_probabilities(
    probabilities: np.ndarray,
    image: np.ndarray | None = None,
    settings: PostprocessSettings | None = None,
    *,
    model_name: str = "",
    diameter: float | None = None,
    diameter_estimated: bool = False,
    scale: float = 1.0,
    augmented: bool = False,
) -> SegmentationResult:
    """Post-process ``(2, H, W)`` probabilities into a :class:`SegmentationResult`.

    The second half of :func:`segment`, for re-thresholding cached probabilities
    without running the network again (with the package's default ``settings`` when
    none are given). ``image`` (``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``) gives the
    table's ``mean_intensity``; without it that column is NaN.
    """
    from .pipeline import PlanesResult, labels_from_stack

    settings = (settings or PostprocessSettings()).validate()
    labels = labels_from_stack(probabilities, settings)
    planes = PlanesResult(probabilities, labels, settings, diameter, diameter_estimated, scale, augmented)
    return result_from_planes(planes, image, model_name=model_name)


def load_model(model: ModelSource = DEFAULT_MODEL) -> NucleiModel:
    """The :class:`~napari_nucleiseg.weights.NucleiModel` for a bundled name or a weights file.

    A file is read once and the model kept (up to :data:`MODEL_CACHE_SIZE`); a
    file changed on disk since is read again. A ``NucleiModel`` is returned as is.

    Raises
    ------
    napari_nucleiseg.errors.WeightsError
        For an unknown name, a missing file, or a file that is not usable weights;
        the message names the file and says what is wrong.
    """
    from .weights import BUNDLED_MODELS, NucleiModel, WeightsError, bundled_model_name, bundled_weights_path

    if isinstance(model, NucleiModel):
        return model
    if not isinstance(model, (str, os.PathLike)) or str(model).strip() == "":
        raise WeightsError(f"Unknown model {model!r}; expected one of {', '.join(BUNDLED_MODELS)}, the path of a "
                           "weights file, or a model from load_model().")
    bundled = bundled_model_name(model) if isinstance(model, str) else None
    if bundled is not None and not Path(model).is_file():
        path = bundled_weights_path(bundled)
    else:
        path = Path(model).expanduser()
        if not path.is_file() and isinstance(model, str):  # (QA: not hidden by a folder of its name where one runs)
            path = _users_model(model) or path  # a model fine-tuned in the widget, by the name it lists
        if not path.exists() and isinstance(model, str) and path.suffix == "" and len(path.parts) == 1:
            # A bare word that is no file: most likely a mistyped model name.
            from .user_models import list_user_models

            yours = ", ".join(path.stem for path in list_user_models())
            raise WeightsError(
                f"Unknown model {model!r}; expected one of {', '.join(BUNDLED_MODELS)}"
                + (f", one of yours ({yours})," if yours else "") + " or the path of a weights file."
            )
    path = path.resolve()
    if not path.is_file():
        from .weights import load_weights

        return load_weights(path)  # raises the WeightsError that says what is missing
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


def _users_model(name: str) -> Path | None:
    """The file of the user's model called ``name`` (in their model folder: those the widget lists), if there
    is one (QA: 'region1', made in the widget, was an unknown model to segment(), finetune and the CLI)."""
    from .user_models import name_problem, typed_model_name, user_model_path

    name = typed_model_name(name)  # (QA: "first.safetensors", as finetune --name takes it, was unknown)
    if name_problem(name):
        return None
    path = user_model_path(name)
    return path if path.is_file() else None


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_cached(path: str, mtime_ns: int, size: int) -> NucleiModel:
    """Load one weights file; modification time and size are part of the key so edits are seen."""
    from .weights import load_weights

    return load_weights(path)
