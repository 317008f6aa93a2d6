"""Hosted mode under hostile or careless use: caps that hold across all sessions, not per session.

The queue (tickets in SQLite, one dispatcher, a cap that holds with six submissions at once, first come
first served, a global queue cap, no zombies, crash-safe claims), the disk budget and the expiry of idle
workspaces, the decode budget, privacy of the bottleneck cache, names shown as plain text, and a folder
name too long for the file system. The queue is tested with a stand-in worker (tests/queue_worker.py)
that runs the real queue code around a sleep, so it needs no TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import RetrainError
from pipeline.run_queue import RunQueue, _wait_estimate

REPO = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("queue_worker.py"))


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    return root.resolve()


def fake_runs(folder: Path, count: int, sleep: float = 0.6) -> list[Path]:
    """Run folders the stand-in worker can run: a config and how long to take."""
    runs = []
    for index in range(count):
        run = folder / f"run-{index:02d}"
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
        (run / "sleep").write_text(str(sleep))
        runs.append(run)
    return runs


def intervals(folder: Path, count: int, timeout: float = 90) -> list[tuple[str, float, float]]:
    """(run, start, end) of `count` finished stand-in runs, in order of start; waits for them."""
    log = folder / "intervals.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().split("\n") if log.exists() else []
        if sum(line.startswith("end ") for line in lines) >= count:
            break
        time.sleep(0.2)
    events: dict[str, dict[str, float]] = {}
    for line in filter(None, log.read_text().split("\n")):
        kind, name, when = line.split()
        events.setdefault(name, {})[kind] = float(when)
    assert len(events) == count and all("end" in e for e in events.values()), events
    return sorted(((name, e["start"], e["end"]) for name, e in events.items()), key=lambda item: item[1])


def most_at_once(spans: list[tuple[str, float, float]]) -> int:
    points = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    running = peak = 0
    for _, change in points:
        running += change
        peak = max(peak, running)
    return peak


# ---- The queue ----------------------------------------------------------------------------------------------------

SUBMIT = """
import sys, time
sys.path.insert(0, {repo!r})
from pipeline.run_queue import RunQueue
queue = RunQueue({queue!r}, command=[sys.executable, {worker!r}])
while time.time() < {at}:
    time.sleep(0.001)
