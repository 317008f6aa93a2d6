"""The app's training queue: tickets in a SQLite file, and one dispatcher at a time that starts them.

A queued run is a row, not a waiting process, so a thousand waiting runs cost a thousand rows.
Runs start in ticket order (first come, first served), and never more than RETRAIN_STUDIO_MAX_JOBS at
once, because only `dispatch` starts them and it runs under an exclusive file lock. Nothing here is a
long-lived service: the app calls `dispatch` whenever a run is submitted or a page (or the sidebar)
refreshes, and each run calls it as it ends, so the queue moves on with no browser open.

The queue lives in a folder of the data root, so its slots are the app's own: a CLI run elsewhere on
the machine never holds one.

The trade-off that shaped it: a run counts as running while its *ticket lock* is held. The dispatcher
takes that lock before starting the run and hands the open file to the run process, which keeps it
until it exits; the kernel drops it on any death (kill -9 included). So the count of running tickets
needs no pid guessing, and a dispatcher killed between "claim" and "start" loses nothing: its claimed
ticket's lock is free and the run never marked itself started, so the next dispatcher puts the ticket
back at its place in line (a ticket that fails to start three times is given up, with a message).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import settings
from pipeline.errors import RetrainError

# The environment variables a queued run is started with: where its queue is and which ticket it is.
QUEUE_ENV, TICKET_ENV = settings.QUEUE_DIR.name, settings.QUEUE_TICKET.name  # set for the run a ticket starts
START_ATTEMPTS = 3  # a ticket whose process never gets going is given up after this many starts
RECENT_RUNS = 10  # how many finished runs the wait estimate averages

SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- the order of the queue
    run_dir TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',          -- the workspace that submitted it
    state TEXT NOT NULL DEFAULT 'queued',    -- queued | starting | running | finished
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS tickets_by_state ON tickets (state, id);
"""


def max_queued() -> int:
    """How many runs may wait at once across all sessions (RETRAIN_STUDIO_MAX_QUEUED, default 20)."""
    return max(settings.MAX_QUEUED.whole(), 1)


@dataclass(frozen=True)
class Place:
    """Where a waiting run stands: position in line (1 = next), runs waiting and running, and the wait."""

    position: int
    waiting: int
    running: int
    estimate_seconds: float | None  # None until some run has finished to estimate from


