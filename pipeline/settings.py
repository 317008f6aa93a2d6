"""Every environment variable the program reads, declared once: its name, default and meaning, read when used.

Settings are environment variables only (a hosted service sets nothing else), and each is read at call time, so a
test or an operator that changes one sees it take effect without re-importing anything. The app's docstring and the
README's settings table are made from this list (`python -m pipeline.settings readme|docstring`), and a test fails
when they disagree with it.

The one home for paths the program picks by itself lives here too: the cache root and the caches under it.
"""

from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RetrainError

PREFIX = "RETRAIN_STUDIO_"


@dataclass(frozen=True)
class Setting:
    """One environment variable: `kind` "whole" (a whole number), "path" or "text"."""

    name: str
    kind: str
    default: int | str | None
    help: str
    shown_default: str | None = None  # how the docs state the default when it is not a plain value
    internal: bool = False  # set by the program for its own child processes, not by an operator

    def raw(self) -> str | None:
        """The variable as set (stripped), or None when unset or empty."""
        value = os.environ.get(self.name, "").strip()
        return value or None

    def whole(self, default: int | None = None) -> int:
        """A whole-number setting, or its default (`default` overrides the declared one) when unset."""
        value = self.raw()
        if value is None:
            fallback = self.default if default is None else default
            if fallback is None:
                raise RetrainError(f"{self.name} is not set")
            return int(fallback)
        if not value.isdigit():
            raise RetrainError(f"{self.name}={value!r} is not a whole number; set it to one or unset it")
        return int(value)

    def path(self) -> Path | None:
        """A path setting (with ~ expanded), or its default; None when unset without a default."""
        value = self.raw() or self.default
        return Path(str(value)).expanduser() if value is not None else None

    def text(self) -> str | None:
        return self.raw() or (None if self.default is None else str(self.default))

    def set_default(self, value: int | str) -> None:
        """Set the variable for this process and its children, unless the operator set it."""
        os.environ.setdefault(self.name, str(value))

    def set(self, value: int | str) -> None:
        """Set the variable for this process and its children (for the program's own child processes)."""
        os.environ[self.name] = str(value)

    @property
    def documented_default(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        return "unset" if self.default is None else f"`{self.default}`"


# ---- What an operator sets ----------------------------------------------------------------------------------------

DATA_ROOT = Setting(
    f"{PREFIX}DATA_ROOT",
    "path",
    "data",
    "folder the app reads and writes: uploads, workspaces and "
    "runs (each browser session's in workspaces/ under it, by a random id); server folders can only "
    "be chosen inside it",
    shown_default="`./data`",
)
SAMPLES = Setting(
    f"{PREFIX}SAMPLES",
    "path",
    None,
    "a folder whose sub-folders are offered as one-click sample datasets (e.g. ../shared/datasets)",
)
MAX_JOBS = Setting(
    f"{PREFIX}MAX_JOBS", "whole", 1, "training runs at once across all sessions; the rest wait in a visible queue"
)
MAX_QUEUED = Setting(
    f"{PREFIX}MAX_QUEUED", "whole", 20, "runs waiting at once across all sessions; more are refused until some start"
)
MAX_QUEUED_PER_WORKSPACE = Setting(
    f"{PREFIX}MAX_QUEUED_PER_WORKSPACE", "whole", 2, "runs one browser session may have queued or training"
)
WORKSPACE_QUOTA_MB = Setting(
    f"{PREFIX}WORKSPACE_QUOTA_MB",
    "whole",
    2048,
    "what one session may hold: uploads, what they unpack to, its runs and its bottleneck cache",
)
DISK_BUDGET_MB = Setting(
    f"{PREFIX}DISK_BUDGET_MB",
    "whole",
    20480,
    "what all sessions together may hold: every workspace, the queue and the shared bottleneck cache",
)
WORKSPACE_TTL_DAYS = Setting(
    f"{PREFIX}WORKSPACE_TTL_DAYS",
    "whole",
    7,
    "a workspace unused this long is removed (never while a run of it is queued or working); `0` keeps them",
)
MAX_UNZIPPED_MB = Setting(f"{PREFIX}MAX_UNZIPPED_MB", "whole", 2048, "zip-bomb cap: the most one zip may unpack to")
MAX_ZIP_FILES = Setting(
    f"{PREFIX}MAX_ZIP_FILES", "whole", 50_000, "zip-bomb cap: the most files and folders in one zip"
)
MAX_PIXELS = Setting(
    f"{PREFIX}MAX_PIXELS",
    "whole",
    100_000_000,
    "largest image decoded; larger ones are refused as possible decompression bombs",
    shown_default="`50000000` in the app, `100000000` on the CLI",
)
DECODE_BUDGET_PIXELS = Setting(
    f"{PREFIX}DECODE_BUDGET_PIXELS",
    "whole",
    None,
    "pixels being decoded at once in one process, shared by all its decoding threads",
    shown_default=f"`{PREFIX}MAX_PIXELS`",
)
CACHE = Setting(
    f"{PREFIX}CACHE", "path", "~/.cache/retrain-studio", "shared caches: built backbones, bottlenecks, unpacked zips"
)
RUNTIME = Setting(
    f"{PREFIX}RUNTIME", "text", None, "`tensorflow` runs the built-in backbones on TensorFlow instead of LiteRT"
)

# ---- What the program sets for its own child processes ----------------------------------------------------------

QUIET = Setting(f"{PREFIX}QUIET", "text", None, "`1`: native log lines are kept off the terminal", internal=True)
QUEUE_DIR = Setting(f"{PREFIX}QUEUE_DIR", "path", None, "the app's queue that started this run", internal=True)
QUEUE_TICKET = Setting(
    f"{PREFIX}QUEUE_TICKET", "text", None, "this run's ticket in that queue (it holds the training slot)", internal=True
)
LOCK_FD = Setting(
    f"{PREFIX}LOCK_FD", "text", None, "the descriptor of the ticket's lock, handed to the run", internal=True
)

# Not ours, but an operator sets it with ours, so it is listed with them.
MAX_UPLOAD_SIZE = Setting(
    "STREAMLIT_SERVER_MAX_UPLOAD_SIZE",
    "whole",
    500,
    "largest upload, in MB (Streamlit's own setting)",
    shown_default="`500` (MB, `.streamlit/config.toml`)",
)

SETTINGS = [
    DATA_ROOT,
    SAMPLES,
    MAX_JOBS,
    MAX_QUEUED,
    MAX_QUEUED_PER_WORKSPACE,
    WORKSPACE_QUOTA_MB,
    DISK_BUDGET_MB,
    WORKSPACE_TTL_DAYS,
    MAX_UPLOAD_SIZE,
    MAX_UNZIPPED_MB,
    MAX_ZIP_FILES,
    MAX_PIXELS,
    DECODE_BUDGET_PIXELS,
    CACHE,
    RUNTIME,
    QUIET,
    QUEUE_DIR,
    QUEUE_TICKET,
    LOCK_FD,
]


# ---- Paths the program picks --------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where shared caches live (built backbones, bottlenecks, unpacked zips): RETRAIN_STUDIO_CACHE."""
    return CACHE.path()


def default_bottleneck_dir() -> Path:
    """Where bottlenecks are cached when no --bottleneck_dir is given (and for server folders in the app)."""
    return cache_root() / "bottlenecks"


# ---- The lists in the docs ----------------------------------------------------------------------------------------


def readme_table() -> str:
    """The README's settings table (operator settings only)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.documented_default} | {s.help} |" for s in SETTINGS if not s.internal]
    return "\n".join(rows)


def docstring_block() -> str:
    """app.py's docstring list of settings (operator settings only): the name and default, then the meaning."""
    lines = []
    for s in SETTINGS:
        if not s.internal:
            lines.append(f"    {s.name} (default: {s.documented_default.replace('`', '')})")
            lines.append(textwrap.fill(s.help, width=116, initial_indent=" " * 8, subsequent_indent=" " * 8))
    return "\n".join(lines)


if __name__ == "__main__":  # python -m pipeline.settings readme|docstring
    print(readme_table() if sys.argv[1:] == ["readme"] else docstring_block())
