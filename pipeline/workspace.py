"""Session workspaces for the app: where a browser session's uploads and runs live, and what it may read.

The app is also a public demo, so strangers' files meet here. Each browser session gets a workspace
folder named by a random token (`<data root>/workspaces/<token>/` with uploads/, runs/, overrides/ and
predictions/); the token travels in the page URL, so the same URL reopens the same runs and no other
session can list them. Folders on the server can be chosen only under the data root, never the root
itself nor anything holding or inside workspaces/. Uploaded zips are unpacked by
`pipeline.archive.safe_extract`, never by hand. A workspace may hold a capped amount of uploads and a
capped number of waiting runs, so one stranger cannot fill the disk or the queue.

The trade-off that shaped it: the workspace keeps its small state (current dataset, current run, the
settings being edited) in `workspace.json` on disk rather than in the browser session, so a second tab
or a restarted server shows the same thing — at the price of one small file write per change.

Nothing here imports Streamlit or TensorFlow: the pages call these functions, and so do the tests.
"""

from __future__ import annotations

import dataclasses
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
from pipeline.config import AugmentConfig, DatasetConfig, RunConfig, TrainConfig, apply_preset, env_whole_number
from pipeline.dataset import Dataset, load_overrides, save_override
from pipeline.errors import RetrainError
from pipeline.evaluate import Prediction
from pipeline.files import read_json, write_bytes_atomic, write_json_atomic
from pipeline.images import center_square, load_image
from pipeline.progress import Progress, ProgressCallback
from pipeline.runs import FINISHED, RunDir, cache_root, launch_run, list_runs, refreshed_status

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
WORKSPACE_QUOTA_MB = 2048        # RETRAIN_STUDIO_WORKSPACE_QUOTA_MB: uploads (zips and their unpacked files)


# ---- Settings: environment variables only -----------------------------------------------------------------------

def data_root() -> Path:
    """The folder the app may read and write (RETRAIN_STUDIO_DATA_ROOT, default ./data), created if missing."""
    root = Path(os.environ.get("RETRAIN_STUDIO_DATA_ROOT") or "data").expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


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
    """How many bytes of uploads one workspace may hold (RETRAIN_STUDIO_WORKSPACE_QUOTA_MB, in MB)."""
    return env_whole_number("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", WORKSPACE_QUOTA_MB) << 20


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
        """The saved state: dataset (DatasetConfig dict), dataset_summary, run (name), config (RunConfig dict)."""
        state = read_json(self.path / STATE_FILE, default={})
        return state if isinstance(state, dict) else {}

    def update_state(self, **changes: Any) -> dict[str, Any]:
        """Change some keys of workspace.json (atomically) and return the new state."""
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
    return Workspace(token, path)


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
    if ".." in Path(text).parts:
        raise RetrainError(f"'{text}': '..' is not allowed; choose a folder inside the data folder {root}")
    candidate = Path(text).expanduser()
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise RetrainError(f"'{text}' is outside the data folder {root} (or links out of it); only folders "
                           "inside it can be used")
    if (root / WORKSPACES).is_relative_to(resolved):
        raise RetrainError(f"'{text}' is the data folder itself (or links to it), which holds the app's private "
                           "workspaces; choose one of the dataset folders inside it")
    if resolved.is_relative_to(root / WORKSPACES):
        raise RetrainError(f"'{text}' is inside the app's private workspaces; upload a zip instead")
    if not resolved.is_dir():
        raise RetrainError(f"'{text}': no such folder under the data folder {root}")
    return resolved


def list_server_folders(root: Path | None = None) -> list[str]:
    """Top-level folders under the data root that could be datasets (not workspaces/ or hidden ones)."""
    root = (root or data_root()).resolve()
    return [path.name for path in sorted(root.iterdir())
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


def uploads_size(workspace: Workspace) -> int:
    """Bytes the workspace's uploads take: zips, CSVs and unpacked files (links are not followed)."""
    total = 0
    for folder, _, files in os.walk(workspace.uploads):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while counting
                continue
    return total


def check_quota(workspace: Workspace, adding: int, what: str) -> None:
    """RetrainError when `adding` more bytes would take the workspace's uploads over its quota."""
    quota, used = workspace_quota_bytes(), uploads_size(workspace)
    if used + adding > quota:
        raise RetrainError(f"{what}: this workspace's uploads would take {_mb(used + adding)}, over its quota of "
                           f"{_mb(quota)} ({_mb(used)} used). Upload a smaller dataset, or start a new workspace by "
                           "opening the app's address without '?ws=…'")


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
    return path.stem if path.suffix.lower() == ".zip" else path.name


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

    square = center_square(load_image(path, min_side=size))
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))


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
    config = DatasetConfig(**saved)
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
    folder = bottleneck_dir or cache_root() / "bottlenecks"
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
    """Write a new run folder with `config` (dataset from the workspace) and launch it in the background.

    The settings are checked first, and a workspace may have only a few runs queued or training.
    The dataset's decisions are copied into the run, so deciding more later changes the next run, not this one.
    """
    dataset = dataset_config(workspace)
    if dataset is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    config = RunConfig.from_dict({**config.to_dict(), "dataset": dataclasses.asdict(dataset)}).validate()
    waiting = [run.name for run in workspace_runs(workspace) if is_active(refreshed_status(run))]
    if len(waiting) >= max_queued_per_workspace():
        raise RetrainError(f"this workspace already has {len(waiting)} runs queued or training, the most it may "
                           "have; wait for one to finish, or cancel one")
    run = RunDir(workspace.runs / new_run_name())
    run.path.mkdir(parents=True)
    if dataset.overrides and Path(dataset.overrides).is_file():
        shutil.copyfile(dataset.overrides, run.path / "overrides.json")
        config.dataset.overrides = str(run.path / "overrides.json")
    else:
        config.dataset.overrides = None
    config.output.output_dir = str(run.path)
    config.save(run.config)
    launch_run(run.path)
    workspace.update_state(run=run.name)
    return run


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
    config = read_json(run.config, default={}) or {}
    train, dataset = config.get("train", {}), config.get("dataset", {})
    started, finished = status.get("started"), status.get("finished") or status.get("updated")
    accuracy = status.get("test_accuracy")
    return {"run": run.name, "state": status.get("state", "not started"),
            "test accuracy": None if accuracy is None else round(100 * accuracy, 1),
            "duration (s)": round(finished - started) if started and finished else None,
            "backbone": Path(train.get("architecture") or "").name, "epochs": train.get("epochs"),
            "dataset": Path(dataset.get("image_dir") or dataset.get("zip") or "").name.removesuffix(".unpacked"),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else ""}


def is_active(status: dict[str, Any]) -> bool:
    """True while a run is queued or working."""
    return bool(status) and status.get("state") not in FINISHED


def is_waiting_for_slot(status: dict[str, Any]) -> bool:
    """True while a queued run waits for another run to free a training slot (the run says so itself)."""
    return status.get("state") == "queued" and bool(status.get("waiting"))


def config_differences(first: RunDir, second: RunDir) -> list[dict[str, Any]]:
    """The settings two runs differ in: [{setting, first, second}] (output paths left out)."""
    a, b = (read_json(run.config, default={}) or {} for run in (first, second))
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
