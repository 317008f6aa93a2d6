"""Shared fixtures: a tiny backbone for fast engine tests, paths to the real photos in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FLOWERS = SHARED / "datasets" / "flowers"

# Built backbones are cached per machine; tests share one cache folder across runs so the real
# EfficientNet-Lite0 is converted once, not once per test. Bottlenecks always go to tmp folders.
os.environ.setdefault("RETRAIN_STUDIO_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "retrain-studio-tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def needs_flowers():
    return pytest.mark.skipif(not FLOWERS.is_dir(), reason=f"real photos not found at {FLOWERS}")


def flowers_subset(folder: Path, labels: tuple[str, ...], per_class: int):
    """A DatasetConfig of the first `per_class` flowers (by name) of each label, labelled by a CSV written in
    `folder`: the photos are read in place, never copied."""
    from imagegen import write_labels_csv

    from pipeline.config import DatasetConfig

    rows = [
        (f"{label}/{path.name}", label) for label in labels for path in sorted((FLOWERS / label).iterdir())[:per_class]
    ]
    return DatasetConfig(image_dir=str(FLOWERS), label_csv=str(write_labels_csv(folder / "labels.csv", rows)))


@pytest.fixture(scope="session")
def tiny_backbone_file(tmp_path_factory) -> Path:
    """A small user-style .keras backbone (32x32 input, 'features' layer) for fast engine tests.

    Its features are the mean colour plus random conv filters: enough to separate the generated
    classes, small enough that a whole run takes seconds.
    """
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 255.0)(inputs)
    conv = keras.layers.Conv2D(12, 3, strides=2, activation="relu")(scaled)
    features = keras.layers.Concatenate(name="features")(
        [keras.layers.GlobalAveragePooling2D()(scaled), keras.layers.GlobalAveragePooling2D()(conv)]
    )
    outputs = keras.layers.Dense(4, activation="softmax")(features)
    path = tmp_path_factory.mktemp("tiny") / "tiny_backbone.keras"
    keras.Model(inputs, outputs).save(path)
    return path
