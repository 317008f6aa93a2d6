"""The likely-mislabelled finder: flipped labels in separable blobs, generated images, the CLI, and flowers."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOWERS, needs_flowers
from imagegen import make_class_folders, write_labels_csv

from pipeline.__main__ import main
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset, save_override
from pipeline.errors import DatasetError, RetrainError
from pipeline.splits import split_for_name
from pipeline.suspects import Suspect, find_suspects, out_of_fold_probabilities, suspicion_order

CLASSES = {"red": 24, "green": 24, "blue": 24}


def blobs(per_class: int = 60, classes: int = 3, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clouds, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (classes, dim))
    y = np.repeat(np.arange(classes), per_class)
    return centres[y] + rng.normal(0, 1, (len(y), dim)), y


def flip(y: np.ndarray, count: int, classes: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), count, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, classes, count)) % classes
    return noisy, flipped


# ---- Arrays -----------------------------------------------------------------------------------------------------


def test_out_of_fold_finds_flipped_labels_in_blobs():
    x, y = blobs()
    noisy, flipped = flip(y, 8, 3)
    probabilities = out_of_fold_probabilities(x, noisy, 3, folds=5, seed=0)
    assert probabilities.shape == (len(y), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    order = suspicion_order(probabilities, noisy)
    assert set(order[:8]) == set(flipped)
    assert (probabilities.argmax(axis=1)[flipped] == y[flipped]).all(), "suggests the true class"


def test_suspicion_order_lists_only_disputed_rows_lowest_given_first():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.05, 0.95], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1, 1])
    assert list(suspicion_order(probabilities, y)) == [2, 1, 3]


def test_same_seed_same_probabilities_and_other_seed_other_folds():
    x, y = blobs(per_class=30)
    noisy, _ = flip(y, 5, 3)
    first = out_of_fold_probabilities(x, noisy, 3, seed=3)
    np.testing.assert_array_equal(first, out_of_fold_probabilities(x, noisy, 3, seed=3))
    assert not np.array_equal(first, out_of_fold_probabilities(x, noisy, 3, seed=4))


def test_copies_of_one_photo_cannot_vouch_for_each_other():
    x, y = blobs(per_class=40)
    # Three copies of a class-0 photo, all labelled 2: grouped, no copy is ever in another copy's training folds.
    x = np.vstack([x, np.repeat(x[:1], 3, axis=0)])
    y = np.concatenate([y, [2, 2, 2]])
    groups = np.concatenate([np.arange(len(y) - 3), [-1, -1, -1]])
    order = suspicion_order(out_of_fold_probabilities(x, y, 3, groups=groups), y)
    assert set(order[:3]) == {len(y) - 3, len(y) - 2, len(y) - 1}


def test_small_classes_and_absent_classes_still_give_probabilities():
    x, y = blobs(per_class=20)
    x, y = np.vstack([x, x[:2] + 0.1]), np.concatenate([y, [3, 3]])  # class 3 has 2 images, fewer than the folds
    probabilities = out_of_fold_probabilities(x, y, num_classes=5, folds=5)
    assert probabilities.shape == (62, 5)
    assert (probabilities[:, 4] == 0).all(), "a class with no images gets no probability"


def test_too_few_folds_or_images_are_user_errors():
    x, y = blobs(per_class=10)
    with pytest.raises(RetrainError, match="--folds"):
        out_of_fold_probabilities(x, y, 3, folds=1)
    with pytest.raises(DatasetError, match="too few images"):
        out_of_fold_probabilities(x[[0, 10, 20]], y[[0, 10, 20]], 3)


# ---- A dataset of generated images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def misfiled(tmp_path_factory):
    """Generated class folders with two red images filed under blue (training or validation split)."""
    root = make_class_folders(tmp_path_factory.mktemp("suspects") / "images", CLASSES, size=(40, 40))
    moved = []
    for path in sorted((root / "red").glob("*.jpg")):
        if split_for_name(path.name, 10, 10) != "test" and len(moved) < 2:
            path.rename(root / "blue" / path.name)
            moved.append(f"blue/{path.name}")
    return root, moved


@pytest.fixture(scope="module")
def tiny(tiny_backbone_file):
    from pipeline.backbones import load_backbone

    return load_backbone(str(tiny_backbone_file), "features")


def test_find_suspects_puts_misfiled_images_first(misfiled, tiny, tmp_path):
    root, moved = misfiled
    dataset = load_dataset(DatasetConfig(image_dir=str(root)), check_images=False)
    seen = []
    suspects = find_suspects(dataset, tiny, tmp_path / "bottlenecks", progress=seen.append)
    assert {s.file for s in suspects[:2]} == set(moved)
    first = suspects[0]
    assert isinstance(first, Suspect) and first.label == "blue" and first.suggested == "red"
    assert Path(first.path).is_file() and first.suggested_probability > first.label_probability
    test_files = set(dataset.usable().query("split == 'test'")["file"])
    assert not test_files & {s.file for s in suspects}, "test images are never second-guessed"
    assert [s.label_probability for s in suspects] == sorted(s.label_probability for s in suspects)
    assert seen[-1].stage == "checking labels" and seen[-1].done == seen[-1].total == 5
    assert find_suspects(dataset, tiny, tmp_path / "bottlenecks", top=1) == suspects[:1]


def test_the_label_check_reads_the_bottlenecks_once_for_suspects_and_map(
    misfiled, tiny, tiny_backbone_file, tmp_path, monkeypatch
):
    import pipeline.suspects
    from pipeline.config import TrainConfig
    from pipeline.studio.label_check import check_labels

    root, moved = misfiled
    dataset = load_dataset(DatasetConfig(image_dir=str(root)), check_images=False)
    real, calls = pipeline.suspects.cache_bottlenecks, []
    monkeypatch.setattr(
        pipeline.suspects, "cache_bottlenecks", lambda items, *a, **k: calls.append(len(items)) or real(items, *a, **k)
    )
    check = check_labels(
        dataset,
        TrainConfig(architecture=str(tiny_backbone_file), bottleneck_layer="features"),
        str(tmp_path / "bottlenecks"),
    )
    assert calls == [len(dataset.usable())], "one fetch of every usable image"
    alone = find_suspects(dataset, tiny, tmp_path / "bottlenecks")
    assert [s.file for s in check.suspects] == [s.file for s in alone], "the same suspects as on their own"
    assert {s.file for s in check.suspects[:2]} == set(moved)
    assert len(check.points) == len(dataset.usable()) and check.points["suspect"].sum() == len(check.suspects)


def test_relabelled_images_are_no_longer_suspects(misfiled, tiny, tmp_path):
    root, moved = misfiled
    overrides = tmp_path / "overrides.json"
    for file in moved:
        save_override(overrides, file, label="red")
    dataset = load_dataset(DatasetConfig(image_dir=str(root), overrides=str(overrides)), check_images=False)
    suspects = find_suspects(dataset, tiny, tmp_path / "bottlenecks")
    assert not set(moved) & {s.file for s in suspects}


def test_cli_prints_suspects_as_a_json_list_last(misfiled, tiny_backbone_file, tmp_path, capsys):
    root, moved = misfiled
    code = main(
        [
            "suspects",
            "--image_dir",
            str(root),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
            "--bottleneck_dir",
            str(tmp_path / "b"),
            "--top",
            "3",
            "--folds",
            "4",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    listed = json.loads(out.strip().splitlines()[-1])
    assert isinstance(listed, list) and 2 <= len(listed) <= 3
    assert all(
        set(entry) == {"file", "label", "suggested", "label_probability", "suggested_probability"} for entry in listed
    )
    assert {entry["file"] for entry in listed[:2]} == set(moved)
    assert [e["label_probability"] for e in listed] == sorted(e["label_probability"] for e in listed)
    assert "checking labels: 4/4" in err


def test_cli_reports_bad_folds_without_a_traceback(misfiled, tiny_backbone_file, tmp_path, capsys):
    root, _ = misfiled
    code = main(
        [
            "suspects",
            "--image_dir",
            str(root),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
            "--bottleneck_dir",
            str(tmp_path / "b"),
            "--folds",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("error: --folds is 1") and "Traceback" not in err


# ---- Real photos: 2% of flowers' labels made wrong in a CSV -----------------------------------------------------


@needs_flowers()
def test_finds_most_labels_made_wrong_in_flowers(tmp_path):
    from pipeline.backbones import load_backbone

    files = sorted(path.relative_to(FLOWERS).as_posix() for path in FLOWERS.glob("*/*.jpg"))
    labels = [file.split("/")[0] for file in files]
    classes = sorted(set(labels))
    rng = np.random.default_rng(7)
    # Only training and validation labels are checked, so the mistakes go there (split is by file name).
    checked = [i for i, file in enumerate(files) if split_for_name(Path(file).name, 10, 10) != "test"]
    wrong = rng.choice(checked, round(0.02 * len(files)), replace=False)
    for i in wrong:
        labels[i] = str(rng.choice([label for label in classes if label != labels[i]]))
    csv = write_labels_csv(tmp_path / "labels.csv", list(zip(files, labels, strict=True)))
    dataset = load_dataset(DatasetConfig(image_dir=str(FLOWERS), label_csv=str(csv)), check_images=False)
    assert dataset.layout == "csv" and len(dataset.usable()) == len(files)
    # Shared across test sessions: the cache is keyed by content, so flowers is extracted once, ever.
    bottleneck_dir = Path(os.environ["RETRAIN_STUDIO_CACHE"]) / "bottlenecks"
    suspects = find_suspects(dataset, load_backbone(), bottleneck_dir, top=2 * len(wrong))
    found = {s.file for s in suspects} & {files[i] for i in wrong}
    assert len(found) >= 0.7 * len(wrong), f"found {len(found)} of {len(wrong)} wrong labels"
    by_file = {s.file: s for s in suspects}
    true_class = [by_file[file].suggested == file.split("/")[0] for file in found]
    assert sum(true_class) >= 0.9 * len(found), "the suggestion is mostly the class the photo came from"
