"""Re-thresholding in the dock widget: the probability maps of the result the controls act on (the
last run's, or a result chosen since: :mod:`._target`), and the labels made from them with the
controls' newest settings, without running the network again.

Small images are labelled at once, on the main thread; larger ones in a worker, where the newest
settings win: while a worker runs, further changes are only noted (the controls hold them) and,
once it finishes, the newest settings are computed next. A worker's single plane finishes and is
shown (the slider passed there); a stack, or work for maps since replaced, stops at its next plane.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject

from ._run import Failure
from .channels import channel_value
from .compact import CompactProbabilities
from .pipeline import label_planes, run_to_end
from .settings import PostprocessSettings

logger = logging.getLogger(__name__)

#: Post-processing at most this many pixels (all planes together) runs at once, on the main
#: thread: at most about 90 ms on two busy cores (measured at 724 x 724 with the slowest
#: post-processing so far), within the 100 ms a slider step may take, and the layer follows the
#: slider with no lag (the cut by shape adds about 8 ms CPU at 724 x 724). Anything larger (0.2 to
#: 1 s at 2048 x 2048) runs in a worker, so the window never freezes.
SYNC_POSTPROCESS_PIXELS = 2**19
#: Closing the widget waits at most this long for a re-threshold to stop (it stops between planes:
#: a 2048 x 2048 plane takes up to about a second).
CLOSE_WAIT_S = 10.0


@dataclass(eq=False)  # compared by identity: a result belongs to one run's maps
class Cache:
    """The probability maps of a finished run, from which every re-threshold of its result starts."""

    image: Image
    probabilities: CompactProbabilities
    #: The settings of the run's first labels: the model's at the run's scale for what the
    #: controls do not set (boundary threshold, neck ratio, seed size).
    settings: PostprocessSettings
    model_key: tuple[str, int]  # weights file and its modification time
    diameter: float | None = None  # the nucleus diameter the network ran for (None: not resized)
    diameter_estimated: bool = False
    scale: float = 1.0  # the factor the image was resized by for the network
    channel: tuple[int, int] | None = None  # (axis, index) of the image's channel segmented; None: all of it
    model_name: str = ""  # the model's name (its file's, or a bundled one's)
    augmented: bool = False  # whether the maps are the mean over flips (the widget's "Average 4 flips")
    brown_nuclei: bool = False  # whether brown (DAB) was read as hematoxylin (the widget's "Brown nuclei")
    #: The calibrated settings of the model that made the maps, at the run's scale (what Reset brings back).
    model_settings: PostprocessSettings | None = None
    noise_smoothing: float = 0.0  # the sigma a noisy gray image was smoothed by before it was read (0: not)

    @classmethod
    def of_run(cls, image: Image, planes: Any, model_key: tuple[str, int],
               channel: tuple[int, int] | None = None, model_name: str = "",
               model_settings: PostprocessSettings | None = None) -> Cache:
        """The cache of a finished run's :class:`~napari_nucleiseg.pipeline.PlanesResult`."""
        return cls(image, planes.probabilities, planes.settings, model_key, planes.diameter,
                   planes.diameter_estimated, planes.scale, channel, model_name, planes.augmented,
                   planes.brown_nuclei, model_settings, planes.noise_smoothing)

    def metadata(self) -> dict[str, Any]:
        """What a result layer records of the run: the diameter it ran for, whether estimated, the
        scale, whether the maps were averaged over flips, whether brown was read as hematoxylin, and the
        channel segmented (None: the whole image), and the sigma of the smoothing of a noisy gray image (0: none)."""
        recorded = {"diameter": self.diameter, "diameter_estimated": self.diameter_estimated, "scale": self.scale,
                    "augmented": self.augmented, "brown_nuclei": self.brown_nuclei,
                    "noise_smoothing": self.noise_smoothing}
        return recorded if self.channel is None else recorded | {"channel": channel_value(self.channel)}


@dataclass(eq=False)
class _Job:
    """A re-threshold running in a worker: of which maps, with which settings."""

    worker: Any
    cache: Cache
    settings: PostprocessSettings
    dropped: bool = False  # told to quit: what it returns is not delivered


def label_in_worker(probabilities: Any, settings: PostprocessSettings) -> Generator[int, None, np.ndarray | Failure]:
    """:func:`~napari_nucleiseg.pipeline.label_planes` for a worker thread: what goes wrong is
    returned as a :class:`~._run.Failure` (a worker that raises ends in a traceback dialog)."""
    try:
        return (yield from label_planes(probabilities, settings))
    except MemoryError:
        shape = (*probabilities.shape[:-3], *probabilities.shape[-2:])
        return Failure(f"Not enough memory to find the nuclei of an image of shape {shape}.")
    except Exception as error:
        logger.exception("Post-processing failed")
        return Failure(f"Finding the nuclei failed: {error}")


