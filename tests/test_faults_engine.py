"""Fault injection on the engine: every file the program reads back damaged, full disks, kill -9 at each stage,
two runs into one folder, foreign folders and hostile names.

Each fault must end in one clear message that names the file or folder (never a traceback or a hang), must
leave alone everything the program does not own (hashed before and after), and — for files the app shows —
leave every page rendering. FAULT_KINDS counts the kinds tried; the README's "Reliability and limits" quotes it.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from apptest_pages import open_app
from imagegen import make_class_folders
from streamlit.testing.v1 import AppTest

from pipeline.bottlenecks import DATABASE_NAME, BottleneckStore, ExtractItem, cache_bottlenecks
from pipeline.config import DatasetConfig, RunConfig, apply_preset
from pipeline.dataset import load_overrides
from pipeline.errors import RetrainError
from pipeline.evaluate import Report
from pipeline.records import DamagedFile, read_labels, read_workspace_state
from pipeline.retrain import retrain
from pipeline.run_rows import run_row
from pipeline.runs import RUN_MARKER, RunDir, refreshed_status
from pipeline.studio.launch import start_run
from pipeline.studio.workspaces import new_token, open_workspace

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
CLASSES = {"red": 10, "blue": 10, "green": 10}
RUN_NAME = "run-20240101-000000-fa17"


# ---- Helpers ----------------------------------------------------------------------------------------------------


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (links not followed), by relative path: proof nothing was touched."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not path.is_dir() or path.is_symlink():
            hashes[str(path.relative_to(folder))] = "special"
    return hashes


def cli(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_clear_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(line) == 1, result.stderr[-2000:]
    for word in words:
        assert word in line[0], line[0]
    return line[0]


def train_args(images: Path, output: Path, backbone: Path, bottlenecks: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--image_dir",
        str(images),
        "--output_dir",
        str(output),
        "--architecture",
        str(backbone),
        "--bottleneck_layer",
        "features",
        "--bottleneck_dir",
        str(bottlenecks),
        "--epochs",
        "3",
        *extra,
    ]


def try_mount_tmpfs(target: Path, options: str) -> bool:
    """Mount a small tmpfs (root only, where the machine allows it); False when it cannot be done here."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=20)


# ---- A finished run: the files to damage -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_backbone_file):
    """A data root with a workspace, a generated dataset and a finished run of it (CLI, tiny backbone)."""
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
        token = new_token()
        workspace = open_workspace(token)
        images = make_class_folders(workspace.uploads / "colours", CLASSES)
        bottlenecks = tmp_path_factory.mktemp("bottlenecks")
        run = RunDir(workspace.runs / RUN_NAME)
        config = apply_preset(RunConfig(), "Quick")
        config.train.architecture, config.train.bottleneck_layer = str(tiny_backbone_file), "features"
        config.train.epochs = 3
        config.output.bottleneck_dir = str(bottlenecks)
        retrain(dataclasses.replace(config, dataset=DatasetConfig(image_dir=str(images))), run.path)
        workspace.update_state(
            dataset=dataclasses.asdict(DatasetConfig(image_dir=str(images))),
            run=RUN_NAME,
            dataset_summary={"name": "colours", "images": 30, "classes": 3, "problems": 0},
            config=config.to_dict(),
        )
        pristine = {
            name: (run.path / name).read_bytes()
            for name in ("status.json", "config.json", "report.json", "metrics.csv", "labels.txt", "model.keras")
        }
        pristine["workspace.json"] = (workspace.path / "workspace.json").read_bytes()
        yield {
            "token": token,
            "workspace": workspace,
            "run": run,
            "images": images,
            "root": root,
            "pristine": pristine,
            "bottlenecks": bottlenecks,
        }


@pytest.fixture
def restore(studio):
    """Put every damaged file back as the run wrote it, after the test."""
    yield
    for name, data in studio["pristine"].items():
        folder = studio["workspace"].path if name == "workspace.json" else studio["run"].path
        (folder / name).write_bytes(data)
    for stray in studio["workspace"].path.glob("workspace.json.damaged-*"):
        stray.unlink()


def damage(data: bytes, how: str) -> bytes | None:
    """The bytes of a file damaged one way (None: the file is removed)."""
    middle = len(data) // 2
    return {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "not utf-8": b"\xff\xfe" + data[2:],
        "missing": None,
        "garbage in the middle": data[:middle] + b"\x00" * 512 + data[middle + 512 :],
    }[how]


