"""Run directories: the files a run writes as it goes, and starting, watching and cancelling runs.

A run is a folder, not a live object: `config.json` (the resolved settings), `status.json`
(written atomically and often), `metrics.csv` (a row per validation), `report.json`, logs and
exports. The app starts a run as its own process and only ever reads these files, so a closed
browser tab, a second tab, or a restarted app all see the same run.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import RetrainError, RunCancelled
from pipeline.files import read_json, write_json_atomic

STATES = ("queued", "caching", "augmenting", "training", "evaluating", "exporting", "done", "failed", "cancelled")
FINISHED = {"done", "failed", "cancelled"}
METRIC_COLUMNS = ["step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "elapsed_seconds"]


def cache_root() -> Path:
    """Where shared caches live (built backbones, bottlenecks, unpacked zips)."""
    return Path(os.environ.get("RETRAIN_STUDIO_CACHE") or Path.home() / ".cache" / "retrain-studio")


class RunDir:
    """The files of one run, by name."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.status_file = self.path / "status.json"
        self.metrics = self.path / "metrics.csv"
        self.report = self.path / "report.json"
        self.log = self.path / "run.log"
        self.logs_dir = self.path / "logs"
        self.cancel_request = self.path / "cancel-requested"

    # What a run writes; cleared when a run starts again in the same folder, so old and new never mix.
    OUTPUTS = ("metrics.csv", "report.json", "model.keras", "model.tflite", "labels.txt", "saved_model", "logs")

    def clear_outputs(self) -> None:
        for name in self.OUTPUTS:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    @property
    def name(self) -> str:
        return self.path.name

    def status(self) -> dict[str, Any]:
        """The last status written, or an empty dict for a run that has not started."""
        return read_json(self.status_file, default={}) or {}

    def write_status(self, state: str, progress: float | None = None, step: str = "", message: str = "",
                     **details: Any) -> None:
        """Replace status.json in one atomic step, keeping when the run started."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        previous = self.status()
        now = time.time()
        if progress is None:
            progress = previous.get("progress", 0.0)
        status = {"state": state, "progress": round(progress, 4),
                  "step": step, "message": message, "updated": now, "started": previous.get("started", now),
                  "pid": previous.get("pid", os.getpid())}
        if state in FINISHED:
            status["finished"] = now
        status.update(details)
        write_json_atomic(self.status_file, status)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one row to metrics.csv (header on first write); one write call per row."""
        new = not self.metrics.exists()
        line = ",".join("" if row.get(column) is None else str(row[column]) for column in METRIC_COLUMNS)
        with open(self.metrics, "a") as handle:
            handle.write((",".join(METRIC_COLUMNS) + "\n" if new else "") + line + "\n")

    def read_metrics(self) -> list[dict[str, float | None]]:
        """metrics.csv as rows of numbers (a half-written last line is skipped)."""
        if not self.metrics.exists():
            return []
        rows = []
        with open(self.metrics) as handle:
            for row in csv.DictReader(handle):
                if None in row.values() or len(row) != len(METRIC_COLUMNS):
                    continue
                rows.append({key: float(value) if value else None for key, value in row.items()})
        return rows


def refreshed_status(run: RunDir) -> dict[str, Any]:
    """The run's status, corrected when its process died without saying so (kill -9, reboot, early cancel)."""
    status = run.status()
    if not status or status.get("state") in FINISHED or process_alive(status.get("pid"), status.get("pid_started")):
        return status
    if status.get("state") == "queued" and _in_line(run, status):
        return status  # a ticket in the app's queue: waiting is a row, not a process
    if status.get("state") == "queued" and time.time() - status.get("updated", 0) < 5:
        return status  # just launched; the process has not written its pid yet
    status = run.status()  # read again: the run may have finished between the first read and the check
    if status.get("state") in FINISHED:
        return status
    if run.cancel_request.exists():
        run.write_status("cancelled", message="cancelled before it got going")
    else:
        run.write_status("failed", message="the run's process ended unexpectedly (killed or out of memory); "
                                           "start it again — cached bottlenecks are kept")
    return run.status()


def _in_line(run: RunDir, status: dict[str, Any]) -> bool:
    """True while the run's ticket still waits in the queue its status names (see pipeline.run_queue)."""
    if not isinstance(status.get("queue"), str):
        return False
    import sqlite3

    from pipeline.run_queue import RunQueue

    try:
        return RunQueue(status["queue"]).is_pending(run.path)
    except (RetrainError, sqlite3.Error, OSError):  # an unreadable queue cannot vouch for the run
        return False


