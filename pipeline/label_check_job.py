"""Finding likely mistakes as a background job: started by a page, watched by any page, its results kept.

Checking labels (`pipeline.suspects`) and drawing the dataset map need every bottleneck: minutes on
a few thousand photos the first time. Run inline, that blocked a page and was forgotten on the next
navigation. Here the check runs as its own process (`python -m pipeline.label_check_job FOLDER`)
that writes, into one folder of the workspace:

    request.json   what to check (dataset config, backbone settings, map method), written by `start_label_check`
    status.json    state, stage, done/total, rate, ETA — rewritten atomically as it goes
    results.json   suspects (ordered by the confidence the page shows: p(suggested) highest first) and map points
    job.log        the process's own output, for a crash

It takes one of the global training slots (`runs.job_slot`) like a run, so background checks
cannot crowd out the server's cores. Every file is read back through `pipeline.records`: damaged
→ a state "damaged" with a message naming the file and the fix, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import DatasetConfig, TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.files import write_json_atomic
from pipeline.progress import Progress
from pipeline.records import DamagedFile, read_json_record
from pipeline.runs import job_slot, max_jobs, process_alive, process_started
from pipeline.settings import cache_root

try:
    import fcntl
except ImportError:
    fcntl = None

FORMAT = "retrain-studio/label-check"
PER_PAGE = 20
ACTIVE = ("queued", "running")
_FIX = "start the check again (Find likely mistakes)"
_WORDS = {
    "caching": "reading photos through the backbone",
    "checking labels": "checking labels",
    "mapping": "drawing the map",
}


@dataclass
class SuspectsPage:
    """One page of a finished check's suspects, with what the page needs to draw around them."""

    suspects: list[dict[str, Any]]  # file, path, label, suggested, label_probability, suggested_probability
    page: int  # 1-based, clamped into 1..pages
    pages: int
    total: int
    checked_images: int
    signature: str  # the dataset's content signature when checked: differs → results are stale
    architecture: str


