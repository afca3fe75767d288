"""The models a user made by fine-tuning: one weights file each in the user's model folder.

Torch-free, so the widget can list them at once. The folder is ``platformdirs``' user data folder
of napari-nucleiseg (``~/.local/share/napari-nucleiseg/models`` on Linux), or the one named by the
environment variable :data:`MODELS_DIR_VARIABLE` (for a lab's shared folder, and for tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from .weights import WEIGHTS_SUFFIX

#: Environment variable naming another folder for the user's models.
MODELS_DIR_VARIABLE = "NUCLEISEG_MODELS_DIR"


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


def list_user_models() -> list[Path]:
    """The weights files in the user's model folder, by name (none when the folder does not exist)."""
    folder = user_models_dir()
    if not folder.is_dir():
        return []
    return sorted((path for path in folder.glob(f"*{WEIGHTS_SUFFIX}") if path.is_file() and not path.name.startswith(".")),
                  key=lambda path: path.name.lower())
