"""Sources → table: each layout, what counts as an image, the stable split, duplicates, overrides, verdicts."""

import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import time

import pytest
from conftest import FLOWERS, needs_flowers
from imagegen import (
    class_image,
    flatten_to_csv_layout,
    make_class_folders,
    make_split_folders,
    make_zip,
    write_image,
    write_labels_csv,
    write_not_an_image,
    write_png_named_jpg,
    write_truncated_jpeg,
)

from pipeline.config import DatasetConfig
from pipeline.dataset import (
    COLUMNS,
    REFUSED_LINK,
    SPLITS,
    inspect_report,
    load_dataset,
    load_overrides,
    require_trainable,
    save_override,
)
from pipeline.errors import DatasetError, RetrainError
from pipeline.splits import name_percentage, split_for_name


def load(image_dir=None, **settings):
    check_images = settings.pop("check_images", True)
    workdir = settings.pop("workdir", None)
    config = DatasetConfig(image_dir=str(image_dir) if image_dir else None, **settings)
    return load_dataset(config, check_images=check_images, workdir=workdir)


def counts(dataset):
    return {label: sum(splits.values()) for label, splits in dataset.class_counts().items()}


# ---- Layouts ----------------------------------------------------------------------------------------------------


def test_class_folders_give_one_row_per_image(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 12, "blue": 10})
    dataset = load(root)
    table = dataset.table
    assert list(table.columns) == COLUMNS
    assert dataset.classes == ["blue", "red"] and counts(dataset) == {"blue": 10, "red": 12}
    assert dataset.layout == "class_folders" and dataset.root == root.resolve()
    assert table.iloc[0]["file"] == "blue/blue_000.jpg"
    assert table.iloc[0]["path"] == str(root.resolve() / "blue" / "blue_000.jpg")
    assert list(table.sort_values(["label", "file"])["file"]) == list(table["file"])
    assert set(table["status"]) == {"ok"} and set(table["split"]) <= set(SPLITS)
    expected = hashlib.sha256((root / "red" / "red_003.jpg").read_bytes()).hexdigest()
    assert table.set_index("file").loc["red/red_003.jpg", "sha256"] == expected
    assert dataset.problems == [] and dataset.duplicates == []


def test_nested_folders_count_as_their_class(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 3, "blue": 3})
    (root / "red" / "2019" / "june").mkdir(parents=True)
    shutil.move(root / "red" / "red_000.jpg", root / "red" / "2019" / "june" / "red_000.jpg")
    dataset = load(root)
    assert counts(dataset) == {"blue": 3, "red": 3}
    assert "red/2019/june/red_000.jpg" in set(dataset.table.loc[dataset.table["label"] == "red", "file"])


@pytest.mark.parametrize(
    "val_name, test_name",
    [("val", "test"), ("validation", "testing"), ("valid", "test"), ("VAL", "Test"), ("Validation", None)],
)
def test_pre_split_folders_are_honoured(tmp_path, val_name, test_name):
    splits = {"train": {"red": 6, "blue": 6}, val_name: {"red": 2, "blue": 2}}
    if test_name:
        splits[test_name] = {"red": 3, "blue": 1}
    dataset = load(make_split_folders(tmp_path / "data", splits))
    assert dataset.layout == "pre_split"
    expected = {"train": 6, "validation": 2, "test": 3 if test_name else 0}
    assert dataset.class_counts()["red"] == expected
    row = dataset.table.set_index("file").loc[f"{val_name}/red/red_000.jpg"]
    assert (row["label"], row["split"]) == ("red", "validation")


def test_pre_split_ignores_other_folders_with_a_warning(tmp_path):
    root = make_split_folders(tmp_path / "data", {"train": {"red": 3, "blue": 3}, "val": {"red": 1, "blue": 1}})
    make_class_folders(root / "extras", {"red": 2})
    dataset = load(root)
    assert len(dataset.table) == 8
    assert any("'extras' is ignored" in warning for warning in dataset.warnings)


def test_pre_split_with_two_validation_folders_is_refused(tmp_path):
    root = make_split_folders(tmp_path / "data", {"train": {"red": 2}, "val": {"red": 1}, "valid": {"red": 1}})
    with pytest.raises(DatasetError, match=r"both val/ and valid/ hold validation images"):
        load(root)


