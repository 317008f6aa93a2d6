"""Likely-mislabelled images: what a model that never saw an image thinks its label is.

Each image of the training and validation splits gets an out-of-fold prediction: the images are
cut into k stratified folds (5 by default, seeded), a classifier is fitted on the other folds'
cached bottlenecks and predicts the held-out fold. An image is a suspect when another class wins
that prediction; suspects are ranked by how little probability their given label got
(self-confidence: lowest p(given) first, ties by the higher p(suggested)). Test images are left
out on purpose: relabelling them by what a model says would make the test score measure
agreement with the model instead of accuracy.

The trade-off that shaped it: the classifier is scikit-learn's LogisticRegression on the
bottlenecks (scaled to unit mean length, C=3), not the engine's Keras head. Measured on flowers
(3,311 train+validation images, EfficientNet-Lite0 bottlenecks, 2% of all labels flipped, five
injection seeds, "found" = flipped images among the top 2x-as-many suspects, 2 busy cores):

    classifier (5 folds)                    seconds   found: p(given) / margin   out-of-fold accuracy
    LogisticRegression C=3, 1 BLAS thread    2.7       94.0% / 91.5%              91.8%
    engine head (train_head), 10 epochs      5.5       91.0% / 88.2%              91.2%
    engine head, 20 epochs                   7.9       91.2% / 87.4%              91.5%
    LinearDiscriminantAnalysis, shrinkage    3.4       88.6% (3 seeds)            91.6%

The logistic regression is convex (no epochs, dropout or seed to tune), finds more of the flipped
labels and takes half the time. Ranking by the lowest p(given) beat the margin
p(suggested) - p(given) for every classifier, so that is the order; requiring another class to
win keeps photos whose label still leads off the list. BLAS is held to one thread while fitting:
on two shared cores, OpenBLAS threads contending with TensorFlow or another job made the same fit
4-10x slower (once 40x).

Exact copies of one photo always land in the same fold (grouped by content hash), so a copy in
the training folds cannot vouch for the other copy's label.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.bottlenecks import ExtractItem, cache_bottlenecks
from pipeline.dataset import Dataset
from pipeline.errors import DatasetError, RetrainError
from pipeline.progress import ProgressCallback, ProgressMeter

if TYPE_CHECKING:
    from pipeline.backbones import Backbone

FOLDS = 5  # out-of-fold models per check; each sees (k-1)/k of the images
CHECKED_SPLITS = ("train", "validation")  # test labels are not second-guessed by a model (see above)
REGULARIZATION = 3.0  # LogisticRegression C on unit-mean-length vectors; 1-3 measured best
MAX_ITERATIONS = 500  # lbfgs converges in about 50 on flowers; a cap, not a schedule


@dataclass
class Suspect:
    """One image whose out-of-fold prediction names another class than its label."""

    file: str  # relative to the dataset root, as in the dataset table
    path: str  # the image on disk, for thumbnails
    label: str  # the label it has now
    suggested: str  # the class the out-of-fold model prefers
    label_probability: float  # out-of-fold probability of `label`
    suggested_probability: float  # out-of-fold probability of `suggested`

    def to_dict(self) -> dict:
        """The fields the CLI prints (no path: it is the dataset root plus `file`)."""
        return {
            "file": self.file,
            "label": self.label,
            "suggested": self.suggested,
            "label_probability": round(self.label_probability, 4),
            "suggested_probability": round(self.suggested_probability, 4),
        }


@dataclass
class DatasetBottlenecks:
    """A dataset's usable images with their bottlenecks as arrays, row i of `rows` being x[i]."""

    rows: pd.DataFrame  # dataset table rows (path, file, label, split, sha256, ...), in table order
    x: np.ndarray  # (n, feature_dim) float32 bottlenecks
    y: np.ndarray  # (n,) index of each row's label in `classes`
    classes: list[str]  # the dataset's classes, sorted (as training numbers them)

    def of_splits(self, splits: Sequence[str]) -> DatasetBottlenecks:
        """Only the rows of `splits`, in the same order."""
        keep = self.rows["split"].isin(list(splits)).to_numpy()
        return DatasetBottlenecks(self.rows[keep].reset_index(drop=True), self.x[keep], self.y[keep], self.classes)


def dataset_bottlenecks(
    dataset: Dataset,
    backbone: Backbone,
    bottleneck_dir: str | Path,
    splits: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> DatasetBottlenecks:
    """The bottlenecks of a dataset's usable images (of `splits`, default all) as arrays; cached ones are reused.

    Images that cannot be decoded are left out and become problems of `dataset` (status
    "problem", listed in `dataset.problems`), as they do in a run.
    """
    rows = dataset.usable()
    if splits is not None:
        rows = rows[rows["split"].isin(list(splits))]
    items = [ExtractItem(row.path, row.sha256) for row in rows.itertuples()]
    result = cache_bottlenecks(items, backbone, bottleneck_dir, progress=progress)
    dataset.mark_problems({item.path: message for item, message in result.problems.items()})
    has_vector = np.array([item in result.vectors for item in items], dtype=bool)
    kept = rows[has_vector].reset_index(drop=True)
    vectors = [result.vectors[item] for item, ok in zip(items, has_vector, strict=True) if ok]
    x = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, backbone.feature_dim), np.float32)
    index = {label: i for i, label in enumerate(dataset.classes)}
    y = np.array([index[label] for label in kept["label"]], dtype=int)
    return DatasetBottlenecks(kept, x, y, list(dataset.classes))


