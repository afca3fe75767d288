"""Which result the dock widget's post-processing controls act on, and the probability maps kept for
each result.

The threshold, min size and boxes act on one result layer at a time, the *target*: the result last
written, or the result layer the user selects in the layer list, whose settings (as it was made) the
controls then show. Selecting any other layer keeps the target. A line above the controls names it.

Each result keeps the probability maps of its run, so that moving a slider re-labels it without the
network. Once the maps of all results pass :data:`CACHE_BUDGET_BYTES`, those of the results used
least recently are freed; a change to such a result says that it needs the image segmented again,
rather than doing nothing without a word.

The 3-D box (link a Z stack's planes into 3-D nuclei) is shown for the target, or before any result
for the image chosen to segment, when its labels have a leading axis that may be linked
(:func:`~napari_nucleiseg.volumes.find_volume_axis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QObject

from ._controls import CountLabel, PostprocessControls, image_metadata, layer_axis_labels
from ._outputs import OutputLayers
from ._rethreshold import Cache, Rethresholder
from .settings import PostprocessSettings
from .volumes import find_volume_axis

#: The probability maps of all results together are kept within this many bytes (the maps of the
#: result the controls act on are always kept). The widget keeps them compactly, 3 bytes a pixel:
#: 1 GiB holds about 20 images of 4096 x 4096, or a 2048 x 2048 stack of 85 planes.
CACHE_BUDGET_BYTES = 2**30


class TargetLabel(CountLabel):
    """The line that names the result layer the settings act on."""

    HELP = ("The result layer that the threshold, min size and boxes below change. Select another result "
            "layer in the layer list to change that one; it shows the settings it was made with")


@dataclass(eq=False)
class Result:
    """A result layer the widget wrote, the maps it was made from, and the settings of its labels."""

    layer: Labels
    cache: Cache | None  # None: freed (see `freed`)
    settings: PostprocessSettings  # what its labels were last made with
    volume_axis: int | None  # the leading axis of its labels the 3-D box links (None: no box)
    key: tuple  # the image (and channel) it was made of: see image_key
    image_name: str
    freed: str = ""  # why its maps are gone
    used: int = 0  # when the controls last acted on it (a tick of SettingsTarget's clock)
    in_blocks: bool = False  # segmented block by block: it has no maps to re-label (a change needs a new run)


def image_key(viewer: Any, image: Image, channel: tuple[int, int] | None) -> tuple:
    """What the 3-D box is shown for: an image (as its shape and axis labels are now) and its channel."""
    return image.unique_id, tuple(image.data.shape), image.rgb, layer_axis_labels(viewer, image), channel


def volume_axis_of(viewer: Any, image: Image | None, channel: tuple[int, int] | None) -> tuple[int | None, bool]:
    """:func:`~napari_nucleiseg.volumes.find_volume_axis` of the Image layer ``image`` (its ``channel``, if
    one is chosen): the leading axis of its labels that may be linked, and whether it is named Z."""
    if image is None or image.multiscale:
        return None, False
    return find_volume_axis(image.data.shape, image.rgb, layer_axis_labels(viewer, image), image_metadata(image),
                            None if channel is None else channel[0])


class SettingsTarget(QObject):
    """The result layer the controls act on (:attr:`layer`), the results' maps, and the line that says which.

    ``write(cache, settings, labels)`` writes the labels the re-thresholder delivers to the target (or,
    for a new run, to its image's result layer) and makes that layer the target.
    """

    FREED = "its probabilities were freed to save memory"
    IMAGE_GONE = "its image was removed"
    IMAGE_CHANGED = "its image was given new data"

    def __init__(self, viewer: Any, outputs: OutputLayers, rethresholder: Rethresholder,
                 controls: PostprocessControls, line: TargetLabel, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer, self.outputs, self.rethresholder, self.controls, self.line = (
            viewer, outputs, rethresholder, controls, line)
        self.results: dict[Any, Result] = {}  # by the layer's unique id
        self.layer: Labels | None = None
        #: The maps of all results are kept within this many bytes.
        self.budget_bytes = CACHE_BUDGET_BYTES
        self._clock = 0
        self._changed_freed = False  # the user changed a setting of a target whose maps are freed
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._show_line()

    def result(self, layer: Any) -> Result | None:
        """The record of a result layer; None for any other layer."""
        return self.results.get(getattr(layer, "unique_id", None))

    def _is_target(self, layer: Any) -> bool:
        return self.layer is not None and getattr(layer, "unique_id", None) == self.layer.unique_id

    # ---- runs and results -------------------------------------------------------------------

    def offer(self, image: Image | None, channel: tuple[int, int] | None) -> None:
        """Before any result, the 3-D box follows the image chosen to segment (and its channel)."""
        if self.layer is None and image is not None:
            self.controls.offer_volumes(*volume_axis_of(self.viewer, image, channel), image_key(self.viewer, image, channel))
        elif self.layer is None:
            self.controls.show_volumes(None, None, False)

    def settings_for_run(self, image: Image, channel: tuple[int, int] | None) -> dict[str, Any]:
        """The settings a run of ``image`` (its ``channel``) makes its first labels with, by name: the
        controls', with the 3-D box's choice when it is shown for that image, else its Z axis linked."""
        chosen = self.controls.for_run()
        chosen["link_axis"] = self.controls.link_axis_for(image_key(self.viewer, image, channel),
                                                          *volume_axis_of(self.viewer, image, channel))
        return chosen

    def write(self, cache: Cache, settings: PostprocessSettings, labels: np.ndarray) -> tuple[Labels, Labels | None]:
        """Write ``labels`` (numbered 1..N) made from ``cache`` with ``settings``: to the target when they
        are its re-threshold, else (a new run) to its image's result layer; that layer is the target now.
        Returns the layer, and the layer edited by hand that was kept (None if none was)."""
        target = self.result(self.layer)
        into = self.layer if target is not None and target.cache is cache else None
        metadata = cache.metadata() | {"exclude_border": settings.exclude_border, "link_axis": settings.link_axis}
        if axes := str(image_metadata(cache.image).get("axes", "")):  # what its file names them (plane columns)
            metadata["file_axes"] = axes
        layer, edited = self.outputs.write(cache.image, labels, count=int(labels.max(initial=0)), metadata=metadata,
                                           channel=cache.channel, model=cache.model_name, into=into)
        result = self.result(layer)
        if result is None:
            axis = volume_axis_of(self.viewer, cache.image, cache.channel)[0]
            result = Result(layer, cache, settings, axis, image_key(self.viewer, cache.image, cache.channel),
                            cache.image.name)
            self.results[layer.unique_id] = result
            cache.image.events.data.connect(self._on_image_data)  # (connecting twice is a no-op)
            layer.events.name.connect(self._on_renamed)
        result.cache, result.settings, result.freed = cache, settings, ""
        if not self._is_target(layer):
            self.layer = layer
            self.controls.show_volumes(result.volume_axis, result.key, settings.link_axis is not None)
        self._changed_freed = False
        self._use(result)
        self._free_over_budget()
        self._show_line()
        return layer, edited

    def write_in_blocks(self, layer: Labels, settings: PostprocessSettings, image: Image,
                        channel: tuple[int, int] | None) -> None:
        """Make the result ``layer`` of ``image`` (its ``channel``) segmented block by block with ``settings``
        the target: the controls cannot re-label it (no maps are kept), and the line says so; they set
        the settings of the next run."""
        result = Result(layer, None, settings, None, image_key(self.viewer, image, channel), image.name,
                        in_blocks=True)
        self.results[layer.unique_id] = result
        self.layer = layer
        self.controls.show_volumes(None, result.key, False)
        self.rethresholder.switch_to(None)
        self._changed_freed = False
        self._use(result)
        self._show_line()

    def release(self) -> None:
        """Act on no result from now on: the controls set the next run's settings (see the widget's
        model choice); selecting a result layer makes it the target again."""
        self.layer = None
        self._changed_freed = False
        self.rethresholder.switch_to(None)
        self.controls.show_volumes(None, None, False)
        self._show_line()

    def controls_changed(self) -> None:
        """The user changed a setting: re-label the target, or say why it cannot be."""
        target = self.result(self.layer)
        if target is not None and target.cache is None and not target.in_blocks:
            self._changed_freed = True
            self._show_line()
        self.rethresholder.request()

    # ---- the layer list ---------------------------------------------------------------------

    def _on_active_layer(self, event=None) -> None:
        """Selecting a result layer makes it the target; selecting another layer keeps the target (as does the
        edited layer selected again under a new result: :meth:`~._outputs.OutputLayers._put_under`)."""
        if self.outputs.reselecting:
            return
        layer = self.viewer.layers.selection.active
        result = self.result(layer)
        if layer is not None and result is None:  # the line names it ('still: ... is not a result'), renamed too
            layer.events.name.connect(self._on_renamed)  # (connecting twice is a no-op)
        if result is not None and not self._is_target(layer):
            self._switch(result)
        else:
            self._show_line()

    def _switch(self, result: Result) -> None:
        """Act on ``result`` from now on: the controls show its settings, and nothing is re-labelled."""
        self.layer = result.layer
        self._changed_freed = False
        self.controls.show_result(result.settings)
        self.controls.show_volumes(result.volume_axis, result.key, result.settings.link_axis is not None)
        self.rethresholder.switch_to(result.cache)
        self._use(result)
        self._show_line()

    def _on_renamed(self, event=None) -> None:
        self._show_line()  # (QA: the line named a renamed result, or the layer selected, by its old name)

    def _on_image_data(self, event) -> None:
        """An image given new data (``layer.data = ...``): its results' maps are of the old data, so the
        settings no longer re-label them from those (QA: a slider nudge re-labelled from the old image, with
        no word); the line says they need it segmented again."""
        self._free_maps_of(event.source, self.IMAGE_CHANGED)
        self._show_line()

    def _free_maps_of(self, image: Any, reason: str) -> None:
        """Free the maps of the results of ``image`` for ``reason``; work on the target's, if among them, stops."""
        for result in self.results.values():
            if result.cache is not None and result.cache.image.unique_id == image.unique_id:
                result.cache, result.freed = None, reason
        target = self.result(self.layer)
        if self.rethresholder.cache is not (target.cache if target is not None else None):
            self.rethresholder.switch_to(None)

    def removed(self, layer: Any) -> None:
        """Forget a result layer taken out of the viewer, and free the maps of an image taken out; a
        target taken out gives way to the result whose count is shown, if any."""
        uid = layer.unique_id
        self._free_maps_of(layer, self.IMAGE_GONE)
        self.results.pop(uid, None)
        if self._is_target(layer):
            shown = self.result(self.outputs.shown)
            if shown is not None:
                self._switch(shown)
                return
            self.layer = None
            self.controls.show_volumes(None, None, False)
        target = self.result(self.layer)
        if self.rethresholder.cache is not (target.cache if target is not None else None):
            self.rethresholder.switch_to(None)
        self._show_line()

    # ---- memory -----------------------------------------------------------------------------

    def _use(self, result: Result) -> None:
        self._clock += 1
        result.used = self._clock

    def _free_over_budget(self) -> None:
        """Free the maps of the results used least recently while all maps pass the budget; the
        target's are kept."""
        caches: dict[int, tuple[Cache, int]] = {}  # a run's maps may serve several layers (an edited one)
        for result in self.results.values():
            if result.cache is not None:
                used = caches.get(id(result.cache), (result.cache, 0))[1]
                caches[id(result.cache)] = (result.cache, max(used, result.used))
        total = sum(cache.probabilities.nbytes for cache, _ in caches.values())
        for cache, _ in sorted(caches.values(), key=lambda item: item[1]):
            if total <= self.budget_bytes:
                break
            if cache is self.rethresholder.cache:
                continue
            total -= cache.probabilities.nbytes
            for result in self.results.values():
                if result.cache is cache:
                    result.cache, result.freed = None, self.FREED

    # ---- the line ---------------------------------------------------------------------------

    def _show_line(self) -> None:
        target = self.result(self.layer)
        if target is None:
            self.line.setText("Settings apply to the next result")
            return
        text = f"Settings apply to: '{target.layer.name}'"
        selected = self.viewer.layers.selection.active
        if target.in_blocks:
            text = (f"'{target.layer.name}' was segmented block by block: change the settings and press Segment "
                    "to run it again")
        elif target.cache is None and target.freed == self.IMAGE_GONE:  # (QA: 'segmented again', with no image)
            text = (f"The settings cannot change '{target.layer.name}': {target.freed}. They apply to the next "
                    "result")
        elif target.cache is None and self._changed_freed:
            text = (f"The settings cannot change '{target.layer.name}' until '{target.image_name}' is segmented "
                    f"again: {target.freed}")
        elif target.cache is None:
            text += f"; {target.freed}: a change needs it segmented again"
        elif selected is not None and self.result(selected) is None:
            text += f" (still: '{selected.name}' is not a result)"
        self.line.setText(text)
