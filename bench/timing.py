"""Repeating measurements fairly on a noisy machine: interleave the two sides of a ratio, report medians.

On a shared 2-core machine the load changes by the minute. Measuring side A three times and then
side B three times would put a burst of someone else's work all on one side; running A, B, A, B, A, B
lets the burst hit both, so their ratio holds even when the absolute numbers move.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def interleaved(reps: int, measurements: dict[str, Callable[[int], T]]) -> dict[str, list[T]]:
    """Run each measurement once per repetition, in turn; each is called with the repetition number."""
    values: dict[str, list[T]] = {name: [] for name in measurements}
    for rep in range(reps):
        for name, measure in measurements.items():
            value = measure(rep)
            values[name].append(value)
            log(f"  {name} [{rep + 1}/{reps}]: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    return values


def median(values: list[float]) -> float:
    return float(statistics.median(values))


class Stopwatch:
    """`with Stopwatch() as watch: ...` then `watch.seconds` (wall) and `watch.cpu_seconds` (this process)."""

    def __enter__(self) -> Stopwatch:
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.seconds = self.cpu_seconds = 0.0
        return self

    def elapsed(self) -> float:
        """Wall seconds so far, inside the `with`."""
        return time.perf_counter() - self.started

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started


@dataclass(frozen=True)
class Throughput:
    """Images done in a wall time and a CPU time. CPU time per image barely moves with other processes'
    load, so it shows what a busy machine hides: how much work each image costs."""

    images: int
    seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_seconds / self.images

    def __str__(self) -> str:
        return f"{self.per_second:.1f} images/s, {self.cpu_ms_per_image:.1f} CPU ms/image"


STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress goes to stderr (stdout's last line is kept for the JSON of figures), stamped with the time so far."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)