def start_label_check(
    folder: str | Path,
    dataset: DatasetConfig,
    train: TrainConfig,
    bottleneck_dir: str | Path | None = None,
    method: str = "pca",
) -> int:
    """Start a check in the background (the process id); refused while one is running in `folder`.

    Earlier results stay readable until the new ones replace them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _start_lock(folder):  # two tabs pressing at once: the second sees the first's "queued", not "none"
        return _start(folder, dataset, train, bottleneck_dir, method)


def _start(
    folder: Path, dataset: DatasetConfig, train: TrainConfig, bottleneck_dir: str | Path | None, method: str
) -> int:
    if label_check_status(folder)["state"] in ACTIVE:
        raise RetrainError("a check for likely mistakes is already running; wait for it or cancel it")
    (folder / "cancel-requested").unlink(missing_ok=True)
    write_json_atomic(
        folder / "request.json",
        {
            "format": FORMAT,
            "dataset": dataclasses.asdict(dataset),
            "train": dataclasses.asdict(train),
            "bottleneck_dir": str(bottleneck_dir or cache_root() / "bottlenecks"),
            "method": method,
        },
    )
    _write_status(folder, "queued", "starting", pid=0)
    with open(folder / "job.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.label_check_job", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    _write_status(folder, "queued", "starting", pid=process.pid, pid_started=process_started(process.pid))
    return process.pid


@contextlib.contextmanager
def _start_lock(folder: Path):
    if fcntl is None:  # Windows: the app runs on POSIX servers
        yield
        return
    with open(folder / ".start.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def cancel_label_check(folder: str | Path) -> None:
    """Ask a running check to stop (it stops between stages and folds; bottlenecks cached so far are kept)."""
    folder = Path(folder)
    if label_check_status(folder)["state"] in ACTIVE:
        (folder / "cancel-requested").touch()


def label_check_status(folder: str | Path) -> dict[str, Any]:
    """{state: none|queued|running|done|failed|cancelled|damaged, step, done, total, per_second, eta_seconds,
    message}; a job whose process died without saying so reads as failed."""
    folder = Path(folder)
    try:
        status = read_json_record(folder / "status.json", _FIX, default={})
    except DamagedFile as damaged:
        return {"state": "damaged", "message": str(damaged)}
    if not status:
        return {"state": "none", "message": ""}
    if status.get("state") not in (*ACTIVE, "done", "failed", "cancelled"):
        return {"state": "damaged", "message": f"{folder / 'status.json'}: is damaged (no known state); {_FIX}"}
    pid, started = status.get("pid"), status.get("pid_started")
    # pid -1 or true would ask os.kill about every process or init (always "alive": a check running forever).
    if (
        pid is not None
        and (type(pid) is not int or not 0 <= pid < 2**31)
        or started is not None
        and not isinstance(started, str)
    ):
        return {
            "state": "damaged",
            "message": f"{folder / 'status.json'}: is damaged (pid {pid!r:.30} is not a process id); {_FIX}",
        }
    if (
        status["state"] in ACTIVE
        and pid
        and not process_alive(pid, started)
        and read_json_record(folder / "status.json", _FIX, default={}).get("state") in ACTIVE
    ):
        return {**status, "state": "failed", "message": f"the check stopped unexpectedly; see {folder / 'job.log'}"}
    return status


def status_line(status: dict[str, Any]) -> str:
    """The status as one line for a page: "checking labels 3/5 (about 12 s left)", "done: 14 likely mistakes"."""
    state, step = status.get("state"), status.get("step") or ""
    if state in ACTIVE:
        done, total, eta = status.get("done"), status.get("total"), status.get("eta_seconds")
        count = f" {done}/{total}" if isinstance(done, int) and isinstance(total, int) and total else ""
        left = f" (about {eta:.0f} s left)" if isinstance(eta, (int, float)) and math.isfinite(eta) else ""
        return f"{step}{count}{left}" or "starting"
    return f"{state}: {status.get('message') or step}"


def suspects_page(folder: str | Path, page: int = 1, per_page: int = PER_PAGE) -> SuspectsPage:
    """Page `page` (1-based) of the last finished check's suspects; DamagedFile when results.json is damaged,
    RetrainError when there are no results yet."""
    results = _read_results(Path(folder))
    suspects = results["suspects"]
    per_page = max(1, int(per_page))
    pages = max(1, -(-len(suspects) // per_page))
    # A page number from a widget may be a float (or NaN): clamped into 1..pages, never an error.
    page = min(max(int(page), 1), pages) if isinstance(page, (int, float)) and math.isfinite(page) else 1
    return SuspectsPage(
        suspects[(page - 1) * per_page : page * per_page],
        page,
        pages,
        len(suspects),
        results["checked_images"],
        results["signature"],
        results["architecture"],
    )


def map_points(folder: str | Path) -> pd.DataFrame:
    """The dataset map of the last finished check: x, y, file, path, label, split, suspect."""
    return pd.DataFrame(
        _read_results(Path(folder))["points"], columns=["x", "y", "file", "path", "label", "split", "suspect"]
    )


def run_label_check(folder: str | Path) -> None:
    """The background process's whole job: read the request, check in a training slot, write the results."""
    folder = Path(folder)
    _write_status(
        folder, "queued", "waiting for a free slot", pid=os.getpid(), pid_started=process_started(os.getpid())
    )
    try:
        request = read_json_record(folder / "request.json", _FIX)
        if request.get("format") != FORMAT:
            raise DamagedFile(folder / "request.json", "is not a label-check request", _FIX)
        stop = (folder / "cancel-requested").exists
        with job_slot(max_jobs(), cache_root() / "jobs", should_stop=stop):
            results = _check(folder, request, stop)
        write_json_atomic(folder / "results.json", results)
    except RunCancelled:
        _write_status(folder, "cancelled", "cancelled", message="cancelled; bottlenecks cached so far are kept")
        return
    except RetrainError as error:
        _write_status(folder, "failed", "failed", message=str(error))
        return
    except Exception as error:  # a bug: the traceback goes to job.log, the page gets one line
        _write_status(
            folder,
            "failed",
            "failed",
            message=f"internal error ({type(error).__name__}: {error}); see {folder / 'job.log'}",
        )
        raise
    _write_status(
        folder,
        "done",
        "done",
        message=f"{len(results['suspects'])} likely mistake(s) among {results['checked_images']} photos",
    )


