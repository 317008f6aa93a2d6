"""Each stage of a run has its own honest line (in status.json and the CLI), and the run an estimate."""

from __future__ import annotations

import contextlib
import io

from imagegen import make_class_folders

from pipeline.__main__ import main
from pipeline.progress import Progress, ProgressBars, print_progress
from pipeline.runs import RunDir
from pipeline.stage_progress import StageBoard, run_estimate_line, run_stage_keys, stage_lines


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_board_lines_for_counted_uncounted_done_and_skipped_stages():
    clock = Clock()
    board = StageBoard(run_stage_keys(["keras", "tflite"], augmenting=True, fine_tuning=False), clock)
    board.begin("backbone", message="efficientnet_lite0")
    clock.now += 31
    lines = stage_lines(board.to_status(), now=clock.now)
    assert lines[1] == "loading the backbone: working, 31 s so far — efficientnet_lite0"
    assert "0/" not in lines[1]
    board.end("backbone")
    board.from_progress("caching", Progress("caching", 0, 0, 0.0, None, "all 397 reused"))
    board.from_progress("augmenting", Progress("augmenting", 120, 397, 12.34, 22.5))
    lines = stage_lines(board.to_status(), now=clock.now)
    assert lines[2] == "preparing the backbone: waiting"
    assert lines[3] == "caching bottlenecks: skipped — all 397 reused"
    assert lines[4] == "augmenting: 120/397 images (12.3/s, about 22 s left)"
    assert lines[-2:] == ["export keras: waiting", "export tflite: waiting"]
    # Stages to come have no honest estimate yet: the whole-run figure is a lower bound and says so
    assert run_estimate_line(board.to_status()) == "whole run: at least 22 s left"


def test_whole_run_estimate_is_plain_once_every_stage_left_is_measured():
    board = StageBoard(["training", "export keras"], Clock())
    board.advance("training", 50, 100, 10.0, 5.0, unit="steps")
    board.skip("export keras", "not asked for")
    assert run_estimate_line(board.to_status()) == "whole run: about 5 s left"
    assert run_estimate_line({}) == ""


def test_malformed_stages_are_left_out_not_raised():
    status = {"stages": [{"key": "training", "state": "running", "done": "x", "total": [1]}, "junk", {"no": 1}]}
    assert stage_lines(status) == ["training: working"]
    assert stage_lines({"stages": "nope"}) == [] and stage_lines({}) == []


def test_cli_progress_prints_uncounted_and_empty_stages_as_words(capsys):
    print_progress(Progress("loading the backbone", 0, 0, 0.0, None, "tiny.keras", indeterminate=True))
    print_progress(Progress("caching bottlenecks", 0, 0, 0.0, None, "skipped: all 12 cached"))
    err = capsys.readouterr().err
    assert "loading the backbone: tiny.keras" in err and "caching bottlenecks: skipped: all 12 cached" in err
    assert "0/0" not in err


def test_control_characters_in_a_message_never_reach_a_progress_line_raw(capsys):
    """A name given by a user (a backbone file, a status.json edited by hand) must not break or rewrite the line."""
    name = "my\nmodel\r\x1b[2J\u2028\u202e.keras"  # U+202E would show the rest of the line reversed
    print_progress(Progress("loading the backbone", 0, 0, 0.0, None, name, indeterminate=True))
    print_progress(Progress("caching bottlenecks", 3, 3, 1.0, 0.0, name))
    bars = ProgressBars()
    bars(Progress("loading the backbone", 0, 0, 0.0, None, name, indeterminate=True))
    bars.close()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u2028" not in err and "\u202e" not in err
    lines = [line.rstrip() for line in err.replace("\r", "\n").splitlines() if line.strip()]  # tqdm redraws with \r
    assert err.count("\n") == 3 and all(line.endswith("my\\nmodel\\r\\x1b[2J\\u2028\\u202e.keras") for line in lines), (
        err
    )
    board = StageBoard(["backbone"], Clock())
    board.begin("backbone", message=name)
    assert stage_lines(board.to_status(), now=1000.0) == [
        "loading the backbone: working, 0 s so far — my\\nmodel\\r\\x1b[2J\\u2028\\u202e.keras"
    ]


