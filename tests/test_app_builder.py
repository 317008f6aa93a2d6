"""AppTest of building a dataset in the browser: New dataset, classes, photos (files, camera, zip), bad files,
duplicate and clashing names, quota full, removing, export, growing a server folder, the all-classes view and
Predict's 'Add this photo to class …'."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from apptest_pages import open_app
from imagegen import class_image, make_class_folders, write_truncated_jpeg
from PIL import Image
from streamlit.testing.v1 import AppTest

from pipeline import dataset_builder as builder
from pipeline.config import DatasetConfig
from pipeline.manifest import trained_images
from pipeline.studio.datasets import dataset_config
from pipeline.studio.workspaces import new_token, open_workspace

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")


@pytest.fixture
def token(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("RETRAIN_STUDIO_SAMPLES", raising=False)
    monkeypatch.delenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", raising=False)
    return new_token()


def app(token: str, page: str) -> AppTest:
    at = open_app(page, token)
    assert not at.exception, [e.value for e in at.exception]
    return at


def jpeg(label: str, index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(class_image(label, index)).save(buffer, "JPEG")
    return buffer.getvalue()


def texts(elements) -> str:
    """What the elements say, as the user reads it (Markdown escapes of user text removed)."""
    return re.sub(r"\\(.)", r"\1", " | ".join(str(element.value) for element in elements))


def button(at: AppTest, label: str):
    return next(b for b in [*at.button, *at.get("form_submit_button")] if b.label == label)


def new_dataset(token: str, name: str = "pets") -> AppTest:
    """From the Dataset page's 'New dataset' tab to the builder page, as a user does it."""
    at = app(token, "pages/dataset.py")
    at.text_input(key="new_dataset").input(name)
    button(at, "Create and start adding photos").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Build a dataset"  # the button switched page, inside the app's navigation
    return at


def add_class(at: AppTest, name: str) -> AppTest:
    at.text_input(key="new_class_name").input(name)
    return button(at, "Add class").click().run()


