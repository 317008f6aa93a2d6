"""Reading back the program's own files: one validating reader per kind, each failing with a clear message.

Everything Retrain Studio writes it may read again — status.json, config.json, report.json,
metrics.csv, workspace.json, an overrides file, labels.txt, model.keras — and any of them can be
truncated by a full disk, overwritten by hand, or written by another version. A reader here checks
bytes (UTF-8), syntax (JSON, CSV) and types, and answers with `DamagedFile` naming the file, what is
wrong with it and what to do; it never hands a caller a half-right value. Callers decide what a
damaged file means for them: a run shown as "unknown", a workspace that starts afresh, a CLI line.

The trade-off: every read parses and checks the whole file (they are small), instead of trusting
what we wrote ourselves — a disk that filled up mid-write does not know whose file it was.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

from pipeline.errors import RetrainError

_MISSING = object()


# The largest of the program's own text files it reads back (a metrics.csv of a very long run is a few MB).
MAX_RECORD_BYTES = 256 << 20


class DamagedFile(RetrainError):
    """One of the program's own files cannot be used as it is; the message names it and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path}: {problem}; {fix}")


def read_text(path: str | Path, fix: str, default: Any = _MISSING) -> Any:
    """The file's text (strict UTF-8); `default` when it does not exist, if given, else DamagedFile."""
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_RECORD_BYTES:
            raise DamagedFile(path, f"is {info.st_size:,} bytes, far more than such a file ever holds", fix)
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):  # a pipe or device never ends
            raise DamagedFile(path, "is not a regular file (a pipe or a device)", fix)
        data = Path(path).read_bytes()
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise DamagedFile(path, "the file is missing", fix) from None
    except IsADirectoryError:
        raise DamagedFile(path, "is a folder, not a file", fix) from None
    except OSError as error:
        raise DamagedFile(path, f"cannot be read ({error.strerror or error})", fix) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DamagedFile(path, f"is damaged (byte {error.start} is not UTF-8 text)", fix) from None


def read_json_record(path: str | Path, fix: str, expect: type = dict, default: Any = _MISSING) -> Any:
    """The JSON value in `path`, which must be of type `expect`; `default` when missing (if given)."""
    text = read_text(path, fix, default=_MISSING if default is _MISSING else None)
    if text is None:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        what = "is empty" if not text.strip() else f"is damaged (not valid JSON: {error.msg} at line {error.lineno})"
        raise DamagedFile(path, what, fix) from None
    except RecursionError:
        raise DamagedFile(path, "is damaged (nested too deeply)", fix) from None
    if not isinstance(value, expect):
        raise DamagedFile(path, f"is damaged (holds a {type(value).__name__}, not a {expect.__name__})", fix)
    return value


