"""Session workspaces: where a browser session's uploads and runs live.

The app is also a public demo, so strangers' files meet here. Each browser session gets a workspace folder named by
a random token (`<data root>/workspaces/<token>/` with uploads/, runs/, overrides/ and predictions/); the token
travels in the page URL, so the same URL reopens the same runs and no other session can list them.

The trade-off that shaped it: the workspace keeps its small state (current dataset, current run, the settings being
edited) in `workspace.json` on disk rather than in the browser session, so a second tab or a restarted server shows
the same thing — at the price of one small file write per change.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import RetrainError
from pipeline.files import write_json_atomic
from pipeline.records import DamagedFile, read_workspace_state
from pipeline.studio.hosting import data_root

# A token is secrets.token_urlsafe(16): 22 characters of A-Z a-z 0-9 - _. Nothing else can become a path.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
WORKSPACES = "workspaces"
STATE_FILE = "workspace.json"
# Written into every workspace folder this module makes; only folders carrying it are ever expired.
MARKER = ".retrain-studio-workspace"


def new_token() -> str:
    """A fresh, unguessable workspace token (128 random bits)."""
    return secrets.token_urlsafe(16)


def is_valid_token(token: Any) -> bool:
    """True only for strings shaped exactly like `new_token()`'s: the token becomes a folder name."""
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


@dataclass(frozen=True)
class Workspace:
    """One browser session's folder: uploads/, runs/ and workspace.json."""

    token: str
    path: Path

    @property
    def uploads(self) -> Path:
        return self.path / "uploads"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def overrides(self) -> Path:
        return self.path / "overrides"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def state(self) -> dict[str, Any]:
        """The saved state: dataset (DatasetConfig dict), dataset_summary, run (name), config (RunConfig dict).

        Empty when workspace.json is damaged (`damage()` says how); keys of the wrong shape are left out.
        """
        try:
            return read_workspace_state(self.path / STATE_FILE)
        except DamagedFile:
            return {}

    def damage(self) -> str | None:
        """What is wrong with workspace.json, or None when it is fine (or not written yet)."""
        try:
            read_workspace_state(self.path / STATE_FILE)
        except DamagedFile as damaged:
            return str(damaged)
        return None

    def update_state(self, **changes: Any) -> dict[str, Any]:
        """Change some keys of workspace.json (atomically) and return the new state.

        A damaged workspace.json is renamed aside first (kept, never overwritten).
        """
        if self.damage():
            state_file = self.path / STATE_FILE
            state_file.rename(state_file.with_name(f"{STATE_FILE}.damaged-{time.time_ns()}"))
        state = {**self.state(), **changes}
        write_json_atomic(self.path / STATE_FILE, state)
        return state


def open_workspace(token: str, root: Path | None = None) -> Workspace:
    """The workspace of `token` under the data root, created on first use; a malformed token is refused."""
    if not is_valid_token(token):
        raise RetrainError("this link's workspace id is not valid; open the app without it to start a new workspace")
    base = (root or data_root()) / WORKSPACES
    base.mkdir(parents=True, exist_ok=True)
    path = base / token
    # Checked before anything is created: mkdir through a planted symlink would already write elsewhere.
    if any(link.is_symlink() for link in (path, path / "uploads", path / "runs")) or (
        path.exists() and not path.resolve().is_relative_to(base.resolve())
    ):
        raise RetrainError("this workspace folder is a link (to somewhere else); it is refused")
    for folder in (path / "uploads", path / "runs"):
        folder.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()  # made by us (only such folders expire), and used now (its time is the last use)
    return Workspace(token, path)
