"""Unpacking an uploaded zip of images without trusting it.

The app is a public demo, so a zip may come from anyone. Every entry name is checked before
anything is written (no `../`, absolute paths, drive letters or symlinks), size and file-count
caps are checked from the central directory first and then enforced again on the bytes actually
written (declared sizes can lie), and extraction goes to a temporary folder that is renamed into
place only when complete — a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline import settings
from pipeline.errors import RetrainError
from pipeline.files import MACOS_ZIP_FOLDER, file_sha256, is_hidden, megabytes
from pipeline.settings import cache_root

# Caps for one archive; the environment can raise or lower them for a given deployment.
# No dataset nests deeper; a tree 1,000 deep defeats Python's recursive mkdir and rmtree alike.
MAX_DEPTH = 64
# Archive clutter from macOS Finder, never part of a dataset.
_IGNORED_FILES = {".DS_Store"}
_CHUNK = 1 << 20
# General-purpose flag bit 11: the entry's name is UTF-8 (APPNOTE 4.4.4).
_UTF8_NAME_FLAG = 0x800


def default_workdir() -> Path:
    """Where uploaded zips are unpacked: $RETRAIN_STUDIO_CACHE/datasets or ~/.cache/retrain-studio/datasets."""
    return cache_root() / "datasets"


def unpack_dataset_zip(zip_path: str | Path, workdir: str | Path | None = None) -> Path:
    """Extract a dataset zip once into WORKDIR/<sha256 prefix> and return the dataset root inside.

    The folder is named by the zip's content, so loading the same zip again reuses it.
    """
    zip_path = Path(zip_path).expanduser()
    if not zip_path.is_file():
        raise RetrainError(f"{zip_path}: zip file not found")
    target = Path(workdir or default_workdir()) / file_sha256(zip_path)[:16]
    if target.is_dir():
        return archive_root(target)
    return safe_extract(zip_path, target)


def safe_extract(
    zip_path: str | Path, target_dir: str | Path, max_files: int | None = None, max_total_bytes: int | None = None
) -> Path:
    """Extract `zip_path` to `target_dir` (which must not exist yet) and return the dataset root in it.

    The root is the single top folder when the archive wraps everything in one, else `target_dir`.
    Raises RetrainError naming the offending entry for unsafe names, symlinks, encryption, too many
    files or bytes, or a file that is not a zip; on any failure nothing is left in `target_dir`.
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    if max_files is None:
        max_files = settings.MAX_ZIP_FILES.whole()
    if max_total_bytes is None:
        max_total_bytes = settings.MAX_UNZIPPED_MB.whole() << 20
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    with _open_zip(zip_path) as archive:
        entries = _checked_entries(zip_path, archive)
        _check_declared_totals(zip_path, entries, max_files, max_total_bytes)
        partial = Path(tempfile.mkdtemp(dir=target_dir.parent, prefix=f".{target_dir.name}.partial-"))
        try:
            _extract_entries(zip_path, archive, entries, partial, max_total_bytes)
            root_inside = archive_root(partial).relative_to(partial)
            os.rename(partial, target_dir)
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            if target_dir.is_dir():  # another load of the same zip finished first: use its copy
                return archive_root(target_dir)
            raise RetrainError(
                f"{zip_path}: cannot move the extracted files into {target_dir} ({err.strerror or err})"
            ) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return target_dir / root_inside


def archive_root(folder: str | Path) -> Path:
    """The dataset root of an extracted archive: its one top folder if it wraps folders, else `folder`.

    A lone top folder holding only files is a class, not a wrapper, so it is not unwrapped.
    """
    folder = Path(folder)
    top = [p for p in folder.iterdir() if not is_hidden(p.name)]
    if len(top) == 1 and top[0].is_dir() and any(p.is_dir() and not is_hidden(p.name) for p in top[0].iterdir()):
        return top[0]
    return folder


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise RetrainError(f"{zip_path}: zip file not found") from None
    except IsADirectoryError:
        raise RetrainError(f"{zip_path}: is a folder, not a zip; use --image_dir for folders") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as err:
        raise RetrainError(
            f"{zip_path}: not a readable zip archive ({err}); upload a .zip of the image "
            "folder made with a standard zip tool"
        ) from None


