"""Top-k predictions from an exported run, through exactly the decode and resize of training."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from pipeline.errors import ImageProblem, RetrainError
from pipeline.images import bytes_for_model, load_for_model, prepare_for_model
from pipeline.records import load_model_and_labels

BATCH = 32
log = logging.getLogger(__name__)


class Predictor:
    """A run's exported model.keras and labels.txt, ready to answer."""

    def __init__(self, run_dir: str | Path):
        import tensorflow as tf

        run_dir = Path(run_dir)
        model_path, labels_path = run_dir / "model.keras", run_dir / "labels.txt"
        for path in (model_path, labels_path):
            if not path.exists():
                raise RetrainError(f"{path} not found: is {run_dir} a finished run with the keras export?")
        self.model, self.labels = load_model_and_labels(model_path, labels_path)
        self.input_size = int(self.model.input_shape[1])
        # One compiled graph for any batch size: no per-call retracing, ~ms per image.
        self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True,
                                    input_signature=[tf.TensorSpec((None, self.input_size, self.input_size, 3),
                                                                   tf.float32)])
        self._split = split_for_runtime(self.model, self.input_size)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of prepared (N, S, S, 3) uint8 images."""
        if self._split is not None:  # the backbone on LiteRT, the small head on TensorFlow
            backbone, head = self._split
            return head(backbone(images)).numpy()
        return self._forward(images.astype(np.float32)).numpy()

    def top_k(self, probabilities: np.ndarray, k: int) -> list[dict]:
        order = np.argsort(-probabilities)[:max(1, min(k, len(self.labels)))]
        return [{"label": self.labels[i], "score": round(float(probabilities[i]), 6)} for i in order]

    def predict_bytes(self, data: bytes, k: int = 5) -> list[dict]:
        """Top-k for one image file's bytes (the app's upload or camera), decoded exactly as in training."""
        return self.top_k(self.probabilities(bytes_for_model(data, self.input_size)[None])[0], k)

    def predict_image(self, rgb: np.ndarray, k: int = 5) -> list[dict]:
        """Top-k for an already decoded RGB image (crop and resize as in training)."""
        return self.top_k(self.probabilities(prepare_for_model(rgb, self.input_size)[None])[0], k)

    def predict_files(self, paths: list[str | Path], k: int = 5) -> list[dict]:
        """One result per file: {file, predictions} or {file, error}; a bad file never stops the rest."""
        results: list[dict] = []
        for start in range(0, len(paths), BATCH):
            results.extend(self._predict_batch(paths[start:start + BATCH], k))
        return results

    def _predict_batch(self, paths: list[str | Path], k: int) -> list[dict]:
        images, results = [], []
        for path in paths:
            try:
                images.append(load_for_model(path, self.input_size))
                results.append({"file": str(path)})
            except ImageProblem as problem:
                results.append({"file": str(path), "error": str(problem)})
        if images:
            probabilities = iter(self.probabilities(np.stack(images)))
            for result in results:
                if "error" not in result:
                    result["predictions"] = self.top_k(next(probabilities), k)
        return results


def split_for_runtime(model, input_size: int):
    """(backbone on LiteRT, compiled head) for an exported backbone → head classifier, else None (all TensorFlow).

    The backbone's .tflite is keyed by a hash of its weights, so every run on the same backbone shares one
    conversion (made on the first prediction on this machine); a fine-tuned backbone gets its own.
    """
    import keras
    import tensorflow as tf

    from pipeline.backbones.bottleneck import weights_fingerprint
    from pipeline.backbones.runtime import LITERT, litert_forward, runtime_for

    parts = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if runtime_for(model.name) != LITERT or len(parts) != 2 or not all(isinstance(p, keras.Model) for p in parts):
        return None
    backbone, head = parts
    if len(backbone.outputs) != 1 or len(backbone.output.shape) != 2:
        return None
    key = f"predict|{backbone.name}|{weights_fingerprint(backbone)}|{input_size}"
    try:
        forward = litert_forward(lambda: backbone, key, input_size, backbone.name)
    except Exception as error:  # predictions are not cached: TensorFlow is always a safe answer
        log.warning("Predicting on TensorFlow: %s", error)
        return None
    compiled_head = tf.function(lambda x: head(x, training=False), reduce_retracing=True,
                                input_signature=[tf.TensorSpec((None, int(backbone.output.shape[-1])), tf.float32)])
    return forward, compiled_head


def image_files(folder: str | Path) -> list[Path]:
    """Every non-hidden file under folder, sorted; undecodable ones become error rows later."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RetrainError(f"{folder}: not a folder")
    return sorted(path for path in folder.rglob("*")
                  if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def write_predictions_csv(results: list[dict], output_csv: str | Path, k: int, root: str | Path | None = None) -> None:
    """The grocery seed's submission file: file, top label and score, then the top-k, or the error."""
    columns = ["file", "label", "score"] + [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("label", "score")]
    with open(output_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns + ["error"])
        writer.writeheader()
        for result in results:
            name = Path(result["file"]).relative_to(root).as_posix() if root else result["file"]
            row = {"file": name, "error": result.get("error", "")}
            for i, guess in enumerate(result.get("predictions", [])[:k], start=1):
                row[f"label_{i}"], row[f"score_{i}"] = guess["label"], guess["score"]
            if result.get("predictions"):
                row["label"], row["score"] = row["label_1"], row["score_1"]
            writer.writerow(row)