class Rethresholder(QObject):
    """Owns the cached maps and the newest-wins re-threshold job.

    ``controls()`` gives the settings the controls show (threshold, min size, split), by name;
    ``deliver(cache, settings, labels_or_failure)`` receives each result that is still wanted.
    """

    def __init__(self, controls: Callable[[], Mapping[str, Any]],
                 deliver: Callable[[Cache, PostprocessSettings, Any], None], parent: QObject | None = None):
        super().__init__(parent)
        self._controls = controls
        self._deliver = deliver
        self.cache: Cache | None = None
        #: Label in the calling thread whatever the size (tests and scripts).
        self.synchronous = False
        #: Maps of at most this many pixels are labelled at once, on the main thread.
        self.sync_pixels = SYNC_POSTPROCESS_PIXELS
        #: The job running in a worker (at most one: a list, so a widget being destroyed can stop it) ...
        self.jobs: list[_Job] = []
        #: ... and the maps and settings of the result last delivered (or that failed): the output
        #: is up to date when they are the current ones.
        self._result_key: tuple[Cache, PostprocessSettings] | None = None
        self.closed = False  # closed widgets start no re-threshold

    @property
    def running(self) -> bool:
        """Whether a re-threshold is running in a worker (its result not yet delivered)."""
        return bool(self.jobs)

    def wanted(self) -> PostprocessSettings | None:
        """The settings the controls ask for, for the cached maps."""
        return None if self.cache is None else self.cache.settings.replace(**self._controls())

    def set_cache(self, cache: Cache | None) -> None:
        """Re-threshold from ``cache`` from now on (None: free the maps, and stop working on them)."""
        self.cache = cache
        if cache is None:
            self._result_key = None
            self.request()

    def switch_to(self, cache: Cache | None) -> None:
        """Re-threshold from another result's ``cache`` from now on (None: a result whose maps were
        freed), whose labels are taken to be those the controls now show (they show its settings): no
        labels are made until they change. Work under way stops, on these maps too: its labels were for the
        result acted on before (QA: that result deleted during a re-threshold came back as a new layer)."""
        self.cache = cache
        self._result_key = None if cache is None else (cache, self.wanted())
        for job in self.jobs:
            job.worker.quit()
            job.dropped = True

    def start_from(self, cache: Cache, settings: PostprocessSettings, labels: Any, *, follow: bool = True) -> None:
        """Re-threshold from a new run's ``cache`` from now on, starting with the ``labels`` it made with
        ``settings``; then, with ``follow``, the controls' newest settings (they may have moved during the
        run; not when they show another model's, chosen during the run)."""
        self.set_cache(cache)
        self.deliver(cache, settings, labels)
        if follow:
            self.request()

    def deliver(self, cache: Cache, settings: PostprocessSettings, outcome: Any) -> None:
        """Hand on labels made from ``cache`` with ``settings`` (or why they could not be made),
        unless the maps were replaced meanwhile."""
        if cache is not self.cache:
            return
        self._result_key = (cache, settings)
        self._deliver(cache, settings, outcome)

    def request(self) -> None:
        """Bring the output up to date with the controls; the newest settings win."""
        cache = self.cache
        wanted = self.wanted()
        up_to_date = cache is None or self.closed or self._result_key == (cache, wanted)
        if self.jobs:
            (job,) = self.jobs
            stack = len(job.cache.probabilities.shape) > 3
            if job.cache is not cache or (stack and job.settings != wanted):
                job.worker.quit()
            return  # _on_finished comes back here
        if up_to_date:
            return
        if self.synchronous or cache.probabilities.pixels <= self.sync_pixels:
            self.deliver(cache, wanted, run_to_end(label_in_worker(cache.probabilities, wanted)))
            return
        worker = thread_worker(label_in_worker, start_thread=False)(cache.probabilities, wanted)
        self.jobs.append(_Job(worker, cache, wanted))
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        worker.start()

    def _on_returned(self, outcome: Any) -> None:
        (job,) = self.jobs
        if not job.dropped:  # (its result may come back after it was told to quit)
            self.deliver(job.cache, job.settings, outcome)

    def _on_finished(self) -> None:
        self.jobs.clear()
        self.request()

    def close(self) -> None:
        """Stop the job under way and wait for it, so that no worker outlives the widget."""
        self.closed = True
        for job in self.jobs:
            job.worker.quit()
            deadline = time.monotonic() + CLOSE_WAIT_S
            while job.worker.is_running and time.monotonic() < deadline:
                time.sleep(0.01)

    def reopen(self) -> None:
        if self.closed:
            self.closed = False
            self.request()