# Wrong types: valid JSON of the right outer shape whose fields lie.
WRONG_TYPES = {
    "status.json": {"state": "training", "progress": "half", "pid": "twelve"},
    "config.json": {"train": {"epochs": "many", "architecture": 5}},
    "report.json": {
        "labels": ["a", "b"],
        "test_accuracy": "high",
        "top5_accuracy": 1,
        "test_images": 2,
        "confusion_matrix": [[1]],
        "per_class": {},
        "misclassified": [],
    },
    "workspace.json": ["not", "an", "object"],
}
HOW = ["truncated", "empty", "not utf-8", "missing"]


def read_back(studio, name: str):
    """Read one file the way the program does; returns what the reader answered."""
    run, workspace = studio["run"], studio["workspace"]
    if name == "status.json":
        return refreshed_status(run)
    if name == "config.json":
        return RunConfig.load(run.config)
    if name == "report.json":
        return Report.load(run.report)
    if name == "metrics.csv":
        return run.read_metrics()
    if name == "labels.txt":
        return read_labels(run.path / "labels.txt")
    if name == "workspace.json":
        return read_workspace_state(workspace.path / "workspace.json")
    raise AssertionError(name)


# What a missing file means to its reader: not yet written (an answer), or an error. An empty metrics.csv is
# one whose first row was never written: no rows.
MISSING_IS = {"status.json": {}, "metrics.csv": [], "workspace.json": {}}


@pytest.mark.parametrize("how", HOW + ["wrong types"])
@pytest.mark.parametrize(
    "name", ["status.json", "config.json", "report.json", "metrics.csv", "labels.txt", "workspace.json"]
)
def test_every_file_read_back_damaged_is_a_clear_answer(studio, restore, name, how):
    folder = studio["workspace"].path if name == "workspace.json" else studio["run"].path
    target = folder / name
    if how == "wrong types":
        if name not in WRONG_TYPES:
            pytest.skip(f"{name} is not JSON")
        target.write_text(json.dumps(WRONG_TYPES[name]))
    else:
        data = damage(studio["pristine"][name], how)
        if data is None:
            target.unlink()
        else:
            target.write_bytes(data)
    before = tree_hashes(folder)
    if (how == "missing" and name in MISSING_IS) or (how == "empty" and name == "metrics.csv"):
        assert read_back(studio, name) == MISSING_IS[name]
    elif name == "status.json":  # the run is shown as unknown, with the problem; the file is left as it is
        status = read_back(studio, name)
        assert status["state"] == "unknown" and "status.json" in status["message"], status
        assert "delete it or rerun" in status["message"]
        assert run_row(studio["run"])["state"] == "unknown"
    elif name == "metrics.csv" and how == "truncated":  # a half-written last line: the whole lines are kept
        rows = read_back(studio, name)
        assert 0 < len(rows) < len(studio["pristine"][name].splitlines()) - 1
    else:
        with pytest.raises(DamagedFile) as caught:
            read_back(studio, name)
        assert name in str(caught.value) and "Traceback" not in str(caught.value)
    assert tree_hashes(folder) == before, "reading must never change the file"


def test_metrics_damaged_in_the_middle_is_an_error_not_a_silent_gap(studio, restore):
    lines = studio["pristine"]["metrics.csv"].decode().splitlines()
    lines[2] = "1,2,three,4,5,6,7"
    studio["run"].metrics.write_text("\n".join(lines) + "\n")
    with pytest.raises(DamagedFile, match="metrics.csv: is damaged \\(line 3"):
        studio["run"].read_metrics()


def test_overrides_file_damaged_every_way(tmp_path):
    path = tmp_path / "overrides.json"
    assert load_overrides(path) == {"drop": [], "relabel": {}}  # missing: no decisions yet
    for data in (
        b'{"drop": [',
        b"\xff\xfe{}",
        b"[1, 2]",
        b'{"drop": [1], "relabel": {}}',
        b'{"drop": [], "relabel": {"a.jpg": 7}}',
    ):
        path.write_bytes(data)
        with pytest.raises(DamagedFile, match="overrides.json"):
            load_overrides(path)


def test_labels_that_do_not_match_the_model_are_refused(studio, restore):
    from pipeline.predict import Predictor

    labels = studio["run"].path / "labels.txt"
    labels.write_text("red\nblue\n")  # the model has three outputs
    with pytest.raises(DamagedFile, match="labels.txt: lists 2 classes but model.keras has 3 outputs"):
        Predictor(studio["run"].path)
    labels.write_text("red\nred\nblue\n")
    with pytest.raises(DamagedFile, match="listed twice"):
        Predictor(studio["run"].path)


