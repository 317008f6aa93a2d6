"""Run directories: the files a run writes as it goes, and starting, watching and cancelling runs.

A run is a folder, not a live object: `config.json` (the resolved settings), `status.json`
(written atomically and often), `metrics.csv` (a row per validation), `report.json`, logs and
exports. The app starts a run as its own process and only ever reads these files, so a closed
browser tab, a second tab, or a restarted app all see the same run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pipeline import settings
from pipeline.errors import RetrainError, RunCancelled
from pipeline.files import describe_write_error, display_name, is_disk_full, write_json_atomic, write_json_in_place
from pipeline.records import DamagedFile, read_metrics, read_status
from pipeline.stage_progress import running_stage_title, settled_board

try:
    import fcntl
except ImportError:  # Windows: the engine imports (predict, inspect), but training needs POSIX file locks
    fcntl = None


class StateInfo(NamedTuple):
    """What a run state means to someone who has never trained a model, its Material icon, and the share of the
    progress bar it fills (roughly by how long it takes on a cold cache)."""

    words: str
    icon: str
    span: tuple[float, float] = (0.0, 1.0)


# Every state a run writes, in order: the one list the engine checks states against and the app shows the words of.
STATE_INFO = {
    "queued": StateInfo("Queued: waiting to start", "hourglass_top"),
    "caching": StateInfo("Reading every image through the backbone", "memory", (0.0, 0.6)),
    "augmenting": StateInfo("Making augmented copies", "auto_awesome", (0.6, 0.7)),
    "training": StateInfo("Training", "model_training", (0.7, 0.9)),
    "evaluating": StateInfo("Testing on held-out images", "fact_check", (0.9, 0.93)),
    "exporting": StateInfo("Exporting the model", "inventory_2", (0.93, 1.0)),
    "done": StateInfo("Finished", "check_circle"),
    "failed": StateInfo("Failed", "error"),
    "cancelled": StateInfo("Cancelled", "cancel"),
}
STATES = tuple(STATE_INFO)
# Shown, never written: a queued run that said it waits for a slot, and a status.json that cannot be read.
WAITING_INFO = StateInfo("Queued: waiting for a free training slot", "hourglass_top")
UNKNOWN_INFO = StateInfo("Unknown: its status.json is damaged", "help")
NOT_STARTED_INFO = StateInfo("Not started", "radio_button_unchecked")
# "unknown" is never written: it is what a damaged status.json reads as. Nothing is known to run it, so it
# counts as finished (it can be deleted or rerun, and takes no place in a queue).
UNKNOWN = "unknown"
FINISHED = {"done", "failed", "cancelled", UNKNOWN}
METRIC_COLUMNS = ["step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "elapsed_seconds"]
# The file that makes a folder a run folder: written when a run first claims a folder, and locked by the run
# writing into it. A folder without it that holds anything is not ours, and nothing in it is touched.
RUN_MARKER = ".retrain-studio-run"


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
        self.marker = self.path / RUN_MARKER
        self.needed_mb: float | None = None  # disk space the run expects to write, for a full disk's message

    # What a run writes; cleared when a run starts again in the same folder, so old and new never mix.
    OUTPUTS = (
        "metrics.csv",
        "report.json",
        "head.npz",
        "model.keras",
        "model.tflite",
        "model_float16.tflite",
        "model_dynamic.tflite",
        "model_int8.tflite",
        "labels.txt",
        "saved_model",
        "logs",
        "dataset_manifest.csv",
        "dataset.json",
        "familiarity.json",
        "model.onnx",
        "preprocessing.json",
    )

    def is_ours(self) -> bool:
        """True when the folder carries our run marker."""
        return self.marker.is_file()

    @contextlib.contextmanager
    def claim(self, config: dict[str, Any] | None = None) -> Iterator[None]:
        """Hold this folder for one run: refused, touching nothing, when it is not ours or another run has it.

        Ours means: new, empty, carrying RUN_MARKER, or holding only a config.json equal to `config` (a
        folder prepared for `python -m pipeline run`). The lock is an flock on the marker, so the kernel
        frees it when the run's process ends, however it ends.
        """
        self._refuse_if_foreign(config)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.marker, "a+")
        except OSError as error:
            raise RetrainError(
                f"cannot start a run in {display_name(self.path)}: {describe_write_error(error, self.path)}"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise RetrainError(
                f"{display_name(self.path)}: another run{f' (pid {holder})' if holder else ''} is "
                "writing into this folder now; wait for it to finish, or choose another "
                "--output_dir"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock

    def _refuse_if_foreign(self, config: dict[str, Any] | None) -> None:
        try:
            entries = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise RetrainError(
                f"{display_name(self.path)} is a file, not a folder; choose a new or empty folder for the run"
            ) from None
        except OSError as error:  # a loop of links, a folder we may not read, a name too long
            raise RetrainError(
                f"{display_name(self.path)} cannot be used as the run folder "
                f"({error.strerror or error}); choose a new or empty folder for the run"
            ) from None
        if (
            not entries
            or RUN_MARKER in entries
            or (entries == ["config.json"] and config is not None and _same_settings(self.config, config))
        ):
            return
        raise RetrainError(
            f"{display_name(self.path)} already holds files ({len(entries)} entries, e.g. "
            f"{display_name(entries[0])}) and is not a Retrain Studio run folder; nothing in it was "
            f"touched. Choose a new or empty --output_dir (a run folder of an older version: create "
            f"an empty file {RUN_MARKER} in it)"
        )

    def clear_outputs(self) -> None:
        for name in self.OUTPUTS:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for staging in self.path.glob(".staging-*"):  # an export a killed run was writing (pipeline.export)
            if staging.is_dir() and not staging.is_symlink():
                shutil.rmtree(staging)

    @property
    def name(self) -> str:
        return self.path.name

    def status(self) -> dict[str, Any]:
        """The last status written, {} for a run that has not started, or state "unknown" (with the
        problem as its message) when status.json is damaged."""
        try:
            return read_status(self.status_file, STATES)
        except DamagedFile as damaged:
            return {"state": UNKNOWN, "message": str(damaged), "damaged": True}

    def write_status(
        self, state: str, progress: float | None = None, step: str = "", message: str = "", **details: Any
    ) -> None:
        """Replace status.json in one atomic step, keeping when the run started.

        On a full disk (no room for the temporary copy) the file is overwritten in place instead: a
        run that fails because the disk filled must still be able to say so.
        """
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        previous = self.status()
        if previous.get("damaged"):
            previous = {}
        now = time.time()
        if progress is None:
            progress = previous.get("progress", 0.0)
        status = {
            "state": state,
            "progress": round(progress, 4),
            "step": step,
            "message": message,
            "updated": now,
            "started": previous.get("started", now),
            "pid": previous.get("pid", os.getpid()),
        }
        if "pid" in previous and "pid" not in details and previous.get("pid_started"):
            status["pid_started"] = previous["pid_started"]  # what tells the run's process from a reused pid
        # When the work began, after any wait in a queue: durations shown count from here, the wait apart.
        working_since = (
            None if state == "queued" else previous.get("working_since") or (None if state in FINISHED else now)
        )
        if working_since:
            status["working_since"] = working_since
        if state in FINISHED:
            status["finished"] = now
        status.update(details)
        try:
            write_json_atomic(self.status_file, status)
        except OSError as error:
            if not is_disk_full(error):
                raise
            write_json_in_place(self.status_file, status)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one row to metrics.csv (header on first write); one write call per row."""
        new = not self.metrics.exists()
        line = ",".join("" if row.get(column) is None else str(row[column]) for column in METRIC_COLUMNS)
        with open(self.metrics, "a") as handle:
            handle.write((",".join(METRIC_COLUMNS) + "\n" if new else "") + line + "\n")

    def read_metrics(self) -> list[dict[str, float | None]]:
        """metrics.csv as rows of numbers (a half-written last line is skipped); DamagedFile when damaged."""
        return read_metrics(self.metrics, METRIC_COLUMNS)