def require_type(
    path: str | Path, data: dict, key: str, kinds: tuple[type, ...], fix: str, optional: bool = True
) -> None:
    """DamagedFile unless data[key] is one of `kinds` (or absent/None when `optional`); bools are not numbers."""
    value = data.get(key)
    if value is None and optional:
        return
    numeric = int in kinds or float in kinds
    if (
        value is None
        or not isinstance(value, kinds)
        or (isinstance(value, bool) and bool not in kinds and numeric)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise DamagedFile(
            path, f"is damaged ({key!r} is {value!r}, expected {' or '.join(kind.__name__ for kind in kinds)})", fix
        )


# ---- status.json ----------------------------------------------------------------------------------------------------

STATUS_FIX = "the run is shown as unknown; delete it or rerun it"
_STATUS_NUMBERS = (
    "progress",
    "updated",
    "started",
    "finished",
    "test_accuracy",
    "done",
    "total",
    "per_second",
    "eta_seconds",
    "step_number",
    "total_steps",
    "working_since",
)


def read_status(path: str | Path, states: tuple[str, ...]) -> dict[str, Any]:
    """A run's status.json checked field by field; {} when the run has not written one yet."""
    status = read_json_record(path, STATUS_FIX, default={})
    if not status:
        return {}
    if status.get("state") not in states:
        raise DamagedFile(path, f"is damaged (state {status.get('state')!r} is not a run state)", STATUS_FIX)
    for key in _STATUS_NUMBERS:
        require_type(path, status, key, (int, float), STATUS_FIX)
    for key in ("step", "message", "pid_started", "test_split_warning"):
        require_type(path, status, key, (str,), STATUS_FIX)
    require_type(path, status, "pid", (int,), STATUS_FIX)
    require_type(path, status, "waiting", (bool,), STATUS_FIX)
    return status


# ---- config.json ----------------------------------------------------------------------------------------------------

CONFIG_FIX = "fix it or start a new run (the app's Configure page writes a fresh one)"


def read_config(path: str | Path):
    """A run's (or a user's) config.json as a RunConfig, every field type-checked."""
    from pipeline.config import RunConfig

    data = read_json_record(path, CONFIG_FIX)
    try:
        return RunConfig.from_dict(data)
    except DamagedFile:
        raise
    except RetrainError as error:
        raise DamagedFile(path, f"is damaged ({error})", CONFIG_FIX) from None


# ---- report.json ----------------------------------------------------------------------------------------------------

REPORT_FIX = "the run's results cannot be shown; train it again"


def read_report(path: str | Path):
    """A finished run's report.json as a Report, its shape checked (labels, matrix, scores, predictions)."""
    from pipeline.evaluate import ClassScores, Prediction, Report

    data = read_json_record(path, REPORT_FIX)
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise DamagedFile(path, "is damaged ('labels' is not a list of class names)", REPORT_FIX)
    for key in ("test_accuracy", "top5_accuracy"):
        require_type(path, data, key, (int, float), REPORT_FIX, optional=False)
    require_type(path, data, "test_images", (int,), REPORT_FIX, optional=False)
    matrix = data.get("confusion_matrix")
    if (
        not isinstance(matrix, list)
        or len(matrix) != len(labels)
        or not all(
            isinstance(row, list) and len(row) == len(labels) and all(type(n) is int for n in row) for row in matrix
        )
    ):
        raise DamagedFile(
            path, f"is damaged (the confusion matrix is not {len(labels)}×{len(labels)} counts)", REPORT_FIX
        )
    try:
        per_class = {str(label): ClassScores(**scores) for label, scores in data["per_class"].items()}
        misclassified = [Prediction(**item) for item in data["misclassified"]]
        predictions = [Prediction(**item) for item in data.get("predictions") or []]
    except (KeyError, TypeError, AttributeError) as error:
        raise DamagedFile(
            path, f"is damaged (per-class scores or predictions malformed: {error})", REPORT_FIX
        ) from None
    for item in misclassified + predictions:
        if (
            not all(isinstance(text, str) for text in (item.file, item.true_label, item.predicted_label))
            or not isinstance(item.confidence, (int, float))
            or isinstance(item.confidence, bool)
        ):
            raise DamagedFile(path, f"is damaged (a prediction is malformed: {item!r:.120})", REPORT_FIX)
    for scores in per_class.values():
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            for v in (scores.precision, scores.recall, scores.f1, scores.support)
        ):
            raise DamagedFile(path, "is damaged (a per-class score is not a number)", REPORT_FIX)
    extra = {key: value for key, value in data.items() if key not in Report.__dataclass_fields__}
    return Report(
        test_accuracy=data["test_accuracy"],
        top5_accuracy=data["top5_accuracy"],
        test_images=data["test_images"],
        labels=labels,
        per_class=per_class,
        confusion_matrix=matrix,
        misclassified=misclassified,
        predictions=predictions,
        extra=extra,
    )


# ---- metrics.csv ----------------------------------------------------------------------------------------------------

METRICS_FIX = "the training curves cannot be drawn; rerun the run to write them again"


def read_metrics(path: str | Path, columns: list[str]) -> list[dict[str, float | None]]:
    """metrics.csv as rows of numbers; [] before the first row. A half-written last line is skipped (a run
    killed mid-write leaves one); a bad line anywhere else means the file is damaged."""
    text = read_text(path, METRICS_FIX, default=None)
    if not text:
        return []
    lines = text.splitlines()
    if lines[0].split(",") != columns:
        raise DamagedFile(path, f"is damaged (its header is not {','.join(columns)})", METRICS_FIX)
    rows = []
    complete = text.endswith("\n")
    records = list(csv.reader(io.StringIO("\n".join(lines[1:]))))
    for number, record in enumerate(records, start=2):
        row = _metrics_row(record, columns)
        if row is None:
            if number == len(records) + 1 and not complete:
                break
            raise DamagedFile(path, f"is damaged (line {number} is not {len(columns)} numbers)", METRICS_FIX)
        rows.append(row)
    return rows


