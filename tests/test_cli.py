"""The CLI as retrain.py's users type it: --help everywhere, no abbreviations, the tutorial lines as written."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from imagegen import make_class_folders

from pipeline.__main__ import COMMANDS, DISTORTION_COPIES, build_parser, config_from_args, switch_distortions_on
from pipeline.config import TrainConfig
from pipeline.runs import RunDir
from pipeline.train import schedule

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_abbreviations_are_not_taken(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["predict", "--model", "run", "--image_d", "photos"])
    assert exit_.value.code == 2 and "--image_d" in capsys.readouterr().err
    args = build_parser().parse_args(["predict", "--graph", "g.keras", "--image", "a.jpg", "--image", "b.jpg"])
    assert args.model == "g.keras" and args.image == ["a.jpg", "b.jpg"] and args.image_dir is None


def test_distortion_flags_switch_cached_copies_on(capsys):
    args = build_parser().parse_args(["train", "--image_dir", "x", "--random_crop", "10", "--flip_left_right"])
    config = config_from_args(args)
    switch_distortions_on(args, config)
    assert config.augment.augment_copies == DISTORTION_COPIES and config.augment.is_active()
    assert capsys.readouterr().err.count("\n") == 1
    chosen = build_parser().parse_args(["train", "--image_dir", "x", "--flip_left_right", "--augment_copies", "1"])
    config = config_from_args(chosen)
    switch_distortions_on(chosen, config)
    assert config.augment.augment_copies == 1


@pytest.mark.parametrize("steps", [500, 499, 4000, 7, 1])
def test_how_many_training_steps_is_exact(steps):
    interval, rounds = schedule(TrainConfig(how_many_training_steps=steps), train_size=2936)
    assert interval * rounds == steps


def tutorial_lines() -> list[str]:
    """The retrain.py / label_image.py lines the README promises run as written."""
    block = README.split("<!-- tutorial lines -->", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("python -m pipeline")]


def test_readme_tutorial_lines_run_as_written(tmp_path, tiny_backbone_file):
    lines = tutorial_lines()
    assert len(lines) == 5, lines  # four retrain.py lines and label_image.py's
    photos = make_class_folders(tmp_path / "flower_photos", {"daisy": 14, "roses": 14}, size=(40, 40))
    example = sorted((photos / "daisy").iterdir())[0]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    for line in lines:
        line = line.replace("/tmp/", f"{scratch}/").replace("~/flower_photos/daisy/example.jpg", str(example))
        line = line.replace("~/flower_photos", str(photos))
        argv = line.split()[3:]
        if argv[0] == "train":  # for speed: the tiny backbone, and only the exports this line is about
            argv += [
                "--architecture",
                str(tiny_backbone_file),
                "--bottleneck_layer",
                "features",
                "--bottleneck_dir",
                str(scratch / "bottleneck"),
                "--export_formats",
                "keras",
            ]
            argv += ["saved_model"] if "--saved_model_dir" in argv else []
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr and "WARNING" not in result.stderr, result.stderr[-3000:]
        runs.append(result)
    default_runs = sorted((tmp_path / "runs").iterdir())
    assert len(default_runs) == 4 and all(RunDir(run).status()["state"] == "done" for run in default_runs)
    plain, steps, distorted, saved = [RunDir(run) for run in default_runs]
    assert "output folder: runs/run-" in runs[0].stderr
    # Line 2: exactly 500 steps; retired flags answered; a model beside --output_graph, labels where asked.
    assert steps.read_metrics()[-1]["step"] == 500
    assert re.search(r"note: --model_dir .*: backbone weights need no folder", runs[1].stderr)
    assert (scratch / "output_graph.keras").is_file() and "Keras 3 model file" in runs[1].stderr
    assert (scratch / "output_labels.txt").read_text().split() == ["daisy", "roses"]
    assert list((scratch / "retrain_logs" / "train").iterdir())
    # Line 3: distortions are on, with cached copies.
    report = json.loads(distorted.report.read_text())
    assert report["cache"]["augmented"]["computed"] + report["cache"]["augmented"]["reused"] > 0
    assert "distortions on" in runs[2].stderr
    # Line 4: the SavedModel where asked; checkpoint and verbosity answered.
    assert (scratch / "saved_models" / "1" / "saved_model.pb").is_file()
    assert "note: --checkpoint_path" in runs[3].stderr and "note: --logging_verbosity" in runs[3].stderr
    # label_image.py's line: --graph pointed at the .pb, the .keras beside it answers.
    answer = json.loads(runs[4].stdout.strip().splitlines()[-1])
    assert answer["predictions"][0]["label"] == "daisy"
    assert "note: --input_layer" in runs[4].stderr and "using the Keras model" in runs[4].stderr
    assert plain.status()["exports"] == {"keras": "ready"}
    assert saved.status()["exports"] == {"keras": "ready", "saved_model": "ready"}


def test_cache_on_litert_prints_no_native_log_lines(tmp_path):
    """LiteRT's "Created TensorFlow Lite XNNPACK delegate" (C++ on descriptor 2) stays off the terminal, like
    TensorFlow's absl notice: stderr holds our progress lines only."""
    from pipeline.backbones.runtime import litert_installed

    if not litert_installed():
        pytest.skip("ai-edge-litert is not installed")
    photos = make_class_folders(tmp_path / "photos", {"a": 3, "b": 3}, size=(40, 40))
    stderr = cli_stderr(["cache", "--image_dir", str(photos), "--bottleneck_dir", str(tmp_path)])
    assert "caching: 6/6" in stderr
    # Making the backbone ready is its own step, before the first photo is counted
    assert stderr.index("preparing the backbone: ") < stderr.index("caching: 0/6"), stderr


