"""Exports against `predict` on a whole test split, as clients would call them.

The SavedModel's `serving_bytes` decodes in TensorFlow, not Pillow (decoders differ slightly), and
model.keras crops and resizes with Keras's `Resizing`, not Pillow's: both are held to agreement,
not identity. LiteRT and ONNX Runtime take the images predict prepares, so they should match closely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BATCH = 32


def measure(run_dir: Path, paths: list[str]) -> dict[str, float]:
    """Top-1 agreement and largest probability difference of each export against predict, on `paths`."""
    import keras
    import tensorflow as tf

    from pipeline.export import FILES, predict_saved_model_bytes, tflite_probabilities
    from pipeline.images import decode_image, load_for_model, prepare_for_model, read_bytes
    from pipeline.predict import Predictor

    predictor = Predictor(run_dir)
    size = predictor.input_size
    prepared = np.stack([load_for_model(path, size) for path in paths])
    expected = _batched(predictor.probabilities, prepared)
    loaded = tf.saved_model.load(str(run_dir / "saved_model" / "1"))
    encoded = [read_bytes(path) for path in paths]
    by_bytes = np.concatenate(
        [predict_saved_model_bytes(loaded, encoded[i : i + BATCH])[0] for i in range(0, len(encoded), BATCH)]
    )
    figures = _agreement("bytes", by_bytes, expected)
    # model.keras on whole photos against predict's pixel path (Predictor.predict_image: Pillow's crop and resize).
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    originals = [decode_image(data) for data in encoded]
    any_size = np.concatenate([np.asarray(model(rgb[None], training=False)) for rgb in originals])
    pixel_path = _batched(predictor.probabilities, np.stack([prepare_for_model(rgb, size) for rgb in originals]))
    figures.update(_agreement("keras_any_size", any_size, pixel_path))
    if (run_dir / FILES["tflite"]).exists():
        figures.update(_agreement("tflite", tflite_probabilities(run_dir / FILES["tflite"], prepared), expected))
    if (run_dir / FILES["onnx"]).exists():
        from pipeline.onnx_export import onnx_probabilities

        figures.update(
            _agreement("onnx", _batched(lambda x: onnx_probabilities(run_dir / FILES["onnx"], x), prepared), expected)
        )
    return figures


def _batched(forward, images: np.ndarray) -> np.ndarray:
    return np.concatenate([forward(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def _agreement(name: str, got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    return {
        f"{name}_top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
        f"{name}_max_prob_diff": float(np.abs(got - expected).max()),
    }
