"""Unpacking uploaded zips: unsafe entries, caps and damaged archives are refused, and nothing is left behind."""

import re
import stat
import struct
import zipfile

import pytest
from imagegen import make_class_folders, make_zip

from pipeline import archive
from pipeline.archive import archive_root, safe_extract, unpack_dataset_zip
from pipeline.errors import RetrainError


def zip_of(path, entries):
    """A zip of {name: bytes} entries, names stored exactly as given."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, data in entries.items():
            handle.writestr(zipfile.ZipInfo(name), data)
    return path


def refused(tmp_path, zip_path, match, **caps):
    """Extraction fails with `match` and leaves the output folder exactly as empty as it was."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(RetrainError, match=match):
        safe_extract(zip_path, out / "dataset", **caps)
    assert list(out.iterdir()) == []


def patch_all(data: bytes, signature: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one field in every zip header with `signature` (local or central directory)."""
    data = bytearray(data)
    start = data.find(signature)
    while start != -1:
        struct.pack_into(fmt, data, start + offset, value)
        start = data.find(signature, start + 1)
    return bytes(data)


# ---- Good archives ----------------------------------------------------------------------------------------------


def test_zip_with_one_top_folder_returns_that_folder(tmp_path):
    zip_path = make_zip(
        make_class_folders(tmp_path / "src", {"red": 2, "blue": 2}),
        tmp_path / "d.zip",
        top_folder="flowers",
        extra={"__MACOSX/flowers/._red": b"junk", "flowers/.DS_Store": b"x"},
    )
    root = safe_extract(zip_path, tmp_path / "out")
    assert root == tmp_path / "out" / "flowers"
    assert sorted(p.name for p in root.iterdir()) == ["blue", "red"]
    assert not (tmp_path / "out" / "__MACOSX").exists() and not (root / ".DS_Store").exists()


def test_zip_without_top_folder_returns_the_target(tmp_path):
    zip_path = make_zip(make_class_folders(tmp_path / "src", {"red": 2, "blue": 2}), tmp_path / "d.zip")
    assert safe_extract(zip_path, tmp_path / "out") == tmp_path / "out"
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 4


def test_single_folder_of_files_is_a_class_not_a_wrapper(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.jpg").write_bytes(b"x")
    assert archive_root(tmp_path) == tmp_path


def test_windows_backslash_names_become_folders(tmp_path):
    zip_path = zip_of(tmp_path / "w.zip", {"red\\1.jpg": b"a", "blue\\1.jpg": b"b"})
    root = safe_extract(zip_path, tmp_path / "out")
    assert (root / "red" / "1.jpg").read_bytes() == b"a"


def zip_with_raw_names(path, names: dict[bytes, bytes]):
    """A zip whose entry names are the given raw bytes with the UTF-8 flag off, as the common `zip` tool writes.

    Python's writer flags every non-ASCII name as UTF-8, so ASCII stand-ins of the same length are written
    first and then swapped for the raw bytes in both headers (names are outside the CRC).
    """
    stand_ins = {raw: bytes([ord("A") + index]) * len(raw) for index, raw in enumerate(names)}
    zip_of(path, {stand_in.decode(): names[raw] for raw, stand_in in stand_ins.items()})
    data = path.read_bytes()
    for raw, stand_in in stand_ins.items():
        assert data.count(stand_in) == 2
        data = data.replace(stand_in, raw)
    path.write_bytes(data)
    return path


def test_unflagged_utf8_names_are_read_as_utf8(tmp_path):
    zip_path = zip_with_raw_names(tmp_path / "u.zip", {"café/1.jpg".encode(): b"a", "東京/1.jpg".encode(): b"b"})
    root = safe_extract(zip_path, tmp_path / "out")
    assert sorted(p.name for p in root.iterdir()) == ["café", "東京"]
    assert (root / "café" / "1.jpg").read_bytes() == b"a"


def test_unflagged_names_that_are_not_utf8_stay_in_code_page_437(tmp_path):
    zip_path = zip_with_raw_names(tmp_path / "l.zip", {b"caf\x82/1.jpg": b"a", b"tea/1.jpg": b"b"})
    root = safe_extract(zip_path, tmp_path / "out")
    assert sorted(p.name for p in root.iterdir()) == ["café", "tea"]


def test_unflagged_utf8_name_escaping_the_target_is_still_refused(tmp_path):
    zip_path = zip_with_raw_names(tmp_path / "e.zip", {"../café.jpg".encode(): b"a"})
    refused(tmp_path, zip_path, "outside the folder")


def test_two_entries_with_one_name_are_refused(tmp_path):
    zip_path = tmp_path / "dup.zip"
    with zipfile.ZipFile(zip_path, "w") as handle, pytest.warns(UserWarning, match="Duplicate name"):
        handle.writestr("a/x.jpg", b"first")
        handle.writestr("a/x.jpg", b"second")
    refused(tmp_path, zip_path, "two entries are named")


def test_same_zip_is_unpacked_once(tmp_path, monkeypatch):
    zip_path = make_zip(
        make_class_folders(tmp_path / "src", {"red": 2, "blue": 2}), tmp_path / "d.zip", top_folder="top"
    )
    first = unpack_dataset_zip(zip_path, tmp_path / "work")
    monkeypatch.setattr(archive, "safe_extract", lambda *args, **kwargs: pytest.fail("extracted again"))
    assert unpack_dataset_zip(zip_path, tmp_path / "work") == first
    assert first.name == "top" and len(first.parent.name) == 16


def test_unpacking_into_a_folder_another_load_just_finished_uses_that_one(tmp_path):
    zip_path = make_zip(make_class_folders(tmp_path / "src", {"red": 2, "blue": 2}), tmp_path / "d.zip")
    first = safe_extract(zip_path, tmp_path / "out" / "same")
    assert safe_extract(zip_path, tmp_path / "out" / "same") == first
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["same"]


def test_missing_zip_names_the_path(tmp_path):
    with pytest.raises(RetrainError, match="nowhere.zip: zip file not found"):
        unpack_dataset_zip(tmp_path / "nowhere.zip", tmp_path / "work")


# ---- Unsafe or damaged archives: refused, nothing left behind ---------------------------------------------------


@pytest.mark.parametrize(
    "name, why",
    [
        ("../evil.txt", r"outside the folder"),
        ("red/../../evil.txt", r"outside the folder"),
        ("..\\..\\evil.txt", r"outside the folder"),
        ("/etc/evil.txt", r"absolute path"),
        ("C:/Windows/evil.txt", r"drive letter"),
        ("C:\\evil.txt", r"drive letter"),
    ],
)
def test_entry_escaping_the_target_is_refused(tmp_path, name, why):
    zip_path = zip_of(tmp_path / "slip.zip", {"red/1.jpg": b"fine", name: b"evil"})
    refused(tmp_path, zip_path, re.escape(f"entry {name!r}") + ".*" + why)
    assert not (tmp_path / "evil.txt").exists()


def test_absurdly_deep_nesting_is_refused(tmp_path):
    zip_path = zip_of(tmp_path / "deep.zip", {"red/1.jpg": b"x", "/".join(["d"] * 1100) + "/deep.jpg": b"y"})
    refused(tmp_path, zip_path, r"is nested more than 64 folders deep")


def test_symlink_entry_is_refused(tmp_path):
    zip_path = tmp_path / "link.zip"
    with zipfile.ZipFile(zip_path, "w") as handle:
        handle.writestr("red/1.jpg", b"fine")
        link = zipfile.ZipInfo("red/passwd.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(link, "/etc/passwd")
    refused(tmp_path, zip_path, r"entry 'red/passwd.jpg' is a symbolic link")


def test_too_many_files_is_refused_before_extracting(tmp_path):
    zip_path = zip_of(tmp_path / "many.zip", {f"red/{i}.jpg": b"x" for i in range(6)})
    refused(tmp_path, zip_path, r"6 files and folders, over the limit of 5", max_files=5)


def test_file_cap_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_ZIP_FILES", "3")
    zip_path = zip_of(tmp_path / "many.zip", {f"red/{i}.jpg": b"x" for i in range(4)})
    refused(tmp_path, zip_path, r"over the limit of 3.*RETRAIN_STUDIO_MAX_ZIP_FILES")


def test_too_many_declared_bytes_is_refused_before_extracting(tmp_path, monkeypatch):
    zip_path = zip_of(tmp_path / "big.zip", {"red/1.jpg": b"\0" * 3000})
    monkeypatch.setattr(archive, "_extract_entries", lambda *args: pytest.fail("extraction started"))
    refused(tmp_path, zip_path, r"unpacks to .* over the limit", max_total_bytes=1000)


def test_byte_cap_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_UNZIPPED_MB", "1")
    zip_path = zip_of(tmp_path / "big.zip", {"red/1.jpg": b"\0" * (2 << 20)})
    refused(tmp_path, zip_path, r"over the limit of 1 MB")


def test_bytes_are_counted_while_writing_when_declared_sizes_lie(tmp_path, monkeypatch):
    # Pretend the central directory passed (as a lying one would) and let the stream hit the cap.
    zip_path = zip_of(tmp_path / "big.zip", {"red/1.jpg": b"\0" * 600, "red/2.jpg": b"\0" * 600})
    monkeypatch.setattr(archive, "_check_declared_totals", lambda *args: None)
    refused(tmp_path, zip_path, r"entry 'red/2.jpg' is larger than declared", max_total_bytes=1000)


def test_entry_bigger_than_its_declared_size_is_refused(tmp_path):
    zip_path = tmp_path / "liar.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as handle:
        handle.writestr("red/1.jpg", b"\1" * 5000)
    data = zip_path.read_bytes()
    data = patch_all(data, b"PK\x01\x02", 24, "<I", 100)  # central directory: uncompressed size
    data = patch_all(data, b"PK\x03\x04", 22, "<I", 100)  # local header: uncompressed size
    zip_path.write_bytes(data)
    refused(tmp_path, zip_path, r"entry 'red/1.jpg' is damaged", max_total_bytes=1000)


def test_not_a_zip_is_refused(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("not a zip at all")
    refused(tmp_path, fake, r"photos.zip: not a readable zip archive")


def test_folder_given_as_zip_is_refused(tmp_path):
    (tmp_path / "folder.zip").mkdir()
    refused(tmp_path, tmp_path / "folder.zip", r"is a folder, not a zip")


def test_encrypted_entry_is_refused(tmp_path):
    zip_path = zip_of(tmp_path / "secret.zip", {"red/1.jpg": b"x" * 50})
    data = patch_all(zip_path.read_bytes(), b"PK\x01\x02", 8, "<H", 0x1)  # general purpose flag: encrypted
    zip_path.write_bytes(patch_all(data, b"PK\x03\x04", 6, "<H", 0x1))
    refused(tmp_path, zip_path, r"entry 'red/1.jpg' is encrypted")


def test_damaged_data_is_refused_and_partial_files_removed(tmp_path):
    zip_path = zip_of(tmp_path / "broken.zip", {"red/1.jpg": b"a" * 100, "red/2.jpg": b"b" * 5000})
    data = bytearray(zip_path.read_bytes())
    second = data.find(b"PK\x03\x04", 1)
    data[second + 40 : second + 60] = b"\xff" * 20  # scramble the second entry's compressed data
    zip_path.write_bytes(bytes(data))
    refused(tmp_path, zip_path, r"entry 'red/2.jpg' is damaged")


def test_file_and_folder_with_one_name_is_refused(tmp_path):
    zip_path = zip_of(tmp_path / "clash.zip", {"red": b"a file", "red/1.jpg": b"x"})
    refused(tmp_path, zip_path, r"cannot write entry 'red/1.jpg'")