def _metrics_row(record: list[str], columns: list[str]) -> dict[str, float | None] | None:
    if len(record) != len(columns):
        return None
    try:
        values = [float(value) if value else None for value in record]
    except ValueError:
        return None
    if any(value is not None and not math.isfinite(value) for value in values) or values[0] is None:
        return None
    return dict(zip(columns, values, strict=True))


# ---- workspace.json -------------------------------------------------------------------------------------------------

WORKSPACE_FIX = "it was set aside and this workspace starts afresh (its runs are kept)"
_SUMMARY_TYPES = {"name": str, "images": int, "classes": int, "problems": int}


def read_workspace_state(path: str | Path) -> dict[str, Any]:
    """workspace.json with each known key checked: {} when new; DamagedFile when unusable as a whole.

    A key of the wrong shape is dropped (that one choice is forgotten) rather than failing the page.
    """
    from pipeline.config import DatasetConfig, RunConfig, section_from_dict

    state = read_json_record(path, WORKSPACE_FIX, default={})
    checked = dict(state)
    for key, valid in {
        "run": lambda v: isinstance(v, str),
        "preset": lambda v: isinstance(v, str),
        "dataset": lambda v: isinstance(v, dict) and _quietly(section_from_dict, DatasetConfig, v),
        "config": lambda v: isinstance(v, dict) and _quietly(RunConfig.from_dict, v),
        "dataset_summary": lambda v: (
            isinstance(v, dict) and all(type(v.get(name)) is kind for name, kind in _SUMMARY_TYPES.items())
        ),
    }.items():
        if checked.get(key) is not None and not valid(checked[key]):
            del checked[key]
    return checked


def _quietly(function, *args) -> bool:
    try:
        function(*args)
    except (RetrainError, TypeError, ValueError):
        return False
    return True


# ---- overrides (per-image decisions) --------------------------------------------------------------------------------

OVERRIDES_FIX = "fix it or delete it to start over (your photos are not affected)"


def read_overrides(path: str | Path) -> dict:
    """{"drop": [file, ...], "relabel": {file: label}} from a decisions file; empty when it does not exist."""
    data = read_json_record(path, OVERRIDES_FIX, default={})
    drop, relabel = data.get("drop", []), data.get("relabel", {})
    if (
        not isinstance(drop, list)
        or not isinstance(relabel, dict)
        or not all(isinstance(file, str) for file in drop)
        or not all(isinstance(label, str) for label in relabel.values())
    ):
        raise DamagedFile(
            path, 'is damaged (it must look like {"drop": [files], "relabel": {file: label}})', OVERRIDES_FIX
        )
    return {"drop": sorted(set(drop)), "relabel": dict(relabel)}


# ---- labels.txt and model.keras -------------------------------------------------------------------------------------

EXPORT_FIX = "the run's exports are unusable; train it again"


def read_labels(path: str | Path) -> list[str]:
    """The class names of labels.txt, one a line, in the model's output order (no blanks, no repeats)."""
    text = read_text(path, EXPORT_FIX)
    labels = [line for line in text.splitlines() if line]
    if not labels:
        raise DamagedFile(path, "is empty", EXPORT_FIX)
    if not text.endswith("\n"):  # every line is written whole, newline included: this one was cut off
        raise DamagedFile(path, "is truncated (its last line has no end)", EXPORT_FIX)
    if len(set(labels)) != len(labels):
        raise DamagedFile(path, "is damaged (a class name is listed twice)", EXPORT_FIX)
    return labels


def load_keras_model(path: str | Path):
    """model.keras loaded with Keras; a truncated or foreign file is DamagedFile, not a Keras traceback."""
    import keras

    if not Path(path).is_file():
        raise DamagedFile(path, "the file is missing", EXPORT_FIX)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there but cut short
        raise DamagedFile(
            path, "is damaged (not a whole .keras archive: truncated, or another kind of file)", EXPORT_FIX
        )
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # zipfile, h5py, JSON and Keras errors alike: the file is not a usable model
        raise DamagedFile(path, f"cannot be loaded ({type(error).__name__}: {str(error)[:160]})", EXPORT_FIX) from None


def load_model_and_labels(model_path: str | Path, labels_path: str | Path):
    """(model, labels) of an export, refused when labels.txt does not name exactly the model's outputs."""
    labels = read_labels(labels_path)
    model = load_keras_model(model_path)
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if outputs != len(labels):
        raise DamagedFile(
            labels_path,
            f"lists {len(labels)} classes but {Path(model_path).name} has {outputs} "
            "outputs, so every answer would name the wrong class",
            EXPORT_FIX,
        )
    return model, labels
