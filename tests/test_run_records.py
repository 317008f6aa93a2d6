"""Runs say what they were trained on, show one way in tables, and warn when their test split is too small."""

from __future__ import annotations

import json
import time

import pytest
from imagegen import make_class_folders

from pipeline.__main__ import main
from pipeline.config import DatasetConfig
from pipeline.evaluate import MIN_TEST_IMAGES, ClassScores, Report, small_test_split_warning
from pipeline.run_dataset import dataset_display_name, dataset_line, run_dataset_summary
from pipeline.run_rows import format_duration, format_percent, run_row, run_times
from pipeline.runs import RunDir


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_backbone_file):
    """A whole run by the CLI on 2 classes of 8 photos: its test split holds a photo or two."""
    tmp = tmp_path_factory.mktemp("small")
    images = make_class_folders(tmp / "bees-and-ants", {"ants": 8, "bees": 8}, size=(40, 40))
    run_dir = tmp / "run"
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            [
                "train",
                "--image_dir",
                str(images),
                "--output_dir",
                str(run_dir),
                "--architecture",
                str(tiny_backbone_file),
                "--bottleneck_layer",
                "features",
                "--bottleneck_dir",
                str(tmp / "bn"),
                "--how_many_training_steps",
                "20",
                "--export_formats",
                "keras",
            ]
        )
    assert code == 0, err.getvalue()
    return run_dir, out.getvalue(), err.getvalue()


def test_a_run_records_its_dataset_in_its_folder_and_report(small_run):
    run_dir = small_run[0]
    summary = run_dataset_summary(run_dir)
    assert summary["known"] and summary["name"] == "bees-and-ants"
    assert summary["images"] == 16 and summary["classes"] == 2 and len(summary["signature"]) == 64
    report = json.loads((run_dir / "report.json").read_text())
    assert report["dataset"]["signature"] == summary["signature"]
    assert dataset_line(summary) == "bees-and-ants · 16 images · 2 classes"


def test_a_small_test_split_is_said_in_the_report_the_status_and_the_cli(small_run):
    run_dir, printed = small_run[:2]
    report = json.loads((run_dir / "report.json").read_text())
    warning = report["test_split_warning"]
    assert "rough guess" in warning and "test percentage (now 10%, --testing_percentage)" in warning
    assert RunDir(run_dir).status()["test_split_warning"] == warning
    assert f"warning: {warning}" in printed


def test_the_row_of_a_finished_run_is_all_text(small_run):
    row = run_row(RunDir(small_run[0]))
    assert all(isinstance(value, str) and value and "None" not in value for value in row.values())
    assert row["test accuracy"].endswith("%") and " %" not in row["test accuracy"]
    assert row["dataset"] == "bees-and-ants · 16 images · 2 classes"
    assert row["duration"].endswith((" s", " min")) and row["queue wait"] != "—"


def test_old_and_damaged_runs_show_unknown_dataset(tmp_path, small_run):
    old = RunDir(tmp_path / "old")
    old.path.mkdir()
    assert run_dataset_summary(old.path) == {
        "name": "unknown dataset",
        "images": None,
        "classes": None,
        "signature": "",
        "known": False,
    }
    row = run_row(old)
    assert row["dataset"] == "unknown dataset" and "None" not in "".join(row.values())
    (old.path / "dataset.json").write_bytes(b'{"name": "x", "ima')  # truncated
    (old.path / "report.json").write_bytes(b"\xff\xfe")
    assert run_dataset_summary(old.path)["name"] == "unknown dataset"
    # A run from before dataset.json: its manifest and config still tell
    before = tmp_path / "before"
    before.mkdir()
    for name in ("dataset_manifest.csv", "config.json"):
        (before / name).write_bytes((small_run[0] / name).read_bytes())
    summary = run_dataset_summary(before)
    assert (summary["name"], summary["images"], summary["classes"], summary["signature"]) == (
        "bees-and-ants",
        16,
        2,
        "",
    )


