"""How this server is set up for strangers: the data root, the sample datasets, and the caps that protect it.

Caps that protect the shared server are global: all workspaces together stay under a disk budget, each workspace
under its own quota, runs wait in one queue of capped length (`pipeline.run_queue`), and idle workspaces expire.
Every value is read from the environment when it is used, so an operator's change needs no restart of the code.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import settings
from pipeline.files import is_hidden


def data_root() -> Path:
    """The folder the app may read and write (RETRAIN_STUDIO_DATA_ROOT, default ./data), created if missing."""
    root = settings.DATA_ROOT.path().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def use_hosted_defaults() -> None:
    """Settings for a server open to strangers, unless the operator set them: a lower image size cap, and
    freed image memory given back to the system (see pipeline.images), for this process and its runs."""
    from pipeline.images import HOSTED_MAX_PIXELS, return_freed_memory

    settings.MAX_PIXELS.set_default(HOSTED_MAX_PIXELS)
    return_freed_memory()


def samples_root() -> Path | None:
    """The folder of sample datasets (RETRAIN_STUDIO_SAMPLES), or None when unset or missing."""
    folder = settings.SAMPLES.path()
    if folder is None:
        return None
    folder = folder.resolve()
    return folder if folder.is_dir() else None


def list_samples() -> dict[str, Path]:
    """{name: folder} of each sample dataset: every visible sub-folder of the samples folder."""
    root = samples_root()
    if root is None:
        return {}
    return {path.name: path for path in sorted(root.iterdir()) if path.is_dir() and not is_hidden(path.name)}


def max_queued_per_workspace() -> int:
    """How many runs one workspace may have queued or training at once (RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE)."""
    return max(settings.MAX_QUEUED_PER_WORKSPACE.whole(), 1)


def workspace_quota_bytes() -> int:
    """How many bytes one workspace may hold, runs and cache included (RETRAIN_STUDIO_WORKSPACE_QUOTA_MB, in MB)."""
    return settings.WORKSPACE_QUOTA_MB.whole() << 20


def disk_budget_bytes() -> int:
    """How many bytes all workspaces, the queue and the shared cache may take (RETRAIN_STUDIO_DISK_BUDGET_MB)."""
    return settings.DISK_BUDGET_MB.whole() << 20


def workspace_ttl_seconds() -> float:
    """How long a workspace may sit unused before it is removed (RETRAIN_STUDIO_WORKSPACE_TTL_DAYS; 0 = forever)."""
    return settings.WORKSPACE_TTL_DAYS.whole() * 86400.0