def drop(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    uploader = next(u for u in at.get("file_uploader") if u.key == "builder_files")
    for name, data in files:
        uploader.upload(name, data, "image/jpeg")
    return at.run()


def root_of(token: str) -> Path:
    return Path(dataset_config(open_workspace(token)).image_dir)


def test_new_dataset_classes_and_photos_from_files(token, tmp_path):
    at = new_dataset(token)
    root = root_of(token)
    assert builder.is_editable(open_workspace(token), root) and builder.dataset_label(root) == "pets"
    assert "Add a first class" in texts(at.info)
    at = add_class(at, "cats")
    assert at.selectbox(key="builder_class").value == "cats"
    broken = write_truncated_jpeg(tmp_path / "t.jpg").read_bytes()
    at = drop(at, *[(f"c{i}.jpg", jpeg("cats", i)) for i in range(3)], ("bad.jpg", broken), ("notes.jpg", b"text"))
    assert not at.exception
    notice = texts(at.warning)
    assert "Added 3 photo(s)" in notice and "bad.jpg: truncated" in notice and "notes.jpg: not an image" in notice
    assert builder.class_counts(root) == {"cats": 3}
    assert at.metric[1].value == "3"  # photos
    assert len(at.image[0].captions) == 3 and all(" · " in c for c in at.image[0].captions)


def test_duplicate_and_clashing_class_names_are_refused(token):
    at = new_dataset(token)
    at = add_class(add_class(at, "cats"), "dogs")
    at = add_class(at, "Cats")
    assert "already a class 'cats'" in texts(at.error)
    at = add_class(at, "a/b")
    assert "slash" in texts(at.error)
    at.selectbox(key="builder_class").set_value("dogs").run()
    at.text_input(key="rename_to_dogs").input("cats")
    at = button(at, "Rename").click().run()
    assert "already a class 'cats'" in texts(at.error) and "merge" in texts(at.error)
    assert builder.class_names(root_of(token)) == ["cats", "dogs"]
    at.text_input(key="rename_to_dogs").input("cats")
    at.checkbox(key="merge").check()
    at = button(at, "Rename").click().run()
    assert builder.class_names(root_of(token)) == ["cats"] and at.selectbox(key="builder_class").value == "cats"
    at.text_input(key="rename_to_cats").input("felines")
    at = button(at, "Rename").click().run()
    assert builder.class_names(root_of(token)) == ["felines"] and "renamed" in texts(at.success)


def test_markdown_in_a_class_name_is_shown_as_typed(token):
    at = add_class(new_dataset(token), "*bold* [link](x)")
    at = add_class(at, "*bold* [link](x)")
    raw = " ".join(e.value for e in at.error)
    assert r"\*bold\* \[link\]\(x\)" in raw and "class '*bold* [link](x)'" in texts(at.error)


def test_camera_shots_in_a_row_and_a_zip(token):
    at = app(token, "pages/builder.py")
    at.text_input(key="new_dataset_name").input("shots")
    at = button(at, "Create an empty dataset").click().run()
    at = add_class(at, "red")
    at.toggle(key="builder_camera").set_value(True).run()
    for index in range(2):  # each shot is added and the camera is ready for the next one, same class
        camera = next(c for c in at.get("camera_input") if c.key.startswith("builder_shot_"))
        at = camera.upload("photo.jpg", jpeg("red", index)).run()
        assert "Added 1 photo(s)" in texts(at.success)
        assert at.selectbox(key="builder_class").value == "red"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(2, 5):
            archive.writestr(f"more/{index}.jpg", jpeg("red", index))
    uploader = next(u for u in at.get("file_uploader") if u.key == "builder_zip")
    at = uploader.upload("more.zip", buffer.getvalue(), "application/zip").run()
    assert "Added 3 photo(s)" in texts(at.success)
    assert builder.class_counts(root_of(token)) == {"red": 5}
    uploader = next(u for u in at.get("file_uploader") if u.key == "builder_zip")
    at = uploader.upload("broken.zip", b"PK nope", "application/zip").run()
    assert "broken.zip: not a readable zip" in texts(at.error)


def test_quota_full_is_refused_and_nothing_is_written(token, monkeypatch):
    at = add_class(new_dataset(token), "cats")
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", "1")
    (open_workspace(token).uploads / "filler.bin").write_bytes(b"\0" * ((1 << 20) - 100))
    at = drop(at, ("c.jpg", jpeg("cats", 1)))
    assert "over its quota" in texts(at.error)
    assert builder.class_counts(root_of(token)) == {"cats": 0}


def test_remove_photos_delete_class_and_export(token):
    at = add_class(new_dataset(token), "cats")
    at = drop(at, *[(f"c{i}.jpg", jpeg("cats", i)) for i in range(3)])
    at = add_class(at, "dogs")
    at = drop(at, ("d.jpg", jpeg("dogs", 0)))
    at.selectbox(key="builder_class").set_value("cats").run()
    remove = next(m for m in at.multiselect if m.key.startswith("remove_cats"))
    remove.set_value([1, 2]).run()
    at = button(at, "Remove selected photos").click().run()
    assert builder.class_counts(root_of(token)) == {"cats": 1, "dogs": 1}
    download = at.get("download_button")[0]
    assert download.proto.label == "Export as zip"
    at.selectbox(key="builder_class").set_value("dogs").run()
    assert button(at, "Delete class").disabled
    at.checkbox(key="confirm_delete_class").check().run()
    at = button(at, "Delete class").click().run()
    assert builder.class_names(root_of(token)) == ["cats"] and "deleted" in texts(at.success)


def test_growing_a_server_folder_makes_an_editable_copy(token, tmp_path):
    folder = make_class_folders(tmp_path / "data" / "shapes", {"a": 3, "b": 6})
    before = sorted(p.name for p in folder.rglob("*"))
    workspace = open_workspace(token, tmp_path / "data")
    workspace.update_state(dataset=dataclasses.asdict(DatasetConfig(image_dir=str(folder))))
    at = app(token, "pages/builder.py")
    at = button(at, "Grow the current dataset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    root = root_of(token)
    assert root.is_relative_to(workspace.uploads) and builder.class_counts(root) == {"a": 3, "b": 6}
    assert sorted(p.name for p in folder.rglob("*")) == before
    # The all-classes view: every class, its counts per split, a few photos with their split.
    glance = [m.value for m in at.markdown if " photo(s): " in m.value]
    assert [line.split(" · ")[0] for line in glance] == ["**a**", "**b**"]
    assert "Classes are imbalanced" in texts(at.warning)
    at = app(token, "pages/explore.py")
    assert [m.value.split(" · ")[0] for m in at.markdown if " photo(s): " in m.value] == ["**a**", "**b**"]


def test_predict_adds_a_photo_back_least_sure_first(token, tmp_path, tiny_backbone_file):
    workspace = open_workspace(token, tmp_path / "data")
    root = builder.new_dataset(workspace, "colours")
    for label in ("red", "blue"):
        builder.add_class(workspace, root, label)
        builder.add_photos(workspace, root, label, [(f"{i}.jpg", jpeg(label, i)) for i in range(12)])
    run = workspace.runs / "run-20240101-000000-abcd"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            "--image_dir",
            str(root),
            "--output_dir",
            str(run),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
            "--epochs",
            "10",
            "--bottleneck_dir",
            str(tmp_path / "bottlenecks"),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    assert trained_images(run) == 24  # the run's own record of its data
    workspace.update_state(dataset=dataclasses.asdict(builder.dataset_config_for(root)), run=run.name)
    at = app(token, "pages/predict.py")
    blend = (0.5 * class_image("red", 40) + 0.5 * class_image("blue", 40)).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(blend).save(buffer, "JPEG")
    uploader = at.file_uploader(key="predict_photos")
    uploader.upload("clear.jpg", jpeg("red", 30), "image/jpeg")
    uploader.upload("unsure.jpg", buffer.getvalue(), "image/jpeg").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [image.proto.imgs[0].caption for image in at.image][:2] == ["unsure.jpg", "clear.jpg"]
    clear = at.selectbox(key="add-class-photo-1")
    assert clear.value == "red" and clear.options == ["blue", "red"]  # the model's guess is suggested
    at.selectbox(key="add-class-photo-0").set_value("blue").run()
    at = next(b for b in at.button if b.key == "add-photo-0").click().run()
    assert "Added to class blue (13 photos now)" in texts(at.success)
    assert builder.class_counts(root) == {"blue": 13, "red": 12}
    assert trained_images(run) == 24  # adding photos later does not change what the run says it saw
    at = app(token, "pages/runs.py")
    assert [" · 24 images · " in text for text in at.dataframe[0].value["Dataset"]] == [True]


def test_the_dataset_page_reopens_a_dataset_made_here(token):
    at = add_class(new_dataset(token, "first"), "cats")
    new_dataset(token, "second")
    at = app(token, "pages/dataset.py")
    assert at.selectbox(key="built_dataset").options == ["first", "second"]
    at.selectbox(key="built_dataset").set_value("first").run()
    at = button(at, "Open it").click().run()
    assert builder.dataset_label(root_of(token)) == "first"
