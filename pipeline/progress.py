"""One progress report shape for every long step, shown by the CLI (stderr) and the app alike."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    stage: str                   # "checking", "caching", "augmenting", "training", ...
    done: int
    total: int
    per_second: float            # items per second so far
    eta_seconds: float | None    # None until there is a rate to go on
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


class ProgressMeter:
    """Turns `advance(n)` calls into Progress reports with a rate and an ETA."""

    def __init__(self, stage: str, total: int, callback: ProgressCallback | None, min_interval: float = 0.5):
        self.stage, self.total, self.callback = stage, total, callback
        self.done = 0
        self.started = time.monotonic()
        self.min_interval = min_interval
        self._last_report = 0.0

    def advance(self, n: int = 1, message: str = "") -> None:
        self.done += n
        now = time.monotonic()
        # Reports are throttled: a status file rewritten per image would cost more than the work.
        if now - self._last_report >= self.min_interval or self.done >= self.total:
            self._last_report = now
            self.report(message)

    def report(self, message: str = "") -> None:
        if self.callback is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        self.callback(Progress(self.stage, self.done, self.total, rate, eta, message))


def print_progress(progress: Progress) -> None:
    """The CLI's progress line on stderr: stage, count, rate and ETA."""
    eta = f", ETA {progress.eta_seconds:.0f}s" if progress.eta_seconds is not None else ""
    end = "\n" if progress.done >= progress.total else "\r"
    print(f"{progress.stage}: {progress.done}/{progress.total} ({progress.per_second:.1f}/s{eta}) {progress.message}",
          end=end, file=sys.stderr, flush=True)
