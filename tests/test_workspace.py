"""Session workspaces: token checks, the data-root fence, uploads through safe_extract, per-session runs."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from imagegen import make_class_folders, make_zip, write_labels_csv

from pipeline.config import DatasetConfig, RunConfig
from pipeline.dataset import load_dataset
from pipeline.errors import RetrainError
from pipeline.evaluate import Prediction
from pipeline.runs import RunDir
from pipeline.workspace import (
    cell_images,
    config_differences,
    data_root,
    dataset_from_zip,
    dataset_name,
    find_run,
    image_path,
    imbalance_advice,
    is_valid_token,
    list_samples,
    list_server_folders,
    new_token,
    open_workspace,
    resolve_server_folder,
    run_summary,
    safe_upload_name,
    saved_model_zip,
    start_run,
    working_config,
    workspace_runs,
)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    return root.resolve()


def test_tokens_are_random_and_strictly_shaped():
    first, second = new_token(), new_token()
    assert first != second and is_valid_token(first) and is_valid_token(second)
    for bad in [None, "", "abc", "../../../../etc/passwd", "A" * 21, "A" * 23, "A" * 21 + "/", "A" * 21 + ".",
                "Ä" * 22, "A" * 21 + "\n", 12345]:
        assert not is_valid_token(bad), bad


def test_open_workspace_creates_folders_and_refuses_bad_tokens(root):
    token = new_token()
    workspace = open_workspace(token)
    assert workspace.path == root / "workspaces" / token
    assert workspace.uploads.is_dir() and workspace.runs.is_dir()
    with pytest.raises(RetrainError, match="not valid"):
        open_workspace("../" + token[:19])
    assert not (root / "workspaces" / ".." / token[:19]).exists()


def test_data_root_defaults_to_data_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRAIN_STUDIO_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_root() == (tmp_path / "data").resolve() and data_root().is_dir()


def test_workspace_state_is_saved_on_disk(root):
    token = new_token()
    open_workspace(token).update_state(run="run-1", preset="Quick")
    again = open_workspace(token)
    assert again.state() == {"run": "run-1", "preset": "Quick"}
    assert json.loads((again.path / "workspace.json").read_text())["run"] == "run-1"


def test_server_folders_must_stay_under_the_data_root(root, tmp_path):
    (root / "photos" / "cats").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "photos", target_is_directory=True)
    open_workspace(new_token())

    assert resolve_server_folder("photos") == root / "photos"
    assert resolve_server_folder(str(root / "photos")) == root / "photos"
    assert resolve_server_folder("link_in") == root / "photos"
    for refused, message in [("../outside", "'..' is not allowed"), ("photos/../../outside", "'..' is not allowed"),
                             (str(outside), "outside the data folder"), ("/etc", "outside the data folder"),
                             ("link_out", "outside the data folder"), ("workspaces", "private workspaces"),
                             ("missing", "no such folder"), ("", "choose a folder"), ("a\x00b", "NUL")]:
        with pytest.raises(RetrainError, match=message):
            resolve_server_folder(refused)
    assert list_server_folders() == ["link_in", "photos"]


def test_samples_are_the_sub_folders_of_the_samples_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRAIN_STUDIO_SAMPLES", raising=False)
    assert list_samples() == {}
    (tmp_path / "flowers").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setenv("RETRAIN_STUDIO_SAMPLES", str(tmp_path))
    assert list_samples() == {"flowers": tmp_path / "flowers"}


def test_upload_names_cannot_escape_the_uploads_folder():
    assert safe_upload_name("../../etc/passwd") == "passwd"
    assert safe_upload_name("C:\\Users\\me\\my photos.zip") == "my_photos.zip"
    assert safe_upload_name("..") == "upload"
    assert len(safe_upload_name("x" * 500 + ".zip")) <= 80


def test_an_uploaded_zip_is_unpacked_into_the_workspace(root, tmp_path):
    workspace = open_workspace(new_token())
    zip_path = make_zip(make_class_folders(tmp_path / "shapes", {"red": 3, "blue": 3}), tmp_path / "shapes.zip",
                        top_folder="shapes")
    config = dataset_from_zip(workspace, "shapes.zip", zip_path.read_bytes())
    assert Path(config.image_dir).is_relative_to(workspace.uploads)
    dataset = load_dataset(config)
    assert dataset.classes == ["blue", "red"] and len(dataset.usable()) == 6
    assert dataset_name(config, workspace) == "shapes"
    again = dataset_from_zip(workspace, "shapes.zip", zip_path.read_bytes())  # same upload: unpacked once
    assert again == config


def test_unsafe_and_wrong_uploads_are_refused_with_a_message(root, tmp_path):
    workspace = open_workspace(new_token())
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../escaped.jpg", b"x")
    with pytest.raises(RetrainError, match="unsafe"):
        dataset_from_zip(workspace, "evil.zip", evil.read_bytes())
    assert not (workspace.path / "escaped.jpg").exists() and not (root / "escaped.jpg").exists()
    with pytest.raises(RetrainError, match="not a readable zip"):
        dataset_from_zip(workspace, "broken.zip", b"this is not a zip")
    with pytest.raises(RetrainError, match="not a .zip"):
        dataset_from_zip(workspace, "photo.jpg", b"\xff\xd8\xff")


def test_a_labels_csv_with_a_zip_of_images(root, tmp_path):
    workspace = open_workspace(new_token())
    images = make_class_folders(tmp_path / "flat", {"red": 3, "blue": 3})
    rows = [(path.name, path.parent.name) for path in sorted(images.rglob("*.jpg"))]
    flat = tmp_path / "images"
    flat.mkdir()
    for path in images.rglob("*.jpg"):
        path.rename(flat / path.name)
    csv_path = write_labels_csv(tmp_path / "labels.csv", rows)
    config = dataset_from_zip(workspace, "images.zip", make_zip(flat, tmp_path / "images.zip").read_bytes(),
                              "labels.csv", csv_path.read_bytes())
    assert config.label_csv and Path(config.label_csv).is_relative_to(workspace.uploads)
    assert load_dataset(config).classes == ["blue", "red"]
    assert dataset_name(config, workspace) == "images (CSV)"


def test_runs_belong_to_their_workspace(root, monkeypatch):
    launched = []
    monkeypatch.setattr("pipeline.workspace.launch_run", lambda path: launched.append(path) or 1)
    first, second = open_workspace(new_token()), open_workspace(new_token())
    with pytest.raises(RetrainError, match="choose a dataset"):
        start_run(first, working_config(first))
    first.update_state(dataset={"image_dir": str(root)})
    run = start_run(first, working_config(first))
    assert launched == [run.path] and run.path.parent == first.runs
    assert RunConfig.load(run.config).output.output_dir == str(run.path)
    assert RunConfig.load(run.config).dataset == DatasetConfig(image_dir=str(root))
    assert first.state()["run"] == run.name
    assert [r.name for r in workspace_runs(first)] == [run.name] and workspace_runs(second) == []
    assert find_run(second, run.name) is None
    assert find_run(first, "../" + second.token) is None and find_run(first, None) is None


def test_new_workspaces_start_from_the_quick_preset(root):
    config = working_config(open_workspace(new_token()))
    assert config.train.epochs == 15 and config.train.early_stopping == 4


def test_run_summary_and_differences(root, tmp_path):
    workspace = open_workspace(new_token())
    runs = []
    for name, epochs in [("a", 5), ("b", 9)]:
        run = RunDir(workspace.runs / name)
        run.path.mkdir()
        config = RunConfig()
        config.train.epochs, config.dataset.image_dir = epochs, "/x/shapes"
        config.save(run.config)
        run.write_status("done", 1.0, "done", test_accuracy=0.875, pid=os.getpid())
        runs.append(run)
    row = run_summary(runs[0])
    assert row["state"] == "done" and row["test accuracy"] == 87.5 and row["dataset"] == "shapes"
    assert config_differences(*runs) == [{"setting": "train.epochs", "a": "5", "b": "9"}]
    with pytest.raises(RetrainError, match="no SavedModel"):
        saved_model_zip(runs[0])
    (runs[0].path / "saved_model" / "1").mkdir(parents=True)
    (runs[0].path / "saved_model" / "1" / "saved_model.pb").write_bytes(b"pb")
    with zipfile.ZipFile(io.BytesIO(saved_model_zip(runs[0]))) as archive:
        assert archive.namelist() == ["saved_model/1/saved_model.pb"]


def test_imbalance_advice_says_what_to_do():
    assert imbalance_advice({"a": {"train": 10}, "b": {"train": 9}}) is None
    advice = imbalance_advice({"a": {"train": 40}, "b": {"train": 10}})
    assert "'a' has 40" in advice and "'b' only 10" in advice and "class size" in advice
    assert imbalance_advice({"a": {"train": 4}}) is None


def test_cell_images_on_and_off_the_diagonal():
    import pandas as pd

    wrong = [Prediction("red/1.jpg", "red", "blue", 0.9), Prediction("blue/2.jpg", "blue", "red", 0.6)]
    table = pd.DataFrame({"file": ["red/1.jpg", "red/3.jpg", "red/4.jpg", "blue/2.jpg"],
                          "label": ["red", "red", "red", "blue"], "split": ["test", "test", "train", "test"],
                          "status": ["ok"] * 4})
    assert [item["file"] for item in cell_images(wrong, table, "test", "red", "blue")] == ["red/1.jpg"]
    assert [item["file"] for item in cell_images(wrong, table, "test", "red", "red")] == ["red/3.jpg"]


def test_image_paths_from_a_report_stay_inside_the_dataset(tmp_path):
    (tmp_path / "data" / "red").mkdir(parents=True)
    (tmp_path / "data" / "red" / "1.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    assert image_path(tmp_path / "data", "red/1.jpg") == (tmp_path / "data" / "red" / "1.jpg").resolve()
    assert image_path(tmp_path / "data", "../secret.jpg") is None
    assert image_path(tmp_path / "data", "red/missing.jpg") is None
