"""What keeps a command-line batch run's output folder whole, whatever stops the run.

- :class:`OutputLock`: one run writes to a folder at a time (a lock file holding the run's pid; the
  lock of a run that died is taken over).
- :func:`write_atomically`: every file is written under a temporary name in the folder and renamed
  into place, so no file is ever half-written under its final name.
- :class:`Tables`: ``counts.csv`` and ``nuclei.csv`` hold rows only for label files of this run (with
  ``--resume``, also those an earlier run finished) that are in place, in the run's order of images
  whatever order they finish in; they are rewritten (atomically) at most every :data:`TABLES_EVERY_S`
  seconds while the run goes on, and at its end however it ends. A row never describes another file
  than the one on disk; a run killed outright (SIGKILL) may lack the rows of its last images.
- :func:`set_aside`: with ``--overwrite`` (and ``--resume``, for the images it segments again), the
  previous run's files are moved into a folder of their own first, so a stopped rerun never leaves old
  and new files side by side.
- :func:`stops_as_interrupts`: SIGTERM and SIGHUP (``timeout``, ``kill``, job schedulers, a closed
  terminal) stop the run as Ctrl+C does, between images or tiles, never in the middle of a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The tables are rewritten at most this often while a run goes on (each rewrite writes them whole).
TABLES_EVERY_S = 20.0
LOCK_FILE = ".nucleiseg.lock"
#: A lock that names no process is another run's being made while younger than this; older, a dead run's.
FRESH_LOCK_SECONDS = 10.0


class FolderBusy(Exception):
    """Another run is writing to the output folder."""


class OutputLock:
    """Holds ``<folder>/.nucleiseg.lock`` while a run writes there."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False

    def __enter__(self) -> OutputLock:
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner, started = _lock_owner(self.path)
                if owner is not None and _alive(owner, started):
                    raise FolderBusy(f"another nucleiseg run (process {owner}) is writing to {self.path.parent}; "
                                     "wait for it to end, or choose another --out folder (if no run is writing "
                                     f"there, delete {self.path}).") from None
                if owner is None and _age(self.path) < FRESH_LOCK_SECONDS:
                    # (QA: a lock another run has made but not yet written its id into was taken over: both ran)
                    raise FolderBusy(f"another nucleiseg run is starting to write to {self.path.parent}; wait for "
                                     "it to end, or choose another --out folder (if no run is writing there, delete "
                                     f"{self.path}).") from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # the lock of a run that died: take it over
                continue
            with os.fdopen(descriptor, "w") as stream:
                stream.write(f"{os.getpid()} {_start_time(os.getpid()) or ''}\n")
            self.held = True
            return self
        raise FolderBusy(f"cannot take the lock {self.path}; another run may be starting there.")

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.held = False


