"""Idle workspaces are removed after their time to live: never while a run of theirs is active, and only folders
the app made (token-named, not a link, carrying the workspace marker)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.runs import refreshed_status
from pipeline.studio.hosting import data_root, workspace_ttl_seconds
from pipeline.studio.run_history import is_active, workspace_runs
from pipeline.studio.workspaces import MARKER, STATE_FILE, WORKSPACES, Workspace, is_valid_token

# How often (at most) a page visit looks for idle workspaces to remove.
EXPIRY_INTERVAL_SECONDS = 3600


def expire_idle_workspaces(root: Path | None = None, now: float | None = None) -> list[str]:
    """Remove workspaces unused for longer than their time to live; the tokens removed.

    Only folders this module made (token-named, not a link, carrying its marker) and none with a run
    queued or working. "Used" is the latest of: opened by a page, its state saved, a run's status written.
    """
    ttl = workspace_ttl_seconds()
    base = (root or data_root()) / WORKSPACES
    if ttl <= 0 or not base.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for path in sorted(base.iterdir()):
        if not is_valid_token(path.name) or path.is_symlink() or not path.is_dir() or not (path / MARKER).is_file():
            continue
        workspace = Workspace(path.name, path)
        if now - last_used(workspace) <= ttl or any(
            is_active(refreshed_status(run)) for run in workspace_runs(workspace)
        ):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def last_used(workspace: Workspace) -> float:
    """When the workspace was last opened, changed, or had a run report progress (seconds since the epoch)."""
    files = [workspace.path / MARKER, workspace.path / STATE_FILE]
    files += [run.status_file for run in workspace_runs(workspace)]
    times = []
    for file in files:
        try:
            times.append(file.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def expire_now_and_then(root: Path | None = None) -> list[str]:
    """`expire_idle_workspaces` at most once an hour (a stamp file's time says when it last looked)."""
    stamp = (root or data_root()) / WORKSPACES / ".last-expiry"
    try:
        if time.time() - stamp.stat().st_mtime < EXPIRY_INTERVAL_SECONDS:
            return []
    except OSError:
        pass
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return expire_idle_workspaces(root)
