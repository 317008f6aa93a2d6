"""The Ray engine (pipeline/scale) on a local Ray instance: same vectors as the SQLite cache, resumable
shards, bounded-memory training from shards, batch prediction, and its faults.

Ray starts once for the module (2 CPUs, a small object store) and the tiny test backbone keeps each
job to seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from imagegen import make_class_folders, write_empty, write_truncated_jpeg

from pipeline.config import RunConfig
from pipeline.errors import RetrainError

ray = pytest.importorskip("ray", reason="the scale extra is not installed (pip install -r requirements-scale.txt)")

from pipeline.scale import cluster, shards  # noqa: E402
from pipeline.scale.commands import RayOptions, extract_with_ray  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, **cluster.init_options(object_store_mb=150))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_images")
    make_class_folders(root, {"red": 7, "blue": 7}, size=(40, 36))
    write_truncated_jpeg(root / "red" / "truncated.jpg")
    write_empty(root / "blue" / "empty.jpg")
    return root


def run_config(image_dir, bottleneck_dir, backbone_file) -> RunConfig:
    config = RunConfig()
    config.dataset.image_dir = str(image_dir)
    config.train.architecture = str(backbone_file)
    config.train.bottleneck_layer = "features"
    config.output.bottleneck_dir = str(bottleneck_dir)
    return config


def test_ray_vectors_match_the_sqlite_cache_and_bad_images_are_problems(
    ray_local, images, tmp_path, tiny_backbone_file
):
    from pipeline.backbones import load_backbone
    from pipeline.backbones.runtime import feature_identity
    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks, entry_key
    from pipeline.dataset import load_dataset

    config = run_config(images, tmp_path / "bottlenecks", tiny_backbone_file)
    summary, table, classes = extract_with_ray(config, RayOptions(batch_size=8))
    assert classes == ["blue", "red"]
    assert summary.computed == 14 and summary.reused == 0
    assert set(summary.problems) == {"red/truncated.jpg", "blue/empty.jpg"}
    assert "truncated" in summary.problems["red/truncated.jpg"] and "empty" in summary.problems["blue/empty.jpg"]
    assert len(shards.scan_shards(config.output.bottleneck_dir).paths) >= 2  # one shard per actor batch

    backbone = load_backbone(str(tiny_backbone_file), "features")
    dataset = load_dataset(config.dataset, check_images=False)
    items = [ExtractItem(row.path, row.sha256) for row in dataset.usable().itertuples()]
    local = cache_bottlenecks(items, backbone, tmp_path / "sqlite")
    from_ray = shards.read_vectors(config.output.bottleneck_dir)
    assert len(local.vectors) == len(from_ray) == 14
    for item, vector in local.vectors.items():
        key = entry_key(item, feature_identity(backbone), None)  # the same backbone on the same runtime
        assert summary.keys[item.path] == key
        np.testing.assert_allclose(from_ray[key], vector, atol=1e-5, rtol=0)
    local_problems = {problem["file"] for problem in dataset.problems}
    local_problems |= {str(Path(item.path).relative_to(images)) for item in local.problems}
    assert local_problems == set(summary.problems)


def test_rerun_skips_written_keys_and_ignores_partial_and_damaged_shards(
    ray_local, images, tmp_path, tiny_backbone_file
):
    config = run_config(images, tmp_path / "bottlenecks", tiny_backbone_file)
    first, _, _ = extract_with_ray(config, RayOptions(batch_size=4))
    folder = tmp_path / "bottlenecks" / shards.SHARD_FOLDER
    written = sorted(folder.glob("*.parquet"))
    # What a killed job can leave: a temporary file mid-write; and a shard damaged afterwards.
    (folder / ".bottlenecks-abc.parquet.123.tmp").write_bytes(b"PAR1 half a shard")
    damaged = written[0]
    lost = set(shards.scan_shards(str(tmp_path / "bottlenecks")).keys_by_shard[str(damaged)])
    damaged.write_bytes(damaged.read_bytes()[:100])
    scan = shards.scan_shards(str(tmp_path / "bottlenecks"))
    assert list(scan.damaged) == [str(damaged)] and not lost & scan.keys

    second, _, _ = extract_with_ray(config, RayOptions(batch_size=4))
    assert second.damaged_shards == 1
    assert second.computed == len(lost)  # only the damaged shard's images are extracted again
    assert second.reused == first.computed - len(lost)
    assert second.keys == first.keys
    assert shards.scan_shards(str(tmp_path / "bottlenecks")).keys >= set(first.keys.values())


def _kill_first_backbone_actor(stop, killed: list) -> None:
    """SIGKILL the first backbone actor process seen, once its model is loaded (its title leaves __init__)."""
    import os
    import signal
    import time

    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    title = handle.read().decode(errors="replace")
            except OSError:
                continue
            if "MapBatches(BackboneActor)" in title and "__init__" not in title:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.05)


def test_a_worker_killed_mid_job_is_retried_and_every_shard_is_whole(ray_local, images, tmp_path, tiny_backbone_file):
    import threading

    config = run_config(images, tmp_path / "bottlenecks", tiny_backbone_file)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_backbone_actor, args=(stop, killed), daemon=True)
    killer.start()
    try:
        summary, _, _ = extract_with_ray(config, RayOptions(batch_size=2))
    finally:
        stop.set()
        killer.join()
    assert killed, "no backbone actor was seen to kill"
    assert summary.computed + summary.reused == 14 and len(summary.problems) == 2
    scan = shards.scan_shards(config.output.bottleneck_dir)
    assert not scan.damaged and scan.keys == set(summary.keys.values())


def test_images_from_a_uri_are_listed_keyed_and_checked_per_file(ray_local, images, tmp_path, tiny_backbone_file):
    """A file:// URI goes through the object-store path (pyarrow listing and reads, hashing in the tasks)."""
    local, _, _ = extract_with_ray(run_config(images, tmp_path / "bn", tiny_backbone_file), RayOptions(batch_size=8))
    uri_config = run_config(images.as_uri(), tmp_path / "bn", tiny_backbone_file)
    remote, table, classes = extract_with_ray(uri_config, RayOptions(batch_size=8))
    assert classes == ["blue", "red"] and set(table["split"]) <= {"train", "validation", "test"}
    assert remote.computed == 0 and remote.reused == 14  # same content, same keys: nothing extracted again
    assert sorted(remote.keys.values()) == sorted(local.keys.values())
    assert set(remote.problems) == {"red/truncated.jpg", "blue/empty.jpg"}
    assert "empty file" in remote.problems["blue/empty.jpg"]


