"""Finding likely mistakes in the background: a process writing progress and results that any page reads back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from imagegen import make_class_folders

from pipeline.config import DatasetConfig, TrainConfig
from pipeline.errors import RetrainError
from pipeline.label_check_job import (
    cancel_label_check,
    label_check_status,
    map_points,
    run_label_check,
    start_label_check,
    status_line,
    suspects_page,
)
from pipeline.records import DamagedFile
from pipeline.runs import process_started


def _mislabelled(root):
    images = make_class_folders(root, {"red": 12, "green": 12, "blue": 12}, size=(40, 40))
    for number in range(3):  # three red photos filed as blue
        shutil.move(images / "red" / f"red_{number:03d}.jpg", images / "blue" / f"moved_{number}.jpg")
    return images


@pytest.fixture(scope="module")
def finished_check(tmp_path_factory, tiny_backbone_file):
    tmp = tmp_path_factory.mktemp("check")
    images = _mislabelled(tmp / "images")
    folder = tmp / "workspace" / "label-check"
    train = TrainConfig(architecture=str(tiny_backbone_file), bottleneck_layer="features")
    start_label_check(folder, DatasetConfig(image_dir=str(images)), train, tmp / "bn")
    seen = set()
    deadline = time.monotonic() + 300
    while (status := label_check_status(folder))["state"] in ("queued", "running"):
        seen.add(status.get("step"))
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["state"] == "done", (status, (folder / "job.log").read_text()[-2000:])
    return folder, seen


def test_the_check_runs_in_the_background_and_says_where_it_is(finished_check):
    folder, seen = finished_check
    assert seen & {"starting", "waiting for a free slot", "reading the dataset", "loading the backbone",
                   "reading photos through the backbone", "checking labels", "drawing the map"}
    status = label_check_status(folder)
    assert status_line(status).startswith("done: ") and "likely mistake" in status_line(status)


def test_results_are_kept_ordered_by_the_confidence_shown_and_paged(finished_check):
    folder, _ = finished_check
    first = suspects_page(folder, 1, per_page=2)
    assert first.total >= 3 and first.checked_images == 36 and len(first.signature) == 64
    everything = [s for page in range(1, first.pages + 1) for s in suspects_page(folder, page, per_page=2).suspects]
    assert len(everything) == first.total
    shown = [s["suggested_probability"] for s in everything]
    assert shown == sorted(shown, reverse=True)
    moved = [s for s in everything if s["file"].startswith("blue/moved_")]
    assert len(moved) == 3 and all(s["suggested"] == "red" for s in moved)
    assert suspects_page(folder, 99, per_page=2).page == first.pages  # clamped, not empty
    points = map_points(folder)
    assert len(points) == 36 and points["suspect"].sum() == first.total


def test_damaged_results_and_status_say_which_file(finished_check, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(finished_check[0], folder)
    (folder / "results.json").write_bytes((folder / "results.json").read_bytes()[:100])
    with pytest.raises(DamagedFile, match="results.json"):
        suspects_page(folder)
    (folder / "results.json").write_text(json.dumps({"format": "retrain-studio/label-check", "suspects": [1],
                                                     "points": [], "checked_images": 1}))
    with pytest.raises(DamagedFile, match="suspect is malformed"):
        suspects_page(folder)
    (folder / "status.json").write_bytes(b"\xff\xfe")
    status = label_check_status(folder)
    assert status["state"] == "damaged" and "status.json" in status["message"]
    with pytest.raises(RetrainError, match="no likely mistakes have been looked for yet"):
        suspects_page(tmp_path / "never")
    assert label_check_status(tmp_path / "never")["state"] == "none"


def test_a_job_whose_process_died_reads_as_failed_and_a_live_one_refuses_a_second(tmp_path, tiny_backbone_file):
    folder = tmp_path / "label-check"
    folder.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / "status.json").write_text(json.dumps({"state": "running", "step": "checking labels",
                                                    "pid": int(gone.stdout), "pid_started": "x"}))
    assert label_check_status(folder)["state"] == "failed"
    assert "stopped unexpectedly" in label_check_status(folder)["message"]
    (folder / "status.json").write_text(json.dumps({"state": "running", "step": "checking labels",
                                                    "pid": os.getpid(), "pid_started": process_started(os.getpid())}))
    with pytest.raises(RetrainError, match="already running"):
        start_label_check(folder, DatasetConfig(image_dir=str(tmp_path)), TrainConfig())
    cancel_label_check(folder)
    assert (folder / "cancel-requested").exists()


def test_a_cancelled_check_says_so(tmp_path, tiny_backbone_file):
    images = _mislabelled(tmp_path / "images")
    folder = tmp_path / "label-check"
    folder.mkdir()
    train = TrainConfig(architecture=str(tiny_backbone_file), bottleneck_layer="features")
    (folder / "request.json").write_text(json.dumps({
        "format": "retrain-studio/label-check", "dataset": DatasetConfig(image_dir=str(images)).__dict__,
        "train": train.__dict__, "bottleneck_dir": str(tmp_path / "bn"), "method": "pca"}))
    (folder / "cancel-requested").touch()
    run_label_check(folder)
    assert label_check_status(folder)["state"] == "cancelled"
