"""Sources of labelled images → one plain table: path, file, label, split, sha256, status, problem.

Where the images come from (a folder of class folders, train/ val/ test/ folders of them, a zip
of either, or a CSV of labels next to a folder), how they are labelled, how they are split and
which ones are unusable are small steps run in that order; the result is a pandas table that
the CLI prints, the app shows and training filters with `usable()`.

The trade-off that shaped it: a file is an image by its content, not its name. Every candidate
is opened — its first 16 bytes are sniffed, and image files are read once, whole, for a sha256
that finds duplicates (and, with `check_images`, decoded by the same code training uses). That
costs a read of the dataset (about a second for 120 MB from cache) and buys a table that never
lists a README as a photo nor misses a PNG called `.jpg`. The user's files are never moved or
changed: per-image decisions (drop, relabel) live in a separate overrides file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.archive import unpack_dataset_zip
from pipeline.config import DatasetConfig
from pipeline.errors import DatasetError, ImageProblem, RetrainError
from pipeline.file_checks import CheckStore, FileCheck, content_signature, file_stamp
from pipeline.files import display_name, is_hidden, write_json_atomic
from pipeline.images import decode_image, load_image
from pipeline.near_duplicates import perceptual_hash
from pipeline.progress import ProgressCallback, ProgressMeter
from pipeline.records import read_overrides
from pipeline.splits import split_for_name, validate_percentages

SPLITS = ("train", "validation", "test")
COLUMNS = ["path", "file", "label", "split", "sha256", "status", "problem", "phash"]
# Fewer usable images than this in a class gets a warning (training still runs from 2).
RECOMMENDED_PER_CLASS = 20
# A file named like this but not an image inside is reported; any other non-image is ignored quietly.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# Photos in formats Retrain Studio does not read: skipped like other non-images, but counted in a warning.
UNSUPPORTED_IMAGE_EXTENSIONS = {
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
    ".jxl",
    ".dng",
    ".cr2",
    ".nef",
    ".arw",
    ".psd",
    ".svg",
    ".ico",
}
# Never images, so not even opened: the files that sit next to photos in real datasets.
NOT_IMAGE_EXTENSIONS = {
    ".txt",
    ".md",
    ".csv",
    ".tsv",
    ".json",
    ".xml",
    ".html",
    ".pdf",
    ".db",
    ".ini",
    ".py",
    ".yaml",
    ".yml",
    ".zip",
    ".tar",
    ".gz",
    ".tgz",
}
# Top-level folder names (any case) that mark a pre-split dataset, and the split each one holds.
SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "validation": "validation",
    "valid": "validation",
    "test": "test",
    "testing": "test",
}
# Accepted CSV header names, best first (compared lower-cased, spaces and dashes as underscores).
CSV_ID_COLUMNS = ("image_id", "image", "filename", "file_name", "file", "image_name", "image_path", "path", "img", "id")
CSV_LABEL_COLUMNS = ("label", "class", "category", "class_name", "labels", "target")
REFUSED_LINK = "symlink outside the dataset; refused"
SPECIAL_FILE = "not a regular file (a pipe, device or socket); refused"
NOT_AN_IMAGE = "not an image (content is not JPEG, PNG, BMP, GIF or WebP)"
# Files whose content is not an image are decoded for a precise message only when smaller than this.
_MAX_BYTES_TO_EXPLAIN = 64 << 20
# How many duplicate groups get a warning each before the rest are summed up.
_MAX_DUPLICATE_WARNINGS = 10


@dataclass
class Dataset:
    """One dataset as a table of its images, with what was found wrong or worth knowing about it."""

    root: Path  # folder the images are read from (extracted folder for a zip)
    table: pd.DataFrame  # one row per candidate image file, COLUMNS
    classes: list[str]  # sorted class names that have at least one usable image
    problems: list[dict]  # [{"file": relative path, "problem": message}]
    warnings: list[str]  # human-readable warnings
    duplicates: list[dict]  # [{"sha256": h, "files": [...], "labels": [...]}]
    layout: str = "class_folders"  # "class_folders", "pre_split" or "csv"
    source: str = ""  # the folder or zip as the user gave it
    signature: str = ""  # content signature of the listed files (file_checks.content_signature)
    files_checked: int = 0  # files opened by this load (the rest were trusted from the check store)

    def usable(self) -> pd.DataFrame:
        """The rows training may use (status "ok")."""
        return self.table[self.table["status"] == "ok"]

    def mark_problems(self, messages: dict[str, str]) -> None:
        """Mark usable images (by absolute path) as problems, e.g. ones that failed to decode later on."""
        rows = self.table["path"].isin(messages) & (self.table["status"] == "ok")
        if not rows.any():
            return
        self.table.loc[rows, "status"] = "problem"
        self.table.loc[rows, "problem"] = self.table.loc[rows, "path"].map(messages)
        self.problems.extend({"file": row.file, "problem": row.problem} for row in self.table[rows].itertuples())
        self.classes = sorted(self.usable()["label"].unique())

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Usable images per class and split: {"daisy": {"train": n, "validation": n, "test": n}}."""
        counts = {label: dict.fromkeys(SPLITS, 0) for label in self.classes}
        for (label, split), n in self.usable().groupby(["label", "split"]).size().items():
            counts.setdefault(label, dict.fromkeys(SPLITS, 0))[split] = int(n)
        return counts


