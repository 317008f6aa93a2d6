"""The bottleneck cache: reuse, keys, damaged entries, bad images, and kill -9 mid-run."""

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from imagegen import make_class_folders, write_empty, write_truncated_jpeg

from pipeline.backbones import load_backbone
from pipeline.bottlenecks import DATABASE_NAME, BottleneckStore, ExtractItem, cache_bottlenecks, entry_key
from pipeline.config import AugmentConfig, DatasetConfig
from pipeline.dataset import load_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_backbone_file):
    return load_backbone(str(tiny_backbone_file), "features")


def items_of(folder) -> list[ExtractItem]:
    dataset = load_dataset(DatasetConfig(image_dir=str(folder)), check_images=False)
    return [ExtractItem(row.path, row.sha256) for row in dataset.usable().itertuples()]


def test_second_run_reuses_everything_and_renames_do_not_matter(tmp_path, tiny):
    images = make_class_folders(tmp_path / "images", {"red": 10, "blue": 10})
    first = cache_bottlenecks(items_of(images), tiny, tmp_path / "cache")
    assert (first.computed, first.reused, len(first.problems)) == (20, 0, 0)
    (images / "red").rename(images / "crimson")  # same content, new names
    second = cache_bottlenecks(items_of(images), tiny, tmp_path / "cache")
    assert (second.computed, second.reused) == (0, 20)
    by_hash = {item.sha256: vector for item, vector in first.vectors.items()}
    for item, vector in second.vectors.items():
        np.testing.assert_array_equal(vector, by_hash[item.sha256])


def test_the_backbone_is_prepared_as_its_own_step_before_the_first_photo(tmp_path, tiny_backbone_file):
    """Building or converting the backbone (a minute the first time on a server) is not "caching 0/N"."""
    images = make_class_folders(tmp_path / "images", {"red": 3})
    reports = []
    backbone = load_backbone(str(tiny_backbone_file), "features")
    cache_bottlenecks(items_of(images), backbone, tmp_path / "cache", progress=reports.append, preparing=reports.append)
    steps = [(report.stage, report.indeterminate, report.done, report.total) for report in reports]
    assert steps[:3] == [
        ("preparing the backbone", True, 0, 0),
        ("preparing the backbone", False, 1, 1),
        ("caching", False, 0, 3),
    ]
    assert reports[0].message == "starting TensorFlow and loading the model"  # a user's own model runs on TensorFlow
    assert all(report.stage == "caching" for report in reports[2:])
    reports.clear()
    again = load_backbone(str(tiny_backbone_file), "features")
    cache_bottlenecks(items_of(images), again, tmp_path / "cache", progress=reports.append, preparing=reports.append)
    assert reports and all(report.stage == "caching" for report in reports)  # all cached: nothing to prepare
    assert not again.built


def test_a_cancel_while_the_backbone_is_prepared_stops_before_the_first_photo(tmp_path, tiny_backbone_file):
    """Cancel pressed during the minute a first conversion takes: no batch of photos is computed after it, and the
    caching step does not claim it had nothing to do (it was not reached)."""
    images = make_class_folders(tmp_path / "images", {"red": 3})
    cancelled, reports = [], []
    backbone = load_backbone(str(tiny_backbone_file), "features")

    def preparing(report):
        reports.append(report)
        cancelled.append(True)  # the user cancels while the backbone is being prepared

    result = cache_bottlenecks(
        items_of(images),
        backbone,
        tmp_path / "cache",
        progress=reports.append,
        preparing=preparing,
        should_stop=lambda: bool(cancelled),
    )
    assert (result.computed, result.reused, result.vectors) == (0, 0, {})
    assert [report.stage for report in reports] == ["preparing the backbone", "preparing the backbone"]
    again = cache_bottlenecks(items_of(images), backbone, tmp_path / "cache")  # the next run computes them all
    assert (again.computed, again.reused) == (3, 0)


def test_keys_separate_backbones_layers_and_copies():
    item = ExtractItem("a.jpg", "f" * 64)
    keys = {
        entry_key(item, "lite0:w1:global_pool", None),
        entry_key(item, "lite0:w1:other_layer", None),
        entry_key(item, "resnet50:w2:avg", None),
        entry_key(ExtractItem("a.jpg", "f" * 64, 1), "lite0:w1:global_pool", AugmentConfig(rotation=10)),
        entry_key(ExtractItem("a.jpg", "f" * 64, 1), "lite0:w1:global_pool", AugmentConfig(rotation=20)),
    }
    assert len(keys) == 5
    assert entry_key(ExtractItem("b/renamed.jpg", "f" * 64), "x", None) == entry_key(item, "x", None)