class RunQueue:
    """The queue of one data root: `<folder>/queue.sqlite`, `dispatch.lock` and `tickets/<id>.lock`."""

    def __init__(self, folder: str | Path, command: list[str] | None = None):
        self.folder = Path(folder)
        # What starts a ticket's run; `ticket id` is appended. Tests pass a stand-in worker.
        self.command = command or [sys.executable, "-m", "pipeline.run_queue"]

    # ---- Storage ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection in one immediate (write-locked) transaction, committed on success.

        A queue file that is not a database any more is set aside (its waiting runs then show as
        ended) and a new one started, so one damaged file does not stop every later run.
        """
        path = self.folder / "queue.sqlite"
        try:
            (self.folder / "tickets").mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=60, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise RetrainError(f"{path}: the training queue cannot be opened ({error})") from None
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:  # locked past the timeout, disk full, read-only
            connection.close()
            raise RetrainError(f"{path}: the training queue cannot be written ({error}); try again") from None
        except sqlite3.DatabaseError as error:  # not a database, or malformed
            connection.close()
            raise _set_aside(path, error) from None
        try:
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise RetrainError(f"{path}: the training queue cannot be written ({error}); try again") from None
        except sqlite3.DatabaseError as error:  # damaged in the middle, found by a query
            connection.close()
            raise _set_aside(path, error) from None
        finally:
            connection.close()

    def _ticket_lock(self, ticket: int) -> Path:
        return self.folder / "tickets" / f"{ticket}.lock"

    def _lock_is_held(self, ticket: int) -> bool:
        """True while some process (a run, or a dispatcher starting it) holds the ticket's lock."""
        try:
            handle = open(self._ticket_lock(ticket), "a")
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    # ---- Submitting -------------------------------------------------------------------------------------------------

    def submit(self, run_dir: str | Path, owner: str = "", limit: int | None = None) -> int:
        """Add a run to the end of the line and return its ticket; RetrainError when the line is full.

        The run's dataset is recorded first (`pipeline.manifest.freeze_dataset`): a run trains on the
        photos there were when it was queued, not on what was added while it waited.
        """
        from pipeline.manifest import freeze_dataset

        limit = max_queued() if limit is None else limit
        freeze_dataset(run_dir)
        with self._db() as db:
            waiting = db.execute("SELECT COUNT(*) FROM tickets WHERE state = 'queued'").fetchone()[0]
            if waiting >= limit:
                raise RetrainError(
                    f"the server's training queue is full ({waiting} runs waiting, the most it "
                    "takes); try again when some have finished"
                )
            cursor = db.execute(
                "INSERT INTO tickets (run_dir, owner, submitted) VALUES (?, ?, ?)", (str(run_dir), owner, time.time())
            )
            return int(cursor.lastrowid)

    def withdraw(self, run_dir: str | Path) -> bool:
        """Take a run that has not started out of the line; True when it was waiting."""
        with self._db() as db:
            return (
                db.execute(
                    "UPDATE tickets SET state = 'finished', finished = ? WHERE run_dir = ? AND state = 'queued'",
                    (time.time(), str(run_dir)),
                ).rowcount
                > 0
            )

    # ---- Dispatching ------------------------------------------------------------------------------------------------

    def dispatch(self, max_jobs: int) -> list[int]:
        """Start waiting tickets, oldest first, while fewer than `max_jobs` run; the tickets started.

        One dispatcher at a time (an exclusive lock on dispatch.lock): the count of running tickets
        and the starts it leads to are one decision.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        started = []
        with open(self.folder / "dispatch.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            running = self._settle()
            while running < max(max_jobs, 1):
                ticket = self._claim_next()
                if ticket is None:
                    break
                if self._start(*ticket):
                    started.append(ticket[0])
                    running += 1
        return started

    def _settle(self) -> int:
        """Bring each started ticket up to date with its lock; how many are running."""
        running = 0
        with self._db() as db:
            rows = db.execute(
                "SELECT id, state, attempts, run_dir FROM tickets WHERE state IN ('starting', 'running')"
            ).fetchall()
            for ticket, state, attempts, run_dir in rows:
                if self._lock_is_held(ticket):
                    running += 1
                elif state == "running":  # it started and has ended, however it ended
                    _finish(db, ticket)
                elif attempts >= START_ATTEMPTS:  # claimed, never got going, several times over
                    _finish(db, ticket)
                    _give_up(run_dir, attempts)
                else:  # claimed by a dispatcher that died before the run started: back to its place in line
                    db.execute("UPDATE tickets SET state = 'queued' WHERE id = ?", (ticket,))
        return running

    def _claim_next(self) -> tuple[int, str] | None:
        """Mark the oldest waiting ticket as starting (and count the attempt); None when none waits."""
        with self._db() as db:
            while True:
                row = db.execute(
                    "SELECT id, run_dir FROM tickets WHERE state = 'queued' ORDER BY id LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                if _was_cancelled(row[1]):
                    _finish(db, row[0])
                    continue
                db.execute("UPDATE tickets SET state = 'starting', attempts = attempts + 1 WHERE id = ?", (row[0],))
                return int(row[0]), str(row[1])

    def _start(self, ticket: int, run_dir: str) -> bool:
        """Start the ticket's run holding its lock (handed to the run process); False when it cannot start."""
        from pipeline.runs import RunDir, process_started

        run = RunDir(run_dir)
        with open(self._ticket_lock(ticket), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # free (_settle saw so), or probed for a moment by a page
            env = {
                **os.environ,
                QUEUE_ENV: str(self.folder),
                TICKET_ENV: str(ticket),
                settings.LOCK_FD.name: str(lock.fileno()),
            }
            try:
                with open(run.log, "ab") as log:
                    process = subprocess.Popen(
                        [*self.command, str(ticket)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        env=env,
                        pass_fds=(lock.fileno(),),
                        cwd=Path(__file__).resolve().parents[1],
                    )
            except OSError as error:
                with self._db() as db:
                    _finish(db, ticket)
                run.write_status("failed", message=f"the run could not be started ({error})")
                return False
        # Reap it when it ends (else it stays a zombie of this long-lived process); a daemon thread only waits.
        threading.Thread(target=process.wait, name=f"reap-run-{process.pid}", daemon=True).start()
        run.write_status(
            "queued",
            0.0,
            "starting",
            pid=process.pid,
            pid_started=process_started(process.pid),
            ticket=ticket,
            waiting=False,
        )
        return True

    # ---- What a run does with its ticket ----------------------------------------------------------------------------

    def mark_running(self, ticket: int) -> str:
        """Called by the run process as it gets going: its ticket is running; returns the run folder."""
        with self._db() as db:
            row = db.execute("SELECT run_dir FROM tickets WHERE id = ?", (ticket,)).fetchone()
            if row is None:
                raise RetrainError(f"ticket {ticket} is not in the queue at {self.folder}")
            db.execute(
                "UPDATE tickets SET state = 'running', pid = ?, started = ? WHERE id = ?",
                (os.getpid(), time.time(), ticket),
            )
            return str(row[0])

    def mark_finished(self, ticket: int) -> None:
        with self._db() as db:
            _finish(db, ticket)

    # ---- What the pages show ----------------------------------------------------------------------------------------

    def place(self, run_dir: str | Path, max_jobs: int) -> Place | None:
        """Where a waiting run stands in line and about how long until it starts; None when it is not waiting."""
        with self._db() as db:
            waiting = [row[0] for row in db.execute("SELECT run_dir FROM tickets WHERE state = 'queued' ORDER BY id")]
            started = db.execute("SELECT id, started FROM tickets WHERE state IN ('starting', 'running')").fetchall()
            recent = db.execute(
                "SELECT finished - started FROM tickets WHERE state = 'finished' AND started "
                "IS NOT NULL AND finished IS NOT NULL ORDER BY finished DESC LIMIT ?",
                (RECENT_RUNS,),
            ).fetchall()
        if str(run_dir) not in waiting:
            return None
        running = [(when,) for ticket, when in started if self._lock_is_held(ticket)]
        position = waiting.index(str(run_dir)) + 1
        durations = [row[0] for row in recent if row[0] and row[0] > 0]
        estimate = None
        if durations:
            typical = sum(durations) / len(durations)
            estimate = _wait_estimate(
                position, [time.time() - (row[0] or time.time()) for row in running], max(max_jobs, 1), typical
            )
        return Place(position, len(waiting), len(running), estimate)

    def holders(self) -> list[dict]:
        """The runs holding slots now: [{ticket, run_dir, owner, pid, started}] (for 'what holds the slot')."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id, run_dir, owner, pid, started FROM tickets "
                "WHERE state IN ('starting', 'running') ORDER BY id"
            ).fetchall()
        return [
            {"ticket": r[0], "run_dir": r[1], "owner": r[2], "pid": r[3], "started": r[4]}
            for r in rows
            if self._lock_is_held(r[0])
        ]

    def is_pending(self, run_dir: str | Path) -> bool:
        """True while the run's ticket waits in line or is being started."""
        with self._db() as db:
            return (
                db.execute(
                    "SELECT 1 FROM tickets WHERE run_dir = ? AND state IN ('queued', 'starting')", (str(run_dir),)
                ).fetchone()
                is not None
            )


def _wait_estimate(position: int, running_for: list[float], slots: int, typical: float) -> float:
    """Seconds until the `position`-th waiting run starts, if every run takes `typical` seconds.

    Slots free up as the running runs reach the typical length; each waiting run, in order, takes the
    slot that frees first.
    """
    free_at = [max(typical - elapsed, 0.0) for elapsed in running_for] + [0.0] * max(slots - len(running_for), 0)
    free_at.sort()
    start = 0.0
    for _ in range(position):
        start = free_at.pop(0)
        free_at = sorted([*free_at, start + typical])
    return start


def _set_aside(path: Path, error: Exception) -> RetrainError:
    """Move a damaged queue file out of the way (a new one starts at the next use); the error to raise."""
    aside = path.with_name(f"queue.sqlite.damaged-{int(time.time())}")
    with contextlib.suppress(OSError):
        os.replace(path, aside)
    return RetrainError(
        f"{path}: the training queue file was damaged ({error}); it was set aside as "
        f"{aside.name} and a new queue starts — submit the run again"
    )


def _finish(db: sqlite3.Connection, ticket: int) -> None:
    db.execute(
        "UPDATE tickets SET state = 'finished', finished = COALESCE(finished, ?) WHERE id = ?", (time.time(), ticket)
    )


def _was_cancelled(run_dir: str) -> bool:
    from pipeline.runs import FINISHED, RunDir

    run = RunDir(run_dir)
    return run.cancel_request.exists() or not run.config.exists() or run.status().get("state") in FINISHED


def _give_up(run_dir: str, attempts: int) -> None:
    from pipeline.runs import RunDir

    run = RunDir(run_dir)
    if run.config.exists():
        run.write_status("failed", message=f"the run's process did not get going in {attempts} starts; see run.log")


def run_ticket(queue: RunQueue, ticket: int, work: Callable[[str], int] | None = None) -> int:
    """The run process of one ticket: mark it running, run it, mark it finished, start the next ones.

    `work` runs the run folder (default: `python -m pipeline run --run_dir` in this process).
    """
    from pipeline.__main__ import main
    from pipeline.runs import max_jobs

    run_dir = queue.mark_running(ticket)
    try:
        return (work or (lambda folder: main(["run", "--run_dir", folder])))(run_dir)
    finally:
        queue.mark_finished(ticket)
        with contextlib.suppress(OSError, ValueError):  # let go of the slot before looking for the next run
            os.close(int(settings.LOCK_FD.raw() or ""))
        with contextlib.suppress(Exception):  # the run's own outcome is already in its files
            queue.dispatch(max_jobs())


if __name__ == "__main__":  # python -m pipeline.run_queue TICKET (with RETRAIN_STUDIO_QUEUE_DIR set)
    sys.exit(run_ticket(RunQueue(os.environ[QUEUE_ENV]), int(sys.argv[1])))