@pytest.mark.parametrize("how", ["truncated", "garbage in the middle", "empty"])
def test_a_damaged_model_file_is_a_clear_error(studio, restore, how):
    from pipeline.predict import Predictor

    (studio["run"].path / "model.keras").write_bytes(damage(studio["pristine"]["model.keras"], how))
    with pytest.raises(DamagedFile, match="model.keras: (cannot be loaded|is damaged)"):
        Predictor(studio["run"].path)
    if how != "truncated":
        return  # the command line's answer is checked once: it is the same reader
    result = cli("predict", "--model", str(studio["run"].path), str(next(studio["images"].rglob("*.jpg"))))
    assert_one_clear_line(result, "model.keras")


def test_damaged_config_on_the_command_line_is_one_line(studio, restore, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_bytes(b"\xff" + studio["pristine"]["config.json"])
    assert_one_clear_line(
        cli("train", "--config", str(bad), "--output_dir", str(tmp_path / "run")), "config.json", "not UTF-8"
    )
    bad.write_text(json.dumps({"train": {"epochs": [3]}}))
    assert_one_clear_line(cli("train", "--config", str(bad), "--output_dir", str(tmp_path / "run")), "train.epochs")


# ---- The pages keep rendering ------------------------------------------------------------------------------------


def app(token: str, page: str) -> AppTest:
    at = open_app(page, token, timeout=600)  # generous: the first run imports plotly on a busy machine
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at: AppTest) -> str:
    return (
        " | ".join(
            str(element.value) for kind in (at.warning, at.error, at.info, at.markdown, at.caption) for element in kind
        )
        + " | "
        + " | ".join(str(e.value) for e in at.sidebar.markdown)
    )


PAGES = ["pages/dataset.py", "pages/train.py", "pages/evaluate.py", "pages/predict.py", "pages/runs.py"]


@pytest.mark.parametrize(
    "name, how, says",
    [
        ("status.json", "truncated", "status.json"),
        ("status.json", "not utf-8", "status.json"),
        ("metrics.csv", "not utf-8", "metrics.csv"),
        ("config.json", "truncated", "config.json"),
        ("report.json", "not utf-8", "report.json"),
        ("workspace.json", "truncated", "workspace.json"),
    ],
)
def test_pages_render_and_name_the_damaged_file(studio, restore, name, how, says):
    folder = studio["workspace"].path if name == "workspace.json" else studio["run"].path
    (folder / name).write_bytes(damage(studio["pristine"][name], how))
    pages = (
        PAGES
        if name in ("status.json", "workspace.json")
        else {
            "metrics.csv": ["pages/train.py", "pages/runs.py"],
            "config.json": ["pages/runs.py", "pages/evaluate.py"],
            "report.json": ["pages/evaluate.py"],
        }[name]
    )
    seen = []
    for page in pages:
        at = app(studio["token"], page)  # asserts no exception
        seen.append(says in shown(at) or says in " ".join(str(e.value) for e in at.sidebar.warning))
    assert any(seen), f"no page said what is wrong with {name}"


def test_a_damaged_run_can_still_be_deleted(studio, tmp_path):
    from pipeline.runs import delete_run

    run = RunDir(studio["workspace"].runs / "run-20240101-000001-dead")
    shutil.copytree(studio["run"].path, run.path)
    run.status_file.write_bytes(b'{"state": "trai')
    assert refreshed_status(run)["state"] == "unknown"
    delete_run(run.path)
    assert not run.path.exists()


# ---- The bottleneck cache ----------------------------------------------------------------------------------------


def filled_store(folder: Path, entries: int = 600) -> dict[str, np.ndarray]:
    vectors = {f"key{i}": np.full(256, i, np.float32) for i in range(entries)}
    store = BottleneckStore(folder)
    store.put_many(vectors)
    store.close()  # checkpoints the WAL into the main file
    return vectors


def test_cache_damaged_in_its_middle_is_set_aside_rebuilt_and_healthy_entries_kept(tmp_path):
    vectors = filled_store(tmp_path)
    database = tmp_path / DATABASE_NAME
    damaged = bytearray(database.read_bytes())
    middle = len(damaged) // 2 // 4096 * 4096
    damaged[middle : middle + 8192] = os.urandom(8192)  # two pages in the middle; the header is intact
    database.write_bytes(bytes(damaged))
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):  # what every later run used to fail with
        connection = sqlite3.connect(database)
        connection.execute("SELECT count(*), sum(length(vector)) FROM bottlenecks").fetchall()
    store = BottleneckStore(tmp_path)
    found, _ = store.get_many(list(vectors))
    store.close()
    assert len(vectors) // 2 < len(found) < len(vectors), "the readable entries are carried over, the rest not"
    assert all(np.array_equal(found[key], vectors[key]) for key in found), "carried entries are intact"
    assert "set aside" in store.repaired
    aside = [
        path
        for path in tmp_path.iterdir()
        if path.name.startswith(f"{DATABASE_NAME}.damaged-") and not path.name.endswith(("-wal", "-shm"))
    ]
    assert aside and aside[0].read_bytes() == bytes(damaged), "the damaged file is kept as it was"


