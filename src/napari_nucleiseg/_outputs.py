"""The Labels layers the dock widget writes, and what it knows of each: what it wrote there, and
what the count and table shown were made from, so hand edits are seen and never overwritten.

One :class:`OutputLayer` record per Labels layer holds three fingerprints (written, counted,
measured) and refreshes its own count and table; :class:`OutputLayers` keeps the records, notices
hand edits (paint, fill, undo and redo) and schedules the counts and tables. Layers are touched
on the main thread only; counts of large layers and all tables are made in workers.

Layers are known by their ``unique_id``: napari hands a plugin widget a proxy of the viewer, and
the layers it returns are proxies, while layer events carry the layers themselves.
"""

from __future__ import annotations

import weakref
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, QTimer

from ._controls import PROBABILITY_MAP_KEY, is_default_label, layer_axis_labels
from .channels import channel_name, file_pixel_size, is_colour, reads_colour, take_channel
from .tables import PixelSize, count_labels, nuclei_table, write_csv
from .volumes import TIME_LABELS, count_sections
from .weights import MODEL_TITLES

#: The per-nucleus table is measured this long after the last change, so dragging the slider
#: or painting stays fluid; the count follows at once.
TABLE_DELAY_MS = 250
#: A redrawn Labels layer is checked for changes (undo and redo redraw it without a paint event)
#: this long after the redrawing stops.
REDRAW_CHECK_MS = 100
#: Labels layers larger than this are counted in a worker after a hand edit: counting takes
#: 0.2 s at 8192 x 8192 and seconds at 20,000 x 20,000, too long to hold up the brush.
COUNT_IN_WORKER_PIXELS = 1 << 24
#: The count line of a stack of planes gives the count of the plane on screen (:meth:`OutputLayers._in_plane_shown`),
#: counted on the main thread for planes up to this many pixels (about 20 ms), once the sliders have rested this long.
PLANE_COUNT_PIXELS = 1 << 22
STEP_COUNT_DELAY_MS = 100
#: A result segmented block by block is shown this long after it is added (hidden): a timer, not a call
#: posted with no delay, so that the event loop serves input and timers between the two steps.
SHOW_LAZY_AFTER_MS = 10
#: Layer metadata: the axis of the image's channels that a result layer keeps, of length 1 (see kept_axis).
KEPT_CHANNEL_AXIS = "kept_channel_axis"
#: Layer metadata: the ``unique_id`` of the image a result was segmented from. A copy of the result (Duplicate
#: Layer) keeps it, so the copy's table is measured on that image (QA: on whichever result was shown last).
SOURCE_IMAGE = "source_image"


def checksum(labels: np.ndarray) -> int:
    """A cheap fingerprint of a label array: it changes when a hand edit changes any pixel."""
    data = np.ascontiguousarray(labels)
    return zlib.adler32(memoryview(data).cast("B")) ^ hash((data.shape, data.dtype.str))


def _fingerprinted_table(labels: np.ndarray, *source: Any) -> tuple[int, Any]:
    """:func:`checksum` of ``labels`` and their :func:`~napari_nucleiseg.tables.nuclei_table` (of the
    image, colour flag, pixel size and linked axis ``source``), in a worker."""
    return checksum(labels), nuclei_table(labels, *source)


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base [2]``, ``base [3]``, ...: the first not in ``taken``."""
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base} [{number}]"
    return name


def placement(image: Image, channel: tuple[int, int] | None = None, *, kept: bool = False) -> dict[str, Any]:
    """Where ``image`` lies in the world (pixel size and its unit, offset, rotation, shear, affine):
    results lie on it. Results of one ``channel`` (``(axis, index)``) lie on the other axes (rotation,
    shear and affine of such an image are not carried over), or with ``kept`` (a result that keeps
    the channel axis, :func:`kept_axis`), on all of them, at that channel's place on its axis."""
    if channel is None or is_colour(channel):  # (a colour of an RGB layer is on no axis of the layer's)
        return {"scale": image.scale, "translate": image.translate, "rotate": image.rotate, "shear": image.shear,
                "affine": image.affine, "units": image.units}
    if kept and kept_axis(channel) is not None:
        translate = list(image.translate)
        translate[channel[0]] += channel[1] * image.scale[channel[0]]
        return {"scale": image.scale, "translate": translate, "units": image.units}
    keep = [axis for axis in range(image.ndim) if axis != channel[0]]
    return {"scale": [image.scale[axis] for axis in keep], "translate": [image.translate[axis] for axis in keep],
            "units": [image.units[axis] for axis in keep]}


def lay_on(layer: Any, image: Image, channel: tuple[int, int] | None = None) -> bool:
    """Move the result ``layer`` of ``image`` (its ``channel``) to where the image lies now
    (:func:`placement`): a pixel size, unit or offset given to the image after a first run reaches its
    result (:meth:`OutputLayers._on_image_moved`). Returns whether the layer moved."""
    moved = False
    for name, value in placement(image, channel, kept=True).items():
        if not _same(getattr(layer, name), value):
            setattr(layer, name, value)
            moved = True
    return moved


def _same(value: Any, other: Any) -> bool:
    """Whether two values of a layer's placement (arrays, an Affine, units) are equal."""
    value, other = (np.asarray(getattr(v, "affine_matrix", v), dtype=object) for v in (value, other))
    return np.array_equal(value, other)


