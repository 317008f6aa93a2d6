"""Which model Predict uses, and share links to one run's Predict page.

Predict must never quietly use a model of another dataset: it offers the workspace's finished runs,
each with the dataset it was trained on, and picks by default the newest finished run of the CURRENT
dataset (a run still training does not block it). A share link (`pipeline.shares`) opens one run's
Predict page read-only for whoever holds it; deleting a run revokes its links first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pipeline import shares
from pipeline.config import DatasetConfig
from pipeline.errors import RetrainError
from pipeline.records import DamagedFile, read_config
from pipeline.run_dataset import dataset_line, run_dataset_summary
from pipeline.runs import RunDir, delete_run, refreshed_status
from pipeline.studio.datasets import dataset_config
from pipeline.studio.hosting import data_root
from pipeline.studio.run_history import find_run, workspace_runs
from pipeline.studio.workspaces import Workspace


@dataclass(frozen=True)
class ModelChoice:
    """A finished run Predict can use."""

    run: str
    dataset: str  # "ants_bees · 397 images · 2 classes"
    current_dataset: bool  # trained on the workspace's current dataset

    @property
    def label(self) -> str:
        return f"{self.run} · {self.dataset}" + ("" if self.current_dataset else " (another dataset)")


def model_choices(workspace: Workspace) -> list[ModelChoice]:
    """The workspace's finished runs with a model, newest first: those of the current dataset before the others."""
    current = _source(dataset_config(workspace))
    choices = []
    for run in workspace_runs(workspace):
        if refreshed_status(run).get("state") != "done" or not (run.path / "model.keras").is_file():
            continue
        line = dataset_line(run_dataset_summary(run.path))
        choices.append(ModelChoice(run.name, line, current is not None and _run_source(run) == current))
    return sorted(choices, key=lambda choice: not choice.current_dataset)  # stable: newest first within each


def chosen_run(workspace: Workspace, name: str | None) -> RunDir | None:
    """The run Predict uses: `name` when it is a finished run here, else the default (see model_choices)."""
    choices = model_choices(workspace)
    names = [choice.run for choice in choices]
    if name in names:
        return find_run(workspace, name)
    return find_run(workspace, names[0]) if names else None


def _source(config: DatasetConfig | None) -> tuple | None:
    """What names a dataset's photos (not its decisions or split): folder, zip and CSV, resolved."""
    if config is None:
        return None
    return tuple(
        str(Path(value).resolve()) if value else "" for value in (config.image_dir, config.zip, config.label_csv)
    )


def _run_source(run: RunDir) -> tuple | None:
    try:
        return _source(read_config(run.config).dataset)
    except (DamagedFile, RetrainError, OSError):
        return None


# ---- Share links ----------------------------------------------------------------------------------------------


def share_run(workspace: Workspace, run: str) -> shares.Share:
    """A new read-only link token for one finished run of this workspace."""
    found = find_run(workspace, run)
    if found is None or refreshed_status(found).get("state") != "done":
        raise RetrainError(f"run {run} is not a finished run of this workspace; only finished runs can be shared")
    return shares.create_share(workspace.path, found.name, data_root())


def run_shares(workspace: Workspace, run: str) -> list[shares.Share]:
    return shares.list_shares(workspace.path, run)


def revoke(workspace: Workspace, token: str) -> bool:
    return shares.revoke_share(workspace.path, token, data_root())


def open_shared(token: object) -> shares.SharedRun:
    """The run a visitor's share token opens (read-only); ShareRefused with a message a visitor may see."""
    return shares.resolve_share(token, data_root())


def share_link(page_url: str, token: str, page_names: list[str]) -> str:
    """The link to give away: the app's address (the page's, without its page name) with ?share=TOKEN only —
    nothing of the workspace."""
    parts = urlsplit(page_url or "")
    path = parts.path.rstrip("/")
    if path.rsplit("/", 1)[-1] in page_names:
        path = path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, path + "/", f"share={token}", ""))


def delete_workspace_run(workspace: Workspace, run: RunDir) -> int:
    """Delete a finished run of this workspace, its share links revoked first; how many links were revoked."""
    revoked = shares.revoke_run_shares(workspace.path, run.name, data_root())
    delete_run(run.path)
    return revoked