def test_pool_fits_the_cluster_with_room_for_the_read_tasks():
    two_cpus = cluster.plan_pool({"CPU": 2.0})
    assert two_cpus.actors == 1
    assert two_cpus.actors * two_cpus.cpus_per_actor + two_cpus.read_cpus <= 2.0
    assert two_cpus.read_cpus != two_cpus.cpus_per_actor  # else Ray Data fuses decoding into the actors
    forced = cluster.plan_pool({"CPU": 2.0}, actors=2)  # the pool that deadlocked at one CPU each
    assert forced.actors == 2 and 2 * forced.cpus_per_actor + forced.read_cpus <= 2.0
    big = cluster.plan_pool({"CPU": 16.0})
    assert big.actors == 12 and big.cpus_per_actor == 1.0
    two_nodes = cluster.plan_pool({"CPU": 2.0}, actors=2, node_cpus=[1.0, 1.0])  # one actor per 1-CPU node
    assert two_nodes.cpus_per_actor + two_nodes.read_cpus <= 1.0
    gpus = cluster.plan_pool({"CPU": 8.0, "GPU": 2.0})
    assert gpus.actors == 2 and gpus.gpus_per_actor == 1.0
    with pytest.raises(RetrainError, match="at least 1"):
        cluster.plan_pool({"CPU": 2.0}, actors=0)


