"""Per-backbone figures for the table and the app's backbone picker: speed on each runtime, accuracy, size.

For each offline EfficientNet-Lite and the Lite0 + Lite1 pair: cold extraction from JPEG files with LiteRT and
with TensorFlow (interleaved, same images, with the default settings' views), a whole default run on the dataset (test
accuracy, exported model.keras size), and the predict latency of that run's model. The results go to
bench/backbones.json, which the Configure page reads (pipeline/backbones/measured.py); only figures
measured here ever appear there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import whole_runs
from bench.timing import Stopwatch, Throughput, interleaved, median
from pipeline.backbones.runtime import RUNTIME_ENV, TENSORFLOW
from pipeline.bottlenecks import ExtractItem, cache_bottlenecks

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite0+efficientnet_lite1")


@contextlib.contextmanager
def runtime(name: str | None) -> Iterator[None]:
    """Force a runtime (None: the default choice) for what runs inside; the variable is restored after."""
    before = os.environ.get(RUNTIME_ENV)
    if name is None:
        os.environ.pop(RUNTIME_ENV, None)
    else:
        os.environ[RUNTIME_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RUNTIME_ENV, None)
        else:
            os.environ[RUNTIME_ENV] = before


def cold_extraction(items: Sequence[ExtractItem], architecture: str, on: str | None, workdir: Path) -> Throughput:
    """`cache_bottlenecks` of `items` into a fresh folder on one runtime (backbone loaded and warmed first)."""
    from pipeline.backbones import load_backbone
    from pipeline.backbones.runtime import backbone_forward
    from pipeline.config import TrainConfig

    with runtime(on):
        backbone = load_backbone(architecture, None, TrainConfig().mirror_view)  # as the default settings run it
        backbone_forward(backbone)  # loading, converting and tracing are not throughput
        cache = Path(tempfile.mkdtemp(prefix="cold-", dir=workdir))
        try:
            with Stopwatch() as watch:
                result = cache_bottlenecks(items, backbone, cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    if result.computed != len(items):
        raise RuntimeError(f"{architecture}: computed {result.computed} of {len(items)} ({result.problems})")
    return Throughput(len(items), watch.seconds, watch.cpu_seconds)


def extraction_rates(items: Sequence[ExtractItem], architecture: str, reps: int, workdir: Path) -> dict[str, float]:
    """Median images per second of cold extraction with LiteRT and with TensorFlow, interleaved."""
    runs = interleaved(
        reps,
        {
            "litert": lambda _: cold_extraction(items, architecture, None, workdir),
            "tensorflow": lambda _: cold_extraction(items, architecture, TENSORFLOW, workdir),
        },
    )
    return {name: median([run.per_second for run in values]) for name, values in runs.items()}


def default_run(
    image_dir: Path,
    architecture: str,
    workdir: Path,
    prediction_paths: list[str],
    train: dict | None = None,
    bottleneck_dir: Path | None = None,
) -> dict[str, float]:
    """A whole default run (in a cold cache of its own unless given one): accuracy, model size, predict p50."""
    bottleneck_dir = bottleneck_dir or workdir / f"bottlenecks-{architecture}"
    config = whole_runs.run_config(image_dir, bottleneck_dir, architecture, None, train)
    result = whole_runs.timed_run(config, workdir / "runs" / f"default-{architecture}")
    times = whole_runs.prediction_milliseconds(result.run_dir, prediction_paths)
    return {
        "test_accuracy": result.report.test_accuracy,
        "seconds": result.seconds,
        "model_mb": (result.run_dir / "model.keras").stat().st_size / 1e6,
        "predict_p50_ms": whole_runs.percentile(times, 50),
    }
