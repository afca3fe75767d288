"""``nucleiseg``: segment the nuclei of many images from the command line (no Qt).

Example::

    nucleiseg segment images/ extra.tif --out results/ --model unet

``nucleiseg finetune`` teaches a model from corrected labels (:mod:`._cli_finetune`).

``--workers N`` segments the images on N worker processes of a dask.distributed cluster on this
machine, ``--scheduler ADDRESS`` on a running cluster (:mod:`._cluster`); ``--resume`` segments only
the images not done yet (:mod:`._manifest`).

For each image it writes ``results/<stem>_labels.tif`` (instance labels of the
image's height and width), and for the whole run ``results/counts.csv`` (one
row per image) and ``results/nuclei.csv`` (one row per nucleus).

A TIFF stack (Z, T, or a leading axis the file does not name) is segmented plane
by plane, as the widget does: its labels keep the stack's shape, its row of
``counts.csv`` the nuclei of all planes, and each nucleus in ``nuclei.csv`` its
plane (``z``, ``t`` or ``plane``). The nuclei of a Z stack's neighbouring planes
are linked into 3-D nuclei (``--3d``, the default for a Z axis): one label, one
count and one row each, with its volume and z/y/x centroid; time points are never
linked. Channels (an ImageJ/OME ``C`` axis, or samples
stored last that are not RGB) are segmented one at a time, chosen with ``--channel``.

``--diameter PX`` gives the median nucleus diameter of the images in pixels. A
model whose weights file records the diameter it was trained at gets each image
resized so that its nuclei arrive at that size (labels and tables stay in the
image's own pixels); with ``--diameter auto`` (the default) each image's diameter
is estimated first. A model that records none runs on the images as they are.
``counts.csv`` records the diameter used (``diameter_px``, empty when none),
whether it was estimated (``diameter_estimated``) and the resize factor
(``scale``, 1: not resized). ``--augment`` averages the network's maps over each
image flipped four ways (``augmented`` in ``counts.csv``). ``--brown-nuclei`` reads
the brown (DAB) of immunohistochemistry as hematoxylin, for markers of nuclei such as
Ki-67 (``brown_nuclei`` in ``counts.csv``); the log says when an image holds brown.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._batch import (
    FolderBusy,
    OutputLock,
    SetAsideError,
    Stops,
    Tables,
    put_back,
    remove_partial_files,
    set_aside,
    stops_as_interrupts,
    write_atomically,
)
from ._cli_large import (
    LARGE_LABELS_SUFFIX,
    ZARR_SUFFIXES,
    LargeImageWritten,
    is_large_input,
    output_stem,
    segment_large_image,
)
from .lazy_io import is_zarr
from .tables import PixelSize, physical_columns
from .volumes import find_volume_axis

if TYPE_CHECKING:
    import pandas as pd

    from .api import SegmentationResult

#: Files taken from a folder given as INPUT (case-insensitive).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: Images of other formats, named when a folder holds them (they are not read: convert them to TIFF).
OTHER_IMAGE_SUFFIXES = (".bmp", ".gif", ".webp", ".jp2", ".czi", ".nd2", ".lif", ".lsm", ".oib", ".oir", ".vsi",
                        ".ims", ".svs", ".ndpi", ".scn", ".mrxs", ".dv", ".stk")
TIFF_SUFFIXES = (".tif", ".tiff")
COUNTS_FILE = "counts.csv"
NUCLEI_FILE = "nuclei.csv"

EXIT_OK = 0
EXIT_FAILED = 1  # nothing segmented, or the run could not start (weights, output folder, existing outputs)
EXIT_USAGE = 2  # as argparse: the command line itself is wrong
EXIT_PARTIAL = 3  # some images were segmented and some skipped (each named on stderr)

#: At most this many existing outputs are listed when refusing to overwrite.
LISTED_EXISTING = 5

EPILOG = """\
exit status: 0 if every image was segmented, 3 if some were and others skipped,
1 if none was (or the run could not start, or stopped on an error such as a full
disk), 2 for a wrong command line, 130 on Ctrl+C, 143 on SIGTERM, 129 on SIGHUP.
Images that cannot be read or segmented, and paths that do not exist, are
reported on stderr and skipped (a file that is not an image is reported only; a
folder's subfolders and images of other formats are named, not searched). A run that stops early
(Ctrl+C, SIGTERM, SIGHUP, a full disk) still writes the tables of the images it
finished; no file is ever left half-written, and a row of counts.csv always
describes the label file beside it. Existing outputs are only replaced with
--overwrite: they are first moved into a replaced-<time> folder in --out, which
is deleted when the run completes (but for the outputs of images that failed this
time) and kept (and named) when it stops; the tables keep the rows of earlier images
not given to the run whose label files are there. One run
at a time writes to a folder. Every run records each image it finishes (in
.nucleiseg/ in --out); --resume then keeps the images done with the same input file and
settings and segments the rest; their earlier outputs are kept in a replaced-<time> folder (named).
--resume refuses a folder whose counts.csv holds images it is not given: it would drop their rows.
"""


class CommandError(Exception):
    """Stops the run with a one-sentence message and an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class Interrupted(Exception):
    """Ctrl+C (or SIGTERM, SIGHUP) during a run, with what was saved of the images done before it."""

    def __init__(self, message: str = "", signum: int = 2) -> None:
        super().__init__(message)
        self.signum = int(signum)


class UnreadableImage(Exception):
    """An input file that cannot be read as an image."""


class UnwritableName(Exception):
    """An image whose output file name the output folder cannot hold."""


class ImageTooSmall(Exception):
    """An image smaller than the nucleus diameter given with ``--diameter``."""


@dataclass(frozen=True)
class Job:
    """One input image and the files it writes."""

    source: Path
    labels_path: Path
    probability_path: Path | None
    #: An earlier run's probability file of this image, when this run writes none: replaced with the labels
    #: (QA: HRNet's probabilities stayed beside UNet's labels, and a later --resume took them as its own).
    earlier_probability: Path | None = None


def main(argv: list[str] | None = None) -> int:
    """Run the ``nucleiseg`` command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's usage error (already printed)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "finetune":
            from ._cli_finetune import run_finetune

            return run_finetune(args)
        if args.command == "export-bioimageio":
            from ._cli_export import run_export

            return run_export(args)
        return run_segment(args)
    except CommandError as error:
        print(f"nucleiseg: {error}", file=sys.stderr)
        return error.status
    except (KeyboardInterrupt, Interrupted) as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        name = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        detail = str(interrupt)
        detail = detail[:1].lower() + detail[1:]  # (after a semicolon; QA: "interrupted by SIGTERM; The files ...")
        print(f"nucleiseg: interrupted{name}{'; ' + detail if detail else ''}.", file=sys.stderr)
        return 128 + int(signum)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .weights import BUNDLED_MODELS, DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="nucleiseg", description="Find cell nuclei in microscopy images.")
    parser.add_argument("--version", action="version", version=f"nucleiseg (napari-nucleiseg) {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    seg = commands.add_parser(
        "segment",
        help="segment image files or folders of images",
        description="Segment the nuclei of image files and folders (png, tif/tiff, jpg/jpeg, OME-Zarr). A TIFF of "
                    "64 megapixels or more, or an OME-Zarr, is read lazily and segmented block by block into "
                    "<name>_labels.ome.zarr.",
        epilog=EPILOG,
    )
    seg.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image file or folder of images")
    seg.add_argument("--out", required=True, type=_output_folder, metavar="DIR",
                     help="output folder (created if missing)")
    seg.add_argument("--model", type=_segment_model, default=None, metavar="|".join(BUNDLED_MODELS) + "|NAME",
                     help=f"bundled model, by name or title, e.g. hrnet or HRNet, or the name of a model of yours "
                          f"(fine-tuned, in your model folder, as the widget lists it) (default: {DEFAULT_MODEL})")
    seg.add_argument("--weights", type=Path, metavar="FILE", help="a weights file to use instead of a bundled model")
    seg.add_argument("--threshold", type=_probability, metavar="T",
                     help="nucleus probability threshold in [0, 1] (default: the model's calibrated one)")
    seg.add_argument("--min-size", type=_pixels, metavar="N",
                     help="drop nuclei smaller than N pixels (default: the model's)")
    seg.add_argument("--channel", type=_channel, metavar="N",
                     help="segment channel N (from 0) of multichannel images, e.g. the DAPI channel of a "
                          "fluorescence TIFF (axes C in its ImageJ or OME metadata, or samples stored last) or the "
                          "blue of an RGB image; needed for images with channels (default: gray and RGB images as "
                          "they are). Z or T stacks, and TIFFs whose leading axis is not named, are planes, not "
                          "channels: each plane is segmented")
    seg.add_argument("--no-split", dest="split", action="store_false", help="do not separate touching nuclei")
    seg.add_argument("--neck-ratio", type=_probability, metavar="R",
                     help="when splitting, cut objects shaped like two nuclei joined by a neck at least R of their "
                          "thickness deep; 0 turns this off (default: the model's calibrated one)")
    seg.add_argument("--exclude-border", action="store_true",
                     help="leave out the nuclei that touch the edge of the image (of each plane of a stack): they "
                          "are in neither the labels, the tables nor the count; counts.csv records it")
    seg.add_argument("--diameter", type=_diameter, default=None, metavar="auto|PX",
                     help="median nucleus diameter of the images in pixels, or auto (the default) to estimate "
                          "it per image; when the model records the diameter it was trained at, each image is "
                          "resized so its nuclei arrive at that size, and the results come back at the image's "
                          "full resolution (a model that records none runs on images as they are)")
    seg.add_argument("--augment", action="store_true",
                     help="test-time augmentation: average the network's maps over each image flipped four ways; "
                          "slightly more accurate, four times the network's time (counts.csv records it)")
    seg.add_argument("--brown-nuclei", action="store_true",
                     help="immunohistochemistry whose marker stains nuclei (Ki-67, ER, PR, p53): read the brown "
                          "(DAB) of brightfield images as hematoxylin, so brown nuclei are found as blue ones are; "
                          "not for markers of membranes or cytoplasm (HER2, CD3, cytokeratin), whose brown would "
                          "be read as nuclei. Other images are read as they are (counts.csv records it)")
    seg.add_argument("--3d", dest="volumes", action=argparse.BooleanOptionalAction, default=None,
                     help="link the nuclei of neighbouring planes of a Z stack into 3-D nuclei (one label, one row "
                          "with volume and z/y/x centroid, one count each); the default for files that name a Z "
                          "axis. With --3d, a stack of one unnamed axis counts as Z; --no-3d keeps the planes' "
                          "nuclei apart. Time points are never linked")
    seg.add_argument("--save-probability", action="store_true",
                     help="also write <stem>_probability.tif: float32 (2, H, W), nucleus and boundary")
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")
    seg.add_argument("--resume", action="store_true",
                     help="keep the images an earlier run into --out finished from the same file with the same "
                          "settings and model, and segment the rest (every run records what it finishes)")
    seg.add_argument("--workers", type=_worker_count, metavar="N",
                     help="segment N images at a time, in N worker processes of one thread each (a dask.distributed "
                          "cluster on this machine; needs the [cluster] extra)")
    seg.add_argument("--scheduler", metavar="ADDRESS",
                     help="segment on a running dask.distributed cluster, e.g. tcp://node1:8786 (dask-jobqueue, "
                          "Kubernetes): its workers read the images, this process writes the results")
    from ._cli_finetune import add_parser

    add_parser(commands)
    from ._cli_export import add_parser as add_export_parser

    add_export_parser(commands)
    return parser


def run_segment(args: argparse.Namespace) -> int:
    """The ``segment`` command: plan, check, then segment every image."""
    if args.weights is not None and args.model is not None:
        raise CommandError("give either --model or --weights, not both.", EXIT_USAGE)
    if args.resume and args.overwrite:
        raise CommandError("give either --resume (keep what is done) or --overwrite (replace it), not both.",
                           EXIT_USAGE)
    if args.workers is not None and args.scheduler is not None:
        raise CommandError("give either --workers (a cluster on this machine) or --scheduler (a running one), "
                           "not both.", EXIT_USAGE)
    if on_cluster(args):
        _require_distributed()
    sources, problems, missed = collect_images(args.inputs)
    folders = {given.resolve() for given in args.inputs if given.is_dir() and not is_zarr(given)}
    folders |= {source.parent.resolve() for source in sources}  # files named one by one, or by a shell glob
    if args.out.resolve() in folders:
        raise CommandError(f"--out {args.out} is the folder of the images: a later run of it would take the label "
                           f"files for images. Choose another folder, e.g. --out {args.out / 'nuclei-results'}.",
                           EXIT_USAGE)
    for problem in problems:
        print(f"nucleiseg: {problem}", file=sys.stderr)
    if not sources:
        raise CommandError("no images to segment (png, tif, tiff, jpg, jpeg or an OME-Zarr folder).")
    jobs = plan_jobs(sources, args.out, save_probability=args.save_probability)
    if not args.overwrite and not args.resume:
        refuse_existing(jobs, args.out)
    if args.resume:
        refuse_dropping_rows(jobs, args.out)

    from .api import load_model
    from .weights import DEFAULT_MODEL, WeightsError

    try:
        model = load_model(args.weights if args.weights is not None else (args.model or DEFAULT_MODEL))
    except WeightsError as error:
        raise CommandError(_one_line(error)) from None
    prepare_output_folder(args.out)
    try:
        with OutputLock(args.out), stops_as_interrupts() as stops:
            return _run_jobs(jobs, model, args, stops, missed=missed)
    except FolderBusy as busy:
        raise CommandError(str(busy)) from None


def on_cluster(args: argparse.Namespace) -> bool:
    """Whether the run segments on a dask cluster (``--workers`` or ``--scheduler``)."""
    return args.workers is not None or args.scheduler is not None


def _run_jobs(jobs: list[Job], model: Any, args: argparse.Namespace, stops: Stops, *, missed: int = 0) -> int:
    """Segment every job into ``args.out`` (which this run holds the lock of); ``missed`` images named on
    the command line were not found (already reported)."""
    import shutil

    from ._manifest import MANIFEST_FOLDER

    remove_partial_files(args.out)  # of a run killed outright (SIGKILL) while it wrote
    remove_partial_files(args.out / MANIFEST_FOLDER / "done")
    remove_partial_files(args.out / MANIFEST_FOLDER / "writing")
    # Every run records what it finishes (QA: a plain run stopped by Ctrl+C had recorded nothing, so --resume
    # segmented its finished images again, 'their file or the settings changed'; an --overwrite run left the
    # records of the images it replaced, so a later --resume took its labels for a hand edit of the earlier
    # run's and wrote the earlier settings beside them).
    manifest = _manifest(model, args)
    order = {job: index for index, job in enumerate(jobs)}
    done = _finished_before(jobs, manifest, args) if args.resume else {}
    todo = [job for job in jobs if job not in done]
    if not args.overwrite and not args.resume:
        refuse_existing(jobs, args.out)  # again: a run that ended since the first check may have written them
    forgotten = {}  # the records forgotten, put back with the outputs if nothing replaces them
    for job in todo if manifest is not None else ():
        with contextlib.suppress(OSError):
            forgotten[job.labels_path] = manifest.path(job.labels_path).read_bytes()
        manifest.forget(job.labels_path)  # first: a record never describes the files that replace its image's
    # --overwrite replaces everything; --resume the outputs of the images it segments again, and the tables,
    # keeping them aside, except those a stopped run wrote and did not get to record: its own
    kept = todo if manifest is None else [job for job in todo if not manifest.written_before_a_stop(job.labels_path)]
    replaced = planned_outputs(jobs if args.overwrite else kept, args.out) if args.overwrite or args.resume else []
    others = rows_of_other_images(jobs, args.out) if args.overwrite else []  # (read before the tables move aside)
    others = [_as_corrected(row, table, manifest, args) for row, table in others] if manifest is not None else others
    try:
        aside = set_aside(replaced, args.out)
    except SetAsideError as error:
        raise CommandError(f"{error}.") from None
    segmented: list[Job] = []
    new_rows: list[dict] = []  # their rows
    skipped = missed
    tables = Tables(lambda rows, nuclei: write_tables(args.out, rows, nuclei))
    for job, (row, table) in done.items():
        tables.add(row, table, order=order[job])
    for place, (row, table) in enumerate(others):  # first, as they were
        tables.add(row, table, order=place - len(others))
    if others:
        _report(f"nucleiseg: the tables keep the rows of {len(others)} earlier image{'s' if len(others) > 1 else ''} "
                f"not given to this run, whose label files are in {args.out}.")
    if done:
        tables.flush()
    try:
        with _outcomes(todo, model, args, stops) as outcomes:
            for job, outcome in _progress_bar(outcomes, total=len(todo)):
                if isinstance(outcome, str):
                    _report(f"nucleiseg: skipped {job.source}: {outcome}")
                    skipped += 1
                    continue
                try:
                    row, table = outcome.write(None if manifest is None else partial(_note_written, manifest, job))
                except UnwritableName as problem:
                    _report(f"nucleiseg: skipped {job.source}: {problem}.")
                    skipped += 1
                    continue
                if manifest is not None:
                    _record(manifest, outcome, row, table)
                tables.add(row, table, order=order[job])
                segmented.append(job)
                new_rows.append(row)
                _note_shortfall(job, row, model)
                if outcome.note is not None:
                    _report(f"nucleiseg: note: {job.source}: {outcome.note}")
    except (KeyboardInterrupt, CommandError) as stop:
        # Hours of work may be done: the tables of the images finished so far are kept.
        saved = _save_tables_so_far(tables, len(jobs), earlier=len(others))
        if saved and manifest is not None and not args.overwrite:  # (QA: after a plain run's stop, the way on was
            # not said; not after --overwrite, which --resume refuses beside, and may refuse instead: review)
            saved += " To segment the rest, run the same command with --resume."
        if aside is not None:
            saved += f" The files this run was to replace are in {aside}."
        if isinstance(stop, CommandError):
            raise CommandError(f"{stop}{' ' + saved.strip() if saved.strip() else ''}", stop.status) from None
        raise Interrupted(saved.strip().rstrip("."), signum=stops.received[0] if stops.received else signal.SIGINT) from None
    if not segmented and not done:
        if aside is not None:
            for labels_path in put_back(aside, replaced):  # nothing replaced them: nor their records (QA: a
                if labels_path in forgotten:  # later --resume segmented them again, hand corrections set aside)
                    with contextlib.suppress(OSError):
                        write_atomically(manifest.path(labels_path), partial(Path.write_bytes, data=forgotten[labels_path]))
            if not any(aside.iterdir()):
                shutil.rmtree(aside, ignore_errors=True)
                raise CommandError("no image could be segmented; the earlier outputs are left as they were.")
        raise CommandError("no image could be segmented." + (f" The files it was to replace are in {aside}."
                                                               if aside is not None else ""))
    tables.flush()
    rows = [*(row for row, _ in done.values()), *new_rows]  # this run's, and those done before
    in_tables = {str(row["labels_file"]) for row in [*rows, *(row for row, _ in others)]}
    if aside is not None and args.overwrite:
        _keep_outputs_of_failed(aside, replaced, planned_outputs(segmented, args.out), in_tables)
    elif aside is not None:  # --resume: the user asked to go on, not to replace; an output may be hand-corrected
        _keep_outputs(aside, in_tables, "the earlier outputs of the images segmented again (their file or the settings changed) "
                             "are kept in {aside} ({names}); delete it once you do not need them.")
    total = sum(row["nuclei"] for row in rows)
    if done and not todo:
        print(f"Nothing left to segment: all {len(jobs)} images were done before ({total} nuclei). "
              f"Results in {args.out}")
    elif done:
        print(f"Segmented {len(segmented)} of the {len(todo)} images left ({len(done)} of {len(jobs)} "
              f"were done before): {total} nuclei in all. Results in {args.out}")
    else:
        print(f"Segmented {len(segmented)} of {len(jobs)} images: {total} nuclei. Results in {args.out}")
    if missed:  # (QA: 'Segmented 1 of 1 images' beside exit status 3, for a path that did not exist)
        print(f"{missed} more input{'s' if missed > 1 else ''} could not be found or read (see above).")
    return EXIT_PARTIAL if skipped else EXIT_OK  # each image skipped was named on stderr


def _manifest(model: Any, args: argparse.Namespace) -> Any:
    """The :class:`~._manifest.Manifest` of this run's settings, with the SHA-256 of the model's file (None for a
    model made in memory, which no file identifies: a script's, the tests')."""
    from ._manifest import Manifest, file_sha256, run_settings

    return None if model.path is None else Manifest(args.out, run_settings(args, file_sha256(model.path)))


def _finished_before(jobs: list[Job], manifest: Any, args: argparse.Namespace) -> dict[Job, tuple[dict, Any]]:
    """The row and nuclei of each job that an earlier run into the output folder finished as this one would."""
    done = {}
    for job in jobs:
        outputs = [job.labels_path] + ([job.probability_path] if job.probability_path is not None else [])
        before = manifest.finished(job.source, outputs)
        if before is None:
            continue
        remeasure = before.labels_changed and not job.labels_path.name.endswith(LARGE_LABELS_SUFFIX)
        done[job] = _remeasured(job, before, manifest, args) if remeasure else (before.row, before.table)
    return done


def _remeasured(job: Job, before: Any, manifest: Any, args: argparse.Namespace) -> tuple[dict, Any]:
    """The row and nuclei of a finished image (``before``, :class:`~._manifest.Done`) whose labels were
    corrected by hand since: measured again from the labels as they are (QA: --resume kept 12 rows for a label
    file holding 10 nuclei), and recorded so. Labels that cannot be read keep the rows recorded, and the log
    says so, once."""
    import tifffile

    from .lazy_io import quiet_tifffile
    from .tables import nuclei_table

    row, table = before.row, before.table
    try:
        image = read_image(job.source, channel=args.channel)
        with quiet_tifffile():
            labels = np.asarray(tifffile.imread(job.labels_path))
        if labels.shape != image.shape[: labels.ndim] or labels.ndim != len(image.plane_axes) + 2:
            raise UnreadableImage(f"its shape {labels.shape} is not that of the image")
        axis = volume_axis(image.plane_axes, args.volumes) if row.get("nuclei_3d") else None
        measured = nuclei_table(labels, image.data, rgb=image.rgb, volume_axis=axis).drop(columns="index")
    except (Exception, MemoryError) as error:  # a damaged file (a decoder's own error), memory: the rows kept
        print(f"nucleiseg: {job.labels_path.name} was changed since it was segmented and could not be measured "
              f"again ({_one_line(error)}); its rows are those of the labels as segmented", file=sys.stderr)
    else:
        table = _file_table(measured, image, job.source)
        count = len(table)  # a row per nucleus (per plane for planes not linked): as the rows, whatever the ids
        print(f"nucleiseg: {job.labels_path.name} was changed since it was segmented: measured again "
              f"({row.get('nuclei')} -> {count} nuclei)", file=sys.stderr)
        row = {**row, "nuclei": count, "mean_area": _mean_area(table, count)}
    with contextlib.suppress(OSError):  # recorded with the labels as they are now: said once
        manifest.record(job.labels_path, before.input, row, table)
    return row, table


def _as_corrected(row: dict, table: Any, manifest: Any, args: argparse.Namespace) -> tuple[dict, Any]:
    """The row and nuclei of an earlier image that --overwrite keeps: measured again when its labels were
    corrected by hand since (with the settings it was segmented with, and recorded so), as --resume does (QA: an
    --overwrite of another image copied its row, 35 nuclei, beside a label file holding 32)."""
    from ._manifest import Manifest

    labels_path = args.out / str(row["labels_file"])
    found = None if labels_path.name.endswith(LARGE_LABELS_SUFFIX) else manifest.corrected(labels_path)
    if found is None:
        return row, table
    before, settings = found
    source = before.input.get("path") if isinstance(before.input, dict) else None
    if source is None:
        return row, table
    theirs = argparse.Namespace(**{**vars(args), "channel": settings.get("channel"), "volumes": settings.get("volumes")})
    return _remeasured(Job(Path(source), labels_path, None), before, Manifest(args.out, settings), theirs)


def _note_written(manifest: Any, job: Job, written: Path) -> None:
    """Note that the labels of ``job``, written at ``written``, are about to be renamed into place
    (:class:`~._manifest.Manifest`)."""
    try:
        manifest.note_written(job.labels_path, written)
    except OSError as error:
        raise CommandError(f"cannot write {manifest.writing}: {error.strerror or error}.") from None


def _record(manifest: Any, outcome: Finished, row: dict, table: Any) -> None:
    """Record an image whose files are in place (:class:`~._manifest.Manifest`)."""
    try:
        manifest.record(outcome.job.labels_path, outcome.fingerprint, row, table)
    except OSError as error:
        raise CommandError(f"cannot write {manifest.folder}: {error.strerror or error}.") from None


@contextlib.contextmanager
def _outcomes(jobs: list[Job], model: Any, args: argparse.Namespace,
              stops: Stops) -> Iterator[Iterator[tuple[Job, Finished | str]]]:
    """Each job and its :class:`Finished`, or why it was skipped, as the images are done: one after the other
    in this process, or as a dask cluster finishes them (``--workers``, ``--scheduler``)."""
    if not on_cluster(args):
        yield ((job, segment_image(job, model, args, stops, fingerprint=True)) for job in jobs)
        return
    from ._cluster import segment_on_cluster

    with segment_on_cluster(jobs, model.path, args, stops) as outcomes:
        yield outcomes


def segment_image(job: Job, model: Any, args: argparse.Namespace, stops: Stops | None = None,
                  fingerprint: bool = False) -> Finished | LargeImageWritten | str:
    """Segment one image (a stack plane by plane): its :class:`Finished`, or why it is skipped (one line).

    With ``stops``, the run stops (KeyboardInterrupt) when one is asked for, before the image or between its
    planes and tiles. With ``fingerprint``, the input file's :func:`~._manifest.input_fingerprint` (read before
    the image) is kept for the run's manifest.
    """
    from .errors import Cancelled
    from .memory import memory_shortfall
    from .preprocess import ImageError, as_rgb

    if stops is not None:
        stops.check()
    try:
        identity = None
        if fingerprint:
            from ._manifest import input_fingerprint

            identity = input_fingerprint(job.source, None if stops is None else stops.check)
        if job.labels_path.name.endswith(LARGE_LABELS_SUFFIX):
            return segment_large_image(job, model, args, chosen_settings(args),
                                       stops.requested if stops is not None else None, identity)
        image = read_image(job.source, channel=args.channel)
        shortfall = memory_shortfall(image.shape)
        if shortfall is not None:
            raise MemoryError(shortfall)
        # The first plane's type and shape (one sentence if it is no image), then whether the diameter fits.
        _check_diameter_fits(args.diameter, as_rgb(image.data[(0,) * len(image.plane_axes)]).shape)
        result = _segment(image, model, args, stops.requested if stops is not None else None)
    except Cancelled:
        raise KeyboardInterrupt from None
    except (ImageError, MemoryError, UnreadableImage, ImageTooSmall) as error:
        return _one_line(error)
    except Exception as error:  # anything else on one image (torch's "can't allocate memory", a decoder's bug)
        return f"{type(error).__name__}: {_one_line(error)}"
    row = count_row(job, result, result.model_name, args.channel)
    table = _file_table(result.table, image, job.source)
    probabilities = result.probabilities if job.probability_path is not None else None  # only those written
    from .scale import smoothing_note

    unnamed = None if args.volumes or args.channel is not None else _unnamed_planes_note(image)  # (--3d: linked)
    unlinked = (UNLINKED_TIME_NOTE if args.volumes and "T" in image.plane_axes
                and volume_axis(image.plane_axes, True) is None else None)  # (QA: --3d on TYX did nothing, unsaid)
    unsized = (NO_ESTIMATE_NOTE if args.diameter is None and model.diameter is not None and result.diameter is None
               else None)  # (QA: a noisy field judged empty gave 1 of 258 nuclei, and the log said nothing)
    note = image.note or unnamed or unlinked or unsized or smoothing_note(result.noise_smoothing)
    if image.rgb:
        note = colour_note(image.data[(0,) * len(image.plane_axes)], args.brown_nuclei) or note
    return Finished(job, result.labels, probabilities, row, table, image.plane_axes, identity, image.pixel, note)


def _file_table(table: Any, image: InputImage, source: Path) -> Any:
    """An image's nuclei as ``nuclei.csv`` holds them: its planes' columns named (``z``, ``t``, ...), lengths
    in micrometres too when the file says its pixel size (as the widget's table gives them), and the file."""
    columns = plane_columns(image.plane_axes)
    table = table.rename(columns={f"axis_{axis}": name for axis, name in enumerate(columns)})
    if image.pixel is not None:
        table = physical_columns(table, image.pixel)
    return table.assign(file=str(source))


def _mean_area(table: Any, count: int) -> float:
    """``counts.csv``'s mean area of an image's ``count`` nuclei (NaN without nuclei, or for 3-D nuclei)."""
    return float(table["area"].mean()) if count and "area" in table else float("nan")


def count_row(job: Job, result: Any, model_name: str, channel: int | None = None) -> dict[str, Any]:
    """The row of ``counts.csv`` for one finished image: ``result`` is a
    :class:`~napari_nucleiseg.api.SegmentationResult` or a :class:`~napari_nucleiseg.large.LargeResult`
    (whose labels are a lazy array of the same shape); ``channel``: the ``--channel`` it was given."""
    shape = result.labels.shape
    return {
        "file": str(job.source),
        "nuclei": result.count,  # of a stack: all its planes'
        "height": shape[-2],
        "width": shape[-1],
        "planes": _plane_count(shape[:-2]),
        "mean_area": _mean_area(result.table, result.count),
        "labels_file": job.labels_path.name,
        "model": model_name,
        **result.settings.row(),
        "diameter_px": result.diameter if result.diameter is not None else float("nan"),
        "diameter_estimated": result.diameter_estimated,
        "scale": result.scale,
        "augmented": result.augmented,
        "brown_nuclei": result.brown_nuclei,
        "noise_smoothing": result.noise_smoothing,  # (sigma in pixels; 0: not smoothed)
        "channel": channel if channel is not None else float("nan"),  # (two runs of one file, told apart)
    }


def colour_note(plane: Any, brown_nuclei: bool) -> str | None:
    """What the log says of how a colour image (one ``plane``) was read (:func:`~napari_nucleiseg.stains.colour_note`)."""
    from .stains import colour_note as note

    return note(plane, brown_nuclei, OVERLAY_CHOOSE_CHANNEL, BROWN_CHOOSE)


def _segment(image: InputImage, model: Any, args: argparse.Namespace,
             cancelled: Callable[[], bool] | None) -> SegmentationResult:
    """:func:`~napari_nucleiseg.segment` for one image; the same pipeline over every plane of a stack."""
    from .api import result_from_planes, segment
    from .pipeline import run_to_end, segment_planes

    chosen = chosen_settings(args)
    if not image.plane_axes:
        return segment(image.data, model, **chosen, diameter=args.diameter, augment=args.augment,
                       brown_nuclei=args.brown_nuclei, cancelled=cancelled)
    chosen["link_axis"] = volume_axis(image.plane_axes, args.volumes)
    run = segment_planes(image.data, model, chosen, rgb=image.rgb, diameter=args.diameter, augment=args.augment,
                         brown_nuclei=args.brown_nuclei, compact=False, cancelled=cancelled)
    return result_from_planes(run_to_end(run, cancelled), image.data, model_name=model.name)


def chosen_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The post-processing settings given on the command line (None: the model's)."""
    return {"threshold": args.threshold, "min_size": args.min_size, "split": args.split,
            "neck_ratio": args.neck_ratio, "exclude_border": args.exclude_border}


def volume_axis(plane_axes: str, volumes: bool | None) -> int | None:
    """The leading axis to link into 3-D nuclei: a file's Z axis unless ``--no-3d``; with ``--3d``, also
    a stack's only axis when the file does not name it. None: the planes stay apart."""
    if volumes is False:
        return None
    axis, named_z = find_volume_axis((1,) * (len(plane_axes) + 2), rgb=False, metadata={"axes": plane_axes + "YX"})
    return axis if named_z or volumes else None


def plane_columns(plane_axes: str) -> list[str]:
    """The nuclei.csv columns that say a nucleus's plane: ``z`` and ``t`` for the axes a file names so,
    ``plane`` for any other (``plane_1``, ... when there are more)."""
    names = [{"Z": "z", "T": "t"}.get(letter, "plane") for letter in plane_axes]
    return [name if names.count(name) == 1 else f"{name}_{axis}" for axis, name in enumerate(names)]


@dataclass
class Finished:
    """An image segmented, its files not yet written."""

    job: Job
    labels: np.ndarray
    probabilities: np.ndarray | None  # None: not written (no --save-probability)
    row: dict
    table: Any
    plane_axes: str = ""
    fingerprint: dict | None = None  # of the input file, for the manifest of a resumable run
    pixel: PixelSize | None = None  # the input's pixel size, which its label file records too
    note: str | None = None  # said on stderr once written: how an RGB overlay of fluorescence channels was read

    def write(self, before_rename: Callable[[Path], None] | None = None) -> tuple[dict, Any]:
        """Write the image's files; its row of counts.csv and rows of nuclei.csv. ``before_rename(path)`` is
        called with the labels' temporary file before it is renamed into place."""
        write_outputs(self.job, self.labels, self.probabilities, self.plane_axes, self.pixel, before_rename)
        return self.row, self.table


def _check_diameter_fits(diameter: float | None, shape: tuple[int, ...]) -> None:
    """Raise :class:`ImageTooSmall` when the ``--diameter`` given is larger than an image of ``shape``."""
    from .scale import check_diameter

    try:
        check_diameter(diameter, shape)
    except ValueError as error:  # the command line checked the rest: only the image's size is left
        raise ImageTooSmall(_one_line(error)) from None


def _save_tables_so_far(tables: Tables, n_jobs: int, earlier: int = 0) -> str:
    """Write the tables of the images done before a run stopped; say so in a sentence ('' if none). The
    first ``earlier`` rows are of images not in the run (:func:`rows_of_other_images`)."""
    if not tables.rows:
        return ""
    try:
        tables.flush()  # (the rows of earlier images alone too: the run moved their tables aside)
    except CommandError:
        return ""
    kept = f" (and the rows of {earlier} earlier images not in the run)" if earlier else ""
    return (f"{COUNTS_FILE} and {NUCLEI_FILE} hold the {len(tables.rows) - earlier} of {n_jobs} images finished "
            f"before it{kept}.")


def collect_images(inputs: list[Path]) -> tuple[list[Path], list[str], int]:
    """Expand folders to their image files (not recursively); returns the files, what was wrong, and how
    many images were left out by it (the run's exit status says so).

    Explicit files are kept whatever their suffix is (an unsupported one is a problem, but no image left
    out: a shell glob's text file); a file named twice, or through a link, is segmented once (the second
    name is reported); a broken link, a path that does not exist and a folder that cannot be read are
    reported and count as images left out; a folder without images is reported.
    """
    sources: list[Path] = []
    problems: list[str] = []
    missed = 0
    seen: dict[Path, Path] = {}
    for path in inputs:
        if is_zarr(path):  # an OME-Zarr image is a folder
            found = [path]
        elif path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as error:
                problems.append(f"cannot read folder {path}: {error.strerror or error}")
                missed += 1
                continue
            candidates = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
            broken = [f"skipped {p}: a link to a file that does not exist" for p in candidates
                      if p.is_symlink() and not p.exists()]
            problems += broken
            missed += len(broken)
            found = [p for p in candidates if p.is_file()]
            found += [p for p in entries if p.suffix.lower() in ZARR_SUFFIXES and is_zarr(p)
                      and not p.name.endswith(LARGE_LABELS_SUFFIX)]  # not labels this command wrote
            if not found:
                problems.append(f"no images in folder {path}")
            left = _left_out(entries, found, candidates)
            if left:
                problems.append(f"left out of {path}: {left}")
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(f"skipped {path}: not a png, tif, tiff, jpg or jpeg file")
                continue
            found = [path]
        elif path.is_symlink():
            problems.append(f"skipped {path}: a link to a file that does not exist")
            missed += 1
            continue
        else:
            problems.append(f"skipped {path}: no such file or folder")
            missed += 1
            continue
        for file in found:
            key = file.resolve()
            if key in seen:
                if seen[key] != file:
                    problems.append(f"skipped {file}: the same file as {seen[key]}, segmented once")
                continue
            seen[key] = file
            sources.append(file)
    return sources, problems, missed


def _left_out(entries: list[Path], found: list[Path], candidates: list[Path]) -> str:
    """What of a folder's ``entries`` a user may have meant to segment and is not, in words: images of formats
    it does not read (a microscope's own, BMP, WebP; not the notes and metadata beside images) and
    subfolders, which are not searched (hidden entries aside)."""
    taken = set(found) | set(candidates)
    others = [p for p in entries if p not in taken and not p.name.startswith(".")]
    folders = [p.name for p in others if p.is_dir() and not _is_output_folder(p)]
    files = [p.name for p in others if not p.is_dir() and p.suffix.lower() in OTHER_IMAGE_SUFFIXES]
    parts = []
    for names, one, many, why in ((files, "image", "images", "not png, tif, tiff, jpg or jpeg: save such images as TIFF"),
                                  (folders, "subfolder", "subfolders", "not searched: give a subfolder as an input")):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{len(names)} {one if len(names) == 1 else many} ({shown}; {why})")
    return "; ".join(parts)


def _is_output_folder(path: Path) -> bool:
    """Whether ``path`` holds this command's results (``--out images/nuclei-results``) or is one large image's labels."""
    from ._manifest import MANIFEST_FOLDER

    if path.name.endswith(LARGE_LABELS_SUFFIX):
        return True
    try:
        return (path / MANIFEST_FOLDER).exists() or (path / COUNTS_FILE).exists()
    except OSError:
        return False


def plan_jobs(sources: list[Path], out: Path, *, save_probability: bool) -> list[Job]:
    """The output files of every source.

    Two sources that would write the same file, or an output that would replace one of the
    inputs, are usage errors.
    """
    jobs, by_stem = [], {}
    inputs = {source.resolve(): source for source in sources}
    for source in sources:
        stem, large = output_stem(source), is_large_input(source)
        labels = f"{stem}{LARGE_LABELS_SUFFIX}" if large else f"{stem}_labels.tif"
        if stem.casefold() in by_stem:  # (QA: A.png and a.tif: one file on macOS and Windows disks, whose names
            # ignore case: one image's labels would replace the other's)
            earlier = by_stem[stem.casefold()]
            why = (" (names that differ only in case are one file on most laptops' disks)"
                   if output_stem(earlier) != stem else "")  # (QA: said so of a/x.png and b/x.png too)
            raise CommandError(f"{earlier} and {source} would both write {labels}{why}; segment them into different "
                               "--out folders.", EXIT_USAGE)
        by_stem[stem.casefold()] = source
        # An image segmented block by block has no probability file: its probabilities are never held whole.
        probability = out / f"{stem}_probability.tif" if save_probability and not large else None
        job = Job(source, out / labels, probability,
                  None if large or probability is not None else _file_or_none(out / f"{stem}_probability.tif"))
        for output in (job.labels_path, job.probability_path):
            if output is not None and output.resolve() in inputs:  # not even with --overwrite
                raise CommandError(
                    f"the output of {source} would replace the input image {inputs[output.resolve()]}; "
                    "choose another --out folder.",
                    EXIT_USAGE,
                )
        jobs.append(job)
    return jobs


#: How the command line's note on a fluorescence overlay says to segment one channel.
OVERLAY_CHOOSE_CHANNEL = "run it with --channel 0 (red) or --channel 1 (green)"
BROWN_CHOOSE = "run it with --brown-nuclei"


def _note_shortfall(job: Job, row: dict[str, Any], model: Any) -> None:
    """Say so on stderr when an image's nuclei could not be brought to the model's size
    (:func:`~napari_nucleiseg.scale.resize_shortfall`), as the widget does."""
    from .scale import resize_shortfall

    diameter = row.get("diameter_px")
    if diameter is None or not math.isfinite(diameter):
        return
    note = resize_shortfall(float(diameter), float(row["scale"]), getattr(model, "diameter", None))
    if note is not None:
        _report(f"nucleiseg: note: {job.source}: {note}")


def _keep_outputs(aside: Path, in_tables: set[str], sentence: str) -> None:
    """Delete the earlier tables from ``aside`` when the new ones hold a row of every label file of theirs
    (``in_tables``: the label files the new tables name) and keep the rest there, saying so with ``sentence``
    (``{aside}`` and ``{names}`` filled in); remove it if nothing is left. Earlier tables the new ones do not
    cover (unreadable as ours: edited in a spreadsheet; their nuclei.csv gone) are kept and named (QA: deleted,
    with the rows of images this run was not given)."""
    import shutil

    tables = (COUNTS_FILE, NUCLEI_FILE)
    if _covered(aside / COUNTS_FILE, in_tables):
        for name in tables:
            with contextlib.suppress(OSError):
                (aside / name).unlink()
    elif any((aside / name).exists() for name in tables):
        _report(f"nucleiseg: the earlier tables hold rows the new ones do not; they are kept in {aside}.")
    if not aside.is_dir() or not any(aside.iterdir()):
        shutil.rmtree(aside, ignore_errors=True)
        return
    kept = sorted(p.name for p in aside.iterdir() if p.name not in tables)
    if not kept:
        return
    names = f"{', '.join(kept[:LISTED_EXISTING])}{' ...' if len(kept) > LISTED_EXISTING else ''}"
    _report("nucleiseg: " + sentence.format(aside=aside, names=names))


def _covered(counts: Path, in_tables: set[str]) -> bool:
    """Whether the earlier ``counts`` table (set aside) is ours and each of its rows' label files has a row in the
    new tables (``in_tables``), or there is none."""
    import pandas as pd

    from .tables import read_csv_as_written

    if not counts.exists():
        return True
    try:
        table = read_csv_as_written(counts)
    except (OSError, ValueError, pd.errors.ParserError):
        return False
    return "labels_file" in table.columns and {str(name) for name in table["labels_file"]} <= in_tables


def _keep_outputs_of_failed(aside: Path, replaced: list[Path], rewritten: list[Path], in_tables: set[str]) -> None:
    """After a run that completed, delete what it replaced (the outputs of the images it segmented again;
    the tables go in :func:`_keep_outputs`) from ``aside``; the earlier outputs of images it could not
    segment this time stay there, and the user is told where (they are not put back: no row of the new
    tables describes them)."""
    import shutil

    rewritten_names = {path.name for path in rewritten} - {COUNTS_FILE, NUCLEI_FILE}
    for path in replaced:
        old = aside / path.name
        if path.name in rewritten_names and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)  # the OME-Zarr labels of a large image
        elif path.name in rewritten_names:
            with contextlib.suppress(OSError):
                old.unlink()
    _keep_outputs(aside, in_tables,
                  "the earlier outputs of the images not segmented this time are kept in {aside} ({names}).")


def _file_or_none(path: Path) -> Path | None:
    """``path`` if a file is there; None if not, or if its name is too long for the disk."""
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def planned_outputs(jobs: list[Job], out: Path) -> list[Path]:
    """Every file the run writes or replaces: the tables, and each image's labels and probabilities (an
    earlier run's, when this one writes none)."""
    planned = [out / COUNTS_FILE, out / NUCLEI_FILE]
    for job in jobs:
        planned.append(job.labels_path)
        if job.probability_path is not None or job.earlier_probability is not None:
            planned.append(job.probability_path or job.earlier_probability)
    return planned


def refuse_existing(jobs: list[Job], out: Path) -> None:
    """Raise if any output of the run already exists, naming them."""
    existing = [path for path in planned_outputs(jobs, out) if path.exists()]
    if existing:
        them = "them" if len(existing) > 1 else "it"
        raise CommandError(f"{out} already holds {_listed([path.name for path in existing])}; use --overwrite to "
                           f"replace {them}.")


def _listed(names: list[str]) -> str:
    """The first :data:`LISTED_EXISTING` of ``names``, and how many more there are."""
    more = f" and {len(names) - LISTED_EXISTING} more" if len(names) > LISTED_EXISTING else ""
    return ", ".join(names[:LISTED_EXISTING]) + more


def refuse_dropping_rows(jobs: list[Job], out: Path) -> None:
    """Raise if the tables in ``out`` hold rows of images this run is not given: --resume writes the tables of
    the images it is given, and would drop theirs (QA: a run of one new image into a folder of earlier results
    left one row, without --overwrite)."""
    others = [str(row["file"]) for row in _rows_not_given(jobs, out)]
    if others:
        raise CommandError(f"{out / COUNTS_FILE} holds the rows of images this run is not given "
                           f"({_listed(others)}), and --resume writes the tables of the images it is given: give "
                           "those images too, or choose another --out.", EXIT_USAGE)


def rows_of_other_images(jobs: list[Job], out: Path) -> list[tuple[dict, Any]]:
    """``(counts row, nuclei table)`` of each image in the tables in ``out`` that this run is not given and
    whose label file is still there: --overwrite of some images of a finished run keeps the others' rows
    (QA: re-running one image of a batch with --overwrite left the tables with its row alone, and deleted
    the earlier ones). Tables that cannot be read as ours give none."""
    import pandas as pd

    from .tables import read_csv_as_written

    rows = [row for row in _rows_not_given(jobs, out)
            if (out / str(row["labels_file"])).exists()]  # (a large image's labels: an OME-Zarr folder)
    if not rows:
        return []
    try:
        nuclei = read_csv_as_written(out / NUCLEI_FILE)
    except (OSError, ValueError, pd.errors.ParserError):
        return []
    if "file" not in nuclei.columns:
        return []
    return [(row, nuclei[nuclei["file"] == row["file"]].reset_index(drop=True)) for row in rows]


def _rows_not_given(jobs: list[Job], out: Path) -> list[dict]:
    """The rows of ``out``'s counts.csv, as written (names unescaped: :func:`~.tables.read_csv_as_written`), of the
    images whose label files this run does not write; none when there is no such table of ours."""
    import pandas as pd

    from .tables import read_csv_as_written

    try:
        counts = read_csv_as_written(out / COUNTS_FILE)
    except (OSError, ValueError, pd.errors.ParserError):  # none, or not ours: nothing to keep
        return []
    if not {"file", "labels_file"} <= set(counts.columns):
        return []
    given = {job.labels_path.name for job in jobs}
    return [row for row in counts.to_dict("records") if str(row["labels_file"]) not in given]


def prepare_output_folder(out: Path) -> None:
    """Create ``out`` if missing and check that it can be written to."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CommandError(f"cannot use {out} as the output folder: it is a file.") from None
    except OSError as error:
        raise CommandError(f"cannot create the output folder {out}: {error.strerror or error}.") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write to the output folder {out}: permission denied.")


@dataclass(frozen=True)
class InputImage:
    """An image file as it is segmented: one 2-D image, or a stack of them segmented plane by plane."""

    #: ``(*planes, Y, X)`` gray, or ``(*planes, Y, X, 3|4)`` colour.
    data: np.ndarray
    #: The letter of each leading (plane) axis, as in the file (``Z``, ``T``; ``Q`` and others: unknown);
    #: "" for one 2-D image.
    plane_axes: str
    #: Whether the last axis holds the colours of one picture (RGB or RGBA).
    rgb: bool
    #: The size of its pixels in micrometres, when the file says (:func:`tiff_pixel_size`).
    pixel: PixelSize | None = None
    #: What the log says of how it was read, if anything (an RGB TIFF stored planar, read as planes).
    note: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """``(*planes, Y, X)``."""
        return self.data.shape[:-1] if self.rgb else self.data.shape


class _Stored(NamedTuple):
    """A file's pixels, one letter per axis, and what its tags say of its last axis."""

    pixels: np.ndarray
    axes: str  # tifffile's letters, e.g. "YX", "YXS", "ZYX", "CYX", "QYX" (Q: unknown); "" when not told
    colour: bool  # the photometric tag (or format) says RGB
    alpha: bool  # an extra sample is marked as alpha
    pixel: PixelSize | None = None  # the pixel size the file records (TIFF only)
    planar: bool = False  # tagged RGB with its colours stored one after another (S before Y and X)


def read_image(path: Path, channel: int | None = None) -> InputImage:
    """Read one image file: tifffile for TIFF, imageio for the rest.

    The axes are the file's (ImageJ or OME metadata, tifffile's series axes). A leading axis
    that is not channels is a stack's planes: Z, T, or an axis the file does not name (a plain
    ``(N, H, W)`` array). Channels are an axis marked ``C``, or samples stored last that are
    not the colours of an RGB picture; the last axis is colour only when the file says RGB.
    A gray+alpha image keeps its gray channel.

    ``channel`` picks one channel: of a ``C`` axis, of samples stored last, of an RGB
    picture's colours, or of the only axis of 2-4 entries the file does not name (DAPI + a
    marker saved as a plain ``(2, H, W)`` array: planes without ``channel``). A file with
    channels must be given one: its channels are separate stains, not the colours of one
    picture. A file without channels has one (channel 0).

    Raises
    ------
    UnreadableImage
        If the file cannot be decoded, or holds channels and no valid ``channel`` was given.
    """
    is_tiff = path.suffix.lower() in TIFF_SUFFIXES
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_size == 0:
            raise UnreadableImage("the file is empty (0 bytes: was its writing interrupted?)")
    try:
        stored = _read_tiff(path) if is_tiff else _stored_other(_read_other(path))
    except (UnreadableImage, MemoryError):
        raise
    except Exception as error:  # decoders raise anything from OSError to ValueError and their own types
        raise UnreadableImage(f"not a readable image ({_one_line(error) or type(error).__name__})") from None
    image = np.asarray(stored.pixels)
    if image.size == 0:
        raise UnreadableImage("not a readable image (no image data)")
    if image.ndim < 2:
        raise UnreadableImage(f"not an image of rows and columns (shape {image.shape})")
    axes = stored.axes
    if len(axes) != image.ndim or not axes.endswith(("YX", "YXS")):
        axes = "Q" * (image.ndim - 2) + "YX"
    if axes in ("QYX", "IYX") and image.shape[-1] <= 4 < image.shape[0]:
        axes = "YXS"  # samples stored as pages of a few columns: a channels-last array without tags
    # An axis of length 1 holds nothing (a one-plane stack, one channel); the rows of a one-row image do.
    kept = [index for index, letter in enumerate(axes) if image.shape[index] > 1 or letter in "YX"]
    image, axes = image.reshape([image.shape[index] for index in kept]), "".join(axes[index] for index in kept)
    rgb = axes.endswith("S") and stored.colour and image.shape[-1] in (3, 4)
    if axes.endswith("S") and not rgb and image.shape[-1] == 2 and stored.alpha:  # gray + alpha
        image, axes = image[..., 0], axes[:-1]
    channel_axes = [index for index, letter in enumerate(axes)
                    if letter == "C" or (letter == "S" and index == len(axes) - 1 and not rgb)]
    if len(channel_axes) > 1:
        raise UnreadableImage(f"its axes {axes} hold channels twice; save the channel that shows the nuclei "
                              "as an image of its own")
    colour = not channel_axes and rgb and channel is not None
    if colour:
        channel_axes, rgb = [len(axes) - 1], False  # one colour of an RGB picture, e.g. the blue of a stain
    if not channel_axes and not rgb and channel is not None:  # --channel given: an axis the file does not name
        from .channels import short_unnamed_axis

        short = short_unnamed_axis(image.shape, axes.lower())  # (DAPI + marker saved as a plain array)
        channel_axes = [] if short is None else [short]
    if channel_axes:
        index = channel_axes[0]
        count = image.shape[index]
        if channel is None:
            raise UnreadableImage(f"it has {count} channels (axes {axes}); choose the one that shows the nuclei "
                                  f"with --channel N (0 to {count - 1})")
        if channel >= count:
            raise UnreadableImage(f"it has {count} channels (0 to {count - 1}), not a channel {channel}")
        if colour and stored.alpha and count == 4 and channel < 3:  # 0 where the picture is transparent (review)
            from .channels import COLOUR_AXIS, take_channel

            image, axes = take_channel(image, COLOUR_AXIS, channel), axes[:index] + axes[index + 1 :]
        else:
            image, axes = np.take(image, channel, axis=index), axes[:index] + axes[index + 1 :]
    elif channel:
        planes = f" (its {_plane_count(image.shape[:-2])} planes are segmented one by one)" if axes[:-2] else ""
        raise UnreadableImage(f"it has one channel{planes}; --channel {channel} needs more")
    from .pipeline import MIN_STACK_PLANE_SIDE

    plane_axes = axes[: len(axes) - (3 if rgb else 2)]
    plane = image.shape[len(plane_axes) : len(plane_axes) + 2]
    if plane_axes and min(plane) < MIN_STACK_PLANE_SIDE:
        raise UnreadableImage(f"its {_plane_count(image.shape[: len(plane_axes)])} planes (axes {axes}) are "
                              f"{plane[0]} x {plane[1]} pixels, too small to hold nuclei")
    planar = stored.planar and "S" in plane_axes  # (review: not of a gray TIFF's samples stored so, DAPI + GFP)
    note = PLANAR_RGB_NOTE.format(count=image.shape[plane_axes.index("S")]) if planar else None
    return InputImage(image, plane_axes, rgb, stored.pixel, note)


def _unnamed_planes_note(image: InputImage) -> str | None:
    """:data:`UNNAMED_PLANES_NOTE` for a gray image whose only plane axis is a short one the file does not name."""
    from .channels import short_unnamed_axis

    if image.rgb:
        return None
    shape = image.data.shape
    short = short_unnamed_axis(shape, (image.plane_axes + "YX").lower())
    if short is None or shape[short] != _plane_count(shape[: len(image.plane_axes)]):
        return None
    return UNNAMED_PLANES_NOTE.format(count=shape[short])


#: A short axis that the file does not name is segmented as planes, their nuclei counted together: said, as the
#: widget's count says it (QA: DAPI + a marker saved as a plain (2, H, W) array gave 24 + 15 nuclei in one row,
#: with no word on stderr).
UNNAMED_PLANES_NOTE = ("its {count} planes (an axis the file does not name) were segmented one by one and their "
                       "nuclei counted together; if they are channels, give --channel N for the one with the nuclei.")


#: Auto sized nothing: said, with what to do if the image holds nuclei.
NO_ESTIMATE_NOTE = ("no nucleus size could be estimated (it looks empty, or too noisy to size), so it was segmented at "
                    "its own scale; if it holds nuclei, give their diameter with --diameter PX.")


#: --3d on a stack whose planes are time points: never linked, said.
UNLINKED_TIME_NOTE = ("its planes are time points (T), which are never linked into 3-D nuclei (--3d); each was "
                      "segmented on its own.")


#: An RGB TIFF whose colours are stored one after another is what tifffile writes of a (3, H, W) or (4, H, W)
#: array unless told otherwise (a stack of 3 or 4 planes, mostly), and napari reads it as planes: so it is
#: segmented, with this note (QA: an H&E picture saved so gave 2,089 nuclei summed over its colours, not 618).
PLANAR_RGB_NOTE = ("its tags say it is an RGB picture with its colours stored one after another, as tifffile saves "
                   "a ({count}, H, W) array unless told otherwise; its {count} planes were segmented one by one. If "
                   "it is one colour picture, save it with its colours last, (H, W, {count}).")


def _plane_count(leading: tuple[int, ...]) -> int:
    return int(np.prod(leading))


def _read_tiff(path: Path) -> _Stored:
    import tifffile

    from .lazy_io import quiet_tifffile

    # tifffile logs a damaged file's problems and returns an empty array; the caller reports it in one line.
    with quiet_tifffile(), tifffile.TiffFile(path) as tiff:
        if not tiff.pages:
            raise UnreadableImage("not a readable image (the TIFF holds no image: was its writing interrupted?)")
        series = tiff.series[0] if tiff.series else None
        if len(tiff.series) > 1:
            shapes = ", ".join(" x ".join(map(str, s.shape)) for s in tiff.series[:3])
            same = len({tuple(s.shape) for s in tiff.series}) == 1  # (QA: positions of one size were 'different')
            raise UnreadableImage(f"it holds {len(tiff.series)} images{'' if same else ' of different sizes'} "
                                  f"({shapes}{', ...' if len(tiff.series) > 3 else ''}); save each as a file of its own")
        if series is not None and len(series.shape) >= 2:
            plane = tuple(series.shape[-3:-1]) if series.axes.endswith("S") else tuple(series.shape[-2:])
            bytes_per_pixel = int(np.prod(series.shape) // max(1, plane[0] * plane[1])) * series.dtype.itemsize
            _check_declared_size(plane, bytes_per_pixel)
        image = tiff.asarray()
        page = tiff.pages.first
        colour = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        alpha = any(sample in (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
                    for sample in page.extrasamples)
        axes = series.axes if series is not None and len(series.axes) == image.ndim else ""
        pixel = tiff_pixel_size(tiff)
    return _Stored(image, axes, colour, alpha, pixel, planar=colour and "S" in axes[:-1])


#: Lengths in these units are converted to micrometres (the unit of the tables' physical columns).
MICROMETRES_PER = {"um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3,
                   "nanometer": 1e-3, "nanometre": 1e-3, "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
                   "cm": 1e4, "m": 1e6}


def tiff_pixel_size(tiff: Any) -> PixelSize | None:
    """The pixel size a TIFF records, in micrometres: OME's PhysicalSizeX/Y (and Z), or ImageJ's unit with
    the resolution tags (and its slice spacing), or resolution tags in centimetres or inches. None when it
    records none, or one that is no microscope's (under 1 nm or over 20 um a pixel: a scanner's 72 or 600 dpi)."""
    from xml.etree import ElementTree

    page = tiff.pages.first
    sizes: tuple[float, float, float | None] | None = None
    try:
        if tiff.is_ome:
            pixels = next(e for e in ElementTree.fromstring(tiff.ome_metadata).iter() if e.tag.endswith("Pixels"))
            sizes = tuple(_micrometres(pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm"))
                          for axis in "YXZ")
        else:
            resolution = [page.tags.get(f"{axis}Resolution") for axis in "YX"]
            if all(tag is not None for tag in resolution):
                per_unit = [tag.value[0] / tag.value[1] for tag in resolution]
                if tiff.is_imagej:
                    unit = str((tiff.imagej_metadata or {}).get("unit", ""))
                    spacing = (tiff.imagej_metadata or {}).get("spacing")
                else:
                    unit = {2: "inch", 3: "cm"}.get(int(page.tags["ResolutionUnit"].value), "") \
                        if "ResolutionUnit" in page.tags else ""
                    spacing = None
                factor = 25400.0 if unit == "inch" else _micrometres(1.0, unit)
                if factor is not None and all(value > 0 for value in per_unit):
                    z = _micrometres(spacing, unit) if spacing is not None else None
                    sizes = (factor / per_unit[0], factor / per_unit[1], z)
    except (StopIteration, ElementTree.ParseError, TypeError, ValueError, ZeroDivisionError, KeyError):
        return None
    if sizes is None or sizes[0] is None or sizes[1] is None or not all(1e-3 <= size <= 20 for size in sizes[:2]):
        return None
    return PixelSize(sizes[0], sizes[1], "um", z=sizes[2])


def _micrometres(value: Any, unit: str) -> float | None:
    """``value`` in ``unit`` (``um``, ``µm``, ``micron``, ``nm``, ...) in micrometres; None when either is unknown."""
    key = str(unit).strip().lower().replace("\\u00b5", "u")  # (ImageJ may hold the escape as text)
    key = key.replace("\u00b5", "u").replace("\u03bc", "u")  # micro sign, Greek mu
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * MICROMETRES_PER[key] if key in MICROMETRES_PER and math.isfinite(number) else None


def _stored_other(image: np.ndarray) -> _Stored:
    """A PNG's or JPEG's pixels: gray ``(H, W)``, gray+alpha ``(H, W, 2)``, RGB or RGBA (CMYK is converted)."""
    axes = {2: "YX", 3: "YXS"}.get(np.ndim(image), "")
    return _Stored(image, axes, colour=True, alpha=True)


def _read_other(path: Path) -> np.ndarray:
    import imageio.v3 as iio
    from imageio.core.request import InitializationError
    from PIL import Image

    try:
        with Image.open(path) as opened:  # the header only: size and mode, before any pixel is decoded
            width, height = opened.size
            bands, mode = len(opened.getbands()), opened.mode
    except Exception:  # not an image Pillow knows: imageio says why below
        width = height = bands = 0
        mode = ""
    if width and height:
        sample_bytes = max(1, _BITS.get(mode, 8) // 8)
        with contextlib.suppress(OSError), open(path, "rb") as stream:  # 16 bits of colour (Pillow: RGB): 2 bytes a sample
            sample_bytes = 2 if _png_of_16_bit_colour(stream.read(26)) else sample_bytes
        _check_declared_size((height, width), bands * sample_bytes)
    source: Path | bytes = path
    if path.suffix.lower() == ".png":
        source = path.read_bytes()  # read once: checked whole, then decoded
        _check_png_complete(source)
    try:
        if mode == "CMYK":  # print colours, often inverted in JPEGs: Pillow's conversion gives the picture's RGB
            with Image.open(path) as opened:
                return np.asarray(opened.convert("RGB"))
        if isinstance(source, bytes) and _png_of_16_bit_colour(source):
            # Pillow reads 16 bits of colour (or of gray with alpha) as 8 (QA: a 16-bit RGB PNG's intensities
            # came out 257x too small, its green of 0-20,000 cut to 78 levels); libpng, through imagecodecs, not
            import imagecodecs

            return imagecodecs.png_decode(source)
        image = iio.imread(source, plugin="pillow")
    except OSError as error:
        cause = error.__cause__
        if isinstance(cause, InitializationError):  # imageio's "can not handle the given uri"
            raise UnreadableImage("not a readable image (damaged file or unknown format)") from None
        if isinstance(cause, Exception) and str(cause):  # Pillow's reason, e.g. a JPEG cut short in its header
            raise UnreadableImage(f"not a readable image ({_one_line(cause)})") from None
        raise
    return image


#: Bits a sample of Pillow's modes that are not 8-bit.
_BITS = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def _check_declared_size(shape: tuple[int, int], bytes_per_pixel: int) -> None:
    """Refuse, before decoding, an image whose declared size would not fit in the free memory
    (a few bytes of file can declare 40,000 x 40,000 pixels)."""
    from .memory import free_memory, memory_shortfall

    shortfall = memory_shortfall(shape)
    if shortfall is None:
        available = free_memory()
        if available is None:
            return
        decoded = shape[0] * shape[1] * bytes_per_pixel
        if decoded * 2 <= available:
            return
        shortfall = (f"its {shape[0]} x {shape[1]} pixels need {decoded / 2**30:.1f} GB to decode and "
                     f"{available / 2**30:.1f} GB is free")
    raise MemoryError(shortfall)


def _png_of_16_bit_colour(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes) is a PNG of 16 bits per sample with colour or alpha (colour type
    2, 4 or 6; 16-bit gray, type 0, Pillow reads whole)."""
    return (len(data) >= 26 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[24] == 16
            and data[25] in (2, 4, 6))


def _check_png_complete(data: bytes) -> None:
    """Refuse a PNG (the file's bytes) whose pixel data ends before its last row (decoders fill the rest
    with zeros)."""
    import struct
    import zlib

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    position, header, compressed = 8, None, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR" and len(body) == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
        position += 12 + length
    if header is None or header[6] != 0:  # no header (the decoder says so), or interlaced: not checked
        return
    width, height, depth, colour = header[0], header[1], header[2], header[3]
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
    expected = height * (1 + (width * samples * depth + 7) // 8)
    decompressor = zlib.decompressobj()
    try:
        found = 0
        for part in compressed:
            found += len(decompressor.decompress(part, max(0, expected + 1 - found)))
            if found > expected:
                break
    except zlib.error:
        return  # damaged: the decoder says so
    if found < expected:
        rows = found // max(1, 1 + (width * samples * depth + 7) // 8)
        raise UnreadableImage(f"the file is truncated: its pixel data ends after {rows} of its {height} rows")


def write_outputs(job: Job, labels: np.ndarray, probabilities: np.ndarray | None, plane_axes: str = "",
                  pixel: PixelSize | None = None, before_rename: Callable[[Path], None] | None = None) -> None:
    """Write the labels (and, when the job has a probability file, the probabilities) of one image as
    zlib-compressed TIFF; a stack's keep its plane axes (``plane_axes``, e.g. ``Z``; an axis the file did not
    name is written as ``Q``), and the input's ``pixel`` size, when it had one, is recorded in the
    resolution tags (in centimetres, which any TIFF reader understands). A Z stack whose plane spacing is known
    records it too (:func:`_tiff_calibration`)."""
    import tifffile

    planes = "".join(letter if letter in "TZ" else "Q" for letter in plane_axes)
    try:
        # The probabilities first: the label file, in place, is what makes the image count as done.
        if job.probability_path is not None:
            write_atomically(job.probability_path, lambda path: tifffile.imwrite(
                path, probabilities.astype(np.float32, copy=False), compression="zlib", photometric="minisblack",
                **_tiff_calibration(pixel, planes, f"{planes}CYX", np.float32)))
        def write_labels(path: Path) -> None:
            tifffile.imwrite(path, labels, compression="zlib", photometric="minisblack",
                             **_tiff_calibration(pixel, planes, f"{planes}YX", labels.dtype))
            if before_rename is not None:
                before_rename(path)

        write_atomically(job.labels_path, write_labels)
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise UnwritableName(f"its output name is too long for the folder ({len(job.labels_path.name) + 9} "
                                 "characters with the temporary prefix); rename the image") from None
        raise CommandError(f"cannot write {job.labels_path.parent}: {error.strerror or error}.") from None


def _tiff_calibration(pixel: PixelSize | None, planes: str, axes: str, dtype: Any) -> dict[str, Any]:
    """tifffile.imwrite's keywords that record ``pixel`` in an output of ``axes``: the resolution tags (in
    centimetres); for a Z stack whose plane spacing is known, the spacing too (QA: it was lost, and 3-D nuclei
    opened flattened): as an ImageJ hyperstack, which Fiji opens calibrated, where ImageJ takes the axes and the
    type (8 or 16 bit, float), else as OME-TIFF (PhysicalSizeX/Y/Z)."""
    if pixel is None:
        return {"metadata": {"axes": axes}}
    if pixel.z is None or pixel.unit != "um" or "Z" not in planes or len(set(planes)) < len(planes):  # (OME: one Q)
        return {"metadata": {"axes": axes}, "resolution": (1e4 / pixel.x, 1e4 / pixel.y),
                "resolutionunit": "CENTIMETER"}
    if planes in ("Z", "TZ") and np.dtype(dtype) in (np.uint8, np.uint16, np.float32):
        return {"imagej": True, "resolution": (1 / pixel.x, 1 / pixel.y),
                "metadata": {"axes": axes, "spacing": pixel.z, "unit": "um"}}
    return {"ome": True, "resolution": (1e4 / pixel.x, 1e4 / pixel.y), "resolutionunit": "CENTIMETER",
            "metadata": {"axes": axes, "PhysicalSizeX": pixel.x, "PhysicalSizeY": pixel.y, "PhysicalSizeZ": pixel.z,
                         **{f"PhysicalSize{axis}Unit": "\u00b5m" for axis in "XYZ"}}}


def write_tables(out: Path, count_rows: list[dict], tables: list[pd.DataFrame]) -> None:
    """Write nuclei.csv (one row per nucleus, ``file`` first, then a stack's plane), then counts.csv (one row
    per image).

    Each is renamed into place whole, and in this order, so that a run killed between the two (SIGKILL,
    a power cut) never leaves a counts.csv row without its nuclei: counts.csv is the record of which
    images finished, and nuclei.csv may at most hold the nuclei of a few images more, each of which has
    its label file in place.
    """
    import pandas as pd

    from .postprocess import table_columns
    from .tables import write_csv
    from .volumes import VOLUME_COLUMNS

    nuclei = pd.concat(tables, ignore_index=True)
    # A stack's nuclei say their plane (z, t, plane: empty for 2-D images), between file and label.
    # 2-D nuclei and 3-D ones (a linked Z stack) in one run: each column once, those of either kind.
    measured = [column for column in dict.fromkeys(table_columns(colour=True) + VOLUME_COLUMNS) if column in nuclei]
    measured += [column for column in nuclei.columns if column.endswith(("_um", "_um2", "_um3"))]  # physical
    planes = [column for column in nuclei.columns if column not in ("file", *measured)]
    # A column of whole numbers stays one where some images lack it (first_plane of a 2-D image): empty,
    # not 3.0 for 3.
    counted = [column for column in measured if all(pd.api.types.is_integer_dtype(table[column])
                                                     for table in tables if column in table)]
    nuclei = nuclei[["file", *planes, *measured]].astype({column: "Int64" for column in [*planes, *counted]})
    try:
        write_csv(nuclei, out / NUCLEI_FILE)
        write_csv(pd.DataFrame(count_rows), out / COUNTS_FILE)
    except OSError as error:
        raise CommandError(f"cannot write the tables in {out}: {error.strerror or error}.") from None


def _progress_bar(items: Iterable, total: int):
    """Iterate over ``items`` (``total`` of them), with a progress bar when stderr is a terminal, and
    otherwise (a log file, a cluster job's output) a line now and then: :func:`_progress_lines`."""
    if not sys.stderr.isatty():
        return _progress_lines(items, total)
    from tqdm import tqdm

    return tqdm(items, total=total, unit="image", file=sys.stderr)


#: Seconds between two progress lines in a log (stderr not a terminal); a run done sooner writes none.
PROGRESS_LINE_SECONDS = 60.0


def _progress_lines(items: Iterable, total: int) -> Iterator:
    """``items``, writing to stderr at most one line a :data:`PROGRESS_LINE_SECONDS` of how many of
    ``total`` images are done, and the time left at this pace."""
    import time

    start = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= PROGRESS_LINE_SECONDS and done < total:
            last = now
            left = (now - start) / done * (total - done)
            print(f"nucleiseg: {done} of {total} images done in {_duration(now - start)}; about "
                  f"{_duration(left)} left.", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"2 h 7 min"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _report(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _output_folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a folder (. for the current one)")
    return Path(text)


def _model_name(text: str) -> str:
    """A bundled model's name from its name or title in any case; other text is left for argparse to refuse."""
    from .weights import bundled_model_name

    return bundled_model_name(text) or text


def _segment_model(text: str) -> str:
    """--model: a bundled model's name (from its name or title in any case), or the name of one of the user's."""
    from .api import _users_model
    from .user_models import list_user_models
    from .weights import BUNDLED_MODELS

    name = _model_name(text)
    if name in BUNDLED_MODELS or _users_model(text) is not None:
        return name if name in BUNDLED_MODELS else text.strip()
    yours = [path.stem for path in list_user_models()]
    raise argparse.ArgumentTypeError(
        f"no model {text!r}: choose {', '.join(BUNDLED_MODELS)}" + (f" or one of yours ({', '.join(yours)})" if yours
                                                                    else "") + ", or give a file with --weights")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _pixels(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _channel(text: str) -> int:
    return _pixels(text)


def _worker_count(text: str) -> int:
    count = _pixels(text)
    if count < 1:
        raise argparse.ArgumentTypeError("needs at least 1 worker")
    return count


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CommandError("--workers and --scheduler run on dask's distributed scheduler, which is not installed: "
                           "pip install 'napari-nucleiseg[cluster]'.") from None


def _diameter(text: str) -> float | None:
    """``--diameter``: ``auto`` (None: estimated per image) or a positive, finite number of pixels."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a number of pixels") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of pixels above 0")
    return value


if __name__ == "__main__":
    sys.exit(main())
