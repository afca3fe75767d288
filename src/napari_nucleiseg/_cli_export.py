"""``nucleiseg export-bioimageio``: a model as a BioImage.IO package, for Fiji (deepImageJ), QuPath, ilastik.

Example::

    nucleiseg export-bioimageio --model hrnet --out hrnet.zip
    bioimageio test hrnet.zip

Needs the optional extra: ``pip install 'napari-nucleiseg[bioimageio]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """\
The package (BioImage.IO model spec 0.5) holds the network as TorchScript and as
a PyTorch state dict with its source, the percentile normalisation as
preprocessing, test tensors, a cover and a README: what the spec cannot express
(the nucleus size the model expects, our threshold and splitting of touching
nuclei), the training data and their licences, and the validation scores.
exit status: 0 when the package was written, 1 when it was not, 2 for a wrong
command line.
"""


def add_parser(commands: Any) -> None:
    """Add the ``export-bioimageio`` command to the ``nucleiseg`` subcommands."""
    from .weights import BUNDLED_MODELS

    export = commands.add_parser(
        "export-bioimageio",
        help="write a model as a BioImage.IO model package (for deepImageJ, QuPath, ilastik)",
        description="Write a bundled or fine-tuned model as a BioImage.IO model package (a .zip).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--model", required=True, type=_model_name, metavar="|".join(BUNDLED_MODELS) + "|FILE",
                        help="a bundled model, or a weights file (e.g. one made with nucleiseg finetune)")
    export.add_argument("--out", required=True, type=Path, metavar="MODEL.zip", help="the package to write")
    export.add_argument("--licence", default=None, metavar="SPDX",
                        help="the weights' licence as an SPDX identifier (default: the one the weights file names)")
    export.add_argument("--overwrite", action="store_true", help="replace the file given with --out")


def run_export(args: argparse.Namespace) -> int:
    """The ``export-bioimageio`` command: check, export, say where the package is."""
    from .bioimageio_export import ExportError, export_bioimageio
    from .cli import CommandError
    from .errors import WeightsError

    try:
        path = export_bioimageio(args.model, args.out, overwrite=args.overwrite, licence=args.licence)
    except (ExportError, WeightsError) as error:
        raise CommandError(" ".join(str(error).split()).rstrip(".") + ".") from None
    except OSError as error:  # e.g. a folder of --out that cannot be written to
        raise CommandError(f"cannot write {args.out}: {error.strerror or error}.") from None
    import shlex

    print(f"Wrote {path}. Test it: bioimageio test {shlex.quote(str(path))}")  # (a path with spaces, pasted: QA)
    return 0


def _model_name(text: str) -> str:
    """A bundled model's name from its name or title in any case (HRNet, unet++), as ``segment --model``
    takes it; other text (a weights file) as it is."""
    from .weights import bundled_model_name

    return bundled_model_name(text) or text
