"""TensorFlow's native log lines (absl's "All log messages before absl::InitializeLog()", oneDNN notices,
converter chatter) kept off a CLI user's terminal.

They are written by C++ straight to file descriptor 2, past Python's logging and past
TF_CPP_MIN_LOG_LEVEL, so the only way to hide them is to point descriptor 2 elsewhere for the few
calls that print them. The CLI turns this on unless --verbose; the app's runs log everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
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


def quiet_tensorflow_import() -> None:
    """Whenever TensorFlow is first imported from now on, import it inside `native_logs_silenced`.

    The CLI used to import TensorFlow up front to hide the notice its import prints; a warm rerun's report needs
    no TensorFlow at all, so the import now happens where it is first needed, still without the notice.
    """
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders, then runs its module code with descriptor 2 silenced."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: later imports of TensorFlow's submodules are left alone
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilencedLoader(spec.loader)
        return spec


class _SilencedLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_logs_silenced():
            self.loader.exec_module(module)