def find_suspects(
    dataset: Dataset,
    backbone: Backbone,
    bottleneck_dir: str | Path,
    folds: int = FOLDS,
    top: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> list[Suspect]:
    """Training and validation images whose out-of-fold prediction is another class, most suspicious first.

    `top` keeps only the first `top` of them. Bottlenecks come from the cache (computed when missing).
    """
    if top is not None and top < 0:
        raise RetrainError(f"--top is {top}; give a number of suspects, 0 or more")
    _check_folds(folds)
    features = dataset_bottlenecks(dataset, backbone, bottleneck_dir, CHECKED_SPLITS, progress)
    return suspects_from_bottlenecks(features, dataset.source or str(dataset.root), folds, top, seed, progress)


def suspects_from_bottlenecks(
    features: DatasetBottlenecks,
    where: str,
    folds: int = FOLDS,
    top: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> list[Suspect]:
    """`find_suspects` on bottlenecks fetched already (of the checked splits only); `where` names the dataset."""
    _check_folds(folds)
    present = sorted({features.classes[i] for i in features.y})
    if len(present) < 2:
        found = f"only {present[0]!r}" if present else "none"
        raise DatasetError(
            f"checking labels needs training or validation images of at least two classes; found {found} in {where}"
        )
    probabilities = out_of_fold_probabilities(
        features.x,
        features.y,
        len(features.classes),
        folds,
        seed,
        groups=features.rows["sha256"].to_numpy(),
        progress=progress,
    )
    order = suspicion_order(probabilities, features.y)
    if top is not None:
        order = order[:top]
    return [_suspect(features, probabilities, i) for i in order]


def out_of_fold_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    folds: int = FOLDS,
    seed: int = 0,
    groups: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """(n, num_classes) class probabilities of each row from a model fitted on the other folds only.

    Folds are stratified by `y` and seeded; rows sharing a `groups` value (e.g. a content hash)
    stay in one fold. A class absent from a fold's training rows gets probability 0 there.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (n, features) with one label per row; got x {x.shape} and y {y.shape}")
    _check_folds(folds)
    scale = np.sqrt(np.mean(np.sum(x * x, axis=1))) if len(x) else 1.0
    x = x / (scale if scale > 0 else 1.0)  # one C suits every backbone's feature scale
    probabilities = np.zeros((len(y), num_classes))
    splits = _fold_indices(y, folds, seed, groups)
    meter = ProgressMeter("checking labels", len(splits), progress, min_interval=0.0)
    meter.report()
    for train, held_out in splits:
        probabilities[held_out] = _fit_and_predict(x[train], y[train], x[held_out], num_classes)
        meter.advance()
    return probabilities


def suspicion_order(probabilities: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the rows another class wins, lowest probability of the given label first."""
    rows = np.arange(len(y))
    given = probabilities[rows, y]
    others = probabilities.copy()
    others[rows, y] = -1.0
    suggested = others.max(axis=1)
    disputed = rows[suggested > given]
    # lexsort sorts by the last key first: p(given) up, then p(suggested) down, then row number.
    return disputed[np.lexsort((disputed, -suggested[disputed], given[disputed]))]


def _check_folds(folds: int) -> None:
    if folds < 2:
        raise RetrainError(
            f"--folds is {folds}; at least 2 are needed so each image is judged by a model that did not see it"
        )


def _fold_indices(
    y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) per fold; fewer folds when there are too few images or groups for `folds`."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n_groups = len(np.unique(groups)) if groups is not None else len(y)
    largest_class = int(np.bincount(y).max()) if len(y) else 0
    usable_folds = min(folds, n_groups, largest_class)
    if usable_folds < 2:
        raise DatasetError(
            f"too few images to check labels: {len(y)} image(s), at most {largest_class} in a "
            "class; each class needs at least 2"
        )
    with warnings.catch_warnings():
        # A class smaller than the number of folds is expected in small datasets: it is just absent from some.
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        if groups is None:
            splitter = StratifiedKFold(usable_folds, shuffle=True, random_state=seed)
            return list(splitter.split(np.zeros(len(y)), y))
        splitter = StratifiedGroupKFold(usable_folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))


def _fit_and_predict(x_train: np.ndarray, y_train: np.ndarray, x_held_out: np.ndarray, num_classes: int) -> np.ndarray:
    """Probabilities over all classes for the held-out rows, from a model of the training rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    probabilities = np.zeros((len(x_held_out), num_classes))
    seen = np.unique(y_train)
    if len(seen) == 1:  # nothing to tell apart: every held-out image looks like the only class seen
        probabilities[:, seen[0]] = 1.0
        return probabilities
    model = LogisticRegression(C=REGULARIZATION, max_iter=MAX_ITERATIONS)
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped fit still ranks images well
        model.fit(x_train, y_train)
        probabilities[:, model.classes_] = model.predict_proba(x_held_out)
    return probabilities


def _suspect(features: DatasetBottlenecks, probabilities: np.ndarray, i: int) -> Suspect:
    row = features.rows.iloc[i]
    given = int(features.y[i])
    others = probabilities[i].copy()
    others[given] = -1.0
    suggested = int(others.argmax())
    return Suspect(
        file=row["file"],
        path=row["path"],
        label=row["label"],
        suggested=features.classes[suggested],
        label_probability=float(probabilities[i, given]),
        suggested_probability=float(probabilities[i, suggested]),
    )