def kept_axis(channel: tuple[int, int] | None) -> int | None:
    """The axis of an image's ``channel`` (``(axis, index)``) that the result layer keeps, of length 1; None
    when it keeps none. napari lines a layer up with the viewer's last axes: without the channel axis, the
    labels ``(Z, Y, X)`` of a ``(Z, C, Y, X)`` image would lie on its C, Y and X, and those of a
    ``(Y, X, C)`` one on X and C. A first axis of channels may go (``(C, Z, Y, X)``: Z, Y, X stay in place)."""
    return channel[0] if channel is not None and channel[0] > 0 else None


def shown(labels: np.ndarray, channel: tuple[int, int] | None) -> np.ndarray:
    """What a result layer of ``labels`` (of the image's ``channel``) holds: ``labels``, or a view of them with
    the channel axis (:func:`kept_axis`). Painting on the layer paints ``labels``."""
    axis = kept_axis(channel)
    return labels if axis is None else np.expand_dims(labels, axis)


def labels_of(layer: Any) -> Any:
    """The labels a result layer holds, without the channel axis it may keep (a view): what was segmented,
    counted and measured. Any other Labels layer's data as it is."""
    axis = layer.metadata.get(KEPT_CHANNEL_AXIS)
    if axis is None or layer.multiscale or not (0 <= axis < layer.data.ndim and layer.data.shape[axis] == 1):
        return layer.data  # (data set since without the channel axis, e.g. by a script: as it is)
    return np.squeeze(layer.data, axis)


def _of_labels_axes(layer: Any, values: Any) -> list:
    """``values``, one per axis of ``layer`` (its scale, units, ...), for the axes of :func:`labels_of` it:
    without the channel axis it may keep."""
    values = list(values)
    axis = getattr(layer, "metadata", {}).get(KEPT_CHANNEL_AXIS)
    return values if axis is None or axis >= len(values) else values[:axis] + values[axis + 1 :]


def labels_axis_labels(viewer: Any, layer: Any) -> tuple[str, ...]:
    """:func:`~._controls.layer_axis_labels` of the axes of :func:`labels_of` ``layer``; where those are napari's
    defaults, ``t`` and ``z`` as the image's file names them (``file_axes``, recorded with a result), as the
    command line names its columns (QA: a TZYX file's time column was 't' there and 'plane_0' here)."""
    labels = list(layer_axis_labels(viewer, layer))
    letters = str(getattr(layer, "metadata", {}).get("file_axes", "")).upper().replace("S", "")
    if len(letters) == len(labels) + 1 and "C" in letters:  # the channel segmented, not kept as an axis
        letters = letters.replace("C", "")
    if len(letters) == len(labels):
        labels = [letter.lower() if letter in "TZ" and is_default_label(label) else label
                  for label, letter in zip(labels, letters)]
    return tuple(_of_labels_axes(layer, labels))


def layer_position(layer: Any, position: list[float]) -> list[float]:
    """A point of :func:`labels_of` ``layer`` as a point of the layer's data (on its channel, if it keeps one)."""
    axis = layer.metadata.get(KEPT_CHANNEL_AXIS)
    return position if axis is None else [*position[:axis], 0.0, *position[axis:]]


def pixel_size(layer: Any, volume_axis: int | None = None) -> PixelSize | None:
    """The layer's pixel size in y and x with their unit, unless they are plain pixels (or differ in unit);
    with ``volume_axis`` (3-D nuclei), the spacing of its planes too, when it is in that unit."""
    units = _of_labels_axes(layer, (f"{unit:~}" for unit in getattr(layer, "units", ())))
    if len(units) < 2 or units[-2] != units[-1] or units[-1] in ("px", "pixel"):
        return None
    unit = units[-1].replace("µ", "u").replace(" ", "")
    scales, translates = _of_labels_axes(layer, layer.scale), _of_labels_axes(layer, layer.translate)
    z = None if volume_axis is None or units[volume_axis] != units[-1] else float(scales[volume_axis])
    return PixelSize(float(scales[-2]), float(scales[-1]), unit, (float(translates[-2]), float(translates[-1])), z,
                     0.0 if z is None else float(translates[volume_axis]))


def plane_shape(shape: tuple[int, ...], rgb: bool) -> tuple[int, ...]:
    """The shape of an image's planes of ``shape`` without its colour axis (``rgb``): what its labels' shape is."""
    return tuple(shape[:-1]) if rgb else tuple(shape)


def data_ref(image: Image) -> Callable[[], Any]:
    """A weak reference to the data ``image`` holds now: it gives that data, or None once it is freed (the
    layer was given new data). Data that takes no weak reference is taken to be the layer's, whatever it is."""
    try:
        return weakref.ref(image.data)
    except TypeError:
        return lambda: image.data


def volume_axis(layer: Any) -> int | None:
    """The leading axis along which the planes of the result ``layer`` were linked into 3-D nuclei (None:
    they were not), as the widget recorded it in the layer's metadata."""
    axis = layer.metadata.get("link_axis")
    return axis if isinstance(axis, int) and 0 <= axis < np.ndim(labels_of(layer)) - 2 else None