@dataclass
class _Candidate:
    """A file that may be an image of `label`, before it is opened."""

    path: Path
    file: str  # relative to the dataset root, posix
    label: str
    split: str | None  # None: decided by the hash of the name
    expected_image: bool  # named like an image, or listed in the CSV: report it if it is not one
    problem: str = ""  # known without opening it (refused symlink, missing file)


def load_dataset(
    config: DatasetConfig,
    check_images: bool = True,
    workdir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    check_store: str | Path | bool = True,
) -> Dataset:
    """List, label, split and check the images of a dataset (folder, zip or CSV) into a Dataset.

    `check_images` decodes every image (slow, finds every broken file); without it, files are
    chosen by their first bytes only. Zips are extracted into `workdir` once, keyed by content.
    Verdicts are kept in a check store (`pipeline.file_checks`; True: the default folder under the
    cache, a path: that folder, False: none), so files unchanged since they were checked are not opened.
    """
    validate_percentages(config.validation_percentage, config.testing_percentage)
    root, source = _dataset_root(config, workdir)
    layout, candidates, warnings, class_folders = _list_candidates(config, root)
    store = None if check_store is False else CheckStore(root, None if check_store is True else check_store)
    rows, signature, opened = _examine_all(candidates, check_images, progress, store)
    warnings += _empty_folder_warnings(class_folders, rows) + _unsupported_type_warnings(candidates, rows)
    _assign_splits(rows, config.validation_percentage, config.testing_percentage)
    warnings += _apply_overrides(rows, load_overrides(config.overrides))
    _refuse_unprintable_labels(rows)
    table = _to_table(rows)
    usable = table[table["status"] == "ok"]
    classes = sorted(usable["label"].unique())
    duplicates = _find_duplicates(usable)
    warnings += _duplicate_warnings(duplicates, usable) + _class_size_warnings(usable, classes)
    warnings = [display_name(warning) for warning in warnings]
    problems = [
        {"file": file, "problem": display_name(problem)}
        for file, problem in table.loc[table["status"] == "problem", ["file", "problem"]].itertuples(index=False)
    ]
    return Dataset(root, table, classes, problems, warnings, duplicates, layout, source, signature, opened)


def _refuse_unprintable_labels(rows: list[dict[str, Any]]) -> None:
    """A class name with a newline or other control character would break labels.txt (one label a line)."""
    for row in rows:
        if row["status"] == "ok" and any(unicodedata.category(c) == "Cc" for c in row["label"]):
            row["status"] = "problem"
            row["problem"] = (
                f"class name {row['label']!r} contains a control character (newline, tab, ...); "
                "rename the folder or fix the label"
            )


