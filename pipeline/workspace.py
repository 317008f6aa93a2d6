"""Session workspaces for the app: where a browser session's uploads and runs live, and what it may read.

The app is also a public demo, so strangers' files meet here. Each browser session gets a workspace
folder named by a random token (`<data root>/workspaces/<token>/` with uploads/, runs/, overrides/ and
predictions/); the token travels in the page URL, so the same URL reopens the same runs and no other
session can list them. Folders on the server can be chosen only under the data root, never the root
itself nor anything holding or inside workspaces/. Uploaded zips are unpacked by
`pipeline.archive.safe_extract`, never by hand.

Caps that protect the shared server are global: all workspaces together stay under a disk budget
(uploads, unpacked files, runs and caches), each workspace under its own quota of the same things,
runs wait in one queue of capped length (`pipeline.run_queue`), and workspaces idle for longer than
their time to live are removed (never while a run of theirs is active, and only folders this module
made). Bottlenecks of uploaded photos are cached inside their workspace, so no stranger can learn
from a run's cache report which photos someone else uploaded.

The trade-off that shaped it: the workspace keeps its small state (current dataset, current run, the
settings being edited) in `workspace.json` on disk rather than in the browser session, so a second tab
or a restarted server shows the same thing — at the price of one small file write per change.

Nothing here imports Streamlit or TensorFlow: the pages call these functions, and so do the tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.archive import archive_root, safe_extract
from pipeline.augment import copies_per_class
from pipeline.config import (
    AugmentConfig,
    DatasetConfig,
    RunConfig,
    TrainConfig,
    apply_preset,
    env_whole_number,
    section_from_dict,
)
from pipeline.dataset import Dataset, load_overrides, save_override
from pipeline.errors import RetrainError
from pipeline.evaluate import Prediction
from pipeline.files import (
    describe_write_error,
    display_name,
    from_display_name,
    write_bytes_atomic,
    write_json_atomic,
)
from pipeline.images import center_square, load_image
from pipeline.manifest import trained_images
from pipeline.progress import Progress, ProgressCallback
from pipeline.records import DamagedFile, read_config, read_workspace_state
from pipeline.run_queue import RunQueue
from pipeline.runs import FINISHED, RunDir, cache_root, list_runs, max_jobs, refreshed_status

if TYPE_CHECKING:
    from pipeline.suspects import Suspect

# A token is secrets.token_urlsafe(16): 22 characters of A-Z a-z 0-9 - _. Nothing else can become a path.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
# What `new_run_name` makes: run-YYYYmmdd-HHMMSS-xxxx. Nothing else is a run (no ".", "..", or other folders).
RUN_NAME_PATTERN = re.compile(r"run-\d{8}-\d{6}-[0-9a-f]{4}")
WORKSPACES = "workspaces"
STATE_FILE = "workspace.json"
DEFAULT_PRESET = "Quick"
# Classes whose largest/smallest training count ratio is above this get the imbalance advice.
IMBALANCE_RATIO = 1.5
# Defaults of the per-workspace caps (environment variables of the same purpose override them).
MAX_QUEUED_PER_WORKSPACE = 2     # RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE: runs queued or training at once
WORKSPACE_QUOTA_MB = 2048        # RETRAIN_STUDIO_WORKSPACE_QUOTA_MB: one workspace: uploads, unpacked, runs, cache
DISK_BUDGET_MB = 20480           # RETRAIN_STUDIO_DISK_BUDGET_MB: all workspaces, the queue and the shared cache
WORKSPACE_TTL_DAYS = 7           # RETRAIN_STUDIO_WORKSPACE_TTL_DAYS: idle workspaces are removed after this (0: never)
# Room a new run must find before it starts: its exports and logs (about 55 MB with the default backbone).
RUN_RESERVE_MB = 64
# Written into every workspace folder this module makes; only folders carrying it are ever expired.
MARKER = ".retrain-studio-workspace"
# How often (at most) a page visit looks for idle workspaces to remove.
EXPIRY_INTERVAL_SECONDS = 3600


# ---- Settings: environment variables only -----------------------------------------------------------------------

def data_root() -> Path:
    """The folder the app may read and write (RETRAIN_STUDIO_DATA_ROOT, default ./data), created if missing."""
    root = Path(os.environ.get("RETRAIN_STUDIO_DATA_ROOT") or "data").expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def use_hosted_defaults() -> None:
    """Settings for a server open to strangers, unless the operator set them: a lower image size cap, and
    freed image memory given back to the system (see pipeline.images), for this process and its runs."""
    from pipeline.images import HOSTED_MAX_PIXELS, return_freed_memory

    os.environ.setdefault("RETRAIN_STUDIO_MAX_PIXELS", str(HOSTED_MAX_PIXELS))
    return_freed_memory()


def samples_root() -> Path | None:
    """The folder of sample datasets (RETRAIN_STUDIO_SAMPLES), or None when unset or missing."""
    value = os.environ.get("RETRAIN_STUDIO_SAMPLES")
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    return folder if folder.is_dir() else None


def list_samples() -> dict[str, Path]:
    """{name: folder} of each sample dataset: every visible sub-folder of the samples folder."""
    root = samples_root()
    if root is None:
        return {}
    return {path.name: path for path in sorted(root.iterdir()) if path.is_dir() and not path.name.startswith(".")}


def max_queued_per_workspace() -> int:
    """How many runs one workspace may have queued or training at once (RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE)."""
    return max(env_whole_number("RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE", MAX_QUEUED_PER_WORKSPACE), 1)


def workspace_quota_bytes() -> int:
    """How many bytes one workspace may hold, runs and cache included (RETRAIN_STUDIO_WORKSPACE_QUOTA_MB, in MB)."""
    return env_whole_number("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", WORKSPACE_QUOTA_MB) << 20


def disk_budget_bytes() -> int:
    """How many bytes all workspaces, the queue and the shared cache may take (RETRAIN_STUDIO_DISK_BUDGET_MB)."""
    return env_whole_number("RETRAIN_STUDIO_DISK_BUDGET_MB", DISK_BUDGET_MB) << 20


def workspace_ttl_seconds() -> float:
    """How long a workspace may sit unused before it is removed (RETRAIN_STUDIO_WORKSPACE_TTL_DAYS; 0 = forever)."""
    return env_whole_number("RETRAIN_STUDIO_WORKSPACE_TTL_DAYS", WORKSPACE_TTL_DAYS) * 86400.0


# ---- Workspaces ---------------------------------------------------------------------------------------------------

def new_token() -> str:
    """A fresh, unguessable workspace token (128 random bits)."""
    return secrets.token_urlsafe(16)


def is_valid_token(token: Any) -> bool:
    """True only for strings shaped exactly like `new_token()`'s: the token becomes a folder name."""
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