def process_started(pid: int) -> str | None:
    """When a process started (clock ticks since boot), to tell it from a later process with a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, started: str | None = None) -> bool:
    """True while `pid` runs and, when `started` is known, is still the same process (not a reused pid)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(int(pid), os.WNOHANG)  # reap our own finished child, so it is not a zombie forever
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return started is None or process_started(int(pid)) in (None, started)


def launch_run(run_dir: str | Path, env: dict[str, str] | None = None) -> int:
    """Start `python -m pipeline run --run_dir RUN_DIR` as its own process; returns its pid.

    The run outlives the caller (its own session), and its output goes to run.log.
    """
    run = RunDir(run_dir)
    if not run.config.exists():
        raise RetrainError(f"{run.config}: no config.json in the run directory")
    run.cancel_request.unlink(missing_ok=True)  # a new start; an old cancel does not carry over
    run.write_status("queued", progress=0.0, step="waiting to start", pid=0)
    with open(run.log, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--run_dir", str(run.path)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, **(env or {})},
                                   cwd=Path(__file__).resolve().parents[1])
    run.write_status("queued", progress=0.0, step="waiting to start", pid=process.pid,
                     pid_started=process_started(process.pid))
    return process.pid


def cancel_run(run_dir: str | Path) -> None:
    """Ask a run to stop; it finishes its current batch, keeps the cache, and says cancelled.

    The request is a file as well as a SIGTERM: a run still starting up (before its signal
    handler is in place) sees the file at its first check, and if it died instead, the file
    tells `refreshed_status` that it was cancelled rather than crashed.
    """
    run = RunDir(run_dir)
    status = run.status()
    if status.get("state") in FINISHED:
        return
    run.cancel_request.touch()
    if isinstance(status.get("queue"), str):  # still in the app's queue: leave the line (a row, no process)
        from pipeline.run_queue import RunQueue

        with contextlib.suppress(RetrainError):  # an unreadable queue skips it anyway: the cancel file says so
            RunQueue(status["queue"]).withdraw(run.path)
    pid = status.get("pid")
    if process_alive(pid, status.get("pid_started")):
        os.kill(int(pid), signal.SIGTERM)
    else:
        run.write_status("cancelled", message="cancelled before it started")


def delete_run(run_dir: str | Path) -> None:
    """Remove a finished run's folder; a running one must be cancelled first."""
    run = RunDir(run_dir)
    if refreshed_status(run).get("state") not in FINISHED | {None}:
        raise RetrainError(f"run {run.name} is still running; cancel it before deleting it")
    shutil.rmtree(run.path)


def list_runs(root: str | Path) -> list[RunDir]:
    """Every run under root, newest first by name (the app names runs run-YYYYmmdd-HHMMSS-xxxx).

    Not by a file's time: config.json is rewritten when a queued run starts, which would reorder
    the list. A run deleted while this lists is simply left out.
    """
    try:
        folders = list(Path(root).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    runs = [RunDir(path) for path in folders if (path / "config.json").is_file()]
    return sorted(runs, key=lambda run: run.name, reverse=True)


@contextlib.contextmanager
def job_slot(max_jobs: int, slots_dir: str | Path, on_wait: Callable[[], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Iterator[int]:
    """Hold one of `max_jobs` training slots; wait (calling on_wait) while all are taken.

    Slots are file locks, so they are released by the kernel even when a run is killed. A run that
    the app's queue started (pipeline.run_queue) already holds its slot: its ticket.
    """
    if os.environ.get("RETRAIN_STUDIO_QUEUE_TICKET"):
        yield -1
        return
    slots_dir = Path(slots_dir)
    slots_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(max(max_jobs, 1)):
            handle = open(slots_dir / f"slot-{index}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield index
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if should_stop and should_stop():
            raise RunCancelled("cancelled while waiting for a free training slot")
        if on_wait:
            on_wait()
        time.sleep(1.0)


def max_jobs() -> int:
    """How many runs may train at once (RETRAIN_STUDIO_MAX_JOBS, default 1 on a small machine)."""
    from pipeline.config import env_whole_number

    return max(env_whole_number("RETRAIN_STUDIO_MAX_JOBS", 1), 1)