# ---- Where the images are ---------------------------------------------------------------------------------------


def _dataset_root(config: DatasetConfig, workdir: str | Path | None) -> tuple[Path, str]:
    """The folder to read images from, and the path the user gave for it."""
    if config.image_dir and config.zip:
        raise RetrainError("both --image_dir and --zip are set; give one of them")
    if config.zip:
        return unpack_dataset_zip(config.zip, workdir).resolve(), str(config.zip)
    if not config.image_dir:
        flag = (
            "--label_csv needs --image_dir (or --zip): the folder its images are in"
            if config.label_csv
            else "no dataset given: set --image_dir (a folder of class folders) or --zip"
        )
        raise RetrainError(flag)
    folder = Path(config.image_dir).expanduser()
    if not folder.exists():
        raise RetrainError(f"{folder}: image folder not found")
    if not folder.is_dir():
        hint = "; use --zip for zip files" if folder.suffix.lower() == ".zip" else ""
        raise RetrainError(f"{folder}: not a folder{hint}")
    return folder.resolve(), str(config.image_dir)


def _list_candidates(config: DatasetConfig, root: Path) -> tuple[str, list[_Candidate], list[str], set[str]]:
    """(layout, candidate files, warnings, class folder names) for whichever layout `root` has."""
    if config.label_csv:
        return ("csv", *_list_from_csv(root, _labels_csv_path(config.label_csv, root)))
    if split_folders := _split_folders(root):
        return ("pre_split", *_list_pre_split(root, split_folders))
    return ("class_folders", *_list_class_folders(root, root, split=None))


def _labels_csv_path(label_csv: str, root: Path) -> Path:
    """The labels CSV as given, or inside the dataset (a zip may carry its own labels.csv)."""
    path = Path(label_csv).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute() and (root / path).is_file():
        return root / path
    raise RetrainError(f"{path}: labels CSV not found")


def _walk(root: Path, folder: Path, all_files: bool = False) -> list[tuple[Path, str]]:
    """(path, problem) of every file under `folder`, sorted; hidden names and obvious non-images skipped.

    Symlinks are followed only inside `root`: one pointing outside is listed with a problem, so a
    shared folder cannot be made to read the rest of the disk. Linked folders inside `root` are
    skipped because their files are listed where they really are. A folder that cannot be read
    is listed with a problem too. Iterative, so no nesting depth from a stranger's zip can overflow.
    """
    found, folders = [], [folder]
    while folders:
        current = folders.pop()
        try:
            with os.scandir(current) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as err:
            if current == folder:
                raise RetrainError(f"{folder}: cannot read the folder ({err.strerror or err})") from None
            found.append((current, f"cannot read the folder ({err.strerror or err})"))
            continue
        for entry in entries:
            if is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                found += _follow_link(root, path, all_files)
            elif entry.is_dir(follow_symlinks=False):
                folders.append(path)
            elif entry.is_file(follow_symlinks=False) and (all_files or _worth_opening(path)):
                found.append((path, ""))
            elif not entry.is_file(follow_symlinks=False) and (all_files or _worth_opening(path)):
                found.append((path, SPECIAL_FILE))  # a pipe, device or socket: listed as a problem, never opened
    return sorted(found)


def _follow_link(root: Path, path: Path, all_files: bool) -> list[tuple[Path, str]]:
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return [(path, "symlink loop; refused")]
    if not target.is_relative_to(root):
        return [(path, REFUSED_LINK)]
    if target.is_dir() or not (all_files or _worth_opening(path)):
        return []
    if target.exists() and not target.is_file():  # opening a pipe would wait for a writer forever
        return [(path, SPECIAL_FILE)]
    return [(path, "")]


def _worth_opening(path: Path) -> bool:
    return path.suffix.lower() not in NOT_IMAGE_EXTENSIONS and path.name != "Thumbs.db"