def _lock_owner(path: Path) -> tuple[int | None, str | None]:
    """The process id in a lock file, and its start time when the file records one."""
    try:
        words = path.read_text().split()
        return int(words[0]), (words[1] if len(words) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def _age(path: Path) -> float:
    """Seconds since ``path`` was last written: infinite when it is gone, 0 when it cannot be read (as if just
    made)."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
    except OSError:
        return 0.0


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, from /proc); None where that is not known."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[19]  # field 22; the name in brackets may hold spaces
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started`` where both are known (QA: a lock
    left by a run killed outright blocked the folder for good once its id was another process's, after a reboot)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path``; nothing is left on failure."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


class NameTaken(FileExistsError):
    """:func:`write_new`'s file name was taken (by another run) when the file was to be put in place."""


def write_new(path: Path, write: Callable[[Path], Any]) -> None:
    """As :func:`write_atomically`, but ``path`` is never replaced: :class:`NameTaken` when it exists as the file is
    put in place, so two runs that chose the same free name do not overwrite each other (QA: two fine-tunes
    started together both saved '<base>-finetuned-<date>-2', and one model was lost)."""
    import errno
    import threading

    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")  # (one per writer)
    try:
        write(partial)
        try:
            os.link(partial, path)  # fails if the name is taken, whoever took it
        except FileExistsError:
            raise NameTaken(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        except OSError:  # a file system without hard links: checked, then renamed (a short race, as before)
            if path.exists():
                raise NameTaken(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(partial, path)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


class Tables:
    """The rows of ``counts.csv`` and ``nuclei.csv`` of a run, written so they are never wrong."""

    def __init__(self, write: Callable[[list[dict], list[Any]], None], every_s: float = TABLES_EVERY_S):
        self._write = write
        self.every_s = every_s
        self.rows: list[dict] = []
        self.tables: list[Any] = []
        self._order: list[float] = []
        self._written = 0  # rows in the files on disk
        self._last = time.monotonic()

    def add(self, row: dict, table: Any, order: float | None = None) -> None:
        """The row and nuclei of an image whose label file is in place; the tables list images by ``order``
        (the image's place in the run), whatever order they finish in (by default, in the order added)."""
        self.rows.append(row)
        self.tables.append(table)
        self._order.append(len(self._order) if order is None else order)
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Rewrite both tables with every row so far (if there is any new one)."""
        if self.rows and len(self.rows) != self._written:
            ranks = sorted(range(len(self.rows)), key=self._order.__getitem__)
            self._write([self.rows[rank] for rank in ranks], [self.tables[rank] for rank in ranks])
            self._written = len(self.rows)
        self._last = time.monotonic()


class SetAsideError(OSError):
    """An earlier output could not be moved aside; the ones moved before it were put back."""


def set_aside(paths: list[Path], folder: Path) -> Path | None:
    """Move the files of ``paths`` that exist into a new ``<folder>/replaced-<time>`` folder (one rename
    each); returns it, or None when there was nothing to move. If one cannot be moved (a file held open
    elsewhere, a locked file), those moved before it are put back and :class:`SetAsideError` says which:
    either all are set aside or none is."""
    existing = [path for path in paths if path.exists()]
    if not existing:
        return None
    aside = Path(folder) / time.strftime("replaced-%Y%m%d-%H%M%S")
    number = 1
    while aside.exists():
        number += 1
        aside = aside.with_name(f"{aside.name.split('.')[0]}.{number}")
    aside.mkdir()
    moved: list[Path] = []
    for path in existing:
        try:
            os.replace(path, aside / path.name)
        except OSError as error:
            put_back(aside, moved)
            with contextlib.suppress(OSError):
                aside.rmdir()
            raise SetAsideError(f"cannot move {path} aside to replace it ({error.strerror or error}); no file was "
                                "changed") from None
        moved.append(path)
    return aside


def put_back(aside: Path, paths: list[Path]) -> list[Path]:
    """Move the files of ``paths`` set aside in ``aside`` back to where they were (unless something is
    there now); returns those put back."""
    returned = []
    for path in paths:
        kept = Path(aside) / path.name
        if kept.exists() and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(kept, path)
                returned.append(path)
    return returned


class Stops:
    """What :func:`stops_as_interrupts` yields: whether a stop was asked for, and by which signal.

    A signal does not interrupt the run where it is (a file half-written, a destructor): the run
    polls :meth:`requested` between images and between the tiles of an image, and stops there. A
    second signal stops it at once, for a run stuck where it does not poll.
    """

    def __init__(self) -> None:
        self.received: list[int] = []

    def handle(self, signum, frame) -> None:
        self.received.append(signum)
        if len(self.received) > 1:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        return bool(self.received)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was asked for."""
        if self.received:
            raise KeyboardInterrupt


@contextlib.contextmanager
def stops_as_interrupts() -> Iterator[Stops]:
    """While inside, SIGINT (Ctrl+C), SIGTERM and SIGHUP (``timeout``, ``kill``, job schedulers, a closed
    terminal) ask the run to stop (see :class:`Stops`)."""
    stops = Stops()
    wanted = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {}
    try:
        for signum in wanted:
            previous[signum] = signal.signal(signum, stops.handle)
    except ValueError:  # not the main thread: leave the handlers alone
        previous = {}
    try:
        yield stops
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


#: A folder being written by threads of their own (zarr writes a store's chunks so) is deleted again after this
#: many seconds while writes of a failed run still land in it, up to :data:`REMOVE_TRIES` times.
REMOVE_SETTLE_SECONDS = 0.1
REMOVE_TRIES = 20


def remove_tree(folder: Path) -> None:
    """Delete ``folder`` and what it holds, and delete it again while writes that were under way come back (QA: a
    block-by-block run that failed on a full disk left a store of chunks that landed after it was deleted)."""
    import shutil

    for _ in range(REMOVE_TRIES):
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(REMOVE_SETTLE_SECONDS)
        if not os.path.lexists(folder):
            return


def remove_partial_files(folder: Path) -> None:
    """Delete the temporary files (and folders: the OME-Zarr labels of a large image) of a run that was
    killed outright while it wrote them."""
    import shutil

    for partial in Path(folder).glob(".*.partial"):
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
            continue
        with contextlib.suppress(OSError):
            partial.unlink()