def test_durations_leave_out_the_wait_in_the_queue():
    status = {"state": "done", "started": 1000.0, "working_since": 1600.0, "finished": 1725.0, "updated": 1725.0}
    assert run_times(status) == {"queued_seconds": 600.0, "working_seconds": 125.0}
    waiting = {"state": "queued", "started": 1000.0, "updated": 1010.0}
    assert run_times(waiting, now=1090.0) == {"queued_seconds": 90.0, "working_seconds": None}
    assert format_duration(125) == "2 min 05 s" and format_duration(None) == "—"
    assert format_duration(3720) == "1 h 02 min" and format_duration(42.4) == "42 s"
    assert format_duration(0.84) == "0.8 s" and format_duration(9.96) == "10 s"  # a NumPy head's second
    assert format_percent(0.95) == "95.0%" and format_percent(None) == "—"


def test_status_marks_when_the_work_began(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_status("queued", 0.0, "waiting")
    assert "working_since" not in run.status()
    before = time.time()
    run.write_status("caching", 0.1, "caching")
    began = run.status()["working_since"]
    assert began >= before
    run.write_status("done", 1.0, "done")
    assert run.status()["working_since"] == began
    run.write_status("queued", 0.0, "again")  # a rerun in the same folder waits anew
    assert "working_since" not in run.status()


def _report(supports: dict[str, int], evaluated_on: str = "test") -> Report:
    scores = {label: ClassScores(1.0, 1.0, 1.0, n) for label, n in supports.items()}
    return Report(
        1.0, 1.0, sum(supports.values()), list(supports), scores, [], [], extra={"evaluated_on": evaluated_on}
    )


def test_test_split_warning_thresholds():
    assert small_test_split_warning(_report({"a": 10, "b": 10}), 10) is None
    assert small_test_split_warning(_report({"a": 10, "b": 4}), 10) is not None  # one class short
    assert "b (4)" in small_test_split_warning(_report({"a": 10, "b": 4}), 10)
    assert small_test_split_warning(_report({"a": 9, "b": 9}), 10) is not None  # 18 < MIN_TEST_IMAGES in all
    assert MIN_TEST_IMAGES == 20
    one = small_test_split_warning(_report({"a": 1, "b": 0}), 10)
    assert "only 1 test image(s)" in one and "100 points" in one
    assert "measures nothing" in small_test_split_warning(_report({"a": 0, "b": 0}), 10)
    assert "test folder" in small_test_split_warning(_report({"a": 1, "b": 1}), None)
    assert "validation image" in small_test_split_warning(_report({"a": 1, "b": 1}, "validation"), 10)


def test_display_names_of_uploads_zips_and_folders(tmp_path):
    upload = tmp_path / "ws" / "uploads" / "0123456789ab-ants_bees.unpacked" / "hymenoptera"
    assert dataset_display_name(DatasetConfig(image_dir=str(upload))) == "ants_bees"
    assert dataset_display_name(DatasetConfig(image_dir=str(upload), label_csv="x.csv")) == "ants_bees (CSV)"
    assert dataset_display_name(DatasetConfig(zip="/data/flowers.zip")) == "flowers"
    assert dataset_display_name(DatasetConfig(image_dir="/data/flowers")) == "flowers"


def test_a_row_of_a_status_with_absurd_times_is_text_not_a_crash(tmp_path):
    """status.json from a broken clock or edited by hand: times out of the platform's range (attack2)."""
    import json

    for name, status in {
        "huge": {"state": "done", "started": 1e300, "finished": 1e300},
        "negative": {"state": "done", "started": -1e18, "finished": 5},
        "long": {"state": "done", "started": 100, "working_since": -1e300, "finished": 1e300},
    }.items():
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        run.status_file.write_text(json.dumps(status))
        row = run_row(run)
        assert all(isinstance(value, str) and len(value) < 80 for value in row.values()), row
    assert format_duration(float("nan")) == "—" and format_duration(1e300) == "—"


def test_a_dataset_record_with_negative_counts_is_not_shown(tmp_path):
    import json

    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "images": -3, "classes": 2}))
    assert run_dataset_summary(tmp_path)["known"] is False
