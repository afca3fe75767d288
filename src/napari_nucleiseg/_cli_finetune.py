"""``nucleiseg finetune``: teach a model from corrected labels, from the command line.

Example::

    nucleiseg finetune a.tif b.tif --labels a_labels.tif b_labels.tif --from hrnet \\
        --out my-cells.safetensors --minutes 3

Then ``nucleiseg segment images/ --weights my-cells.safetensors --out results/``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EPILOG = """\
Only the regions given with --region train (each pixel outside them counts as
unknown, not background); without --region each image counts as checked whole.
A region applies to every image, or to image K only when written K@y0:y1,x0:x1
(K from 1). The new file records the base model and its SHA-256, each image's
shape and hash, the nuclei and pixels it learnt from, the steps and the settings;
its thresholds are the base model's. Ctrl+C stops the run and writes nothing.
exit status: 0 when the file was written, 1 when it was not, 2 for a wrong
command line, 130 on Ctrl+C.
"""

_REGION = re.compile(r"^\s*(?:(\d+)@)?\s*(\d+):(\d+)\s*,\s*(\d+):(\d+)\s*$")
#: Seconds between two progress lines.
PROGRESS_EVERY = 10.0


def add_parser(commands: Any) -> None:
    """Add the ``finetune`` command to the ``nucleiseg`` subcommands."""
    from .learn import DEFAULT_MINUTES
    from .weights import BUNDLED_MODELS, DEFAULT_MODEL

    tune = commands.add_parser(
        "finetune",
        help="fine-tune a model on images with corrected labels",
        description="Fine-tune a model on images and their corrected labels (label images: 0 background, one "
                    "number per nucleus, e.g. the _labels.tif of nucleiseg segment after correcting them).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image file (png, tif/tiff, jpg)")
    tune.add_argument("--labels", nargs="+", required=True, type=Path, metavar="LABEL",
                      help="the corrected label image of each IMAGE, in the same order")
    tune.add_argument("--from", dest="base", default=DEFAULT_MODEL, metavar="|".join(BUNDLED_MODELS) + "|FILE",
                      help=f"the model to start from: a bundled one, one of yours by name, or any weights file (default: {DEFAULT_MODEL})")
    tune.add_argument("--out", type=Path, default=None, metavar="NEW.safetensors",
                      help="the new weights file (default: NAME.safetensors in your model folder, where the widget "
                           "lists it: ~/.local/share/napari-nucleiseg/models on Linux, or NUCLEISEG_MODELS_DIR)")
    tune.add_argument("--name", default=None,
                      help="the new model's name (default: the --out file's name, or the base model's name with "
                           "-finetuned and the date)")
    tune.add_argument("--minutes", type=_minutes, default=DEFAULT_MINUTES, metavar="M",
                      help=f"time budget of the training (default: {DEFAULT_MINUTES:g})")
    tune.add_argument("--region", action="append", type=_region, default=[], metavar="[K@]y0:y1,x0:x1",
                      help="a region whose labels were checked (rows y0 to y1, columns x0 to x1); repeat it for more")
    tune.add_argument("--diameter", type=_positive, default=None, metavar="PX",
                      help="median nucleus diameter of the images in pixels (default: measured on the labels)")
    tune.add_argument("--channel", type=int, default=None, metavar="N",
                      help="the channel that shows the nuclei, for images with channels (as for segment)")
    tune.add_argument("--brown-nuclei", action="store_true",
                      help="read the brown (DAB) of the images as hematoxylin, as segment --brown-nuclei does "
                           "(immunohistochemistry of a nuclear marker); the new file records it")
    tune.add_argument("--overwrite", action="store_true",
                      help="replace the file given with --out (without --out: the model of that --name)")


def run_finetune(args: argparse.Namespace) -> int:
    """The ``finetune`` command: read, check, train, write."""
    from ._batch import stops_as_interrupts
    from .cli import CommandError, Interrupted, UnreadableImage, _duration, read_image
    from .errors import Cancelled, FineTuneError, WeightsError

    if len(args.labels) != len(args.images):
        raise CommandError(f"{len(args.images)} images but {len(args.labels)} label images; give one --labels "
                           "file per image, in the same order.", 2)
    for number, _ in ((k, r) for k, r in args.region if k is not None):
        if not 1 <= number <= len(args.images):
            raise CommandError(f"--region {number}@... names image {number}, but there "
                               f"{'is' if len(args.images) == 1 else 'are'} {len(args.images)}.", 2)
    images, labels = [], []
    if args.out is not None:  # before reading any image
        try:
            exists = args.out.exists()
        except OSError as error:  # (QA: a name too long for the folder ended in a traceback)
            raise CommandError(f"cannot write {args.out}: {error.strerror or error}.") from None
        if exists and not args.overwrite:
            raise CommandError(f"{args.out} already exists; choose another name, or give --overwrite.")
    if args.out is None and args.name is not None and not args.overwrite:
        from .user_models import name_problem, typed_model_name, user_model_path

        taken = None if name_problem(args.name.strip()) else user_model_path(typed_model_name(args.name))
        if taken is not None and taken.exists():
            raise CommandError(f"{taken} already exists; choose another --name, or give --overwrite to replace it.")
    for image_path, labels_path in zip(args.images, args.labels):
        for path in (image_path, labels_path):
            if Path(path).is_dir():  # (QA: "not a readable image ([Errno 21] Is a directory ...)")
                raise CommandError(f"{path} is a folder; give image files, each with its --labels file, in order.")
        try:
            images.append(read_image(image_path, args.channel).data)
        except (UnreadableImage, OSError) as error:
            raise CommandError(f"cannot read {image_path}: {error}.") from None
        try:
            label = read_image(labels_path)
        except (UnreadableImage, OSError) as error:
            raise CommandError(f"cannot read {labels_path}: {error}.") from None
        if label.rgb:
            raise CommandError(f"{labels_path} is a colour picture, not labels (one whole number per nucleus, "
                               "0 for background, e.g. the _labels.tif of nucleiseg segment).")
        if _same_file(image_path, labels_path) or np.array_equal(label.data, images[-1]):
            raise CommandError(f"{labels_path} is the image itself, not its labels; give the label file that "
                               "corrects it (one whole number per nucleus, 0 for background, e.g. the _labels.tif "
                               "of nucleiseg segment).")  # (QA: a background-subtracted image trained on as labels)
        if np.size(label.data) and np.min(label.data) > 0:
            raise CommandError(f"{labels_path} has no background (no pixel is 0): it looks like an image, not labels "
                               "(one whole number per nucleus, 0 for background, e.g. the _labels.tif of nucleiseg "
                               "segment).")
        labels.append(label.data)
    regions = [[box for k, box in args.region if k in (None, number)] or None
               for number in range(1, len(images) + 1)]

    from .learn.finetune import finetune

    reporter = _ProgressLines()
    stops = None
    try:
        with stops_as_interrupts() as stops:
            path = finetune(images, labels, args.base, out=args.out,
                            name=args.name or (args.out.stem if args.out is not None else None),
                            minutes=args.minutes, regions=regions, diameter=args.diameter,
                            overwrite=args.overwrite, brown_nuclei=args.brown_nuclei, progress=reporter,
                            cancelled=stops.requested,
                            log=lambda note: print(f"nucleiseg: {note}", file=sys.stderr))
    except (FineTuneError, WeightsError) as error:
        raise CommandError(" ".join(str(error).split()).rstrip(".") + ".") from None
    except Cancelled:
        signum = stops.received[0] if stops is not None and stops.received else 2
        raise Interrupted("nothing was written", signum=signum) from None
    brown = " --brown-nuclei" if args.brown_nuclei else ""
    steps = reporter.last.steps
    print(f"Fine-tuned for {_duration(reporter.last.elapsed)} ({steps} step{'' if steps == 1 else 's'}): {path}. "
          f"Segment with it: nucleiseg segment IMAGES --weights {shlex.quote(str(path))}{brown} --out DIR")
    return 0


class _ProgressLines:
    """Prints how training goes every :data:`PROGRESS_EVERY` seconds, on stderr."""

    def __init__(self) -> None:
        self.last: Any = None
        self._printed = time.monotonic()

    def __call__(self, progress: Any) -> None:
        self.last = progress
        if time.monotonic() - self._printed >= PROGRESS_EVERY:
            self._printed = time.monotonic()
            left = int(round(progress.remaining))
            print(f"step {progress.steps}, loss {progress.mean_loss:.3f}, {left // 60}:{left % 60:02d} left",
                  file=sys.stderr, flush=True)


def _region(text: str) -> tuple[int | None, tuple[int, int, int, int]]:
    match = _REGION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a region y0:y1,x0:x1 (or K@y0:y1,x0:x1)")
    number = None if match.group(1) is None else int(match.group(1))
    y0, y1, x0, x1 = (int(match.group(i)) for i in range(2, 6))
    if y1 <= y0 or x1 <= x0:
        raise argparse.ArgumentTypeError(f"{text!r} is empty: y1 must be above y0, and x1 above x0")
    return number, (y0, y1, x0, x1)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def _minutes(text: str) -> float:
    return _positive(text)


def _same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths are one file (also through a link, or written two ways)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