def plane_columns(axis_labels: tuple[str, ...], taken: set[str]) -> dict[str, str]:
    """``{"axis_0": "z", ...}``: the table's plane columns named from the labels of the layer's axes (its
    own or the viewer's: ``z``, ``t``), ``plane`` for an axis nothing names (``plane_1``, ... when there
    are more); a name the table has already (``label``) stays ``axis_N``."""
    leading = axis_labels[:-2]
    names = ["plane" if is_default_label(label) else label.strip().lower() for label in leading]
    names = [name if names.count(name) == 1 else f"{name}_{axis}" for axis, name in enumerate(names)]
    return {f"axis_{axis}": name for axis, name in enumerate(names) if name not in taken}


def count_and_fingerprint(labels: np.ndarray) -> tuple[int, int]:
    return count_labels(labels), checksum(labels)


def _count_with_sections(labels: np.ndarray, linked: int | None) -> tuple[tuple[int, int], int | None]:
    """:func:`count_and_fingerprint`, and with ``linked`` (3-D nuclei), their sections in the planes."""
    return count_and_fingerprint(labels), None if linked is None else count_sections(labels, linked)


#: The outline width (pixels) of a new result put under a layer edited by hand (napari's ``contour``; 0: filled).
UNDER_EDITED_CONTOUR = 2


@dataclass(eq=False)
class OutputLayer:
    """A Labels layer the widget wrote: for which image, and fingerprints of what it wrote and of
    what its count and table were last made from (they differ after hand edits)."""

    layer: Labels
    image: Image
    written: int
    counted: int | None = None
    measured: int | None = None  # the fingerprint of the labels the layer's table was measured on
    channel: tuple[int, int] | None = None  # (axis, index) of the image's channel the nuclei were found in
    below: Labels | None = None  # the layer edited by hand that this new result was put under
    image_data: Callable[[], Any] | None = None  # the image's data the labels were made of (:func:`data_ref`)

    def image_changed(self) -> bool:
        """Whether the image was given new data since the labels were made (they are the old data's)."""
        return self.image_data is not None and self.image_data() is not self.image.data

    def edited(self) -> bool:
        """Whether the layer holds other labels than the widget last wrote there (a hand edit)."""
        return checksum(labels_of(self.layer)) != self.written

    def table_source(self) -> tuple[Any, bool, PixelSize | None, int | None]:
        """The image that mean intensities come from (None if it was swapped for one of another shape),
        whether it is RGB, the physical pixel size, when the layer has one, and the axis the planes
        were linked along into 3-D nuclei (None: one row per nucleus of a plane)."""
        source = self.image
        data = source.data if self.channel is None else take_channel(source.data, *self.channel)
        labels = labels_of(self.layer)
        same_shape = np.shape(data)[: labels.ndim] == labels.shape
        linked = volume_axis(self.layer)
        pixel = pixel_size(self.layer, linked) or file_pixel_size(getattr(source.source, "path", None),
                                                                   source.data.shape)  # (napari's reader sets none)
        return ((data if same_shape else None), reads_colour(source.rgb, self.channel), pixel,
                linked)

    def measure_now(self) -> None:
        """Measure the table here and now, unless it is up to date."""
        labels = labels_of(self.layer)
        current = checksum(labels)
        if self.measured != current:
            self.layer.features = self._kept_columns(nuclei_table(np.asarray(labels), *self.table_source()), current)
            self.measured = current

    def measure_in_worker(self, on_finished: Callable[[], None]) -> None:
        """Measure the table in a worker, on a snapshot taken here (the user may paint on meanwhile); its
        fingerprint is taken there too (QA: with two results of 6144 x 6144 open, a click on Segment held the
        window 0.46 s, most of it fingerprinting them)."""
        labels = np.array(labels_of(self.layer))
        worker = thread_worker(_fingerprinted_table, start_thread=False)(labels, *self.table_source())
        worker.returned.connect(self._set_table)
        worker.finished.connect(on_finished)
        worker.start()

    def _set_table(self, measured_table: tuple[int, Any]) -> None:
        """Take the table measured on labels of checksum ``measured``, unless they changed since."""
        measured, table = measured_table
        if checksum(labels_of(self.layer)) == measured:
            self.layer.features = self._kept_columns(table, measured)
            self.measured = measured

    def _kept_columns(self, table: Any, measured: int) -> Any:
        """``table``, measured on labels of checksum ``measured``, with the columns of the layer's features that
        the widget does not measure (one the user or another plugin added: a cell class) when those labels are
        the widget's corrected by hand, matched by nucleus (QA: a 'cell_class' column was dropped at the
        user's next erase); a new result of the widget's starts a new table."""
        return table if measured == self.written else with_columns_of(table, self.layer.features)


def with_columns_of(table: Any, before: Any) -> Any:
    """``table`` with the columns of ``before`` (a table of the same labels before a hand edit) that it lacks,
    matched on ``label`` and the plane columns (``axis_0``, ...); empty for a nucleus new since."""
    extra = [column for column in getattr(before, "columns", ()) if column not in table.columns]
    keys = [column for column in table.columns if column == "label" or str(column).startswith("axis_")]
    if not extra or "label" not in keys or not set(keys) <= set(before.columns):
        return table
    return table.merge(before[keys + extra].drop_duplicates(keys), on=keys, how="left")