def test_cache_run_over_a_damaged_cache_computes_only_what_was_lost(tmp_path, tiny_backbone_file):
    from pipeline.backbones import load_backbone

    images = make_class_folders(tmp_path / "images", {"red": 40, "blue": 40})
    items = [
        ExtractItem(str(path), hashlib.sha256(path.read_bytes()).hexdigest()) for path in sorted(images.rglob("*.jpg"))
    ]
    backbone = load_backbone(str(tiny_backbone_file), "features")
    first = cache_bottlenecks(items, backbone, tmp_path / "cache")
    database = tmp_path / "cache" / DATABASE_NAME
    damaged = bytearray(database.read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 4096] = b"\x00" * 4096
    database.write_bytes(bytes(damaged))
    second = cache_bottlenecks(items, backbone, tmp_path / "cache")
    assert first.computed == len(items) and second.reused + second.computed == len(items)
    assert second.reused > 0 and "set aside" in second.summary()["repaired"]


def test_cache_folder_missing_unwritable_or_a_file_is_one_line(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    common = [
        "cache",
        "--image_dir",
        str(images),
        "--architecture",
        str(tiny_backbone_file),
        "--bottleneck_layer",
        "features",
    ]
    (tmp_path / "a-file").write_text("not a folder")
    assert_one_clear_line(
        cli(*common, "--bottleneck_dir", str(tmp_path / "a-file" / "cache")), "bottleneck cache folder"
    )
    result = cli(*common, "--bottleneck_dir", str(tmp_path / "new" / "deeper"))  # missing: created
    assert result.returncode == 0 and (tmp_path / "new" / "deeper" / DATABASE_NAME).exists(), result.stderr[-2000:]
    readonly = tmp_path / "readonly"
    if not try_mount_tmpfs(readonly, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (not root)")
    try:
        assert_one_clear_line(
            cli(*common, "--bottleneck_dir", str(readonly / "cache")), "bottleneck cache folder", "Read-only"
        )
    finally:
        unmount(readonly)


# ---- train --output_dir: only our folders, one run at a time ----------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_untouched(tmp_path, tiny_backbone_file):
    foreign = tmp_path / "my-project"
    for name in (
        "logs/events.txt",
        "saved_model/keep.pb",
        "labels.txt",
        "report.json",
        "metrics.csv",
        "model.keras",
        "status.json",
        "cancel-requested",
    ):
        (foreign / name).parent.mkdir(parents=True, exist_ok=True)
        (foreign / name).write_text(f"the user's own {name}")
    before = tree_hashes(foreign)
    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    result = cli(*train_args(images, foreign, tiny_backbone_file, tmp_path / "cache"))
    assert_one_clear_line(result, "not a Retrain Studio run folder", "nothing in it was touched")
    assert tree_hashes(foreign) == before and not (foreign / RUN_MARKER).exists()


def test_claim_marks_new_folders_and_refuses_a_second_run(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.claim():
        assert run.is_ours()
        with pytest.raises(RetrainError, match=f"another run \\(pid {os.getpid()}\\) is writing into this folder"):
            with RunDir(tmp_path / "run").claim():
                pass
    with RunDir(tmp_path / "run").claim():  # free again once the first run ends
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(RetrainError, match="is a file, not a folder"), RunDir(tmp_path / "file").claim():
        pass


# ---- kill -9 at each stage, and two runs into one folder --------------------------------------------------------


@pytest.mark.parametrize("stage", ["caching", "training", "exporting"])
def test_kill_9_at_each_stage_is_reported_as_interrupted_and_a_rerun_works(tmp_path, tiny_backbone_file, stage):
    images = make_class_folders(tmp_path / "images", {"red": 150, "blue": 150} if stage == "caching" else CLASSES)
    before = tree_hashes(images)
    run = RunDir(tmp_path / "run")
    args = train_args(images, run.path, tiny_backbone_file, tmp_path / "cache")
    args[-1] = "400" if stage == "training" else "3"  # epochs: long enough to be caught training
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    try:
        while run.status().get("state") != stage:
            assert process.poll() is None and time.monotonic() < deadline, f"never saw {stage}: {run.status()}"
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    status = refreshed_status(run)
    assert status["state"] == "failed" and status["interrupted"] == stage, status
    assert "interrupted" in status["message"] and f"died while {stage}" in status["message"]
    assert tree_hashes(images) == before
    if stage == "training":  # the lock died with the process: the same folder takes a new run
        rerun = cli(*train_args(images, run.path, tiny_backbone_file, tmp_path / "cache"))
        assert rerun.returncode == 0 and run.status()["state"] == "done", rerun.stderr[-2000:]


def test_two_runs_into_one_folder_at_once_the_second_is_refused(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", CLASSES)
    run = RunDir(tmp_path / "run")
    args = train_args(images, run.path, tiny_backbone_file, tmp_path / "cache")
    args[-1] = "200"
    first = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while run.status().get("state") not in ("caching", "training"):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.05)
        # Paused where it holds the folder: the head now trains in a second, so the first run could otherwise be
        # done before the second process has started.
        os.kill(first.pid, signal.SIGSTOP)
        status = run.status()
        second = cli(*args)
        assert_one_clear_line(second, "another run", f"pid {first.pid}", "is writing into this folder")
        assert run.status()["pid"] == status["pid"] == first.pid, "the second run wrote nothing"
    finally:
        first.kill()
        first.wait()


# ---- Full disk ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["24k", "100k"])  # full while caching; full while exporting
def test_full_disk_on_a_small_tmpfs_is_one_line_and_a_failed_status(tmp_path, tiny_backbone_file, size):
    disk = tmp_path / "disk"
    if not try_mount_tmpfs(disk, f"size={size}"):
        pytest.skip("cannot mount a tmpfs here (not root); the stubbed full disk below still runs")
    try:
        images = make_class_folders(tmp_path / "images", CLASSES)
        before = tree_hashes(images)
        result = cli(*train_args(images, disk / "run", tiny_backbone_file, disk / "cache"))
        line = assert_one_clear_line(result, str(disk), "full", "MB free")
        status = RunDir(disk / "run").status()
        assert status["state"] == "failed" and status["message"] in line, (status, line)
        assert tree_hashes(images) == before
    finally:
        unmount(disk)


def test_full_disk_stubbed_while_training_fails_the_run_with_where_and_how_much(
    tmp_path, tiny_backbone_file, monkeypatch
):
    from pipeline.config import OutputConfig, TrainConfig

    images = make_class_folders(tmp_path / "images", CLASSES)

    def no_space(self, row):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.metrics))

    monkeypatch.setattr(RunDir, "append_metrics", no_space)
    config = RunConfig(
        dataset=DatasetConfig(image_dir=str(images)),
        train=TrainConfig(architecture=str(tiny_backbone_file), bottleneck_layer="features", epochs=2),
        output=OutputConfig(bottleneck_dir=str(tmp_path / "cache")),
    )
    with pytest.raises(RetrainError, match=r"metrics.csv is full \(.* MB free\): free about .* MB"):
        retrain(config, tmp_path / "run")
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and "is full" in status["message"]


def test_status_is_still_written_when_no_temporary_copy_fits(tmp_path, monkeypatch):
    from pipeline import runs

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_status("training", 0.5, "training")

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_json_atomic", no_space)
    run.write_status("failed", message="the disk is full")
    assert run.status()["state"] == "failed" and run.status()["message"] == "the disk is full"


def test_full_disk_in_the_cache_database_is_one_clear_error(tmp_path, monkeypatch):
    store = BottleneckStore(tmp_path)

    def full(vectors):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_put_many", full)
    with pytest.raises(RetrainError, match=r"bottleneck cache .*is full .*MB free"):
        store.put_many({"key": np.zeros(4, np.float32)})


def test_start_training_on_a_full_disk_shows_an_error_on_the_page(studio, monkeypatch):
    import pipeline.studio.launch as launch_module

    def no_space(workspace, run, config, dataset):  # the run folder is made; writing into it fails
        raise OSError(errno.ENOSPC, "No space left on device", str(run.path / "status.json"))

    monkeypatch.setattr(launch_module, "_write_run", no_space)
    with pytest.raises(RetrainError, match="could not be started: the disk holding"):
        start_run(studio["workspace"], RunConfig.from_dict(studio["workspace"].state()["config"]))
    at = app(studio["token"], "pages/train.py")
    buttons = [button for button in at.button if button.label in ("Start training", "Start another run")]
    buttons[0].click().run()
    assert not at.exception and any("could not be started" in str(error.value) for error in at.error)
    for run in studio["workspace"].runs.iterdir():
        if run.name != RUN_NAME:
            shutil.rmtree(run)
    studio["workspace"].update_state(run=RUN_NAME)


# ---- Settings out of range --------------------------------------------------------------------------------------


def test_out_of_range_seed_is_one_line_and_configure_bounds_it(studio, tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    result = cli(*train_args(images, tmp_path / "run", tiny_backbone_file, tmp_path / "cache"), "--seed", "99999999999")
    assert_one_clear_line(result, "train.seed = 99999999999 is out of range")
    with pytest.raises(RetrainError, match="train.seed"):
        RunConfig.from_dict({"train": {"seed": -1}}).validate()
    at = app(studio["token"], "pages/configure.py")
    seed = [widget for widget in at.number_input if widget.key == "knob.train.seed"]
    assert seed and seed[0].proto.min == 0 and seed[0].proto.max == 2**31 - 1


# ---- Hostile names -----------------------------------------------------------------------------------------------


def test_names_that_are_not_utf8_and_a_pipe_behind_a_symlink(tmp_path, tiny_backbone_file):
    images = make_class_folders(tmp_path / "images", CLASSES)
    os.rename(images / "red", os.fsencode(images) + b"/r\xe9d")
    first = sorted((images / "blue").iterdir())[0]
    os.rename(first, os.fsencode(first.parent) + b"/\xff\xfe.jpg")
    (images / ".hidden").mkdir()
    os.mkfifo(images / ".hidden" / "pipe")
    (images / "green" / "pipe.jpg").symlink_to("../.hidden/pipe")
    os.mkfifo(images / "green" / "direct.jpg")
    before = tree_hashes(images)
    inspect = cli("inspect", "--image_dir", str(images), timeout=60)  # a pipe once made this hang forever
    assert inspect.returncode == 0 and "Traceback" not in inspect.stderr, inspect.stderr[-2000:]
    report = json.loads(inspect.stdout[inspect.stdout.index("{\n") :])
    assert "r\\xe9d" in report["classes"]
    problems = {problem["file"]: problem["problem"] for problem in report["problems"]}
    assert "pipe, device or socket" in problems["green/pipe.jpg"] and "green/direct.jpg" in problems
    train = cli(*train_args(images, tmp_path / "run", tiny_backbone_file, tmp_path / "cache"))
    assert train.returncode == 0 and "Traceback" not in train.stderr, train.stderr[-2000:]
    assert "r\\xe9d" in (tmp_path / "run" / "labels.txt").read_text().splitlines()
    assert tree_hashes(images) == before


def test_a_server_folder_whose_name_is_not_utf8_is_listed_and_usable(tmp_path, monkeypatch):
    from pipeline.studio.server_folders import list_server_folders, resolve_server_folder

    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(tmp_path))
    os.mkdir(os.fsencode(tmp_path) + b"/caf\xe9")
    listed = list_server_folders(tmp_path)
    assert listed == ["caf\\xe9"]
    assert resolve_server_folder(listed[0], tmp_path) == Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))


