"""Predictions say when to doubt them: an unsure model, or a photo unlike anything the run was trained on."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from conftest import FLOWERS
from imagegen import class_image, make_class_folders
from PIL import Image

from pipeline.config import DatasetConfig, OutputConfig, RunConfig, TrainConfig
from pipeline.familiarity import FILE, UNSURE_MARGIN, UNSURE_TOP1, caution, fit_familiarity, load_familiarity
from pipeline.predict import Predictor
from pipeline.retrain import retrain

CLASSES = {"red": 20, "green": 20, "blue": 20}


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _daisy() -> bytes:
    """A daisy: a real photo when the shared flowers are there, else white petals round a yellow heart on grass."""
    if FLOWERS.is_dir():
        return sorted((FLOWERS / "daisy").glob("*.jpg"))[0].read_bytes()
    rows, cols = np.mgrid[0:64, 0:64]
    radius = np.hypot(rows - 32, cols - 32)
    image = np.zeros((64, 64, 3), np.uint8)
    image[...] = (40, 110, 30)
    image[(radius < 26) & (np.sin(np.arctan2(rows - 32, cols - 32) * 12) > 0)] = (250, 250, 245)
    image[radius < 8] = (240, 200, 20)
    return _jpeg(image)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone_file):
    tmp = tmp_path_factory.mktemp("familiar")
    images = make_class_folders(tmp / "images", CLASSES, size=(40, 40))
    config = RunConfig(
        dataset=DatasetConfig(image_dir=str(images)),
        train=TrainConfig(
            architecture=str(tiny_backbone_file), bottleneck_layer="features", epochs=40, learning_rate=0.01
        ),
        output=OutputConfig(bottleneck_dir=str(tmp / "bn"), export_formats=["keras"]),
    )
    retrain(config, tmp / "run")
    return tmp / "run"


def test_the_run_stores_what_its_training_photos_look_like(trained):
    familiarity = load_familiarity(trained, ["blue", "green", "red"])
    assert familiarity is not None and familiarity.centroids.shape[0] == 3 and familiarity.threshold > 0


def test_a_photo_like_the_training_photos_is_not_flagged(trained):
    predictor = Predictor(trained)
    answer = predictor.predict_bytes_judged(_jpeg(class_image("red", 2, (40, 40), seed=987_654)), k=3)
    assert answer["predictions"][0]["label"] == "red"
    assert answer["caution"]["unlike_training"] is False and answer["caution"]["notes"] == []


def test_a_daisy_is_flagged_as_unlike_the_training_photos(trained):
    predictor = Predictor(trained)
    answer = predictor.predict_bytes_judged(_daisy(), k=3)
    assert answer["caution"]["unlike_training"] is True
    assert answer["caution"]["distance"] > predictor.familiarity.threshold
    assert any("unlike the training photos" in note for note in answer["caution"]["notes"])


def test_files_carry_the_same_caution(trained, tmp_path):
    (tmp_path / "daisy.jpg").write_bytes(_daisy())
    (tmp_path / "red.jpg").write_bytes(_jpeg(class_image("red", 2, (40, 40), seed=4242)))
    results = {
        r["file"].rsplit("/", 1)[-1]: r
        for r in Predictor(trained).predict_files([tmp_path / "daisy.jpg", tmp_path / "red.jpg"], 2)
    }
    assert results["daisy.jpg"]["caution"]["unlike_training"] is True
    assert results["red.jpg"]["caution"]["unlike_training"] is False


def test_a_damaged_familiarity_file_only_drops_that_check(trained, tmp_path, caplog):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / FILE).write_bytes(b'{"format": "retrain-studio/familiarity", "centroids": [[1')
    with caplog.at_level(logging.WARNING):
        predictor = Predictor(copy)
    assert predictor.familiarity is None and FILE in caplog.text
    answer = predictor.predict_bytes_judged(_daisy(), k=2)
    assert answer["caution"]["unlike_training"] is None and len(answer["predictions"]) == 2


def test_unsure_is_a_low_top_class_or_a_small_lead():
    labels = ["a", "b", "c"]
    assert caution(np.array([0.9, 0.06, 0.04]), labels, None, None)["unsure"] is False
    assert caution(np.array([UNSURE_TOP1 - 0.01, 0.2, 0.21]), labels, None, None)["unsure"] is True
    close = caution(np.array([0.62, 0.62 - UNSURE_MARGIN + 0.01, 0.0]), labels, None, None)
    assert close["unsure"] is True and "unsure (a 62%; b 43%)" in close["notes"][0]


def test_the_threshold_is_the_training_photos_own_99th_percentile():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal([5, 0, 0], 1, (200, 3)), rng.normal([0, 5, 0], 1, (200, 3))])
    y = np.array([0] * 200 + [1] * 200)
    familiarity = fit_familiarity(x, y, ["a", "b"])
    assert np.mean(familiarity.distances(x) > familiarity.threshold) <= 0.011
    assert familiarity.distances(np.array([[0.0, 0.0, 5.0]]))[0] > familiarity.threshold


def test_centres_of_another_length_than_the_features_only_drop_that_check(trained, tmp_path, caplog):
    """A familiarity.json of another backbone (or edited): the matmul raised on every prediction (attack2)."""
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    data = json.loads((copy / FILE).read_text())
    data["centroids"] = [centre[:5] for centre in data["centroids"]]
    (copy / FILE).write_text(json.dumps(data))
    predictor = Predictor(copy)
    with caplog.at_level(logging.WARNING):
        answer = predictor.predict_bytes_judged(_daisy(), k=2)
    assert answer["caution"]["unlike_training"] is None and len(answer["predictions"]) == 2
    assert FILE in caplog.text and "5" in caplog.text
    (tmp_path / "daisy.jpg").write_bytes(_daisy())
    assert predictor.predict_files([tmp_path / "daisy.jpg"], 2)[0]["caution"]["unlike_training"] is None


def test_a_one_class_model_is_judged_without_error():
    answer = caution(np.array([1.0]), ["only"], 0.5, fit_familiarity(np.ones((3, 4)), np.zeros(3, int), ["only"]))
    assert answer["unsure"] is False and answer["unlike_training"] is True
