"""Folders on the server a session may use as datasets: only under the data root, never the root itself nor
anything holding or inside workspaces/ (other sessions' uploads live there)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pipeline.errors import RetrainError
from pipeline.files import display_name, from_display_name, is_hidden
from pipeline.studio.hosting import data_root
from pipeline.studio.workspaces import WORKSPACES


def resolve_server_folder(folder: str, root: Path | None = None) -> Path:
    """The real folder `folder` names under the data root, or RetrainError saying why it is refused.

    `folder` may be relative to the data root or absolute; after resolving symlinks it must still be
    inside the data root, and neither hold nor be inside its workspaces/ (other sessions' uploads live
    there): so "." and the root itself, or a link to it, are refused too.
    """
    root = (root or data_root()).resolve()
    text = (folder or "").strip()
    if not text:
        raise RetrainError(f"choose a folder under the data folder {root}")
    if "\x00" in text:
        raise RetrainError("a folder name cannot contain a NUL character")
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        return _resolve_under_root(text, shown, root)
    except OSError as error:  # a name too long for the file system, a loop of links, a folder we may not read
        raise RetrainError(f"'{shown}' cannot be used as a folder: {error.strerror or error}") from None


def _resolve_under_root(text: str, shown: str, root: Path) -> Path:
    if ".." in Path(text).parts:
        raise RetrainError(f"'{shown}': '..' is not allowed; choose a folder inside the data folder {root}")
    candidate = Path(text).expanduser()
    with contextlib.suppress(OSError):
        if not (candidate if candidate.is_absolute() else root / candidate).exists():
            candidate = Path(from_display_name(text)).expanduser()  # a name listed with \xNN for non-UTF-8 bytes
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise RetrainError(
            f"'{shown}' is outside the data folder {root} (or links out of it); only folders inside it can be used"
        )
    if (root / WORKSPACES).is_relative_to(resolved):
        raise RetrainError(
            f"'{shown}' is the data folder itself (or links to it), which holds the app's private "
            "workspaces; choose one of the dataset folders inside it"
        )
    if resolved.is_relative_to(root / WORKSPACES):
        raise RetrainError(f"'{shown}' is inside the app's private workspaces; upload a zip instead")
    if not resolved.is_dir():
        raise RetrainError(f"'{shown}': no such folder under the data folder {root}")
    return resolved


def list_server_folders(root: Path | None = None) -> list[str]:
    """Top-level folders under the data root that could be datasets (not workspaces/ or hidden ones)."""
    root = (root or data_root()).resolve()
    return [
        display_name(path.name)
        for path in sorted(root.iterdir())
        if path.is_dir()
        and path.name != WORKSPACES
        and not is_hidden(path.name)
        and path.resolve().is_relative_to(root)
        and not (root / WORKSPACES).is_relative_to(path.resolve())
    ]
