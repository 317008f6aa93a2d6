"""Top-k predictions from an exported run, through exactly the decode and resize of training."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from pipeline.errors import ImageProblem, RetrainError
from pipeline.familiarity import caution, load_familiarity
from pipeline.files import display_name, has_hidden_part, write_bytes_atomic
from pipeline.images import bytes_for_model, load_for_model, prepare_for_model
from pipeline.progress import ProgressCallback, ProgressMeter
from pipeline.records import load_model_and_labels

BATCH = 32
log = logging.getLogger(__name__)


class Predictor:
    """A run's trained model and its labels, ready to answer.

    `model` is a run folder or a .keras file the user points at, with labels.txt beside it or `labels`.
    A run folder answers with its trained head (head.npz) on the backbone's LiteRT forward pass — exactly the
    model its report scored, ready as soon as the report is, without TensorFlow — when LiteRT runs that backbone
    here; otherwise with its model.keras, which must be marked ready in status.json by the run that checked it
    (a killed or failed run's leftovers are refused). `note` says when a path was read differently from how it
    was given (label_image's --graph=output_graph.pb) or the run ended before all its exports were ready.
    """

    def __init__(self, model: str | Path, labels: str | Path | None = None):
        trained = trained_head(Path(model)) if labels is None else None
        if trained is not None:
            forward, head, self.labels, self.input_size, self.note = trained
            self._split = (forward, head.probabilities)
            self._parts = None
            self.familiarity = load_familiarity(Path(model), self.labels)
            return
        self._load_keras(model, labels)

    def _load_keras(self, model: str | Path, labels: str | Path | None) -> None:
        import tensorflow as tf

        from pipeline.export import fixed_size_model

        model_path, labels_path, self.note = resolve_model(model, labels)
        # Refused when labels.txt does not name exactly the model's outputs: never a silently wrong answer.
        loaded, self.labels = load_model_and_labels(model_path, labels_path)
        # The model behind model.keras's own crop and resize: images here are prepared by pipeline.images,
        # the exact preprocessing of training (Pillow), and the backbone may run on LiteRT.
        self.model = fixed_size_model(loaded)
        self.input_size = int(self.model.input_shape[1])
        # One compiled graph for any batch size: no per-call retracing, ~ms per image.
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            reduce_retracing=True,
            input_signature=[tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)],
        )
        self._split = split_for_runtime(self.model, self.input_size)
        # What a photo unlike the training photos is measured against (None: only the "unsure" check).
        self.familiarity = load_familiarity(model_path.parent, self.labels)
        self._parts = _compiled_parts(self.model, self.input_size) if self.familiarity and not self._split else None

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of prepared (N, S, S, 3) uint8 images."""
        return self.probabilities_and_features(images)[0]

    def probabilities_and_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(class probabilities, bottleneck features or None when the model cannot be split) for a batch."""
        if self._split is not None:  # the backbone on LiteRT, the small head in NumPy or on TensorFlow
            backbone, head = self._split
            features = np.asarray(backbone(images))
            return np.asarray(head(features)), features
        if self._parts is not None:
            backbone, head = self._parts
            features = backbone(images.astype(np.float32))
            return head(features).numpy(), features.numpy()
        return self._forward(images.astype(np.float32)).numpy(), None

    def judged(self, probabilities: np.ndarray, features: np.ndarray | None, k: int) -> dict:
        """{"predictions": top-k, "caution": {unsure, unlike_training, notes, distance}} for one image."""
        distance = None
        if self.familiarity is not None and features is not None:
            distance = self.familiarity.distance(features)
        return {
            "predictions": self.top_k(probabilities, k),
            "caution": caution(probabilities, self.labels, distance, self.familiarity),
        }

    def predict_bytes_judged(self, data: bytes, k: int = 5) -> dict:
        """Top-k for one image file's bytes, with whether to doubt it (see pipeline.familiarity)."""
        probabilities, features = self.probabilities_and_features(bytes_for_model(data, self.input_size)[None])
        return self.judged(probabilities[0], None if features is None else features[0], k)

    def top_k(self, probabilities: np.ndarray, k: int) -> list[dict]:
        order = np.argsort(-probabilities)[: max(1, min(k, len(self.labels)))]
        return [{"label": self.labels[i], "score": round(float(probabilities[i]), 6)} for i in order]

    def predict_bytes(self, data: bytes, k: int = 5) -> list[dict]:
        """Top-k for one image file's bytes (the app's upload or camera), decoded exactly as in training."""
        return self.top_k(self.probabilities(bytes_for_model(data, self.input_size)[None])[0], k)

    def predict_image(self, rgb: np.ndarray, k: int = 5) -> list[dict]:
        """Top-k for an already decoded RGB image (crop and resize as in training)."""
        return self.top_k(self.probabilities(prepare_for_model(rgb, self.input_size)[None])[0], k)

    def predict_files(
        self, paths: list[str | Path], k: int = 5, progress: ProgressCallback | None = None
    ) -> list[dict]:
        """One result per file: {file, predictions} or {file, error}; a bad file never stops the rest."""
        results: list[dict] = []
        meter = ProgressMeter("predicting", len(paths), progress)
        for start in range(0, len(paths), BATCH):
            results.extend(self._predict_batch(paths[start : start + BATCH], k))
            meter.advance(len(paths[start : start + BATCH]))
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
            probabilities, features = self.probabilities_and_features(np.stack(images))
            answers = iter(range(len(images)))
            for result in results:
                if "error" not in result:
                    i = next(answers)
                    result.update(self.judged(probabilities[i], None if features is None else features[i], k))
        return results


def _compiled_parts(model, input_size: int):
    """(backbone, head) as compiled functions for a backbone → head classifier (what runs export), else None."""
    import keras
    import tensorflow as tf

    parts = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(parts) != 2 or not all(isinstance(part, keras.Model) for part in parts):
        return None
    backbone, head = parts
    if len(backbone.outputs) != 1 or len(backbone.output.shape) != 2:
        return None
    image = tf.TensorSpec((None, input_size, input_size, 3), tf.float32)
    vector = tf.TensorSpec((None, int(backbone.output.shape[-1])), tf.float32)
    return (
        tf.function(lambda x: backbone(x, training=False), reduce_retracing=True, input_signature=[image]),
        tf.function(lambda x: head(x, training=False), reduce_retracing=True, input_signature=[vector]),
    )


def trained_head(run_dir: Path):
    """(LiteRT forward, head, labels, input size, note) of a run folder whose head and report were written, when its
    backbone runs on LiteRT here and is the one the run used; else None (model.keras then answers, or says why not).
    """
    from pipeline.backbones import load_backbone
    from pipeline.backbones.runtime import LITERT, backbone_forward, runtime_for
    from pipeline.config import RunConfig
    from pipeline.evaluate import Report
    from pipeline.files import file_sha256
    from pipeline.head import HEAD_FILE, Head

    if not (run_dir / HEAD_FILE).is_file() or not (run_dir / "report.json").is_file():
        return None
    try:
        report, config = Report.load(run_dir / "report.json"), RunConfig.load(run_dir / "config.json")
        if "head_sha256" not in report.extra:  # a run from before reports recorded their head: model.keras answers
            return None
        if file_sha256(run_dir / HEAD_FILE) != report.extra["head_sha256"]:
            raise RetrainError(f"{run_dir / HEAD_FILE} is not the head its report.json scored (replaced or copied)")
        head = Head.load(run_dir / HEAD_FILE)
        train = config.train
        if runtime_for(train.architecture) != LITERT:
            return None
        backbone = load_backbone(train.architecture, train.bottleneck_layer, train.mirror_view)
    except (RetrainError, OSError) as error:  # damaged or foreign files: model.keras's own checks say what to do
        log.warning("Not using the trained head of %s: %s", run_dir, error)
        return None
    if (
        backbone.identity != report.extra.get("backbone_identity")
        or head.num_classes != len(report.labels)
        or head.feature_dim != backbone.feature_dim
    ):
        log.warning("Not using the trained head of %s: it does not match the run's backbone or labels", run_dir)
        return None
    try:
        forward = backbone_forward(backbone)
    except Exception as error:  # no LiteRT conversion here: TensorFlow is always a safe answer
        log.warning("Predicting on TensorFlow: %s", error)
        return None
    return forward, head, report.labels, backbone.input_size, _ending_note(run_dir)


def _ending_note(run_dir: Path) -> str:
    """What to say when the run behind a trained head ended failed or cancelled (after its report: it was scored)."""
    from pipeline.runs import RunDir, refreshed_status

    state = refreshed_status(RunDir(run_dir)).get("state")
    if state in ("failed", "cancelled"):
        return f"run {run_dir} ended {state} before all its exports were ready; its trained and scored head is used"
    return ""


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
    compiled_head = tf.function(
        lambda x: head(x, training=False),
        reduce_retracing=True,
        input_signature=[tf.TensorSpec((None, int(backbone.output.shape[-1])), tf.float32)],
    )
    return forward, compiled_head


def resolve_model(model: str | Path, labels: str | Path | None = None) -> tuple[Path, Path, str]:
    """(model file, labels file, note) for a run folder or a model file; refuses unchecked exports."""
    path, note = Path(model), ""
    if path.is_dir():
        note = require_ready(path, "keras")
        return path / "model.keras", Path(labels) if labels else path / "labels.txt", note
    if not path.exists() and path.with_suffix(".keras").is_file():  # label_image's --graph=output_graph.pb
        note = f"{path} is not there (TF2 has no frozen graphs); using the Keras model {path.with_suffix('.keras')}"
        path = path.with_suffix(".keras")
    if not path.is_file():
        raise RetrainError(f"{path} not found: give a run folder or a .keras model file")
    if path.suffix != ".keras":
        raise RetrainError(
            f"{path}: predict reads Keras models (.keras) or run folders; for SavedModel and "
            "TFLite files use TF Serving or LiteRT (see README: exports)"
        )
    if labels is None and path.parent.joinpath("labels.txt").is_file():
        labels = path.parent / "labels.txt"
    if labels is None:
        raise RetrainError(f"no labels for {path}: give --labels FILE (the run's labels.txt, or --output_labels)")
    return path, Path(labels), note


def require_ready(run_dir: Path, export: str) -> str:
    """Refuse an export its run did not finish and check (killed, or failed or cancelled before it was ready).

    An export the run did check is used even when a later one failed or was cancelled, but never
    silently: the returned note says so ("" for a run that is done or still building the rest).
    """
    from pipeline.runs import RunDir, refreshed_status

    run = RunDir(run_dir)
    status = refreshed_status(run)
    state, exports = status.get("state"), status.get("exports")
    # Runs written before per-export states: only a finished run's exports were checked.
    ready = exports.get(export) == "ready" if isinstance(exports, dict) else state == "done"
    if not ready:
        why = (
            f"run {state}" + (f": {status['message']}" if status.get("message") else "")
            if state
            else "no status.json: not a run folder, or a run that never started"
        )
        raise RetrainError(f"{run_dir}: its {export} export was not finished and checked ({why}); train again")
    if state in ("failed", "cancelled"):
        return (
            f"run {run_dir} ended {state} before all its exports were ready; its {export} export was checked "
            "and is used"
        )
    return ""


def image_files(folder: str | Path) -> list[Path]:
    """Every non-hidden file under folder, sorted; undecodable ones become error rows later."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RetrainError(f"{folder}: not a folder")
    return sorted(
        path for path in folder.rglob("*") if path.is_file() and not has_hidden_part(path.relative_to(folder))
    )


def write_predictions_csv(results: list[dict], output_csv: str | Path, k: int, root: str | Path | None = None) -> None:
    """The grocery seed's submission file: file, top label and score, then the top-k, or the error."""
    columns = ["file", "label", "score"] + [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("label", "score")]
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=columns + ["error"])
    writer.writeheader()
    for result in results:
        name = Path(result["file"]).relative_to(root).as_posix() if root else result["file"]
        row = {"file": display_name(name), "error": result.get("error", "")}  # non-UTF-8 bytes as \xNN
        for i, guess in enumerate(result.get("predictions", [])[:k], start=1):
            row[f"label_{i}"], row[f"score_{i}"] = guess["label"], guess["score"]
        if result.get("predictions"):
            row["label"], row["score"] = row["label_1"], row["score_1"]
        writer.writerow(row)
    # Whole or not at all: a CSV cut short by a crash would pass for a smaller folder's predictions.
    write_bytes_atomic(output_csv, handle.getvalue().encode("utf-8"))


def looks_like_predictions_csv(path: Path) -> bool:
    """A CSV `write_predictions_csv` wrote (a rerun may replace it; anything else is the user's)."""
    with open(path, encoding="utf-8") as handle:
        return handle.readline().startswith("file,label,score,")
