"""Segment the images of a ``nucleiseg segment`` run on a dask.distributed cluster.

``--workers N`` starts a LocalCluster of N worker processes of one thread each on this machine;
``--scheduler ADDRESS`` uses a running cluster (dask-jobqueue on SLURM, Kubernetes, ...), whose workers
must be able to read the input files. Each task is one image: a worker reads it, segments it with the run's
model and sends back its labels, row and nuclei. This process writes every file as results arrive, so the
output folder keeps the guarantees of :mod:`._batch` (one lock, atomic files, tables rewritten as the
run goes), and the cluster needs no access to it.

Workers get the model file's bytes once (a worker plugin; also on workers that join later or are restarted)
and run torch on one thread, so that N single-threaded workers use N cores. A worker that dies (killed, out of
memory) is restarted by its nanny and its image is given to a worker again; an image that has taken a worker
down ``distributed.scheduler.allowed-failures`` + 1 times (3 + 1 by default) is reported and skipped.

Imported only for ``--workers`` and ``--scheduler``: it imports ``distributed`` (the ``[cluster]`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import Client, Future, LocalCluster, WorkerPlugin, as_completed, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from ._batch import Stops, write_atomically
from .cli import CommandError, Finished, Job, _one_line, segment_image

#: How long the client looks for finished images before it looks for a stop (Ctrl+C, SIGTERM) again.
POLL_S = 0.1
#: The cluster's own log lines (of this process's scheduler and client, and of the workers it starts) below
#: this level are not shown: the run reports each image that fails in one line, and what dask logs as an
#: error is often what it then repairs (a result lost with a killed worker is computed again).
CLUSTER_LOG_LEVEL = logging.CRITICAL


class ModelOnWorkers(WorkerPlugin):
    """The run's model, loaded once on each worker from the weights file's bytes, with torch on one thread."""

    def __init__(self, weights: bytes, file_name: str):
        self.weights = weights
        self.file_name = file_name  # a model without a recorded name is named after its file
        self.model: Any = None
        self._folder: Path | None = None

    def setup(self, worker: Any) -> None:
        import torch

        from .api import load_model

        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # only possible before torch's first parallel work
            torch.set_num_interop_threads(1)
        self._folder = Path(tempfile.mkdtemp(prefix="nucleiseg-model-", dir=worker.local_directory))
        path = self._folder / self.file_name
        write_atomically(path, lambda partial: partial.write_bytes(self.weights))
        self.model = load_model(path)

    def teardown(self, worker: Any) -> None:
        self.model = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def segment_task(job: Job, args: argparse.Namespace, plugin_name: str) -> Finished | str:
    """Run on a worker: one image with the model of the plugin ``plugin_name`` (see :func:`~.cli.segment_image`)."""
    model = get_worker().plugins[plugin_name].model
    return segment_image(job, model, args, fingerprint=True)


@contextlib.contextmanager
def segment_on_cluster(jobs: list[Job], model_file: Path, args: argparse.Namespace,
                       stops: Stops) -> Iterator[Iterator[tuple[Job, Finished | str]]]:
    """Each job and its :class:`~.cli.Finished` (or why it was skipped), in the order the cluster finishes
    them; every image is submitted at once, and what is not finished is cancelled when the run stops."""
    import uuid

    run = uuid.uuid4().hex[:12]  # the run's own names: other runs may share a running cluster
    plugin_name = f"nucleiseg-model-{run}"
    plugin = ModelOnWorkers(Path(model_file).read_bytes(), Path(model_file).name)
    with _client(args) as client:
        try:
            client.register_plugin(plugin, name=plugin_name)
        except Exception as error:  # raised on a worker: e.g. a worker without torch or this package
            raise CommandError(f"the dask workers cannot load the model: {type(error).__name__}: "
                               f"{_one_line(error)}") from None
        futures = {client.submit(segment_task, job, args, plugin_name, key=f"nucleiseg-{run}-{index}",
                                 pure=False): job for index, job in enumerate(jobs)}
        try:
            yield _as_finished(client, futures, stops)
        finally:
            client.cancel(list(futures))
            with contextlib.suppress(Exception):  # a scheduler already gone has nothing to unregister
                client.unregister_worker_plugin(plugin_name)


def _as_finished(client: Client, futures: dict[Future, Job], stops: Stops) -> Iterator[tuple[Job, Finished | str]]:
    waiting = as_completed(futures)
    while not waiting.is_empty():
        stops.check()
        batch = waiting.next_batch(block=False)
        if not batch:
            time.sleep(POLL_S)
            continue
        for future in batch:
            job = futures.pop(future)
            yield job, _outcome(client, future)
            future.release()  # its result leaves the worker's memory


def _outcome(client: Client, future: Future) -> Finished | str:
    try:
        return future.result()
    except KilledWorker:
        return (f"it took down the worker segmenting it {_allowed_failures() + 1} times (it may need more memory "
                "than a worker has)")
    except (FutureCancelledError, TimeoutError):
        if client.status != "running":
            raise CommandError(f"lost the dask scheduler at {client.scheduler.address}.") from None
        return "the cluster gave it up (cancelled)"
    except Exception as error:  # segment_image reports an image's own errors: this is the task's transport
        return f"{type(error).__name__}: {_one_line(error)}"


def _allowed_failures() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures"))


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the run's cluster: a new LocalCluster (``--workers``), or the one at ``--scheduler``."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(CLUSTER_LOG_LEVEL)
    try:
        with _connected(args) as client:
            yield client
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _connected(args: argparse.Namespace) -> Iterator[Client]:
    if args.scheduler is not None:
        try:
            client = Client(args.scheduler)  # waits up to dask's distributed.comm.timeouts.connect (30 s)
        except (OSError, TimeoutError, ValueError) as error:
            raise CommandError(f"cannot reach the dask scheduler at {args.scheduler}: {_one_line(error)}") from None
        with client:
            yield client
        return
    try:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=CLUSTER_LOG_LEVEL)
    except Exception as error:  # no processes, no port, ...: what dask says, in one line
        raise CommandError(f"cannot start {args.workers} dask worker processes: {type(error).__name__}: "
                           f"{_one_line(error)}") from None
    with cluster, Client(cluster) as client:
        yield client