def test_train_with_a_tflite_export_prints_no_native_log_lines(tmp_path, tiny_backbone_file):
    """The TFLite check's first invoke is where LiteRT creates its XNNPACK delegate, and says so on descriptor 2."""
    photos = make_class_folders(tmp_path / "photos", {"a": 8, "b": 8}, size=(40, 40))
    argv = ["train", "--image_dir", str(photos), "--output_dir", str(tmp_path / "run"), "--epochs", "1"]
    argv += ["--architecture", str(tiny_backbone_file), "--bottleneck_layer", "features"]
    argv += ["--bottleneck_dir", str(tmp_path / "b"), "--export_formats", "keras", "tflite"]
    assert "tflite ready" in cli_stderr(argv)


def cli_stderr(argv: list[str]) -> str:
    """The CLI's stderr for a command that must succeed and print no native log line (LiteRT's or absl's)."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "XNNPACK" not in result.stderr and "absl" not in result.stderr, result.stderr[-3000:]
    return result.stderr


@pytest.mark.parametrize("command", ["cache", "suspects"])
def test_cache_and_suspects_take_the_mirror_view_of_the_best_accuracy_preset(command):
    """The Best accuracy preset's vectors are the pair's with the mirror view: `cache` must be able to compute them
    ahead of a run (without the flag it computed other keys, and refused --mirror_view as unknown)."""
    pair = "efficientnet_lite0+efficientnet_lite1"
    args = build_parser().parse_args([command, "--image_dir", "photos", "--architecture", pair, "--mirror_view"])
    assert config_from_args(args).train.mirror_view and config_from_args(args).train.architecture == pair
    plain = build_parser().parse_args([command, "--image_dir", "photos", "--architecture", pair])
    assert not config_from_args(plain).train.mirror_view


def test_a_pair_with_a_newline_around_its_plus_is_refused_in_one_line(tmp_path):
    """A newline before the '+' of "efficientnet_lite0+efficientnet_lite1" was stripped into the pair, and split the
    progress line "loading the backbone: ..." in two; now the name is refused before the run starts, in one line."""
    photos = make_class_folders(tmp_path / "photos", {"a": 3, "b": 3}, size=(40, 40))
    name = "efficientnet_lite0\n+efficientnet_lite1"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", "--image_dir", str(photos), "--architecture", name]
        + ["--output_dir", str(tmp_path / "run"), "--bottleneck_dir", str(tmp_path / "b")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    said = result.stderr.strip()
    assert said.count("\n") == 0 and "holds a control character" in said and repr(name) in said, said
    assert "loading the backbone" not in said and not (tmp_path / "b").exists()  # refused before anything ran
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and "holds a control character" in status["message"]
