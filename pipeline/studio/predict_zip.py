"""Predictions for an uploaded zip of photos: one CSV per zip, run and k, kept in the workspace's predictions/."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.files import write_bytes_atomic
from pipeline.studio.uploads import save_upload, unpack_upload
from pipeline.studio.workspaces import Workspace

if TYPE_CHECKING:
    from pipeline.predict import Predictor


def predict_zip(
    workspace: Workspace, predictor: Predictor, zip_name: str, zip_bytes: bytes, run_name: str, k: int
) -> Path:
    """The predictions CSV of an uploaded zip of photos: saved and unpacked in the workspace (within its quota),
    predicted once per zip, run and k (a rerun of the page does not predict again)."""
    from pipeline.predict import image_files

    zip_path = save_upload(workspace, zip_name, zip_bytes)
    root = unpack_upload(workspace, zip_path)
    csv_path = predictions_path(workspace, zip_path, run_name, k)
    if not csv_path.exists():
        save_predictions(predictor.predict_files(image_files(root), k), csv_path, k, root)
    return csv_path


def read_predictions(csv_path: Path) -> pd.DataFrame:
    """A predictions CSV as a table (empty cells stay empty strings: the error column is "" for a prediction)."""
    table = pd.read_csv(io.BytesIO(csv_path.read_bytes()), keep_default_na=False)
    if "caution" not in table.columns:  # written before predictions carried one
        table["caution"] = ""
    return table


def predictions_path(workspace: Workspace, zip_path: Path, run_name: str, k: int) -> Path:
    """Where the predictions CSV of one uploaded zip, run and k is kept: the workspace's predictions/.

    Not next to the unpacked photos: a file added there would change how the same zip reads as a dataset.
    """
    return workspace.predictions / f"{zip_path.stem}-{run_name}-top{k}.csv"


def save_predictions(results: list[dict], csv_path: Path, k: int, root: Path) -> None:
    """Write `Predictor.predict_files` results as the predictions CSV, atomically (it is reused by name), with a
    last column `caution`: why to doubt a prediction ("" when nothing is known against it)."""
    from pipeline.predict import write_predictions_csv

    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / csv_path.name
        write_predictions_csv(results, draft, k, root=root)
        table = read_predictions(draft)
        table["caution"] = ["; ".join((result.get("caution") or {}).get("notes", [])) for result in results]
        write_bytes_atomic(csv_path, table.to_csv(index=False).encode("utf-8"))
