"""Checked files kept on disk, so a dataset reopened is not read again while its files are unchanged.

Checking a dataset opens every image (sha256, decode, perceptual hash): tens of seconds on a few
thousand photos, on every reopen. Here each file's verdict is stored next to what identifies its
content cheaply — size, mtime_ns, ctime_ns and inode, the stat git trusts for its index — and a
file whose stat is unchanged is not opened again; a changed or new file is checked again alone
(incremental), and files gone from the folder are forgotten.

The trade-off: a stat can be fooled by a tool that rewrites a file of the same size and then resets
its mtime (ctime still changes, so only a clock set backwards fools it); that is the same bet git
and make take. A file modified within RACY_NS of the moment its verdict was stored could change
again in the same clock tick unnoticed, so such verdicts are not trusted ("racy git" rule).

The store is one JSON file per dataset folder under `$RETRAIN_STUDIO_CACHE/dataset-checks/`. It is read
back like any file we wrote: truncated, not UTF-8, not JSON, another format or another folder's →
ignored with a log line, and rebuilt by the next check; it is written atomically. At most
MAX_STORES files are kept (the least recently written go first), a cap for the whole server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import write_bytes_atomic
from pipeline.settings import cache_root

FORMAT = "retrain-studio/file-checks"
VERSION = 2
# Verdicts on files modified this close to when they were stored are not trusted (one coarse clock tick and more).
RACY_NS = 2_000_000_000
# Stores kept on the whole server; each is about 150 bytes per image.
MAX_STORES = 200
# A store larger than this is not ours (150 bytes an image: over a million images): ignored unread.
MAX_STORE_BYTES = 256 << 20
_SHA256 = re.compile(r"(?:[0-9a-f]{64})?")
_PHASH = re.compile(r"(?:[0-9a-f]{16})?")
_log = logging.getLogger(__name__)

Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


@dataclass(frozen=True)
class FileCheck:
    """What checking one file found."""

    is_image: bool  # belongs in the table
    sha256: str  # "" when the file was not read whole
    problem: str  # "" when usable
    decoded: bool  # the verdict includes a full decode (check_images)
    phash: str = ""  # perceptual hash, 16 hex digits; "" when not decoded or not an image


def file_stamp(path: str | Path) -> Stamp | None:
    """(size, mtime_ns, ctime_ns, inode) of the file a path leads to, None when it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def content_signature(stamps: dict[str, Stamp | None]) -> str:
    """One hex digest of the folder's content, cheaply: each file's relative path, size and mtime_ns.

    Inode and ctime are left out so a copy made with `cp -p` or `rsync -t` has the same signature.
    """
    digest = hashlib.sha256()
    for file in sorted(stamps):
        stamp = stamps[file]
        size, mtime = (stamp[0], stamp[1]) if stamp else (-1, -1)
        digest.update(f"{file}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def default_store_folder() -> Path:
    return cache_root() / "dataset-checks"


class CheckStore:
    """The stored verdicts of one dataset folder: `lookup` what is still true, `save` what was found."""

    def __init__(self, root: str | Path, folder: str | Path | None = None):
        self.root = str(root)
        key = hashlib.sha256(self.root.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.path = Path(folder or default_store_folder()) / f"{key}.json"
        self.entries: dict[str, tuple[Stamp, FileCheck, int]] = self._read()

    def lookup(self, file: str, stamp: Stamp | None, need_decoded: bool) -> FileCheck | None:
        """The stored verdict of `file` if its stat is unchanged (and it was decoded, when that is needed)."""
        entry = self.entries.get(file)
        if entry is None or stamp is None:
            return None
        stored_stamp, check, written_ns = entry
        if tuple(stored_stamp) != stamp or (need_decoded and not check.decoded):
            return None
        if stamp[1] >= written_ns - RACY_NS:  # modified in the same clock tick as it was checked: could change unseen
            return None
        return check

    def save(self, checks: dict[str, tuple[Stamp | None, FileCheck]]) -> None:
        """Store the verdicts of the files listed now (others are forgotten); a failed write only logs."""
        now = time.time_ns()
        entries = {}
        for file, (stamp, check) in checks.items():
            if stamp is None:
                continue
            previous = self.entries.get(file)
            # A verdict reused unchanged keeps the time it was first stored: that is what the racy rule compares.
            written = previous[2] if previous and tuple(previous[0]) == stamp and previous[1] == check else now
            entries[file] = [
                list(stamp),
                check.is_image,
                check.sha256,
                check.problem,
                check.decoded,
                check.phash,
                written,
            ]
        data = {"format": FORMAT, "version": VERSION, "root": self.root, "entries": entries}
        try:
            write_bytes_atomic(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as error:
            _log.warning(
                "%s: could not store the checked files (%s); the next reopen checks them again",
                self.path,
                error.strerror or error,
            )
            return
        self.entries = {file: (tuple(e[0]), FileCheck(*e[1:6]), e[6]) for file, e in entries.items()}
        _prune(self.path.parent)

    def _read(self) -> dict[str, tuple[Stamp, FileCheck, int]]:
        try:
            info = os.stat(self.path)
            if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):  # a FIFO would block forever
                return self._ignored("is not a regular file (a pipe or a device)")
            if info.st_size > MAX_STORE_BYTES:
                return self._ignored(f"is {info.st_size:,} bytes, far more than a store ever holds")
            data = json.loads(self.path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as error:
            return self._ignored(f"cannot be read as JSON ({error})")
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            return self._ignored("is not a checked-files store of this version")
        if data.get("root") != self.root:
            return self._ignored(f"belongs to another folder ({data.get('root')!r})")
        try:
            return {file: _entry(value) for file, value in data["entries"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            return self._ignored(f"has a damaged entry ({error})")

    def _ignored(self, why: str) -> dict:
        _log.warning("%s %s; it is ignored and every image of %s is checked again", self.path, why, self.root)
        return {}


def _entry(value: list) -> tuple[Stamp, FileCheck, int]:
    stamp, is_image, sha256, problem, decoded, phash, written = value
    if not (isinstance(stamp, list) and len(stamp) == 4 and all(type(n) is int for n in stamp)):
        raise ValueError(f"stamp {stamp!r}")
    if not (
        isinstance(is_image, bool)
        and isinstance(decoded, bool)
        and type(written) is int
        and all(isinstance(text, str) for text in (sha256, problem, phash))
    ):
        raise ValueError(f"entry {value!r}")
    # Hashes are compared and parsed later (duplicates, near-duplicates): a malformed one is damage, not a value.
    if not _SHA256.fullmatch(sha256) or not _PHASH.fullmatch(phash):
        raise ValueError(f"hashes {sha256!r:.70} {phash!r:.20}")
    return tuple(stamp), FileCheck(is_image, sha256, problem, decoded, phash), written


def _prune(folder: Path) -> None:
    """Keep the MAX_STORES most recently written stores (only files of our own name pattern)."""
    with contextlib.suppress(OSError):
        stores = sorted(folder.glob("[0-9a-f]" * 32 + ".json"), key=lambda path: path.stat().st_mtime_ns)
        for old in stores[:-MAX_STORES]:
            old.unlink(missing_ok=True)