def test_steady_rate_is_the_pools_once_every_actor_is_warm():
    from pipeline.scale.extract import pool_steady_rate

    batch = [0.0] * 32  # 32 images share their batch's end
    # Actor a ran alone (every core) while b started, then b alone: 32 img/s each time, never 64 at once.
    alone_in_turn = {"a": [t + 1 for t in batch] + [t + 2 for t in batch] + [t + 3 for t in batch]}
    alone_in_turn["b"] = [t + 4 for t in batch] + [t + 5 for t in batch] + [t + 6 for t in batch]
    assert pool_steady_rate(alone_in_turn) == pytest.approx(32.0)  # a sum of per-actor rates said 64
    side_by_side = {
        "a": [t + 1 for t in batch] + [t + 3 for t in batch],
        "b": [t + 1 for t in batch] + [t + 3 for t in batch],
    }
    assert pool_steady_rate(side_by_side) == pytest.approx(32.0)  # 64 images in the 2 s after both were warm
    late_starter = {"a": [t + 1 for t in batch] + [t + 2 for t in batch], "b": [t + 2 for t in batch]}
    assert pool_steady_rate(late_starter) == pytest.approx(64.0)  # no batch after b's first: from a's first
    assert pool_steady_rate({"a": [t + 1 for t in batch]}) == 0.0 and pool_steady_rate({}) == 0.0


def test_unreachable_ray_address_is_one_line_in_seconds(tmp_path, images, tiny_backbone_file):
    from pipeline.__main__ import main

    code = main(
        [
            "cache",
            "--engine",
            "ray",
            "--ray_address",
            "ray://127.0.0.1:9",
            "--image_dir",
            str(images),
            "--bottleneck_dir",
            str(tmp_path),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
        ]
    )
    assert code == 2
    with pytest.raises(RetrainError, match=r"cannot reach the Ray cluster at ray://127.0.0.1:9"):
        with cluster.ray_session("ray://127.0.0.1:9"):
            pass
    with pytest.raises(RetrainError, match="is not host:port"):
        with cluster.ray_session("ray://nowhere"):
            pass