def _same_settings(config_file: Path, config: dict[str, Any]) -> bool:
    """True when `config_file` holds the same settings as `config` (where the outputs go aside)."""
    from pipeline.records import read_config

    try:
        saved = read_config(config_file).to_dict()
    except RetrainError:
        return False
    return {**saved, "output": {**saved["output"], "output_dir": None}} == {
        **config,
        "output": {**config["output"], "output_dir": None},
    }


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
        run.write_status("cancelled", message="cancelled before it got going", **settled_board(status, "cancelled"))
    elif said := _last_error_line(run):  # it stopped on an error it printed before it could write status.json
        run.write_status("failed", message=said, **settled_board(status, "failed"))
    else:
        # Where it died, in the board's words too: "caching (preparing the backbone)", not only "caching".
        stage = status.get("state", "")
        title = running_stage_title(status)
        where = f"{stage} ({title})" if title and title != stage else stage
        # Exports it had checked stay usable (predict says the run ended early); the rest were never finished.
        exports = status.get("exports")
        kept = (
            {name: state if state == "ready" else "not built" for name, state in exports.items()}
            if isinstance(exports, dict)
            else None
        )
        run.write_status(
            "failed",
            message=f"interrupted: the run's process (pid {status.get('pid')}) died while "
            f"{where} (killed or out of memory); start it again — cached "
            "bottlenecks are kept",
            interrupted=stage,
            **({"exports": kept} if kept is not None else {}),
            **settled_board(status, "failed"),  # the stage board stays: which stage died, which were done
        )
    return run.status()


def _last_error_line(run: RunDir) -> str | None:
    """The last `error: ...` line the run's process printed to run.log, if any (its last 64 KB are read)."""
    try:
        with open(run.log, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - (64 << 10)))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    errors = [line[len("error:") :].strip() for line in tail.splitlines() if line.startswith("error:")]
    return errors[-1] if errors else None


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
    run.marker.touch()  # the caller made this folder for the run (the app's start_run): it is ours
    run.cancel_request.unlink(missing_ok=True)  # a new start; an old cancel does not carry over
    run.write_status("queued", progress=0.0, step="waiting to start", pid=0)
    with open(run.log, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--run_dir", str(run.path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parents[1],
        )
    run.write_status(
        "queued", progress=0.0, step="waiting to start", pid=process.pid, pid_started=process_started(process.pid)
    )
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
def job_slot(
    max_jobs: int,
    slots_dir: str | Path,
    on_wait: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """Hold one of `max_jobs` training slots; wait (calling on_wait) while all are taken.

    Slots are file locks, so they are released by the kernel even when a run is killed. A run that
    the app's queue started (pipeline.run_queue) already holds its slot: its ticket.
    """
    if settings.QUEUE_TICKET.raw():
        yield -1
        return
    if fcntl is None:
        raise RetrainError(
            "training needs a POSIX system (Linux or macOS; on Windows use WSL): training slots are fcntl file locks"
        )
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
    return max(settings.MAX_JOBS.whole(), 1)
