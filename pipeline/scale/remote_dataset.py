"""The dataset table for images behind a URI (s3://bucket/flowers/...): class folders, retrain.py's splits.

The local engine's `pipeline.dataset` opens every file to check it; over an object store that would read
the whole set twice, so here files are chosen by extension and a bad one is found (and reported per file)
by the Ray task that decodes it anyway. Content hashes are computed there too.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd

from pipeline.dataset import IMAGE_EXTENSIONS
from pipeline.errors import DatasetError
from pipeline.scale.storage import filesystem_for, list_files
from pipeline.splits import split_for_name, validate_percentages


def load_remote_dataset(
    uri: str, validation_percentage: float, testing_percentage: float
) -> tuple[pd.DataFrame, str, list[str], list[dict]]:
    """(table of path, file, label, split, sha256=""; the URI; classes; problems) for class folders at `uri`."""
    validate_percentages(validation_percentage, testing_percentage)
    _, base = filesystem_for(uri)
    rows, problems = [], []
    for path in list_files(uri):
        relative = PurePosixPath(path).relative_to(PurePosixPath(base))
        if len(relative.parts) < 2:
            problems.append({"file": str(relative), "problem": "not in a class folder; ignored"})
            continue
        if relative.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.append({"file": str(relative), "problem": f"not an image file type ({relative.suffix or 'none'})"})
            continue
        rows.append(
            {
                "path": path,
                "file": str(relative),
                "label": relative.parts[0],
                "split": split_for_name(relative.name, validation_percentage, testing_percentage),
                "sha256": "",
            }
        )
    if not rows:
        raise DatasetError(f"{uri}: no images in class folders (expected {uri}/<class>/<image>.jpg)")
    table = pd.DataFrame(rows)
    return table, uri, sorted(table["label"].unique()), problems