@pytest.mark.parametrize("top_folder", [None, "my photos"])
def test_zip_of_class_folders(tmp_path, top_folder):
    source = make_class_folders(tmp_path / "src", {"red": 5, "blue": 4})
    zip_path = make_zip(
        source,
        tmp_path / "upload.zip",
        top_folder=top_folder,
        extra={"__MACOSX/._red_000.jpg": b"\0\5\26\7", ".DS_Store": b"\0\0\0\1Bud1"},
    )
    dataset = load(zip=str(zip_path), workdir=tmp_path / "work")
    assert counts(dataset) == {"blue": 4, "red": 5} and dataset.problems == []
    assert dataset.table.iloc[0]["file"] == "blue/blue_000.jpg"
    assert dataset.source == str(zip_path) and dataset.root.is_relative_to(tmp_path / "work")
    again = load(zip=str(zip_path), workdir=tmp_path / "work")
    assert again.root == dataset.root and len(list((tmp_path / "work").iterdir())) == 1


def test_zip_of_pre_split_folders(tmp_path):
    source = make_split_folders(tmp_path / "src", {"train": {"red": 4, "blue": 4}, "test": {"red": 2, "blue": 2}})
    dataset = load(zip=str(make_zip(source, tmp_path / "d.zip", top_folder="data")), workdir=tmp_path / "work")
    assert dataset.layout == "pre_split" and dataset.class_counts()["blue"] == {"train": 4, "validation": 0, "test": 2}


@pytest.mark.parametrize("drop_extension", [False, True])
def test_csv_of_labels(tmp_path, drop_extension):
    images = tmp_path / "images"
    rows = flatten_to_csv_layout(
        make_class_folders(tmp_path / "src", {"red": 4, "blue": 3}, ext=".png"), images, drop_extension=drop_extension
    )
    csv_path = write_labels_csv(tmp_path / "labels.csv", rows)
    dataset = load(images, label_csv=str(csv_path))
    assert dataset.layout == "csv" and counts(dataset) == {"blue": 3, "red": 4}
    assert dataset.table.iloc[0]["file"] == "blue_000.png"


def test_csv_tolerates_bom_whitespace_extra_columns_and_header_variants(tmp_path):
    images = make_class_folders(tmp_path / "images", {"red": 2, "blue": 2})
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(
        b"\xef\xbb\xbf Notes , Filename , Class \n"
        b"a, red/red_000 , Red\nb,red/red_001.jpg,Red\n , blue/blue_000,\n\n"
        b"c,blue/blue_000.jpg ,Blue\nd, blue/blue_001 ,Blue\n"
    )
    dataset = load(images, label_csv=str(csv_path))
    assert counts(dataset) == {"Blue": 2, "Red": 2}
    assert dataset.table.iloc[0]["file"] == "blue/blue_000.jpg"
    assert any("1 row(s) of labels.csv have no image id or no label" in w for w in dataset.warnings)


def test_csv_rows_without_files_are_problems_and_unlisted_images_a_warning(tmp_path):
    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    csv_path = write_labels_csv(
        tmp_path / "labels.csv",
        [
            ("red/red_000", "red"),
            ("red/red_001", "red"),
            ("red/gone", "red"),
            ("blue/blue_000", "blue"),
            ("blue/blue_001.jpg", "blue"),
        ],
    )
    dataset = load(images, label_csv=str(csv_path))
    assert dataset.problems == [
        {"file": "red/gone", "problem": f"listed in labels.csv row 4 but no such file in {images.resolve()}"}
    ]
    assert "2 image(s) in" in " ".join(dataset.warnings) and "not listed in labels.csv" in " ".join(dataset.warnings)


def test_csv_without_usable_columns_names_the_columns_found(tmp_path):
    images = make_class_folders(tmp_path / "images", {"red": 1})
    csv_path = write_labels_csv(tmp_path / "labels.csv", [("red/red_000", "red")], header="picture,kind")
    with pytest.raises(RetrainError, match=r"labels.csv: needs an image column and a label column.*picture, kind"):
        load(images, label_csv=str(csv_path))


