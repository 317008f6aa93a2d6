"""A run as one row of text for a table: every value formatted one way, nothing shown as "None".

The Runs table, run comparison and the sidebar all show runs; they take their cells from `run_row`
so a percentage is always "95.0%", a duration always "3 min 05 s" and a missing value always "—".
A run's duration counts from when it began working (status.json's `working_since`), so a run that
waited ten minutes for a training slot does not look ten minutes slower; the wait is its own column.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from pipeline.run_dataset import dataset_line, run_dataset_summary
from pipeline.runs import FINISHED, RunDir, refreshed_status

MISSING = "—"
# A duration past this is a damaged status.json (or a clock set wrong), not a run: shown as missing.
MAX_SHOWN_SECONDS = 365 * 24 * 3600


def format_percent(fraction: float | None) -> str:
    """0.95 → "95.0%"; None → "—"."""
    return MISSING if fraction is None else f"{100 * fraction:.1f}%"


def format_duration(seconds: float | None) -> str:
    """1.24 → "1.2 s", 42 → "42 s", 185 → "3 min 05 s", 3720 → "1 h 02 min"; None, negative, NaN, over a year → "—"."""
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_SHOWN_SECONDS:
        return MISSING
    if seconds < 9.95:  # a head trains in a second or two: "0 s" would read as broken
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_times(status: dict[str, Any], now: float | None = None) -> dict[str, float | None]:
    """{"queued_seconds", "working_seconds"} of a status; a run still going counts up to `now`."""
    now = time.time() if now is None else now
    started, working = status.get("started"), status.get("working_since")
    end = status.get("finished") or status.get("updated") if status.get("state") in FINISHED else now
    if started is None or end is None:
        return {"queued_seconds": None, "working_seconds": None}
    if working is None:  # never left the queue (still waiting, or cancelled while waiting)
        return {"queued_seconds": max(end - started, 0.0), "working_seconds": None}
    return {"queued_seconds": max(working - started, 0.0), "working_seconds": max(end - working, 0.0)}


def run_row(run: RunDir, now: float | None = None) -> dict[str, str]:
    """The run's cells for a table, all text: run, state, dataset, test accuracy, duration, queue wait,
    backbone, max epochs, started. Damaged or missing files show "—" or "unknown", never raise."""
    status = refreshed_status(run)
    config = _config(run)
    times = run_times(status, now)
    started = status.get("started")
    epochs = config.get("train", {}).get("epochs")
    return {
        "run": run.name,
        "state": status.get("state", "not started"),
        "dataset": dataset_line(run_dataset_summary(run.path)),
        "test accuracy": format_percent(status.get("test_accuracy")),
        "duration": format_duration(times["working_seconds"]),
        "queue wait": format_duration(times["queued_seconds"]),
        "backbone": Path(config.get("train", {}).get("architecture") or "").name or MISSING,
        "max epochs": MISSING if epochs is None else str(epochs),  # early stopping may end sooner
        "started": format_time(started),
    }


def format_time(stamp: float | None) -> str:
    """A wall-clock time as "2026-11-30 11:25"; "—" when missing or out of the platform's range (a damaged file)."""
    if not stamp:
        return MISSING
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
    except (OverflowError, OSError, ValueError):
        return MISSING


def _config(run: RunDir) -> dict[str, Any]:
    from pipeline.records import DamagedFile, read_config

    try:
        return read_config(run.config).to_dict()
    except DamagedFile:
        return {}