def _split_folders(root: Path) -> dict[str, Path]:
    """{"train": folder, "validation": folder, "test": folder} when `root` is pre-split, else {}."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        split = SPLIT_FOLDERS.get(path.name.lower())
        if split and path.is_dir():
            found.setdefault(split, []).append(path)
    if "train" not in found or len(found) < 2:
        return {}
    for split, folders in found.items():
        if len(folders) > 1:
            names = " and ".join(f"{folder.name}/" for folder in folders)
            raise DatasetError(f"{root}: both {names} hold {split} images; merge them into one folder")
    return {split: folders[0] for split, folders in found.items()}


def _list_class_folders(root: Path, folder: Path, split: str | None) -> tuple[list[_Candidate], list[str], set[str]]:
    """Candidates under folder/<class>/... (any depth), labelled by the class folder's name."""
    candidates, loose = [], 0
    for path, problem in _walk(root, folder):
        parts = path.relative_to(folder).parts
        if len(parts) == 1 and not (problem and path.is_dir()):  # a refused class folder is still a class
            loose += bool(problem) or _could_be_image(path)
            continue
        candidates.append(
            _Candidate(
                path,
                path.relative_to(root).as_posix(),
                parts[0],
                split,
                path.suffix.lower() in IMAGE_EXTENSIONS,
                problem,
            )
        )
    warnings = (
        [
            f"{loose} image(s) directly in {folder} are not in a class folder and are ignored; move them into "
            "a folder named after their class"
        ]
        if loose
        else []
    )
    class_folders = {
        display_name(p.name) for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name) and p.name != "__MACOSX"
    }
    return candidates, warnings, class_folders


def _list_pre_split(root: Path, split_folders: dict[str, Path]) -> tuple[list[_Candidate], list[str], set[str]]:
    """Candidates of a train/ val/ test/ layout; each image keeps the split its folder gives it."""
    candidates, warnings, class_folders = [], [], set()
    for split, folder in sorted(split_folders.items()):
        found, found_warnings, found_folders = _list_class_folders(root, folder, split)
        candidates += found
        warnings += found_warnings
        class_folders |= found_folders
    used = {folder.name for folder in split_folders.values()}
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.name not in used and not is_hidden(path.name):
            warnings.append(
                f"folder '{path.name}' is ignored: a pre-split dataset is read from train/, val/ and test/ only"
            )
    return candidates, warnings, class_folders


def _list_from_csv(root: Path, csv_path: Path) -> tuple[list[_Candidate], list[str], set[str]]:
    """Candidates named by a labels CSV; `image_id` may omit the extension or include sub-folders."""
    rows, warnings = _read_labels_csv(csv_path)
    files = {path.relative_to(root).as_posix(): (path, problem) for path, problem in _walk(root, root, all_files=True)}
    index = _id_index(files)
    candidates, listed, repeated = [], set(), 0
    for line, image_id, label in rows:
        key = _normalise_id(image_id)
        relative, problem = _find_listed_file(key, files, index)
        if (relative or key) in listed:
            repeated += 1
            continue
        listed.add(relative or key)
        if relative is None:
            problem = problem or f"listed in {csv_path.name} row {line} but no such file in {root}"
            candidates.append(_Candidate(root / key, key, label, None, True, problem))
        else:
            candidates.append(_Candidate(files[relative][0], relative, label, None, True, files[relative][1]))
    if repeated:
        warnings.append(
            f"{repeated} row(s) of {csv_path.name} name an image listed earlier; only the first "
            "row of each image is used"
        )
    unlisted = sum(
        1
        for relative, (path, _) in files.items()
        if relative not in listed and _worth_opening(path) and _could_be_image(path)
    )
    if unlisted:
        warnings.append(f"{unlisted} image(s) in {root} are not listed in {csv_path.name} and are ignored")
    return candidates, warnings, set()


def _id_index(files: dict[str, Any]) -> dict[str, list[str]]:
    """Image files by the ids a CSV may use for them: path without extension, file name, file name without extension.

    Each list is ordered .jpg first, then .jpeg, .png, ... for ids that match files of several types.
    """
    index: dict[str, list[str]] = {}
    for relative in sorted(files, key=_extension_rank):
        stem, extension = os.path.splitext(relative)
        if extension.lower() not in IMAGE_EXTENSIONS:
            continue
        name = relative.rsplit("/", 1)[-1]
        for key in dict.fromkeys([stem, name, os.path.splitext(name)[0]]):
            index.setdefault(key, []).append(relative)
    return index


def _find_listed_file(key: str, files: dict[str, Any], index: dict[str, list[str]]) -> tuple[str | None, str]:
    """(the file a CSV id names, or None; why not when it is ambiguous)."""
    if key in files:
        return key, ""
    matches = index.get(key, [])
    folders = sorted({match.rsplit("/", 1)[0] if "/" in match else "." for match in matches})
    if len(folders) > 1:
        return None, f"'{key}' matches files in several folders ({', '.join(matches[:3])}); give its folder too"
    return (matches[0] if matches else None), ""


def _read_labels_csv(csv_path: Path) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(row number, image id, label) of each data row, and warnings about rows skipped."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except UnicodeDecodeError:
        raise RetrainError(f"{csv_path}: not UTF-8 text; save it as 'CSV UTF-8'") from None
    except OSError as err:
        raise RetrainError(f"{csv_path}: cannot read the labels CSV ({err.strerror or err})") from None
    header_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if not header or not any(name.strip() for name in header):
        raise RetrainError(f"{csv_path}: the labels CSV is empty; it needs a header row image_id,label")
    names = [name.strip().lower().replace(" ", "_").replace("-", "_") for name in header]
    id_column = next((names.index(name) for name in CSV_ID_COLUMNS if name in names), None)
    label_column = next((names.index(name) for name in CSV_LABEL_COLUMNS if name in names), None)
    if id_column is None or label_column is None:
        found = ", ".join(name.strip() for name in header)
        raise RetrainError(
            f"{csv_path}: needs an image column and a label column (header image_id,label); found columns: {found}"
        )
    rows, incomplete = [], 0
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue
        image_id = fields[id_column].strip() if id_column < len(fields) else ""
        label = fields[label_column].strip() if label_column < len(fields) else ""
        if image_id and label:
            rows.append((reader.line_num, image_id, label))
        else:
            incomplete += 1
    warnings = (
        [f"{incomplete} row(s) of {csv_path.name} have no image id or no label and are skipped"] if incomplete else []
    )
    return rows, warnings


def _normalise_id(image_id: str) -> str:
    key = image_id.replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _extension_rank(relative: str) -> tuple[int, str]:
    """Sort key that prefers .jpg, then .jpeg, .png, ... when an id without extension matches several files."""
    order = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"]
    extension = os.path.splitext(relative)[1].lower()
    return (order.index(extension) if extension in order else len(order), relative)


# ---- Which candidates are images --------------------------------------------------------------------------------


def _examine_all(
    candidates: list[_Candidate], check_images: bool, progress: ProgressCallback | None, store: CheckStore | None
) -> tuple[list[dict[str, Any]], str, int]:
    """(rows, content signature, files opened): open every candidate the store cannot vouch for, once.

    Opened in threads: reading, hashing and Pillow all release the GIL.
    """
    stamps = {candidate.file: None if candidate.problem else file_stamp(candidate.path) for candidate in candidates}
    checks: dict[str, FileCheck | None] = {
        candidate.file: store.lookup(candidate.file, stamps[candidate.file], check_images) if store else None
        for candidate in candidates
        if not candidate.problem
    }
    to_open = [candidate for candidate in candidates if not candidate.problem and checks[candidate.file] is None]
    meter = ProgressMeter("checking", len(to_open), progress)
    if candidates and not to_open:  # a stage with nothing to do says so, rather than "0/0"
        meter.report("all files unchanged since they were checked")
    workers = min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for candidate, check in zip(to_open, pool.map(lambda c: _examine(c, check_images), to_open), strict=True):
            meter.advance()
            checks[candidate.file] = check
    if store is not None:
        store.save({file: (stamps[file], check) for file, check in checks.items() if check is not None})
    rows = []
    for candidate in candidates:
        check = FileCheck(True, "", candidate.problem, False) if candidate.problem else checks[candidate.file]
        if check.is_image:  # names shown and stored as text: bytes that are not UTF-8 become \xNN
            rows.append(
                {
                    "path": str(candidate.path),
                    "file": display_name(candidate.file),
                    "label": display_name(candidate.label),
                    "split": candidate.split or "",
                    "sha256": check.sha256,
                    "status": "problem" if check.problem else "ok",
                    "problem": display_name(check.problem),
                    "phash": check.phash,
                }
            )
    _refuse_names_shown_alike(candidates, rows)
    return rows, content_signature(stamps), len(to_open)


def _refuse_names_shown_alike(candidates: list[_Candidate], rows: list[dict[str, Any]]) -> None:
    """Two class folders whose names show the same (the literal text `c\\xff` and the byte 0xFF after `c`)
    would become one class and mix their photos: both become problems, to be renamed."""
    raw_labels: dict[str, set[str]] = {}
    for candidate in candidates:
        raw_labels.setdefault(display_name(candidate.label), set()).add(candidate.label)
    clashing = {shown for shown, raw in raw_labels.items() if len(raw) > 1}
    for row in rows:
        if row["label"] in clashing:
            row["status"] = "problem"
            row["problem"] = (
                f"two class folders are both shown as '{row['label']}' (one name has bytes that are "
                "not UTF-8); rename one of them so their photos are not mixed"
            )


def _examine(candidate: _Candidate, check_images: bool) -> FileCheck:
    """What one candidate is (belongs in the table, sha256, problem, perceptual hash), reading the file once."""
    try:
        with _open_regular(candidate.path) as handle:
            head = handle.read(16)
            if not _has_image_signature(head):
                return FileCheck(
                    candidate.expected_image,
                    "",
                    _why_not_an_image(candidate.path) if candidate.expected_image else "",
                    check_images,
                )
            data = head + handle.read()
    except _NotRegular:
        return FileCheck(True, "", SPECIAL_FILE, check_images)
    except OSError as err:  # not stored as decoded: a permission fixed later changes no stat we compare
        return FileCheck(candidate.expected_image, "", f"cannot read the file ({err.strerror or err})", False)
    sha256 = hashlib.sha256(data).hexdigest()
    if not check_images:
        return FileCheck(True, sha256, "", False)
    try:
        # What load_image does, without reading the file a second time; the hash is taken while it is decoded.
        perceptual = decode_image(data, finish=perceptual_hash)
    except ImageProblem as problem:
        return FileCheck(True, sha256, str(problem), True)
    return FileCheck(True, sha256, "", True, perceptual)


class _NotRegular(OSError):
    pass


def _open_regular(path: Path):
    """Open a file for reading only if it is a regular file; a pipe opened without O_NONBLOCK waits forever
    (one swapped in after the listing included)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotRegular(path)
    return os.fdopen(fd, "rb")


def _assign_splits(rows: list[dict[str, Any]], validation_percentage: float, testing_percentage: float) -> None:
    """Give every row without a split folder its split by the hash of its file name."""
    for row in rows:
        if not row["split"]:
            row["split"] = split_for_name(Path(row["file"]).name, validation_percentage, testing_percentage)


def _has_image_signature(head: bytes) -> bool:
    """True when the first bytes are those of JPEG, PNG, BMP, GIF or WebP."""
    return head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    )


def _could_be_image(path: Path) -> bool:
    """Named like an image, or starting like one (for counting images that are ignored)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as handle:
            return _has_image_signature(handle.read(16))
    except OSError:
        return False


def _why_not_an_image(path: Path) -> str:
    """The decoder's own message for a file that does not start like an image (empty, TIFF, text...)."""
    try:
        if path.stat().st_size <= _MAX_BYTES_TO_EXPLAIN:
            load_image(path)
    except ImageProblem as problem:
        return str(problem)
    except OSError:
        pass
    return NOT_AN_IMAGE


# ---- Decisions, duplicates and warnings -------------------------------------------------------------------------


def load_overrides(path: str | Path | None) -> dict:
    """The per-image decisions {"drop": [file, ...], "relabel": {file: label}}; empty when there are none yet."""
    if path is None:
        return {"drop": [], "relabel": {}}
    return read_overrides(path)


def save_override(path: str | Path, file: str, drop: bool = False, label: str | None = None) -> None:
    """Record one image's decision (drop it, or give it a new label); neither removes its decision."""
    if drop and label:
        raise RetrainError(f"{file}: choose to drop it or to relabel it, not both")
    overrides = load_overrides(path)
    drops = set(overrides["drop"]) - {file}
    relabel = {k: v for k, v in overrides["relabel"].items() if k != file}
    if drop:
        drops.add(file)
    elif label:
        relabel[file] = label
    write_json_atomic(path, {"drop": sorted(drops), "relabel": dict(sorted(relabel.items()))})


def _apply_overrides(rows: list[dict[str, Any]], overrides: dict) -> list[str]:
    """Relabel and drop rows as the user decided (the split stays by file name); warn about stale decisions."""
    drops, relabel = set(overrides["drop"]), overrides["relabel"]
    applied = set()
    for row in rows:
        if row["file"] in relabel:
            row["label"] = relabel[row["file"]]
            applied.add(row["file"])
        if row["file"] in drops:
            row["status"] = "dropped"
            applied.add(row["file"])
    stale = sorted((drops | set(relabel)) - applied)
    return (
        [f"{len(stale)} override(s) name files no longer in the dataset (e.g. {stale[0]}); they are ignored"]
        if stale
        else []
    )


def _to_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    # "path" stays a Python object column: a file name's bytes that are not UTF-8 (kept as lone surrogates,
    # so the file can still be opened) cannot go into pandas' Arrow-backed strings.
    table = pd.DataFrame(rows, columns=COLUMNS, dtype=object)
    table = table.astype({column: str for column in COLUMNS if column != "path"})
    return table.sort_values(["label", "file"], kind="stable").reset_index(drop=True)


def _empty_folder_warnings(class_folders: set[str], rows: list[dict[str, Any]]) -> list[str]:
    labels = {row["label"] for row in rows}
    return [f"folder '{name}' has no images and is ignored" for name in sorted(class_folders - labels)]


def _unsupported_type_warnings(candidates: list[_Candidate], rows: list[dict[str, Any]]) -> list[str]:
    """One warning for photos skipped because of their format (an iPhone's .heic, a scanner's .tif)."""
    listed = {row["file"] for row in rows}
    skipped = sorted(
        {
            Path(c.file).suffix.lower()
            for c in candidates
            if c.file not in listed and Path(c.file).suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS
        }
    )
    count = sum(1 for c in candidates if c.file not in listed and Path(c.file).suffix.lower() in skipped)
    return (
        [
            f"{count} file(s) in formats that are not read ({', '.join(skipped)}) are ignored; convert them to "
            "JPEG or PNG to use them"
        ]
        if count
        else []
    )


def _find_duplicates(usable: pd.DataFrame) -> list[dict]:
    """Groups of usable images with the same content, in file order."""
    repeated = usable[usable["sha256"].duplicated(keep=False)]
    groups = [
        {"sha256": sha256, "files": list(group["file"]), "labels": list(group["label"])}
        for sha256, group in repeated.groupby("sha256", sort=False)
    ]
    return sorted(groups, key=lambda group: group["files"][0])


def _duplicate_warnings(duplicates: list[dict], usable: pd.DataFrame) -> list[str]:
    across = [group for group in duplicates if len(set(group["labels"])) > 1]
    warnings = []
    for group in across[:_MAX_DUPLICATE_WARNINGS]:
        classes = sorted(set(group["labels"]))
        warnings.append(
            f"same image in classes {' and '.join(classes)}: {', '.join(group['files'])} — it can only "
            "be one; delete or relabel one"
        )
    if len(across) > _MAX_DUPLICATE_WARNINGS:
        warnings.append(
            f"... and {len(across) - _MAX_DUPLICATE_WARNINGS} more images are in more than one class (see duplicates)"
        )
    same_class = [group for group in duplicates if len(set(group["labels"])) == 1]
    if same_class:
        copies = sum(len(group["files"]) - 1 for group in same_class)
        example = " = ".join(same_class[0]["files"][:2])
        warnings.append(
            f"{copies} image(s) are exact copies of another image in the same class (e.g. {example}); "
            "copies count twice in training — delete or drop them"
        )
    split_of = dict(zip(usable["file"], usable["split"], strict=True))
    leaking = [group for group in duplicates if len({split_of[file] for file in group["files"]}) > 1]
    if leaking:
        example = " = ".join(leaking[0]["files"][:2])
        warnings.append(
            f"{len(leaking)} image(s) have an exact copy in another split (e.g. {example}); "
            "validation and test scores will look better than they are"
        )
    return warnings


def _class_size_warnings(usable: pd.DataFrame, classes: list[str]) -> list[str]:
    counts = usable.groupby("label").size()
    splits_in_use = set(usable["split"])
    warnings = []
    for label in classes:
        if counts[label] < RECOMMENDED_PER_CLASS:
            warnings.append(
                f"class '{label}' has only {counts[label]} usable images; {RECOMMENDED_PER_CLASS} or "
                "more per class is recommended"
            )
        in_class = set(usable.loc[usable["label"] == label, "split"])
        missing = [split for split in ("validation", "test") if split in splits_in_use and split not in in_class]
        if missing:
            warnings.append(
                f"class '{label}' has no {' or '.join(missing)} images, so its accuracy there cannot "
                "be measured; add images to it"
            )
    return warnings


# ---- Verdicts ---------------------------------------------------------------------------------------------------


def require_trainable(dataset: Dataset) -> None:
    """Raise DatasetError saying what to fix when the dataset cannot be trained on as it is."""
    where = dataset.source or str(dataset.root)
    table = dataset.table
    if table.empty:
        raise DatasetError(f"no images found in {where}; {_expected_layout(dataset)}")
    if not dataset.classes:
        n_problems = int((table["status"] == "problem").sum())
        raise DatasetError(
            f"no usable images in {where}: {n_problems} file(s) have problems and the rest are "
            "dropped; see the problems list"
        )
    counts = dataset.class_counts()
    for label in sorted(set(table.loc[table["status"] != "dropped", "label"])):
        usable = sum(counts.get(label, {}).values())
        if usable < 2:
            raise DatasetError(
                f"class '{label}' has {usable} usable image(s); each class needs at least 2 "
                f"({RECOMMENDED_PER_CLASS} or more is recommended) — add images, or remove or "
                "drop the class"
            )
    if len(dataset.classes) == 1:
        only = dataset.classes[0]
        raise DatasetError(
            f"only one class ('{only}') in {where}; a classifier needs at least two — add a "
            f"folder of images for another class (if '{only}' holds class folders, use it as the "
            "dataset folder instead)"
        )
    for label in dataset.classes:
        if counts[label]["train"] == 0:
            where_to_add = (
                f"add some to train/{label}/"
                if dataset.layout == "pre_split"
                else "add more images to it (its few images all fell in validation or test)"
            )
            raise DatasetError(f"class '{label}' has no training images; {where_to_add}")


def _expected_layout(dataset: Dataset) -> str:
    if dataset.layout == "csv":
        return f"the labels CSV lists no images; expected rows of image_id,label naming files in {dataset.root}"
    return (
        f"expected one folder per class of images (e.g. {dataset.root}/daisy/1.jpg), or train/ and val/ "
        "folders of class folders"
    )


def inspect_report(dataset: Dataset) -> dict:
    """The summary `python -m pipeline inspect` prints as JSON: counts, problems, warnings, duplicates."""
    return {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "classes": dataset.class_counts(),
        "usable": int(len(dataset.usable())),
        "problems": dataset.problems,
        "warnings": dataset.warnings,
        "duplicates": dataset.duplicates,
    }
