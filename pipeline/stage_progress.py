"""Where a run is, stage by stage: each stage's own honest line, and an estimate for the whole run.

A single bar over a whole run lies in both directions: it sits at "0/397" while the backbone loads,
shows "caching 0/0" when everything was cached, and says nothing during a 47 s export. Here a run
keeps a board of its stages (reading the dataset, loading the backbone, preparing it, caching, augmenting,
training, fine-tuning, evaluating, one per export format), each pending, running, done or skipped,
with done/total when the work is countable and no total when it is not (then only the time so far is
shown, never a made-up fraction). The board is written into status.json (`stages`, `run_eta_seconds`,
`run_eta_is_lower_bound`), so the app and the CLI read the same lines with `stage_lines`.

The whole-run estimate is the sum of what is measurable: the running stage's ETA plus, for stages
not started, an estimate only where one is honest (none is guessed). When a stage still to come has
no estimate, the total is a lower bound and says "at least".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.files import printable
from pipeline.progress import Progress

PENDING, RUNNING, DONE, SKIPPED, NOT_REACHED = "pending", "running", "done", "skipped", "not reached"

# Stage keys and what a user reads for them.
TITLES = {
    "dataset": "reading the dataset",
    "backbone": "loading the backbone",
    "preparing": "preparing the backbone",  # building or converting its model: the first time on a server, a minute
    "caching": "caching bottlenecks",
    "augmenting": "augmenting",
    "training": "training",
    "fine-tuning": "fine-tuning",
    "evaluating": "evaluating",
}
EXPORT_PREFIX = "export "
# Durations past this (a year) are not a run's: a status.json damaged or written by a broken clock. Not shown.
MAX_SHOWN_SECONDS = 365 * 24 * 3600


@dataclass
class Stage:
    key: str
    state: str = PENDING
    done: int = 0
    total: int | None = None  # None: not countable (a spinner, not a bar)
    unit: str = ""  # "images", "steps", "epochs"
    per_second: float | None = None
    eta_seconds: float | None = None
    message: str = ""
    started: float | None = None  # wall clock (time.time), so another process can show "so far"
    finished: float | None = None


class StageBoard:
    """The stages of one run, updated as it goes; `to_status()` is what status.json carries."""

    def __init__(self, keys: list[str], clock: Callable[[], float] = time.time):
        self.stages = {key: Stage(key) for key in keys}
        self.clock = clock

    def begin(self, key: str, total: int | None = None, unit: str = "", message: str = "") -> None:
        stage = self._stage(key)
        stage.state, stage.total, stage.unit, stage.message = RUNNING, total, unit, message
        stage.done, stage.per_second, stage.eta_seconds = 0, None, None
        stage.started, stage.finished = self.clock(), None

    def advance(
        self,
        key: str,
        done: int,
        total: int | None,
        per_second: float | None = None,
        eta_seconds: float | None = None,
        message: str = "",
        unit: str = "",
    ) -> None:
        stage = self._stage(key)
        if stage.state != RUNNING:
            self.begin(key, total, unit or stage.unit)
        stage.done, stage.total, stage.message = done, total, message or stage.message
        stage.unit = unit or stage.unit
        stage.per_second = None if per_second is None else round(per_second, 2)
        stage.eta_seconds = None if eta_seconds is None else round(eta_seconds, 1)

    def end(self, key: str, message: str = "") -> None:
        stage = self._stage(key)
        if stage.started is None:
            stage.started = self.clock()
        stage.state, stage.finished, stage.eta_seconds = DONE, self.clock(), 0.0
        if stage.total is not None:
            stage.done = stage.total
        stage.message = message or stage.message

    def skip(self, key: str, why: str) -> None:
        """A stage with nothing to do says so (never "0/0")."""
        stage = self._stage(key)
        stage.state, stage.message, stage.eta_seconds = SKIPPED, why, 0.0
        stage.finished = self.clock()

    def settle(self, ending: str) -> None:
        """A run that ended early ("failed", "cancelled"): the running stage ends so, the rest were not reached."""
        for stage in self.stages.values():
            if stage.state == RUNNING:
                stage.state, stage.finished, stage.eta_seconds = ending, self.clock(), None
            elif stage.state == PENDING:
                stage.state = NOT_REACHED

    def from_progress(self, key: str, progress: Progress, unit: str = "images") -> None:
        """Take a ProgressMeter report; a report of zero items to do ends the stage as having nothing to do."""
        if progress.total == 0:
            self.skip(key, progress.message or "nothing to do")
            return
        self.advance(
            key, progress.done, progress.total, progress.per_second, progress.eta_seconds, progress.message, unit
        )

    def run_eta(self) -> tuple[float | None, bool]:
        """(seconds left for the whole run, whether that is only a lower bound); (None, True) when nothing is known."""
        known, lower_bound = 0.0, False
        if all(stage.state not in (RUNNING, PENDING) for stage in self.stages.values()):
            return (0.0, False) if all(s.state in (DONE, SKIPPED) for s in self.stages.values()) else (None, False)
        for stage in self.stages.values():
            if stage.state not in (RUNNING, PENDING):
                continue
            if stage.state == RUNNING and stage.eta_seconds is not None:
                known += stage.eta_seconds
            else:
                lower_bound = True
        if known == 0.0 and lower_bound:
            return None, True
        return round(known, 1), lower_bound

    def to_status(self) -> dict[str, Any]:
        eta, lower_bound = self.run_eta()
        return {
            "stages": [asdict(stage) for stage in self.stages.values()],
            "run_eta_seconds": eta,
            "run_eta_is_lower_bound": lower_bound,
        }

    def _stage(self, key: str) -> Stage:
        if key not in self.stages:  # a stage not planned (e.g. a format added late) still gets its line
            self.stages[key] = Stage(key)
        return self.stages[key]


def run_stage_keys(export_formats: list[str], augmenting: bool, fine_tuning: bool) -> list[str]:
    """The stages a run with these settings goes through, in order."""
    keys = ["dataset", "backbone", "preparing", "caching"] + (["augmenting"] if augmenting else []) + ["training"]
    keys += (["fine-tuning"] if fine_tuning else []) + ["evaluating"]
    return keys + [EXPORT_PREFIX + name for name in export_formats]


def stage_title(key: str) -> str:
    return TITLES.get(key, key)


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def stage_line(stage: dict[str, Any], now: float | None = None) -> str:
    """One stage as a line: "caching bottlenecks: 120/397 images (12.3/s, about 23 s left)",
    "loading the backbone: working, 31 s so far", "caching bottlenecks: nothing to do (all 397 cached)".

    Control characters a message may carry (a name from a user, a status.json edited by hand) are escaped.
    """
    return printable(_stage_line(stage, time.time() if now is None else now))


def _stage_line(stage: dict[str, Any], now: float) -> str:
    title, state, message = stage_title(str(stage.get("key", "?"))), stage.get("state"), stage.get("message") or ""
    started, finished = _number(stage.get("started")), _number(stage.get("finished"))
    if state == SKIPPED:
        return f"{title}: skipped — {message}" if message else f"{title}: skipped"
    if state == DONE:
        took = _duration(finished - started) if started is not None and finished is not None else None
        took = "" if took is None else f" in {format_seconds(took)}"
        return f"{title}: done{took}" + (f" — {message}" if message else "")
    if state == PENDING:
        return f"{title}: waiting"
    if state != RUNNING:  # failed, cancelled, not reached (or a state written by a later version)
        return f"{title}: {state}"
    total, done = _number(stage.get("total")), _number(stage.get("done")) or 0
    if total is None:  # not countable: time so far only
        elapsed = _duration(now - started) if started is not None else None
        so_far = "" if elapsed is None else f", {format_seconds(elapsed)} so far"
        return f"{title}: working{so_far}" + (f" — {message}" if message else "")
    unit = f" {stage['unit']}" if isinstance(stage.get("unit"), str) and stage["unit"] else ""
    details = []
    if (rate := _number(stage.get("per_second"))) is not None and rate > 0:
        details.append(f"{rate:.1f}/s")
    if (eta := _duration(stage.get("eta_seconds"))) is not None:
        details.append(f"about {format_seconds(eta)} left")
    line = f"{title}: {int(done)}/{int(total)}{unit}" + (f" ({', '.join(details)})" if details else "")
    return line + (f" — {message}" if message else "")


def stage_lines(status: dict[str, Any], now: float | None = None) -> list[str]:
    """Every stage of a run's status as lines, in order; [] for a status without stages (older runs).

    A malformed entry (a status.json edited by hand) is left out, never an error.
    """
    stages = status.get("stages")
    if not isinstance(stages, list):
        return []
    return [stage_line(stage, now) for stage in stages if isinstance(stage, dict) and isinstance(stage.get("key"), str)]


def settled_board(status: dict[str, Any], ending: str) -> dict[str, Any]:
    """The stage board of a run whose process died without settling it (kill -9, out of memory), settled as it
    would have: the stage that was running ends as `ending`, the pending ones were not reached. {} when the
    status has no board (older runs); malformed entries are dropped, as `stage_lines` drops them."""
    stages = status.get("stages")
    if not isinstance(stages, list):
        return {}
    settled = []
    for stage in stages:
        if not isinstance(stage, dict) or not isinstance(stage.get("key"), str):
            continue
        if stage.get("state") == RUNNING:
            stage = {**stage, "state": ending, "eta_seconds": None}
        elif stage.get("state") == PENDING:
            stage = {**stage, "state": NOT_REACHED}
        settled.append(stage)
    return {"stages": settled, "run_eta_seconds": None, "run_eta_is_lower_bound": False}


def running_stage_title(status: dict[str, Any]) -> str | None:
    """The title of the stage a run's status says is running ("preparing the backbone"), None when none is."""
    stages = status.get("stages")
    for stage in stages if isinstance(stages, list) else []:
        if isinstance(stage, dict) and isinstance(stage.get("key"), str) and stage.get("state") == RUNNING:
            return printable(stage_title(stage["key"]))
    return None


def run_estimate_line(status: dict[str, Any]) -> str:
    """ "about 2 min 10 s left", "at least 40 s left" or "" when there is nothing honest to say."""
    eta = _duration(status.get("run_eta_seconds"))
    if eta is None:
        return ""
    lower_bound = bool(status.get("run_eta_is_lower_bound"))
    if lower_bound and round(eta) == 0:  # "at least 0 s left" says nothing (a stage's last seconds, others to come)
        return ""
    return f"whole run: {'at least' if lower_bound else 'about'} {format_seconds(eta)} left"


def _number(value: Any) -> float | None:
    """A finite number from status.json (which Python's json lets hold NaN and Infinity), else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _duration(value: Any) -> float | None:
    """A number of seconds worth showing: finite, not negative, under MAX_SHOWN_SECONDS; else None."""
    seconds = _number(value)
    return seconds if seconds is not None and 0 <= seconds <= MAX_SHOWN_SECONDS else None
