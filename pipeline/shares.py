"""Read-only share links: one run's Predict page for someone who must not get the workspace.

The workspace address is a full-control key (dataset, runs, cancel, delete). A share token gives
one run, read-only: whoever holds it may predict with that run's model and see its name and
dataset summary, nothing else. The owner creates, lists and revokes tokens.

Where they live:
- the workspace's `shares.json` lists its live tokens (the owner sees and copies them there);
- a global index `<data root>/shares/<sha256 of token>.json` maps a token to its workspace and run, so
  a link opened anywhere is found without scanning every workspace. The index holds only the
  hash: a copy of the index alone opens nothing.

A token is 192 random bits (`secrets.token_urlsafe(24)`). Resolving one checks its shape first (any
bytes may arrive in a URL), finds the index entry by hash, and then compares the token with the
workspace's list in constant time (`hmac.compare_digest`); revoking removes it from both, and a
token whose entry is in only one of them is refused, so a half-finished revoke never leaves a link
working. Every file is read back through `pipeline.records`; damaged → the link is refused with a
message, never a traceback. A damaged shares.json is renamed aside (kept) by the next create, which starts
a new list: the links it held stay refused, since the new list does not hold them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RetrainError
from pipeline.files import write_json_atomic
from pipeline.records import DamagedFile, read_json_record

try:
    import fcntl
except ImportError:  # Windows: shares are an app feature, and the app runs on POSIX servers
    fcntl = None

SHARES_FILE = "shares.json"
INDEX_FOLDER = "shares"
FORMAT = "retrain-studio/shares"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
MAX_SHARES_PER_WORKSPACE = 20
_FIX = "create a new share link"
_log = logging.getLogger(__name__)
REFUSED = "this share link is not valid: it was revoked, or never existed; ask its owner for a new one"


class ShareRefused(RetrainError):
    """A share token that does not open anything, with the reason a visitor may be told."""


@dataclass(frozen=True)
class Share:
    token: str
    run: str  # the run's folder name in the workspace
    created: float


@dataclass(frozen=True)
class SharedRun:
    """What a share token opens: one run folder, read-only."""

    run_dir: Path
    run: str
    read_only: bool = True


def create_share(workspace: str | Path, run: str, root: str | Path) -> Share:
    """A new share token for run `run` of the workspace folder `workspace` (under the data root `root`)."""
    workspace, root = Path(workspace), Path(root)
    run_dir = _run_dir(workspace, run)
    with _locked(workspace):
        shares = _read_shares_or_set_aside(workspace)
        if len(shares) >= MAX_SHARES_PER_WORKSPACE:
            raise RetrainError(
                f"this workspace already has {len(shares)} share links, the most it may have; revoke one first"
            )
        share = Share(secrets.token_urlsafe(24), run_dir.name, time.time())
        _write_index(root, share.token, workspace, share.run)
        _write_shares(workspace, [*shares, share])
    return share


def list_shares(workspace: str | Path, run: str | None = None) -> list[Share]:
    """The workspace's live share links (of one run, when given), oldest first; [] when shares.json is damaged."""
    try:
        shares = _read_shares(Path(workspace))
    except DamagedFile:
        return []
    return [share for share in shares if run is None or share.run == run]


def revoke_share(workspace: str | Path, token: str, root: str | Path) -> bool:
    """Stop a share link from working; False when the workspace had no such link."""
    workspace = Path(workspace)
    if not isinstance(token, str):
        return False
    with _locked(workspace):
        try:
            shares = _read_shares(workspace)
        except DamagedFile:  # every link of a damaged list is refused already; the next create sets it aside
            return False
        kept = [share for share in shares if not _same(share.token, token)]
        if len(kept) == len(shares):
            return False
        _write_shares(workspace, kept)  # first: from here on the link is refused, whatever happens to the index
    if TOKEN_PATTERN.fullmatch(token):
        _index_path(Path(root), token).unlink(missing_ok=True)
    return True


def revoke_run_shares(workspace: str | Path, run: str, root: str | Path) -> int:
    """Revoke every link to one run (call before deleting the run); how many there were."""
    return sum(revoke_share(workspace, share.token, root) for share in list_shares(workspace, run))