queue.submit({run!r})
queue.dispatch(2)
"""


def test_six_simultaneous_submissions_never_run_more_than_the_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "2")
    runs = fake_runs(tmp_path / "runs", 6, sleep=1.0)
    at = time.time() + 1.5  # six processes, released at the same moment: six sessions pressing Start
    sessions = [subprocess.Popen([sys.executable, "-c", SUBMIT.format(repo=str(REPO), queue=str(tmp_path / "q"),
                                                                      worker=WORKER, at=at, run=str(run))])
                for run in runs]
    assert all(session.wait(timeout=60) == 0 for session in sessions)
    spans = intervals(tmp_path / "runs", 6)
    assert most_at_once(spans) == 2, spans  # the cap is used, and never exceeded
    queue = RunQueue(tmp_path / "q")
    assert queue.holders() == [] and all(not queue.is_pending(run) for run in runs)


def test_runs_start_in_ticket_order_and_the_queue_moves_on_by_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "1")
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 4, sleep=0.3)
    for run in reversed(runs):  # tickets in the order submitted, whatever the names
        queue.submit(run)
    assert queue.dispatch(1) == [1]  # one slot: only the first ticket starts; each run starts the next as it ends
    spans = intervals(tmp_path / "runs", 4)
    assert [name for name, _, _ in spans] == [run.name for run in reversed(runs)]
    assert most_at_once(spans) == 1


def test_a_full_queue_is_refused_clearly(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 3)
    queue.submit(runs[0], limit=2)
    queue.submit(runs[1], limit=2)
    with pytest.raises(RetrainError, match=r"training queue is full \(2 runs waiting"):
        queue.submit(runs[2], limit=2)
    assert not queue.is_pending(runs[2])


def test_finished_runs_are_reaped_not_left_as_zombies(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "2")
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 2, sleep=0.2)
    for run in runs:
        queue.submit(run)
    queue.dispatch(2)  # this test process is the parent of both
    pids = [json.loads((run / "status.json").read_text())["pid"] for run in runs]
    intervals(tmp_path / "runs", 2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    states = {pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
              for pid in pids if Path(f"/proc/{pid}").exists()}
    assert not states, f"left behind (Z = zombie): {states}"


def test_a_dispatcher_killed_between_claim_and_start_loses_nothing_and_starts_nothing_twice(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    first, second = fake_runs(tmp_path / "runs", 2, sleep=0.2)
    queue.submit(first)
    queue.submit(second)
    assert queue._claim_next() == (1, str(first))  # ...and the dispatcher dies here, before starting it
    assert queue.dispatch(1) == [1]  # the claim is undone: ticket 1 keeps its place and starts
    intervals(tmp_path / "runs", 2)  # and then ticket 2, each once
    # Killed after starting the run but before recording it: the run holds its ticket's lock, so it counts.
    third = fake_runs(tmp_path / "more", 1)[0]
    queue.submit(third)
    ticket, _ = queue._claim_next()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
                               str(tmp_path / "q" / "tickets" / f"{ticket}.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert queue.dispatch(1) == [] and [h["ticket"] for h in queue.holders()] == [ticket]
    finally:
        holder.kill()
        holder.wait()
    assert queue.dispatch(1) == [ticket]  # its process gone without getting going: started again, once
    intervals(tmp_path / "more", 1)


def test_a_waiting_run_knows_its_place_and_an_estimate(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 3)
    for run in runs:
        queue.submit(run)
    assert queue.place(runs[2], 1).position == 3 and queue.place(runs[2], 1).estimate_seconds is None
    with queue._db() as db:  # two earlier runs took 100 s each
        db.execute("INSERT INTO tickets (run_dir, state, submitted, started, finished) VALUES "
                   "('old1', 'finished', 0, 0, 100), ('old2', 'finished', 0, 200, 300)")
    place = queue.place(runs[2], 1)
    assert (place.position, place.waiting, place.running, place.estimate_seconds) == (3, 3, 0, 200.0)
    assert queue.place(runs[2], 2).estimate_seconds == 100.0
    assert _wait_estimate(1, [30.0], 1, 100.0) == 70.0  # the running one has 70 s to go
    queue.withdraw(runs[0])
    assert queue.place(runs[0], 1) is None and queue.place(runs[2], 1).position == 2


def test_app_runs_wait_in_the_data_roots_queue_and_a_full_queue_refuses(root, monkeypatch):
    from pipeline.runs import cancel_run, refreshed_status
    from pipeline.workspace import app_queue, new_token, open_workspace, queue_place, start_run, working_config

    monkeypatch.setenv("RETRAIN_STUDIO_MAX_QUEUED", "2")
    monkeypatch.setattr("pipeline.workspace.dispatch_queue", lambda root=None: [])  # every slot is taken
    first, second = open_workspace(new_token()), open_workspace(new_token())
    for workspace in (first, second):
        workspace.update_state(dataset={"image_dir": str(root)})
    waiting = [start_run(first, working_config(first)), start_run(second, working_config(second))]
    assert app_queue().folder == root / "queue"  # the data root's own slots, not the machine's
    assert [refreshed_status(run)["state"] for run in waiting] == ["queued", "queued"]  # a row, no process
    assert queue_place(waiting[1]).position == 2
    with pytest.raises(RetrainError, match="queue is full"):
        start_run(second, working_config(second))
    assert len(list(second.runs.iterdir())) == 1, "a refused run leaves no folder"
    cancel_run(waiting[0].path)
    assert refreshed_status(waiting[0])["state"] == "cancelled" and queue_place(waiting[1]).position == 1
