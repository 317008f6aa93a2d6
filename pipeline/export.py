"""Exports that predict what evaluation measured, checked rather than hoped.

The exported classifier is the backbone and the trained head joined into one model that takes
RGB images with values 0-255 at the backbone's input size and does its own preprocessing. After
writing each format we load it back and compare its probabilities with the in-memory model on
real test images; a difference beyond tolerance fails the run loudly.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.errors import RetrainError
from pipeline.files import write_bytes_atomic

# Largest allowed difference in any probability between the in-memory model and a reloaded export.
# `cached_bottlenecks` compares the head on cached features (what evaluation measured) with the
# exported whole model on the same images: batched and single-image convolutions round differently.
TOLERANCE = {"keras": 1e-4, "saved_model": 1e-4, "tflite": 1e-3, "cached_bottlenecks": 1e-3}
SIGNATURE = "serving_default"


def build_classifier(backbone_model: keras.Model, head: keras.Model, input_size: int) -> keras.Model:
    """Backbone + head as one model: (batch, S, S, 3) RGB 0-255 → class probabilities."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    probabilities = head(backbone_model(inputs))
    return keras.Model(inputs, probabilities, name="classifier")


def write_labels(labels: list[str], path: str | Path) -> None:
    """retrain.py's output_labels format: one label a line, in output order."""
    write_bytes_atomic(path, ("\n".join(labels) + "\n").encode())


def export_model(classifier: keras.Model, labels: list[str], run_dir: str | Path, formats: list[str],
                 check_images: np.ndarray, expected: np.ndarray | None = None) -> dict[str, float]:
    """Write the chosen formats and labels.txt into run_dir; return each format's largest difference."""
    run_dir = Path(run_dir)
    write_labels(labels, run_dir / "labels.txt")
    writers = {"keras": _write_keras, "saved_model": _write_saved_model, "tflite": _write_tflite}
    unknown = set(formats) - set(writers)
    if unknown:
        raise RetrainError(f"unknown export formats {sorted(unknown)}; choose from {sorted(writers)}")
    for name in ("keras", "saved_model", "tflite"):  # tflite is converted from the SavedModel
        if name in formats or (name == "saved_model" and "tflite" in formats):
            writers[name](classifier, run_dir)
    if expected is None:  # the in-memory model's probabilities on check_images
        expected = classifier.predict(check_images.astype(np.float32), verbose=0)
    return {name: _largest_difference(name, run_dir, check_images, expected) for name in formats}


def require_parity(parity: dict[str, float]) -> None:
    """Fail loudly when a reloaded export predicts differently from the trained model."""
    failed = {name: diff for name, diff in parity.items() if diff > TOLERANCE[name]}
    if failed:
        detail = ", ".join(f"{name} differs by {diff:.2e} (allowed {TOLERANCE[name]:.0e})"
                           for name, diff in failed.items())
        raise RetrainError(f"export check failed: {detail}; the exported files must not be used")


def _write_keras(classifier: keras.Model, run_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        staged = Path(tmp) / "model.keras"
        classifier.save(staged)
        staged.replace(run_dir / "model.keras")


def _write_saved_model(classifier: keras.Model, run_dir: Path) -> None:
    """TF Serving layout: saved_model/1/ with a `serving_default` signature taking `image`."""
    size = classifier.input_shape[1]
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(name=SIGNATURE, fn=lambda image: {"probabilities": classifier(image, training=False)},
                         input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="image")])
    target = run_dir / "saved_model"
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        staged = Path(tmp) / "saved_model"
        archive.write_out(str(staged / "1"), verbose=False)
        if target.exists():
            shutil.rmtree(target)
        staged.replace(target)


def _write_tflite(classifier: keras.Model, run_dir: Path) -> None:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(run_dir / "saved_model" / "1"), [SIGNATURE])
    flat = converter.convert()
    write_bytes_atomic(run_dir / "model.tflite", flat)


def _largest_difference(name: str, run_dir: Path, images: np.ndarray, expected: np.ndarray) -> float:
    predicted = {"keras": predict_keras, "saved_model": predict_saved_model, "tflite": predict_tflite}[name](
        run_dir, images.astype(np.float32))
    return float(np.abs(predicted - expected).max()) if len(expected) else 0.0


def predict_keras(run_dir: Path, images: np.ndarray) -> np.ndarray:
    model = keras.saving.load_model(run_dir / "model.keras")
    return model.predict(images, verbose=0)


def predict_saved_model(run_dir: Path, images: np.ndarray) -> np.ndarray:
    loaded = tf.saved_model.load(str(run_dir / "saved_model" / "1"))
    return loaded.signatures[SIGNATURE](image=tf.constant(images))["probabilities"].numpy()


def predict_tflite(run_dir: Path, images: np.ndarray) -> np.ndarray:
    try:  # LiteRT's interpreter: tf.lite.Interpreter is deprecated and warns on every use
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # a platform without ai-edge-litert wheels
        Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(run_dir / "model.tflite"))
    runner = interpreter.get_signature_runner(SIGNATURE)
    return np.concatenate([runner(image=image[None])["probabilities"] for image in images]) \
        if len(images) else np.zeros((0, 0))