class OutputLayers(QObject):
    """The widget's Labels layers: writing them, seeing hand edits, and keeping counts and tables.

    ``show_count(layer, text)`` is called with the sentence to show whenever the count shown changes;
    tables are not measured while ``busy()`` (the widget's: while a re-threshold runs).
    """

    def __init__(self, viewer, show_count: Callable[[Labels | None, str], None],
                 busy: Callable[[], bool] = lambda: False, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self._show_count = show_count
        self._busy = busy
        #: Labels layers larger than this many pixels are counted in a worker.
        self.count_in_worker_pixels = COUNT_IN_WORKER_PIXELS
        self.records: dict[Any, OutputLayer] = {}  # by the Labels layer's unique id
        #: Results of images segmented block by block, by unique id: lazy layers, never read whole here;
        #: their count and table are the run's.
        self.lazy: dict[Any, Labels] = {}
        #: the layer each image (unique id), model and channel write to
        self._by_image: dict[tuple[Any, str, tuple[int, int] | None], Labels] = {}
        #: the nucleus probability shown for each image: its layer and the image's channel it shows
        self._probability_layers: dict[Any, tuple[Image, tuple[int, int] | None]] = {}
        self._placed: set[Any] = set()  # the images (unique ids) whose results follow their placement
        self.shown: Labels | None = None  # the layer whose count is shown and whose table is exported
        self.writing = False  # see self_writing
        self.reselecting = False  # the edited layer selected again under a new result (see _put_under)
        self.closed = False
        self._edited: dict[Any, Labels] = {}  # hand-edited layers whose count is not yet updated
        self._redrawn: dict[Any, Labels] = {}  # written layers redrawn since they were last checked
        self._stale: dict[Any, Labels] = {}  # layers whose table is to be measured
        self._measuring: set[Any] = set()  # layers whose table a worker is measuring
        self._count_requests = 0  # counts made in workers: only the newest request's is shown
        self._count_timer = QTimer(self, singleShot=True, interval=0)
        self._count_timer.timeout.connect(self._recount_edited)
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_CHECK_MS)
        self._redraw_timer.timeout.connect(self._check_redrawn)
        self._table_timer = QTimer(self, singleShot=True, interval=TABLE_DELAY_MS)
        self._table_timer.timeout.connect(self._refresh_stale_tables)
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        # The count of the plane on screen follows the sliders, once they rest (not at every frame played).
        self._step_timer = QTimer(self, singleShot=True, interval=STEP_COUNT_DELAY_MS)
        self._step_timer.timeout.connect(self._on_step)
        viewer.dims.events.current_step.connect(self._on_dims)
        viewer.dims.events.ndisplay.connect(self._on_dims)
        self._shown_count: tuple[Any, int] | None = None  # (layer id, count) of the count line, for _on_step

    # ---- writing ----------------------------------------------------------------------------

    def record(self, layer: Any) -> OutputLayer | None:
        """The record of one of the widget's layers; None for any other layer."""
        return self.records.get(getattr(layer, "unique_id", None))

    def is_shown(self, layer: Any) -> bool:
        return self.shown is not None and getattr(layer, "unique_id", None) == self.shown.unique_id

    def write(self, image: Image, labels: np.ndarray, *, count: int, metadata: dict[str, Any] | None = None,
              channel: tuple[int, int] | None = None, model: str = "",
              into: Labels | None = None) -> tuple[Labels, Labels | None]:
        """Write ``labels`` (numbered 1..``count``) of ``image`` (its ``channel``, ``(axis, index)``, if one)
        made by ``model``: in place to the result layer ``into`` (default: that image, channel and model's
        layer) while it holds what the widget wrote (same shape and channel), else to a new layer; a layer
        edited by hand is kept, and the result goes to the layer under it that holds the widget's result
        for it, or a new one; ``metadata`` goes into the layer's. Returns the layer, and the layer edited by
        hand that was kept (None if none was)."""
        key = (image.unique_id, model, channel)
        layer = into if into is not None and self.record(into) is not None else self._by_image.get(key)
        layer = layer if layer is not None and self._in_viewer(layer) else None
        edited = None
        if layer is not None and self.record(layer).edited():
            edited, layer = layer, self._result_under(layer)
        if layer is None or labels_of(layer).shape != labels.shape or self.record(layer).channel != channel:
            layer = self._add_layer(image, labels, channel, model)  # (another channel: a result of its own)
            if edited is not None:
                self._put_under(layer, edited)
        else:
            with self.self_writing():
                layer.data = shown(labels, channel)
            reset_history = getattr(layer, "_reset_history", None)  # napari's undo steps are of the labels replaced
            if callable(reset_history):  # (QA: a redo after undo and a slider move painted an old stroke on these)
                reset_history()
            self.record(layer).written = checksum(labels)
            self.record(layer).image_data = data_ref(image)
        self._by_image[key] = layer
        layer.metadata.update(metadata or {}, model=model, **{SOURCE_IMAGE: str(image.unique_id)})
        record = self.record(layer)
        self.mark_changed(layer, count=count, fingerprint=record.written)
        return layer, edited

    def hide_other_results(self, layer: Labels) -> list[str]:
        """Hide the other results of the image (and channel) of the new result ``layer``, those not edited by hand
        (which stay in sight: issue 17), and return their names (QA: three models' results of one image, one over
        the other, were unreadable)."""
        record = self.record(layer)
        hidden = []
        for other in list(self.records.values()):
            if (other.layer is not layer and other.image is record.image and other.channel == record.channel
                    and other.layer.visible and self._in_viewer(other.layer) and not other.edited()):
                other.layer.visible = False
                hidden.append(other.layer.name)
        return hidden

    def write_lazy(self, image: Image, layer: Labels, *, channel: tuple[int, int] | None = None,
                   model: str = "") -> Labels:
        """Add the result of ``image`` segmented block by block (its ``channel``, if one) by ``model``: the
        lazy Labels ``layer`` built hidden in the worker (:func:`~._large_layer.labels_layer`), with the
        run's table as its features, and its count. It is shown :data:`SHOW_LAZY_AFTER_MS` later, in a turn
        of the event loop of its own: napari builds the layer's display objects when it is added, and
        reads and draws its view when it is shown; in one go the two blocked the window for 373 ms."""
        layer.name = self._new_name(image, channel, model)
        with self.self_writing():
            self.viewer.add_layer(layer)
        self.lazy[layer.unique_id] = layer
        self.show_lazy(layer)
        QTimer.singleShot(SHOW_LAZY_AFTER_MS, partial(self._show_added, layer))
        return layer

    def _show_added(self, layer: Labels) -> None:
        if self._in_viewer(layer):
            layer.visible = True

    def show_lazy(self, layer: Labels) -> None:
        """Show the count of a result segmented block by block, from its table, and where its labels are."""
        self.shown = layer
        text = _nuclei_in(len(layer.features), layer) + _border_note(layer)
        self._show_count(layer, f"{text} (segmented block by block; labels in {layer.metadata.get('store')})")

    def _new_name(self, image: Image, channel: tuple[int, int] | None, model: str) -> str:
        """A name for a new result layer of ``image`` (its ``channel``) by ``model``, unlike the layers'."""
        taken = {layer.name for layer in self.viewer.layers}
        base = f"{image.name} nuclei" if channel is None else f"{image.name} {channel_name(channel)} nuclei"
        others = [layer for (image_id, other, _), layer in self._by_image.items()
                  if image_id == image.unique_id and other != model and self._in_viewer(layer)]
        if others:  # another model's result for this image is in the viewer: say whose each is
            base += f" ({MODEL_TITLES.get(model, model)})"
        return unique_name(base, taken)

    def _add_layer(self, image: Image, labels: np.ndarray, channel: tuple[int, int] | None = None,
                   model: str = "") -> Labels:
        name = self._new_name(image, channel, model)
        axis = kept_axis(channel)
        layer = Labels(shown(labels, channel), name=name, **placement(image, channel, kept=True),
                       metadata={} if axis is None else {KEPT_CHANNEL_AXIS: axis})
        # Recorded before it is added: what follows the insertion (the Fine-tune list) finds whose result it is
        # (QA: the list paired a second image's result with the first image of its size, and trained on it).
        self.records[layer.unique_id] = OutputLayer(layer, image, checksum(labels), channel=channel,
                                                    image_data=data_ref(image))
        with self.self_writing():
            self.viewer.add_layer(layer)
        self._follow_placement(image)
        if axis is not None:
            self._go_to_channel(layer, axis)
        layer.events.paint.connect(self._on_hand_edit)
        layer.events.data.connect(self._on_hand_edit)
        layer.events.set_data.connect(self._on_redrawn)
        layer.events.name.connect(self._on_renamed)
        return layer

    def _go_to_channel(self, layer: Labels, axis: int) -> None:
        """Show the channel a new result of one channel lies on, along its ``axis`` (of length 1): QA chose
        channel 1 of a (Z, C, Y, X) stack; the viewer stayed at channel 0, where nothing of the new (selected)
        result showed, and a brush stroke there painted into its labels at channel 1 unseen (napari wraps the
        index -1 round to 0), ending in a traceback of napari's."""
        world_axis = self.viewer.dims.ndim - layer.ndim + axis
        if 0 <= world_axis < self.viewer.dims.ndim:
            self.viewer.dims.set_point(world_axis, layer.data_to_world([0] * layer.ndim)[axis])

    def _on_renamed(self, event) -> None:
        """A result renamed: the count line names it anew (QA: it kept the old name, which the next result
        then took), as it does the edited layer a result lies under."""
        shown = self.shown
        record = self.record(shown)
        below = None if record is None else record.below
        if shown is not None and event.source in (shown, below) and self._in_viewer(shown):
            self.show(shown)

    def _follow_placement(self, image: Image) -> None:
        """Have the results of ``image`` follow it when it is given a pixel size, unit or offset (or turned)."""
        if image.unique_id in self._placed:
            return
        self._placed.add(image.unique_id)
        for name in ("scale", "translate", "rotate", "shear", "affine", "units"):
            emitter = getattr(image.events, name, None)
            if emitter is not None:
                emitter.connect(partial(self._on_image_moved, image))

    def _on_image_moved(self, image: Image, event=None) -> None:
        """Lay the results of ``image`` (and its probability layer) on it again (hand-edited ones too: their
        pixels are not touched), and measure their tables again in the image's unit."""
        for record in list(self.records.values()):
            if record.image is image and self._in_viewer(record.layer):
                with self.self_writing():
                    moved = lay_on(record.layer, image, record.channel)
                if moved:
                    record.measured = None
                    self._stale[record.layer.unique_id] = record.layer
                    self._table_timer.start()
        layer, channel = self._probability_layers.get(image.unique_id, (None, None))
        if layer is not None and self._in_viewer(layer):
            with self.self_writing():
                lay_on(layer, image, channel)

    def _result_under(self, edited: Labels) -> Labels | None:
        """The layer put under the hand-edited layer ``edited`` for the results that followed the edit,
        while it still holds what the widget wrote there; None if there is none."""
        return next((record.layer for record in self.records.values() if record.below is not None
                     and record.below.unique_id == edited.unique_id and self._in_viewer(record.layer)
                     and not record.edited()), None)

    def _put_under(self, layer: Labels, edited: Labels) -> None:
        """The new result ``layer`` just under the ``edited`` one, drawn as outlines, and the edited one selected
        again: the corrections stay in sight, the two are told apart (QA: filled under the filled edited layer,
        a nucleus the user had erased showed through from the new result, as if the erasure were undone), and
        the paint and erase tools go on acting on the edited layer (QA: napari selected the new result, hidden
        under it, and the next erasures went there unseen, so neither layer held all the corrections). The count
        and the settings stay the new result's."""
        ids = [other.unique_id for other in self.viewer.layers]
        with self.self_writing():
            self.viewer.layers.move(ids.index(layer.unique_id), ids.index(edited.unique_id))
            layer.contour = UNDER_EDITED_CONTOUR
        self.record(layer).below = edited
        self.reselecting = True
        try:
            self.viewer.layers.selection.active = edited
        finally:
            self.reselecting = False

    def _in_viewer(self, layer: Any) -> bool:
        return any(other.unique_id == layer.unique_id for other in self.viewer.layers)

    @contextmanager
    def self_writing(self):
        """Layer events fired inside are the widget's own doing: not hand edits, not new images."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False

    def show_probabilities(self, image: Image, nucleus: Any, channel: tuple[int, int] | None = None) -> None:
        """Show the nucleus probability of ``image`` (of its ``channel``, if one was segmented), in the
        layer that shows it already if there is one of that shape."""
        layer, _ = self._probability_layers.get(image.unique_id, (None, None))
        nucleus = shown(nucleus, channel)
        self._follow_placement(image)
        if layer is not None and self._in_viewer(layer) and layer.data.shape == np.shape(nucleus):
            layer.data = nucleus
            lay_on(layer, image, channel)  # (another channel: its place)
            self._probability_layers[image.unique_id] = (layer, channel)
            return
        with self.self_writing():  # not an image the user opened: the picker keeps its choice
            layer = self.viewer.add_image(
                nucleus, name=f"{image.name} nucleus probability", colormap="magma", blending="additive",
                opacity=0.6, contrast_limits=(0, 1), metadata={PROBABILITY_MAP_KEY: image.name},
                **placement(image, channel, kept=True),
            )
        self._probability_layers[image.unique_id] = (layer, channel)

    def removed(self, layer: Any) -> None:
        """Forget a layer taken out of the viewer (an image's layer, or one of the widget's)."""
        uid = layer.unique_id
        for key in [key for key, written in self._by_image.items() if uid in (key[0], written.unique_id)]:
            del self._by_image[key]
        self._probability_layers.pop(uid, None)
        self.records.pop(uid, None)
        self.lazy.pop(uid, None)
        for record in self.records.values():  # a result drawn as outlines under an edited layer taken out: filled
            if record.below is not None and record.below.unique_id == uid:
                record.below = None
                record.layer.contour = 0
        for pending in (self._edited, self._redrawn, self._stale):
            pending.pop(uid, None)
        if self.is_shown(layer):
            self.shown = None
            self._show_count(None, "No segmentation shown")
            if self.records:  # show (and export) the most recent result still open
                self.show(list(self.records.values())[-1].layer)

    def _on_active_layer(self, event=None) -> None:
        """Selecting one of the widget's Labels layers shows its count, and Export writes its table."""
        if self.reselecting:
            return
        layer = self.viewer.layers.selection.active
        record = self.record(layer)
        lazy = self.lazy.get(getattr(layer, "unique_id", None))
        if record is not None and not self.is_shown(layer):
            self.show(record.layer)
        elif lazy is not None and not self.is_shown(layer):
            self.show_lazy(lazy)

    # ---- hand edits -------------------------------------------------------------------------

    def _on_hand_edit(self, event) -> None:
        # napari emits `paint` just before it writes the pixels: recount once control returns.
        if not self.writing:
            self._edited[event.source.unique_id] = event.source
            self._count_timer.start()

    def _on_redrawn(self, event) -> None:
        # Undo and redo change the pixels and redraw the layer without a paint event; so do
        # moving through a stack's planes and other redraws, which change nothing: check which.
        if not self.writing:
            self._redrawn[event.source.unique_id] = event.source
            self._redraw_timer.start()

    def _check_redrawn(self) -> None:
        while self._redrawn:
            _, layer = self._redrawn.popitem()
            record = self.record(layer)
            if record is not None and checksum(labels_of(layer)) != record.counted:
                self.mark_changed(record.layer)

    def _recount_edited(self) -> None:
        while self._edited:
            _, layer = self._edited.popitem()
            record = self.record(layer)
            if record is not None:
                self.mark_changed(record.layer)

    # ---- counts and tables ------------------------------------------------------------------

    def mark_changed(self, layer: Labels, count: int | None = None, fingerprint: int | None = None) -> None:
        """Show the layer's count at once (a large layer's when a worker has it); measure its table
        when the changes pause."""
        record = self.record(layer)
        if count is None and layer.data.size > self.count_in_worker_pixels:
            self._count_in_worker(layer)
        else:
            record.counted = checksum(labels_of(layer)) if fingerprint is None else fingerprint
            self.show(layer, count)
        self._stale[layer.unique_id] = layer
        self._table_timer.start()

    def show(self, layer: Labels, count: int | None = None, sections: int | None = None) -> None:
        """Show the count of ``layer`` (counting it, in a worker if it is large); of 3-D nuclei, with
        their ``sections`` in the planes (counted here if not given and the layer is small)."""
        if count is None:
            if layer.data.size > self.count_in_worker_pixels:
                self._count_in_worker(layer)
                return
            count = count_labels(labels_of(layer))
        self.shown = layer
        text = _nuclei_in(count, layer)
        planes = int(np.prod(labels_of(layer).shape[:-2]))
        linked = volume_axis(layer)
        if linked is not None:
            text += self._in_3d(layer, linked, sections)
        elif planes > 1:  # each plane is segmented on its own: a nucleus in 5 z-planes counts 5 times
            text += f", summed over its {planes} planes" + self._in_plane_shown(layer)
            self._shown_count = (layer.unique_id, count)
        text += _border_note(layer, labels_of(layer))
        record = self.record(layer)
        if record is not None and record.below is not None and self._in_viewer(record.below):
            text += f" (under your edited '{record.below.name}', which stays on top)"
        self._show_count(layer, text)

    def _in_plane_shown(self, layer: Labels) -> str:
        """What the count line of a stack of planes adds: the count of the plane on screen (QA: a time-lapse of
        5 frames said '257 nuclei, summed over its 5 planes', and nothing of the frame shown: 53)."""
        data = layer.data
        if (not isinstance(data, np.ndarray) or data.ndim < 3 or self.viewer.dims.ndisplay == 3
                or data[(0,) * (data.ndim - 2)].size > PLANE_COUNT_PIXELS):
            return ""  # (in 3-D every plane is on screen; a plane this large is not counted on the main thread)
        place = np.round(np.asarray(layer.world_to_data(self.viewer.dims.point))[: data.ndim - 2]).astype(int)
        if not np.all((place >= 0) & (place < data.shape[: data.ndim - 2])):
            return ""  # (the view is past this layer's planes)
        return f" ({count_labels(data[tuple(place)])} in the plane shown)"

    def _on_dims(self, event=None) -> None:
        if not self.closed:
            self._step_timer.start()

    def _on_step(self) -> None:
        """The view moved to another plane: the count line of a stack of planes says that plane's count."""
        layer = self.shown
        if (layer is not None and self._shown_count is not None and self._shown_count[0] == layer.unique_id
                and self._in_viewer(layer) and self.record(layer) is not None):
            self.show(layer, self._shown_count[1])

    def _in_3d(self, layer: Labels, linked: int, sections: int | None) -> str:
        """What the count line adds for 3-D nuclei linked along the axis ``linked``: how many sections
        over how many planes, and over how many stacks (time points) the count is summed."""
        labels = labels_of(layer)
        if sections is None and labels.size <= self.count_in_worker_pixels:
            sections = count_sections(labels, linked)
        planes = labels.shape[linked]
        text = ", counted in 3-D" + (f" ({sections} sections over its {planes} planes)" if sections is not None
                                     else f" through its {planes} planes")
        others = [axis for axis in range(labels.ndim - 2) if axis != linked]
        stacks = int(np.prod([labels.shape[axis] for axis in others]))
        if stacks > 1:
            names = [labels_axis_labels(self.viewer, layer)[axis].strip().lower() for axis in others]
            text += f", summed over its {stacks} {'time points' if set(names) <= TIME_LABELS else 'stacks'}"
        return text

    def _count_in_worker(self, layer: Labels) -> None:
        self.shown = layer
        self._show_count(layer, f"Counting the nuclei in '{layer.name}'...")
        self._count_requests += 1
        # The live array, not a copy (a copy takes as long as the count): if the brush moves on
        # meanwhile, that stroke asks for a newer count, and only the newest is shown.
        worker = thread_worker(_count_with_sections, start_thread=False)(labels_of(layer), volume_axis(layer))
        worker.returned.connect(partial(self._on_counted, layer, self._count_requests))
        worker.start()

    def _on_counted(self, layer: Labels, request: int, counted: tuple[tuple[int, int], int | None]) -> None:
        record = self.record(layer)
        if record is None or self.closed:
            return
        (count, record.counted), sections = counted
        if request == self._count_requests and self.is_shown(layer):
            self.show(layer, count, sections)

    def refresh_tables(self, *, busy: bool = False) -> None:
        """Measure the tables of changed layers in workers: a large image's table takes seconds.

        Not while ``busy`` (a re-threshold runs: the slider is moving, the table would be stale
        before it is done, and it would hold up the re-threshold), and one table of a layer at a time.
        """
        for uid, layer in list(self._stale.items()):
            record = self.record(layer)
            if record is None:
                self._stale.pop(uid)
            elif not busy and uid not in self._measuring:
                self._stale.pop(uid)
                measuring = self._measuring  # not via self: the widget may be closed first
                measuring.add(uid)
                record.measure_in_worker(partial(measuring.discard, uid))
        if self._stale:
            self._table_timer.start()  # try again in a moment

    def _refresh_stale_tables(self) -> None:
        self.refresh_tables(busy=self._busy())

    def _image_under(self, shape: tuple[int, ...], source: Any = None) -> Image | None:
        """The image whose intensities a Labels layer of the user's of ``shape`` is measured on: the image named
        by ``source`` (the :data:`SOURCE_IMAGE` of a copy of a result) when it is open and has that shape, else
        that of the result whose count is shown, when its labels have that shape (a corrected copy of it), else
        the first image layer whose data has it (a gray or an RGB one); None when none has."""
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image) and not layer.multiscale]
        record = self.record(self.shown)
        candidates = ([layer for layer in images if source is not None and str(layer.unique_id) == source]
                      + ([] if record is None or record.channel is not None else [record.image]) + images)
        for image in candidates:
            if self._in_viewer(image) and plane_shape(np.shape(image.data), image.rgb) == tuple(shape):
                return image
        return None

    def table_now(self, layer: Labels) -> Any:
        """The table of ``layer`` as it is now (measured here if it is not up to date; a Labels layer of the user's
        is measured each time, on the image it lies on, its features left as they are)."""
        record = self.record(layer)
        if layer.unique_id in self.lazy:  # segmented block by block: the run's table
            return layer.features
        if record is None:  # a Labels layer of the user's own (a copy of a result may keep a channel axis)
            # measured, not written into its features (review: a column of the user's, 'cell_class', was lost),
            # with the intensities of the image it lies on (review: a corrected copy of a result had none)
            labels = np.asarray(labels_of(layer))
            source = None if KEPT_CHANNEL_AXIS in layer.metadata else layer.metadata.get(SOURCE_IMAGE)
            image = self._image_under(labels.shape, source)
            return nuclei_table(labels, None if image is None else image.data, bool(image is not None and image.rgb),
                                pixel_size(layer))
        else:
            self._stale.pop(layer.unique_id, None)
            record.measure_now()
        return layer.features


