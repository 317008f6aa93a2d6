"""Uploaded files: saved into the workspace's uploads/ by content, within the quota, and zips unpacked next to
them by `pipeline.archive.safe_extract`, never by hand."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

from pipeline.archive import archive_root, safe_extract
from pipeline.config import DatasetConfig
from pipeline.errors import RetrainError
from pipeline.files import write_bytes_atomic
from pipeline.studio.quotas import check_quota
from pipeline.studio.workspaces import Workspace


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


def _declared_size(zip_path: Path) -> int:
    """What a zip says it unpacks to (0 for a file that is not a zip: safe_extract says what is wrong)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return 0


def dataset_from_zip(
    workspace: Workspace, zip_name: str, zip_bytes: bytes, csv_name: str | None = None, csv_bytes: bytes | None = None
) -> DatasetConfig:
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
