"""What a run was trained on: one row per image (file, label, split, sha256, status), kept in the run folder.

A dataset can grow after a run (photos added in the browser, a class renamed), and a folder name
alone says nothing about what was in it then. So every run writes `dataset_manifest.csv` when it
has read its dataset — before any bottleneck is computed — and the run's record (its image count,
the Runs table) is read from that file, not from the folder as it is now.

The trade-off: the manifest records content by hash; it does not keep copies of the photos. A
photo deleted later is gone from disk, but the run still says which photo (and which bytes) it used.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from pipeline.dataset import Dataset
from pipeline.errors import RetrainError
from pipeline.files import write_bytes_atomic

MANIFEST = "dataset_manifest.csv"
COLUMNS = ["file", "label", "split", "sha256", "status"]


def write_manifest(dataset: Dataset, run_dir: str | Path) -> Path:
    """Write the dataset's table (relative file, label, split, sha256, status) into the run folder, atomically."""
    path = Path(run_dir) / MANIFEST
    buffer = io.StringIO()
    dataset.table[COLUMNS].to_csv(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return path


def read_manifest(run_dir: str | Path) -> pd.DataFrame | None:
    """The run's manifest as a table of COLUMNS, None when the run has none (made before manifests existed).

    A damaged manifest (truncated, not UTF-8, other columns) is a RetrainError naming the file.
    """
    path = Path(run_dir) / MANIFEST
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise RetrainError(f"{path}: the run's dataset manifest cannot be read ({err}); it was damaged after "
                           "the run wrote it") from None
    if list(table.columns) != COLUMNS:
        raise RetrainError(f"{path}: the run's dataset manifest has columns {list(table.columns)}, expected "
                           f"{COLUMNS}; it was changed after the run wrote it")
    return table


def trained_images(run_dir: str | Path) -> int | None:
    """How many usable images the run trained and tested on, by its manifest (None without a readable one)."""
    try:
        table = read_manifest(run_dir)
    except RetrainError:
        return None
    return None if table is None else int((table["status"] == "ok").sum())
