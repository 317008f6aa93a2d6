"""The checked-files store: a reopened dataset decodes nothing unchanged, re-checks what changed, survives damage."""

from __future__ import annotations

import logging
import os
import time

import pytest

import pipeline.dataset as dataset_module
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.file_checks import RACY_NS, CheckStore
from tests.imagegen import make_class_folders, write_truncated_jpeg


@pytest.fixture
def decodes(monkeypatch):
    """Counts the images the check decodes."""
    count = {"n": 0}
    real = dataset_module.decode_image

    def counting(data, *args, **kwargs):
        count["n"] += 1
        return real(data, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "decode_image", counting)
    return count


def _age(root, seconds: float = 60) -> None:
    """Give every file an mtime in the past, as photos copied in a while ago have (the racy rule trusts those)."""
    past = time.time() - seconds
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past))


@pytest.fixture
def photos(tmp_path):
    root = make_class_folders(tmp_path / "photos", {"red": 6, "blue": 6})
    write_truncated_jpeg(root / "red" / "broken.jpg")
    _age(root)
    return root


def _load(root, store):
    return load_dataset(DatasetConfig(image_dir=str(root)), check_images=True, check_store=store)


def test_second_load_decodes_nothing_and_gives_the_same_table(photos, tmp_path, decodes):
    store = tmp_path / "store"
    first = _load(photos, store)
    assert decodes["n"] == 13 and first.files_checked == 13
    second = _load(photos, store)
    assert decodes["n"] == 13, "an unchanged dataset was decoded again"
    assert second.files_checked == 0
    assert second.table.equals(first.table)
    assert second.signature == first.signature
    assert "broken.jpg" in [problem["file"].split("/")[-1] for problem in second.problems]
    assert (second.table.loc[second.table["status"] == "ok", "phash"] != "").all()


def test_only_a_changed_or_new_file_is_checked_again(photos, tmp_path, decodes):
    store = tmp_path / "store"
    first = _load(photos, store)
    decodes["n"] = 0
    later = time.time() - 30
    os.utime(photos / "red" / "red_000.jpg", (later, later))
    make_class_folders(tmp_path / "more", {"blue": 1})
    os.replace(tmp_path / "more" / "blue" / "blue_000.jpg", photos / "blue" / "new.jpg")
    os.utime(photos / "blue" / "new.jpg", (later, later))
    second = _load(photos, store)
    assert decodes["n"] == 2 and second.files_checked == 2
    assert second.signature != first.signature
    assert len(second.usable()) == len(first.usable()) + 1


def test_a_file_changed_in_the_tick_it_was_checked_is_not_trusted(photos, tmp_path, decodes):
    store = tmp_path / "store"
    fresh = photos / "blue" / "blue_000.jpg"
    os.utime(fresh)  # modified "now": within RACY_NS of when its verdict is stored
    _load(photos, store)
    decodes["n"] = 0
    _load(photos, store)
    assert decodes["n"] == 1
    assert RACY_NS >= 1_000_000_000


def test_a_decode_check_is_not_satisfied_by_a_listing_without_decode(photos, tmp_path, decodes):
    store = tmp_path / "store"
    load_dataset(DatasetConfig(image_dir=str(photos)), check_images=False, check_store=store)
    assert decodes["n"] == 0
    checked = _load(photos, store)
    assert decodes["n"] == 13 and len(checked.problems) == 1
    again = load_dataset(DatasetConfig(image_dir=str(photos)), check_images=False, check_store=store)
    assert again.files_checked == 0 and len(again.problems) == 1  # the decode verdict serves a quick listing too


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b'{"format": "retrain-studio/file-checks", "vers',
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        b'{"format": "retrain-studio/file-checks", "version": 2, '
        b'"root": "ROOT", "entries": {"red/red_000.jpg": [1, 2]}}',
    ],
)
def test_a_damaged_store_is_ignored_with_a_log_line_and_rebuilt(photos, tmp_path, decodes, caplog, damage):
    store = tmp_path / "store"
    _load(photos, store)
    path = CheckStore(photos.resolve(), store).path
    path.write_bytes(damage.replace(b"ROOT", str(photos.resolve()).encode()))
    decodes["n"] = 0
    with caplog.at_level(logging.WARNING, logger="pipeline.file_checks"):
        rebuilt = _load(photos, store)
    assert decodes["n"] == 13 and len(rebuilt.usable()) == 12
    if damage:  # an empty file is damaged too, and says so
        assert str(path) in caplog.text and "checked again" in caplog.text
    decodes["n"] = 0
    _load(photos, store)
    assert decodes["n"] == 0, "the rebuilt store was not written back"


