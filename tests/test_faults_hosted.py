"""Hosted mode under hostile or careless use: caps that hold across all sessions, not per session.

The queue (tickets in SQLite, one dispatcher, a cap that holds with six submissions at once, first come
first served, a global queue cap, no zombies, crash-safe claims), the disk budget and the expiry of idle
workspaces, the decode budget, privacy of the bottleneck cache, names shown as plain text, and a folder
name too long for the file system. The queue is tested with a stand-in worker (tests/queue_worker.py)
that runs the real queue code around a sleep, so it needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import RetrainError
from pipeline.run_queue import RunQueue, _wait_estimate

REPO = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("queue_worker.py"))


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    return root.resolve()


def fake_runs(folder: Path, count: int, sleep: float = 0.6) -> list[Path]:
    """Run folders the stand-in worker can run: a config and how long to take."""
    runs = []
    for index in range(count):
        run = folder / f"run-{index:02d}"
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
        (run / "sleep").write_text(str(sleep))
        runs.append(run)
    return runs


def intervals(folder: Path, count: int, timeout: float = 90) -> list[tuple[str, float, float]]:
    """(run, start, end) of `count` finished stand-in runs, in order of start; waits for them."""
    log = folder / "intervals.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().split("\n") if log.exists() else []
        if sum(line.startswith("end ") for line in lines) >= count:
            break
        time.sleep(0.2)
    events: dict[str, dict[str, float]] = {}
    for line in filter(None, log.read_text().split("\n")):
        kind, name, when = line.split()
        events.setdefault(name, {})[kind] = float(when)
    assert len(events) == count and all("end" in e for e in events.values()), events
    return sorted(((name, e["start"], e["end"]) for name, e in events.items()), key=lambda item: item[1])


def most_at_once(spans: list[tuple[str, float, float]]) -> int:
    points = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    running = peak = 0
    for _, change in points:
        running += change
        peak = max(peak, running)
    return peak


# ---- The queue ----------------------------------------------------------------------------------------------------

SUBMIT = """
import sys, time
sys.path.insert(0, {repo!r})
from pipeline.run_queue import RunQueue
queue = RunQueue({queue!r}, command=[sys.executable, {worker!r}])
while time.time() < {at}:
    time.sleep(0.001)
