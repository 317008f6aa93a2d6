"""Session workspaces: token checks, the data-root fence, uploads through safe_extract (atomic, within a quota),
per-session runs (capped, checked), decisions about images, and what the pages show."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from imagegen import make_class_folders, make_zip, write_labels_csv

from pipeline.augment import balance_counts
from pipeline.config import AugmentConfig, DatasetConfig, RunConfig
from pipeline.dataset import load_dataset
from pipeline.errors import RetrainError
from pipeline.evaluate import Prediction, cell_images
from pipeline.run_rows import run_row
from pipeline.runs import RunDir
from pipeline.studio.datasets import (
    dataset_config,
    dataset_name,
    decision_text,
    decisions,
    image_path,
    imbalance_advice,
    record_decision,
    undo_decision,
)
from pipeline.studio.hosting import data_root, list_samples
from pipeline.studio.launch import start_run
from pipeline.studio.next_run import working_config
from pipeline.studio.predict_zip import predictions_path, save_predictions
from pipeline.studio.run_history import (
    config_differences,
    current_run,
    find_run,
    forget_missing_run,
    is_waiting_for_slot,
    new_run_name,
    saved_model_zip,
    workspace_runs,
)
from pipeline.studio.server_folders import list_server_folders, resolve_server_folder
from pipeline.studio.uploads import dataset_from_zip, safe_upload_name, save_upload
from pipeline.studio.workspaces import is_valid_token, new_token, open_workspace


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    return root.resolve()


def test_tokens_are_random_and_strictly_shaped():
    first, second = new_token(), new_token()
    assert first != second and is_valid_token(first) and is_valid_token(second)
    for bad in [
        None,
        "",
        "abc",
        "../../../../etc/passwd",
        "A" * 21,
        "A" * 23,
        "A" * 21 + "/",
        "A" * 21 + ".",
        "Ä" * 22,
        "A" * 21 + "\n",
        12345,
    ]:
        assert not is_valid_token(bad), bad


def test_open_workspace_creates_folders_and_refuses_bad_tokens(root):
    token = new_token()
    workspace = open_workspace(token)
    assert workspace.path == root / "workspaces" / token
    assert workspace.uploads.is_dir() and workspace.runs.is_dir()
    with pytest.raises(RetrainError, match="not valid"):
        open_workspace("../" + token[:19])
    assert not (root / "workspaces" / ".." / token[:19]).exists()


def test_a_symlink_planted_as_a_workspace_is_refused_before_anything_is_created(root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    token = new_token()
    (root / "workspaces").mkdir()
    (root / "workspaces" / token).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RetrainError, match="link"):
        open_workspace(token)
    assert list(elsewhere.iterdir()) == [], "no uploads/ or runs/ was made through the link"
    inside = new_token()
    (root / "workspaces" / inside).symlink_to(root / "workspaces" / token, target_is_directory=True)
    with pytest.raises(RetrainError, match="link"):
        open_workspace(inside)


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
    (root / "link_root").symlink_to(root, target_is_directory=True)
    workspace = open_workspace(new_token())

    assert resolve_server_folder("photos") == root / "photos"
    assert resolve_server_folder(str(root / "photos")) == root / "photos"
    assert resolve_server_folder("link_in") == root / "photos"
    for refused, message in [
        ("../outside", "'..' is not allowed"),
        ("photos/../../outside", "'..' is not allowed"),
        (str(outside), "outside the data folder"),
        ("/etc", "outside the data folder"),
        ("link_out", "outside the data folder"),
        ("workspaces", "private workspaces"),
        (".", "the data folder itself"),
        ("./", "the data folder itself"),
        (str(root), "the data folder itself"),
        ("link_root", "the data folder itself"),
        ("photos/..", "'..' is not allowed"),
        (str(root.parent), "outside the data folder"),
        ("/", "outside the data folder"),
        (str(workspace.path), "private workspaces"),
        ("workspaces/" + workspace.token + "/uploads", "private workspaces"),
        ("missing", "no such folder"),
        ("", "choose a folder"),
        ("a\x00b", "NUL"),
    ]:
        with pytest.raises(RetrainError, match=message):
            resolve_server_folder(refused)
    assert list_server_folders() == ["link_in", "photos"], "a link to the root itself is not offered"


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
    zip_path = make_zip(
        make_class_folders(tmp_path / "shapes", {"red": 3, "blue": 3}), tmp_path / "shapes.zip", top_folder="shapes"
    )
    config = dataset_from_zip(workspace, "shapes.zip", zip_path.read_bytes())
    assert Path(config.image_dir).is_relative_to(workspace.uploads)
    dataset = load_dataset(config)
    assert dataset.classes == ["blue", "red"] and len(dataset.usable()) == 6
    assert dataset_name(config, workspace) == "shapes"
    again = dataset_from_zip(workspace, "shapes.zip", zip_path.read_bytes())  # same upload: unpacked once
    assert again == config


def test_a_crash_while_saving_an_upload_leaves_no_half_file_to_reuse(root, monkeypatch):
    workspace = open_workspace(new_token())
    data = b"PK" + bytes(range(256)) * 64

    def crash(*args):
        raise OSError("disk pulled out")

    monkeypatch.setattr("pipeline.files.os.replace", crash)
    with pytest.raises(OSError):
        save_upload(workspace, "photos.zip", data)
    assert list(workspace.uploads.iterdir()) == [], "neither the file nor its temporary copy is left"
    monkeypatch.undo()
    assert save_upload(workspace, "photos.zip", data).read_bytes() == data


def test_uploads_are_capped_per_workspace(root, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", "1")
    workspace = open_workspace(new_token())
    rng = np.random.default_rng(0)
    save_upload(workspace, "a.bin", rng.bytes(700_000))
    with pytest.raises(RetrainError, match=r"over its quota of 1 MB .*start a new workspace"):
        save_upload(workspace, "b.bin", rng.bytes(400_000))
    kept = list(workspace.uploads.iterdir())
    assert len(kept) == 1
    save_upload(workspace, "a.bin", kept[0].read_bytes())  # already there: no new bytes, no refusal
    # What a zip unpacks to counts too, and a zip refused for it is not kept.
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("red/1.jpg", b"\0" * 600_000)
        archive.writestr("blue/1.jpg", b"\0" * 600_000)
    with pytest.raises(RetrainError, match="quota"):
        dataset_from_zip(workspace, "big.zip", big.read_bytes())
    assert list(workspace.uploads.iterdir()) == kept
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", "lots")
    with pytest.raises(RetrainError, match="whole number"):
        save_upload(workspace, "c.bin", b"x")


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
    config = dataset_from_zip(
        workspace,
        "images.zip",
        make_zip(flat, tmp_path / "images.zip").read_bytes(),
        "labels.csv",
        csv_path.read_bytes(),
    )
    assert config.label_csv and Path(config.label_csv).is_relative_to(workspace.uploads)
    assert load_dataset(config).classes == ["blue", "red"]
    assert dataset_name(config, workspace) == "images (CSV)"


def test_runs_belong_to_their_workspace(root, monkeypatch):
    launched = []
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: launched.append(root) or [])
    first, second = open_workspace(new_token()), open_workspace(new_token())
    with pytest.raises(RetrainError, match="choose a dataset"):
        start_run(first, working_config(first))
    first.update_state(dataset={"image_dir": str(root)})
    run = start_run(first, working_config(first))
    assert launched == [root] and run.path.parent == first.runs
    saved = RunConfig.load(run.config)
    assert saved.output.output_dir == str(run.path)
    assert saved.dataset == DatasetConfig(image_dir=str(root)), "no decisions yet: none in the run"
    assert first.state()["run"] == run.name
    assert [r.name for r in workspace_runs(first)] == [run.name] and workspace_runs(second) == []
    assert find_run(second, run.name) is None
    for bad in ["../" + second.token, None, ".", "..", "", "run-first", run.name + "/..", run.name + "\n", 7]:
        assert find_run(first, bad) is None, bad


def test_a_workspace_may_have_only_a_few_runs_waiting(root, monkeypatch):
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])  # all stay in the queue
    workspace = open_workspace(new_token())
    workspace.update_state(dataset={"image_dir": str(root)})
    runs = [start_run(workspace, working_config(workspace)) for _ in range(2)]
    with pytest.raises(RetrainError, match="already has 2 runs queued or training"):
        start_run(workspace, working_config(workspace))
    runs[0].write_status("done", 1.0, "done")
    start_run(workspace, working_config(workspace))  # one finished: room again
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE", "3")
    start_run(workspace, working_config(workspace))


def test_settings_out_of_range_are_refused_before_a_run_starts(root, monkeypatch):
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: pytest.fail("must not launch"))
    workspace = open_workspace(new_token())
    workspace.update_state(dataset={"image_dir": str(root)})
    config = working_config(workspace)
    config.train.epochs = 0
    with pytest.raises(RetrainError, match=r"train\.epochs = 0 is out of range"):
        start_run(workspace, config)
    assert workspace_runs(workspace) == []


def test_runs_list_newest_first_by_name_and_survive_a_run_vanishing(root, monkeypatch):
    workspace = open_workspace(new_token())
    names = ["run-20240102-090000-abcd", "run-20240101-120000-0001", "run-20240103-000000-ffff"]
    for name in names:
        (workspace.runs / name).mkdir()
        RunConfig().save(workspace.runs / name / "config.json")
    RunConfig().save(workspace.runs / names[1] / "config.json")  # a queued run starting rewrites its config
    (workspace.runs / "notes").mkdir()
    assert [run.name for run in workspace_runs(workspace)] == sorted(names, reverse=True)
    vanished = workspace.runs / "run-20240104-000000-dead"
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: [*real_iterdir(self), vanished])  # deleted mid-listing
    assert [run.name for run in workspace_runs(workspace)] == sorted(names, reverse=True)
    assert new_run_name() > names[2] and find_run(workspace, new_run_name()) is None


def test_a_deleted_current_run_is_forgotten(root):
    workspace = open_workspace(new_token())
    name = new_run_name()
    (workspace.runs / name).mkdir()
    RunConfig().save(workspace.runs / name / "config.json")
    workspace.update_state(run=name)
    assert forget_missing_run(workspace) is None and current_run(workspace).name == name
    (workspace.runs / name / "config.json").unlink()
    (workspace.runs / name).rmdir()
    assert forget_missing_run(workspace) == name
    assert workspace.state()["run"] is None and forget_missing_run(workspace) is None


def test_a_queued_run_waits_for_a_slot_only_when_it_says_so():
    assert is_waiting_for_slot({"state": "queued", "waiting": True})
    assert not is_waiting_for_slot({"state": "queued", "step": "waiting to start"})
    assert not is_waiting_for_slot({"state": "training", "waiting": True}) and not is_waiting_for_slot({})


def test_decisions_go_to_the_workspace_and_change_the_next_run_not_the_files(root, tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])
    images = make_class_folders(tmp_path / "shapes", {"red": 4, "blue": 4})
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in images.rglob("*.jpg")}
    workspace = open_workspace(new_token())
    workspace.update_state(dataset={"image_dir": str(images)})  # chosen before decisions existed
    config = dataset_config(workspace)
    assert Path(config.overrides).parent == workspace.path / "overrides"
    assert workspace.state()["dataset"]["overrides"] == config.overrides
    record_decision(workspace, "red/red_000.jpg", drop=True)
    record_decision(workspace, "blue/blue_001.jpg", label="red")
    overrides = decisions(workspace)
    assert overrides == {"drop": ["red/red_000.jpg"], "relabel": {"blue/blue_001.jpg": "red"}}
    assert decision_text(overrides, "red/red_000.jpg") == "dropped from training"
    assert decision_text(overrides, "blue/blue_001.jpg") == "relabelled as red"
    assert decision_text(overrides, "red/red_002.jpg") is None
    table = load_dataset(dataset_config(workspace), check_images=False).table.set_index("file")
    assert table.loc["red/red_000.jpg", "status"] == "dropped" and table.loc["blue/blue_001.jpg", "label"] == "red"
    run = start_run(workspace, working_config(workspace))
    snapshot = RunConfig.load(run.config).dataset.overrides
    assert snapshot == str(run.path / "overrides.json")
    undo_decision(workspace, "blue/blue_001.jpg")
    assert decisions(workspace) == {"drop": ["red/red_000.jpg"], "relabel": {}}
    assert json.loads(Path(snapshot).read_text())["relabel"] == {"blue/blue_001.jpg": "red"}, "the run keeps its own"
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in images.rglob("*.jpg")} == before
    other = open_workspace(new_token())
    other.update_state(dataset={"image_dir": str(images)})
    assert decisions(other) == {"drop": [], "relabel": {}}, "decisions are per workspace"


def test_balancing_counts_follow_the_seed_formula():
    counts = {"big": {"train": 40}, "mid": {"train": 15}, "small": {"train": 6}, "none": {"train": 0}}
    table = balance_counts(counts, AugmentConfig(class_size=40)).set_index(["when", "class"])["images"]
    assert {label: table["now", label] for label in counts} == {"big": 40, "mid": 15, "small": 6, "none": 0}
    # floor(40 / n) - 1 copies of each image: 15 -> 1 copy (30), 6 -> 5 copies (36), 40 -> none.
    assert {label: table["after balancing", label] for label in counts} == {
        "big": 40,
        "mid": 30,
        "small": 36,
        "none": 0,
    }
    off = balance_counts(counts, AugmentConfig()).set_index(["when", "class"])["images"]
    assert off["after balancing", "small"] == 6


def test_predictions_csv_is_kept_in_the_workspace_not_next_to_the_photos(root, tmp_path):
    workspace = open_workspace(new_token())
    zip_path = save_upload(
        workspace,
        "batch.zip",
        make_zip(make_class_folders(tmp_path / "b", {"red": 2}), tmp_path / "b.zip").read_bytes(),
    )
    csv_path = predictions_path(workspace, zip_path, "run-20240101-000000-abcd", 3)
    assert csv_path.parent == workspace.path / "predictions" and csv_path.name.endswith("-top3.csv")
    save_predictions(
        [{"file": str(tmp_path / "b" / "x.jpg"), "predictions": [{"label": "red", "score": 0.9}]}],
        csv_path,
        3,
        tmp_path / "b",
    )
    assert csv_path.read_text().splitlines()[1].startswith("x.jpg,red,0.9")
    assert [path.name for path in csv_path.parent.iterdir()] == [csv_path.name], "no temporary file left"


def test_new_workspaces_start_from_the_quick_preset(root):
    config = working_config(open_workspace(new_token()))
    assert config.train.epochs == 15 and config.train.early_stopping == 4


def test_run_row_and_differences(root, tmp_path):
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
    row = run_row(runs[0])
    assert row["state"] == "done" and row["test accuracy"] == "87.5%" and row["dataset"] == "unknown dataset"
    assert "None" not in row.values()
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
    assert "'a' has 40" in advice and "'b' only 10" in advice and "Balance classes" in advice
    assert imbalance_advice({"a": {"train": 4}}) is None


def test_cell_images_come_from_every_prediction_of_the_report():
    predictions = [
        Prediction("red/1.jpg", "red", "blue", 0.6),
        Prediction("red/2.jpg", "red", "blue", 0.9),
        Prediction("red/3.jpg", "red", "red", 0.99),
        Prediction("red/4.jpg", "red", "red", 0.55),
        Prediction("blue/5.jpg", "blue", "red", 0.7),
    ]
    assert [item["file"] for item in cell_images(predictions, "red", "blue")] == ["red/2.jpg", "red/1.jpg"]
    assert [item["file"] for item in cell_images(predictions, "red", "red")] == ["red/4.jpg", "red/3.jpg"]
    assert cell_images(predictions, "blue", "blue") == []
    assert cell_images(predictions, "red", "red")[0] == {
        "file": "red/4.jpg",
        "true_label": "red",
        "predicted_label": "red",
        "confidence": 0.55,
    }


def test_image_paths_from_a_report_stay_inside_the_dataset(tmp_path):
    (tmp_path / "data" / "red").mkdir(parents=True)
    (tmp_path / "data" / "red" / "1.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    assert image_path(tmp_path / "data", "red/1.jpg") == (tmp_path / "data" / "red" / "1.jpg").resolve()
    assert image_path(tmp_path / "data", "../secret.jpg") is None
    assert image_path(tmp_path / "data", "red/missing.jpg") is None


def test_start_run_refuses_an_untrainable_dataset_and_leaves_nothing(root, monkeypatch):
    from pipeline.studio.datasets import dataset_config

    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: pytest.fail("must not launch"))
    images = make_class_folders(root / "one_class", {"red": 6})
    workspace = open_workspace(new_token())
    workspace.update_state(dataset={"image_dir": str(images)})
    dataset = load_dataset(dataset_config(workspace), check_images=False)
    with pytest.raises(RetrainError, match="only one class"):
        start_run(workspace, working_config(workspace), dataset)
    assert workspace_runs(workspace) == [] and "run" not in workspace.state()


def test_configure_shows_the_config_start_run_writes(root, monkeypatch):
    from pipeline.studio.next_run import resolved_config

    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])
    images = make_class_folders(root / "colours", {"red": 6, "blue": 6})
    workspace = open_workspace(new_token())
    config = working_config(workspace)
    assert resolved_config(workspace, config) == config, "no dataset yet: nothing to resolve"
    workspace.update_state(dataset={"image_dir": str(images)})
    config.train.epochs = 3
    shown = resolved_config(workspace, config)
    run = start_run(workspace, config, load_dataset(shown.dataset, check_images=False))
    written = RunConfig.load(run.config)
    assert shown.dataset.image_dir == written.dataset.image_dir == str(images)
    assert shown.dataset.overrides and shown.train == written.train and written.train.epochs == 3
