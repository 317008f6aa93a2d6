"""A whole run on real photos with the real default backbone (EfficientNet-Lite0, offline)."""

import json
import os
from pathlib import Path

import pytest
from conftest import FLOWERS, needs_flowers
from imagegen import write_labels_csv

from pipeline.config import DatasetConfig, OutputConfig, RunConfig, TrainConfig
from pipeline.predict import Predictor
from pipeline.retrain import retrain

pytestmark = needs_flowers()
PER_CLASS = 80


@pytest.fixture(scope="module")
def flowers_run(tmp_path_factory):
    """A fixed subset of flowers (first 80 names per class), labelled by a CSV: no copies of the photos."""
    tmp = tmp_path_factory.mktemp("flowers")
    rows = [
        (f"{label}/{path.name}", label)
        for label in sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())
        for path in sorted((FLOWERS / label).iterdir())[:PER_CLASS]
    ]
    csv = write_labels_csv(tmp / "labels.csv", rows)
    bottlenecks = Path(os.environ["RETRAIN_STUDIO_CACHE"]) / "bottlenecks"  # shared: content-keyed
    config = RunConfig(
        dataset=DatasetConfig(image_dir=str(FLOWERS), label_csv=str(csv)),
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