queue.submit({run!r})
queue.dispatch(2)
"""


def test_six_simultaneous_submissions_never_run_more_than_the_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "2")
    runs = fake_runs(tmp_path / "runs", 6, sleep=1.0)
    at = time.time() + 1.5  # six processes, released at the same moment: six sessions pressing Start
    sessions = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SUBMIT.format(repo=str(REPO), queue=str(tmp_path / "q"), worker=WORKER, at=at, run=str(run)),
            ]
        )
        for run in runs
    ]
    assert all(session.wait(timeout=60) == 0 for session in sessions)
    spans = intervals(tmp_path / "runs", 6)
    assert most_at_once(spans) == 2, spans  # the cap is used, and never exceeded
    queue = RunQueue(tmp_path / "q")
    assert queue.holders() == [] and all(not queue.is_pending(run) for run in runs)


def test_runs_start_in_ticket_order_and_the_queue_moves_on_by_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "1")
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 4, sleep=0.3)
    for run in reversed(runs):  # tickets in the order submitted, whatever the names
        queue.submit(run)
    assert queue.dispatch(1) == [1]  # one slot: only the first ticket starts; each run starts the next as it ends
    spans = intervals(tmp_path / "runs", 4)
    assert [name for name, _, _ in spans] == [run.name for run in reversed(runs)]
    assert most_at_once(spans) == 1


def test_a_full_queue_is_refused_clearly(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 3)
    queue.submit(runs[0], limit=2)
    queue.submit(runs[1], limit=2)
    with pytest.raises(RetrainError, match=r"training queue is full \(2 runs waiting"):
        queue.submit(runs[2], limit=2)
    assert not queue.is_pending(runs[2])


def test_finished_runs_are_reaped_not_left_as_zombies(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "2")
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 2, sleep=0.2)
    for run in runs:
        queue.submit(run)
    queue.dispatch(2)  # this test process is the parent of both
    pids = [json.loads((run / "status.json").read_text())["pid"] for run in runs]
    intervals(tmp_path / "runs", 2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    states = {
        pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        for pid in pids
        if Path(f"/proc/{pid}").exists()
    }
    assert not states, f"left behind (Z = zombie): {states}"


def test_a_dispatcher_killed_between_claim_and_start_loses_nothing_and_starts_nothing_twice(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    first, second = fake_runs(tmp_path / "runs", 2, sleep=0.2)
    queue.submit(first)
    queue.submit(second)
    assert queue._claim_next() == (1, str(first))  # ...and the dispatcher dies here, before starting it
    assert queue.dispatch(1) == [1]  # the claim is undone: ticket 1 keeps its place and starts
    intervals(tmp_path / "runs", 2)  # and then ticket 2, each once
    # Killed after starting the run but before recording it: the run holds its ticket's lock, so it counts.
    third = fake_runs(tmp_path / "more", 1)[0]
    queue.submit(third)
    ticket, _ = queue._claim_next()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
            str(tmp_path / "q" / "tickets" / f"{ticket}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert queue.dispatch(1) == [] and [h["ticket"] for h in queue.holders()] == [ticket]
    finally:
        holder.kill()
        holder.wait()
    assert queue.dispatch(1) == [ticket]  # its process gone without getting going: started again, once
    intervals(tmp_path / "more", 1)


def test_a_waiting_run_knows_its_place_and_an_estimate(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    runs = fake_runs(tmp_path / "runs", 3)
    for run in runs:
        queue.submit(run)
    assert queue.place(runs[2], 1).position == 3 and queue.place(runs[2], 1).estimate_seconds is None
    with queue._db() as db:  # two earlier runs took 100 s each
        db.execute(
            "INSERT INTO tickets (run_dir, state, submitted, started, finished) VALUES "
            "('old1', 'finished', 0, 0, 100), ('old2', 'finished', 0, 200, 300)"
        )
    place = queue.place(runs[2], 1)
    assert (place.position, place.waiting, place.running, place.estimate_seconds) == (3, 3, 0, 200.0)
    assert queue.place(runs[2], 2).estimate_seconds == 100.0
    assert _wait_estimate(1, [30.0], 1, 100.0) == 70.0  # the running one has 70 s to go
    queue.withdraw(runs[0])
    assert queue.place(runs[0], 1) is None and queue.place(runs[2], 1).position == 2


def test_app_runs_wait_in_the_data_roots_queue_and_a_full_queue_refuses(root, monkeypatch):
    from pipeline.runs import cancel_run, refreshed_status
    from pipeline.studio.launch import app_queue, queue_place, start_run
    from pipeline.studio.next_run import working_config
    from pipeline.studio.workspaces import new_token, open_workspace

    monkeypatch.setenv("RETRAIN_STUDIO_MAX_QUEUED", "2")
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])  # every slot is taken
    first, second = open_workspace(new_token()), open_workspace(new_token())
    for workspace in (first, second):
        workspace.update_state(dataset={"image_dir": str(root)})
    waiting = [start_run(first, working_config(first)), start_run(second, working_config(second))]
    assert app_queue().folder == root / "queue"  # the data root's own slots, not the machine's
    assert [refreshed_status(run)["state"] for run in waiting] == ["queued", "queued"]  # a row, no process
    assert queue_place(waiting[1]).position == 2
    with pytest.raises(RetrainError, match="queue is full"):
        start_run(second, working_config(second))
    assert len(list(second.runs.iterdir())) == 1, "a refused run leaves no folder"
    cancel_run(waiting[0].path)
    assert refreshed_status(waiting[0])["state"] == "cancelled" and queue_place(waiting[1]).position == 1


def test_the_train_page_and_sidebar_show_a_waiting_runs_place(root, monkeypatch):
    from apptest_pages import open_app
    from imagegen import make_class_folders

    from pipeline.studio.launch import app_queue, start_run
    from pipeline.studio.next_run import working_config
    from pipeline.studio.workspaces import new_token, open_workspace

    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "1")
    images = make_class_folders(root / "colours", {"red": 3, "blue": 3})
    queue = app_queue()
    training = fake_runs(root / "elsewhere", 1)[0]  # a stranger's run holds the only slot
    queue.submit(training)
    ticket, _ = queue._claim_next()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(queue.folder / "tickets" / f"{ticket}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        token = new_token()
        workspace = open_workspace(token)
        workspace.update_state(dataset={"image_dir": str(images)})
        run = start_run(workspace, working_config(workspace))
        at = open_app("pages/train.py", token)
        assert not at.exception, [e.value for e in at.exception]
        shown = " | ".join(str(e.value) for e in at.info)
        assert "another run is training now. Number 1 in line (1 waiting, 1 training); no estimate" in shown, shown
        assert "Number 1 in line" in " | ".join(str(e.value) for e in at.sidebar.caption)
        assert [h["ticket"] for h in queue.holders()] == [ticket]  # what holds the slot can be shown
        assert json.loads(run.status_file.read_text())["state"] == "queued"
    finally:
        holder.kill()
        holder.wait()


# ---- Disk --------------------------------------------------------------------------------------------------------


def test_the_workspace_quota_counts_runs_and_the_server_budget_counts_everyone(root, tmp_path, monkeypatch):
    from pipeline.studio.launch import start_run
    from pipeline.studio.next_run import working_config
    from pipeline.studio.uploads import save_upload
    from pipeline.studio.workspaces import new_token, open_workspace

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path / "cache"))  # the shared cache counts too: start empty
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", "2")
    first = open_workspace(new_token())
    save_upload(first, "a.csv", b"x" * 1_000_000)
    (first.runs / "run-20240101-000000-abcd").mkdir()
    (first.runs / "run-20240101-000000-abcd" / "model.keras").write_bytes(b"m" * 1_000_000)
    with pytest.raises(RetrainError, match=r"b\.csv: this workspace would take 2 MB, over its quota of 2 MB"):
        save_upload(first, "b.csv", b"y" * 300_000)  # the run counts, not only the uploads
    assert not list(first.uploads.glob("*b.csv"))
    first.update_state(dataset={"image_dir": str(root)})
    with pytest.raises(RetrainError, match="a new run: this workspace would take"):
        start_run(first, working_config(first))
    assert not list(first.runs.glob("run-2026*")) and len(list(first.runs.iterdir())) == 1
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_QUOTA_MB", "100")
    monkeypatch.setenv("RETRAIN_STUDIO_DISK_BUDGET_MB", "3")
    second = open_workspace(new_token())  # a fresh visit: a new workspace, but the same server
    save_upload(second, "c.csv", b"z" * 900_000)
    with pytest.raises(RetrainError, match=r"the server's disk space for all users is used up"):
        save_upload(second, "d.csv", b"w" * 500_000)
    (tmp_path / "cache" / "bottlenecks").mkdir(parents=True)
    (tmp_path / "cache" / "bottlenecks" / "bottlenecks.sqlite").write_bytes(b"b" * 1_000_000)
    monkeypatch.setenv("RETRAIN_STUDIO_DISK_BUDGET_MB", "4")
    with pytest.raises(RetrainError, match=r"the server's disk space for all users is used up"):
        save_upload(second, "e.csv", b"v" * 500_000)  # the shared bottleneck cache counts


def test_idle_workspaces_expire_but_never_active_or_foreign_folders(root, tmp_path, monkeypatch):
    from pipeline.runs import RunDir
    from pipeline.studio.expiry import expire_idle_workspaces
    from pipeline.studio.workspaces import MARKER, STATE_FILE, new_token, open_workspace

    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_TTL_DAYS", "7")
    idle, busy, recent = (open_workspace(new_token()) for _ in range(3))
    idle.update_state(dataset=None)
    run = RunDir(busy.runs / "run-20240101-000000-b0b0")
    run.path.mkdir()
    run.config.write_text("{}")
    run.write_status("training", 0.5, "training", pid=os.getpid())  # this process: alive
    base = root / "workspaces"
    foreign = base / new_token()  # token-shaped, but not made by us
    (foreign / "runs").mkdir(parents=True)
    elsewhere = tmp_path / "precious"
    (elsewhere / "runs").mkdir(parents=True)
    (elsewhere / MARKER).touch()
    link = base / new_token()
    link.symlink_to(elsewhere)
    (base / "notes").mkdir()
    long_ago = time.time() - 30 * 86400
    for path in [*idle.path.rglob("*"), *busy.path.rglob("*"), *foreign.rglob("*"), *elsewhere.rglob("*")]:
        os.utime(path, (long_ago, long_ago), follow_symlinks=False)
    assert (idle.path / STATE_FILE).exists()
    assert expire_idle_workspaces() == [idle.token]
    assert not idle.path.exists() and busy.path.is_dir() and recent.path.is_dir() and foreign.is_dir()
    assert elsewhere.is_dir() and (elsewhere / MARKER).exists() and link.is_symlink() and (base / "notes").is_dir()
    run.write_status("done", 1.0, "done")
    os.utime(run.status_file, (long_ago, long_ago))
    os.utime(busy.path / MARKER, (long_ago, long_ago))
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_TTL_DAYS", "0")
    assert expire_idle_workspaces() == []  # 0: never
    monkeypatch.setenv("RETRAIN_STUDIO_WORKSPACE_TTL_DAYS", "7")
    assert expire_idle_workspaces() == [busy.token]  # its run has finished: now it may go


# ---- Memory ------------------------------------------------------------------------------------------------------


def test_concurrent_decodes_wait_for_the_shared_pixel_budget(tmp_path, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from imagegen import class_image, write_image
    from PIL import ImageFile

    from pipeline import images

    data = (write_image(tmp_path / "budget.png", class_image("red", 0, (400, 300)))).read_bytes()
    real_load, lock, now, peak = ImageFile.ImageFile.load, threading.Lock(), [0], [0]

    def slow_load(self):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        try:
            return real_load(self)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    for budget, most in [(120_000, 1), (360_000, 3)]:  # room for one image at a time, then for three
        monkeypatch.setenv("RETRAIN_STUDIO_DECODE_BUDGET_PIXELS", str(budget))
        peak[0] = 0
        with ThreadPoolExecutor(6) as pool:
            shapes = list(pool.map(lambda _: images.decode_image(data).shape, range(6)))
        assert shapes == [(300, 400, 3)] * 6 and peak[0] == most, (budget, peak[0])
    monkeypatch.setenv("RETRAIN_STUDIO_DECODE_BUDGET_PIXELS", "1000")  # smaller than one image: it decodes alone
    assert images.decode_image(data).shape == (300, 400, 3) and images.decode_budget().in_use == 0


MEMORY_CHILD = """
import io, json, os, resource, sys
sys.path.insert(0, {repo!r})
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from pipeline.images import decode_image
from pipeline.studio.hosting import use_hosted_defaults
use_hosted_defaults()
buffer = io.BytesIO()
Image.new("RGBA", (4000, 3000), (10, 200, 30, 100)).save(buffer, "PNG", compress_level=1)
data = buffer.getvalue()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda _: decode_image(data).shape, range(4)))
print(json.dumps({{"added_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}}))
"""


def test_four_huge_decodes_at_once_stay_near_one_images_memory():
    """Four 12 MP RGBA PNGs in four threads, the budget room for one: well under four images' ~600 MB."""
    env = {**os.environ, "RETRAIN_STUDIO_MAX_PIXELS": "12000000"}
    env.pop("RETRAIN_STUDIO_DECODE_BUDGET_PIXELS", None)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD.format(repo=str(REPO))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    added = json.loads(done.stdout.strip().splitlines()[-1])["added_mb"]
    assert added < 350, f"decoding added {added:.0f} MB"


# ---- Privacy -------------------------------------------------------------------------------------------------------


def test_uploaded_photos_are_cached_per_workspace_so_no_run_reveals_anothers_uploads(
    root, tmp_path, tiny_backbone_file
):
    from imagegen import make_class_folders, make_zip

    from pipeline.backbones import load_backbone
    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks
    from pipeline.dataset import load_dataset
    from pipeline.settings import default_bottleneck_dir
    from pipeline.studio.launch import bottleneck_folder
    from pipeline.studio.uploads import dataset_from_zip
    from pipeline.studio.workspaces import new_token, open_workspace

    photos = make_zip(make_class_folders(tmp_path / "photos", {"red": 3, "blue": 3}), tmp_path / "photos.zip")
    backbone = load_backbone(str(tiny_backbone_file), "features")
    reused = []
    for workspace in (open_workspace(new_token()), open_workspace(new_token())):  # two strangers, same photos
        config = dataset_from_zip(workspace, "photos.zip", photos.read_bytes())
        folder = bottleneck_folder(workspace, config)
        assert folder.is_relative_to(workspace.path)
        rows = load_dataset(config).usable()
        result = cache_bottlenecks([ExtractItem(r.path, r.sha256) for r in rows.itertuples()], backbone, folder)
        reused.append(result.reused)
    assert reused == [0, 0], "the second stranger's run must not find the first one's photos"
    server = make_class_folders(root / "shared-photos", {"red": 2, "blue": 2})
    from pipeline.config import DatasetConfig

    assert bottleneck_folder(workspace, DatasetConfig(image_dir=str(server))) == default_bottleneck_dir()


# ---- Names ---------------------------------------------------------------------------------------------------------

HOSTILE = ["[click me](https:evil.example)", "![pixel](https:evil.example/p.png)", ":red[alarm] <b>x</b>"]


def test_user_supplied_names_are_shown_as_plain_text(root, tmp_path):
    from apptest_pages import open_app
    from imagegen import make_class_folders, write_labels_csv

    from pipeline.studio.workspaces import new_token, open_workspace

    images = make_class_folders(root / "[home](https:evil.example)", {"red": 3, "blue": 3, "green": 3})
    rows = [(path.name, HOSTILE[index // 3]) for index, path in enumerate(sorted(images.rglob("*.jpg")))]
    labels = write_labels_csv(images / "labels.csv", rows)
    token = new_token()
    open_workspace(token)
    workspace = open_workspace(token)
    workspace.update_state(dataset={"image_dir": str(images), "label_csv": str(labels)})
    for page in ("pages/dataset.py", "pages/explore.py"):
        at = open_app(page, token)
        assert not at.exception, [e.value for e in at.exception]
        markdown = [
            str(e.value)
            for kind in ("markdown", "caption", "subheader", "info", "warning", "error")
            for e in getattr(at, kind)
        ] + [str(e.value) for e in at.sidebar.markdown]
        for text in markdown:
            assert "](" not in text.replace("\\](", "") and ":red[" not in text, text
        # Shown as typed: every Markdown character escaped, nothing else changed.
        assert any(
            "\\[home\\]" in text and "[home](https:evil.example)" in re.sub(r"\\(.)", r"\1", text) for text in markdown
        ), markdown
    assert any("\\[click me\\]" in text for text in markdown), markdown  # a class name, escaped, on Explore
    figures = " ".join(json.dumps(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart"))
    assert "&lt;b&gt;x&lt;/b&gt;" in figures and "<b>x</b>" not in figures


def test_a_folder_name_too_long_for_the_file_system_is_a_clear_error(root):
    from streamlit.testing.v1 import AppTest

    from pipeline.studio.server_folders import resolve_server_folder
    from pipeline.studio.workspaces import new_token

    for name in ("a" * 300, "b" * 200 + "/" + "c" * 300, "x/" * 3000):
        with pytest.raises(RetrainError, match="cannot be used as a folder: File name too long|no such folder") as err:
            resolve_server_folder(name)
        assert len(str(err.value)) < 250, "the message shows the start of the name, not all of it"
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["ws"] = new_token()
    at.run()
    at.text_input(key="server_folder").set_value("a" * 300).run()
    [button for button in at.button if button.label == "Use this folder"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "cannot be used as a folder" in " ".join(str(e.value) for e in at.error)


def test_a_damaged_queue_file_is_set_aside_with_a_message_and_the_next_submission_works(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    run = fake_runs(tmp_path / "runs", 1)[0]
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "queue.sqlite").write_bytes(b"this is not a database, " * 100)
    with pytest.raises(RetrainError, match="queue file was damaged .* set aside as queue.sqlite.damaged-"):
        queue.submit(run)
    assert queue.submit(run) == 1 and queue.is_pending(run)
    assert len(list((tmp_path / "q").glob("queue.sqlite.damaged-*"))) == 1


def test_a_queue_file_damaged_in_its_middle_is_set_aside_too(tmp_path):
    queue = RunQueue(tmp_path / "q", command=[sys.executable, WORKER])
    for index in range(150):
        queue.submit(tmp_path / "runs" / f"run-{index:04d}-{'x' * 400}", limit=1000)
    path = tmp_path / "q" / "queue.sqlite"
    data = bytearray(path.read_bytes())
    assert len(data) > 40_000 and data[:16] == b"SQLite format 3\x00"
    data[8192:32768] = b"\xa5" * (32768 - 8192)  # the header stays intact
    path.write_bytes(bytes(data))
    with pytest.raises(RetrainError, match="damaged"):
        queue.place(tmp_path / "runs" / "run-0149", 1)
        queue.submit(tmp_path / "runs" / "another")
    assert queue.submit(tmp_path / "runs" / "another") == 1
