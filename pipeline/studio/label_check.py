"""Find likely mistakes: the suspects and the dataset map, from one fetch of the dataset's bottlenecks.

Bottlenecks go to the cache runs use (so a later run reuses them); TensorFlow is imported when a check runs, not when
the app starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.config import TrainConfig
from pipeline.dataset import Dataset
from pipeline.progress import Progress, ProgressCallback
from pipeline.settings import default_bottleneck_dir

if TYPE_CHECKING:
    from pipeline.suspects import Suspect


@dataclass
class LabelCheck:
    """The result of looking for likely mistakes: the suspects, most doubtful first, and the dataset map."""

    suspects: list[Suspect]
    points: pd.DataFrame  # pipeline.datamap.dataset_map's table: x, y, file, path, label, split, suspect


def check_labels(
    dataset: Dataset,
    train: TrainConfig,
    bottleneck_dir: str | None = None,
    method: str = "pca",
    progress: ProgressCallback | None = None,
) -> LabelCheck:
    """Find likely-mislabelled images and map the dataset (`method` "pca" or "tsne"), with the next run's backbone.

    Bottlenecks go to the cache runs use (so a later run reuses them).
    """
    from pipeline.backbones import load_backbone
    from pipeline.datamap import map_from_bottlenecks
    from pipeline.suspects import CHECKED_SPLITS, dataset_bottlenecks, suspects_from_bottlenecks

    backbone = load_backbone(train.architecture, train.bottleneck_layer, train.mirror_view)
    folder = bottleneck_dir or default_bottleneck_dir()  # the app passes bottleneck_folder(...)
    # One pass over every usable image: the suspects use the checked splits of it, the map all of it.
    features = dataset_bottlenecks(dataset, backbone, folder, progress=progress)
    suspects = suspects_from_bottlenecks(
        features.of_splits(CHECKED_SPLITS), dataset.source or str(dataset.root), seed=train.seed, progress=progress
    )
    if progress:
        progress(Progress("mapping", 0, 1, 0.0, None))
    return LabelCheck(suspects, map_from_bottlenecks(features, method, suspects=suspects, seed=train.seed))