def resolve_share(token: object, root: str | Path) -> SharedRun:
    """The run a share token opens, read-only; ShareRefused with a message a visitor may see otherwise."""
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise ShareRefused(REFUSED)
    root = Path(root)
    try:
        entry = read_json_record(_index_path(root, token), _FIX, default=None)
    except DamagedFile:
        raise ShareRefused(
            "this share link cannot be opened: its record on the server is damaged; ask its owner for a new one"
        ) from None
    if entry is None or not isinstance(entry.get("workspace"), str) or not isinstance(entry.get("run"), str):
        raise ShareRefused(REFUSED)
    try:
        workspace = (root / entry["workspace"]).resolve()
        usable = workspace.is_relative_to(root.resolve()) and workspace.is_dir()
    except (OSError, ValueError):  # a NUL byte or a name too long: an index entry no real path could give
        raise ShareRefused(
            "this share link cannot be opened: its record on the server is damaged; ask its owner for a new one"
        ) from None
    if not usable:
        raise ShareRefused("the workspace this link shared no longer exists")
    try:
        live = _read_shares(workspace)
    except DamagedFile:
        raise ShareRefused("this share link cannot be opened: its owner's list of links is damaged") from None
    # Constant-time: how long the answer takes says nothing about how much of a guess was right.
    match = [share for share in live if _same(share.token, token)]
    if not match or match[0].run != entry["run"]:
        raise ShareRefused(REFUSED)
    try:
        run_dir = _run_dir(workspace, match[0].run)
    except RetrainError:
        raise ShareRefused("the run this link shared has been deleted") from None
    return SharedRun(run_dir, run_dir.name)


def _same(known: str, given: object) -> bool:
    """Constant-time equality of two tokens (any text: a visitor's bytes may not be ASCII)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(known.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass"))


# ---- Files ----------------------------------------------------------------------------------------------------------


def _run_dir(workspace: Path, run: str) -> Path:
    """The run folder `run` inside workspace/runs (a name, never a path), which must be one of ours."""
    if not isinstance(run, str) or not run or "/" in run or "\\" in run or run in (".", "..") or "\0" in run:
        raise RetrainError(f"{run!r} is not a run name")
    try:
        runs = (workspace / "runs").resolve()
        run_dir = runs / run
        ours = (
            not run_dir.is_symlink()
            and run_dir.is_dir()
            and (run_dir / ".retrain-studio-run").exists()
            and run_dir.resolve().is_relative_to(runs)
        )
    except (OSError, ValueError):  # a name too long for the disk, a loop of links
        ours = False
    if not ours:
        raise RetrainError(f"run {run:.80} is not in this workspace")
    return run_dir


def _read_shares(workspace: Path) -> list[Share]:
    path = workspace / SHARES_FILE
    data = read_json_record(path, _FIX, default={"format": FORMAT, "shares": []})
    if data.get("format") != FORMAT or not isinstance(data.get("shares"), list):
        raise DamagedFile(path, "is damaged (not a list of share links)", _FIX)
    shares = []
    for item in data["shares"]:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("token"), str)
            or not TOKEN_PATTERN.fullmatch(item["token"])
            or not isinstance(item.get("run"), str)
            or not isinstance(item.get("created"), (int, float))
            or not math.isfinite(item["created"])
        ):
            raise DamagedFile(path, f"is damaged (a share link is malformed: {item!r:.60})", _FIX)
        shares.append(Share(item["token"], item["run"], float(item["created"])))
    return shares


def _read_shares_or_set_aside(workspace: Path) -> list[Share]:
    """The live links; a damaged list is renamed aside (kept, never deleted) and a new one starts empty. Its links
    stay refused: a token opens only when the list and the index both hold it."""
    try:
        return _read_shares(workspace)
    except DamagedFile as damaged:
        aside = workspace / f"{SHARES_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            os.replace(workspace / SHARES_FILE, aside)
        except OSError:
            raise damaged from None
        _log.warning("%s; kept as %s, and a new list of links is started", damaged, aside.name)
        return []


def _write_shares(workspace: Path, shares: list[Share]) -> None:
    write_json_atomic(
        workspace / SHARES_FILE,
        {
            "format": FORMAT,
            "shares": [{"token": share.token, "run": share.run, "created": share.created} for share in shares],
        },
    )


def _index_path(root: Path, token: str) -> Path:
    return root / INDEX_FOLDER / f"{hashlib.sha256(token.encode()).hexdigest()}.json"


def _write_index(root: Path, token: str, workspace: Path, run: str) -> None:
    relative = os.path.relpath(workspace.resolve(), root.resolve())
    if relative.startswith(".."):
        raise RetrainError(f"{workspace} is not under the data root {root}")
    write_json_atomic(_index_path(root, token), {"workspace": relative, "run": run})


@contextlib.contextmanager
def _locked(workspace: Path):
    """One change to a workspace's links at a time (two tabs creating links at once would lose one)."""
    if fcntl is None:
        yield
        return
    with open(workspace / ".shares.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield
