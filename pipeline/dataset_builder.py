"""Build and grow a dataset in the browser: classes and photos added one action at a time.

A built dataset is a normal folder of class folders (the rest of the engine reads it like any
other), kept under the workspace's uploads/ so it counts against the same quota, and marked as
the program's own by a hidden file in its root. Only marked folders are ever changed here: a
server folder or a sample is never written to — growing one makes an editable copy first.

The trade-off that shaped it: a photo is stored as `<its upload name, made safe>-<12 hex of its
sha256>.<format>`. The name is the user's (and comes back out of `export_zip` without the hash);
the hash makes two photos both called IMG_0001.jpg two files, and lets the same photo added twice
be found. The name lives in the file name rather than in a side file of original names: it is
written in the same atomic rename as the photo, so no crash, second tab or class rename can part
a photo from its name. A hostile upload name is made safe before it is joined to any path.
Every photo goes through `pipeline.images.decode_image` before it is kept, and every write is a
temp file renamed into place, so a crash mid-add leaves no half photo.

Nothing here imports Streamlit or TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shutil
import tempfile
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archive import safe_extract
from pipeline.config import DatasetConfig
from pipeline.dataset import SPLITS, load_dataset, load_overrides
from pipeline.errors import ImageProblem, RetrainError
from pipeline.files import display_name, has_hidden_part, is_hidden, write_bytes_atomic, write_json_atomic
from pipeline.images import decode_image
from pipeline.records import DamagedFile, read_json_record
from pipeline.splits import split_for_name
from pipeline.studio.datasets import dataset_config, dataset_name, overrides_path
from pipeline.studio.quotas import check_quota
from pipeline.studio.workspaces import Workspace

# The hidden file that marks a folder as a dataset this program made (or adopted) and may change.
MARKER = ".retrain-studio-dataset.json"
# Built datasets are uploads/built-<random hex>/ (the user's name for it lives in the marker).
BUILT_PREFIX = "built-"
# Longest class or dataset name, in characters; its UTF-8 must also fit one folder name (255 bytes on most disks).
MAX_NAME_CHARS = 100
_MAX_NAME_BYTES = 240
# File extension by the format that the first bytes show (the photo is decoded before it is kept anyway).
_SIGNATURES = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
)
# Hex digits of the content hash in a stored photo's name (48 bits: no two photos of one dataset share them).
HASH_CHARS = 12
# Longest stem kept of an upload's name, in UTF-8 bytes (a folder entry holds 255; the hash and format follow).
_MAX_STEM_BYTES = 150
# Characters a zip entry or a Windows, macOS or Linux file name cannot hold; each becomes "_".
_UNSAFE_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]')
# Upload extensions kept as typed when the content is of that format (".jpeg" stays ".jpeg").
_ALIASES = {".jpg": {".jpg", ".jpeg", ".jpe"}, ".png": {".png"}, ".gif": {".gif"}, ".bmp": {".bmp"}, ".webp": {".webp"}}
# Leftovers of an interrupted delete or zip import start with these (hidden, so no reader lists them).
_TRASH_PREFIX = ".deleting-"
_IMPORT_PREFIX = ".importing-"
# An import folder older than this is a crash's leftover, not another tab's import still running.
_STALE_SECONDS = 3600


@dataclass
class AddResult:
    """What adding photos did: the files kept (relative to the dataset root) and the ones refused, with why."""

    added: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)  # [{"file": upload name, "reason": message}]
    already_there: list[str] = field(default_factory=list)  # upload names whose photo was already in the class
    name: str = ""  # the class they were added to

    def summary(self) -> str:
        """What happened, in one line for the page: every drop gets one, so a drop that went nowhere shows."""
        lines = [f"Added {len(self.added)} photo(s) to class '{self.name}'."]
        if self.already_there:
            lines.append(f"{len(self.already_there)} were already there.")
        return " ".join(lines + [f"{item['file']}: {item['reason']}" for item in self.refused])


# ---- Names ------------------------------------------------------------------------------------------------------


def validate_name(name: str, what: str = "class name") -> str:
    """The name stripped of surrounding spaces, or RetrainError saying why it cannot name a folder.

    Any Unicode is fine; path separators, '.', '..', a leading '.', control characters and names
    too long for a folder are not.
    """
    text = unicodedata.normalize("NFC", (name or "").strip())
    if not text:
        raise RetrainError(f"the {what} is empty; type a name")
    if "/" in text or "\\" in text:
        raise RetrainError(f"{what} {text!r} contains a slash; use a name without '/' or '\\'")
    if is_hidden(text):
        raise RetrainError(
            f"{what} {text!r} starts with '.' (or is __MACOSX), which hides the folder (and '.' and "
            "'..' are not names); start it with a letter or digit"
        )
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in text):
        raise RetrainError(f"{what} {text!r} contains a control character (newline, tab, …); type it again without")
    if len(text) > MAX_NAME_CHARS or len(text.encode("utf-8")) > _MAX_NAME_BYTES:
        raise RetrainError(f"{what} is {len(text)} characters long; use at most {MAX_NAME_CHARS}")
    return text


# ---- Datasets ---------------------------------------------------------------------------------------------------


def new_dataset(workspace: Workspace, name: str) -> Path:
    """Create an empty dataset folder in the workspace (marked as the program's own) and return it."""
    name = validate_name(name, "dataset name")
    check_quota(workspace, 0, name)
    root = workspace.uploads / f"{BUILT_PREFIX}{secrets.token_hex(4)}"
    partial = Path(tempfile.mkdtemp(dir=workspace.uploads, prefix=".new-"))
    write_json_atomic(partial / MARKER, {"name": name, "created": time.time(), "kind": "built"})
    os.rename(partial, root)  # appears whole, marker included, or not at all
    return root


def built_datasets(workspace: Workspace) -> dict[str, Path]:
    """{name: root} of the datasets made in this workspace (built ones and adopted uploads), by name."""
    found = {}
    for marker in sorted(workspace.uploads.glob(f"*/{MARKER}")) + sorted(workspace.uploads.glob(f"*/*/{MARKER}")):
        root = marker.parent
        if is_editable(workspace, root):
            name = dataset_label(root)
            found[name if name not in found else f"{name} ({root.name})"] = root
    return dict(sorted(found.items()))


def is_editable(workspace: Workspace, root: str | Path) -> bool:
    """True for a folder inside the workspace's uploads that carries our marker (and is no link)."""
    root = Path(root)
    try:
        inside = root.resolve().is_relative_to(workspace.uploads.resolve()) and not root.is_symlink()
    except OSError:
        return False
    return inside and (root / MARKER).is_file() and not (root / MARKER).is_symlink()


def dataset_label(root: Path) -> str:
    """The user's name for a built dataset (from its marker), else the folder name."""
    try:
        marker = read_json_record(root / MARKER, "the folder name is used instead", default={})
    except DamagedFile:
        marker = {}
    name = marker.get("name")
    return name if isinstance(name, str) and name else root.name


def editable_root(workspace: Workspace, config: DatasetConfig) -> Path:
    """The folder to grow `config`'s dataset in: itself when this program made it, else a new editable copy.

    An uploaded zip of class folders was unpacked by this program, so it is adopted in place (marked).
    A server folder, a sample, a CSV-labelled or pre-split dataset is copied, photo by photo, through
    `add_photos` (checked and counted like any other photo) into a new built dataset.
    """
    root = Path(config.image_dir or "")
    if config.image_dir and not config.label_csv and is_editable(workspace, root):
        return root.resolve()
    dataset = load_dataset(config, check_images=False)
    uploaded = root.resolve().is_relative_to(workspace.uploads.resolve()) if config.image_dir else False
    if uploaded and dataset.layout == "class_folders" and not config.label_csv:
        write_json_atomic(
            root / MARKER, {"name": dataset_name(config, workspace), "created": time.time(), "kind": "adopted upload"}
        )
        return root.resolve()
    return copy_dataset(workspace, dataset, f"{dataset_name(config, workspace)} (copy)")


def copy_dataset(workspace: Workspace, dataset, name: str) -> Path:
    """A new built dataset holding every usable photo of `dataset` in its class (refused as a whole over quota)."""
    usable = dataset.usable()
    for label in usable["label"].unique():  # before anything is made: a label that cannot be a folder stops it all
        validate_name(label)
    check_quota(workspace, sum(os.path.getsize(path) for path in usable["path"]), name)
    root = new_dataset(workspace, name[:MAX_NAME_CHARS])
    for label, rows in usable.groupby("label"):
        add_class(workspace, root, label)
        add_photos(workspace, root, label, [(Path(path).name, Path(path).read_bytes()) for path in rows["path"]])
    return root


def current_root(workspace: Workspace) -> Path | None:
    """The workspace's current dataset folder when it can be changed here (built or adopted), else None."""
    config = dataset_config(workspace)
    if config is None or not config.image_dir or config.label_csv:
        return None
    return Path(config.image_dir).resolve() if is_editable(workspace, config.image_dir) else None


def content_version(config: DatasetConfig | None) -> int:
    """A number that changes whenever photos or classes of a built dataset change (0 for other datasets).

    The newest modification time of its folder and class folders: adding, removing or renaming
    touches one of them, so a page's cached copy of the dataset knows to read it again.
    """
    if config is None or not config.image_dir or not (Path(config.image_dir) / MARKER).is_file():
        return 0
    root = Path(config.image_dir)
    try:
        return max([root.stat().st_mtime_ns] + [path.stat().st_mtime_ns for path in root.iterdir() if path.is_dir()])
    except OSError:  # changed while looking: a fresh number still differs from the cached one
        return time.time_ns()


def shown_name(workspace: Workspace, config: DatasetConfig) -> str:
    """The name a user knows a dataset by: the one typed for a built dataset, else `workspace.dataset_name`'s."""
    if config.image_dir and not config.label_csv and is_editable(workspace, config.image_dir):
        return dataset_label(Path(config.image_dir))
    return dataset_name(config, workspace)


def dataset_config_for(root: Path) -> DatasetConfig:
    """The DatasetConfig that reads a built dataset (a plain folder of class folders)."""
    return DatasetConfig(image_dir=str(Path(root).resolve()))


# ---- Classes ----------------------------------------------------------------------------------------------------


def class_names(root: Path) -> list[str]:
    """The class folders of a built dataset, sorted (hidden leftovers are not classes)."""
    _clean_leftovers(root)
    return sorted(path.name for path in Path(root).iterdir() if path.is_dir() and not is_hidden(path.name))


def class_photos(root: Path, name: str) -> list[Path]:
    """The photos of one class, sorted by name (hidden temp files are not photos)."""
    folder = _class_folder(root, name)
    return sorted(path for path in folder.iterdir() if path.is_file() and not is_hidden(path.name))


def class_counts(root: Path) -> dict[str, int]:
    """{class: number of photo files} of a built dataset (before decoding; the dataset table has the final word)."""
    return {name: len(class_photos(root, name)) for name in class_names(root)}


def photo_split(file_name: str, config: DatasetConfig) -> str:
    """The split a photo of this name falls into with `config`'s percentages (see `pipeline.splits`)."""
    return split_for_name(file_name, config.validation_percentage, config.testing_percentage)


def add_class(workspace: Workspace, root: Path, name: str) -> str:
    """Create an empty class folder; a class of that name (any case) already there is refused."""
    root = _editable(workspace, root)
    name = validate_name(name)
    if clash := _existing_class(root, name):
        raise RetrainError(f"there is already a class '{clash}'; choose another name")
    (root / name).mkdir()
    return name


def rename_class(workspace: Workspace, root: Path, old: str, new: str, merge: bool = False) -> str:
    """Rename a class; onto an existing class only with `merge` (its photos join that class).

    A rename is one atomic folder rename. A merge moves photo by photo (each move atomic, none
    overwritten: same name means same content here), so a crash leaves every photo in one of the
    two classes and merging again finishes the job. Drop and relabel decisions follow the photos.
    """
    root = _editable(workspace, root)
    source = _class_folder(root, old)
    new = validate_name(new)
    clash = _existing_class(root, new)
    if clash and clash != old and not merge:
        raise RetrainError(f"there is already a class '{clash}'; choose another name, or merge '{old}' into it")
    if not clash or clash == old:  # a new name, or the same class with other capitals
        moves = {photo.name: photo.name for photo in class_photos(root, old)}
        if new != old:
            os.rename(source, root / new)
        _follow_decisions(workspace, root, old, new, moves)
        return new
    target, moves = root / clash, {}
    for photo in class_photos(root, old):
        destination = target / photo.name
        if destination.exists():
            if _same_content(photo, destination):
                photo.unlink()
                moves[photo.name] = destination.name
                continue
            destination = target / f"{photo.stem}-{secrets.token_hex(3)}{photo.suffix}"
        os.rename(photo, destination)
        moves[photo.name] = destination.name
    _remove_folder(source)
    _follow_decisions(workspace, root, old, clash, moves)
    return clash


def delete_class(workspace: Workspace, root: Path, name: str) -> int:
    """Delete a class and its photos; the number of photos deleted.

    The folder is first renamed to a hidden name (atomic), so a crash mid-delete never leaves half
    a class that the next run would train on.
    """
    root = _editable(workspace, root)
    count = len(class_photos(root, name))
    _remove_folder(_class_folder(root, name))
    return count


# ---- Photos -----------------------------------------------------------------------------------------------------


def add_photos(workspace: Workspace, root: Path, name: str, files: list[tuple[str, bytes]]) -> AddResult:
    """Check and add photos to a class: each is decoded first (bad ones refused with the reason), then
    written atomically as <upload name made safe>-<sha256 prefix>.<format>.

    A photo already in this class is reported, not added twice; one already in another class is
    refused (a photo can only be one thing). The whole batch is checked against the quota before
    anything is written.
    """
    root = _editable(workspace, root)
    folder = _class_folder(root, name)
    result, accepted = AddResult(name=folder.name), {}
    known = _photos_by_hash(root)
    for upload_name, data in files:
        shown = upload_name or "photo"
        try:
            stored = _checked_photo_name(upload_name, data)
        except ImageProblem as problem:
            result.refused.append({"file": shown, "reason": str(problem)})
            continue
        digest = _content_hash(stored)
        if digest in known and known[digest] != folder.name:
            result.refused.append({"file": shown, "reason": f"the same photo is already in class '{known[digest]}'"})
        elif digest in known:
            result.already_there.append(shown)
        else:
            accepted[stored] = data
            known[digest] = folder.name  # the same photo twice in one drop is kept once
    check_quota(workspace, sum(len(data) for data in accepted.values()), f"adding {len(accepted)} photo(s)")
    for stored, data in accepted.items():
        write_bytes_atomic(folder / stored, data)
        result.added.append(f"{folder.name}/{stored}")
    return result


def remove_photos(workspace: Workspace, root: Path, name: str, files: list[str]) -> int:
    """Delete photos (file names inside the class folder) from a class; the number deleted."""
    folder = _class_folder(_editable(workspace, root), name)
    present = {path.name: path for path in class_photos(root, name)}
    removed = 0
    for file in files:
        if file in present:  # only names listed in the folder: nothing the caller types can escape it
            present[file].unlink(missing_ok=True)
            removed += 1
    if removed:
        os.utime(folder)
    return removed


def add_zip(workspace: Workspace, root: Path, name: str, zip_name: str, zip_bytes: bytes) -> AddResult:
    """Add every image file of a zip (any folders inside) to one class, through `safe_extract` and `add_photos`.

    The zip is unpacked into a hidden folder of the dataset (so it counts against the quota while it
    exists) and removed afterwards, whatever happened.
    """
    root = _editable(workspace, root)
    _class_folder(root, name)
    check_quota(workspace, len(zip_bytes) + _declared_size(zip_bytes), zip_name)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=_IMPORT_PREFIX))
    try:
        zip_path = scratch / "upload.zip"
        zip_path.write_bytes(zip_bytes)
        unpacked = safe_extract(zip_path, scratch / "files")
        zip_path.unlink()
        files = sorted(
            path
            for path in unpacked.rglob("*")
            if path.is_file() and not path.is_symlink() and not has_hidden_part(path.relative_to(unpacked))
        )
        if not files:
            raise RetrainError(f"{zip_name}: the zip holds no files")
        return add_photos(
            workspace, root, name, [(path.relative_to(unpacked).as_posix(), path.read_bytes()) for path in files]
        )
    except RetrainError as error:
        if str(error).startswith(str(scratch)):  # safe_extract names the temp zip; the user knows their own
            raise RetrainError(zip_name + str(error)[len(str(scratch / "upload.zip")) :]) from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def export_zip(root: Path) -> bytes:
    """The dataset as zip bytes of <dataset name>/<class>/<photo>: what the user built is theirs to keep.

    Photos carry the names they were added with (see `export_names`); class and dataset names are made
    safe for any disk the zip is unpacked on.
    """
    top = safe_file_name(dataset_label(Path(root)), "dataset")
    buffer = io.BytesIO()
    # Photos are already compressed: stored, not deflated (same size, far less CPU).
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        classes = class_names(root)
        for name, folder in zip(classes, _unique([safe_file_name(name, "class") for name in classes]), strict=True):
            archive.writestr(f"{top}/{folder}/", b"")
            for photo, exported in export_names(class_photos(root, name)).items():
                archive.write(photo, f"{top}/{folder}/{exported}")
    return buffer.getvalue()


def export_names(photos: list[Path]) -> dict[Path, str]:
    """{photo: the name it leaves in}: the name it was added with (the content hash taken off), made safe, and
    unique within its class ignoring case — a repeat gets " (2)", " (3)"... in the order of the stored names,
    so the same dataset always exports the same names."""
    wanted = [safe_file_name(original_name(photo.name), "photo") for photo in sorted(photos)]
    return dict(zip(sorted(photos), _unique(wanted), strict=True))


def original_name(stored: str) -> str:
    """The name a photo was added with: `<stem>-<hash>.<ext>` → `<stem>.<ext>`; other names as they are."""
    stem, suffix = os.path.splitext(stored)
    head, _, digest = stem.rpartition("-")
    return head + suffix if head and _is_hash(digest) else stored


def safe_file_name(name: str, fallback: str) -> str:
    """`name` as one file or folder name any disk and zip tool takes: Unicode NFC, no path separators, control
    or reserved characters and undecodable bytes (each becomes "_"), no leading dots or spaces, no trailing
    dots or spaces, at most _MAX_STEM_BYTES of UTF-8 before the extension; `fallback` if nothing is left."""
    text = unicodedata.normalize("NFC", "".join("_" if "\ud800" <= char <= "\udfff" else char for char in name))
    text = _UNSAFE_CHARS.sub("_", text).strip(" ").lstrip(".").rstrip(". ")
    stem, suffix = os.path.splitext(text)
    if len(suffix) > 8 or not suffix[1:].isalnum():
        stem, suffix = text, ""
    stem = stem.encode("utf-8")[:_MAX_STEM_BYTES].decode("utf-8", "ignore").rstrip(". ")
    return (stem or fallback) + suffix


def split_counts(root: Path, config: DatasetConfig) -> dict[str, dict[str, int]]:
    """Photo files per class and split (by name, as training will split them): {class: {split: n}}."""
    counts = {}
    for name in class_names(root):
        counts[name] = dict.fromkeys(SPLITS, 0)
        for photo in class_photos(root, name):
            counts[name][photo_split(photo.name, config)] += 1
    return counts


# ---- Helpers ----------------------------------------------------------------------------------------------------


def _editable(workspace: Workspace, root: Path) -> Path:
    if not is_editable(workspace, root):
        raise RetrainError(
            f"{root} is not a dataset made in this workspace; only those can be changed "
            "(use 'Grow this dataset' to make an editable copy)"
        )
    return Path(root).resolve()


def _class_folder(root: Path, name: str) -> Path:
    """root/name when `name` is one of the dataset's classes (checked against the listing, never joined blindly)."""
    for path in Path(root).iterdir():
        if path.name == name and path.is_dir() and not path.is_symlink() and not is_hidden(name):
            return path
    raise RetrainError(f"there is no class '{name}' in this dataset (renamed or deleted in another tab?)")


def _existing_class(root: Path, name: str) -> str | None:
    """The class already called `name`, ignoring case (two folders differing only in case confuse people
    and case-insensitive disks alike)."""
    wanted = name.casefold()
    return next((existing for existing in class_names(root) if existing.casefold() == wanted), None)


def _checked_photo_name(upload_name: str, data: bytes) -> str:
    """<upload name made safe>-<sha256 prefix>.<format> for image bytes the one decode path accepts;
    ImageProblem otherwise. The upload's extension is kept when it names the content's format."""
    if not data:
        raise ImageProblem("empty file (0 bytes)")
    decode_image(data)
    extension = next((ext for signature, ext in _SIGNATURES if data.startswith(signature)), None)
    if extension is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        extension = ".webp"
    if extension is None:  # decodable, but the dataset reader would not list it (it sniffs these signatures)
        raise ImageProblem("image type not read in datasets; convert it to JPEG or PNG")
    # A zip's entries and some browsers give a path: only its last part is the name.
    base = safe_file_name(re.split(r"[\\/]", upload_name or "")[-1], "photo")
    stem, suffix = os.path.splitext(base)
    if suffix.lower() in _ALIASES[extension]:
        extension = suffix
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:HASH_CHARS]}{extension}"


def _content_hash(stored: str) -> str | None:
    """The sha256 prefix a stored photo's name carries: `<stem>-<hash>.<ext>`, or `<hash>.<ext>` as photos
    were first named; None for other names (an adopted upload's own files)."""
    stem = os.path.splitext(stored)[0]
    digest = stem.rpartition("-")[2]
    if _is_hash(digest):
        return digest
    return stem[:HASH_CHARS] if len(stem) == 20 and _is_hash(stem[:HASH_CHARS]) else None


def _is_hash(text: str) -> bool:
    return len(text) == HASH_CHARS and all(char in "0123456789abcdef" for char in text)


def _photos_by_hash(root: Path) -> dict[str, str]:
    """{content-hash prefix: class} for photos whose names carry one (adopted uploads' own names do not,
    and are not matched)."""
    found = {}
    for name in class_names(root):
        for photo in class_photos(root, name):
            if digest := _content_hash(photo.name):
                found.setdefault(digest, name)
    return found


def _unique(names: list[str]) -> list[str]:
    """`names` with repeats (ignoring case: Windows and macOS disks do) made unique as "a (2).jpg", in order."""
    seen, unique = set(), []
    for name in names:
        stem, suffix = os.path.splitext(name)
        candidate, number = name, 1
        while candidate.casefold() in seen:
            number += 1
            candidate = f"{stem} ({number}){suffix}"
        seen.add(candidate.casefold())
        unique.append(candidate)
    return unique


def _follow_decisions(workspace: Workspace, root: Path, old: str, new: str, moves: dict[str, str]) -> None:
    """Decisions (drop, relabel) about photos of class `old` follow them to class `new` ({old name: new name}
    in `moves`), and photos relabelled as `old` are now relabelled as `new`.

    Decisions are keyed by the photo's path in the dataset, so without this a rename would silently undo
    them. Every decisions file of this dataset in the workspace is updated; a damaged one is left for the
    page that reads it to report. (Runs keep their own copy, made when they were started.)
    """
    renamed = {display_name(f"{old}/{name}"): display_name(f"{new}/{moved}") for name, moved in moves.items()}
    for path in _decision_files(workspace, root):
        try:
            decisions = load_overrides(path)
        except DamagedFile:
            continue
        drop = {renamed.get(file, file) for file in decisions["drop"]}
        relabel = {}
        for file, label in decisions["relabel"].items():  # a photo's own decision wins over one merged onto it
            if file not in renamed or renamed[file] not in decisions["relabel"]:
                relabel[renamed.get(file, file)] = new if label == old else label
        if drop != set(decisions["drop"]) or relabel != decisions["relabel"]:
            write_json_atomic(path, {"drop": sorted(drop), "relabel": dict(sorted(relabel.items()))})


def _decision_files(workspace: Workspace, root: Path) -> set[Path]:
    """The workspace's decisions files of this dataset: the one for its folder, and the current dataset's
    when that is this folder under another spelling (an upload chosen before it was adopted)."""
    files = {overrides_path(workspace, dataset_config_for(root))}
    current = dataset_config(workspace)
    if (
        current
        and current.overrides
        and current.image_dir
        and not current.label_csv
        and Path(current.image_dir).resolve() == Path(root).resolve()
    ):
        files.add(Path(current.overrides))
    return {path for path in files if path.is_file()}


def _same_content(first: Path, second: Path) -> bool:
    return first.stat().st_size == second.stat().st_size and first.read_bytes() == second.read_bytes()


def _remove_folder(folder: Path) -> None:
    trash = folder.with_name(f"{_TRASH_PREFIX}{secrets.token_hex(4)}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _clean_leftovers(root: Path) -> None:
    """Finish deletes and drop imports that a crash interrupted (hidden folders this module named)."""
    for path in Path(root).iterdir():
        if not path.name.startswith((_TRASH_PREFIX, _IMPORT_PREFIX)) or not path.is_dir() or path.is_symlink():
            continue
        if path.name.startswith(_TRASH_PREFIX) or time.time() - path.stat().st_mtime > _STALE_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


def _declared_size(zip_bytes: bytes) -> int:
    """What a zip says it unpacks to (0 when it is not a zip: `safe_extract` says what is wrong)."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return 0
