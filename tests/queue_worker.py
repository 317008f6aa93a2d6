"""A stand-in for a queued run's process (tests/test_faults_hosted.py): it logs when it starts and
ends, sleeps as long as its run folder's `sleep` file says, and then lets the real queue code finish
its ticket and start the next ones — so the real dispatcher is tested without TensorFlow."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.run_queue import QUEUE_ENV, RunQueue, run_ticket  # noqa: E402


def work(run_dir: str) -> int:
    folder = Path(run_dir)
    log = folder.parent / "intervals.log"
    with open(log, "a") as handle:
        handle.write(f"start {folder.name} {time.time()}\n")
    time.sleep(float((folder / "sleep").read_text()) if (folder / "sleep").exists() else 0.5)
    with open(log, "a") as handle:
        handle.write(f"end {folder.name} {time.time()}\n")
    return 0


if __name__ == "__main__":
    queue = RunQueue(os.environ[QUEUE_ENV], command=[sys.executable, __file__])
    sys.exit(run_ticket(queue, int(sys.argv[1]), work=work))
