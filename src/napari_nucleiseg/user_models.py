"""The models a user made by fine-tuning: one weights file each in the user's model folder.

Torch-free, so the widget can list them at once. The folder is ``platformdirs``' user data folder
of napari-nucleiseg (``~/.local/share/napari-nucleiseg/models`` on Linux), or the one named by the
environment variable :data:`MODELS_DIR_VARIABLE` (for a lab's shared folder, and for tests).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

from ._batch import write_atomically
from .weights import WEIGHTS_SUFFIX

#: Environment variable naming another folder for the user's models.
MODELS_DIR_VARIABLE = "NUCLEISEG_MODELS_DIR"
#: A default name's date suffix ("-finetuned-20261204", "-finetuned-20261204-2"), taken off a base's name.
FINETUNED_SUFFIX = re.compile(r"-finetuned-\d{8}(-\d+)?$")


def user_models_dir() -> Path:
    """The folder the user's fine-tuned models are saved in and listed from (not created here)."""
    named = os.environ.get(MODELS_DIR_VARIABLE, "").strip()
    if named:
        return Path(named).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-nucleiseg", appauthor=False)) / "models"


def user_model_path(name: str) -> Path:
    """Where the model called ``name`` is saved: ``<user_models_dir>/<name>.safetensors``."""
    return user_models_dir() / f"{name}{WEIGHTS_SUFFIX}"


def finetuned_name(base: str) -> str:
    """The name of a model fine-tuned from the model called ``base`` today, before any number that makes it free:
    "<base>-finetuned-<date>", with such a suffix of the base's own taken off (not doubled)."""
    return f"{FINETUNED_SUFFIX.sub('', base)}-finetuned-{datetime.date.today():%Y%m%d}"


def typed_model_name(name: str) -> str:
    """A name as typed (not blank): without the spaces around it, nor a ``.safetensors`` typed after it."""
    name = name.strip()
    return name.removesuffix(WEIGHTS_SUFFIX).strip() or name


def list_user_models() -> list[Path]:
    """The weights files in the user's model folder, by name (none when the folder does not exist)."""
    folder = user_models_dir()
    if not folder.is_dir():
        return []
    return sorted((path for path in folder.glob(f"*{WEIGHTS_SUFFIX}") if path.is_file() and not path.name.startswith(".")),
                  key=lambda path: path.stem.lower())  # (by name: '-2' after the name without it)


def is_user_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model of the user's own: a weights file in :func:`user_models_dir`."""
    path = Path(path)
    return path.suffix == WEIGHTS_SUFFIX and path.parent.resolve() == user_models_dir().resolve()


#: Longest name a model may have, in characters (and twice as many bytes in UTF-8): it becomes a file name, which
#: most file systems keep to 255 bytes, with ``.safetensors`` and a temporary prefix beside it.
MAX_NAME_LENGTH = 100


def name_problem(name: str, *, outside_folder: bool = False, typed: bool = False) -> str | None:
    """Why ``name`` cannot name a model (one sentence; None: it can): it becomes a file name, and in the user's
    model folder a bundled model's name or title (``HRNet``, ``unetpp``, in any case) would make the user's model
    unreachable by its name (QA: a model named 'HRNet' was listed twice, and ``--model HRNet`` ran the bundled
    one); ``outside_folder``: a file saved elsewhere, which is named by its path, may take it. A name ``typed`` for
    a new model is kept to :data:`MAX_NAME_LENGTH` characters (a model named so already is found as before)."""
    from .weights import MODEL_TITLES, bundled_model_name

    if (not name.strip() or any(char in name for char in '/\\:*?"<>|') or name.startswith(".")
            or not name.isprintable()):  # (QA: a newline or tab in a file's name)
        return f"{name!r} cannot be a model's name: use letters, digits, spaces, '-' or '_'."
    if typed and len(name) > MAX_NAME_LENGTH:
        return f"A model's name of {len(name)} characters is too long; keep it to {MAX_NAME_LENGTH} or fewer."
    if typed and len(name.encode("utf-8")) > 2 * MAX_NAME_LENGTH:
        return (f"A model's name of {len(name.encode('utf-8'))} bytes (its letters beyond ASCII take 2-4 each) is too "
                f"long for a file name; keep it to {2 * MAX_NAME_LENGTH}.")
    bundled = None if outside_folder else bundled_model_name(name)
    if bundled is not None:
        return f"{name!r} is the name of the bundled {MODEL_TITLES[bundled]}; give your model another name."
    return None


def rename_user_model(path: str | os.PathLike, name: str) -> Path:
    """Give the user's model at ``path`` the name ``name``: its file and the name its metadata records
    (shown in the names of the layers it makes). Torch-free: only the file's header is rewritten, into a
    temporary file renamed into place, so a failure leaves the model as it was.

    Raises
    ------
    ValueError
        One sentence: the file is not the user's, the name is not a file name, or it is taken.
    """
    from .weights import METADATA_KEY, read_metadata

    path, name = Path(path), typed_model_name(name)  # (QA: "x.safetensors" made x.safetensors.safetensors)
    problem = _not_users(path) or name_problem(name, typed=True)
    if problem:
        raise ValueError(problem)
    target = user_model_path(name)
    if target.exists() and target.resolve() != path.resolve():
        raise ValueError(f"There is a model called {name!r} already; choose another name.")
    metadata = read_metadata(path)  # a WeightsError says what is wrong with the file
    with open(path, "rb") as stream:
        header_size = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(header_size))
        tensors = stream.read()
    header["__metadata__"][METADATA_KEY] = json.dumps(metadata | {"name": name})
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the tensors on 8 bytes
    write_atomically(target, lambda partial: partial.write_bytes(len(encoded).to_bytes(8, "little") + encoded + tensors))
    if target.resolve() != path.resolve():
        path.unlink()
    return target


def delete_user_model(path: str | os.PathLike) -> None:
    """Delete the user's model at ``path`` (never a file outside :func:`user_models_dir`).

    Raises
    ------
    ValueError
        One sentence, when the file is not one of the user's models.
    """
    problem = _not_users(Path(path))
    if problem:
        raise ValueError(problem)
    Path(path).unlink(missing_ok=True)


def _not_users(path: Path) -> str | None:
    if not is_user_model(path):
        return f"{path.name} is not one of your models (in {user_models_dir()}); it is left as it is."
    return None