def test_a_store_of_another_folder_is_not_used(photos, tmp_path, decodes, caplog):
    store = tmp_path / "store"
    _load(photos, store)
    other = make_class_folders(tmp_path / "other", {"red": 3, "blue": 3})
    _age(other)
    CheckStore(other.resolve(), store).path.write_bytes(CheckStore(photos.resolve(), store).path.read_bytes())
    decodes["n"] = 0
    with caplog.at_level(logging.WARNING, logger="pipeline.file_checks"):
        _load(other, store)
    assert decodes["n"] == 6 and "another folder" in caplog.text


def test_an_unwritable_store_only_costs_the_speed(photos, tmp_path, decodes, caplog):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store folder should be")
    with caplog.at_level(logging.WARNING, logger="pipeline.file_checks"):
        dataset = _load(photos, blocker)
    assert len(dataset.usable()) == 12 and "could not store" in caplog.text
    assert blocker.read_text() == "a file where the store folder should be"


def test_without_a_store_every_load_checks_everything(photos, decodes):
    _load(photos, False)
    _load(photos, False)
    assert decodes["n"] == 26


# ---- Hostile stores (attack2) ---------------------------------------------------------------------------------------


def test_a_store_that_is_a_fifo_is_ignored_not_waited_on(photos, tmp_path, decodes, caplog):
    store = tmp_path / "store"
    _load(photos, store)
    path = CheckStore(photos.resolve(), store).path
    path.unlink()
    os.mkfifo(path)  # opening a FIFO for reading blocks until a writer comes: forever
    decodes["n"] = 0
    with caplog.at_level(logging.WARNING, logger="pipeline.file_checks"):
        dataset = _load(photos, store)
    assert decodes["n"] == 13 and len(dataset.usable()) == 12
    assert "not a regular file" in caplog.text


def test_a_store_far_too_large_is_ignored_without_reading_it(photos, tmp_path, decodes, caplog, monkeypatch):
    import pipeline.file_checks as file_checks

    store = tmp_path / "store"
    _load(photos, store)
    path = CheckStore(photos.resolve(), store).path
    monkeypatch.setattr(file_checks, "MAX_STORE_BYTES", 100)
    decodes["n"] = 0
    with caplog.at_level(logging.WARNING, logger="pipeline.file_checks"):
        _load(photos, store)
    assert decodes["n"] == 13 and "bytes" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("field, bad", [(5, "zz-not-hex"), (5, "12"), (2, "same-for-all")])
def test_a_store_with_malformed_hashes_is_ignored(photos, tmp_path, decodes, caplog, field, bad):
    """A hash that is not hex would crash near-duplicate grouping; one shared sha256 would call every photo a copy."""
    import json

    from pipeline.near_duplicates import table_groups

    store = tmp_path / "store"
    _load(photos, store)
    path = CheckStore(photos.resolve(), store).path
    data = json.loads(path.read_text())
    for entry in data["entries"].values():
        entry[field] = bad
    path.write_text(json.dumps(data))
    decodes["n"] = 0
    with caplog.at_level(logging.WARNING, logger="pipeline.file_checks"):
        dataset = _load(photos, store)
    assert decodes["n"] == 13 and "damaged entry" in caplog.text
    assert dataset.duplicates == []
    table_groups(dataset.table)


def test_a_photo_replaced_with_same_size_and_mtime_is_checked_again(photos, tmp_path, decodes):
    """`cp` over a photo then `touch -r` back: size and mtime match, ctime does not."""
    store = tmp_path / "store"
    _load(photos, store)
    target, other = photos / "red" / "red_000.jpg", photos / "blue" / "blue_000.jpg"
    before = os.stat(target)
    data = other.read_bytes()[: before.st_size].ljust(before.st_size, b"\0")
    time.sleep(0.01)
    target.write_bytes(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(target).st_size == before.st_size and os.stat(target).st_mtime_ns == before.st_mtime_ns
    decodes["n"] = 0
    dataset = _load(photos, store)
    assert decodes["n"] == 1
    row = dataset.table[dataset.table["file"] == "red/red_000.jpg"].iloc[0]
    import hashlib

    assert row["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_store_that_is_a_symlink_is_replaced_not_written_through(photos, tmp_path):
    store = tmp_path / "store"
    _load(photos, store)
    path = CheckStore(photos.resolve(), store).path
    victim = tmp_path / "victim.json"
    victim.write_text("not ours")
    path.unlink()
    path.symlink_to(victim)
    _load(photos, store)
    assert victim.read_text() == "not ours" and not path.is_symlink()
