"""Rename or delete a model the user made, from a small menu beside the Model picker (and the picker's
right-click menu). Only the user's own models (:mod:`.user_models`), never the bundled ones nor a
file opened from elsewhere; a deletion is confirmed first.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QInputDialog, QMenu, QMessageBox, QToolButton, QWidget

from ._controls import ModelPicker
from .user_models import delete_user_model, rename_user_model, typed_model_name


def confirm(parent: QWidget | None, title: str, question: str) -> bool:
    """Ask a yes/no ``question`` in a message box; whether the answer was yes."""
    answer = QMessageBox.question(parent, title, question, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class UserModelMenu(QToolButton):
    """"⋯" beside the Model picker: *Rename...* and *Delete...* the model chosen, enabled when it is
    one the user made. ``error`` and ``info`` tell the user how it went.

    :attr:`ask_name` and :attr:`confirm` are the dialogs (tests and scripts replace them).
    """

    def __init__(self, picker: ModelPicker, error: Callable[[str], None], info: Callable[[str], None],
                 parent: QWidget | None = None):
        super().__init__(parent, text="⋯", toolTip="Rename or delete the model chosen: only a model you made "
                                                  "(by fine-tuning), never a bundled one")
        self.picker = picker
        self._error, self._info = error, info
        #: Asks the new name of the model called ``current``; None: the user cancelled.
        self.ask_name: Callable[[str], str | None] = self._ask_name
        #: Asks a yes/no question; whether the answer was yes.
        self.confirm: Callable[[str], bool] = lambda question: confirm(self, "Delete a model", question)
        self.menu_of_actions = QMenu(self)
        self.rename_action = self.menu_of_actions.addAction("Rename...", self.rename)
        self.delete_action = self.menu_of_actions.addAction("Delete...", self.delete)
        self.setMenu(self.menu_of_actions)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")  # "⋯" says it: no arrow
        picker.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        picker.customContextMenuRequested.connect(self._on_context_menu)
        picker.currentIndexChanged.connect(self._follow)
        self._follow()

    def _follow(self, *_) -> None:
        self.setEnabled(self.picker.user_model() is not None)

    def _on_context_menu(self, position) -> None:
        if self.isEnabled():
            self.menu_of_actions.exec(self.picker.mapToGlobal(position))

    def _ask_name(self, current: str) -> str | None:
        name, ok = QInputDialog.getText(self, "Rename a model", "New name of the model:", text=current)
        return name if ok else None

    def rename(self, name: str | None = None) -> bool:
        """Rename the user's model chosen to ``name`` (None: ask it); whether it was renamed."""
        path = self.picker.user_model()
        if path is None:
            return False
        name = self.ask_name(path.stem) if name is None else name
        if name is None or typed_model_name(name) == path.stem:
            return False
        try:
            new = rename_user_model(path, name)
        except (OSError, ValueError) as error:  # a WeightsError is a ValueError
            self._error(_sentence(error, f"rename {path.name}"))
            return False
        self.picker.renamed(path, new)
        self._info(f"The model '{path.stem}' is now called '{new.stem}'.")
        return True

    def delete(self) -> bool:
        """Delete the user's model chosen, once the user confirms; whether it was deleted."""
        path = self.picker.user_model()
        if path is None or not self.confirm(f"Delete your model '{path.stem}'? Its file ({path}) is deleted; "
                                            "the layers it made stay."):
            return False
        try:
            delete_user_model(path)
        except (OSError, ValueError) as error:
            self._error(_sentence(error, f"delete {path.name}"))
            return False
        self.picker.forget(path)
        self._info(f"Deleted your model '{path.stem}'; {self.picker.currentText()} is chosen.")
        return True


def _sentence(error: Exception, doing: str) -> str:
    """The sentence for the user of an ``error`` met while ``doing`` something to a file."""
    if isinstance(error, OSError):
        return f"Cannot {doing}: {error.strerror or error}."
    return str(error)
