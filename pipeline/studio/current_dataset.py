"""Reading the workspace's current dataset for a page: choose one, re-read it only when it changed, and keep its
summary (name, images, classes, problems) in the workspace for the sidebar.

The trade-off that shaped it: every image is decoded on the first read (so broken ones become problems), which takes
a minute on a big dataset. When only the decisions (drop, relabel) changed since, the dataset is listed again without
decoding and the broken images found the first time are marked again: a second, not a minute.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from pipeline.config import DatasetConfig
from pipeline.dataset import Dataset, load_dataset
from pipeline.dataset_builder import content_version, shown_name
from pipeline.progress import ProgressCallback
from pipeline.studio.datasets import dataset_config, with_overrides
from pipeline.studio.workspaces import Workspace


@dataclass(frozen=True)
class DatasetRead:
    """A dataset as read for a session, and what tells whether it must be read again."""

    key: str  # names the dataset: its source and split settings
    version: tuple[int, int]  # changes when its decisions or (for a built dataset) its photos change
    dataset: Dataset
    broken: dict[str, str]  # path -> problem of the images found broken when they were decoded


def choose_dataset(
    workspace: Workspace, config: DatasetConfig, progress: ProgressCallback | None = None
) -> DatasetRead:
    """Read and check a dataset (decoding every image) and make it the workspace's current one.

    Its decisions (drop, relabel) live in the workspace's file for this dataset, kept when it is chosen again.
    """
    config = with_overrides(workspace, config)
    dataset = load_dataset(config, check_images=True, progress=progress)
    workspace.update_state(dataset=dataclasses.asdict(config))
    return _remember(workspace, config, dataset)


def read_current_dataset(workspace: Workspace, previous: DatasetRead | None = None) -> DatasetRead | None:
    """The workspace's current dataset with its decisions applied; `previous` is reused while it is still true.

    None before a dataset is chosen.
    """
    config = dataset_config(workspace)
    if config is None:
        return None
    key, version = dataset_key(config), _dataset_version(config)
    if previous is not None and (previous.key, previous.version) == (key, version):
        return previous
    if previous is not None and previous.key == key:
        dataset = load_dataset(config, check_images=False)
        dataset.mark_problems(previous.broken)
    else:
        dataset = load_dataset(config, check_images=True)
    return _remember(workspace, config, dataset)


def dataset_key(config: DatasetConfig | None) -> str:
    """Names a dataset (its source and split settings), for caches of things about it; "" for none."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True) if config is not None else ""


def dataset_summary(workspace: Workspace, config: DatasetConfig, dataset: Dataset) -> dict[str, int | str]:
    """What the sidebar shows of a dataset: name, usable images, classes, problems."""
    return {
        "name": shown_name(workspace, config),
        "images": int(len(dataset.usable())),
        "classes": len(dataset.classes),
        "problems": len(dataset.problems),
    }


def _remember(workspace: Workspace, config: DatasetConfig, dataset: Dataset) -> DatasetRead:
    summary = dataset_summary(workspace, config, dataset)
    if workspace.state().get("dataset_summary") != summary:
        workspace.update_state(dataset_summary=summary)
    broken = {
        path: problem for path, problem in zip(dataset.table["path"], dataset.table["problem"], strict=True) if problem
    }
    return DatasetRead(dataset_key(config), _dataset_version(config), dataset, broken)


def _dataset_version(config: DatasetConfig) -> tuple[int, int]:
    """Changes when the decisions change, or the photos of a dataset built in the browser (another tab too)."""
    return _file_version(config.overrides), content_version(config)


def _file_version(path: str | None) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return 0