def test_csv_ids_found_by_name_anywhere_below_the_folder_unless_ambiguous(tmp_path):
    # HackerEarth grocery layout: dataset/train/train_1.png with ids like "train_1", image_dir = dataset.
    images = tmp_path / "dataset"
    rows = flatten_to_csv_layout(
        make_class_folders(tmp_path / "src", {"red": 3, "blue": 3}, ext=".png"), images / "train", drop_extension=True
    )
    write_image(images / "test" / "red_000.png", class_image("red", 0, seed=99))  # same name, other folder
    dataset = load(images, label_csv=str(write_labels_csv(tmp_path / "train.csv", rows)))
    assert counts(dataset) == {"blue": 3, "red": 2}
    assert dataset.problems[0]["file"] == "red_000"
    assert "matches files in several folders (test/red_000.png, train/red_000.png)" in dataset.problems[0]["problem"]


def test_csv_inside_a_zip(tmp_path):
    images = tmp_path / "flat"
    rows = flatten_to_csv_layout(make_class_folders(tmp_path / "src", {"red": 2, "blue": 2}), images)
    write_labels_csv(images / "labels.csv", rows)
    zip_path = make_zip(images, tmp_path / "upload.zip")
    dataset = load(zip=str(zip_path), label_csv="labels.csv", workdir=tmp_path / "work")
    assert counts(dataset) == {"blue": 2, "red": 2} and not any("not listed" in w for w in dataset.warnings)


def test_csv_with_no_rows_is_not_trainable(tmp_path):
    images = make_class_folders(tmp_path / "images", {"red": 2})
    dataset = load(images, label_csv=str(write_labels_csv(tmp_path / "labels.csv", [])))
    with pytest.raises(DatasetError, match=r"no images found .* the labels CSV lists no images"):
        require_trainable(dataset)


def test_csv_needs_an_images_folder(tmp_path):
    csv_path = write_labels_csv(tmp_path / "labels.csv", [("a", "red")])
    with pytest.raises(RetrainError, match="--label_csv needs --image_dir"):
        load(label_csv=str(csv_path))


# ---- What counts as an image ------------------------------------------------------------------------------------


def test_hidden_files_and_non_images_are_ignored_and_misnamed_files_reported(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    write_image(root / "red" / ".hidden.jpg", class_image("red", 0))
    write_image(root / ".thumbnails" / "red" / "x.jpg", class_image("red", 0))
    for name in ("README.txt", "labels.csv", "Thumbs.db", "notes"):
        write_not_an_image(root / "red" / name)
    write_not_an_image(root / "red" / "not_really.jpg")
    write_png_named_jpg(root / "blue" / "png_inside.jpg")
    write_image(root / "blue" / "SHOUTY.JPG", class_image("blue", 0, seed=9))
    write_image(root / "blue" / "no_extension", class_image("blue", 0, seed=8), image_format="JPEG")
    (root / "LICENSE.txt").write_text("CC-BY")
    dataset = load(root)
    files = set(dataset.table["file"])
    assert files == {
        "red/red_000.jpg",
        "red/red_001.jpg",
        "red/not_really.jpg",
        "blue/blue_000.jpg",
        "blue/blue_001.jpg",
        "blue/png_inside.jpg",
        "blue/SHOUTY.JPG",
        "blue/no_extension",
    }
    assert dataset.problems == [
        {"file": "red/not_really.jpg", "problem": "not an image (content is not JPEG, PNG, BMP, GIF or WebP)"}
    ]
    assert not any("not in a class folder" in warning for warning in dataset.warnings)


def test_check_images_decodes_but_the_quick_path_only_sniffs(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 3, "blue": 3})
    write_truncated_jpeg(root / "red" / "cut.jpg")
    (root / "red" / "empty.png").write_bytes(b"")
    checked, quick = load(root, check_images=True), load(root, check_images=False)
    assert {p["file"]: p["problem"][:20] for p in checked.problems} == {
        "red/cut.jpg": "truncated or damaged",
        "red/empty.png": "empty file (0 bytes)",
    }
    assert [p["file"] for p in quick.problems] == ["red/empty.png"]
    assert len(quick.usable()) == len(checked.usable()) + 1


