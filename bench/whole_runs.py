"""Whole runs as a user meets them: the first model, reruns on a warm cache, a prediction, the cache's memory.

Runs go through `retrain()` in this process (backbone load, training, evaluation and all three
exports included; Python and TensorFlow start-up not). The memory figure is the one exception: it
runs `python -m pipeline cache` as a child, since peak RSS is only meaningful for a process of its own.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.timing import Stopwatch
from pipeline.config import AugmentConfig, DatasetConfig, OutputConfig, RunConfig, TrainConfig
from pipeline.evaluate import Report
from pipeline.images import read_bytes
from pipeline.retrain import retrain

REPO = Path(__file__).resolve().parents[1]


@dataclass
class RunResult:
    seconds: float
    report: Report
    run_dir: Path

    def stage_seconds(self, stage: str) -> float:
        return self.report.extra["timings"][f"{stage}_seconds"]

    def __str__(self) -> str:
        return (
            f"{self.seconds:.1f} s (training {self.stage_seconds('training'):.1f} s, "
            f"export {self.stage_seconds('export'):.1f} s), test accuracy {self.report.test_accuracy:.3f}"
        )


def run_config(
    image_dir: Path,
    bottleneck_dir: Path,
    architecture: str,
    bottleneck_layer: str | None,
    train: dict | None = None,
    augment: dict | None = None,
) -> RunConfig:
    """Default settings but for the dataset, backbone and cache folder (and any overrides given)."""
    return RunConfig(
        dataset=DatasetConfig(image_dir=str(image_dir)),
        augment=AugmentConfig(**(augment or {})),
        train=TrainConfig(architecture=architecture, bottleneck_layer=bottleneck_layer, **(train or {})),
        output=OutputConfig(bottleneck_dir=str(bottleneck_dir)),
    )


def timed_run(config: RunConfig, run_dir: Path) -> RunResult:
    """One whole run, wall clock from the call to the exported, checked model."""
    with Stopwatch() as watch:
        report = retrain(config, run_dir)
    return RunResult(watch.seconds, report, run_dir)


@dataclass
class ProcessRun:
    """A run in a fresh `python -m pipeline run` process, as the app starts one; seconds from its spawn."""

    report_seconds: float  # until report.json (the trained head's scores) is written
    total_seconds: float  # until the process ends, every export checked
    report: Report

    def stage_seconds(self, stage: str) -> float:
        return self.report.extra["timings"][f"{stage}_seconds"]

    def __str__(self) -> str:
        return (
            f"report after {self.report_seconds:.1f} s, every export after {self.total_seconds:.1f} s, "
            f"test accuracy {self.report.test_accuracy:.3f}"
        )


def timed_process_run(
    config: RunConfig, run_dir: Path, poll_seconds: float = 0.02, timeout_seconds: float = 1800
) -> ProcessRun:
    """One whole run in a child process, the app's way (config.json, then `python -m pipeline run`), with the
    time until its report appears: Python's and every import's start-up counted, as a user waits for them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config.output.output_dir = str(run_dir)
    config.save(run_dir / "config.json")
    report_path, report_seconds = run_dir / "report.json", None
    command = [sys.executable, "-m", "pipeline", "run", "--run_dir", str(run_dir)]
    with open(run_dir.parent / f"{run_dir.name}.log", "wb") as log, Stopwatch() as watch:
        child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while child.poll() is None:
            if report_seconds is None and report_path.exists():
                report_seconds = watch.elapsed()
            if watch.elapsed() > timeout_seconds:  # a hung run must not hang the benchmark
                child.kill()
                child.wait()
                raise RuntimeError(f"`{' '.join(command)}` ran over {timeout_seconds} s; see {log.name}")
            time.sleep(poll_seconds)
    if child.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed ({child.returncode}); see {log.name}")
    return ProcessRun(report_seconds or watch.seconds, watch.seconds, Report.load(report_path))


def rerun_hyperparameters(rep: int) -> dict:
    """New hyperparameters for each warm rerun, as a user trying settings would give."""
    return {"learning_rate": (0.002, 0.0005, 0.001)[rep % 3], "dropout": (0.3, 0.4, 0.2)[rep % 3]}


def prediction_milliseconds(run_dir: Path, paths: list[str], k: int = 5) -> list[float]:
    """File → top-k through a loaded exported model, as the Predict page does (its bytes to `predict_bytes`)."""
    from pipeline.predict import Predictor

    predictor = Predictor(run_dir)
    for path in paths[:2]:  # the first calls trace the graph; a page that is open has done that already
        predictor.predict_bytes(read_bytes(path), k)
    times = []
    for path in paths:
        with Stopwatch() as watch:
            guesses = predictor.predict_bytes(read_bytes(path), k)
        times.append(watch.seconds * 1000)
        if len(guesses) != min(k, len(predictor.labels)):
            raise RuntimeError(f"{path}: {len(guesses)} guesses, expected the top {k}")
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


@dataclass
class ChildUsage:
    seconds: float
    peak_rss_mb: float


def cache_command_usage(image_dir: Path, workdir: Path, architecture: str, bottleneck_layer: str | None) -> ChildUsage:
    """Peak memory of a cold `python -m pipeline cache` over the dataset, measured on that child alone."""
    bottleneck_dir = tempfile.mkdtemp(prefix="cold-cache-command-", dir=workdir)
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "cache",
        "--image_dir",
        str(image_dir),
        "--bottleneck_dir",
        bottleneck_dir,
        "--architecture",
        architecture,
    ]
    if bottleneck_layer:
        command += ["--bottleneck_layer", bottleneck_layer]
    # Linux keeps a process's peak RSS across exec, so a child forked from this big process would report our
    # size: a small launcher starts the command and reports the peak of that grandchild alone.
    launcher = [sys.executable, "-c", MEASURE_CHILD]
    with open(workdir / "cache_command.log", "wb") as log, Stopwatch() as watch:
        done = subprocess.run(
            launcher + command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}; see {workdir / 'cache_command.log'}")
    return ChildUsage(watch.seconds, int(done.stdout.split()[-1]) / 1024)  # Linux reports KiB


# Runs argv[1:] with its output to our stderr, then prints its peak RSS (KiB); exits with its exit code.
MEASURE_CHILD = (
    "import os, subprocess, sys; child = subprocess.Popen(sys.argv[1:], stdout=sys.stderr); "
    "_, status, usage = os.wait4(child.pid, 0); print(usage.ru_maxrss); "
    "sys.exit(os.waitstatus_to_exitcode(status))"
)


def add_onnx_export(run_dir: Path) -> bool:
    """Convert a finished run's model to ONNX beside it when the optional extra is installed (else False)."""
    import importlib.util

    if (run_dir / "model.onnx").exists() or not all(
        importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime")
    ):
        return (run_dir / "model.onnx").exists()
    from pipeline.export import fixed_size_model, write_export
    from pipeline.records import load_model_and_labels

    model, labels = load_model_and_labels(run_dir / "model.keras", run_dir / "labels.txt")
    write_export("onnx", fixed_size_model(model), labels, run_dir)
    return True