def _checked_entries(zip_path: Path, archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every entry to extract with its safe relative path; refuses the whole archive on any unsafe entry."""
    entries, seen = [], set()
    for info in archive.infolist():
        info.filename = _entry_name(info)
        relative = _safe_relative_path(zip_path, info.filename)
        if relative is None or relative.parts[0] == MACOS_ZIP_FOLDER or relative.name in _IGNORED_FILES:
            continue
        if relative in seen and not info.is_dir():  # the second would silently replace the first photo
            raise RetrainError(
                f"{zip_path}: two entries are named {info.filename!r}; make the zip again from the "
                "image folder with a standard zip tool"
            )
        seen.add(relative)
        if info.flag_bits & 0x1:
            raise RetrainError(
                f"{zip_path}: entry {info.filename!r} is encrypted (password-protected); "
                "make the zip again without a password"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise RetrainError(
                f"{zip_path}: entry {info.filename!r} is a symbolic link, which is refused; "
                "make the zip again from the real files (zip without --symlinks)"
            )
        entries.append((info, relative))
    return entries


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name as its author typed it.

    Zips whose names are not flagged as UTF-8 (the common `zip` tool, Windows Explorer) are decoded by
    zipfile as the legacy code page 437, which turns `café/` written as UTF-8 into `caf├⌐/` — and those
    names become the model's labels. Such bytes that are valid UTF-8 are read as UTF-8; anything else
    stays in code page 437, the zip format's own default. Only `filename` changes: zipfile still checks
    each local header against `orig_filename`.
    """
    if info.flag_bits & _UTF8_NAME_FLAG:
        return info.filename
    raw = info.filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def _safe_relative_path(zip_path: Path, name: str) -> PurePosixPath | None:
    """The entry's path relative to the target, or None for the archive's own "./" entry.

    Backslashes are read as separators (old Windows zip tools write them), so `..\\..\\x` is caught
    like `../../x`.
    """
    cleaned = name.replace("\\", "/")
    refuse = None
    if cleaned.startswith("/"):
        refuse = "is an absolute path"
    elif re.match(r"^[A-Za-z]:", cleaned):
        refuse = "starts with a drive letter"
    elif ".." in cleaned.split("/"):
        refuse = "points outside the folder it is extracted to (../)"
    elif "\x00" in cleaned:
        refuse = "has a NUL character in its name"
    elif cleaned.count("/") > MAX_DEPTH:
        refuse = f"is nested more than {MAX_DEPTH} folders deep"
    if refuse:
        raise RetrainError(
            f"{zip_path}: entry {name!r} {refuse}; this zip is unsafe to extract — make it again "
            "from the image folder with a standard zip tool"
        )
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def _check_declared_totals(
    zip_path: Path, entries: list[tuple[zipfile.ZipInfo, PurePosixPath]], max_files: int, max_total_bytes: int
) -> None:
    # Folder entries count too: each one costs an inode like a file does.
    if len(entries) > max_files:
        raise RetrainError(
            f"{zip_path}: {len(entries):,} files and folders, over the limit of {max_files:,}; "
            "upload a smaller dataset (or raise RETRAIN_STUDIO_MAX_ZIP_FILES)"
        )
    declared = sum(info.file_size for info, _ in entries)
    if declared > max_total_bytes:
        raise RetrainError(
            f"{zip_path}: unpacks to {megabytes(declared)}, over the limit of "
            f"{megabytes(max_total_bytes)}; "
            "upload a smaller dataset (or raise RETRAIN_STUDIO_MAX_UNZIPPED_MB)"
        )


def _extract_entries(
    zip_path: Path,
    archive: zipfile.ZipFile,
    entries: list[tuple[zipfile.ZipInfo, PurePosixPath]],
    destination: Path,
    max_total_bytes: int,
) -> None:
    """Stream every entry into `destination`, counting the bytes really written against the cap."""
    written = 0
    for info, relative in entries:
        path = destination.joinpath(*relative.parts)
        try:
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(path, "wb") as sink:
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    if written > max_total_bytes:
                        raise RetrainError(
                            f"{zip_path}: unpacks to more than {megabytes(max_total_bytes)} (entry "
                            f"{info.filename!r} is larger than declared); upload a smaller dataset"
                        )
                    sink.write(chunk)
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as err:
            raise RetrainError(
                f"{zip_path}: entry {info.filename!r} is damaged or uses an unsupported "
                f"compression ({err}); make the zip again"
            ) from None
        except OSError as err:
            raise RetrainError(
                f"{zip_path}: cannot write entry {info.filename!r} ({err.strerror or err}); "
                "check free disk space, or make the zip again if two entries share a name"
            ) from None