def export_csv(outputs: OutputLayers, path: Path, layer: Labels | None) -> tuple[str, str]:
    """Write the per-nucleus table of ``layer`` (one of ``outputs``' or any Labels layer) to ``path``; for
    a result of the widget's, an ``exclude_border`` column says whether the nuclei touching the border
    were left out. Returns how it went for the user: ``("info" | "warning" | "error", sentence)``."""
    table, saved = table_to_export(outputs, path, layer)
    return ("warning", saved) if table is None else write_exported(table, path, saved)


def table_to_export(outputs: OutputLayers, path: Path, layer: Labels | None) -> tuple[Any, str]:
    """The table :func:`export_csv` writes of ``layer`` (measured now if it is not up to date; on the main
    thread) and the sentence that says it was saved to ``path``; ``(None, why not)`` without a layer."""
    if layer is None:
        return None, "Segment an image first; there is no table to export."
    table = outputs.table_now(layer)
    exported = table.drop(columns="index", errors="ignore")
    exported = exported.rename(columns=plane_columns(labels_axis_labels(outputs.viewer, layer), set(exported.columns)))
    if "exclude_border" in layer.metadata:
        exported = exported.assign(exclude_border=bool(layer.metadata["exclude_border"]))
    saved = f"Saved the {len(table)} nuclei of '{layer.name}' to {path}."
    record = outputs.record(layer)
    below = None if record is None else record.below
    if below is not None and outputs._in_viewer(below) and below.unique_id != layer.unique_id:
        # (QA: a nudge of the slider after a correction makes a new result, selected; its table lacks the edits)
        saved += f" Your corrections are in '{below.name}': select it and Export CSV for their table."
    return exported, saved


