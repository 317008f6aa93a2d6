"""A whole run end to end on generated images with a tiny backbone: files, report, exports, reuse."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from imagegen import make_class_folders, write_truncated_jpeg

from pipeline.config import AugmentConfig, DatasetConfig, OutputConfig, RunConfig, TrainConfig
from pipeline.evaluate import Report
from pipeline.retrain import retrain
from pipeline.runs import RunDir, cancel_run, launch_run, refreshed_status

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"red": 30, "green": 30, "blue": 30}


def tiny_config(images: Path, tmp: Path, tiny_file: Path, **train) -> RunConfig:
    return RunConfig(
        dataset=DatasetConfig(image_dir=str(images)),
        train=TrainConfig(
            architecture=str(tiny_file), bottleneck_layer="features", **{"epochs": 40, "learning_rate": 0.01, **train}
        ),
        output=OutputConfig(bottleneck_dir=str(tmp / "bottlenecks")),
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_backbone_file):
    tmp = tmp_path_factory.mktemp("run")
    images = make_class_folders(tmp / "images", CLASSES, size=(40, 40))
    write_truncated_jpeg(images / "red" / "broken.jpg")
    config = tiny_config(images, tmp, tiny_backbone_file)
    report = retrain(config, tmp / "run1")
    return tmp, images, config, report


def test_run_writes_every_file(finished_run):
    tmp, _, _, report = finished_run
    run = RunDir(tmp / "run1")
    for name in (
        "config.json",
        "status.json",
        "metrics.csv",
        "report.json",
        "model.keras",
        "model.tflite",
        "labels.txt",
        "saved_model/1/saved_model.pb",
    ):
        assert (run.path / name).exists(), name
    assert list(run.logs_dir.iterdir()), "TensorBoard event files"
    status = run.status()
    assert status["state"] == "done" and status["progress"] == 1.0 and status["test_accuracy"] == report.test_accuracy
    assert RunConfig.load(run.config).output.output_dir == str(run.path)
    assert len(run.read_metrics()) >= 1
    assert (run.path / "labels.txt").read_text().split() == ["blue", "green", "red"]


def test_report_fields(finished_run):
    tmp, _, _, report = finished_run
    data = json.loads((tmp / "run1" / "report.json").read_text())
    assert 0 <= data["test_accuracy"] <= 1 and data["test_accuracy"] >= 0.8
    for key in (
        "top5_accuracy",
        "per_class",
        "confusion_matrix",
        "misclassified",
        "export_parity",
        "train_class_counts",
        "timings",
        "problems",
    ):
        assert key in data, key
    assert set(data["export_parity"]) == {
        "keras",
        "keras_any_size",
        "saved_model",
        "saved_model_pixels",
        "saved_model_bytes",
        "tflite",
        "cached_bottlenecks",
    }
    assert data["export_parity"]["saved_model_pixels"] <= 1e-5 and data["export_parity"]["keras_any_size"] <= 1e-4
    assert data["export_parity"]["keras"] <= 1e-4 and data["export_parity"]["tflite"] <= 1e-3
    assert any(p["file"] == "red/broken.jpg" and "truncated" in p["problem"] for p in data["problems"])
    assert Report.load(tmp / "run1" / "report.json").test_accuracy == report.test_accuracy


def test_rerun_with_new_hyperparameters_computes_nothing(finished_run, tiny_backbone_file):
    tmp, images, _, _ = finished_run
    config = tiny_config(images, tmp, tiny_backbone_file, epochs=5, dropout=0.5)
    retrain(config, tmp / "run2")
    cache = json.loads((tmp / "run2" / "report.json").read_text())["cache"]
    assert cache["originals"]["computed"] == 0 and cache["originals"]["reused"] == 90


def test_augmented_copies_counted_cached_and_reused(finished_run, tiny_backbone_file):
    tmp, images, _, _ = finished_run
    config = tiny_config(images, tmp, tiny_backbone_file, epochs=3)
    config.augment = AugmentConfig(flip_left_right=True, random_crop=10, augment_copies=2)
    first = retrain(config, tmp / "aug1")
    second = retrain(config, tmp / "aug2")
    train_images = sum(first.extra["train_class_counts"].values())
    plain_train = json.loads((tmp / "run1" / "report.json").read_text())["train_class_counts"]
    assert train_images == 3 * sum(plain_train.values())
    assert first.extra["cache"]["augmented"]["computed"] == 2 * sum(plain_train.values())
    assert second.extra["cache"]["augmented"]["computed"] == 0
    assert second.extra["cache"]["augmented"]["reused"] == 2 * sum(plain_train.values())


def test_class_size_balances_only_the_training_split(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 60, "blue": 15}, size=(40, 40))
    config = tiny_config(images, tmp_path, tiny_backbone_file, epochs=3)
    config.augment = AugmentConfig(class_size=48)
    report = retrain(config, tmp_path / "run")
    plain = retrain(tiny_config(images, tmp_path, tiny_backbone_file, epochs=3), tmp_path / "plain")
    before = plain.extra["train_class_counts"]
    after = report.extra["train_class_counts"]
    for label, count in before.items():
        assert after[label] == count * max(48 // count, 1)
    assert (
        report.test_images == plain.test_images
        and report.extra["validation_images"] == plain.extra["validation_images"]
    )


def test_predict_cli_on_files_and_folder_with_a_bad_file(finished_run):
    tmp, images, _, _ = finished_run
    run = tmp / "run1"
    files = [
        str(images / "red" / "red_000.jpg"),
        str(images / "blue" / "blue_001.jpg"),
        str(images / "red" / "broken.jpg"),
    ]
    out = _cli("predict", "--model", str(run), "--top_k", "2", *files)
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["predictions"][0]["label"] for r in results[:2]] == ["red", "blue"]
    assert len(results[0]["predictions"]) == 2 and "truncated" in results[2]["error"]
    csv_path = tmp / "predictions.csv"
    _cli("predict", "--model", str(run), "--image_dir", str(images), "--output_csv", str(csv_path))
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 91
    broken = next(r for r in rows if r["file"] == "red/broken.jpg")
    assert broken["label"] == "" and "truncated" in broken["error"]
    good = [r for r in rows if not r["error"]]
    assert sum(r["label"] == r["file"].split("/")[0] for r in good) / len(good) > 0.8


def test_training_prediction_and_uploads_prepare_a_large_jpeg_identically(finished_run, tmp_path):
    """A JPEG over twice the input size takes the draft (fast downscale) decode: every path must share it."""
    from imagegen import class_image, write_image

    from pipeline.bottlenecks import ExtractItem, load_item_for_model
    from pipeline.images import bytes_for_model, decode_image, prepare_for_model
    from pipeline.predict import Predictor

    run_dir = finished_run[0] / "run1"
    big = write_image(tmp_path / "big.jpg", class_image("green", 1, size=(400, 300)))
    data = big.read_bytes()
    cached_path = load_item_for_model(ExtractItem(str(big), "0" * 64), 32, None)
    assert np.array_equal(cached_path, bytes_for_model(data, 32))
    assert not np.array_equal(cached_path, prepare_for_model(decode_image(data), 32)), "draft decode not exercised"
    predictor = Predictor(run_dir)
    assert predictor.predict_files([big], k=3)[0]["predictions"] == predictor.predict_bytes(data, k=3)


def test_train_cli_retrain_flags_and_unsupported_ones(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 20, "blue": 20}, size=(40, 40))
    out = _cli(
        "train",
        "--image_dir",
        str(images),
        "--output_dir",
        str(tmp_path / "run"),
        "--architecture",
        str(tiny_backbone_file),
        "--bottleneck_layer",
        "features",
        "--how_many_training_steps",
        "60",
        "--learning_rate",
        "0.01",
        "--train_batch_size",
        "16",
        "--flip_left_right",
        "--augment_copies",
        "1",
        "--bottleneck_dir",
        str(tmp_path / "cache"),
        "--output_labels",
        str(tmp_path / "labels.txt"),
        "--print_misclassified_test_images",
        "--export_formats",
        "keras",
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["test_accuracy"] >= 0.5 and "test accuracy" in out.stdout
    assert (tmp_path / "labels.txt").read_text().split() == ["blue", "red"]
    assert not (tmp_path / "run" / "model.tflite").exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["how_many_training_steps"] == 60 and config["augment"]["flip_left_right"] is True
    bad = _cli(
        "train",
        "--image_dir",
        str(images),
        "--output_dir",
        str(tmp_path / "x"),
        "--tfhub_module",
        "https://tfhub.dev/x",
        check=False,
    )
    assert bad.returncode == 2 and "--tfhub_module is not supported" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_user_errors_are_one_line(tmp_path):
    missing = _cli("train", "--image_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "r"), check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert str(tmp_path / "nope") in missing.stderr
    one_class = make_class_folders(tmp_path / "one", {"red": 10})
    single = _cli("inspect", "--image_dir", str(one_class), check=False)
    assert single.returncode == 0  # inspect reports; training refuses
    refused = _cli("train", "--image_dir", str(one_class), "--output_dir", str(tmp_path / "r1"), check=False)
    assert refused.returncode == 2 and "class" in refused.stderr.lower()
    assert json.loads((tmp_path / "r1" / "status.json").read_text())["state"] == "failed"
    two_classes = make_class_folders(tmp_path / "two", {"red": 10, "blue": 10})
    long_name = _cli(
        "train", "--image_dir", str(two_classes), "--output_dir", str(tmp_path / "r2"), "--architecture", "y" * 5000,
        check=False,
    )  # fmt: skip
    assert long_name.returncode == 2 and len(long_name.stderr) < 2000, long_name.stderr[-3000:]
    stages = json.loads((tmp_path / "r2" / "status.json").read_text())["stages"]
    assert max(len(stage["message"]) for stage in stages) <= 80, [stage["message"][:100] for stage in stages]


def test_background_run_can_be_cancelled_and_keeps_its_cache(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 40, "blue": 40}, size=(40, 40))
    config = tiny_config(images, tmp_path, tiny_backbone_file, epochs=10000, early_stopping=0)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    config.save(run.config)
    launch_run(run.path)
    deadline = time.monotonic() + 300  # generous: CI machines are busy
    while refreshed_status(run).get("state") != "training" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.status()["state"] == "training", run.log.read_text()[-2000:]
    cancel_run(run.path)
    while refreshed_status(run).get("state") not in ("cancelled", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.status()["state"] == "cancelled", run.log.read_text()[-2000:]
    rerun = retrain(tiny_config(images, tmp_path, tiny_backbone_file, epochs=2), tmp_path / "after")
    assert rerun.extra["cache"]["originals"]["computed"] == 0


def test_cancel_right_after_launch_says_cancelled_not_crashed(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 10, "blue": 10}, size=(40, 40))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    tiny_config(images, tmp_path, tiny_backbone_file).save(run.config)
    launch_run(run.path)
    cancel_run(run.path)  # before the new process has even imported TensorFlow
    deadline = time.monotonic() + 120
    while refreshed_status(run).get("state") not in ("cancelled", "failed", "done") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.status()["state"] == "cancelled", run.log.read_text()[-2000:]


def test_status_of_a_dead_process_becomes_failed_and_a_reused_pid_is_not_alive(tmp_path):
    import os

    from pipeline.runs import process_alive, process_started

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_status("training", 0.5, "training", pid=dead.pid, pid_started="1")
    assert refreshed_status(run)["state"] == "failed"
    assert "interrupted" in run.status()["message"] and "died while training" in run.status()["message"]
    me = os.getpid()
    assert process_alive(me, process_started(me)) and not process_alive(me, "12345")  # same pid, other start


def test_failed_run_says_why_in_status(tmp_path, tiny_backbone_file):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    tiny_config(tmp_path / "missing", tmp_path, tiny_backbone_file).save(run.config)
    launch_run(run.path)
    deadline = time.monotonic() + 60
    while refreshed_status(run).get("state") not in ("failed", "done") and time.monotonic() < deadline:
        time.sleep(0.2)
    status = run.status()
    assert status["state"] == "failed" and "missing" in status["message"]


def test_same_seed_same_accuracy(finished_run, tiny_backbone_file):
    tmp, images, _, report = finished_run
    again = retrain(tiny_config(images, tmp, tiny_backbone_file), tmp / "again")
    assert again.test_accuracy == report.test_accuracy
    assert np.allclose(np.array(again.confusion_matrix), np.array(report.confusion_matrix))


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_fine_tuning_trains_top_layers_and_exports_what_it_evaluated(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 20, "blue": 20}, size=(40, 40))
    config = tiny_config(
        images,
        tmp_path,
        tiny_backbone_file,
        epochs=10,
        fine_tune_layers=1,
        fine_tune_epochs=2,
        fine_tune_learning_rate=1e-3,
    )
    before = retrain(tiny_config(images, tmp_path, tiny_backbone_file, epochs=10), tmp_path / "plain")
    report = retrain(config, tmp_path / "tuned")
    assert "fine_tune_seconds" in report.extra["timings"]
    assert "cached_bottlenecks" not in report.extra["export_parity"]  # the backbone changed
    assert report.extra["export_parity"]["keras"] <= 1e-4
    rows = RunDir(tmp_path / "tuned").read_metrics()
    assert rows[-1]["step"] > rows[-3]["step"]
    import keras

    plain = keras.saving.load_model(tmp_path / "plain" / "model.keras")
    tuned = keras.saving.load_model(tmp_path / "tuned" / "model.keras")
    # The tiny backbone's one conv layer (frozen in the plain run) moved, and so did the head.
    changed = [not np.allclose(a, b) for a, b in zip(plain.get_weights(), tuned.get_weights(), strict=True)]
    assert all(changed)
    assert report.test_accuracy >= before.test_accuracy - 0.2


def test_unfreeze_top_layers_keeps_batchnorm_and_lower_layers_frozen():
    import keras

    from pipeline.finetune import unfreeze_top_layers

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="low")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(4, 3, name="high")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model.trainable = False
    assert unfreeze_top_layers(model, 2) == 1  # the top two weighted layers are bn and high; bn stays frozen
    assert [model.get_layer(n).trainable for n in ("low", "bn", "high")] == [False, False, True]
    from pipeline.errors import RetrainError

    with pytest.raises(RetrainError, match="more than the backbone"):
        unfreeze_top_layers(model, 10)


def test_unfreeze_top_layers_unfreezes_whole_blocks_through_nested_models():
    import keras

    from pipeline.finetune import unfreeze_top_layers, weighted_layers

    inner_in = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 1, name="block2_expand")(inner_in)
    x = keras.layers.Conv2D(4, 1, name="block2_project")(x)
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="block2_project_bn")(x), name="nested")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="block1_expand")(inputs)
    x = keras.layers.Conv2D(4, 1, name="block1_project")(x)
    model = keras.Model(inputs, inner(x))
    model.trainable = False
    assert [layer.name for layer in weighted_layers(model)] == [
        "block1_expand",
        "block1_project",
        "block2_expand",
        "block2_project",
        "block2_project_bn",
    ]
    # The top layer is block2's BatchNorm: all of block2 is trained but that BatchNorm, nothing of block1.
    assert unfreeze_top_layers(model, 1) == 2
    assert [layer.trainable for layer in weighted_layers(model)] == [False, False, True, True, False]
    assert unfreeze_top_layers(model, 4) == 4  # reaches into block1: all of it
    assert unfreeze_top_layers(model, 0) == 0


def test_run_with_a_broken_config_fails_with_the_reason_in_status(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config.write_text('{"train": {"epochs": "many"')
    result = _cli("run", "--run_dir", str(run.path), check=False)
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    assert run.status()["state"] == "failed" and "not valid JSON" in run.status()["message"]


def test_out_of_range_setting_is_refused_before_any_work(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 10, "blue": 10}, size=(40, 40))
    result = _cli(
        "train",
        "--image_dir",
        str(images),
        "--output_dir",
        str(tmp_path / "run"),
        "--architecture",
        str(tiny_backbone_file),
        "--train_batch_size",
        "0",
        check=False,
    )
    assert result.returncode == 2 and "train.train_batch_size = 0 is out of range" in result.stderr


def test_the_score_stays_in_status_while_every_export_is_built(finished_run, tmp_path, monkeypatch):
    """From the report on, every status write says the test accuracy, so pages watching the run keep showing it."""
    import pipeline.retrain as retrain_module

    tmp, images, config, _ = finished_run
    seen = []
    build = retrain_module.Exporter.build

    def watched(self, name):
        build(self, name)
        status = json.loads((self.context.run.path / "status.json").read_text())
        seen.append((name, status["state"], status.get("test_accuracy")))

    monkeypatch.setattr(retrain_module.Exporter, "build", watched)
    report = retrain(config, tmp_path / "run")
    assert [name for name, _, _ in seen] == config.output.export_formats
    assert all(state == "exporting" and score == report.test_accuracy for _, state, score in seen), seen