def test_bad_images_are_problems_not_crashes(tmp_path, tiny):
    images = make_class_folders(tmp_path / "images", {"red": 4})
    write_truncated_jpeg(images / "red" / "cut.jpg")
    write_empty(images / "red" / "empty.jpg")
    items = items_of(images) + [ExtractItem(str(images / "red" / "empty.jpg"), "0" * 64)]
    result = cache_bottlenecks(items, tiny, tmp_path / "cache")
    assert len(result.vectors) == 4
    problems = {Path(item.path).name: message for item, message in result.problems.items()}
    assert "truncated" in problems["cut.jpg"]
    assert "empty" in problems["empty.jpg"]


def test_damaged_entry_is_recomputed_not_used(tmp_path, tiny):
    images = make_class_folders(tmp_path / "images", {"red": 3})
    items = items_of(images)
    cache_bottlenecks(items, tiny, tmp_path / "cache")
    with sqlite3.connect(tmp_path / "cache" / DATABASE_NAME) as db:
        key = db.execute("SELECT key FROM bottlenecks LIMIT 1").fetchone()[0]
        db.execute("UPDATE bottlenecks SET vector = zeroblob(length(vector)) WHERE key = ?", (key,))
        other = db.execute("SELECT key FROM bottlenecks WHERE key != ? LIMIT 1", (key,)).fetchone()[0]
        db.execute("UPDATE bottlenecks SET vector = substr(vector, 1, 8) WHERE key = ?", (other,))
    again = cache_bottlenecks(items, tiny, tmp_path / "cache")
    assert (again.damaged, again.computed, again.reused) == (2, 2, 1)
    assert all(np.abs(vector).sum() > 0 for vector in again.vectors.values())


def test_garbage_database_file_is_set_aside(tmp_path):
    (tmp_path / DATABASE_NAME).write_bytes(b"this is not sqlite" * 100)
    store = BottleneckStore(tmp_path)
    assert store.count() == 0
    assert any(p.name.startswith(f"{DATABASE_NAME}.damaged-") for p in tmp_path.iterdir())


def test_augmented_copies_are_cached_and_reused(tmp_path, tiny):
    images = make_class_folders(tmp_path / "images", {"red": 3})
    augment = AugmentConfig(flip_left_right=True, rotation=15, augment_copies=2)
    copies = [ExtractItem(i.path, i.sha256, k) for i in items_of(images) for k in (1, 2)]
    first = cache_bottlenecks(copies, tiny, tmp_path / "cache", augment=augment)
    second = cache_bottlenecks(copies, tiny, tmp_path / "cache", augment=augment)
    assert (first.computed, second.computed, second.reused) == (6, 0, 6)
    changed = cache_bottlenecks(copies, tiny, tmp_path / "cache", augment=AugmentConfig(rotation=30))
    assert changed.computed == 6  # other transforms, other copies


def test_kill_9_mid_cache_then_rerun_resumes_with_no_corrupt_entry(tmp_path):
    """A real `python -m pipeline cache` process with the default backbone, killed with SIGKILL partway."""
    images = make_class_folders(tmp_path / "images", {"red": 150, "blue": 150}, size=(96, 80))
    cache_dir = tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "cache",
        "--image_dir",
        str(images),
        "--bottleneck_dir",
        str(cache_dir),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (cache_dir / DATABASE_NAME).exists() and _entries(cache_dir) >= 64:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stored = _entries(cache_dir)
    assert 0 < stored < 300, f"the kill should land mid-run, had {stored} entries"
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    import json

    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["reused"] == stored and summary["computed"] == 300 - stored
    assert summary["damaged"] == 0 and summary["problems"] == 0


def _entries(cache_dir: Path) -> int:
    try:
        with sqlite3.connect(cache_dir / DATABASE_NAME, timeout=5) as db:
            return db.execute("SELECT count(*) FROM bottlenecks").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_fully_cached_rerun_never_builds_the_model(tmp_path, tiny):
    from pipeline.backbones import Backbone

    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    cache_bottlenecks(items_of(images), tiny, tmp_path / "cache")

    def refuse():
        raise AssertionError("the model was built although every bottleneck was cached")

    lazy = Backbone(tiny.name, tiny.input_size, tiny.identity, tiny.feature_dim, model_loader=refuse)
    again = cache_bottlenecks(items_of(images), lazy, tmp_path / "cache")
    assert (again.computed, again.reused) == (0, 6)