def _check(folder: Path, request: dict[str, Any], stop) -> dict[str, Any]:
    from pipeline.dataset import load_dataset
    from pipeline.studio.label_check import check_labels

    try:
        dataset_config = DatasetConfig(**request["dataset"])
        train = TrainConfig(**request["train"])
        bottleneck_dir, method = str(request["bottleneck_dir"]), str(request["method"])
    except (KeyError, TypeError) as error:
        raise DamagedFile(folder / "request.json", f"is damaged ({error})", _FIX) from None

    def progress(report: Progress) -> None:
        if stop():
            raise RunCancelled("cancelled")
        _write_status(
            folder,
            "running",
            _WORDS.get(report.stage, report.stage),
            done=report.done,
            total=report.total,
            per_second=round(report.per_second, 2),
            eta_seconds=None if report.eta_seconds is None else round(report.eta_seconds, 1),
        )

    _write_status(folder, "running", "reading the dataset")
    dataset = load_dataset(dataset_config, check_images=False)
    _write_status(folder, "running", "loading the backbone")
    # One fetch of the bottlenecks for both the suspects and the map (pipeline.studio.label_check).
    check = check_labels(dataset, train, bottleneck_dir, method, progress=progress)
    suspects, points = check.suspects, check.points
    # The page shows "looks like <suggested> (87%)": that is the order a reader expects, most confident first.
    ordered = sorted(suspects, key=lambda s: (-s.suggested_probability, s.label_probability, s.file))
    return {
        "format": FORMAT,
        "signature": dataset.signature,
        "architecture": train.architecture,
        "checked_images": int(len(points)),
        "finished": time.time(),
        "suspects": [{**suspect.to_dict(), "path": suspect.path} for suspect in ordered],
        "points": points[["x", "y", "file", "path", "label", "split", "suspect"]].to_dict("records"),
    }


def _read_results(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    results = read_json_record(path, _FIX, default=None)
    if results is None:
        raise RetrainError("no likely mistakes have been looked for yet; start the check")
    if (
        results.get("format") != FORMAT
        or not isinstance(results.get("suspects"), list)
        or not isinstance(results.get("points"), list)
        or type(results.get("checked_images")) is not int
    ):
        raise DamagedFile(path, "is damaged (not the results of a check)", _FIX)
    keys = {
        "file": str,
        "path": str,
        "label": str,
        "suggested": str,
        "label_probability": (int, float),
        "suggested_probability": (int, float),
    }
    for suspect in results["suspects"]:
        if not isinstance(suspect, dict) or not all(isinstance(suspect.get(k), t) for k, t in keys.items()):
            raise DamagedFile(path, f"is damaged (a suspect is malformed: {suspect!r:.80})", _FIX)
    point_keys = {"x": (int, float), "y": (int, float), "file": str, "path": str, "label": str}
    for point in results["points"]:
        if not isinstance(point, dict) or not all(isinstance(point.get(k), t) for k, t in point_keys.items()):
            raise DamagedFile(path, f"is damaged (a map point is malformed: {point!r:.80})", _FIX)
    results.setdefault("signature", "")
    results.setdefault("architecture", "")
    if not isinstance(results["signature"], str) or not isinstance(results["architecture"], str):
        raise DamagedFile(path, "is damaged (its dataset signature or backbone is not text)", _FIX)
    return results


def _write_status(folder: Path, state: str, step: str, **fields: Any) -> None:
    previous = {}
    with contextlib.suppress(DamagedFile):
        previous = read_json_record(folder / "status.json", _FIX, default={})
    status = {"state": state, "step": step, "updated": time.time(), "message": fields.pop("message", "")}
    for kept in ("pid", "pid_started"):
        if kept in previous and kept not in fields:
            status[kept] = previous[kept]
    write_json_atomic(folder / "status.json", {**status, **fields})


if __name__ == "__main__":
    run_label_check(sys.argv[1])
