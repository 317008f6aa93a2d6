"""Predict latency with the backbone on LiteRT and on TensorFlow, side by side on one exported model.

The Predict page answers one photo at a time through `Predictor.predict_bytes`. Where `ai-edge-litert` is
installed the Predictor runs the backbone on LiteRT and the run's trained head in NumPy (no TensorFlow at all);
with `RETRAIN_STUDIO_RUNTIME=tensorflow` the run's model.keras runs as one compiled TensorFlow graph. Both
Predictors are loaded once and then answer the same photos alternately, photo by photo, so a burst of
someone else's load falls on both sides alike.
"""

from __future__ import annotations

from pathlib import Path

from bench.backbones import runtime
from bench.timing import Stopwatch
from pipeline.backbones.runtime import LITERT, TENSORFLOW, runtime_for
from pipeline.images import read_bytes

WARM_UP = 2  # first calls trace graphs and set up interpreters; an open Predict page has done that already


def latencies_by_runtime(run_dir: Path, paths: list[str], k: int = 5) -> dict[str, list[float]]:
    """Milliseconds per photo (file bytes → top-k) with the backbone on LiteRT and on TensorFlow, interleaved."""
    from pipeline.predict import Predictor

    predictors = {}
    for name, forced in ((LITERT, None), (TENSORFLOW, TENSORFLOW)):
        with runtime(forced):
            predictors[name] = Predictor(run_dir)
    if runtime_for("classifier") != LITERT:
        raise RuntimeError("LiteRT is not available here (ai-edge-litert missing?): nothing to compare")
    photos = [read_bytes(path) for path in paths]
    for predictor in predictors.values():
        for data in photos[:WARM_UP]:
            predictor.predict_bytes(data, k)
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for data in photos:
        for name, predictor in predictors.items():
            with Stopwatch() as watch:
                predictor.predict_bytes(data, k)
            times[name].append(watch.seconds * 1000)
    return times
