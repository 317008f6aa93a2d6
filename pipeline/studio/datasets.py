"""The workspace's current dataset: its name and folder, the decisions about its images (drop, relabel — kept in
the workspace, never touching the user's files), and advice about it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pipeline.config import DatasetConfig, section_from_dict
from pipeline.dataset import load_overrides, save_override
from pipeline.errors import RetrainError
from pipeline.files import display_name
from pipeline.studio.workspaces import Workspace

# Classes whose largest/smallest image count ratio (all splits) is above this get the imbalance advice.
IMBALANCE_RATIO = 1.5


def dataset_name(config: DatasetConfig, workspace: Workspace | None = None) -> str:
    """A short name for a dataset as the user knows it: the folder or zip name without our prefixes."""
    path = Path(config.image_dir or config.zip or "dataset")
    if workspace and path.is_relative_to(workspace.uploads):
        first = path.relative_to(workspace.uploads).parts[0]
        name = re.sub(r"^[0-9a-f]{12}-", "", first).removesuffix(".unpacked")
        return name.removesuffix(".zip") + (" (CSV)" if config.label_csv else "")
    return display_name(path.stem if path.suffix.lower() == ".zip" else path.name)


def dataset_root(config: DatasetConfig) -> Path:
    """The folder a dataset's `file` paths are relative to (its unpacked folder, for a zip)."""
    if config.zip and not config.image_dir:
        from pipeline.archive import unpack_dataset_zip

        return unpack_dataset_zip(config.zip)
    if not config.image_dir:
        raise RetrainError("this run's config names no dataset folder")
    return Path(config.image_dir).resolve()


def image_path(root: Path, file: str) -> Path | None:
    """root/file when it stays inside root (a report's file names are not trusted to), else None."""
    path = (root / file).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def overrides_path(workspace: Workspace, config: DatasetConfig) -> Path:
    """The workspace's decisions file for one dataset: overrides/<key of its folder, zip and CSV>.json."""
    source = json.dumps([config.image_dir, config.zip, config.label_csv])
    return workspace.overrides / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.json"


def with_overrides(workspace: Workspace, config: DatasetConfig) -> DatasetConfig:
    """`config` reading its decisions from the workspace's file for it (so choosing it again keeps them)."""
    return dataclasses.replace(config, overrides=str(overrides_path(workspace, config)))


def dataset_config(workspace: Workspace) -> DatasetConfig | None:
    """The workspace's current dataset with its decisions file, or None before one is chosen."""
    saved = workspace.state().get("dataset")
    if not saved:
        return None
    config = section_from_dict(DatasetConfig, saved)
    if not config.overrides:  # chosen before decisions existed
        config = with_overrides(workspace, config)
        workspace.update_state(dataset=dataclasses.asdict(config))
    return config


def decisions(workspace: Workspace) -> dict[str, Any]:
    """The current dataset's decisions: {"drop": [file, ...], "relabel": {file: label}}."""
    config = dataset_config(workspace)
    return load_overrides(config.overrides if config else None)


def record_decision(workspace: Workspace, file: str, drop: bool = False, label: str | None = None) -> None:
    """Drop one image from training or give it another label, for the next runs; neither = undo its decision."""
    config = dataset_config(workspace)
    if config is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    save_override(config.overrides, file, drop=drop, label=label)


def undo_decision(workspace: Workspace, file: str) -> None:
    """Forget what was decided about one image: it trains with its own label again."""
    record_decision(workspace, file)


def decision_text(overrides: dict[str, Any], file: str) -> str | None:
    """What was decided about `file` in words ("dropped from training", "relabelled as roses"), or None."""
    if file in overrides["drop"]:
        return "dropped from training"
    if file in overrides["relabel"]:
        return f"relabelled as {overrides['relabel'][file]}"
    return None


def imbalance_advice(class_counts: dict[str, dict[str, int]]) -> str | None:
    """A warning with what to do when the classes are uneven overall (largest over smallest above 1.5), else None.

    Judged on each class's images over all splits: the split goes by file name hash, so a balanced dataset can have
    uneven training counts by chance (more so with few photos), and that is not something the user should fix.
    """
    total = {label: sum(counts.values()) for label, counts in class_counts.items()}
    if len(total) < 2:
        return None
    largest, smallest = max(total, key=total.get), min(total, key=total.get)
    if total[smallest] and total[largest] / total[smallest] <= IMBALANCE_RATIO:
        return None
    train = {label: class_counts[label].get("train", 0) for label in total}
    return (
        f"Classes are imbalanced: '{largest}' has {total[largest]} images and '{smallest}' only "
        f"{total[smallest]}. The model will lean towards the bigger classes. Add photos to the small classes, "
        f"or on Configure turn on 'Balance classes' at about {max(train.values())} training images so augmented "
        "copies even them out (class weights, on by default, also help)."
    )
