"""One progress report shape for every long step, shown by the CLI (stderr) and the app alike."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.files import printable


@dataclass(frozen=True)
class Progress:
    stage: str  # "checking", "caching", "augmenting", "training", ...
    done: int
    total: int
    per_second: float  # items per second so far
    eta_seconds: float | None  # None until there is a rate to go on
    message: str = ""
    indeterminate: bool = False  # work that cannot be counted (loading a backbone, writing an export)

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
    """The CLI's progress line on stderr: stage, count, rate and ETA (one line per report; for logs).

    A name inside a message (a file, a backbone) keeps any control character escaped: one report, one line.
    """
    if progress.indeterminate or progress.total == 0:  # nothing to count: say what it is doing, or that it is skipped
        print(printable(f"{progress.stage}: {progress.message or 'working'}"), file=sys.stderr, flush=True)
        return
    eta = f", ETA {progress.eta_seconds:.0f}s" if progress.eta_seconds is not None else ""
    end = "\n" if progress.done >= progress.total else "\r"
    print(
        printable(
            f"{progress.stage}: {progress.done}/{progress.total} ({progress.per_second:.1f}/s{eta}) {progress.message}"
        ),
        end=end,
        file=sys.stderr,
        flush=True,
    )


class ProgressBars:
    """A tqdm bar per stage on stderr, with its rate and ETA; a new stage closes the last one.

    Used as a ProgressCallback by the CLI on a terminal; plain `print_progress` lines go to files.
    """

    def __init__(self) -> None:
        self.bar = None
        self.stage = ""

    def __call__(self, progress: Progress) -> None:
        from tqdm import tqdm

        if (
            self.bar is not None
            and self.bar.total is None
            and progress.stage == self.stage
            and not progress.indeterminate
        ):  # the uncounted stage ended: its line keeps the time it took
            self.bar.set_postfix_str(printable(progress.message), refresh=False)
            self.close()
            return
        if progress.indeterminate:  # no bar, only the time taken (shown when the stage ends)
            self.close()
            self.stage = progress.stage
            self.bar = tqdm(
                total=None,
                desc=printable(progress.stage),
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                bar_format="{desc}: {elapsed} {postfix}",
                postfix=printable(progress.message),
            )
            return
        if progress.total == 0:  # nothing to do: one line, not an empty bar
            self.close()
            tqdm.write(printable(f"{progress.stage}: {progress.message or 'nothing to do'}"), file=sys.stderr)
            return
        if self.bar is None or progress.stage != self.stage or progress.total != self.bar.total:
            self.close()
            self.stage = progress.stage
            self.bar = tqdm(
                total=progress.total,
                desc=printable(progress.stage),
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                unit="it",
            )
        self.bar.update(max(progress.done - self.bar.n, 0))
        if progress.message:
            self.bar.set_postfix_str(printable(progress.message), refresh=False)
        if progress.done >= progress.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cli_progress() -> ProgressCallback:
    """Bars on a terminal, one line per report when stderr is a file or pipe (logs stay readable)."""
    return ProgressBars() if sys.stderr.isatty() else print_progress
