"""Disk use: a workspace's quota (uploads, unpacked files, runs and its bottleneck cache) and the budget of all
workspaces, the queue and the shared cache together. Checked before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import RetrainError
from pipeline.files import megabytes
from pipeline.settings import default_bottleneck_dir
from pipeline.studio.hosting import data_root, disk_budget_bytes, workspace_quota_bytes
from pipeline.studio.workspaces import WORKSPACES, Workspace

# Room a new run must find before it starts: its exports and logs (about 55 MB with the default backbone).
RUN_RESERVE_MB = 64


def folder_size(folder: Path) -> int:
    """Bytes the files under `folder` take (links are not followed; a folder that is gone takes none)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:  # removed while counting
                continue
    return total


def uploads_size(workspace: Workspace) -> int:
    """Bytes the workspace's uploads take: zips, CSVs and unpacked files."""
    return folder_size(workspace.uploads)


def server_disk_use(root: Path | None = None) -> int:
    """Bytes the app has written, all sessions together: every workspace, the queue and the shared cache."""
    root = root or data_root()
    return sum(folder_size(folder) for folder in (root / WORKSPACES, root / "queue", default_bottleneck_dir()))


def check_quota(workspace: Workspace, adding: int, what: str) -> None:
    """RetrainError when `adding` more bytes would take the workspace over its quota or the server over its budget.

    A workspace counts everything in it: uploads, unpacked files, runs and its bottleneck cache.
    """
    quota, used = workspace_quota_bytes(), folder_size(workspace.path)
    if used + adding > quota:
        raise RetrainError(
            f"{what}: this workspace would take {megabytes(used + adding)}, over its quota of "
            f"{megabytes(quota)} ({megabytes(used)} used by uploads, runs and cache). Delete old runs "
            "on the Runs page, or start a new workspace by opening the app's address without '?ws=…'"
        )
    budget, everyone = disk_budget_bytes(), server_disk_use(workspace.path.parents[1])
    if everyone + adding > budget:
        raise RetrainError(
            f"{what}: the server's disk space for all users is used up ({megabytes(everyone)} of "
            f"{megabytes(budget)}); try again later, when idle workspaces have expired"
        )
