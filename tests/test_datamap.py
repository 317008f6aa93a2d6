"""The dataset map: 2-D points from bottlenecks, as a table a plotly scatter can draw."""

import numpy as np
import pandas as pd
import pytest
from imagegen import make_class_folders

from pipeline.config import DatasetConfig
from pipeline.datamap import dataset_map, project
from pipeline.dataset import load_dataset
from pipeline.errors import RetrainError
from pipeline.suspects import Suspect

COLUMNS = ["x", "y", "file", "path", "label", "split"]


def test_project_gives_two_columns_deterministically():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (30, 12)), rng.normal(6, 1, (30, 12))])
    for method in ("pca", "tsne"):
        points = project(x, method, seed=0)
        assert points.shape == (60, 2) and np.isfinite(points).all()
        np.testing.assert_array_equal(points, project(x, method, seed=0))
    pca = project(x)
    assert abs(pca[:30, 0].mean() - pca[30:, 0].mean()) > 5, "the two clouds are apart along the first axis"


def test_project_keeps_tiny_inputs_drawable():
    assert project(np.zeros((0, 8))).shape == (0, 2)
    assert project(np.ones((2, 8))).shape == (2, 2)
    assert project(np.ones((5, 1))).shape == (5, 2)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_class_folders(
        tmp_path_factory.mktemp("map") / "images", {"red": 15, "green": 15, "blue": 15}, size=(40, 40)
    )


@pytest.fixture(scope="module")
def tiny(tiny_backbone_file):
    from pipeline.backbones import load_backbone

    return load_backbone(str(tiny_backbone_file), "features")


def test_dataset_map_has_one_row_per_usable_image(images, tiny, tmp_path):
    dataset = load_dataset(DatasetConfig(image_dir=str(images)), check_images=False)
    table = dataset_map(dataset, tiny, tmp_path / "bottlenecks")
    assert list(table.columns) == COLUMNS
    assert len(table) == len(dataset.usable())
    assert sorted(table["file"]) == sorted(dataset.usable()["file"])
    assert set(table["split"]) <= {"train", "validation", "test"} and set(table["label"]) == set(dataset.classes)
    assert table[["x", "y"]].notna().all().all()
    pd.testing.assert_frame_equal(table, dataset_map(dataset, tiny, tmp_path / "bottlenecks"))
    centres = table.groupby("label")[["x", "y"]].mean()
    spread = table.groupby("label")[["x", "y"]].std().to_numpy().max()
    gaps = [
        np.linalg.norm(centres.loc[a] - centres.loc[b])
        for a, b in [("red", "green"), ("red", "blue"), ("green", "blue")]
    ]
    assert min(gaps) > spread, "each colour is its own cloud"


def test_dataset_map_marks_suspects_and_supports_tsne(images, tiny, tmp_path):
    dataset = load_dataset(DatasetConfig(image_dir=str(images)), check_images=False)
    row = dataset.usable().iloc[0]
    suspect = Suspect(row["file"], row["path"], row["label"], "blue", 0.1, 0.9)
    table = dataset_map(dataset, tiny, tmp_path / "b", method="tsne", suspects=[suspect], seed=1)
    assert list(table.columns) == [*COLUMNS, "suspect"]
    assert table["suspect"].dtype == bool and table["suspect"].sum() == 1
    assert table.loc[table["suspect"], "file"].item() == row["file"]
    assert table.equals(dataset_map(dataset, tiny, tmp_path / "b", method="tsne", suspects=[suspect], seed=1))
    px = pytest.importorskip("plotly.express")
    figure = px.scatter(table, x="x", y="y", color="label", symbol="suspect", hover_data=["file"])
    assert {trace.name.split(",")[0] for trace in figure.data} == set(dataset.classes)


def test_unknown_method_is_a_user_error(images, tiny, tmp_path):
    dataset = load_dataset(DatasetConfig(image_dir=str(images)), check_images=False)
    with pytest.raises(RetrainError, match="umap"):
        dataset_map(dataset, tiny, tmp_path / "b", method="umap")
