"""Exports: loaded by clients we did not write, in a fresh process with no project code; export states."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imagegen import class_image, make_class_folders, write_image

from pipeline.config import DatasetConfig, OutputConfig, RunConfig, TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.files import current_umask
from pipeline.images import decode_image, load_for_model
from pipeline.predict import Predictor
from pipeline.retrain import retrain
from pipeline.runs import RunDir

REPO = Path(__file__).resolve().parents[1]
ONNX_INSTALLED = all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime"))

# Runs with only the venv's packages: `-I` ignores PYTHONPATH and the current folder, and the
# working folder is a temporary one, so `pipeline` cannot be imported (the script checks).
CLIENTS = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("pipeline") is None, "project code is importable"
run, photos, pixels_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
import numpy as np, tensorflow as tf, keras
out = {}
loaded = tf.saved_model.load(run + "/saved_model/1")
answer = loaded.signatures["serving_bytes"](image_bytes=tf.constant([open(p, "rb").read() for p in photos]))
out["bytes"] = answer["probabilities"].numpy().tolist()
out["classes"] = [[c.decode() for c in row] for row in answer["classes"].numpy()]
arrays = np.load(pixels_file)
out["pixels_prepared"] = loaded.signatures["serving_pixels"](pixels=tf.constant(arrays["prepared"]))[
    "probabilities"].numpy().tolist()
out["pixels_any_size"] = loaded.signatures["serving_pixels"](pixels=tf.constant(arrays["raw"]))[
    "probabilities"].numpy().tolist()
model = keras.saving.load_model(run + "/model.keras", safe_mode=True)
out["keras"] = model.predict(arrays["prepared"].astype("float32"), verbose=0).tolist()
out["keras_uint8_any_size"] = model.predict(arrays["raw"], verbose=0).tolist()  # uint8, not the model's size
out["keras_large"] = model.predict(arrays["large"][None], verbose=0).tolist()
import zipfile
out["keras_labels"] = zipfile.ZipFile(run + "/model.keras").read("labels.txt").decode().splitlines()
out["preprocessing"] = json.load(open(run + "/preprocessing.json"))
try:
    import onnxruntime
    session = onnxruntime.InferenceSession(run + "/model.onnx", providers=["CPUExecutionProvider"])
    out["onnx"] = session.run(["probabilities"], {"image": arrays["prepared"].astype("float32")})[0].tolist()
    out["onnx_labels"] = json.loads(session.get_modelmeta().custom_metadata_map["labels"])
except ImportError:
    out["onnx"] = None
try:
    from ai_edge_litert.interpreter import Interpreter
    out["tflite_runtime"] = "ai_edge_litert"
except ImportError:
    Interpreter = tf.lite.Interpreter
    out["tflite_runtime"] = "tf.lite"
runner = Interpreter(model_path=run + "/model.tflite").get_signature_runner("serving_default")
out["tflite"] = [runner(image=image[None].astype("float32"))["probabilities"][0].tolist()
                 for image in arrays["prepared"]]
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
curves = {}
for split in ("train", "validation"):
    events = EventAccumulator(run + "/logs/" + split, size_guidance={"tensors": 0})  # 0: keep every point
    events.Reload()
    curves[split] = {tag: [[e.step, float(tf.make_ndarray(e.tensor_proto))] for e in events.Tensors(tag)]
                     for tag in events.Tags()["tensors"]}
out["curves"] = curves
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_backbone_file):
    tmp = tmp_path_factory.mktemp("exports")
    images = make_class_folders(tmp / "images", {"red": 20, "green": 20, "blue": 20}, size=(40, 40))
    config = RunConfig(
        dataset=DatasetConfig(image_dir=str(images)),
        train=TrainConfig(
            architecture=str(tiny_backbone_file), bottleneck_layer="features", epochs=20, learning_rate=0.01
        ),
        output=OutputConfig(
            bottleneck_dir=str(tmp / "bottlenecks"), export_formats=["keras", "saved_model", "tflite", "onnx"]
        ),
    )
    retrain(config, tmp / "run")
    photos = [images / "red" / "red_000.jpg", images / "green" / "green_001.jpg", images / "blue" / "blue_002.jpg"]
    large = write_image(tmp / "large.jpg", class_image("green", 3, size=(300, 200)))  # exercises draft decoding
    photos.append(large)
    return tmp, images, config, photos


@pytest.fixture(scope="module")
def clients(exported):
    tmp, _, _, photos = exported
    run = tmp / "run"
    raw = np.stack([decode_image(photo.read_bytes()) for photo in photos[:3]])  # 40x40: same size, any size
    prepared = np.stack([load_for_model(photo, 32) for photo in photos])
    np.savez(tmp / "pixels.npz", raw=raw, prepared=prepared, large=decode_image(photos[3].read_bytes()))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    scratch = tmp / "elsewhere"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-c", CLIENTS, str(run), json.dumps([str(p) for p in photos]), str(tmp / "pixels.npz")],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), Predictor(run), prepared, raw


def test_run_is_done_with_every_export_ready_and_readable_by_others(exported):
    tmp, _, _, _ = exported
    run = RunDir(tmp / "run")
    status = run.status()
    assert status["state"] == "done"
    onnx = "ready" if ONNX_INSTALLED else "unavailable"
    assert status["exports"] == {"keras": "ready", "saved_model": "ready", "tflite": "ready", "onnx": onnx}
    mode = 0o666 & ~current_umask()
    for name in ("labels.txt", "model.tflite", "report.json", "status.json", "preprocessing.json") + (
        ("model.onnx",) if ONNX_INSTALLED else ()
    ):
        assert (run.path / name).stat().st_mode & 0o777 == mode, name
    assert (run.path / "saved_model" / "1" / "assets" / "labels.txt").read_text().split() == ["blue", "green", "red"]
    timings = json.loads(run.report.read_text())["timings"]
    assert timings["model_ready_seconds"] < timings["total_seconds"]


def test_saved_model_bytes_signature_agrees_with_predict(clients, exported):
    answers, predictor, prepared, _ = clients
    expected = predictor.probabilities(prepared)
    got = np.array(answers["bytes"])
    assert np.abs(got - expected).max() <= 0.02
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert answers["classes"] == [predictor.labels] * len(got)


def test_saved_model_pixel_signature_any_size_and_prepared(clients):
    answers, predictor, prepared, raw = clients
    assert np.abs(np.array(answers["pixels_prepared"]) - predictor.probabilities(prepared)).max() <= 1e-5
    any_size = np.array(answers["pixels_any_size"])
    assert raw.shape[1:3] != (32, 32)
    expected = np.stack([predictor.probabilities(load_for_model_rgb(rgb))[0] for rgb in raw])
    assert np.abs(any_size - expected).max() <= 0.02


def load_for_model_rgb(rgb: np.ndarray) -> np.ndarray:
    from pipeline.images import prepare_for_model

    return prepare_for_model(rgb, 32)[None]


def test_keras_safe_mode_and_tflite_agree_with_predict(clients):
    answers, predictor, prepared, _ = clients
    expected = predictor.probabilities(prepared)
    assert np.abs(np.array(answers["keras"]) - expected).max() <= 1e-5
    assert np.abs(np.array(answers["tflite"]) - expected).max() <= 1e-3


def test_keras_takes_uint8_pixels_of_any_size_and_carries_its_labels(clients, exported):
    answers, predictor, _, raw = clients
    photos = exported[3]
    # Keras's Resizing does not round to whole values as Pillow does: close, not identical.
    expected = np.stack([predictor.probabilities(load_for_model_rgb(rgb))[0] for rgb in raw])
    assert np.abs(np.array(answers["keras_uint8_any_size"]) - expected).max() <= 0.02
    large = decode_image(photos[3].read_bytes())
    assert large.shape[:2] == (200, 300)
    expected_large = predictor.probabilities(load_for_model_rgb(large))[0]
    assert np.abs(np.array(answers["keras_large"])[0] - expected_large).max() <= 0.02
    assert answers["keras_labels"] == predictor.labels
    parity = json.loads((exported[0] / "run" / "report.json").read_text())["export_parity"]
    assert parity["keras_any_size"] <= 1e-4  # the file reproduces the in-memory model behind the same resize


def test_preprocessing_json_says_what_each_format_takes(clients):
    described, predictor = clients[0]["preprocessing"], clients[1]
    assert described["labels"] == predictor.labels and described["input_size"] == 32
    assert described["formats"]["model.tflite"]["shape"] == [None, 32, 32, 3]
    assert described["formats"]["model.keras"]["shape"] == [None, None, None, 3]
    assert "centred square" in described["prepare"]["crop"]


@pytest.mark.skipif(not ONNX_INSTALLED, reason="the optional onnx extra (requirements-onnx.txt) is not installed")
def test_onnx_runtime_agrees_with_predict_and_carries_the_labels(clients):
    answers, predictor, prepared, _ = clients
    assert np.abs(np.array(answers["onnx"]) - predictor.probabilities(prepared)).max() <= 1e-5
    assert answers["onnx_labels"] == predictor.labels


def test_onnx_without_its_converter_is_reported_and_the_run_still_finishes(exported, tmp_path, monkeypatch):
    _, _, config, _ = exported
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the optional extra were not installed
    config = RunConfig.from_dict(config.to_dict())
    config.output.export_formats = ["keras", "onnx"]
    report = retrain(config, tmp_path / "run")
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "done"
    assert status["exports"] == {"keras": "ready", "onnx": "unavailable"}
    assert "requirements-onnx.txt" in report.extra["exports_unavailable"]["onnx"]
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_onnx_that_predicts_differently_fails_the_run(exported, tmp_path, monkeypatch):
    if not ONNX_INSTALLED:
        pytest.skip("the optional onnx extra (requirements-onnx.txt) is not installed")
    import pipeline.onnx_export as onnx_export

    _, _, config, _ = exported
    original = onnx_export.onnx_probabilities
    monkeypatch.setattr(onnx_export, "onnx_probabilities", lambda *args: original(*args)[:, ::-1])
    config = RunConfig.from_dict(config.to_dict())
    config.output.export_formats = ["keras", "onnx"]
    with pytest.raises(RetrainError, match="onnx differs"):
        retrain(config, tmp_path / "run")
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and status["exports"]["onnx"] == "failed"
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_tensorboard_reads_train_and_validation_as_two_runs(clients, exported):
    answers = clients[0]
    rows = RunDir(exported[0] / "run").read_metrics()
    for split, column in (("train", "train_loss"), ("validation", "val_loss")):
        curve = answers["curves"][split]
        assert set(curve) == {"loss", "accuracy"}
        assert [step for step, _ in curve["loss"]] == [row["step"] for row in rows]
        assert np.allclose([value for _, value in curve["loss"]], [row[column] for row in rows], atol=1e-5)


def test_cancel_during_export_ends_cancelled_and_never_offers_the_partial(exported, tmp_path, monkeypatch):
    import pipeline.export as export

    _, _, config, _ = exported
    run = RunDir(tmp_path / "run")
    original = export.write_export

    def cancel_while_writing(name, *args):
        if name == "saved_model":
            run.cancel_request.touch()  # what cancel_run does, arriving mid-export
        return original(name, *args)

    monkeypatch.setattr(export, "write_export", cancel_while_writing)
    with pytest.raises(RunCancelled):
        retrain(config, run.path)
    status = run.status()
    assert status["state"] == "cancelled"
    assert status["exports"] == {
        "keras": "ready",
        "saved_model": "cancelled",
        "tflite": "not built",
        "onnx": "not built",
    }
    assert not (run.path / "saved_model").exists() and not (run.path / "model.tflite").exists()
    predictor = Predictor(run.path)  # the checked model.keras is usable, but never silently
    assert "ended cancelled" in predictor.note


def test_failed_export_check_fails_the_run_and_removes_that_export(exported, tmp_path, monkeypatch):
    import pipeline.export as export

    _, _, config, _ = exported
    original = export.check_export

    def tflite_disagrees(name, *args):
        differences = original(name, *args)
        return {**differences, "tflite": 0.5} if name == "tflite" else differences

    monkeypatch.setattr(export, "check_export", tflite_disagrees)
    with pytest.raises(RetrainError, match="tflite differs"):
        retrain(config, tmp_path / "run")
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and status["exports"]["tflite"] == "failed"
    assert status["exports"]["saved_model"] == "ready" and not (tmp_path / "run" / "model.tflite").exists()


def test_a_killed_runs_exports_are_refused_in_one_line(exported, tmp_path):
    import shutil

    tmp, images, _, _ = exported
    run = RunDir(tmp_path / "killed")
    shutil.copytree(tmp / "run", run.path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_status(
        "exporting",
        0.95,
        "exporting and checking keras",
        pid=dead.pid,
        exports={"keras": "building", "saved_model": "pending", "tflite": "pending"},
    )
    with pytest.raises(RetrainError, match="not finished and checked"):
        Predictor(run.path)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", "--model", str(run.path), str(images / "red" / "red_000.jpg")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "train again" in result.stderr


def test_quantized_tflite_variants_are_checked_and_scored(exported, tmp_path):
    _, _, config, _ = exported
    config = RunConfig.from_dict(config.to_dict())
    config.output.export_formats = ["keras", "tflite_float16", "tflite_dynamic", "tflite_int8"]
    report = retrain(config, tmp_path / "run")
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "done" and set(status["exports"].values()) == {"ready"}
    variants = report.extra["tflite_variants"]
    assert set(variants) == {"tflite_float16", "tflite_dynamic", "tflite_int8"}
    for name, variant in variants.items():
        assert (tmp_path / "run" / variant["file"]).stat().st_size / 1e6 == pytest.approx(variant["size_mb"], abs=0.01)
        assert 0.0 <= variant["test_accuracy"] <= 1.0 and name in report.extra["export_parity"]
    assert variants["tflite_float16"]["test_accuracy"] == pytest.approx(report.test_accuracy, abs=0.05)
    assert not (tmp_path / "run" / "model.tflite").exists() and not (tmp_path / "run" / "saved_model").exists()


def test_bundle_holds_checked_exports_labels_report_and_a_model_card(exported, tmp_path):
    import io
    import shutil
    import zipfile

    from pipeline.bundle import bundle_bytes

    tmp, _, _, _ = exported
    names = zipfile.ZipFile(io.BytesIO(bundle_bytes(tmp / "run"))).namelist()
    for name in (
        "run/model.keras",
        "run/model.tflite",
        "run/labels.txt",
        "run/report.json",
        "run/MODEL_CARD.md",
        "run/saved_model/1/saved_model.pb",
        "run/saved_model/1/assets/labels.txt",
    ):
        assert name in names, name
    card = zipfile.ZipFile(io.BytesIO(bundle_bytes(tmp / "run"))).read("run/MODEL_CARD.md").decode()
    assert "| red |" in card and "32x32" in card and "## Limits" in card
    assert "seen mirrored" not in card  # said only of a run with the mirror view (test_side_by_side)
    partial = RunDir(tmp_path / "run")  # a cancelled run: only what was marked ready goes in
    shutil.copytree(tmp / "run", partial.path)
    partial.write_status("cancelled", exports={"keras": "ready", "saved_model": "cancelled", "tflite": "not built"})
    names = zipfile.ZipFile(io.BytesIO(bundle_bytes(partial.path))).namelist()
    assert "run/model.keras" in names and not any("saved_model" in n or n.endswith(".tflite") for n in names)


def test_cli_says_in_one_line_that_onnx_was_not_made(exported, tmp_path, tiny_backbone_file):
    _, images, _, _ = exported
    blocker = tmp_path / "blocked"  # shadows the real package: as if the onnx extra were not installed
    (blocker / "tf2onnx").mkdir(parents=True)
    (blocker / "tf2onnx" / "__init__.py").write_text("raise ImportError('no tf2onnx here')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{REPO}"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            "--image_dir",
            str(images),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
            "--bottleneck_dir",
            str(tmp_path / "bottlenecks"),
            "--output_dir",
            str(tmp_path / "run"),
            "--export_formats",
            "keras",
            "onnx",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if "onnx export not made" in line]
    assert len(notes) == 1 and "requirements-onnx.txt" in notes[0], result.stderr[-3000:]
    assert RunDir(tmp_path / "run").status()["exports"] == {"keras": "ready", "onnx": "unavailable"}


@pytest.mark.parametrize("module", ["tf2onnx", "onnx", "onnxruntime"])
def test_a_broken_onnx_install_is_unavailable_not_a_failed_run(tmp_path, monkeypatch, module):
    """An extra installed against another numpy raises AttributeError (or OSError from its .so) on import, not
    ImportError: that failed the whole run with a traceback (attack2)."""
    from pipeline.errors import ExportUnavailable
    from pipeline.onnx_export import onnx_probabilities, write_onnx

    broken = tmp_path / "site" / module
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise AttributeError(\"module 'numpy' has no attribute 'object'\")\n")
    for name in [name for name in sys.modules if name == module or name.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ExportUnavailable, match="broken|cannot be loaded") as raised:
        if module == "onnxruntime":
            onnx_probabilities(tmp_path / "model.onnx", np.zeros((1, 32, 32, 3)))
        else:
            write_onnx(None, tmp_path / "model.onnx", ["a", "b"], {})
    assert "AttributeError" in str(raised.value) and "requirements-onnx.txt" in str(raised.value)


def test_the_any_size_model_answers_the_same_when_called_directly():
    """`model(x)` is how most people call a Keras model. With Keras's Resizing in front, Keras 3 ran the head's
    Dropout in training mode on a plain call: a different answer on every call (attack2)."""
    import keras

    from pipeline.export import any_size_classifier

    image = keras.Input((8, 8, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(image)
    vector = keras.Input((3,))
    head = keras.Model(vector, keras.layers.Dense(2)(keras.layers.Dropout(0.5)(vector)))
    model = any_size_classifier(keras.Model(image, head(features), name="classifier"))
    pixels = np.random.default_rng(0).integers(0, 255, (2, 13, 9, 3)).astype(np.float32)
    answers = [np.asarray(model(pixels)) for _ in range(4)]
    assert all(np.array_equal(answers[0], answer) for answer in answers)
    assert np.allclose(answers[0], model.predict(pixels, verbose=0), atol=1e-5)
