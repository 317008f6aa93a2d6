"""The settings the next run will use, as the workspace keeps them while they are edited, and as a run started now
would get them (the one resolved config Configure shows and start_run writes)."""

from __future__ import annotations

import dataclasses

from pipeline.config import DEFAULT_PRESET, PRESETS, RunConfig, apply_preset
from pipeline.errors import RetrainError
from pipeline.studio.datasets import dataset_config
from pipeline.studio.workspaces import Workspace


def working_config(workspace: Workspace) -> RunConfig:
    """The settings the next run will use: the saved ones, else the defaults with the Quick preset."""
    saved = workspace.state().get("config")
    if saved:
        try:
            return RunConfig.from_dict(saved)
        except (RetrainError, TypeError):
            pass  # settings saved by an older version: start again from the defaults
    return apply_preset(RunConfig(), DEFAULT_PRESET)


def save_working_config(workspace: Workspace, config: RunConfig) -> None:
    workspace.update_state(config=config.to_dict())


def resolved_config(workspace: Workspace, config: RunConfig) -> RunConfig:
    """`config` with the workspace's current dataset (and its decisions file): what a run started now would use.

    Not validated: Configure shows it while a setting is still being fixed; start_run validates it.
    """
    dataset = dataset_config(workspace)
    if dataset is None:
        return config
    return RunConfig.from_dict({**config.to_dict(), "dataset": dataclasses.asdict(dataset)})


def preset_label(workspace: Workspace, preset: str, config: RunConfig | None = None) -> str:
    """What the settings are called: the preset ("Quick") while they are exactly it, "Quick (edited)" once a setting
    the preset leaves alone was changed, "Custom" once one the preset sets was."""
    config = working_config(workspace) if config is None else config
    if preset not in PRESETS:
        return "Custom"
    chosen = PRESETS[preset]
    if any(
        getattr(getattr(config, section), name) != value
        for section, values in chosen.items()
        for name, value in values.items()
    ):
        return "Custom"
    untouched = apply_preset(RunConfig(), preset)
    if any(getattr(config, section) != getattr(untouched, section) for section in ("train", "augment")):
        return f"{preset} (edited)"
    return preset
