"""Explore's "Find likely mistakes" and near-duplicates for one workspace: the background check
(`pipeline.label_check_job`) started with the next run's backbone, its progress, its kept results
(flagged when the dataset changed since), and the near-duplicate groups with their drop/merge actions.

The trade-off that shaped it: the check runs as its own process so a page never waits minutes for it;
its results live in the workspace's label-check/ folder, so they outlast a page switch, a reload or a
new tab, and a page only ever reads files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import label_check_job as job
from pipeline import near_duplicates
from pipeline.dataset import Dataset
from pipeline.errors import RetrainError
from pipeline.records import DamagedFile
from pipeline.studio.datasets import dataset_config
from pipeline.studio.launch import bottleneck_folder
from pipeline.studio.next_run import working_config
from pipeline.studio.workspaces import Workspace

FOLDER = "label-check"
RUNNING = job.ACTIVE


@dataclass
class MistakesView:
    """What Explore shows of the check: its status line, and the page of results when there are some."""

    state: str  # none|queued|running|done|failed|cancelled|damaged
    line: str  # "checking labels 3/5 (about 12 s left)" while running, else the job's message
    page: job.SuspectsPage | None  # the page of results asked for (the last finished check's), else None
    points: pd.DataFrame | None  # the dataset map of those results
    stale: bool  # the results are from an older version of the dataset
    problem: str | None = None  # why the results cannot be read (damaged file), else None


def check_folder(workspace: Workspace) -> Path:
    return workspace.path / FOLDER


def start_check(workspace: Workspace, method: str = "pca") -> int:
    """Start looking for likely mistakes in the background with the next run's backbone; the process id."""
    dataset = dataset_config(workspace)
    if dataset is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    train_config = working_config(workspace)
    folder = train_config.output.bottleneck_dir or bottleneck_folder(workspace, dataset)
    return job.start_label_check(check_folder(workspace), dataset, train_config.train, folder, method)


def cancel_check(workspace: Workspace) -> None:
    job.cancel_label_check(check_folder(workspace))


def check_progress(workspace: Workspace) -> tuple[str, float, str]:
    """(state, fraction done 0..1, one line) of the check, for a progress bar."""
    status = job.label_check_status(check_folder(workspace))
    done, total = status.get("done"), status.get("total")
    fraction = done / total if isinstance(done, int) and isinstance(total, int) and total > 0 else 0.0
    return status["state"], min(max(fraction, 0.0), 1.0), job.status_line(status)


def mistakes_view(workspace: Workspace, dataset: Dataset, page: int = 1, per_page: int = job.PER_PAGE) -> MistakesView:
    """The check's state and (when a check has finished, now or earlier) one page of its suspects; never raises."""
    folder = check_folder(workspace)
    status = job.label_check_status(folder)
    # Running: the progress line; ended: what the job said (why it failed, what is damaged and how to fix it).
    line = job.status_line(status) if status["state"] in RUNNING else str(status.get("message") or "")
    try:
        results = job.suspects_page(folder, page, per_page)
        points = job.map_points(folder)
    except DamagedFile as damaged:
        return MistakesView(status["state"], line, None, None, False, str(damaged))
    except RetrainError:
        return MistakesView(status["state"], line, None, None, False)
    stale = bool(results.signature) and results.signature != dataset.signature
    return MistakesView(status["state"], line, results, points, stale)


def map_photo(workspace: Workspace, view: MistakesView, file: str | None) -> dict[str, Any] | None:
    """The map point (with its suspect's suggestion, if it is one) for a clicked file; None if not on the map."""
    if view.points is None or file is None:
        return None
    rows = view.points[view.points["file"] == file]
    if rows.empty:
        return None
    try:
        suspects = job.suspects_page(check_folder(workspace), 1, 10**9).suspects
    except RetrainError:
        suspects = []
    suspect = next((s for s in suspects if s["file"] == file), None)
    return {**rows.iloc[0].to_dict(), **(suspect or {})}


# ---- Near-duplicates ------------------------------------------------------------------------------------------


def near_duplicate_groups(dataset: Dataset) -> list[dict[str, Any]]:
    """Groups of near-identical photos by perceptual hash (free: computed when the dataset was checked):
    [{"files", "labels", "paths"}]."""
    return _with_paths(dataset, near_duplicates.table_groups(dataset.table))


def features_cached(workspace: Workspace, dataset: Dataset) -> bool:
    """True when a finished check of this very dataset, with the next run's backbone, cached every bottleneck."""
    folder = check_folder(workspace)
    try:
        results = job.suspects_page(folder, 1, 1)
    except RetrainError:
        return False
    return (
        job.label_check_status(folder)["state"] == "done"
        and results.signature == dataset.signature
        and results.architecture == working_config(workspace).train.architecture
    )


def feature_groups(workspace: Workspace, dataset: Dataset) -> list[dict[str, Any]]:
    """Near-duplicate groups by backbone features (crops and edits the hash misses), from the cached bottlenecks;
    groups the hash already found are left out. Loads the backbone (TensorFlow): call it when asked."""
    from pipeline.backbones import load_backbone

    config, train_config = dataset_config(workspace), working_config(workspace)
    if config is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    train = train_config.train
    backbone = load_backbone(train.architecture, train.bottleneck_layer, train.mirror_view)
    cache = train_config.output.bottleneck_dir or bottleneck_folder(workspace, config)
    known = {frozenset(group["files"]) for group in near_duplicates.table_groups(dataset.table)}
    found = near_duplicates.cached_bottleneck_groups(dataset, backbone, cache)
    return _with_paths(dataset, [group for group in found if frozenset(group["files"]) not in known])


def _with_paths(dataset: Dataset, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path_of = dict(zip(dataset.table["file"], dataset.table["path"], strict=True))
    return [{**group, "paths": [str(path_of[file]) for file in group["files"]]} for group in groups]


def keep_only(workspace: Workspace, group: list[str], keep: str) -> list[str]:
    """Drop every photo of a group from training but `keep` (decisions only: the photos stay); the dropped ones."""
    return near_duplicates.drop_duplicates(_overrides(workspace), group, keep)


def label_all(workspace: Workspace, group: list[str], label: str) -> None:
    """Give every photo of a group the same class (decisions only)."""
    near_duplicates.merge_label(_overrides(workspace), group, label)


def _overrides(workspace: Workspace) -> str:
    config = dataset_config(workspace)
    if config is None or not config.overrides:
        raise RetrainError("choose a dataset first (Dataset page)")
    return config.overrides
