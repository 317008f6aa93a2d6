"""Near-duplicates: one photo re-encoded ten ways is one group; distinct photos are not; drop/merge are decisions."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOWERS, needs_flowers
from imagegen import make_class_folders
from PIL import Image

from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset, load_overrides
from pipeline.near_duplicates import (
    NEAR_HAMMING,
    bottleneck_groups,
    drop_duplicates,
    hamming,
    hash_groups,
    merge_label,
    table_groups,
)

# Ten re-encodings of one photo: JPEG quality from 10 to 95, sizes from 30% to 150%.
VARIANTS = [
    (10, 1.0),
    (20, 0.4),
    (30, 0.5),
    (40, 0.6),
    (50, 0.75),
    (60, 1.5),
    (70, 0.9),
    (80, 1.25),
    (90, 0.3),
    (95, 1.0),
]


def _photo() -> Image.Image:
    """A real photo when the shared flowers are there (what the threshold is for), else a generated scene."""
    if FLOWERS.is_dir():
        return Image.open(sorted((FLOWERS / "daisy").glob("*.jpg"))[0]).convert("RGB")
    rng = np.random.default_rng(3)
    base = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((20, 20, 1))).astype(np.uint8)
    return Image.fromarray(base)


def _write_copies(folder: Path, image: Image.Image) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for quality, scale in VARIANTS:
        width, height = image.size
        resized = image.resize((max(8, int(width * scale)), max(8, int(height * scale))), Image.Resampling.LANCZOS)
        name = f"copy_q{quality}_s{int(scale * 100)}.jpg"
        resized.save(folder / name, "JPEG", quality=quality)
        names.append(name)
    return names


@pytest.fixture
def dataset_with_copies(tmp_path):
    root = make_class_folders(tmp_path / "photos", {"red": 8, "blue": 8}, size=(64, 48))
    _write_copies(root / "daisy", _photo())
    if FLOWERS.is_dir():  # distinct real photos of the same kind, which must stay apart
        for path in sorted((FLOWERS / "daisy").glob("*.jpg"))[1:9]:
            (root / "daisy" / path.name).write_bytes(path.read_bytes())
    past = time.time() - 60  # copied in a while ago: the check store trusts them on the next load
    for path in root.rglob("*.jpg"):
        os.utime(path, (past, past))
    return load_dataset(DatasetConfig(image_dir=str(root)), check_images=True, check_store=tmp_path / "store")


def test_one_photo_reencoded_ten_times_is_one_group(dataset_with_copies):
    groups = table_groups(dataset_with_copies.table)
    copies = [group for group in groups if any("copy_" in file for file in group["files"])]
    assert len(copies) == 1
    assert sorted(copies[0]["files"]) == sorted(f"daisy/copy_q{q}_s{int(s * 100)}.jpg" for q, s in VARIANTS)
    assert set(copies[0]["labels"]) == {"daisy"}


@needs_flowers()
def test_distinct_daisies_stay_apart(dataset_with_copies):
    grouped = {file for group in table_groups(dataset_with_copies.table) for file in group["files"]}
    distinct = [f for f in dataset_with_copies.table["file"] if f.startswith("daisy/") and "copy_" not in f]
    assert len(distinct) == 8 and not grouped & set(distinct)


def test_the_hash_is_stored_with_the_checked_files(dataset_with_copies, tmp_path):
    again = load_dataset(
        DatasetConfig(image_dir=str(dataset_with_copies.root)), check_images=True, check_store=tmp_path / "store"
    )
    assert again.files_checked == 0
    assert list(again.table["phash"]) == list(dataset_with_copies.table["phash"])


def test_hash_groups_are_connected_components():
    a, b, c, far = "0000000000000000", "000000000000001f", "00000000000003ff", "ffffffff00000000"
    assert hamming(a, b) == 5 and hamming(b, c) == 5 and hamming(a, c) == 10 > NEAR_HAMMING
    assert hash_groups(["a", "b", "c", "far", "none"], [a, b, c, far, ""]) == [["a", "b", "c"]]
    assert hash_groups(["a"], [a]) == []


def test_bottleneck_groups_by_cosine():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16))
    vectors = np.vstack([base, base[0] + 0.01 * rng.normal(size=16)])
    assert bottleneck_groups(["a", "b", "c", "a2"], vectors) == [["a", "a2"]]


def test_drop_and_merge_write_the_decisions_the_drop_feature_uses(tmp_path):
    overrides = tmp_path / "overrides.json"
    dropped = drop_duplicates(overrides, ["x/1.jpg", "x/2.jpg", "y/3.jpg"], keep="x/2.jpg")
    assert dropped == ["x/1.jpg", "y/3.jpg"]
    assert load_overrides(overrides) == {"drop": ["x/1.jpg", "y/3.jpg"], "relabel": {}}
    merge_label(overrides, ["x/1.jpg", "y/3.jpg"], "x")
    assert load_overrides(overrides) == {"drop": [], "relabel": {"x/1.jpg": "x", "y/3.jpg": "x"}}
    with pytest.raises(ValueError):
        drop_duplicates(overrides, ["a"], keep="b")


def test_a_dataset_after_drop_keeps_one_of_the_group(dataset_with_copies, tmp_path):
    group = next(g for g in table_groups(dataset_with_copies.table) if any("copy_" in f for f in g["files"]))
    overrides = tmp_path / "decisions.json"
    drop_duplicates(overrides, group["files"], keep=group["files"][0])
    kept = load_dataset(
        DatasetConfig(image_dir=str(dataset_with_copies.root), overrides=str(overrides)),
        check_images=True,
        check_store=tmp_path / "store",
    )
    assert [g for g in table_groups(kept.table) if any("copy_" in f for f in g["files"])] == []
    assert (kept.table["status"] == "dropped").sum() == len(VARIANTS) - 1


def test_reencoding_moves_the_hash_little():
    from pipeline.near_duplicates import perceptual_hash

    image = _photo()
    original = perceptual_hash(np.asarray(image))
    for quality, scale in VARIANTS:
        buffer = io.BytesIO()
        image.resize((max(8, int(image.width * scale)), max(8, int(image.height * scale)))).save(
            buffer, "JPEG", quality=quality
        )
        assert hamming(original, perceptual_hash(np.asarray(Image.open(buffer).convert("RGB")))) <= NEAR_HAMMING


def test_cached_bottleneck_groups_put_the_copies_together(dataset_with_copies, tiny_backbone_file, tmp_path):
    from pipeline.backbones import load_backbone
    from pipeline.near_duplicates import cached_bottleneck_groups

    backbone = load_backbone(str(tiny_backbone_file), "features")
    groups = cached_bottleneck_groups(dataset_with_copies, backbone, tmp_path / "bn")
    copies = {file for file in dataset_with_copies.table["file"] if "copy_" in file}
    assert any(copies <= set(group["files"]) for group in groups)


@pytest.mark.parametrize("label", ["", "   ", "a\nb", "\0", "tab\there"])
def test_merging_into_a_label_no_class_can_have_is_refused_before_writing(tmp_path, label):
    """An empty label erased the group's decisions; a control character moved every photo of the group out of
    the dataset as a problem, long after the merge said nothing (attack2)."""
    from pipeline.errors import RetrainError

    overrides = tmp_path / "overrides.json"
    merge_label(overrides, ["x/1.jpg", "y/3.jpg"], "x")
    before = overrides.read_bytes()
    with pytest.raises(RetrainError, match="label"):
        merge_label(overrides, ["x/1.jpg", "y/3.jpg"], label)
    assert overrides.read_bytes() == before


def test_drop_and_merge_handle_odd_file_names(tmp_path):
    """Newlines, tabs, a leading dash and bytes that are not UTF-8 (kept as lone surrogates) round-trip."""
    overrides = tmp_path / "overrides.json"
    odd = ["red/new\nline.jpg", "red/-leading.jpg", "red/bad\udcff.jpg", "red/tab\tname.jpg"]
    assert drop_duplicates(overrides, odd, keep=odd[1]) == [odd[0], odd[2], odd[3]]
    assert load_overrides(overrides)["drop"] == sorted([odd[0], odd[2], odd[3]])
    merge_label(overrides, odd, "blue")
    assert load_overrides(overrides) == {"drop": [], "relabel": {name: "blue" for name in sorted(odd)}}
