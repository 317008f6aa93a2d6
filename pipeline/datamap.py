"""A map of the dataset: every usable image as a point, placed by its bottleneck.

Images the backbone sees as alike land close together, so a class that splits into islands, two
classes that overlap, or a photo sitting in another class's cloud show at a glance. The result is
a plain table (x, y, file, path, label, split[, suspect]) for a plotly scatter coloured by label.

The trade-off that shaped it: PCA is the default because it is fast (0.2 s for flowers' 3,670
bottlenecks on a warm cache), has no knobs and keeps distances honest along its two axes; t-SNE
(method="tsne") separates clusters far more clearly but takes about 15 s for flowers on two
cores, and its distances between clusters mean little. Both are seeded, so the same images give
the same map.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.dataset import Dataset
from pipeline.errors import RetrainError
from pipeline.progress import ProgressCallback
from pipeline.suspects import DatasetBottlenecks, Suspect, dataset_bottlenecks

if TYPE_CHECKING:
    from pipeline.backbones import Backbone

METHODS = ("pca", "tsne")
TSNE_INPUT_DIMENSIONS = 50  # PCA to this many dimensions before t-SNE: the usual speed-up, same picture
TSNE_PERPLEXITY = 30.0  # scikit-learn's default; lowered for datasets too small for it


def dataset_map(
    dataset: Dataset,
    backbone: Backbone,
    bottleneck_dir: str | Path,
    method: str = "pca",
    suspects: Sequence[Suspect] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """One row per usable image with a bottleneck: x, y, file, path, label, split (+ suspect when given).

    `method` is "pca" (default, fast) or "tsne" (clearer clusters, slower). Images that cannot be
    decoded are left out. Bottlenecks come from the cache (computed when missing).
    """
    if method not in METHODS:
        raise RetrainError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    features = dataset_bottlenecks(dataset, backbone, bottleneck_dir, progress=progress)
    return map_from_bottlenecks(features, method, suspects, seed)


def map_from_bottlenecks(
    features: DatasetBottlenecks, method: str = "pca", suspects: Sequence[Suspect] | None = None, seed: int = 0
) -> pd.DataFrame:
    """`dataset_map` on bottlenecks fetched already."""
    if method not in METHODS:
        raise RetrainError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    points = project(features.x, method, seed)
    table = pd.DataFrame({"x": points[:, 0], "y": points[:, 1]})
    for column in ("file", "path", "label", "split"):
        table[column] = features.rows[column].to_numpy()
    if suspects is not None:
        suspicious = {suspect.file for suspect in suspects}
        table["suspect"] = table["file"].isin(suspicious)
    return table


def project(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of the rows of `x`, by PCA or t-SNE; fewer than 3 rows are laid on a line."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3 or x.shape[1] < 2:  # nothing to decompose: keep the map drawable
        return np.column_stack([np.arange(len(x), dtype=np.float64), np.zeros(len(x))])
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    # One thread: on two shared cores, spinning BLAS/OpenMP threads made t-SNE 1.5-2x slower (same result).
    with threadpool_limits(1):
        if method == "pca":
            return PCA(n_components=2, random_state=seed).fit_transform(x)
        reduced = PCA(n_components=min(TSNE_INPUT_DIMENSIONS, *x.shape), random_state=seed).fit_transform(x)
        perplexity = min(TSNE_PERPLEXITY, (len(x) - 1) / 3)  # t-SNE needs perplexity < n
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