# Kinds of fault this suite tries (each a distinct way for a file, a disk, a process or a name to go wrong).
FAULT_KINDS = [
    "truncated file",
    "empty file",
    "non-UTF-8 file",
    "missing file",
    "wrong-typed JSON",
    "metrics line damaged mid-file",
    "labels not matching the model",
    "repeated label",
    "damaged model.keras",
    "cache damaged mid-file",
    "cache folder a file",
    "cache folder read-only",
    "cache folder missing",
    "foreign --output_dir",
    "two runs into one folder",
    "kill -9 while caching",
    "kill -9 while training",
    "kill -9 while exporting",
    "full disk (tmpfs) while caching",
    "full disk (tmpfs) while exporting",
    "full disk (stub) writing metrics",
    "full disk (stub) writing status",
    "full disk in the cache database",
    "full disk when starting a run in the app",
    "out-of-range setting",
    "non-UTF-8 file and folder names",
    "pipe behind a symlink",
    "pipe in the dataset",
    "non-UTF-8 server folder name",
]


def test_a_run_that_stopped_on_an_error_before_its_status_says_that_error(tmp_path):
    # A run process can fail before it writes status.json (e.g. refusing its folder): the error it printed to
    # run.log is what the run shows, not a guess that it was killed or ran out of memory.
    from pipeline.runs import RunDir, refreshed_status

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.write_status("caching", 0.0, "reading the dataset", pid=int(finished.stdout))
    run.log.write_text("some progress\nerror: /x/run already holds files and is not a Retrain Studio run folder\n")
    status = refreshed_status(run)
    assert status["state"] == "failed"
    assert status["message"] == "/x/run already holds files and is not a Retrain Studio run folder"
    run.log.unlink()
    run.write_status("caching", 0.0, "reading the dataset", pid=int(finished.stdout))
    assert "killed or out of memory" in refreshed_status(run)["message"]


