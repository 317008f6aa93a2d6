"""Finding likely mistakes in the background: a process writing progress and results that any page reads back."""

from __future__ import annotations

import contextlib
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
    assert seen & {
        "starting",
        "waiting for a free slot",
        "reading the dataset",
        "loading the backbone",
        "reading photos through the backbone",
        "checking labels",
        "drawing the map",
    }
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
    (folder / "results.json").write_text(
        json.dumps({"format": "retrain-studio/label-check", "suspects": [1], "points": [], "checked_images": 1})
    )
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
    (folder / "status.json").write_text(
        json.dumps({"state": "running", "step": "checking labels", "pid": int(gone.stdout), "pid_started": "x"})
    )
    assert label_check_status(folder)["state"] == "failed"
    assert "stopped unexpectedly" in label_check_status(folder)["message"]
    (folder / "status.json").write_text(
        json.dumps(
            {
                "state": "running",
                "step": "checking labels",
                "pid": os.getpid(),
                "pid_started": process_started(os.getpid()),
            }
        )
    )
    with pytest.raises(RetrainError, match="already running"):
        start_label_check(folder, DatasetConfig(image_dir=str(tmp_path)), TrainConfig())
    cancel_label_check(folder)
    assert (folder / "cancel-requested").exists()


def test_a_cancelled_check_says_so(tmp_path, tiny_backbone_file):
    images = _mislabelled(tmp_path / "images")
    folder = tmp_path / "label-check"
    folder.mkdir()
    train = TrainConfig(architecture=str(tiny_backbone_file), bottleneck_layer="features")
    (folder / "request.json").write_text(
        json.dumps(
            {
                "format": "retrain-studio/label-check",
                "dataset": DatasetConfig(image_dir=str(images)).__dict__,
                "train": train.__dict__,
                "bottleneck_dir": str(tmp_path / "bn"),
                "method": "pca",
            }
        )
    )
    (folder / "cancel-requested").touch()
    run_label_check(folder)
    assert label_check_status(folder)["state"] == "cancelled"


# ---- Hostile files and callers (attack2) ----------------------------------------------------------------------------


@pytest.mark.parametrize("pid", ['"abc"', "-1", "100000000000000000000000", "1.5", "true", "[1]"])
def test_a_status_with_a_malformed_pid_is_damaged_not_running_forever(tmp_path, pid):
    """pid -1 or true would make os.kill(pid, 0) succeed (every process / init): a check "running" forever
    that refuses every new one; a string or a huge number raised."""
    folder = tmp_path / "label-check"
    folder.mkdir()
    (folder / "status.json").write_text(f'{{"state": "running", "step": "checking labels", "pid": {pid}}}')
    status = label_check_status(folder)
    assert status["state"] == "damaged" and "pid" in status["message"] and "status.json" in status["message"]
    cancel_label_check(folder)  # nothing to cancel: no error either


def _results(folder, **changes):
    suspect = {
        "file": "f",
        "path": "p",
        "label": "a",
        "suggested": "b",
        "label_probability": 0.1,
        "suggested_probability": 0.9,
    }
    results = {
        "format": "retrain-studio/label-check",
        "checked_images": 3,
        "signature": "s",
        "architecture": "a",
        "points": [{"x": 0.0, "y": 1.0, "file": "f", "path": "p", "label": "a", "split": "", "suspect": True}],
        "suspects": [suspect] * 45,
        **changes,
    }
    folder.mkdir(exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_paging_edge_cases_are_clamped_not_raised(tmp_path):
    folder = _results(tmp_path / "lc")
    assert [suspects_page(folder, page).page for page in (0, -5, 3, 99, 10**30)] == [1, 1, 3, 3, 3]
    assert suspects_page(folder, 2.0).page == 2 and len(suspects_page(folder, 2.0).suspects) == 20
    assert suspects_page(folder, float("nan")).page == 1
    for per_page in (0, -3):
        assert suspects_page(folder, 1, per_page).pages == 45  # one a page at least
    assert suspects_page(_results(tmp_path / "none", suspects=[]), 5).pages == 1


@pytest.mark.parametrize(
    "changes", [{"points": [1, "x", None]}, {"points": [{"x": "a"}]}, {"signature": 5}, {"architecture": ["a"]}]
)
def test_damaged_points_or_signature_say_which_file(tmp_path, changes):
    folder = _results(tmp_path / "lc", **changes)
    with pytest.raises(DamagedFile, match="results.json"):
        suspects_page(folder)
    with pytest.raises(DamagedFile, match="results.json"):
        map_points(folder)


def test_two_starts_at_once_start_one_check(tmp_path, monkeypatch):
    """Two tabs pressing the button together: the second must see the first's status, not both start (attack2)."""
    import threading

    import pipeline.label_check_job as job

    folder = tmp_path / "label-check"
    real_status, barrier = job.label_check_status, threading.Barrier(2, timeout=30)

    def slow_status(where):
        status = real_status(where)
        if threading.current_thread() is not threading.main_thread():
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=2)  # both have read "none" before either writes "queued" (without a lock)
        return status

    monkeypatch.setattr(job, "label_check_status", slow_status)
    outcomes = []

    def press():
        try:
            outcomes.append(
                start_label_check(
                    folder, DatasetConfig(image_dir=str(tmp_path / "missing")), TrainConfig(), tmp_path / "bn"
                )
            )
        except RetrainError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=press) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    pids = [outcome for outcome in outcomes if isinstance(outcome, int)]
    assert len(pids) == 1 and any("already running" in str(outcome) for outcome in outcomes), outcomes
    deadline = time.monotonic() + 120
    while real_status(folder)["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
