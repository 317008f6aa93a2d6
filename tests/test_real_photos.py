"""A whole run on real photos with the real default backbone (EfficientNet-Lite0, offline)."""

import json
import os
from pathlib import Path

import pytest
from conftest import FLOWERS, flowers_subset, needs_flowers

from pipeline.config import OutputConfig, RunConfig, TrainConfig
from pipeline.predict import Predictor
from pipeline.retrain import retrain

pytestmark = needs_flowers()
PER_CLASS = 80


@pytest.fixture(scope="module")
def flowers_run(tmp_path_factory):
    """A fixed subset of flowers (first 80 names per class), labelled by a CSV: no copies of the photos."""
    tmp = tmp_path_factory.mktemp("flowers")
    labels = tuple(sorted(p.name for p in FLOWERS.iterdir() if p.is_dir()))
    bottlenecks = Path(os.environ["RETRAIN_STUDIO_CACHE"]) / "bottlenecks"  # shared: content-keyed
    config = RunConfig(
        dataset=flowers_subset(tmp, labels, PER_CLASS),
        train=TrainConfig(epochs=60),
        output=OutputConfig(bottleneck_dir=str(bottlenecks)),
    )
    return tmp, retrain(config, tmp / "run")


def test_real_run_learns_and_exports_agree(flowers_run):
    tmp, report = flowers_run
    assert report.labels == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert report.test_images >= 10 and report.test_accuracy >= 0.8
    parity = json.loads((tmp / "run" / "report.json").read_text())["export_parity"]
    assert parity["keras"] <= 1e-4 and parity["saved_model"] <= 1e-4 and parity["tflite"] <= 1e-3
    assert parity["cached_bottlenecks"] <= 1e-3


def test_real_predictions_on_held_out_photos(flowers_run):
    tmp, _ = flowers_run
    predictor = Predictor(tmp / "run")
    held_out = [sorted((FLOWERS / label).iterdir())[-1] for label in ("daisy", "sunflowers", "dandelion")]
    results = predictor.predict_files(held_out, k=3)
    top = [result["predictions"][0]["label"] for result in results]
    assert sum(label == path.parent.name for label, path in zip(top, held_out, strict=True)) >= 2
    assert all(len(result["predictions"]) == 3 for result in results)


def test_saved_model_bytes_signature_agrees_with_our_decode_on_real_photos(flowers_run):
    """TensorFlow's decoder inside the SavedModel against Pillow's in predict, on photos the run never saw."""
    import numpy as np

    from pipeline.export import predict_saved_model_bytes

    tmp, _ = flowers_run
    predictor = Predictor(tmp / "run")
    photos = [path for label in predictor.labels for path in sorted((FLOWERS / label).iterdir())[-12:]]
    got, classes = predict_saved_model_bytes(tmp / "run", [path.read_bytes() for path in photos])
    expected = np.concatenate(
        [
            predictor.probabilities(np.stack([load(path) for path in photos[i : i + 20]]))
            for i in range(0, len(photos), 20)
        ]
    )
    assert classes[0] == predictor.labels
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
    assert np.abs(got - expected).max() <= 0.02


def load(path):
    from pipeline.images import load_for_model

    return load_for_model(path, 224)


def python_json(code: str, *args: str):
    """Run `code` in a fresh Python process (nothing imported yet) and parse the JSON of its last output line."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


REPO_ROOT = Path(__file__).resolve().parents[1]
WARM_RERUN = """
import json, sys
from pathlib import Path
import pipeline.retrain as retrain_module
from pipeline.config import RunConfig

def stop_at_summaries(*args):  # the first step after the report: is TensorFlow loaded yet?
    print(json.dumps({"tensorflow_loaded": "tensorflow" in sys.modules, "keras_loaded": "keras" in sys.modules}))
    raise SystemExit(0)

retrain_module._write_summaries = stop_at_summaries
config = RunConfig.load(sys.argv[1])
config.train.learning_rate, config.train.dropout = 0.002, 0.3
retrain_module.retrain(config, sys.argv[2])
"""


def test_warm_rerun_reports_before_tensorflow_is_loaded(flowers_run, tmp_path):
    """A rerun with new hyperparameters on a warm cache trains, scores and saves its head with TensorFlow not yet
    imported: the report does not wait for TensorFlow's start-up or any Keras model."""
    from pipeline.evaluate import Report
    from pipeline.head import HEAD_FILE, Head

    tmp, first = flowers_run
    rerun = tmp_path / "rerun"
    loaded = python_json(WARM_RERUN, str(tmp / "run" / "config.json"), str(rerun))
    assert loaded == {"tensorflow_loaded": False, "keras_loaded": False}
    report = Report.load(rerun / "report.json")
    assert report.extra["cache"]["originals"]["computed"] == 0 and report.test_accuracy >= 0.8
    assert Head.load(rerun / HEAD_FILE).num_classes == len(first.labels)


PREDICT_FROM_HEAD = """
import json, sys
from pipeline.predict import Predictor
predictor = Predictor(sys.argv[1])
answers = predictor.predict_files(sys.argv[2:], k=2)
print(json.dumps({"tensorflow_loaded": "tensorflow" in sys.modules, "answers": answers}))
"""


