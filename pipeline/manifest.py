"""What a run was trained on: one row per image (file, label, split, sha256, status), kept in the run folder.

A dataset can grow after a run (photos added in the browser, a class renamed), and a folder name
alone says nothing about what was in it then. So every run writes `dataset_manifest.csv` when it
has read its dataset — before any bottleneck is computed — and the run's record (its image count,
the Runs table) is read from that file, not from the folder as it is now.

The trade-off: the manifest records content by hash; it does not keep copies of the photos. A
photo deleted later is gone from disk, but the run still says which photo (and which bytes) it used.

A run queued in the app may wait while the user keeps adding photos. So when it joins the queue,
`freeze_dataset` writes the same table as `queued_dataset.csv`, and the run, when it starts,
trains on exactly those photos (`as_queued`): photos added since are left out, a photo moved by a
class rename is found by its content and keeps the label it had, and one deleted or changed
since is skipped and counted in a line of run.log. No photo is copied to make this so.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pandas as pd

from pipeline.dataset import Dataset
from pipeline.errors import RetrainError
from pipeline.files import write_bytes_atomic

MANIFEST = "dataset_manifest.csv"
QUEUED = "queued_dataset.csv"  # the dataset as it was when the run was queued (the app's runs only)
COLUMNS = ["file", "label", "split", "sha256", "status"]


def write_manifest(dataset: Dataset, run_dir: str | Path, name: str = MANIFEST) -> Path:
    """Write the dataset's table (relative file, label, split, sha256, status) into the run folder, atomically."""
    path = Path(run_dir) / name
    buffer = io.StringIO()
    dataset.table[COLUMNS].to_csv(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return path


def read_manifest(run_dir: str | Path, name: str = MANIFEST) -> pd.DataFrame | None:
    """The run's manifest as a table of COLUMNS, None when the run has none (made before manifests existed).

    A damaged manifest (truncated, not UTF-8, other columns) is a RetrainError naming the file.
    """
    path = Path(run_dir) / name
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise RetrainError(
            f"{path}: the run's dataset manifest cannot be read ({err}); it was damaged after the run wrote it"
        ) from None
    if list(table.columns) != COLUMNS:
        raise RetrainError(
            f"{path}: the run's dataset manifest has columns {list(table.columns)}, expected "
            f"{COLUMNS}; it was changed after the run wrote it"
        )
    return table


def trained_images(run_dir: str | Path) -> int | None:
    """How many usable images the run trained and tested on, by its manifest (None without a readable one)."""
    try:
        table = read_manifest(run_dir)
    except RetrainError:
        return None
    return None if table is None else int((table["status"] == "ok").sum())


def freeze_dataset(run_dir: str | Path) -> Path | None:
    """Record, as the run joins the queue, the photos it will train on: `queued_dataset.csv` (see `as_queued`).

    Only a dataset inside the run's workspace (its uploads: the ones this program changes) is read
    here; a server folder or a sample is never written to, and reading it whole at every Start
    would cost a second per thousand photos for nothing. A run folder without config.json is left alone.
    """
    from pipeline.config import RunConfig
    from pipeline.dataset import load_dataset
    from pipeline.settings import cache_root

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        return None
    dataset = RunConfig.load(run / "config.json").dataset
    sources = [value for value in (dataset.image_dir, dataset.zip, dataset.label_csv) if value]
    workspace = run.resolve().parent.parent  # <workspace>/runs/<run>
    if not any(Path(value).resolve().is_relative_to(workspace) for value in sources) or workspace == run.parent:
        return None
    return write_manifest(load_dataset(dataset, check_images=False, workdir=cache_root() / "datasets"), run, QUEUED)


def as_queued(dataset: Dataset, run_dir: str | Path) -> tuple[Dataset, int]:
    """`dataset` cut back to the photos listed when the run was queued, and how many of those are gone.

    A listed photo is found at its file name with the same content, else anywhere in the dataset
    with the same content (a class renamed or merged since); it keeps the label, split and status
    it had when queued. Photos not listed are left out. Without `queued_dataset.csv` (a CLI run)
    the dataset is returned as it is.
    """
    queued = read_manifest(run_dir, QUEUED)
    if queued is None:
        return dataset, 0
    table = dataset.table
    by_file = {(row.file, row.sha256): row.path for row in table.itertuples()}
    by_content = {row.sha256: row.path for row in table.itertuples() if row.status == "ok"}
    rows, used, gone = [], set(), 0
    for row in queued.itertuples():
        path = by_file.get((row.file, row.sha256)) or by_content.get(row.sha256)
        if path is None or path in used:  # deleted or changed since (a photo is never trained on twice)
            gone += 1 if row.status == "ok" else 0
            continue
        used.add(path)
        rows.append(
            {
                "path": path,
                "file": row.file,
                "label": row.label,
                "split": row.split,
                "sha256": row.sha256,
                "status": row.status,
                "problem": "",
            }
        )
    kept = pd.DataFrame(rows, columns=list(table.columns), dtype=object)
    problems = table[["file", "problem"]].drop_duplicates("file").set_index("file")["problem"]
    kept["problem"] = kept["file"].map(problems).fillna("")
    kept = kept.astype({column: str for column in kept.columns if column != "path"})
    usable = kept[kept["status"] == "ok"]
    frozen = dataclasses.replace(
        dataset,
        table=kept.reset_index(drop=True),
        classes=sorted(usable["label"].unique()),
        problems=[item for item in dataset.problems if item["file"] in set(kept["file"])],
    )
    return frozen, gone
