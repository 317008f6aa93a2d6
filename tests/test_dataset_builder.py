"""Building and growing a dataset without a browser: names, classes, photos (bad ones refused), zips, the quota,
export, editable copies, crash leftovers, and the run manifest that records what a run was trained on."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from imagegen import class_image, make_class_folders, make_zip, write_image, write_truncated_jpeg

from pipeline import dataset_builder as builder
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset, require_trainable
from pipeline.errors import RetrainError
from pipeline.manifest import read_manifest, trained_images, write_manifest
from pipeline.studio.quotas import uploads_size
from pipeline.studio.uploads import dataset_from_zip
from pipeline.studio.workspaces import open_workspace


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path / "cache"))
    return open_workspace("A" * 22, tmp_path / "data")


def photo(label: str, index: int, image_format: str = "JPEG", tmp: Path | None = None) -> bytes:
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(class_image(label, index)).save(buffer, image_format)
    return buffer.getvalue()


def photos(label: str, n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{label} {i}.jpg", photo(label, i)) for i in range(start, start + n)]


def test_new_dataset_is_marked_empty_folder_in_uploads(ws):
    root = builder.new_dataset(ws, "Mes fleurs 🌸")
    assert root.parent == ws.uploads and root.name.startswith("built-")
    assert builder.is_editable(ws, root) and builder.class_names(root) == []
    assert builder.built_datasets(ws) == {"Mes fleurs 🌸": root}
    assert not list(ws.uploads.glob(".new-*"))  # the temp folder became the dataset


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a/b", "slash"),
        ("a\\b", "slash"),
        (".", "starts with '.'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("cat\ndog", "control character"),
        ("tab\there", "control character"),
        ("x" * 101, "at most 100"),
        ("é" * 121, "at most 100"),
    ],
)
def test_bad_class_names_are_refused_with_the_reason(ws, name, why):
    root = builder.new_dataset(ws, "d")
    with pytest.raises(RetrainError, match=why):
        builder.add_class(ws, root, name)
    assert builder.class_names(root) == []


def test_unicode_class_names_work_end_to_end(ws):
    root = builder.new_dataset(ws, "d")
    for name in ("chat 猫", "Ünïcödé", "emoji 🐶"):
        builder.add_class(ws, root, name)
        builder.add_photos(ws, root, name, photos(name, 3))
    dataset = load_dataset(builder.dataset_config_for(root))
    assert dataset.classes == sorted(["chat 猫", "Ünïcödé", "emoji 🐶"])


def test_duplicate_class_names_are_refused_any_case(ws):
    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    with pytest.raises(RetrainError, match="already a class 'cats'"):
        builder.add_class(ws, root, "cats")
    with pytest.raises(RetrainError, match="already a class 'cats'"):
        builder.add_class(ws, root, " Cats ")
    assert builder.class_names(root) == ["cats"]


def test_add_photos_checks_every_file_and_keeps_its_name_with_a_content_hash(ws, tmp_path):
    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    broken = write_truncated_jpeg(tmp_path / "broken.jpg").read_bytes()
    files = [
        *photos("cats", 3),
        ("../../etc/passwd.jpg", photo("cats", 9)),
        ("notes.jpg", b"hello, not a photo"),
        ("empty.png", b""),
        ("broken.jpg", broken),
        ("again.jpg", photo("cats", 0)),
        ("pic.png", photo("cats", 7, "PNG")),
    ]
    result = builder.add_photos(ws, root, "cats", files)
    assert len(result.added) == 5 and result.already_there == ["again.jpg"]
    reasons = {item["file"]: item["reason"] for item in result.refused}
    assert set(reasons) == {"notes.jpg", "empty.png", "broken.jpg"}
    assert "not an image" in reasons["notes.jpg"] and "empty" in reasons["empty.png"]
    assert "truncated" in reasons["broken.jpg"]
    stored = sorted(path.name for path in (root / "cats").iterdir())
    assert [re.sub(r"-[0-9a-f]{12}\.", ".", name) for name in stored] == [
        "cats 0.jpg",
        "cats 1.jpg",
        "cats 2.jpg",
        "passwd.jpg",
        "pic.png",
    ]
    assert not (tmp_path / "etc").exists() and [p.parent for p in ws.path.rglob("passwd*")] == [root / "cats"]


def test_same_photo_in_two_classes_is_refused(ws):
    root = builder.new_dataset(ws, "d")
    for name in ("cats", "dogs"):
        builder.add_class(ws, root, name)
    builder.add_photos(ws, root, "cats", photos("cats", 1))
    result = builder.add_photos(ws, root, "dogs", photos("cats", 1))
    assert result.added == [] and "already in class 'cats'" in result.refused[0]["reason"]


def test_rename_merge_and_delete_classes(ws):
    root = builder.new_dataset(ws, "d")
    for name in ("cats", "kitties", "dogs"):
        builder.add_class(ws, root, name)
    builder.add_photos(ws, root, "cats", photos("cats", 3))
    builder.add_photos(ws, root, "kitties", photos("kitties", 2))
    with pytest.raises(RetrainError, match="already a class 'cats'.*merge"):
        builder.rename_class(ws, root, "kitties", "cats")
    assert builder.class_counts(root) == {"cats": 3, "dogs": 0, "kitties": 2}  # refused: nothing moved
    assert builder.rename_class(ws, root, "kitties", "Cats", merge=True) == "cats"
    assert builder.class_counts(root) == {"cats": 5, "dogs": 0}
    assert builder.rename_class(ws, root, "dogs", "chiens") == "chiens"
    assert builder.rename_class(ws, root, "cats", "Cats") == "Cats"  # a change of case is a rename, not a clash
    with pytest.raises(RetrainError, match="no class 'cats'"):
        builder.rename_class(ws, root, "cats", "felines")
    assert builder.delete_class(ws, root, "Cats") == 5
    assert builder.class_names(root) == ["chiens"]
    assert not [p for p in root.iterdir() if p.name.startswith(".deleting")]


def test_remove_photos_only_touches_listed_files(ws, tmp_path):
    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    builder.add_photos(ws, root, "cats", photos("cats", 3))
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep me")
    first = builder.class_photos(root, "cats")[0].name
    assert builder.remove_photos(ws, root, "cats", [first, "../../../outside.jpg", str(outside), MARKER_NAME]) == 1
    assert outside.read_bytes() == b"keep me" and (root / builder.MARKER).is_file()
    assert len(builder.class_photos(root, "cats")) == 2


MARKER_NAME = builder.MARKER


def test_only_marked_folders_in_the_workspace_can_change(ws, tmp_path):
    folder = make_class_folders(tmp_path / "server", {"a": 2, "b": 2})
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(RetrainError, match="not a dataset made in this workspace"):
        builder.add_class(ws, folder, "c")
    with pytest.raises(RetrainError, match="not a dataset made in this workspace"):
        builder.delete_class(ws, folder, "a")
    (folder / builder.MARKER).write_text("{}")  # a planted marker outside the workspace does not help
    with pytest.raises(RetrainError, match="not a dataset made in this workspace"):
        builder.delete_class(ws, folder, "a")
    assert sorted(p.name for p in folder.rglob("*") if p.name != builder.MARKER) == before


def test_growing_a_server_folder_copies_it_and_leaves_it_alone(ws, tmp_path):
    folder = make_class_folders(tmp_path / "server", {"a": 3, "b": 3})
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    root = builder.editable_root(ws, DatasetConfig(image_dir=str(folder)))
    assert root.is_relative_to(ws.uploads) and builder.class_counts(root) == {"a": 3, "b": 3}
    assert builder.dataset_label(root) == "server (copy)"
    builder.add_photos(ws, root, "a", photos("a", 2, start=10))
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_growing_an_uploaded_zip_adopts_its_unpacked_folder(ws, tmp_path):
    folder = make_class_folders(tmp_path / "up", {"a": 3, "b": 3})
    zip_path = make_zip(folder, tmp_path / "up.zip")
    config = dataset_from_zip(ws, "my photos.zip", zip_path.read_bytes())
    root = builder.editable_root(ws, config)
    assert root == Path(config.image_dir).resolve() and builder.is_editable(ws, root)
    assert builder.dataset_label(root) == "my_photos"  # the safe upload name
    builder.add_photos(ws, root, "b", photos("b", 1, start=20))
    assert load_dataset(config).class_counts()["b"] != {}
    assert builder.editable_root(ws, config) == root  # the second time it is simply editable


def test_add_zip_to_a_class_goes_through_safe_extract(ws, tmp_path):
    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    inner = tmp_path / "inner"
    for i in range(3):
        write_image(inner / "nested" / f"{i}.jpg", class_image("cats", i))
    (inner / "readme.txt").write_text("not a photo")
    result = builder.add_zip(ws, root, "cats", "more cats.zip", make_zip(inner, tmp_path / "m.zip").read_bytes())
    assert len(result.added) == 3 and [item["file"] for item in result.refused] == ["readme.txt"]
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../escape.jpg", photo("cats", 5))
    with pytest.raises(RetrainError, match=r"^evil.zip: entry '../../escape.jpg'.*unsafe"):
        builder.add_zip(ws, root, "cats", "evil.zip", evil.getvalue())
    with pytest.raises(RetrainError, match="^junk.zip: not a readable zip"):
        builder.add_zip(ws, root, "cats", "junk.zip", b"PK not really")
    assert not list(ws.path.rglob("escape.jpg")) and not [p for p in root.iterdir() if p.name.startswith(".imp")]
    assert len(builder.class_photos(root, "cats")) == 3


def test_quota_full_refuses_the_whole_batch(ws, monkeypatch):
    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", "1")
    big = [(f"{i}.png", photo("cats", i, "PNG") + b"") for i in range(2)]
    (ws.uploads / "filler.bin").write_bytes(b"\0" * ((1 << 20) - 1000))  # nearly full
    with pytest.raises(RetrainError, match="over its quota"):
        builder.add_photos(ws, root, "cats", big)
    assert builder.class_photos(root, "cats") == []
    with pytest.raises(RetrainError, match="over its quota"):
        builder.add_zip(ws, root, "cats", "z.zip", b"x" * 2000)
    (ws.uploads / "filler.bin").unlink()
    assert len(builder.add_photos(ws, root, "cats", big).added) == 2
    assert uploads_size(ws) > sum(len(data) for _, data in big)  # built photos count against the quota


def test_export_zip_round_trips_as_a_dataset(ws, tmp_path):
    root = builder.new_dataset(ws, "pets")
    for name in ("cats", "dogs"):
        builder.add_class(ws, root, name)
        builder.add_photos(ws, root, name, photos(name, 4))
    builder.add_class(ws, root, "empty")
    data = builder.export_zip(root)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "out")
    assert "pets/empty/" in names and not any(builder.MARKER in name for name in names)
    assert load_dataset(DatasetConfig(image_dir=str(tmp_path / "out" / "pets"))).class_counts().keys() == {
        "cats",
        "dogs",
    }


def test_export_keeps_the_names_photos_were_added_with(ws, tmp_path):
    root = builder.new_dataset(ws, "pets: mine?")
    builder.add_class(ws, root, "cats")
    odd = [
        ("IMG_0001.JPG", photo("cats", 1)),
        ("IMG_0001.JPG", photo("cats", 2)),
        ("img_0001.jpg", photo("cats", 3)),
        ("a\udcff\u202e<b>.jpeg", photo("cats", 4)),
        ("C:\\Users\\me\\.hidden.png", photo("cats", 5, "PNG")),
        ("", photo("cats", 6)),
        ("x" * 300 + ".jpg", photo("cats", 7)),
        ("camera photo", photo("cats", 8)),
        ("seems.png", photo("cats", 9)),
    ]  # JPEG content: the name says so, so the name's extension changes
    assert len(builder.add_photos(ws, root, "cats", odd).added) == 9
    names = [
        archive_name.split("/")[-1]
        for archive_name in zipfile.ZipFile(io.BytesIO(builder.export_zip(root))).namelist()
        if not archive_name.endswith("/")
    ]
    assert len(names) == 9 and len({name.casefold() for name in names}) == 9  # unique on any disk
    assert {"IMG_0001.JPG", "a___b_.jpeg", "hidden.png", "photo.jpg", "camera photo.jpg", "seems.jpg"} <= set(names)
    assert {n.casefold() for n in names if n.casefold().startswith("img_0001")} == {
        "img_0001.jpg",
        "img_0001 (2).jpg",
        "img_0001 (3).jpg",
    }  # which one is "(2)" follows the stored names
    assert max(len(name.encode()) for name in names) < 200
    assert names == [
        archive_name.split("/")[-1]
        for archive_name in zipfile.ZipFile(io.BytesIO(builder.export_zip(root))).namelist()
        if not archive_name.endswith("/")
    ]  # the same names every time
    assert zipfile.ZipFile(io.BytesIO(builder.export_zip(root))).namelist()[0] == "pets_ mine_/cats/"


def test_an_adopted_upload_exports_its_own_names_made_safe(ws, tmp_path):
    folder = make_class_folders(tmp_path / "up", {"a": 2})
    (folder / "a" / "a_000.jpg").rename(folder / "a" / "Holiday.JPG")
    zip_path = make_zip(folder, tmp_path / "up.zip")
    config = dataset_from_zip(ws, "trip.zip", zip_path.read_bytes())
    root = builder.editable_root(ws, config)
    os.rename(root / "a" / "a_001.jpg", os.fsencode(root / "a") + b"/caf\xe9.jpg")  # a Latin-1 name from an old zip
    builder.add_photos(ws, root, "a", [("holiday.jpg", photo("a", 30))])
    names = sorted(
        name.split("/")[-1]
        for name in zipfile.ZipFile(io.BytesIO(builder.export_zip(root))).namelist()
        if not name.endswith("/")
    )
    assert names == ["Holiday.JPG", "caf_.jpg", "holiday (2).jpg"]


def test_a_crash_mid_delete_leaves_no_class_and_is_cleaned(ws):
    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    builder.add_photos(ws, root, "cats", photos("cats", 2))
    os.rename(root / "cats", root / ".deleting-abcd")  # what delete_class does before removing
    (root / ".importing-old").mkdir()
    os.utime(root / ".importing-old", (0, 0))
    (root / ".importing-new").mkdir()  # another tab's import still running
    assert builder.class_names(root) == []
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [".importing-new"]


def test_split_counts_follow_the_datasets_own_split(ws):
    root = builder.new_dataset(ws, "d")
    for name in ("cats", "dogs"):
        builder.add_class(ws, root, name)
        builder.add_photos(ws, root, name, photos(name, 25))
    config = builder.dataset_config_for(root)
    assert builder.split_counts(root, config) == load_dataset(config).class_counts()
    require_trainable(load_dataset(config))


def test_manifest_records_what_a_run_saw(ws, tmp_path):
    root = builder.new_dataset(ws, "d")
    for name in ("cats", "dogs"):
        builder.add_class(ws, root, name)
        builder.add_photos(ws, root, name, photos(name, 3))
    run = tmp_path / "run"
    write_manifest(load_dataset(builder.dataset_config_for(root)), run)
    builder.add_photos(ws, root, "cats", photos("cats", 4, start=10))
    table = read_manifest(run)
    assert trained_images(run) == 6 and set(table["label"]) == {"cats", "dogs"}
    assert all(len(sha) == 64 for sha in table["sha256"])
    (run / "dataset_manifest.csv").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(RetrainError, match="dataset_manifest.csv: the run's dataset manifest"):
        read_manifest(run)
    assert trained_images(run) is None and trained_images(tmp_path / "none") is None


def test_a_copy_whose_labels_cannot_be_folders_is_refused_before_anything_is_made(ws, tmp_path):
    from imagegen import flatten_to_csv_layout, write_labels_csv

    folder = make_class_folders(tmp_path / "src", {"a": 2, "b": 2})
    rows = [
        (image, "a/b" if label == "a" else label) for image, label in flatten_to_csv_layout(folder, tmp_path / "flat")
    ]
    csv_path = write_labels_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(RetrainError, match="slash"):
        builder.editable_root(ws, DatasetConfig(image_dir=str(tmp_path / "flat"), label_csv=str(csv_path)))
    assert builder.built_datasets(ws) == {}


def test_a_queued_run_trains_on_the_photos_there_were_when_it_was_queued(ws, monkeypatch, capsys, tiny_backbone_file):
    import dataclasses

    from pipeline.config import RunConfig, apply_preset
    from pipeline.manifest import QUEUED
    from pipeline.retrain import retrain
    from pipeline.studio.datasets import with_overrides
    from pipeline.studio.launch import start_run

    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])  # it waits in the queue
    root = builder.new_dataset(ws, "d")
    for name in ("cats", "dogs"):
        builder.add_class(ws, root, name)
        builder.add_photos(ws, root, name, photos(name, 10))
    ws.update_state(dataset=dataclasses.asdict(with_overrides(ws, builder.dataset_config_for(root))))
    config = apply_preset(RunConfig(), "Quick")
    config.train.architecture, config.train.bottleneck_layer = str(tiny_backbone_file), "features"
    config.train.epochs, config.output.export_formats = 3, ["keras"]
    run = start_run(ws, config)
    assert len(read_manifest(run.path, QUEUED)) == 20

    builder.add_photos(ws, root, "cats", photos("cats", 5, start=50))  # added while it waits: not trained on
    builder.rename_class(ws, root, "dogs", "hounds")  # moved: found by content, label kept
    builder.remove_photos(ws, root, "cats", [builder.class_photos(root, "cats")[0].name])  # gone: counted
    retrain(RunConfig.load(run.config), run.path)

    table = read_manifest(run.path)
    assert trained_images(run.path) == 19 and set(table["label"]) == {"cats", "dogs"}
    assert (table["label"] == "dogs").sum() == 10
    assert "note: 1 photo(s) of the dataset as it was queued were deleted or changed" in capsys.readouterr().err
    assert builder.class_counts(root) == {"cats": 14, "hounds": 10}  # the dataset itself is as the user left it


def test_a_damaged_queue_record_fails_the_run_with_its_name(ws, tmp_path):
    from pipeline.manifest import QUEUED, as_queued

    root = builder.new_dataset(ws, "d")
    builder.add_class(ws, root, "cats")
    builder.add_photos(ws, root, "cats", photos("cats", 3))
    dataset = load_dataset(builder.dataset_config_for(root))
    run = tmp_path / "run"
    run.mkdir()
    assert as_queued(dataset, run) == (dataset, 0)  # a CLI run: no record, the dataset as it is
    (run / QUEUED).write_bytes(b"file,label\n")
    with pytest.raises(RetrainError, match="queued_dataset.csv: the run's dataset manifest has columns"):
        as_queued(dataset, run)


def test_a_manifest_keeps_file_names_that_are_not_utf8(ws, tmp_path):
    folder = make_class_folders(tmp_path / "up", {"a": 2, "b": 2})
    os.rename(folder / "a" / "a_000.jpg", os.fsencode(folder / "a") + b"/caf\xe9.jpg")
    dataset = load_dataset(DatasetConfig(image_dir=str(folder)))
    write_manifest(dataset, tmp_path / "run")
    assert sorted(read_manifest(tmp_path / "run")["file"]) == sorted(dataset.table["file"])
    assert "a/caf\\xe9.jpg" in set(read_manifest(tmp_path / "run")["file"])  # the table's printable form


def test_decisions_follow_a_class_rename_and_a_merge(ws):
    import dataclasses

    from pipeline.studio.datasets import dataset_config, decisions, record_decision, with_overrides

    root = builder.new_dataset(ws, "d")
    for name in ("cats", "dogs", "foxes"):
        builder.add_class(ws, root, name)
    builder.add_photos(ws, root, "cats", photos("cats", 3))
    builder.add_photos(ws, root, "dogs", photos("dogs", 3))
    builder.add_photos(ws, root, "foxes", photos("foxes", 2))
    ws.update_state(dataset=dataclasses.asdict(with_overrides(ws, builder.dataset_config_for(root))))
    dog, cat, fox = (builder.class_photos(root, name)[0].name for name in ("dogs", "cats", "foxes"))
    record_decision(ws, f"dogs/{dog}", drop=True)
    record_decision(ws, f"cats/{cat}", label="dogs")  # a cat photo that is really a dog
    record_decision(ws, f"foxes/{fox}", label="cats")

    builder.rename_class(ws, root, "dogs", "hounds")
    assert decisions(ws) == {"drop": [f"hounds/{dog}"], "relabel": {f"cats/{cat}": "hounds", f"foxes/{fox}": "cats"}}
    table = load_dataset(dataset_config(ws), check_images=False).table.set_index("file")
    assert table.loc[f"hounds/{dog}", "status"] == "dropped" and table.loc[f"cats/{cat}", "label"] == "hounds"

    builder.rename_class(ws, root, "cats", "Cats")  # only the capitals change
    assert decisions(ws)["relabel"] == {f"Cats/{cat}": "hounds", f"foxes/{fox}": "Cats"}
    builder.rename_class(ws, root, "hounds", "cats", merge=True)  # into 'Cats', any case
    assert decisions(ws) == {"drop": [f"Cats/{dog}"], "relabel": {f"Cats/{cat}": "Cats", f"foxes/{fox}": "Cats"}}
    table = load_dataset(dataset_config(ws), check_images=False).table.set_index("file")
    assert table.loc[f"Cats/{dog}", "status"] == "dropped" and table.loc[f"foxes/{fox}", "label"] == "Cats"
    assert not [w for w in load_dataset(dataset_config(ws), check_images=False).warnings if "override" in w]