def test_symlink_outside_the_dataset_is_refused_inside_is_followed(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    outside = write_image(tmp_path / "elsewhere" / "secret.jpg", class_image("red", 0, seed=5))
    (root / "red" / "linked_out.jpg").symlink_to(outside)
    (root / "blue" / "photos_elsewhere").symlink_to(outside.parent, target_is_directory=True)
    (root / "blue" / "alias.jpg").symlink_to(root / "red" / "red_000.jpg")
    dataset = load(root)
    assert {p["file"]: p["problem"] for p in dataset.problems} == {
        "red/linked_out.jpg": REFUSED_LINK,
        "blue/photos_elsewhere": REFUSED_LINK,
    }
    assert "blue/alias.jpg" in set(dataset.usable()["file"])


def test_symlink_loops_and_linked_class_folders_outside_are_problems_not_crashes(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    (root / "red" / "loop_a.jpg").symlink_to(root / "red" / "loop_b.jpg")
    (root / "red" / "loop_b.jpg").symlink_to(root / "red" / "loop_a.jpg")
    (root / "red" / "parent").symlink_to(root, target_is_directory=True)
    make_class_folders(tmp_path / "other", {"green": 2})
    (root / "green").symlink_to(tmp_path / "other" / "green", target_is_directory=True)
    problems = {p["file"]: p["problem"] for p in load(root).problems}
    assert problems == {
        "red/loop_a.jpg": "symlink loop; refused",
        "red/loop_b.jpg": "symlink loop; refused",
        "green": REFUSED_LINK,
    }


def test_deep_folders_are_walked_without_recursion(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    deep = root / "red" / "/".join(["d"] * 150)
    deep.mkdir(parents=True)
    write_image(deep / "deep.jpg", class_image("red", 0, seed=7))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(140 + len(inspect.stack()))  # too shallow to recurse once per folder level
    try:
        dataset = load(root, check_images=False)
    finally:
        sys.setrecursionlimit(limit)
    assert counts(dataset) == {"blue": 2, "red": 3}


def test_photos_in_unsupported_formats_are_counted_in_a_warning(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    for name in ("IMG_1.HEIC", "IMG_2.heic", "scan.tif"):
        (root / "red" / name).write_bytes(b"\0\0\0\x18ftypheic")
    assert (
        "3 file(s) in formats that are not read (.heic, .tif) are ignored; convert them to JPEG or PNG to use them"
    ) in load(root).warnings


def test_images_outside_class_folders_and_empty_folders_are_warned_about(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    write_image(root / "stray.jpg", class_image("red", 0))
    (root / "green").mkdir()
    warnings = " | ".join(load(root).warnings)
    assert "1 image(s) directly in" in warnings and "folder 'green' has no images" in warnings


def test_progress_is_reported_as_checking(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 3, "blue": 3})
    reports = []
    load_dataset(DatasetConfig(image_dir=str(root)), progress=reports.append)
    assert reports and {r.stage for r in reports} == {"checking"} and reports[-1].done == reports[-1].total == 6


# ---- The split --------------------------------------------------------------------------------------------------


def retrain_py_split(file_name, validation_percentage, testing_percentage):
    """retrain.py's which_set, as it was written there."""
    max_num_images_per_class = 2**27 - 1
    hash_name = re.sub(r"_nohash_.*$", "", file_name)
    hash_name_hashed = hashlib.sha1(hash_name.encode()).hexdigest()
    percentage_hash = (int(hash_name_hashed, 16) % (max_num_images_per_class + 1)) * (100.0 / max_num_images_per_class)
    if percentage_hash < validation_percentage:
        return "validation"
    if percentage_hash < (testing_percentage + validation_percentage):
        return "test"
    return "train"


def test_split_matches_retrain_py_and_respects_percentages():
    names = [f"IMG_{i:04d}.jpg" for i in range(1000)]
    splits = [split_for_name(name, 15, 10) for name in names]
    assert splits == [retrain_py_split(name, 15, 10) for name in names]
    assert 110 <= splits.count("validation") <= 190 and 60 <= splits.count("test") <= 140


def test_nohash_names_stay_together():
    assert {name_percentage(f"dog_nohash_{i}.jpg") for i in range(5)} == {name_percentage("dog")}


def test_adding_images_never_moves_existing_ones(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 30, "blue": 30})
    before = load(root, check_images=False).table.set_index("file")["split"]
    make_class_folders(tmp_path / "more", {"red": 60, "blue": 60}, seed=3)
    for path in (tmp_path / "more").rglob("*.jpg"):
        shutil.copy(path, root / path.parent.name / f"new_{path.name}")
    after = load(root, check_images=False).table.set_index("file")["split"]
    assert len(after) == 180 and after[before.index].equals(before)


@pytest.mark.parametrize("validation, testing", [(-1, 10), (10, 101), (50, 50), (70, 40)])
def test_impossible_percentages_are_refused(tmp_path, validation, testing):
    root = make_class_folders(tmp_path / "data", {"red": 1})
    with pytest.raises(RetrainError, match="percentage"):
        load(root, validation_percentage=validation, testing_percentage=testing)


# ---- Duplicates and warnings ------------------------------------------------------------------------------------


def test_duplicates_within_and_across_classes(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 3, "blue": 3})
    shutil.copy(root / "red" / "red_000.jpg", root / "red" / "red_copy.jpg")
    shutil.copy(root / "red" / "red_001.jpg", root / "blue" / "looks_blue.jpg")
    dataset = load(root)
    by_first = {group["files"][0]: group for group in dataset.duplicates}
    assert by_first["blue/looks_blue.jpg"]["files"] == ["blue/looks_blue.jpg", "red/red_001.jpg"]
    assert by_first["blue/looks_blue.jpg"]["labels"] == ["blue", "red"]
    assert by_first["red/red_000.jpg"]["files"] == ["red/red_000.jpg", "red/red_copy.jpg"]
    assert (
        "same image in classes blue and red: blue/looks_blue.jpg, red/red_001.jpg — it can only be one; "
        "delete or relabel one"
    ) in dataset.warnings
    assert any(w.startswith("1 image(s) are exact copies of another image in the same class") for w in dataset.warnings)


def test_small_classes_are_warned_about(tmp_path):
    dataset = load(make_class_folders(tmp_path / "data", {"red": 7, "blue": 25}))
    assert "class 'red' has only 7 usable images; 20 or more per class is recommended" in dataset.warnings
    assert not any("class 'blue' has only" in warning for warning in dataset.warnings)


# ---- Verdicts ---------------------------------------------------------------------------------------------------


def test_a_good_dataset_is_trainable(tmp_path):
    require_trainable(load(make_class_folders(tmp_path / "data", {"red": 12, "blue": 12})))


def test_no_images_says_what_layout_is_expected(tmp_path):
    (tmp_path / "empty" / "red").mkdir(parents=True)
    (tmp_path / "empty" / "README.txt").write_text("photos go here")
    with pytest.raises(DatasetError, match=r"no images found in .*empty; expected one folder per class"):
        require_trainable(load(tmp_path / "empty"))


def test_one_class_is_not_trainable(tmp_path):
    with pytest.raises(DatasetError, match=r"only one class \('red'\)"):
        require_trainable(load(make_class_folders(tmp_path / "data", {"red": 5})))


def test_a_class_with_one_usable_image_is_named(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 5, "blue": 5, "green": 1})
    write_truncated_jpeg(root / "green" / "broken.jpg")
    with pytest.raises(DatasetError, match=r"class 'green' has 1 usable image"):
        require_trainable(load(root))


def test_a_class_with_no_training_images_is_named(tmp_path):
    root = make_split_folders(tmp_path / "data", {"train": {"red": 3, "blue": 3}, "val": {"red": 1, "green": 2}})
    with pytest.raises(DatasetError, match=r"class 'green' has no training images; add some to train/green/"):
        require_trainable(load(root))


def test_hash_split_leaving_a_class_without_training_images_is_named(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 4, "blue": 4})
    held_out = [f"g{i}.jpg" for i in range(200) if split_for_name(f"g{i}.jpg", 10, 10) != "train"][:2]
    for name in held_out:
        write_image(root / "green" / name, class_image("green", 2, seed=len(name)))
    with pytest.raises(DatasetError, match=r"class 'green' has no training images"):
        require_trainable(load(root))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"image_dir": "/no/such/folder"}, r"/no/such/folder: image folder not found"),
        ({"zip": "/no/such/data.zip"}, r"/no/such/data.zip: zip file not found"),
        ({"image_dir": ".", "label_csv": "/no/such/labels.csv"}, r"/no/such/labels.csv: labels CSV not found"),
        ({"image_dir": ".", "zip": "x.zip"}, r"both --image_dir and --zip"),
        ({}, r"no dataset given"),
    ],
)
def test_missing_sources_name_the_path(settings, message):
    with pytest.raises(RetrainError, match=message):
        load_dataset(DatasetConfig(**settings))


