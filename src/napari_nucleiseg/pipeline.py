"""The one segmentation pipeline: image planes in, probabilities, labels and the scale out.

:func:`segment_planes` is what every way of segmenting runs: :func:`napari_nucleiseg.segment` to the
end, the dock widget in a worker thread (it yields after each plane, and polls ``cancelled``
between planes and tiles), the command line once per file, the evaluation scripts per image.
A *plane* is one 2-D image, gray ``(Y, X)`` or colour ``(Y, X, 3|4)``; a stack has any number of
leading axes before it, and ``data`` may be lazy (dask, zarr): one plane is read at a time.

The steps, for one plane or a stack:

1. the nucleus diameter is given, or estimated (:func:`resolve_diameter`; a stack's on its middle
   plane, :func:`stack_diameter`);
2. every plane is resized by the factor it gives (:meth:`~napari_nucleiseg.weights.NucleiModel.scale_for`)
   and run through the network tile by tile (``predict``, by default
   :func:`napari_nucleiseg.inference.predict_probabilities`); the probabilities come back at the
   plane's own resolution and are kept as float32 or compactly
   (:class:`~napari_nucleiseg.compact.CompactProbabilities`);
3. with ``label``, the planes are labelled with the settings chosen (:func:`resolve_settings`).

No torch here: the network's module is imported when a plane is predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from .compact import CompactProbabilities
from .errors import Cancelled, ImageError
from .scale import check_diameter, estimate_diameter, nucleus_diameters, sweep, sweep_confidence
from .settings import PostprocessSettings

if TYPE_CHECKING:
    from .weights import NucleiModel

#: ``predict(plane, model, *, progress, cancelled, scale, augment) -> (2, Y, X) float32``: the network's
#: probabilities for one plane (the default is :func:`napari_nucleiseg.inference.predict_probabilities`;
#: tests give a fake).
Predict = Callable[..., np.ndarray]
#: What the caller chose of the post-processing settings: all of them, some of them by name (the
#: others are the model's, at the scale of the run), or None (all the model's).
ChosenSettings = Union[PostprocessSettings, Mapping[str, Any], None]

#: Label images get this dtype unless a stack holds more nuclei than it can number.
LABELS_DTYPE = np.uint16
#: Stack planes narrower than this cannot hold a nucleus: such a "stack" is almost always an
#: image whose last axis holds a few channels (napari shows a (Y, X, 2) array as Y planes of X x 2).
MIN_STACK_PLANE_SIDE = 8
#: An estimated diameter is checked against the median nucleus of the whole image segmented at the
#: scale it gave; further off than this factor, the network runs once more at the measured size.
RECHECK_FACTOR = 1.25
#: A stack of at most this many planes may be channels: its diameter is estimated on the plane the
#: network is surest of (:func:`stack_diameter`), not on its middle one.
MAX_PLANES_COMPARED = 4


@dataclass
class PlanesResult:
    """What :func:`segment_planes` returns."""

    #: ``(*leading, 2, Y, X)``: float32 maps, or their compact form (``compact=True``).
    probabilities: np.ndarray | CompactProbabilities
    #: ``(*leading, Y, X)`` labels, numbered on through the planes; None without ``label``.
    labels: np.ndarray | None
    #: The settings the labels were made with (or would be, without ``label``), in the image's pixels.
    settings: PostprocessSettings
    #: The nucleus diameter (pixels) the network ran for, given or estimated; None: the model records
    #: none, or no estimate could be made (the image was not resized).
    diameter: float | None = None
    diameter_estimated: bool = False
    scale: float = 1.0  # the factor the planes were resized by for the network (1: not resized)
    augmented: bool = False  # whether the network's maps are the mean over flips (``augment``)
    brown_nuclei: bool = False  # whether brown (DAB) was read as hematoxylin (``brown_nuclei``)
    #: The sigma (pixels) of the Gaussian a noisy gray image was smoothed by before it was read (0: not smoothed;
    #: a stack: its planes' largest), :func:`~napari_nucleiseg.scale.noise_smoothing`.
    noise_smoothing: float = 0.0


def segment_planes(
    data: Any,
    model: NucleiModel,
    settings: ChosenSettings = None,
    *,
    rgb: bool | None = None,
    diameter: float | None = None,
    augment: bool = False,
    brown_nuclei: bool = False,
    compact: bool = True,
    label: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    predict: Predict | None = None,
) -> Generator[int, None, PlanesResult]:
    """Segment every plane of ``data``; yield the number of planes predicted after each.

    Parameters
    ----------
    data : array-like
        One plane or a stack of them (see :func:`stack_shape`).
    model : NucleiModel
        The network and its calibrated settings.
    settings : PostprocessSettings, mapping or None
        The post-processing settings (see :data:`ChosenSettings` and :func:`resolve_settings`).
    rgb : bool, optional
        Whether the last axis holds colour (napari's ``Image.rgb``); None: an array of 3 axes
        whose last holds 3 or 4 values is one colour plane.
    diameter : float, optional
        The nuclei's median diameter in pixels; None: estimated.
    augment : bool
        Test-time augmentation: the network's maps are the mean over the plane flipped four ways
        (:data:`~napari_nucleiseg.inference.FLIPS`), at four times the network's time. The estimate
        of the diameter (its scale sweep; a stack's middle plane) runs without it.
    brown_nuclei : bool
        Read the brown (DAB) of a brightfield picture (an IHC section) as hematoxylin, for the diameter's
        estimate and the network alike (:mod:`~napari_nucleiseg.stains`): for a marker of nuclei (Ki-67,
        ER, PR, p53), whose brown nuclei the networks otherwise mostly miss. Other images are read as
        they are.
    compact : bool
        Keep the probabilities as :class:`~napari_nucleiseg.compact.CompactProbabilities`
        (3 bytes a pixel, what the widget caches) rather than float32 (8 bytes a pixel).
    label : bool
        Label the planes too.
    on_progress : callable, optional
        ``on_progress(done_tiles, total_tiles)`` while the network runs on a plane.
    cancelled : callable, optional
        Polled between planes and tiles; True stops the run with :class:`~napari_nucleiseg.errors.Cancelled`.
    predict : callable, optional
        The network's probabilities for one plane (:data:`Predict`).

    Raises
    ------
    ImageError, WeightsError, ValueError, Cancelled
        For data that holds no plane, a bad diameter or setting, or a run cancelled.
    """
    leading, plane = stack_shape(np.shape(data), _is_rgb(data, rgb))
    check_diameter(diameter, plane)
    check_switches(augment=augment, brown_nuclei=brown_nuclei)
    check_settings(settings, model)
    model = model.reading(brown_nuclei)
    if not leading:  # one image: its estimate is checked against all its nuclei
        from .inference import filled_where_transparent, smoothed_if_noisy

        swept: list = []  # the network's sweep of the image as read, when it judged its noise (not made twice)
        image, smoothing = smoothed_if_noisy(filled_where_transparent(np.asarray(data)), model, swept=swept,
                                             cancelled=cancelled)
        if cancelled is not None and cancelled():
            raise Cancelled("Segmentation cancelled.")
        prediction = predict_at_diameter(image, model, diameter, progress=on_progress, cancelled=cancelled,
                                         predict=predict, augment=augment, rungs=swept or None)
        del image
        used, estimated, scale = prediction.diameter, prediction.estimated, prediction.scale
        probabilities = CompactProbabilities.from_float(prediction.probabilities) if compact \
            else prediction.probabilities
        del prediction
        yield 1
    else:
        judged: dict = {}  # the network's judgement of the noise of the stack's planes, made once (scale.py)
        used, estimated = stack_diameter(data, leading, model, diameter, cancelled=cancelled, predict=predict,
                                         judged=judged)
        scale = model.scale_for(used, plane)
        probabilities = CompactProbabilities(leading, plane) if compact \
            else np.zeros((*leading, 2, *plane), dtype=np.float32)
        smoothed: dict[tuple[int, ...], float] = {}
        planes = predict_planes(data, leading, model, scale=scale, on_progress=on_progress, cancelled=cancelled,
                                predict=predict, augment=augment, smoothed=smoothed, judged=judged)
        for done, (index, plane_probabilities) in enumerate(planes, start=1):
            probabilities[index] = plane_probabilities
            del plane_probabilities  # stored: the float maps go before the next plane (or labels) start
            yield done
        smoothing = max(smoothed.values(), default=0.0)
    chosen = resolve_settings(settings, model, scale)
    labels = run_to_end(label_planes(probabilities, chosen), cancelled) if label else None
    return PlanesResult(probabilities, labels, chosen, used, estimated, scale, bool(augment), bool(brown_nuclei),
                        smoothing)


def check_switches(**switches: Any) -> None:
    """Raise a ValueError of one sentence for the first of ``switches`` (``augment=...``) not True or False."""
    for name, value in switches.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, not {value!r}")


def check_settings(settings: ChosenSettings, model: NucleiModel) -> None:
    """Raise what a bad setting chosen would raise, before the slow part of a run (ValueError)."""
    if isinstance(settings, PostprocessSettings):
        settings.validate()
    elif settings:
        model.settings.replace(**settings)


def resolve_settings(settings: ChosenSettings, model: NucleiModel, scale: float) -> PostprocessSettings:
    """The settings to label an image resized by ``scale`` with: ``settings`` itself when complete;
    otherwise the model's at that scale (:meth:`~napari_nucleiseg.weights.NucleiModel.settings_at`),
    with the values chosen by name (None: the model's) in their place."""
    if isinstance(settings, PostprocessSettings):
        return settings
    return model.settings_at(scale).replace(**dict(settings or {}))


def run_to_end(steps: Generator[Any, None, Any], cancelled: Callable[[], bool] | None = None) -> Any:
    """Run a generator such as :func:`segment_planes` or :func:`label_planes` to the end and return
    what it returns; ``cancelled`` is polled at each of its yields.

    Raises
    ------
    Cancelled
        When ``cancelled()`` returns True.
    """
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
        if cancelled is not None and cancelled():
            raise Cancelled("Segmentation cancelled.")


def stack_shape(shape: tuple[int, ...], rgb: bool) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Split an image's shape into (leading axes, plane height and width).

    ``rgb`` is the layer's own flag: a last axis of 3 or 4 is colour only when napari says so.

    Raises
    ------
    ImageError
        For shapes that hold no 2-D plane, or an empty one.
    """
    plane_axes = 3 if rgb else 2
    if len(shape) < plane_axes or (rgb and shape[-1] not in (3, 4)):
        kind = "an RGB image" if rgb else "a gray image"
        raise ImageError(f"An image of shape {tuple(shape)} cannot be segmented as {kind}; expected 2-D planes.")
    leading = tuple(shape[: len(shape) - plane_axes])
    plane = tuple(shape[len(leading) : len(leading) + 2])
    if 0 in shape:
        raise ImageError(f"The image is empty (shape {tuple(shape)}).")
    if leading and min(plane) < MIN_STACK_PLANE_SIDE:
        raise ImageError(
            f"The planes of this {tuple(shape)} stack are {plane[0]} x {plane[1]} pixels, too small to hold nuclei; "
            f"if its last axis holds {shape[-1]} channels, segment the one that shows the nuclei (the widget's "
            "Channel, segment(..., channel=N), or nucleiseg segment --channel N)."
        )
    return leading, plane


def _is_rgb(data: Any, rgb: bool | None) -> bool:
    if rgb is not None:
        return rgb
    shape = np.shape(data)
    return len(shape) == 3 and shape[-1] in (3, 4)


class Prediction(NamedTuple):
    """What :func:`predict_at_diameter` returns."""

    probabilities: np.ndarray  # (2, H, W) float32, at the image's own resolution
    diameter: float | None  # the nucleus diameter (pixels) the network was run for; None: not resized
    estimated: bool  # whether that diameter was estimated
    scale: float  # the factor the image was resized by for the network


def predict_at_diameter(image: np.ndarray, model: NucleiModel, diameter: float | None = None, *,
                        progress: Callable[[int, int], None] | None = None,
                        cancelled: Callable[[], bool] | None = None,
                        predict: Predict | None = None, augment: bool = False,
                        rungs: list[dict] | None = None) -> Prediction:
    """The network's probabilities for one plane with its nuclei brought to the model's size.

    The diameter is given or estimated (:func:`resolve_diameter`), the image resized by the
    factor it gives, the network run tile by tile, and the probabilities brought back to the
    image's pixels. An estimate is then checked (Cellpose's second step): the whole image's
    nuclei at that scale, labelled with the estimate's settings (``model.estimate_settings``), have a
    median diameter of their own, measured on far more nuclei than the estimate's window holds; if it
    differs by more than :data:`RECHECK_FACTOR`, the network runs once more at that size, and that is
    the diameter reported. With ``augment`` every network pass is the mean over flips (:func:`segment_planes`).
    ``rungs``: the image's scale sweep, when it was swept already (the estimate then reuses it).
    """
    from .postprocess import labels_from_probabilities

    predict = predict or _network
    used, estimated = resolve_diameter(image, model, diameter, cancelled=cancelled, rungs=rungs)
    shape = np.shape(image)[:2]
    scale = model.scale_for(used, shape)
    probabilities = predict(image, model, progress=progress, cancelled=cancelled, scale=scale, augment=augment)
    if estimated:
        recheck = model.estimate_settings.at_scale(scale).replace(neck_ratio=0.0)
        labels = labels_from_probabilities(probabilities, **recheck.options())
        diameters = nucleus_diameters(labels)
        if diameters.size >= 5:
            measured = float(np.median(diameters))
            if abs(np.log(measured / used)) > np.log(RECHECK_FACTOR):
                used, scale = measured, model.scale_for(measured, shape)
                probabilities = predict(image, model, progress=progress, cancelled=cancelled, scale=scale,
                                        augment=augment)
    return Prediction(probabilities, used, estimated, scale)


def resolve_diameter(image: np.ndarray, model: NucleiModel, diameter: float | None = None, *,
                     cancelled: Callable[[], bool] | None = None,
                     rungs: list[dict] | None = None) -> tuple[float | None, bool]:
    """``(diameter, estimated)``: the nucleus diameter to segment ``image`` for.

    A given ``diameter`` is checked and returned; None is estimated with the model
    (:func:`~napari_nucleiseg.scale.estimate_diameter`) when it records a diameter of its
    own (from ``rungs``, the image's sweep, when it was swept already), and stays None (no
    resizing) when it does not or no estimate can be made.
    """
    check_diameter(diameter, np.shape(image))
    if diameter is not None:
        return float(diameter), False
    if model.diameter is None:
        return None, False
    estimate = estimate_diameter(image, model, cancelled=cancelled, rungs=rungs)
    return (None, False) if estimate is None else (float(estimate), True)


def stack_diameter(
    data: Any,
    leading: tuple[int, ...],
    model: NucleiModel,
    diameter: float | None = None,
    *,
    cancelled: Callable[[], bool] | None = None,
    predict: Predict | None = None,
    judged: dict | None = None,
) -> tuple[float | None, bool]:
    """``(diameter, estimated)`` for a whole stack, as :func:`resolve_diameter` gives for one plane.

    One diameter for every plane: the planes of a stack come from one microscope at one magnification,
    so one scale serves them all and the min size keeps one meaning. It is estimated on one plane (as one
    image is, the check against its nuclei included): of a stack of up to :data:`MAX_PLANES_COMPARED`
    planes, the one whose scale sweep the network is surest of (:func:`~.scale.sweep_confidence`), since
    such a stack may be channels (a DAPI + marker image that nothing names), and a marker plane's
    "nuclei" are not the nuclei; of a longer stack, the middle plane (the ends of a z-stack, often out
    of focus, are poor planes to measure on).
    """
    planes = list(np.ndindex(*leading))
    chosen = planes[len(planes) // 2]
    if diameter is not None or model.diameter is None:
        return resolve_diameter(data[chosen], model, diameter, cancelled=cancelled)
    rungs = None  # the chosen plane's sweep, once it is swept
    if 1 < len(planes) <= MAX_PLANES_COMPARED:
        swept = {}
        for index in planes:
            swept[index] = sweep(_as_read(data[index], model, judged), model, cancelled=cancelled)
            if cancelled is not None and cancelled():
                raise Cancelled("Segmentation cancelled.")
        confidence = {index: sweep_confidence(rungs) for index, rungs in swept.items()}
        if max(confidence.values()) > -np.inf:
            chosen = max(planes, key=confidence.__getitem__)
        rungs = swept[chosen]
    prediction = predict_at_diameter(_as_read(data[chosen], model, judged), model, cancelled=cancelled, predict=predict,
                                     rungs=rungs)
    return prediction.diameter, prediction.estimated


def _as_read(plane: Any, model: NucleiModel | None = None, judged: dict | None = None) -> np.ndarray:
    """A plane of a stack as the network reads it: smoothed if it is noisy gray (:func:`~.inference.smoothed_if_noisy`)."""
    from .inference import smoothed_if_noisy

    return smoothed_if_noisy(np.asarray(plane), model, judged)[0]


def predict_planes(
    data: Any,
    leading: tuple[int, ...],
    model: NucleiModel,
    *,
    scale: float = 1.0,
    on_progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    predict: Predict | None = None,
    augment: bool = False,
    smoothed: dict[tuple[int, ...], float] | None = None,
    judged: dict | None = None,
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Predict every plane of ``data`` in turn; yield ``(plane index, (2, Y, X) probabilities)``.

    The network sees each plane resized by ``scale``, smoothed first if it is noisy gray (the sigma goes into
    ``smoothed``, by plane; ``judged``: the network's judgement of the stack's noise, made once, see
    :func:`~.scale.noise_smoothing`); the probabilities are at the plane's own resolution. ``cancelled`` is polled
    between planes and between tiles of a plane.
    """
    from .inference import smoothed_if_noisy

    predict = predict or _network
    judged = {} if judged is None else judged
    for index in np.ndindex(*leading):
        if cancelled is not None and cancelled():
            raise Cancelled("Segmentation cancelled.")
        plane, sigma = smoothed_if_noisy(np.asarray(data[index]), model, judged)
        if smoothed is not None:
            smoothed[index] = sigma
        yield index, predict(plane, model, progress=on_progress, cancelled=cancelled, scale=scale, augment=augment)


def label_planes(
    probabilities: np.ndarray | CompactProbabilities, settings: PostprocessSettings
) -> Generator[int, None, np.ndarray]:
    """Instance labels for ``(*leading, 2, Y, X)`` probabilities, plane by plane: yields the planes
    done before each further plane, and returns the ``(*leading, Y, X)`` labels.

    Labels are numbered on through the stack (plane 0 holds 1..n0, plane 1 n0+1..), so every
    nucleus of the stack has its own label and row in the table; uint16, or uint32 above 65,535
    nuclei. With ``settings.link_axis``, the nuclei of neighbouring planes along that axis are then
    linked into 3-D nuclei (:func:`~napari_nucleiseg.volumes.link_planes`). A worker thread can stop
    at a yield when its result is no longer wanted; a single plane never yields.
    """
    from .postprocess import labels_from_probabilities

    options = settings.options()
    leading = probabilities.shape[:-3]
    planes = []
    for done, index in enumerate(np.ndindex(*leading)):
        if done:
            yield done
        planes.append(labels_from_probabilities(probabilities[index], **options))
    if len(planes) == 1:
        return planes[0].reshape(*leading, *planes[0].shape)
    total = sum(int(plane.max()) for plane in planes)
    dtype = LABELS_DTYPE if total <= np.iinfo(LABELS_DTYPE).max else np.uint32
    labels = np.zeros(probabilities.shape[:-3] + probabilities.shape[-2:], dtype=dtype)
    offset = 0
    for index, plane in zip(np.ndindex(*leading), planes):
        labels[index] = np.where(plane > 0, plane.astype(dtype) + offset, 0)
        offset += int(plane.max())
    if settings.link_axis is not None and settings.link_axis < len(leading):
        from .volumes import link_planes

        yield len(planes)
        return link_planes(labels, settings.link_axis)
    return labels


def labels_from_stack(probabilities: np.ndarray | CompactProbabilities, settings: PostprocessSettings) -> np.ndarray:
    """:func:`label_planes` run to the end."""
    return run_to_end(label_planes(probabilities, settings))


def _network(image: np.ndarray, model: NucleiModel, **options: Any) -> np.ndarray:
    """:func:`napari_nucleiseg.inference.predict_probabilities` (which imports torch)."""
    from .inference import predict_probabilities

    return predict_probabilities(image, model, **options)
