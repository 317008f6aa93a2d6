"""TensorFlow's native log lines (absl's "All log messages before absl::InitializeLog()", oneDNN notices,
converter chatter) kept off a CLI user's terminal.

They are written by C++ straight to file descriptor 2, past Python's logging and past
TF_CPP_MIN_LOG_LEVEL, so the only way to hide them is to point descriptor 2 elsewhere for the few
calls that print them. The CLI turns this on unless --verbose; the app's runs log everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from pipeline import settings


def silence_native_logs() -> None:
    """From now on (and in child processes), `native_logs_silenced` blocks hide native log lines."""
    settings.QUIET.set("1")


@contextlib.contextmanager
def native_logs_silenced() -> Iterator[None]:
    """Send descriptor 2 to /dev/null inside the block when quiet mode is on; Python's own errors still raise."""
    if settings.QUIET.raw() != "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
