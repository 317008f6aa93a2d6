"""`predict --engine ray`: a run's exported model.keras over a folder or URI of images, to CSV or Parquet.

The same split of work as extraction: Ray tasks read and decode (the one decode path), actors hold the
model (`pipeline.predict.Predictor`, so the answers are the local `predict`'s), and only the small
top-k rows come back to write the output file. A bad image is an error row, as locally.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import ImageProblem, RetrainError
from pipeline.scale.cluster import cluster_plan
from pipeline.scale.storage import filesystem_for, is_uri, list_files

BATCH = 64  # images per actor call


def predict_folder(model_dir: str, image_dir: str, top_k: int, actors: int | None = None) -> list[dict]:
    """One {file, predictions} or {file, error} per file under image_dir, in file order (inside a ray_session)."""
    import pyarrow as pa
    import ray

    for name in ("model.keras", "labels.txt"):
        if not (Path(model_dir) / name).exists():
            raise RetrainError(
                f"{Path(model_dir) / name} not found: is {model_dir} a finished run with the "
                "keras export? (the model folder must be readable by every Ray worker)"
            )
    paths = list_files(image_dir)
    if not paths:
        return []
    input_size = _input_size(model_dir)
    plan = cluster_plan(actors)
    filesystem = filesystem_for(image_dir)[0] if is_uri(image_dir) else None
    step = max(1, min(BATCH, -(-len(paths) // (plan.actors * 2))))
    listing = pa.table({"path": paths})
    files = ray.data.from_arrow([listing.slice(start, step) for start in range(0, len(paths), step)])
    decoded = files.map_batches(
        decode_for_prediction,
        batch_format="numpy",
        num_cpus=plan.read_cpus,
        fn_kwargs={"filesystem": filesystem, "size": input_size},
    )
    predicted = decoded.map_batches(
        PredictorActor,
        batch_format="numpy",
        batch_size=BATCH,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor or None,
        fn_constructor_kwargs={"model_dir": str(model_dir), "top_k": top_k},
    )
    results = {}
    for batch in predicted.iter_batches(batch_size=None, batch_format="numpy"):
        for path, result in zip(batch["path"], batch["result"], strict=True):
            results[str(path)] = json.loads(result)
    return [results[path] for path in paths]


def _input_size(model_dir: str) -> int:
    """The model's input side, read from its config without loading TensorFlow on the driver."""
    import zipfile

    try:
        with zipfile.ZipFile(Path(model_dir) / "model.keras") as archive:
            layers = json.loads(archive.read("config.json"))["config"]["layers"]
        # model.keras takes any size and resizes to the classifier's side itself (older runs' files take that side).
        resize = [layer["config"] for layer in layers if layer["class_name"] == "Resizing"]
        return int(resize[0]["height"] if resize else layers[0]["config"]["batch_shape"][1])
    except (OSError, KeyError, IndexError, TypeError, ValueError, zipfile.BadZipFile) as error:
        raise RetrainError(f"{Path(model_dir) / 'model.keras'} cannot be read ({error}); re-export the run") from None


def decode_for_prediction(batch: dict[str, np.ndarray], filesystem, size: int) -> dict[str, np.ndarray]:
    """A Ray task: each file decoded for the model, or the reason it cannot be."""
    from pipeline.images import bytes_for_model, read_bytes
    from pipeline.scale.storage import read_file_bytes

    images, problems = [], []
    for path in batch["path"]:
        try:
            data = read_file_bytes(filesystem, str(path)) if filesystem is not None else read_bytes(str(path))
            images.append(bytes_for_model(data, size))
            problems.append("")
        except ImageProblem as problem:
            images.append(np.zeros((size, size, 3), np.uint8))
            problems.append(str(problem))
    return {
        "path": batch["path"],
        "problem": np.array(problems, dtype=object),
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
    }


class PredictorActor:
    """A Ray actor holding one Predictor (model.keras + labels.txt)."""

    def __init__(self, model_dir: str, top_k: int):
        from pipeline.predict import Predictor

        self.predictor = Predictor(model_dir)
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = batch["problem"] == ""
        probabilities = iter(self.predictor.probabilities(batch["image"][good]) if good.any() else [])
        results = []
        for path, problem in zip(batch["path"], batch["problem"], strict=True):
            result = {"file": str(path)}
            if problem:
                result["error"] = str(problem)
            else:
                result["predictions"] = self.predictor.top_k(next(probabilities), self.top_k)
            results.append(json.dumps(result))
        return {"path": batch["path"], "result": np.array(results, dtype=object)}


def write_predictions(results: list[dict], output: str, top_k: int, root: str) -> None:
    """CSV (the local predict's columns) or Parquet (the same columns), chosen by the output's suffix."""
    from pipeline.predict import write_predictions_csv

    relative = [{**result, "file": _relative(result["file"], root)} for result in results]
    if output.endswith(".csv"):
        write_predictions_csv(relative, output, top_k)
    elif output.endswith(".parquet"):
        _write_parquet(relative, output, top_k)
    else:
        raise RetrainError(f"--output {output}: name a .csv or .parquet file")


def refuse_foreign_predictions(output: str) -> None:
    """Stop before --output replaces a file that is not a predictions file of ours (a rerun may replace one)."""
    from pipeline.files import refuse_to_replace
    from pipeline.predict import looks_like_predictions_csv

    if output.endswith(".parquet"):
        refuse_to_replace(output, _looks_like_predictions_parquet, "a predictions Parquet file")
    else:
        refuse_to_replace(output, looks_like_predictions_csv, "a predictions CSV")


def _looks_like_predictions_parquet(path) -> bool:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names[:4] == ["file", "label", "score", "error"]
    except Exception:  # not Parquet at all: not ours
        return False


def _relative(path: str, root: str) -> str:
    base = filesystem_for(root)[1].rstrip("/") + "/"
    return path[len(base) :] if path.startswith(base) else path


def _write_parquet(results: list[dict], output: str, top_k: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.files import write_bytes_atomic

    columns: dict[str, list] = {"file": [], "label": [], "score": [], "error": []}
    for i in range(1, top_k + 1):
        columns[f"label_{i}"], columns[f"score_{i}"] = [], []
    for result in results:
        guesses = result.get("predictions", [])
        columns["file"].append(result["file"])
        columns["error"].append(result.get("error", ""))
        columns["label"].append(guesses[0]["label"] if guesses else None)
        columns["score"].append(guesses[0]["score"] if guesses else None)
        for i in range(1, top_k + 1):
            guess = guesses[i - 1] if i <= len(guesses) else {}
            columns[f"label_{i}"].append(guess.get("label"))
            columns[f"score_{i}"].append(guess.get("score"))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    write_bytes_atomic(output, sink.getvalue().to_pybytes())