def test_missing_ray_says_how_to_install_the_extra(monkeypatch, images, tmp_path, capsys):
    from pipeline.__main__ import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RetrainError, match="requirements-scale.txt"):
        cluster.require_ray()
    assert main(["cache", "--engine", "ray", "--image_dir", str(images), "--bottleneck_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {cluster.INSTALL_HINT}"]
    run_dir = tmp_path / "run"
    assert main(["train", "--engine", "ray", "--image_dir", str(images), "--output_dir", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {cluster.INSTALL_HINT}"]
    assert not run_dir.exists()  # refused before the run folder was made
    assert (
        main(
            [
                "predict",
                "--engine",
                "ray",
                "--model",
                str(run_dir),
                "--image_dir",
                str(images),
                "--output",
                str(tmp_path / "p.csv"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {cluster.INSTALL_HINT}"]


def test_s3_without_credentials_fails_fast_with_one_line(monkeypatch, tmp_path):
    import time

    from pipeline.scale.remote_dataset import load_remote_dataset

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    started = time.monotonic()
    with pytest.raises(RetrainError, match=r"s3://retrain-studio-no-such-bucket/flowers") as raised:
        load_remote_dataset("s3://retrain-studio-no-such-bucket/flowers", 10, 10)
    assert "\n" not in str(raised.value)
    assert time.monotonic() - started < 30


def test_unusable_storage_is_one_line_before_ray_starts(images, tmp_path, capsys, monkeypatch, tiny_backbone_file):
    """A bottleneck or output location that cannot work is refused before a Ray instance is started."""
    from pipeline.__main__ import main

    monkeypatch.setattr(cluster, "ray_session", None)  # reaching Ray at all would fail this test
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    backbone = ["--architecture", str(tiny_backbone_file), "--bottleneck_layer", "features"]
    for location, says in (
        ("nosuch://x/bottlenecks", "cannot open nosuch://x/bottlenecks"),
        ("s3://retrain-studio-no-such-bucket/bn", "cannot reach s3://retrain-studio-no-such-bucket"),
    ):
        assert (
            main(["cache", "--engine", "ray", "--image_dir", str(images), "--bottleneck_dir", location, *backbone]) == 2
        )
        (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
        assert line.startswith(f"error: {says}")

    theirs = tmp_path / "notes.csv"  # a file of the user's where predictions would go: never replaced
    theirs.write_text("my,own\nnotes,here\n")
    for output, says in ((str(theirs), "is not a predictions CSV"), ("s3://bucket/p.parquet", "give a local file")):
        assert (
            main(
                ["predict", "--engine", "ray", "--model", str(tmp_path), "--image_dir", str(images), "--output", output]
            )
            == 2
        )
        assert says in capsys.readouterr().err
    assert theirs.read_text() == "my,own\nnotes,here\n"


TRAIN_FROM_SHARDS = """
import json, resource, sys
import keras, numpy as np
from pipeline.config import TrainConfig
from pipeline.scale.shards import scan_shards
from pipeline.scale.stream import StreamLimits, split_from_shards, train_head_from_shards

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

folder, limits = sys.argv[1], StreamLimits(**json.loads(sys.argv[2]))
scan = scan_shards(folder)
held_out = set(scan.keys_by_shard[scan.paths[0]])  # validation: the first shard's keys (more than the cap)
labels = {key: int(key[0], 16) % 4 for key in scan.keys}
train = split_from_shards(folder, {k: v for k, v in labels.items() if k not in held_out})
validation = split_from_shards(folder, {k: v for k, v in labels.items() if k in held_out})
keras.layers.Dense(2)(np.zeros((1, 3), np.float32))  # TensorFlow fully up before the baseline
baseline = rss_mb()
config = TrainConfig(how_many_training_steps=len(train) // 1000, train_batch_size=1000, eval_step_interval=20,
                     early_stopping=0)  # random labels: a plateau must not end the one pass early
head, rows = train_head_from_shards(folder, train, validation, 1280, 4, config, limits=limits)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"vectors": len(train), "growth_mb": peak - baseline, "steps": rows[-1]["step"]}))
"""
STREAM_LIMITS = {"shuffle_buffer": 4096, "record_batch": 2048, "validation_cap": 1024}  # small: a quick test
ALLOWANCE_MB = 32  # allocator noise between two processes


def _write_synthetic_shards(folder, shards_count: int, rows: int = 2_000, dim: int = 1280) -> float:
    """Shards of random vectors (the size of real extraction shards' files); returns their size in MB."""
    import hashlib

    block = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    for shard in range(shards_count):
        keys = [hashlib.sha256(f"{shard}/{row}".encode()).hexdigest() for row in range(rows)]
        shards.write_shard(str(folder), keys, block + shard)
    return rows * shards_count * dim * 4 / 2**20


def _peak_growth_mb(folder) -> float:
    """MB a process training one full pass over the shards grew by, from its baseline to its peak."""
    import subprocess

    from conftest import REPO

    done = subprocess.run(
        [sys.executable, "-c", TRAIN_FROM_SHARDS, str(folder), json.dumps(STREAM_LIMITS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] >= result["vectors"] // 1000  # one full pass over the training split
    return result["growth_mb"]


def test_training_streams_shards_in_memory_set_by_the_limits_not_the_data(tmp_path):
    """A full pass over 50x more vectors grows the process by no more than the configured buffers.

    The floor (a set of one training shard) is what TensorFlow and Keras take to train at all; beyond it a
    larger set may add only what `StreamLimits` holds, whatever its size.
    """
    from pipeline.scale.stream import StreamLimits

    _write_synthetic_shards(tmp_path / "tiny", 2)
    floor = _peak_growth_mb(tmp_path / "tiny")
    data_mb = _write_synthetic_shards(tmp_path / "large", 50)
    growth = _peak_growth_mb(tmp_path / "large")
    held_mb = StreamLimits(**STREAM_LIMITS).held_vectors(1000) * 1280 * 4 / 2**20
    print(
        f"peak RSS growth {growth:.0f} MB on {data_mb:.0f} MB of vectors, {floor:.0f} MB on 10 MB; "
        f"the limits hold {held_mb:.0f} MB"
    )
    assert growth - floor <= held_mb + ALLOWANCE_MB
    assert held_mb + ALLOWANCE_MB < data_mb / 4  # the set is large enough that loading it could not pass


def test_ray_trained_run_predicts_on_ray_as_the_local_predict_does(ray_local, images, tmp_path, tiny_backbone_file):
    import csv

    import pyarrow.parquet as pq

    from pipeline.__main__ import main
    from pipeline.predict import Predictor, image_files, write_predictions_csv
    from pipeline.scale.batch_predict import write_predictions

    run_dir = tmp_path / "run"  # trained by the Ray engine: extraction on Ray, the head streamed from shards
    code = main(
        [
            "train",
            "--engine",
            "ray",
            "--image_dir",
            str(images),
            "--output_dir",
            str(run_dir),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
            "--bottleneck_dir",
            str(tmp_path / "bn"),
            "--how_many_training_steps",
            "30",
            "--export_formats",
            "keras",
            "saved_model",
            "tflite",
            "tflite_int8",
            "--saved_model_dir",
            str(tmp_path / "exported"),
        ]
    )
    assert code == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["engine"] == "ray" and report["test_images"] > 0
    # Every format through the local engine's exporter: written, reloaded and checked against the model,
    # and the model against the head on the cached (here: sharded) bottlenecks.
    assert set(report["export_parity"]) >= {"keras", "saved_model", "tflite", "tflite_int8", "cached_bottlenecks"}
    assert report["export_parity"]["keras"] < 1e-4 and report["export_parity"]["cached_bottlenecks"] < 1e-4
    assert "tflite_int8" in report["tflite_variants"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done"
    unfinished = {
        stage["key"]: stage["state"] for stage in status["stages"] if stage["state"] not in ("done", "skipped")
    }
    assert not unfinished, f"a finished Ray run's board has stages that never ran: {unfinished}"
    assert status["exports"] == dict.fromkeys(["keras", "saved_model", "tflite", "tflite_int8"], "ready")
    for name in ("model.keras", "model.tflite", "model_int8.tflite", "labels.txt", "saved_model"):
        assert (run_dir / name).exists(), name
    assert (tmp_path / "exported" / "saved_model.pb").is_file()
    assert len((run_dir / "metrics.csv").read_text().splitlines()) >= 2
    local = Predictor(run_dir).predict_files(image_files(images), 3)
    write_predictions_csv(local, tmp_path / "local.csv", 3, root=images)
    assert (
        main(
            [
                "predict",
                "--engine",
                "ray",
                "--model",
                str(run_dir),
                "--image_dir",
                str(images),
                "--top_k",
                "3",
                "--output",
                str(tmp_path / "ray.csv"),
            ]
        )
        == 0
    )
    write_predictions(local, str(tmp_path / "local.parquet"), 3, str(images))  # the Parquet output's writer

    def rows(path):
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    local_rows, ray_rows = rows(tmp_path / "local.csv"), rows(tmp_path / "ray.csv")
    assert [row["file"] for row in ray_rows] == [row["file"] for row in local_rows]
    for mine, theirs in zip(ray_rows, local_rows, strict=True):
        assert mine["label"] == theirs["label"] and mine["error"] == theirs["error"]
        if theirs["score"]:
            assert abs(float(mine["score"]) - float(theirs["score"])) < 1e-5
    assert {row["file"] for row in ray_rows if row["error"]} == {"red/truncated.jpg", "blue/empty.jpg"}
    table = pq.read_table(tmp_path / "local.parquet").to_pylist()
    assert [row["file"] for row in table] == [row["file"] for row in local_rows]
    assert [row["label"] or "" for row in table] == [row["label"] for row in local_rows]


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--flip_left_right"], "augmented copies"),  # distortions switch copies on, as in retrain.py
        (["--augment_copies", "2", "--random_crop", "10"], "augmented copies"),
        (["--class_size", "50"], "augmented copies"),
        (["--fine_tune_layers", "5"], "fine-tuning"),
    ],
)
def test_ray_training_refuses_local_only_settings_up_front(flags, says, images, tmp_path, capsys):
    from pipeline.__main__ import main

    run_dir = tmp_path / "run"
    assert main(["train", "--engine", "ray", "--image_dir", str(images), "--output_dir", str(run_dir), *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: --engine ray") and says in error and "--engine local" in error
    assert not run_dir.exists()  # refused before anything was written


def test_ray_training_is_cancelled_as_a_local_run_is(images, tmp_path, tiny_backbone_file):
    """`pipeline.runs.cancel_run` (the app's Cancel: a cancel file and SIGTERM) stops a Ray run mid-extraction."""
    import subprocess
    import time

    from conftest import REPO

    from pipeline.runs import RunDir, cancel_run

    run_dir, bottlenecks = tmp_path / "run", tmp_path / "bn"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            "--engine",
            "ray",
            "--image_dir",
            str(images),
            "--output_dir",
            str(run_dir),
            "--architecture",
            str(tiny_backbone_file),
            "--bottleneck_layer",
            "features",
            "--bottleneck_dir",
            str(bottlenecks),
            "--ray_batch_size",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = RunDir(run_dir)
    try:
        deadline = time.monotonic() + 300
        while "total" not in run.status() and process.poll() is None:  # extraction has begun
            assert time.monotonic() < deadline, "the run never reported extraction progress"
            time.sleep(0.1)
        cancel_run(run_dir)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("cancelled:")
    status = run.status()
    assert status["state"] == "cancelled" and "shard" in status["message"]
    assert not (run_dir / "model.keras").exists() and not (run_dir / "report.json").exists()
    assert not shards.scan_shards(str(bottlenecks)).damaged  # what was written is whole, for a rerun to reuse


@pytest.mark.parametrize("address", ["", "   ", "localhost:99999", "localhost:abc", "ray://[::1"])
def test_a_malformed_ray_address_is_refused_in_one_line(address):
    """`--ray_address "$RAY_ADDRESS"` with the variable unset gave Ray's own ValueError traceback (attack2)."""
    with pytest.raises(RetrainError, match="is not host:port"):
        with cluster.ray_session(address):
            pass


def test_a_ray_run_of_bad_images_only_names_them_and_its_board_counts_them(
    ray_local, tmp_path, capsys, tiny_backbone_file
):
    """Every photo unusable: the refusal names the problems (the Ray engine prints none of its own), and the board's
    caching stage counts them rather than saying it had "nothing to do"."""
    from pipeline.__main__ import main
    from pipeline.runs import RunDir

    images = tmp_path / "images"
    for label in ("red", "blue"):
        (images / label).mkdir(parents=True)
        for number in range(4):
            write_truncated_jpeg(images / label / f"{label}_{number}.jpg")
    run_dir = tmp_path / "run"
    backbone = ["--architecture", str(tiny_backbone_file), "--bottleneck_layer", "features"]
    args = ["--image_dir", str(images), "--output_dir", str(run_dir), "--bottleneck_dir", str(tmp_path / "bn")]
    assert main(["train", "--engine", "ray", *args, *backbone, "--export_formats", "keras"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "8 file(s) could not be used, e.g. blue/blue_0.jpg" in error and "see the problems above" not in error
    stages = {stage["key"]: stage for stage in RunDir(run_dir).status()["stages"]}
    assert stages["caching"]["state"] == "done" and "8 with problems" in stages["caching"]["message"], stages
    assert stages["training"]["state"] == "not reached"