# ---- Overrides --------------------------------------------------------------------------------------------------


def test_overrides_drop_and_relabel_without_touching_files(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 4, "blue": 4})
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in root.rglob("*") if path.is_file()}
    overrides = tmp_path / "decisions" / "overrides.json"
    assert load_overrides(overrides) == {"drop": [], "relabel": {}}
    save_override(overrides, "red/red_000.jpg", drop=True)
    save_override(overrides, "red/red_001.jpg", label="blue")
    save_override(overrides, "blue/blue_000.jpg", label="green")
    save_override(overrides, "blue/blue_000.jpg")  # changed my mind
    dataset = load(root, overrides=str(overrides))
    table = dataset.table.set_index("file")
    assert table.loc["red/red_000.jpg", "status"] == "dropped"
    assert table.loc["red/red_001.jpg", "label"] == "blue"
    assert table.loc["red/red_001.jpg", "split"] == split_for_name("red_001.jpg", 10, 10)
    assert table.loc["blue/blue_000.jpg", "label"] == "blue"
    assert counts(dataset) == {"blue": 5, "red": 2}
    assert json.loads(overrides.read_text()) == {"drop": ["red/red_000.jpg"], "relabel": {"red/red_001.jpg": "blue"}}
    after = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in root.rglob("*") if path.is_file()}
    assert after == before


