"""What a run was trained on: the dataset's name, image and class counts and content signature, kept in the run.

A run folder outlives the dataset the workspace points at now, so anything that shows a run's result
must show the run's own dataset, never the current one. The run writes `dataset.json` as soon as it
has read its dataset (and the same summary into report.json): runs that never got that far, and runs
made before this file existed, are read from their manifest, else as "unknown dataset" — never an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.config import DatasetConfig
from pipeline.errors import RetrainError
from pipeline.files import display_name, write_json_atomic

DATASET_RECORD = "dataset.json"
UNKNOWN_DATASET = "unknown dataset"
# An upload kept by the app is uploads/<12 hex of its content>-<safe name>.unpacked/: the name is the part between.
_UPLOAD_FOLDER = re.compile(r"^[0-9a-f]{12}-(.+?)(\.zip)?\.unpacked$")


def dataset_display_name(config: DatasetConfig) -> str:
    """The dataset's name as its user knows it: the folder or zip name, without the app's upload prefixes."""
    path = Path(config.image_dir or config.zip or "")
    for part in reversed(path.parts):
        if match := _UPLOAD_FOLDER.match(part):
            return display_name(match.group(1)) + (" (CSV)" if config.label_csv else "")
    name = path.stem if path.suffix.lower() == ".zip" else path.name
    return display_name(name.removesuffix(".unpacked")) or UNKNOWN_DATASET


def summarize_dataset(dataset, config: DatasetConfig) -> dict[str, Any]:
    """{name, images, classes, class_names, signature} of a loaded Dataset: what a run records about its data."""
    return {
        "name": dataset_display_name(config),
        "images": int(len(dataset.usable())),
        "classes": len(dataset.classes),
        "class_names": list(dataset.classes),
        "signature": dataset.signature,
    }


def write_run_dataset(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Record the run's dataset summary in the run folder, atomically."""
    write_json_atomic(Path(run_dir) / DATASET_RECORD, summary)


def run_dataset_summary(run_dir: str | Path) -> dict[str, Any]:
    """The dataset a run was trained on: {name, images, classes, signature, known}; never raises.

    Read from the run's dataset.json, else its report.json, else its manifest and config (older
    runs); a run with none of them readable is {"name": "unknown dataset", ..., "known": False}.
    """
    run_dir = Path(run_dir)
    for reader in (_from_record, _from_report, _from_manifest):
        try:
            summary = reader(run_dir)
        except (RetrainError, OSError, ValueError, KeyError):  # a damaged source: try the next (display only)
            summary = None
        if summary:
            return {**summary, "known": True}
    return {"name": UNKNOWN_DATASET, "images": None, "classes": None, "signature": "", "known": False}


def dataset_line(summary: dict[str, Any]) -> str:
    """One line for a page: "flowers · 3,670 images · 5 classes", or "unknown dataset"."""
    if not summary.get("known"):
        return UNKNOWN_DATASET
    parts = [summary["name"]]
    if summary.get("images") is not None:
        parts.append(f"{summary['images']:,} images")
    if summary.get("classes") is not None:
        parts.append(f"{summary['classes']} classes")
    return " · ".join(parts)


def _checked(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    images, classes = data.get("images"), data.get("classes")
    if type(images) is not int or type(classes) is not int or images < 0 or classes < 0:
        return None
    signature = data.get("signature") if isinstance(data.get("signature"), str) else ""
    return {"name": display_name(data["name"]), "images": images, "classes": classes, "signature": signature}


def _from_record(run_dir: Path) -> dict[str, Any] | None:
    from pipeline.records import read_json_record

    return _checked(read_json_record(run_dir / DATASET_RECORD, "it is rewritten by the next run", default={}))


def _from_report(run_dir: Path) -> dict[str, Any] | None:
    from pipeline.records import read_json_record

    return _checked(read_json_record(run_dir / "report.json", "", default={}).get("dataset"))


def _from_manifest(run_dir: Path) -> dict[str, Any] | None:
    from pipeline.manifest import read_manifest
    from pipeline.records import read_config

    table = read_manifest(run_dir)
    if table is None:
        return None
    usable = table[table["status"] == "ok"]
    return {
        "name": dataset_display_name(read_config(run_dir / "config.json").dataset),
        "images": int(len(usable)),
        "classes": int(usable["label"].nunique()),
        "signature": "",
    }