def test_outputs_the_user_names_never_replace_a_file_that_is_not_ours(tmp_path):
    from pipeline.errors import RetrainError
    from pipeline.export import looks_like_our_model
    from pipeline.files import looks_like_labels_file, refuse_to_replace
    from pipeline.predict import looks_like_predictions_csv

    photo = tmp_path / "red_000.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a photo")
    labels = tmp_path / "labels.txt"
    labels.write_text("blue\nred\n")
    csv_of_ours, csv_of_theirs = tmp_path / "p.csv", tmp_path / "precious.csv"
    csv_of_ours.write_text("file,label,score,label_1,score_1,error\n")
    csv_of_theirs.write_text("name,amount\n")
    refuse_to_replace(tmp_path / "new.txt", looks_like_labels_file, "a labels file")  # absent: fine
    refuse_to_replace(labels, looks_like_labels_file, "a labels file")  # an earlier run's: fine
    refuse_to_replace(csv_of_ours, looks_like_predictions_csv, "a predictions CSV")
    for path, is_ours in (
        (photo, looks_like_labels_file),
        (csv_of_theirs, looks_like_predictions_csv),
        (photo, looks_like_our_model),
        (tmp_path, looks_like_labels_file),
    ):
        with pytest.raises(RetrainError, match="already exists and is not"):
            refuse_to_replace(path, is_ours, "an output")
    assert photo.read_bytes() == b"\xff\xd8\xff\xe0 a photo" and csv_of_theirs.read_text() == "name,amount\n"


