"""Peak memory of the app's upload path given a hostile zip: four tiny PNGs each just under the pixel cap.

Each PNG is a few kilobytes that decode to the largest image allowed. The app unpacks the zip and
checks every image in threads; without a shared decode budget the four decode at once. Measured in a
fresh child process set up as app.py sets itself up (its own peak RSS, from getrusage), with the
budget as shipped and with a budget large enough for all four at once, side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGES = 4

CHILD = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from pipeline.archive import safe_extract
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.studio.hosting import use_hosted_defaults
use_hosted_defaults()  # as app.py does at start
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
root = safe_extract(Path({zip!r}), Path({target!r}))
dataset = load_dataset(DatasetConfig(image_dir=str(root)), check_images=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"before_mb": before / 1024, "peak_mb": peak / 1024, "rows": len(dataset.table)}}))
"""


@dataclass
class Usage:
    peak_rss_mb: float  # the process's peak resident memory
    decode_mb: float  # of which the check added (peak minus after imports)


def hostile_zip(folder: Path, max_pixels: int) -> Path:
    """A zip of four RGBA PNGs (two classes), each one row short of `max_pixels`: kilobytes on disk."""
    width = 10_000
    height = max_pixels // width - 1
    path = folder / "hostile.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(IMAGES):
            png = folder / f"bomb{index}.png"
            Image.new("RGBA", (width, height), (40 * index, 90, 200, 128)).save(png, compress_level=9)
            archive.write(png, f"{'ab'[index % 2]}/bomb{index}.png")
            png.unlink()
    return path


def check_usage(zip_path: Path, target: Path, max_pixels: int, budget_pixels: int | None) -> Usage:
    """Peak RSS of a child process that unpacks and checks the zip as the app's upload does."""
    env = {**os.environ, "RETRAIN_STUDIO_MAX_PIXELS": str(max_pixels)}
    env.pop("RETRAIN_STUDIO_DECODE_BUDGET_PIXELS", None)
    if budget_pixels is not None:
        env["RETRAIN_STUDIO_DECODE_BUDGET_PIXELS"] = str(budget_pixels)
    code = CHILD.format(repo=str(REPO), zip=str(zip_path), target=str(target))
    # Linux keeps a process's peak RSS across exec, so a child forked from a big benchmark process would report
    # the benchmark's size: a small launcher starts the child, whose own peak is then its own.
    launcher = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]
    done = subprocess.run([*launcher, sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == IMAGES, result
    return Usage(result["peak_mb"], result["peak_mb"] - result["before_mb"])


def measure(workdir: Path, max_pixels: int) -> tuple[Usage, Usage]:
    """(with the shipped budget, with room for all four at once), for four PNGs just under `max_pixels`."""
    folder = workdir / "hostile"
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = hostile_zip(folder, max_pixels)
    budgeted = check_usage(zip_path, folder / "unpacked-1", max_pixels, None)
    unbounded = check_usage(zip_path, folder / "unpacked-2", max_pixels, IMAGES * max_pixels)
    return budgeted, unbounded


if __name__ == "__main__":  # this stage alone: python bench/hostile_zip.py [PIXELS]
    import tempfile

    sys.path.insert(0, str(REPO))
    from pipeline.images import HOSTED_MAX_PIXELS

    cap = int(sys.argv[1]) if len(sys.argv) > 1 else HOSTED_MAX_PIXELS
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        budgeted, unbounded = measure(Path(scratch), cap)
    print(
        json.dumps(
            {
                "pixels_per_image": cap,
                "hostile_zip_peak_rss_mb": round(budgeted.peak_rss_mb, 1),
                "hostile_zip_unbudgeted_peak_rss_mb": round(unbounded.peak_rss_mb, 1),
                "hostile_zip_unbudgeted_vs_budgeted": round(unbounded.decode_mb / max(budgeted.decode_mb, 1), 2),
                "load_average_1min_at_start": load,
            }
        )
    )
