"""Session workspaces for the app: where a browser session's uploads and runs live, and what it may read.

The app is also a public demo, so strangers' files meet here. Each browser session gets a workspace
folder named by a random token (`<data root>/workspaces/<token>/` with uploads/ and runs/); the token
travels in the page URL, so the same URL reopens the same runs and no other session can list them.
Folders on the server can be chosen only under the data root, and never inside workspaces/. Uploaded
zips are unpacked by `pipeline.archive.safe_extract`, never by hand.

The trade-off that shaped it: the workspace keeps its small state (current dataset, current run, the
settings being edited) in `workspace.json` on disk rather than in the browser session, so a second tab
or a restarted server shows the same thing — at the price of one small file write per change.

Nothing here imports Streamlit or TensorFlow: the pages call these functions, and so do the tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import secrets
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.archive import archive_root, safe_extract
from pipeline.config import DatasetConfig, RunConfig, apply_preset
from pipeline.errors import RetrainError
from pipeline.files import read_json, write_json_atomic
from pipeline.images import center_square, load_image
from pipeline.runs import FINISHED, RunDir, launch_run, list_runs, refreshed_status

# A token is secrets.token_urlsafe(16): 22 characters of A-Z a-z 0-9 - _. Nothing else can become a path.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
WORKSPACES = "workspaces"
STATE_FILE = "workspace.json"
DEFAULT_PRESET = "Quick"
# Classes whose largest/smallest training count ratio is above this get the imbalance advice.
IMBALANCE_RATIO = 1.5


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
    path = base / token
    for folder in (path / "uploads", path / "runs"):
        folder.mkdir(parents=True, exist_ok=True)
    if not path.resolve().is_relative_to(base.resolve()):  # a symlink planted in workspaces/
        raise RetrainError("this workspace folder points outside the data root; it is refused")
    return Workspace(token, path)


# ---- Folders on the server ----------------------------------------------------------------------------------------

def resolve_server_folder(folder: str, root: Path | None = None) -> Path:
    """The real folder `folder` names under the data root, or RetrainError saying why it is refused.

    `folder` may be relative to the data root or absolute; after resolving symlinks it must still be
    inside the data root and not inside its workspaces/ (other sessions' uploads live there).
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
            and path.resolve().is_relative_to(root)]


# ---- Uploads ------------------------------------------------------------------------------------------------------

def safe_upload_name(name: str, default: str = "upload") -> str:
    """A file name made safe to write: the last path part only, odd characters replaced."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    return cleaned[:80] or default


def save_upload(workspace: Workspace, name: str, data: bytes) -> Path:
    """Write an uploaded file into the workspace's uploads/, named by its content so re-uploads reuse it."""
    digest = hashlib.sha256(data).hexdigest()[:12]
    path = workspace.uploads / f"{digest}-{safe_upload_name(name)}"
    if not path.exists():
        path.write_bytes(data)
    return path


def unpack_upload(workspace: Workspace, zip_path: Path) -> Path:
    """Unpack a saved zip next to it (once) through `safe_extract`, and return the dataset root inside."""
    target = zip_path.with_name(zip_path.stem + ".unpacked")
    if target.is_dir():
        return archive_root(target)
    return safe_extract(zip_path, target)


def dataset_from_zip(workspace: Workspace, zip_name: str, zip_bytes: bytes, csv_name: str | None = None,
                     csv_bytes: bytes | None = None) -> DatasetConfig:
    """The DatasetConfig of an uploaded zip (either folder layout), or of a labels CSV plus a zip of its images."""
    if not zip_name.lower().endswith(".zip"):
        raise RetrainError(f"{zip_name}: not a .zip file; zip the image folder and upload the .zip")
    root = unpack_upload(workspace, save_upload(workspace, zip_name, zip_bytes))
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

def start_run(workspace: Workspace, config: RunConfig) -> RunDir:
    """Write a new run folder with `config` (dataset from the workspace) and launch it in the background."""
    dataset = workspace.state().get("dataset")
    if not dataset:
        raise RetrainError("choose a dataset first (Dataset page)")
    config = dataclasses.replace(config, dataset=DatasetConfig(**dataset))
    name = time.strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    run = RunDir(workspace.runs / name)
    run.path.mkdir(parents=True)
    config.output.output_dir = str(run.path)
    config.save(run.config)
    launch_run(run.path)
    workspace.update_state(run=name)
    return run


def workspace_runs(workspace: Workspace) -> list[RunDir]:
    """This workspace's runs, newest first."""
    return list_runs(workspace.runs)


def find_run(workspace: Workspace, name: str | None) -> RunDir | None:
    """The run called `name` in this workspace (names from the URL or state are checked, not trusted)."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return None
    run = RunDir(workspace.runs / name)
    return run if run.config.exists() else None


def current_run(workspace: Workspace) -> RunDir | None:
    return find_run(workspace, workspace.state().get("run"))


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
            f"or on Configure set 'class size' to about {train[largest]} so augmented copies even them out "
            "(class weights, on by default, also help).")


def cell_images(misclassified: list[Any], table: Any, evaluated_on: str, true_label: str,
                predicted_label: str) -> list[dict[str, Any]]:
    """The images of one confusion-matrix cell: [{file, true_label, predicted_label, confidence}].

    Off the diagonal these are the report's misclassified images. On it, the report lists no files, so
    they are the evaluated split's images of that class that are not misclassified (confidence unknown).
    """
    if true_label != predicted_label:
        return [dataclasses.asdict(m) for m in misclassified
                if m.true_label == true_label and m.predicted_label == predicted_label]
    wrong = {m.file for m in misclassified}
    rows = table[(table["status"] == "ok") & (table["split"] == evaluated_on) & (table["label"] == true_label)]
    return [{"file": file, "true_label": true_label, "predicted_label": true_label, "confidence": None}
            for file in rows["file"] if file not in wrong]
