"""When a prediction deserves doubt: the model is unsure, or the photo looks unlike anything it was trained on.

A softmax always sums to one, so "bees (90% sure)" can be said of a daisy: the model only ever
chooses among the classes it knows. Two checks catch most of this:
- unsure: the top class got under UNSURE_TOP1, or leads the second by under UNSURE_MARGIN — the model
  is close to guessing between them;
- unlike the training photos: the photo's bottleneck (the backbone's features, before the head) is
  farther from every class's centre than PERCENTILE% of the training photos are from theirs. The
  run measures that distance on its own training images and stores the class centres and the
  threshold in `familiarity.json`, so the check needs no training data at prediction time.

Distances are cosine distances between unit-length vectors (scale-free across backbones). A
fine-tuned run changes its backbone after the bottlenecks were cached, so it stores no file and
its predictions carry only the "unsure" check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.files import write_json_atomic

FILE = "familiarity.json"
FORMAT = "retrain-studio/familiarity"
PERCENTILE = 99.0  # of the training photos' own distances: 1 in 100 training photos is past it
UNSURE_TOP1 = 0.6  # below this the model gives the other classes 40% or more together
UNSURE_MARGIN = 0.2  # a lead of under 20 points over the runner-up: a coin toss between two classes
log = logging.getLogger(__name__)


@dataclass
class Familiarity:
    """Class centres of a run's training bottlenecks and how far training photos lie from them."""

    labels: list[str]
    centroids: np.ndarray  # (classes, features), unit length
    threshold: float  # PERCENTILE of the training photos' distance to their nearest centre
    source: str = ""  # the file it was read from, for a log line

    def distance(self, feature: np.ndarray) -> float | None:
        """Cosine distance of one feature vector to its nearest class centre; None (logged) when the vector's
        length is not the centres' — a familiarity.json edited or of another backbone."""
        if feature.ndim != 1 or feature.shape[0] != self.centroids.shape[1]:
            log.warning(
                "%s holds class centres of %d features, the model gives %s; predictions are made without "
                "the unlike-training check",
                self.source or FILE,
                self.centroids.shape[1],
                feature.shape,
            )
            return None
        return float(self.distances(feature[None])[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Cosine distance of each feature row to its nearest class centre."""
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return 1.0 - (unit @ self.centroids.T).max(axis=1)


def fit_familiarity(x: np.ndarray, y: np.ndarray, labels: list[str]) -> Familiarity:
    """Centres of the training bottlenecks per class, and the PERCENTILE of their nearest-centre distances."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centroids = np.zeros((len(labels), x.shape[1]))
    for index in range(len(labels)):
        members = unit[y == index]
        if len(members):
            mean = members.mean(axis=0)
            centroids[index] = mean / max(np.linalg.norm(mean), 1e-12)
    familiarity = Familiarity(list(labels), centroids, 0.0)
    familiarity.threshold = float(np.percentile(familiarity.distances(x), PERCENTILE)) if len(x) else 0.0
    return familiarity


def save_familiarity(familiarity: Familiarity, run_dir: str | Path) -> None:
    write_json_atomic(
        Path(run_dir) / FILE,
        {
            "format": FORMAT,
            "labels": familiarity.labels,
            "percentile": PERCENTILE,
            "threshold": familiarity.threshold,
            "centroids": np.round(familiarity.centroids, 6).tolist(),
        },
    )


def load_familiarity(folder: str | Path, labels: list[str]) -> Familiarity | None:
    """The run's familiarity.json, or None when it has none (older and fine-tuned runs) or it is damaged
    (logged: predictions then carry only the "unsure" check, never an error)."""
    from pipeline.records import DamagedFile, read_json_record

    path = Path(folder) / FILE
    try:
        data = read_json_record(path, "predictions are made without the unlike-training check", default=None)
        if data is None:
            return None
        centroids = np.asarray(data["centroids"], dtype=np.float64)
        threshold = float(data["threshold"])
        if (
            data.get("format") != FORMAT
            or data["labels"] != labels
            or centroids.shape[0] != len(labels)
            or centroids.ndim != 2
            or not np.isfinite(centroids).all()
            or not np.isfinite(threshold)
        ):
            raise ValueError("does not match the model's labels or is malformed")
    except DamagedFile as damaged:
        log.warning("%s", damaged)
        return None
    except (KeyError, TypeError, ValueError) as error:
        log.warning("%s is damaged (%s); predictions are made without the unlike-training check", path, error)
        return None
    return Familiarity(labels, centroids, threshold, str(path))


def caution(
    probabilities: np.ndarray, labels: list[str], distance: float | None, familiarity: Familiarity | None
) -> dict:
    """{"unsure": bool, "unlike_training": bool | None, "notes": [...]} for one prediction.

    `unlike_training` is None when the run has no familiarity data (the check could not be made).
    """
    order = np.argsort(-probabilities)
    top = float(probabilities[order[0]])
    second = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    notes = []
    unsure = top < UNSURE_TOP1 or top - second < UNSURE_MARGIN
    if unsure:
        runner_up = f"; {labels[order[1]]} {second:.0%}" if len(order) > 1 else ""
        notes.append(f"the model is unsure ({labels[order[0]]} {top:.0%}{runner_up})")
    unlike = None
    if familiarity is not None and distance is not None:
        unlike = bool(distance > familiarity.threshold)
        if unlike:
            notes.append(
                "this photo looks unlike the training photos; the answer may be meaningless (it can "
                f"only be one of: {', '.join(labels[:6])}{' ...' if len(labels) > 6 else ''})"
            )
    return {
        "unsure": bool(unsure),
        "unlike_training": unlike,
        "notes": notes,
        "distance": None if distance is None else round(float(distance), 4),
    }