def test_predictor_answers_with_the_trained_head_without_tensorflow(flowers_run):
    """A run's head on the LiteRT backbone answers (no TensorFlow in that process) as its checked model.keras does."""
    tmp, _ = flowers_run
    photos = [str(sorted((FLOWERS / label).iterdir())[-2]) for label in ("roses", "tulips", "daisy")]
    result = python_json(PREDICT_FROM_HEAD, str(tmp / "run"), *photos)
    assert result["tensorflow_loaded"] is False
    from_keras = Predictor(tmp / "run" / "model.keras").predict_files(photos, k=2)
    for head_answer, keras_answer in zip(result["answers"], from_keras, strict=True):
        assert [g["label"] for g in head_answer["predictions"]] == [g["label"] for g in keras_answer["predictions"]]
        for a, b in zip(head_answer["predictions"], keras_answer["predictions"], strict=True):
            assert abs(a["score"] - b["score"]) <= 1e-3


def test_damaged_head_falls_back_to_the_checked_model(flowers_run, tmp_path, caplog):
    """A head.npz cut short (disk trouble, a careless copy) is not used: model.keras answers, and the log says why."""
    import shutil

    tmp, _ = flowers_run
    copy = tmp_path / "run"
    shutil.copytree(tmp / "run", copy)
    (copy / "head.npz").write_bytes((copy / "head.npz").read_bytes()[:100])
    photo = sorted((FLOWERS / "roses").iterdir())[-3]
    answers = Predictor(copy).predict_files([photo], k=1)
    assert answers[0]["predictions"][0]["label"] in Predictor(tmp / "run").labels
    assert "head.npz" in caplog.text


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Three classes of 12 flowers, model.keras only: a run folder whose head Predict answers with."""
    tmp = tmp_path_factory.mktemp("small")
    config = RunConfig(
        dataset=flowers_subset(tmp, ("daisy", "roses", "tulips"), 12),
        train=TrainConfig(epochs=3),
        output=OutputConfig(
            bottleneck_dir=str(Path(os.environ["RETRAIN_STUDIO_CACHE"]) / "bottlenecks"), export_formats=["keras"]
        ),
    )
    retrain(config, tmp / "run")
    return tmp / "run"


def test_a_head_copied_from_another_run_is_not_taken_for_this_runs(small_run, tmp_path, caplog):
    """Same backbone, same classes, but not the head this run's report scored: the run's checked model.keras
    answers, and the log says why the head was passed over."""
    import shutil

    import numpy as np

    from pipeline.head import HEAD_FILE
    from pipeline.predict import trained_head
    from pipeline.train import initial_head

    assert trained_head(small_run) is not None  # the run's own head is used
    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    initial_head(1280, 3, 0, np.random.default_rng(5)).save(copy / HEAD_FILE)  # another run's head
    assert trained_head(copy) is None
    assert "not the head its report.json scored" in caplog.text
    photo = sorted((FLOWERS / "roses").iterdir())[-1]
    got = Predictor(copy).predict_files([photo], k=3)[0]["predictions"]
    expected = Predictor(small_run).predict_files([photo], k=3)[0]["predictions"]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert all(abs(g["score"] - e["score"]) <= 1e-3 for g, e in zip(got, expected, strict=True))


def test_a_report_that_records_no_head_is_answered_by_model_keras_quietly(small_run, tmp_path, caplog):
    """A run made before reports recorded their head's digest: nothing was replaced, so nothing is said."""
    import shutil

    from pipeline.predict import trained_head

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    report = json.loads((copy / "report.json").read_text())
    del report["head_sha256"]
    (copy / "report.json").write_text(json.dumps(report))
    assert trained_head(copy) is None
    assert "head.npz" not in caplog.text
    assert Predictor(copy).predict_files([sorted((FLOWERS / "daisy").iterdir())[-1]], k=1)[0]["predictions"]


def test_a_hostile_head_whose_digest_the_report_was_made_to_match_is_passed_over(small_run, tmp_path, caplog):
    """A run folder from elsewhere whose head.npz claims a terabyte array, its report.json edited to record that
    file's digest: Predict answers with model.keras, never a MemoryError traceback."""
    import hashlib
    import io
    import shutil
    import zipfile

    import numpy as np

    from pipeline.head import HEAD_FILE
    from pipeline.predict import trained_head

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20)})
    with zipfile.ZipFile(copy / HEAD_FILE, "w") as archive:
        archive.writestr("w0.npy", header.getvalue() + bytes(64))
        archive.writestr("w1.npy", header.getvalue() + bytes(64))
    report = json.loads((copy / "report.json").read_text())
    report["head_sha256"] = hashlib.sha256((copy / HEAD_FILE).read_bytes()).hexdigest()
    (copy / "report.json").write_text(json.dumps(report))
    assert trained_head(copy) is None
    assert "head.npz is not a head saved by Retrain Studio" in caplog.text
    photo = sorted((FLOWERS / "roses").iterdir())[-1]
    got = Predictor(copy).predict_files([photo], k=1)[0]["predictions"]
    assert got[0]["label"] == Predictor(small_run).predict_files([photo], k=1)[0]["predictions"][0]["label"]