@dataclass(frozen=True)
class Workspace:
    """One browser session's folder: uploads/, runs/ and workspace.json."""

    token: str
    path: Path

    @property
    def uploads(self) -> Path:
        return self.path / "uploads"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def overrides(self) -> Path:
        return self.path / "overrides"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def state(self) -> dict[str, Any]:
        """The saved state: dataset (DatasetConfig dict), dataset_summary, run (name), config (RunConfig dict).

        Empty when workspace.json is damaged (`damage()` says how); keys of the wrong shape are left out.
        """
        try:
            return read_workspace_state(self.path / STATE_FILE)
        except DamagedFile:
            return {}

    def damage(self) -> str | None:
        """What is wrong with workspace.json, or None when it is fine (or not written yet)."""
        try:
            read_workspace_state(self.path / STATE_FILE)
        except DamagedFile as damaged:
            return str(damaged)
        return None

    def update_state(self, **changes: Any) -> dict[str, Any]:
        """Change some keys of workspace.json (atomically) and return the new state.

        A damaged workspace.json is renamed aside first (kept, never overwritten).
        """
        if self.damage():
            state_file = self.path / STATE_FILE
            state_file.rename(state_file.with_name(f"{STATE_FILE}.damaged-{time.time_ns()}"))
        state = {**self.state(), **changes}
        write_json_atomic(self.path / STATE_FILE, state)
        return state