def test_tqdm_bars_per_stage_including_an_uncounted_one(capsys):
    bars = ProgressBars()
    bars(Progress("export tflite", 0, 0, 0.0, None, "writing and checking", indeterminate=True))
    bars(Progress("export tflite", 1, 1, 0.0, 0.0, "tflite ready"))
    bars(Progress("caching bottlenecks", 0, 0, 0.0, None, "all 12 reused"))
    bars(Progress("training", 5, 10, 2.0, 2.5))
    bars(Progress("training", 10, 10, 2.0, 0.0))
    err = capsys.readouterr().err
    assert "export tflite" in err and "tflite ready" in err
    assert "caching bottlenecks: all 12 reused" in err and "10/10" in err
    assert "0/0" not in err


def test_a_run_writes_every_stage_and_a_rerun_says_caching_had_nothing_to_do(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 10, "blue": 10}, size=(40, 40))
    args = [
        "train",
        "--image_dir",
        str(images),
        "--architecture",
        str(tiny_backbone_file),
        "--bottleneck_layer",
        "features",
        "--bottleneck_dir",
        str(tmp_path / "bn"),
        "--how_many_training_steps",
        "10",
        "--export_formats",
        "keras",
        "tflite",
    ]
    printed = {}
    for run in ("first", "second"):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert main([*args, "--output_dir", str(tmp_path / run)]) == 0
        printed[run] = err.getvalue()
    # The first run prepares the backbone as its own step, ended before caching counts a photo.
    first = {stage["key"]: stage for stage in RunDir(tmp_path / "first").status()["stages"]}
    assert first["preparing"]["state"] == "done" and first["preparing"]["finished"] <= first["caching"]["started"]
    assert "preparing the backbone: starting TensorFlow and loading the model" in printed["first"]
    status = RunDir(tmp_path / "second").status()
    keys = [stage["key"] for stage in status["stages"]]
    assert keys == [
        "dataset",
        "backbone",
        "preparing",
        "caching",
        "augmenting",
        "training",
        "evaluating",
        "export keras",
        "export tflite",
    ]
    assert all(stage["state"] in ("done", "skipped") for stage in status["stages"])
    lines = stage_lines(status)
    assert any(
        line.startswith("caching bottlenecks: done") and "all 20 reused from the cache" in line for line in lines
    ), lines
    assert "augmenting: skipped — no augmented copies asked for" in lines
    assert "preparing the backbone: skipped — not needed: every bottleneck was in the cache" in lines
    assert any(line.startswith("export tflite: done in") for line in lines)
    assert status["run_eta_seconds"] == 0.0 and not status["run_eta_is_lower_bound"]
    assert "export tflite" in printed["second"] and "loading the backbone" in printed["second"]
    assert "0/0" not in printed["second"] and "0/0" not in status["step"]


def test_a_run_that_stops_early_says_where_and_what_was_not_reached():
    board = StageBoard(["caching", "training", "export keras"], Clock())
    board.advance("caching", 10, 40, 5.0, 6.0)
    board.settle("cancelled")
    assert stage_lines(board.to_status()) == [
        "caching bottlenecks: cancelled",
        "training: not reached",
        "export keras: not reached",
    ]
    assert run_estimate_line(board.to_status()) == ""


def test_a_lower_bound_of_zero_seconds_is_not_shown():
    """A stage in its last fraction of a second with stages to come said "whole run: at least 0 s left" (walk6)."""
    board = StageBoard(["caching", "training"], Clock())
    board.advance("caching", 39, 40, 100.0, 0.01)
    assert run_estimate_line(board.to_status()) == ""
    board.advance("caching", 20, 40, 1.0, 20.0)
    assert run_estimate_line(board.to_status()) == "whole run: at least 20 s left"
    assert run_estimate_line({"run_eta_seconds": 0.2, "run_eta_is_lower_bound": False}) == "whole run: about 0 s left"


def test_non_finite_or_absurd_numbers_in_stages_are_left_out_not_raised():
    """Python's json reads NaN and Infinity: a damaged status.json can hold them (attack2)."""
    nan, inf = float("nan"), float("inf")
    for eta in (inf, nan, -5, 1e300):
        assert run_estimate_line({"run_eta_seconds": eta}) == ""
    stages = [
        {"key": "training", "state": "running", "started": nan},
        {"key": "caching", "state": "running", "total": 5, "done": 1, "eta_seconds": inf},
        {"key": "evaluating", "state": "running", "total": inf, "done": 1},
        {"key": "fine-tuning", "state": "running", "total": 5, "done": nan},
        {"key": "dataset", "state": "done", "started": -1e308, "finished": 1e308},
    ]
    assert stage_lines({"stages": stages}, now=1000.0) == [
        "training: working",
        "caching bottlenecks: 1/5",
        "evaluating: working",
        "fine-tuning: 0/5",
        "reading the dataset: done",
    ]