def test_predictions_csv_is_whole_and_names_non_utf8_files_safely(tmp_path):
    from pipeline.predict import write_predictions_csv

    name = os.fsdecode(b"red/bad\xff\xfename.jpg")
    results = [{"file": str(tmp_path / name), "predictions": [{"label": "red", "score": 0.9}]}]
    write_predictions_csv(results, tmp_path / "out.csv", 1, root=tmp_path)
    assert "red/bad\\xff\\xfename.jpg,red,0.9" in (tmp_path / "out.csv").read_text(encoding="utf-8")


def test_special_files_are_refused_at_once_when_named_directly(tmp_path):
    from pipeline.errors import ImageProblem
    from pipeline.images import read_bytes
    from pipeline.records import DamagedFile, read_text

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    (tmp_path / "link.jpg").symlink_to(fifo)
    for path in (fifo, tmp_path / "link.jpg", Path("/dev/zero")):
        with pytest.raises(ImageProblem, match="not a regular file"):
            read_bytes(path)
    with pytest.raises(DamagedFile, match="not a regular file"):
        read_text("/dev/zero", "give a config.json")


def test_status_keeps_the_process_start_time_and_an_interrupted_run_keeps_its_checked_exports(tmp_path):
    from pipeline.runs import RunDir, process_started, refreshed_status

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_status("training", 0.5, "step 10", pid=os.getpid(), pid_started=process_started(os.getpid()))
    run.write_status("exporting", 0.9, "model.keras", exports={"keras": "ready", "saved_model": "building"})
    assert run.status()["pid_started"] == process_started(os.getpid())
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.write_status(
        "exporting",
        0.9,
        "saved_model",
        pid=int(finished.stdout),
        pid_started="0",
        exports={"keras": "ready", "saved_model": "building"},
    )
    status = refreshed_status(run)
    assert status["state"] == "failed" and "interrupted" in status["message"]
    assert status["exports"] == {"keras": "ready", "saved_model": "not built"}


def test_two_class_folders_shown_alike_are_problems_not_one_mixed_class(tmp_path):
    from pipeline.dataset import load_dataset

    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3, "green": 3})
    os.rename(images / "red", images / "c\\xff")  # the literal text: backslash, x, f, f
    os.rename(images / "blue", os.fsencode(images) + b"/c\xff")  # the byte 0xFF, shown as \xff
    dataset = load_dataset(DatasetConfig(image_dir=str(images)), check_images=False)
    assert dataset.classes == ["green"]
    assert len(dataset.problems) == 6 and all("both shown as" in p["problem"] for p in dataset.problems)


def test_a_run_folder_that_is_a_loop_of_links_is_one_clear_refusal(tmp_path):
    from pipeline.errors import RetrainError
    from pipeline.runs import RunDir

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(RetrainError, match="cannot be used as the run folder"), RunDir(loop).claim():
        pass


def test_missing_overrides_file_and_a_newline_in_a_message_stay_one_line(tmp_path, tiny_backbone_file):
    from pipeline.__main__ import one_line
    from pipeline.errors import RetrainError

    images = make_class_folders(tmp_path / "images", {"red": 3, "blue": 3})
    result = cli(
        *train_args(images, tmp_path / "run", tiny_backbone_file, tmp_path / "cache"),
        "--overrides",
        str(tmp_path / "typo.json"),
        timeout=120,
    )
    assert_one_clear_line(result, "typo.json: no such file")
    assert not (tmp_path / "run").exists()  # refused before any work
    assert one_line(RetrainError("class 'new\nline' has 1 image")) == "class 'new\\nline' has 1 image"