def test_overrides_for_files_that_are_gone_are_warned_about(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2, "blue": 2})
    overrides = tmp_path / "overrides.json"
    save_override(overrides, "red/deleted.jpg", drop=True)
    assert any(
        "1 override(s) name files no longer in the dataset" in w for w in load(root, overrides=str(overrides)).warnings
    )


def test_damaged_overrides_file_is_a_clear_error(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 2})
    (tmp_path / "overrides.json").write_text("{not json")
    with pytest.raises(RetrainError, match=r"overrides.json: is damaged \(not valid JSON"):
        load(root, overrides=str(tmp_path / "overrides.json"))


# ---- The report -------------------------------------------------------------------------------------------------


def test_inspect_report_is_plain_json(tmp_path):
    root = make_class_folders(tmp_path / "data", {"red": 3, "blue": 3})
    write_not_an_image(root / "red" / "bad.jpg")
    report = json.loads(json.dumps(inspect_report(load(root))))
    assert set(report) >= {"classes", "usable", "problems", "warnings", "duplicates"}
    assert report["usable"] == 6 and sum(report["classes"]["red"].values()) == 3
    assert report["problems"][0]["file"] == "red/bad.jpg"


# ---- The real photos --------------------------------------------------------------------------------------------

FLOWER_COUNTS = {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799}


@needs_flowers()
def test_flowers_quick_load():
    started = time.perf_counter()
    dataset = load(FLOWERS, check_images=False)
    elapsed = time.perf_counter() - started
    assert counts(dataset) == FLOWER_COUNTS and dataset.problems == []
    assert elapsed < 10, f"listing and hashing flowers took {elapsed:.1f}s"
    require_trainable(dataset)


@needs_flowers()
def test_flowers_subset_decodes_cleanly(tmp_path):
    for label in FLOWER_COUNTS:
        for path in sorted((FLOWERS / label).glob("*.jpg"))[:10]:
            (tmp_path / label).mkdir(exist_ok=True)
            shutil.copy(path, tmp_path / label / path.name)  # copies: links out of the dataset are refused
    dataset = load(tmp_path, check_images=True)
    assert counts(dataset) == dict.fromkeys(FLOWER_COUNTS, 10) and dataset.problems == []
    assert all(os.path.isfile(path) for path in dataset.table["path"])


def test_class_names_with_control_characters_are_problems_not_labels(tmp_path):
    from imagegen import write_labels_csv

    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    rows = [(f"red/{p.name}", "red") for p in sorted((images / "red").iterdir())]
    rows += [(f"blue/{p.name}", "bl\tue") for p in sorted((images / "blue").iterdir())]
    csv = write_labels_csv(tmp_path / "labels.csv", rows)
    dataset = load_dataset(DatasetConfig(image_dir=str(images), label_csv=str(csv)), check_images=False)
    assert dataset.classes == ["red"]
    assert len(dataset.problems) == 3 and all("control character" in p["problem"] for p in dataset.problems)
