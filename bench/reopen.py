"""Reopening a dataset: a full check (every image read, hashed and decoded) against one trusted from the store.

    .venv/bin/python -m bench.reopen /work/shared/datasets/flowers

Prints both times, their ratio and the load average (the machine is shared; the ratio is what to compare).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset


def main(folder: str) -> None:
    config = DatasetConfig(image_dir=folder)
    with tempfile.TemporaryDirectory() as store:
        started = time.monotonic()
        first = load_dataset(config, check_images=True, check_store=store)
        full = time.monotonic() - started
        started = time.monotonic()
        again = load_dataset(config, check_images=True, check_store=store)
        reopen = time.monotonic() - started
    print(
        f"{len(first.table)} files: full check {full:.2f}s ({first.files_checked} opened), reopen {reopen:.2f}s "
        f"({again.files_checked} opened), {full / reopen:.0f}x; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
