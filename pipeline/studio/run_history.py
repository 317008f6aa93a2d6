"""A workspace's runs: listed, found by name (names from the URL or state are checked, not trusted), the one a page
shows first, what each was trained on, compared, downloaded (the Runs table's cells are pipeline.run_rows')."""

from __future__ import annotations

import io
import re
import secrets
import time
import zipfile
from pathlib import Path
from typing import Any

from pipeline.errors import RetrainError
from pipeline.records import DamagedFile, read_config
from pipeline.run_dataset import dataset_line, run_dataset_summary
from pipeline.runs import FINISHED, RunDir, list_runs, refreshed_status
from pipeline.studio.workspaces import Workspace

# What `new_run_name` makes: run-YYYYmmdd-HHMMSS-xxxx. Nothing else is a run (no ".", "..", or other folders).
RUN_NAME_PATTERN = re.compile(r"run-\d{8}-\d{6}-[0-9a-f]{4}")


def new_run_name() -> str:
    """run-YYYYmmdd-HHMMSS-xxxx: sorts by start time, and a random tail keeps two at once apart."""
    return time.strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def workspace_runs(workspace: Workspace) -> list[RunDir]:
    """This workspace's runs, newest first."""
    return [run for run in list_runs(workspace.runs) if RUN_NAME_PATTERN.fullmatch(run.name)]


def find_run(workspace: Workspace, name: str | None) -> RunDir | None:
    """The run called `name` in this workspace (names from the URL or state are checked, not trusted)."""
    if not isinstance(name, str) or not RUN_NAME_PATTERN.fullmatch(name):
        return None
    run = RunDir(workspace.runs / name)
    return run if run.config.is_file() else None


def current_run(workspace: Workspace) -> RunDir | None:
    return find_run(workspace, workspace.state().get("run"))


def forget_missing_run(workspace: Workspace) -> str | None:
    """Stop pointing at a current run whose folder is gone (deleted in another tab); its name, else None."""
    name = workspace.state().get("run")
    if name and current_run(workspace) is None:
        workspace.update_state(run=None)
        return str(name)
    return None


def run_dataset_text(run: RunDir) -> str:
    """The dataset the run was trained on, as one line: "ants_bees · 397 images · 2 classes" (never raises)."""
    return dataset_line(run_dataset_summary(run.path))


def finished_runs(workspace: Workspace) -> list[RunDir]:
    """The runs that finished with a report (what Evaluate can show), newest first."""
    return [
        run
        for run in workspace_runs(workspace)
        if refreshed_status(run).get("state") == "done" and run.report.is_file()
    ]


def active_runs(workspace: Workspace) -> list[RunDir]:
    """The runs queued or working, newest first."""
    return [run for run in workspace_runs(workspace) if is_active(refreshed_status(run))]


def run_to_show(workspace: Workspace, finished: list[RunDir]) -> RunDir | None:
    """The finished run a page shows first: the current run when it has finished, else the newest finished one."""
    current = current_run(workspace)
    names = [run.name for run in finished]
    if current is not None and current.name in names:
        return current
    return finished[0] if finished else None


def test_split_warning(run: RunDir, status: dict[str, Any] | None = None) -> str | None:
    """Why the run's test score means little (too few test images), with what to do; None when it is fine.

    Read from status.json, else report.json (runs whose status was rewritten since)."""
    status = refreshed_status(run) if status is None else status
    if isinstance(warning := status.get("test_split_warning"), str):
        return warning
    try:
        from pipeline.records import read_json_record

        warning = read_json_record(run.report, "", default={}).get("test_split_warning")  # report.extra, flattened
    except (RetrainError, OSError, ValueError):
        return None
    return warning if isinstance(warning, str) else None


def download_name(run: RunDir, file: str) -> str:
    """What a run's file is called when downloaded: "<run>-model.tflite", so two runs' files never collide."""
    return f"{run.name}-{file}"


def _config_dict(run: RunDir) -> dict[str, Any]:
    """A run's config.json as checked sections, or {} when it is damaged (the run's state says so)."""
    try:
        return read_config(run.config).to_dict()
    except DamagedFile:
        return {}


def is_active(status: dict[str, Any]) -> bool:
    """True while a run is queued or working."""
    return bool(status) and status.get("state") not in FINISHED


def is_waiting_for_slot(status: dict[str, Any]) -> bool:
    """True while a queued run waits for another run to free a training slot (the run says so itself)."""
    return status.get("state") == "queued" and bool(status.get("waiting"))


def config_differences(first: RunDir, second: RunDir) -> list[dict[str, Any]]:
    """The settings two runs differ in: [{setting, first, second}] (output paths left out)."""
    a, b = (_config_dict(run) for run in (first, second))
    rows = []
    for section in ("dataset", "augment", "train"):
        for key in sorted(set(a.get(section, {})) | set(b.get(section, {}))):
            left, right = a.get(section, {}).get(key), b.get(section, {}).get(key)
            if left != right:
                rows.append({"setting": f"{section}.{key}", first.name: str(left), second.name: str(right)})
    return rows


def saved_model_zip(run: RunDir) -> bytes:
    """The run's saved_model/ folder as zip bytes, for one download."""
    folder = run.path / "saved_model"
    if not folder.is_dir():
        raise RetrainError(f"run {run.name} has no SavedModel export")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path("saved_model") / path.relative_to(folder))
    return buffer.getvalue()