def open_workspace(token: str, root: Path | None = None) -> Workspace:
    """The workspace of `token` under the data root, created on first use; a malformed token is refused."""
    if not is_valid_token(token):
        raise RetrainError("this link's workspace id is not valid; open the app without it to start a new workspace")
    base = (root or data_root()) / WORKSPACES
    base.mkdir(parents=True, exist_ok=True)
    path = base / token
    # Checked before anything is created: mkdir through a planted symlink would already write elsewhere.
    if any(link.is_symlink() for link in (path, path / "uploads", path / "runs")) or \
            (path.exists() and not path.resolve().is_relative_to(base.resolve())):
        raise RetrainError("this workspace folder is a link (to somewhere else); it is refused")
    for folder in (path / "uploads", path / "runs"):
        folder.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()  # made by us (only such folders expire), and used now (its time is the last use)
    return Workspace(token, path)


def expire_idle_workspaces(root: Path | None = None, now: float | None = None) -> list[str]:
    """Remove workspaces unused for longer than their time to live; the tokens removed.

    Only folders this module made (token-named, not a link, carrying its marker) and none with a run
    queued or working. "Used" is the latest of: opened by a page, its state saved, a run's status written.
    """
    ttl = workspace_ttl_seconds()
    base = (root or data_root()) / WORKSPACES
    if ttl <= 0 or not base.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for path in sorted(base.iterdir()):
        if not is_valid_token(path.name) or path.is_symlink() or not path.is_dir() or not (path / MARKER).is_file():
            continue
        workspace = Workspace(path.name, path)
        if now - last_used(workspace) <= ttl or any(is_active(refreshed_status(run))
                                                    for run in workspace_runs(workspace)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def last_used(workspace: Workspace) -> float:
    """When the workspace was last opened, changed, or had a run report progress (seconds since the epoch)."""
    files = [workspace.path / MARKER, workspace.path / STATE_FILE]
    files += [run.status_file for run in workspace_runs(workspace)]
    times = []
    for file in files:
        try:
            times.append(file.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def expire_now_and_then(root: Path | None = None) -> list[str]:
    """`expire_idle_workspaces` at most once an hour (a stamp file's time says when it last looked)."""
    stamp = (root or data_root()) / WORKSPACES / ".last-expiry"
    try:
        if time.time() - stamp.stat().st_mtime < EXPIRY_INTERVAL_SECONDS:
            return []
    except OSError:
        pass
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return expire_idle_workspaces(root)


# ---- Folders on the server ----------------------------------------------------------------------------------------

def resolve_server_folder(folder: str, root: Path | None = None) -> Path:
    """The real folder `folder` names under the data root, or RetrainError saying why it is refused.

    `folder` may be relative to the data root or absolute; after resolving symlinks it must still be
    inside the data root, and neither hold nor be inside its workspaces/ (other sessions' uploads live
    there): so "." and the root itself, or a link to it, are refused too.
    """
    root = (root or data_root()).resolve()
    text = (folder or "").strip()
    if not text:
        raise RetrainError(f"choose a folder under the data folder {root}")
    if "\x00" in text:
        raise RetrainError("a folder name cannot contain a NUL character")
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        return _resolve_under_root(text, shown, root)
    except OSError as error:  # a name too long for the file system, a loop of links, a folder we may not read
        raise RetrainError(f"'{shown}' cannot be used as a folder: {error.strerror or error}") from None


def _resolve_under_root(text: str, shown: str, root: Path) -> Path:
    if ".." in Path(text).parts:
        raise RetrainError(f"'{shown}': '..' is not allowed; choose a folder inside the data folder {root}")
    candidate = Path(text).expanduser()
    with contextlib.suppress(OSError):
        if not (candidate if candidate.is_absolute() else root / candidate).exists():
            candidate = Path(from_display_name(text)).expanduser()  # a name listed with \xNN for non-UTF-8 bytes
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise RetrainError(f"'{shown}' is outside the data folder {root} (or links out of it); only folders "
                           "inside it can be used")
    if (root / WORKSPACES).is_relative_to(resolved):
        raise RetrainError(f"'{shown}' is the data folder itself (or links to it), which holds the app's private "
                           "workspaces; choose one of the dataset folders inside it")
    if resolved.is_relative_to(root / WORKSPACES):
        raise RetrainError(f"'{shown}' is inside the app's private workspaces; upload a zip instead")
    if not resolved.is_dir():
        raise RetrainError(f"'{shown}': no such folder under the data folder {root}")
    return resolved


def list_server_folders(root: Path | None = None) -> list[str]:
    """Top-level folders under the data root that could be datasets (not workspaces/ or hidden ones)."""
    root = (root or data_root()).resolve()
    return [display_name(path.name) for path in sorted(root.iterdir())
            if path.is_dir() and path.name != WORKSPACES and not path.name.startswith(".")
            and path.resolve().is_relative_to(root) and not (root / WORKSPACES).is_relative_to(path.resolve())]


# ---- Uploads ------------------------------------------------------------------------------------------------------

def safe_upload_name(name: str, default: str = "upload") -> str:
    """A file name made safe to write: the last path part only, odd characters replaced."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    return cleaned[:80] or default


def upload_path(workspace: Workspace, name: str, data: bytes) -> Path:
    """Where an upload is kept: uploads/<content hash>-<safe name>, so the same upload is the same file."""
    return workspace.uploads / f"{hashlib.sha256(data).hexdigest()[:12]}-{safe_upload_name(name)}"


def save_upload(workspace: Workspace, name: str, data: bytes) -> Path:
    """Write an uploaded file into the workspace's uploads/ (atomically, within the quota); re-uploads reuse it.

    Atomic because the file is reused by its name: a crash mid-write must not leave a truncated
    zip that every later upload of the same file would be handed.
    """
    path = upload_path(workspace, name, data)
    if not path.exists():
        check_quota(workspace, len(data), name)
        write_bytes_atomic(path, data)
    return path


def unpack_upload(workspace: Workspace, zip_path: Path) -> Path:
    """Unpack a saved zip next to it (once, within the quota) through `safe_extract`; the dataset root inside."""
    target = zip_path.with_name(zip_path.stem + ".unpacked")
    if target.is_dir():
        return archive_root(target)
    check_quota(workspace, _declared_size(zip_path), zip_path.name.split("-", 1)[-1])
    return safe_extract(zip_path, target)


def folder_size(folder: Path) -> int:
    """Bytes the files under `folder` take (links are not followed; a folder that is gone takes none)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:  # removed while counting
                continue
    return total


def uploads_size(workspace: Workspace) -> int:
    """Bytes the workspace's uploads take: zips, CSVs and unpacked files."""
    return folder_size(workspace.uploads)


def server_disk_use(root: Path | None = None) -> int:
    """Bytes the app has written, all sessions together: every workspace, the queue and the shared cache."""
    root = root or data_root()
    return sum(folder_size(folder) for folder in (root / WORKSPACES, root / "queue", cache_root() / "bottlenecks"))


def check_quota(workspace: Workspace, adding: int, what: str) -> None:
    """RetrainError when `adding` more bytes would take the workspace over its quota or the server over its budget.

    A workspace counts everything in it: uploads, unpacked files, runs and its bottleneck cache.
    """
    quota, used = workspace_quota_bytes(), folder_size(workspace.path)
    if used + adding > quota:
        raise RetrainError(f"{what}: this workspace would take {_mb(used + adding)}, over its quota of "
                           f"{_mb(quota)} ({_mb(used)} used by uploads, runs and cache). Delete old runs on the Runs "
                           "page, or start a new workspace by opening the app's address without '?ws=…'")
    budget, everyone = disk_budget_bytes(), server_disk_use(workspace.path.parents[1])
    if everyone + adding > budget:
        raise RetrainError(f"{what}: the server's disk space for all users is used up ({_mb(everyone)} of "
                           f"{_mb(budget)}); try again later, when idle workspaces have expired")


def _declared_size(zip_path: Path) -> int:
    """What a zip says it unpacks to (0 for a file that is not a zip: safe_extract says what is wrong)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return 0


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 20):,.0f} MB"


def dataset_from_zip(workspace: Workspace, zip_name: str, zip_bytes: bytes, csv_name: str | None = None,
                     csv_bytes: bytes | None = None) -> DatasetConfig:
    """The DatasetConfig of an uploaded zip (either folder layout), or of a labels CSV plus a zip of its images.

    A zip that cannot be unpacked is not kept: it would only count against the quota.
    """
    if not zip_name.lower().endswith(".zip"):
        raise RetrainError(f"{zip_name}: not a .zip file; zip the image folder and upload the .zip")
    is_new = not upload_path(workspace, zip_name, zip_bytes).exists()
    zip_path = save_upload(workspace, zip_name, zip_bytes)
    try:
        root = unpack_upload(workspace, zip_path)
    except RetrainError:
        if is_new:
            zip_path.unlink(missing_ok=True)
        raise
    if csv_bytes is None:
        return DatasetConfig(image_dir=str(root))
    csv_path = save_upload(workspace, csv_name or "labels.csv", csv_bytes)
    return DatasetConfig(image_dir=str(root), label_csv=str(csv_path))


def dataset_name(config: DatasetConfig, workspace: Workspace | None = None) -> str:
    """A short name for a dataset as the user knows it: the folder or zip name without our prefixes."""
    path = Path(config.image_dir or config.zip or "dataset")
    if workspace and path.is_relative_to(workspace.uploads):
        first = path.relative_to(workspace.uploads).parts[0]
        name = re.sub(r"^[0-9a-f]{12}-", "", first).removesuffix(".unpacked")
        return name.removesuffix(".zip") + (" (CSV)" if config.label_csv else "")
    return display_name(path.stem if path.suffix.lower() == ".zip" else path.name)


def dataset_root(config: DatasetConfig) -> Path:
    """The folder a dataset's `file` paths are relative to (its unpacked folder, for a zip)."""
    if config.zip and not config.image_dir:
        from pipeline.archive import unpack_dataset_zip

        return unpack_dataset_zip(config.zip)
    if not config.image_dir:
        raise RetrainError("this run's config names no dataset folder")
    return Path(config.image_dir).resolve()


def image_path(root: Path, file: str) -> Path | None:
    """root/file when it stays inside root (a report's file names are not trusted to), else None."""
    path = (root / file).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def thumbnail(path: str | Path, size: int = 160) -> np.ndarray:
    """A small square RGB copy of an image (its centre) for galleries; JPEGs are decoded at reduced size."""
    from PIL import Image

    return load_image(path, min_side=size, finish=lambda rgb: np.asarray(
        Image.fromarray(center_square(rgb)).resize((size, size), Image.Resampling.BILINEAR)))


# ---- Per-image decisions: drop or relabel, never touching the user's files ------------------------------------

def overrides_path(workspace: Workspace, config: DatasetConfig) -> Path:
    """The workspace's decisions file for one dataset: overrides/<key of its folder, zip and CSV>.json."""
    source = json.dumps([config.image_dir, config.zip, config.label_csv])
    return workspace.overrides / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.json"


def with_overrides(workspace: Workspace, config: DatasetConfig) -> DatasetConfig:
    """`config` reading its decisions from the workspace's file for it (so choosing it again keeps them)."""
    return dataclasses.replace(config, overrides=str(overrides_path(workspace, config)))


def dataset_config(workspace: Workspace) -> DatasetConfig | None:
    """The workspace's current dataset with its decisions file, or None before one is chosen."""
    saved = workspace.state().get("dataset")
    if not saved:
        return None
    config = section_from_dict(DatasetConfig, saved)
    if not config.overrides:  # chosen before decisions existed
        config = with_overrides(workspace, config)
        workspace.update_state(dataset=dataclasses.asdict(config))
    return config


def decisions(workspace: Workspace) -> dict[str, Any]:
    """The current dataset's decisions: {"drop": [file, ...], "relabel": {file: label}}."""
    config = dataset_config(workspace)
    return load_overrides(config.overrides if config else None)


def record_decision(workspace: Workspace, file: str, drop: bool = False, label: str | None = None) -> None:
    """Drop one image from training or give it another label, for the next runs; neither = undo its decision."""
    config = dataset_config(workspace)
    if config is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    save_override(config.overrides, file, drop=drop, label=label)


def undo_decision(workspace: Workspace, file: str) -> None:
    """Forget what was decided about one image: it trains with its own label again."""
    record_decision(workspace, file)


def decision_text(overrides: dict[str, Any], file: str) -> str | None:
    """What was decided about `file` in words ("dropped from training", "relabelled as roses"), or None."""
    if file in overrides["drop"]:
        return "dropped from training"
    if file in overrides["relabel"]:
        return f"relabelled as {overrides['relabel'][file]}"
    return None


@dataclass
class LabelCheck:
    """The result of looking for likely mistakes: the suspects, most doubtful first, and the dataset map."""

    suspects: list[Suspect]
    points: pd.DataFrame          # pipeline.datamap.dataset_map's table: x, y, file, path, label, split, suspect


def check_labels(dataset: Dataset, train: TrainConfig, bottleneck_dir: str | None = None, method: str = "pca",
                 progress: ProgressCallback | None = None) -> LabelCheck:
    """Find likely-mislabelled images and map the dataset (`method` "pca" or "tsne"), with the next run's backbone.

    Bottlenecks go to the cache runs use (so a later run reuses them); TensorFlow is imported here,
    not when the app starts.
    """
    from pipeline.backbones import load_backbone
    from pipeline.datamap import dataset_map
    from pipeline.suspects import find_suspects

    backbone = load_backbone(train.architecture, train.bottleneck_layer, train.mirror_view)
    folder = bottleneck_dir or cache_root() / "bottlenecks"  # the app passes bottleneck_folder(...)
    suspects = find_suspects(dataset, backbone, folder, seed=train.seed, progress=progress)
    if progress:
        progress(Progress("mapping", 0, 1, 0.0, None))
    return LabelCheck(suspects, dataset_map(dataset, backbone, folder, method, suspects=suspects, seed=train.seed))


def balance_counts(class_counts: dict[str, dict[str, int]], augment: AugmentConfig) -> pd.DataFrame:
    """Training images per class now and with the copies `augment` makes: rows (class, when, images)."""
    train = {label: counts.get("train", 0) for label, counts in class_counts.items()}
    copies = copies_per_class(train, augment)
    return pd.DataFrame([{"class": label, "when": when, "images": count * (1 + copies[label] * (when != "now"))}
                         for when in ("now", "after balancing") for label, count in train.items()])


# ---- The settings being edited ------------------------------------------------------------------------------------

def working_config(workspace: Workspace) -> RunConfig:
    """The settings the next run will use: the saved ones, else the defaults with the Quick preset."""
    saved = workspace.state().get("config")
    if saved:
        try:
            return RunConfig.from_dict(saved)
        except (RetrainError, TypeError):
            pass  # settings saved by an older version: start again from the defaults
    return apply_preset(RunConfig(), DEFAULT_PRESET)


def save_working_config(workspace: Workspace, config: RunConfig) -> None:
    workspace.update_state(config=config.to_dict())


# ---- Runs ---------------------------------------------------------------------------------------------------------

def new_run_name() -> str:
    """run-YYYYmmdd-HHMMSS-xxxx: sorts by start time, and a random tail keeps two at once apart."""
    return time.strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def start_run(workspace: Workspace, config: RunConfig) -> RunDir:
    """Write a new run folder with `config` (dataset from the workspace) and put it in the app's queue.

    The settings, this workspace's share of the queue and the disk space are checked first; the
    queue starts the run at once when a training slot is free.
    The dataset's decisions are copied into the run, so deciding more later changes the next run, not this one.
    """
    dataset = dataset_config(workspace)
    if dataset is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    config = RunConfig.from_dict({**config.to_dict(), "dataset": dataclasses.asdict(dataset)}).validate()
    # One start at a time per workspace (two tabs pressing Start together): the count and the new run are one step.
    with open(workspace.path / ".start.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        waiting = [run.name for run in workspace_runs(workspace) if is_active(refreshed_status(run))]
        if len(waiting) >= max_queued_per_workspace():
            raise RetrainError(f"this workspace already has {len(waiting)} runs queued or training, the most it "
                               "may have; wait for one to finish, or cancel one")
        check_quota(workspace, RUN_RESERVE_MB << 20, "a new run")
        run = RunDir(workspace.runs / new_run_name())
        try:
            run.path.mkdir(parents=True)
            _write_run(workspace, run, config, dataset)
        except OSError as error:  # a full disk, most likely: say so on the page, not as a traceback
            shutil.rmtree(run.path, ignore_errors=True)  # ours, made above: a refused run leaves nothing behind
            raise RetrainError(f"the run could not be started: {describe_write_error(error, run.path)}") from None
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)
            raise
    workspace.update_state(run=run.name)
    dispatch_queue(workspace.path.parents[1])
    return run


def _write_run(workspace: Workspace, run: RunDir, config: RunConfig, dataset: DatasetConfig) -> None:
    """The run's folder (config, its own copy of the decisions, status) and its ticket in the queue."""
    run.marker.touch()  # made just now by start_run for this run: ours, so the run may write into it
    if dataset.overrides and Path(dataset.overrides).is_file():
        shutil.copyfile(dataset.overrides, run.path / "overrides.json")
        config.dataset.overrides = str(run.path / "overrides.json")
    else:
        config.dataset.overrides = None
    config.output.output_dir = str(run.path)
    config.output.bottleneck_dir = str(bottleneck_folder(workspace, dataset))
    config.save(run.config)
    queue = app_queue(workspace.path.parents[1])
    run.write_status("queued", 0.0, "waiting for a free training slot", pid=0, waiting=True, queue=str(queue.folder))
    queue.submit(run.path, owner=workspace.token)


def bottleneck_folder(workspace: Workspace, dataset: DatasetConfig) -> Path:
    """Where a dataset's bottlenecks are cached: inside the workspace for uploads, shared for server folders.

    Uploaded photos are private: a shared cache would tell a stranger's run (by what it reused)
    that someone else uploaded the same photos. Server folders and samples are there for everyone, so
    their bottlenecks are shared and a sample trains fast in every new workspace.
    """
    sources = [value for value in (dataset.image_dir, dataset.zip, dataset.label_csv) if value]
    if any(Path(value).resolve().is_relative_to(workspace.path.resolve()) for value in sources):
        return workspace.path / "cache" / "bottlenecks"
    return cache_root() / "bottlenecks"


def app_queue(root: Path | None = None) -> RunQueue:
    """The training queue of this data root (its own slots: CLI runs elsewhere on the machine never hold one)."""
    return RunQueue((root or data_root()) / "queue")


def dispatch_queue(root: Path | None = None) -> list[int]:
    """Start the next queued runs while training slots are free (cheap when none is; called on every refresh)."""
    return app_queue(root).dispatch(max_jobs())


def queue_place(run: RunDir):
    """Where a queued run stands (pipeline.run_queue.Place: position, waiting, running, estimate), or None."""
    queue = refreshed_status(run).get("queue")
    try:
        return RunQueue(queue).place(run.path, max_jobs()) if isinstance(queue, str) else None
    except RetrainError:  # an unreadable queue: the page shows the run as waiting, without its place
        return None


def workspace_runs(workspace: Workspace) -> list[RunDir]:
    """This workspace's runs, newest first."""
    return [run for run in list_runs(workspace.runs) if RUN_NAME_PATTERN.fullmatch(run.name)]


def find_run(workspace: Workspace, name: str | None) -> RunDir | None:
    """The run called `name` in this workspace (names from the URL or state are checked, not trusted)."""
    if not isinstance(name, str) or not RUN_NAME_PATTERN.fullmatch(name):
        return None
    run = RunDir(workspace.runs / name)
    return run if run.config.is_file() else None


def current_run(workspace: Workspace) -> RunDir | None:
    return find_run(workspace, workspace.state().get("run"))


def forget_missing_run(workspace: Workspace) -> str | None:
    """Stop pointing at a current run whose folder is gone (deleted in another tab); its name, else None."""
    name = workspace.state().get("run")
    if name and current_run(workspace) is None:
        workspace.update_state(run=None)
        return str(name)
    return None


def run_summary(run: RunDir) -> dict[str, Any]:
    """One row of the Runs table: name, state, accuracy, duration, backbone, epochs, dataset, started."""
    status = refreshed_status(run)
    config = _config_dict(run)
    train, dataset = config.get("train", {}), config.get("dataset", {})
    started, finished = status.get("started"), status.get("finished") or status.get("updated")
    accuracy = status.get("test_accuracy")
    return {"run": run.name, "state": status.get("state", "not started"),
            "test accuracy": None if accuracy is None else round(100 * accuracy, 1),
            "duration (s)": round(finished - started) if started and finished else None,
            "backbone": Path(train.get("architecture") or "").name, "epochs": train.get("epochs"),
            "images": trained_images(run.path),
            "dataset": Path(dataset.get("image_dir") or dataset.get("zip") or "").name.removesuffix(".unpacked"),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else ""}


def _config_dict(run: RunDir) -> dict[str, Any]:
    """A run's config.json as checked sections, or {} when it is damaged (the run's state says so)."""
    try:
        return read_config(run.config).to_dict()
    except DamagedFile:
        return {}


def is_active(status: dict[str, Any]) -> bool:
    """True while a run is queued or working."""
    return bool(status) and status.get("state") not in FINISHED


def is_waiting_for_slot(status: dict[str, Any]) -> bool:
    """True while a queued run waits for another run to free a training slot (the run says so itself)."""
    return status.get("state") == "queued" and bool(status.get("waiting"))


def config_differences(first: RunDir, second: RunDir) -> list[dict[str, Any]]:
    """The settings two runs differ in: [{setting, first, second}] (output paths left out)."""
    a, b = (_config_dict(run) for run in (first, second))
    rows = []
    for section in ("dataset", "augment", "train"):
        for key in sorted(set(a.get(section, {})) | set(b.get(section, {}))):
            left, right = a.get(section, {}).get(key), b.get(section, {}).get(key)
            if left != right:
                rows.append({"setting": f"{section}.{key}", first.name: str(left), second.name: str(right)})
    return rows


def saved_model_zip(run: RunDir) -> bytes:
    """The run's saved_model/ folder as zip bytes, for one download."""
    folder = run.path / "saved_model"
    if not folder.is_dir():
        raise RetrainError(f"run {run.name} has no SavedModel export")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path("saved_model") / path.relative_to(folder))
    return buffer.getvalue()


# ---- What the pages show ------------------------------------------------------------------------------------------

def imbalance_advice(class_counts: dict[str, dict[str, int]]) -> str | None:
    """A warning with what to do when training classes are uneven (largest over smallest above 1.5), else None."""
    train = {label: counts.get("train", 0) for label, counts in class_counts.items()}
    if len(train) < 2:
        return None
    largest, smallest = max(train, key=train.get), min(train, key=train.get)
    if train[smallest] and train[largest] / train[smallest] <= IMBALANCE_RATIO:
        return None
    return (f"Classes are imbalanced: '{largest}' has {train[largest]} training images and '{smallest}' only "
            f"{train[smallest]}. The model will lean towards the bigger classes. Add photos to the small classes, "
            f"or on Configure turn on 'Balance classes' at about {train[largest]} images so augmented copies even "
            "them out (class weights, on by default, also help).")


def cell_images(predictions: list[Prediction], true_label: str, predicted_label: str) -> list[dict[str, Any]]:
    """The images of one confusion-matrix cell from a report's predictions: [{file, true_label, predicted_label,
    confidence}].

    Mistakes come most confident first (the ones to look at); correct ones least confident first
    (the near misses).
    """
    items = [dataclasses.asdict(p) for p in predictions
             if p.true_label == true_label and p.predicted_label == predicted_label]
    sign = 1 if true_label == predicted_label else -1
    return sorted(items, key=lambda item: sign * item["confidence"])


# ---- Predictions for a zip of photos ------------------------------------------------------------------------------

def predictions_path(workspace: Workspace, zip_path: Path, run_name: str, k: int) -> Path:
    """Where the predictions CSV of one uploaded zip, run and k is kept: the workspace's predictions/.

    Not next to the unpacked photos: a file added there would change how the same zip reads as a dataset.
    """
    return workspace.predictions / f"{zip_path.stem}-{run_name}-top{k}.csv"


def save_predictions(results: list[dict], csv_path: Path, k: int, root: Path) -> None:
    """Write `Predictor.predict_files` results as the predictions CSV, atomically (it is reused by name)."""
    from pipeline.predict import write_predictions_csv

    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / csv_path.name
        write_predictions_csv(results, draft, k, root=root)
        write_bytes_atomic(csv_path, draft.read_bytes())
