"""Crash-safe file writes: write to a temporary name in the same folder, then rename.

A reader (the app polling status.json, a rerun after kill -9) sees either the old file or
the new one, never half of one, because rename within a folder is atomic on POSIX. The file gets
the mode an ordinary `open()` would give it (0666 less the umask), not mkstemp's private 0600:
a web server or container user must be able to read a model it is handed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import RetrainError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX; Windows files have no such mode bits
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # no /proc (macOS, Windows): set and restore, a brief window other threads could see
    os.umask(old)
    return old


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def write_json_in_place(path: str | Path, data: Any) -> None:
    """Overwrite `path` with `data` as JSON without a temporary copy: the fallback when the disk is full.

    Not atomic — a reader may catch it half-written and reads it as damaged — but rewriting a small
    file's own blocks needs no free space, where the atomic write's temporary copy does.
    """
    encoded = (json.dumps(data, indent=2, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, encoded)
        os.ftruncate(fd, len(encoded))
    finally:
        os.close(fd)


def is_disk_full(error: BaseException) -> bool:
    """True for the errors a full disk (or an exhausted quota) raises, from the OS or from SQLite."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(error) or "No space left" in str(error)


def looks_like_disk_full(error: BaseException, where: str | Path) -> bool:
    """True when `error` says the disk is full, or came while the disk holding `where` has under 1 MB free
    (SQLite and TensorFlow report a full disk as a generic I/O error)."""
    return is_disk_full(error) or free_mb(where) < 1.0


def free_mb(path: str | Path) -> float:
    """Free space, in MB, on the disk holding `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free / (1 << 20)
    except OSError:
        return 0.0


def disk_full_message(where: str | Path, needed_mb: float | None = None) -> str:
    """One line for a full disk that stopped the work: which folder, how much is free, how much more is needed."""
    need = f"free about {max(needed_mb, 0.1):,.1f} MB" if needed_mb else "free some space"
    return f"{disk_full_words(where)}: {need}, then run again — everything written so far is kept"


def disk_full_words(where: str | Path) -> str:
    """How every message here says a disk is full: "the disk holding FOLDER is full (0.4 MB free)"."""
    return f"the disk holding {display_name(where)} is full ({free_mb(where):,.1f} MB free)"


def display_name(path: str | Path) -> str:
    """A file name safe to print, store as JSON text or show in the app: bytes that are not UTF-8 (which
    Python keeps as lone surrogates) are written as \\xNN, so two different names stay different."""
    text = os.fspath(path)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


# Unicode categories of the characters that end or break a printed line: C0/C1 controls (newline, tab, escape,
# carriage return, ...) and the line and paragraph separators U+2028 and U+2029.
LINE_BREAKING_CATEGORIES = ("Cc", "Zl", "Zp")


# The bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): each reorders the rest of the
# printed line, the program's own words after a name included ("‮evil.keras. Check the path" shows reversed).
LINE_REORDERING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_control_character(char: str) -> bool:
    return unicodedata.category(char) in LINE_BREAKING_CATEGORIES or char in LINE_REORDERING


def has_control_character(text: str) -> bool:
    """True when `text` holds a character that would break or rewrite a printed line (newline, tab, escape, a
    right-to-left override, ...)."""
    return any(is_control_character(char) for char in text)


def printable(text: str) -> str:
    """`text` for one line of a log or progress display: each control character written as its escape ("\\n",
    "\\x1b"), every other character as is."""
    if not has_control_character(text):
        return text
    return "".join(repr(char)[1:-1] if is_control_character(char) else char for char in text)


def describe_write_error(error: BaseException, where: str | Path) -> str:
    """One line for an error met while writing under `where`: a full disk says so with free space, other
    OS errors name the file and the reason."""
    if is_disk_full(error):
        return disk_full_message(where)
    if isinstance(error, OSError):
        target = display_name(error.filename) if error.filename else display_name(where)
        return f"cannot write {target} ({error.strerror or error}); check the folder's permissions and free space"
    return f"cannot write under {display_name(where)} ({error})"


def from_display_name(text: str) -> str:
    """The file name `display_name` showed as `text`: each \\xNN (80-ff) back to the byte it stood for."""
    return re.sub(r"\\x([89a-fA-F][0-9a-fA-F])", lambda match: chr(0xDC00 + int(match.group(1), 16)), text)


# ---- Files the user names for an output -------------------------------------------------------------------------


def refuse_to_replace(path: str | Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Stop before writing an output the user named where a file that is not one of ours already stands.

    retrain.py overwrote whatever `--output_labels` named; a typo must not turn a photo or a model into a
    labels file. Absent files are fine; an existing one only when `is_ours` recognises it (a rerun).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_file() and not path.is_symlink():
        with contextlib.suppress(OSError, ValueError):
            if is_ours(path):
                return
    raise RetrainError(
        f"{display_name(path)} already exists and is not {what} written by Retrain Studio; "
        "nothing was written to it: choose another file name, or move that file away first"
    )


def looks_like_labels_file(path: Path) -> bool:
    """A labels.txt as `write_labels` writes it: short UTF-8 text, one name a line, ending in a newline."""
    data = path.read_bytes()
    return (
        len(data) < (1 << 20)
        and data.endswith(b"\n")
        and b"\0" not in data
        and all(line.strip() for line in data.decode("utf-8").splitlines())
    )


# ---- Small rules every reader of folders and sizes shares ---------------------------------------------------------

# What macOS's zip tool adds beside the files (resource forks): never part of a dataset.
MACOS_ZIP_FOLDER = "__MACOSX"


def is_hidden(name: str) -> bool:
    """True for names never read as data: hidden files and folders (".DS_Store", ".git") and macOS's __MACOSX."""
    return name.startswith(".") or name == MACOS_ZIP_FOLDER


def has_hidden_part(relative: str | Path) -> bool:
    """True when any part of a relative path is hidden (`is_hidden`): the file is not data."""
    return any(is_hidden(part) for part in Path(relative).parts)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes as hex, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def megabytes(n_bytes: float, digits: int = 0) -> str:
    """A size in MB as people read it: "1,234 MB" (MB = 2**20 bytes)."""
    return f"{n_bytes / (1 << 20):,.{digits}f} MB"