def test_a_truncated_model_says_it_is_damaged_not_missing(tmp_path):
    from pipeline.records import DamagedFile, load_keras_model

    model = tmp_path / "model.keras"
    model.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(DamagedFile, match="not a whole .keras archive"):
        load_keras_model(model)


def test_a_rerun_removes_the_half_written_export_a_killed_run_left(tmp_path):
    from pipeline.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / ".staging-k2x9" / "model.keras").parent.mkdir()
    (run.path / ".staging-k2x9" / "model.keras").write_bytes(b"half")
    run.clear_outputs()
    assert not list(run.path.glob(".staging-*"))


def test_a_rerun_removes_the_old_runs_head(tmp_path):
    """head.npz is a run's output like report.json: a rerun in the same folder (say, now fine-tuned, which writes
    no head.npz) must not leave the old head for Predict to answer with under the new report."""
    from pipeline.head import HEAD_FILE
    from pipeline.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / HEAD_FILE).write_bytes(b"the last run's head")
    run.clear_outputs()
    assert not (run.path / HEAD_FILE).exists()


def test_a_rerun_removes_every_export_file_of_the_old_run(tmp_path):
    """Every export format's file is an output: a rerun with fewer formats must not leave the old run's quantized
    TFLite files beside the new run's labels."""
    from pipeline.export import FILES
    from pipeline.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    for name in FILES.values():
        (run.path / name).write_bytes(b"the last run's export")
    run.clear_outputs()
    assert not [name for name in FILES.values() if (run.path / name).exists()]


def test_full_disk_while_exporting_keeps_the_checked_model_offered(tmp_path, tiny_backbone_file, monkeypatch):
    """The message says "everything written so far is kept": status.json must still mark model.keras ready (the
    bundle and the pages offer only ready exports), not lose every export state to the disk-full line."""
    from pipeline import export
    from pipeline.bundle import ready_files
    from pipeline.config import OutputConfig, TrainConfig

    images = make_class_folders(tmp_path / "images", CLASSES)

    def no_space(classifier, labels, run_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "saved_model"))

    monkeypatch.setattr(export, "_write_saved_model", no_space)
    config = RunConfig(
        dataset=DatasetConfig(image_dir=str(images)),
        train=TrainConfig(architecture=str(tiny_backbone_file), bottleneck_layer="features", epochs=2),
        output=OutputConfig(bottleneck_dir=str(tmp_path / "cache"), export_formats=["keras", "saved_model"]),
    )
    with pytest.raises(RetrainError, match=r"is full \(.* MB free\)"):
        retrain(config, tmp_path / "run")
    status = RunDir(tmp_path / "run").status()
    assert status["state"] == "failed" and "is full" in status["message"]
    assert status["exports"]["keras"] == "ready" and status["exports"]["saved_model"] != "ready"
    assert tmp_path / "run" / "model.keras" in ready_files(RunDir(tmp_path / "run"))


def test_a_run_killed_while_preparing_the_backbone_keeps_its_board_and_says_which_step(tmp_path):
    # kill -9 during "preparing the backbone" (a minute the first time on a server): the run must say it died
    # there, and its stage board must stay, settled (the running stage failed, the rest not reached), not vanish.
    from pipeline.runs import RunDir, refreshed_status
    from pipeline.stage_progress import StageBoard, run_stage_keys, stage_lines

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    board = StageBoard(run_stage_keys(["keras"], augmenting=False, fine_tuning=False))
    board.begin("dataset")
    board.end("dataset", "24 images, 2 classes")
    board.begin("backbone")
    board.end("backbone")
    board.begin("preparing", message="first time on this server: building the model")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.write_status("caching", 0.0, "preparing the backbone", pid=int(finished.stdout), **board.to_status())
    status = refreshed_status(run)
    assert status["state"] == "failed" and status["interrupted"] == "caching", status
    assert "died while caching (preparing the backbone)" in status["message"]
    states = {stage["key"]: stage["state"] for stage in status["stages"]}
    assert states["dataset"] == states["backbone"] == "done" and states["preparing"] == "failed"
    assert states["caching"] == states["training"] == states["export keras"] == "not reached"
    assert status["run_eta_seconds"] is None
    assert any(line.startswith("preparing the backbone: failed") for line in stage_lines(status)), stage_lines(status)