def write_exported(table: Any, path: Path, saved: str) -> tuple[str, str]:
    """Write ``table`` (of :func:`table_to_export`) to ``path``: ``("info", saved)``, or ``("error", why)``.
    Needs no viewer: the widget runs it in a thread (50,000 nuclei take a second or more to write)."""
    try:
        write_csv(table, path)
    except OSError as error:
        return "error", f"Cannot write {path}: {error.strerror or error}."
    return "info", saved


def _nuclei_in(count: int, layer: Labels) -> str:
    """The start of the count line: ``"12 nuclei in 'name'"``."""
    return f"{count} {'nucleus' if count == 1 else 'nuclei'} in '{layer.name}'"


def _border_note(layer: Labels, labels: np.ndarray | None = None) -> str:
    """What the count line adds for a result whose nuclei touching the border were left out; a nucleus
    painted at the border by hand since (in ``labels``, the layer's in memory) is counted, and it says so."""
    if not layer.metadata.get("exclude_border"):
        return ""
    if isinstance(labels, np.ndarray) and labels.ndim >= 2 and labels.size and (
            labels[..., 0, :].any() or labels[..., -1, :].any() or labels[..., 0].any() or labels[..., -1].any()):
        return ", leaving out the nuclei found touching the border (those painted there are counted)"
    return ", not counting those touching the border"
