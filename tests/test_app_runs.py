"""AppTest of the pages around a run: Train, Evaluate, Predict, Runs — on a real run made with a tiny backbone."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import plotly.express as px
import pytest
from apptest_pages import open_app
from imagegen import class_image, make_class_folders
from streamlit.testing.v1 import AppTest

from pipeline.config import DatasetConfig, RunConfig, apply_preset
from pipeline.progress import Progress
from pipeline.runs import RunDir
from pipeline.studio.run_history import workspace_runs
from pipeline.studio.workspaces import new_token, open_workspace

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
CLASSES = {"red": 14, "blue": 14, "green": 14}
# Run folder names as the app makes them (find_run accepts nothing else).
FIRST, FAILED, QUEUED, SECOND = (
    f"run-20240101-00000{i}-{tail}" for i, tail in enumerate(["f125", "fa11", "0ed0", "5ec0"])
)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_backbone_file):
    """A data root with one workspace holding a generated dataset and a finished run of it (tiny backbone)."""
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
        token = new_token()
        workspace = open_workspace(token)
        images = make_class_folders(workspace.uploads / "colours", CLASSES)
        bottlenecks = tmp_path_factory.mktemp("bottlenecks")
        run_dir = workspace.runs / FIRST
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "train",
                "--image_dir",
                str(images),
                "--output_dir",
                str(run_dir),
                "--architecture",
                str(tiny_backbone_file),
                "--bottleneck_layer",
                "features",
                "--epochs",
                "20",
                "--bottleneck_dir",
                str(bottlenecks),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        config = apply_preset(RunConfig(), "Quick")
        config.train.architecture, config.train.bottleneck_layer = str(tiny_backbone_file), "features"
        config.output.bottleneck_dir = str(bottlenecks)
        workspace.update_state(
            dataset=dataclasses.asdict(DatasetConfig(image_dir=str(images))),
            run=run_dir.name,
            dataset_summary={"name": "colours", "images": 42, "classes": 3},
            config=config.to_dict(),
        )
        yield {"token": token, "workspace": workspace, "run": RunDir(run_dir), "images": images, "root": root}


def app(token: str, page: str) -> AppTest:
    at = open_app(page, token, timeout=90)
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    """What the elements say, as the user reads it (Markdown escapes of user text removed)."""
    return re.sub(r"\\(.)", r"\1", " | ".join(str(element.value) for element in elements))


def buttons(at: AppTest, label: str):
    return [button for button in at.button if button.label == label]


def fake_run(workspace, name: str, **status) -> RunDir:
    """A run folder with a config and the given status.json, as the engine would leave it."""
    run = RunDir(workspace.runs / name)
    run.path.mkdir(parents=True, exist_ok=True)
    RunConfig().save(run.config)
    run.write_status(**status)
    return run


@contextlib.contextmanager
def current_run(studio, **status):
    """A run in progress as the current one: its status.json (with a live pid) and the workspace pointing at it; the
    first run is current again afterwards and this run's folder is gone."""
    workspace = open_workspace(studio["token"])
    waiter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = fake_run(workspace, QUEUED, pid=waiter.pid, **status)
    try:
        workspace.update_state(run=QUEUED)
        yield run
    finally:
        waiter.kill()
        waiter.wait()
        workspace.update_state(run=FIRST)
        shutil.rmtree(run.path, ignore_errors=True)


def jpeg(label: str, index: int) -> bytes:
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(class_image(label, index, (48, 40), seed=99)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_train_page_shows_a_finished_run_and_leads_to_evaluate(studio):
    at = app(studio["token"], "pages/train.py")
    # 42 photos hold out a handful for testing: the score is shown with a warning, not as a green success.
    assert "Finished: test accuracy" in texts(at.warning) and "Too few test images" in texts(at.warning)
    assert "Finished" not in texts(at.success)
    assert "trained on colours · 42 images · 3 classes" in texts(at.caption), "the run's own dataset"
    assert at.get("plotly_chart"), "loss and accuracy curves"
    for chart in at.get("plotly_chart"):  # legends under the plots: beside them they squeeze a phone's plot
        assert json.loads(chart.proto.spec)["layout"]["legend"]["orientation"] == "h"
    assert "Finished" in texts(at.sidebar.markdown)
    # One primary button: the next step. Training again is offered, but not as the thing to press.
    assert buttons(at, "Start training")[0].proto.type == "secondary"
    assert buttons(at, "Next: Evaluate")[0].proto.type == "primary"
    assert "The last run is finished" in texts(at.caption)
    buttons(at, "Next: Evaluate")[0].click().run()
    assert at.title[0].value == "Evaluate"


def test_a_failed_run_shows_the_engines_message_not_a_traceback(studio):
    workspace = open_workspace(studio["token"])
    fake_run(
        workspace,
        FAILED,
        state="failed",
        message="class 'red' has 1 usable image(s); each class needs at least 2",
        pid=os.getpid(),
    )
    workspace.update_state(run=FAILED)
    try:
        at = app(studio["token"], "pages/train.py")
        assert "The run failed: class 'red' has 1 usable image(s)" in texts(at.error)
        assert not at.exception and "Traceback" not in texts(at.error)
        assert buttons(at, "Start training"), "a failed run can be started again"
    finally:
        workspace.update_state(run=FIRST)
        shutil.rmtree(workspace.runs / FAILED)


def test_a_queued_run_says_it_waits_for_a_slot(studio):
    workspace = open_workspace(studio["token"])
    waiter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Just launched: queued, but not (yet) told to wait for a slot.
        run = fake_run(workspace, QUEUED, state="queued", step="waiting to start", pid=waiter.pid)
        workspace.update_state(run=QUEUED)
        at = app(studio["token"], "pages/train.py")
        assert "Waiting for a free training slot" not in texts(at.info)
        assert "Queued: waiting to start" in texts(at.subheader)
        # The run says it waits (as pipeline.retrain does every second while all slots are taken).
        run.write_status("queued", 0.0, "waiting for a free training slot", waiting=True)
        at.run()
        assert "Waiting for a free training slot" in texts(at.info)
        assert "waiting for a free training slot" in texts(at.sidebar.markdown)
        assert buttons(at, "Cancel this run") and buttons(at, "Start another run")
    finally:
        waiter.kill()
        waiter.wait()
        workspace.update_state(run=FIRST)
        shutil.rmtree(workspace.runs / QUEUED)


def test_bad_settings_and_a_full_queue_are_refused_with_a_message(studio):
    token = new_token()
    workspace = open_workspace(token)
    state = studio["workspace"].state()
    config = RunConfig.from_dict(state["config"])
    config.train.epochs = 0  # saved before the ranges existed, say
    workspace.update_state(dataset=state["dataset"], dataset_summary=state["dataset_summary"], config=config.to_dict())
    at = app(token, "pages/train.py")
    buttons(at, "Start training")[0].click().run()
    assert "train.epochs = 0 is out of range" in texts(at.error) and not workspace_runs(workspace)
    config.train.epochs = 3
    workspace.update_state(config=config.to_dict())
    waiter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for name in (QUEUED, SECOND):
            fake_run(
                workspace, name, state="queued", step="waiting for a free training slot", waiting=True, pid=waiter.pid
            )
        workspace.update_state(run=SECOND)
        at.run()
        assert "2 run(s) of this workspace queued or training" in texts(at.sidebar.caption)
        buttons(at, "Start another run")[0].click().run()
        assert "already has 2 runs queued or training" in texts(at.error)
        assert len(workspace_runs(workspace)) == 2
    finally:
        waiter.kill()
        waiter.wait()


def test_a_run_deleted_in_another_tab_is_forgotten_not_a_crash(studio):
    token = new_token()
    workspace = open_workspace(token)
    workspace.update_state(**{k: v for k, v in studio["workspace"].state().items() if k != "run"})
    waiter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = fake_run(workspace, QUEUED, state="training", progress=0.3, step="training", pid=waiter.pid)
        workspace.update_state(run=QUEUED)
        at = app(token, "pages/train.py")
        assert "Training" in texts(at.subheader)
        shutil.rmtree(run.path)  # the other tab cancels and deletes it
        at.run()
        assert not at.exception and f"Run `{QUEUED}` was deleted" in texts(at.warning)
        assert "No run yet" in texts(at.info) and workspace.state()["run"] is None
        fake_run(workspace, SECOND, state="done", pid=os.getpid())
        workspace.update_state(run=SECOND)
        at = app(token, "pages/runs.py")
        shutil.rmtree(workspace.runs / SECOND)
        at.run()
        assert not at.exception and f"Run `{SECOND}` was deleted" in texts(at.warning)
        assert "No runs yet" in texts(at.info)
    finally:
        waiter.kill()
        waiter.wait()


def test_before_a_first_run_the_wait_for_the_backbone_is_the_one_the_run_then_says(studio):
    # Seen in a browser walk: the page promised "a few seconds" for preparing the backbone, then the run's own line
    # said "a minute or more; later runs reuse it" (pipeline/backbones/runtime.py; it took 20 s on two cores).
    token = new_token()
    workspace = open_workspace(token)
    workspace.update_state(**{k: v for k, v in studio["workspace"].state().items() if k != "run"})
    at = app(token, "pages/train.py")
    [notice] = [text for text in texts(at.info).split(" | ") if "No run yet" in text]
    assert "a few seconds" not in notice and "a minute or more; later runs reuse it" in notice, notice


def test_start_training_runs_in_the_background_and_can_be_watched(studio):
    token = new_token()
    workspace = open_workspace(token)
    workspace.update_state(**{k: v for k, v in studio["workspace"].state().items() if k != "run"})
    at = app(token, "pages/train.py")
    assert "No run yet" in texts(at.info)
    buttons(at, "Start training")[0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    run = RunDir(workspace.runs / workspace.state()["run"])
    assert RunConfig.load(run.config).dataset.image_dir == str(studio["images"])
    assert "colours · 42 images · 3 classes" in texts(at.caption), "a queued run already names its dataset"
    deadline = time.monotonic() + 180
    while run.status().get("state") not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
    assert run.status().get("state") == "done", run.status()
    at.run()
    assert "Finished: test accuracy" in texts(at.warning) + texts(at.success)
    assert "trained on colours · 42 images · 3 classes" in texts(at.caption)
    assert "Finished" in texts(at.sidebar.markdown), "the sidebar agrees with the page"


def test_cancel_stops_a_running_run(studio):
    token = new_token()
    workspace = open_workspace(token)
    state = studio["workspace"].state()
    config = RunConfig.from_dict(state["config"])
    config.train.epochs, config.train.early_stopping = 5000, 0
    workspace.update_state(dataset=state["dataset"], dataset_summary=state["dataset_summary"], config=config.to_dict())
    at = app(token, "pages/train.py")
    buttons(at, "Start training")[0].click().run()
    run = RunDir(workspace.runs / workspace.state()["run"])
    deadline = time.monotonic() + 120
    while run.status().get("state") not in ("caching", "training") and time.monotonic() < deadline:
        time.sleep(0.5)
    at.run()
    buttons(at, "Cancel this run")[0].click().run()
    while run.status().get("state") not in ("cancelled", "failed", "done") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.status()["state"] == "cancelled", run.status()
    at.run()
    assert "Cancelled" in texts(at.warning) and not at.exception


def test_evaluate_shows_scores_confusion_cells_and_a_download(studio):
    at = app(studio["token"], "pages/evaluate.py")
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Test accuracy"].endswith("%") and metrics["Classes"] == "3"
    assert "Top-5 accuracy" not in metrics, "with 3 classes it would always be 100%"
    assert metrics["Mistakes"].isdigit()
    assert list(at.dataframe[0].value["Class"]) == sorted(CLASSES)
    assert at.get("download_button"), "the model download is on the page"
    at.selectbox(key="cell_true").set_value("red")
    at.selectbox(key="cell_predicted").set_value("red").run()
    assert not at.exception
    listed = [m.value for m in at.markdown if "photo(s)** of *red* predicted as *red*" in m.value]
    assert listed and not listed[0].startswith("**0 ")
    # Every right answer comes from the report, with its confidence (no dataset re-read).
    report = json.loads(studio["run"].report.read_text())
    right = [p for p in report["predictions"] if p["true_label"] == p["predicted_label"] == "red"]
    assert listed[0].startswith(f"**{len(right)} photo(s)")
    cell = next(image for image in at.image if image.captions and image.captions[0].startswith("red → red ("))
    assert len(cell.captions) == min(len(right), 24) and all(c.endswith("%)") for c in cell.captions)


def blocks(node):
    """Every layout block under an AppTest node (a block's children are keyed by position)."""
    yield node
    for child in getattr(node, "children", {}).values():
        if hasattr(child, "children"):
            yield from blocks(child)


def test_evaluate_fits_a_phone(studio):
    """At 390 px the four scores wrap 2 x 2 (one horizontal wrapping row, not four tall cards stacked by st.columns),
    and the per-class table keeps its class in view while its narrow bars scroll."""
    at = app(studio["token"], "pages/evaluate.py")
    rows = [block for block in blocks(at.main) if sum(child.type == "metric" for child in block.children.values()) == 4]
    assert len(rows) == 1, "the four scores sit in one block"
    flex = rows[0].proto.flex_container
    assert rows[0].proto.WhichOneof("type") == "flex_container" and flex.wrap
    assert flex.direction == flex.Direction.HORIZONTAL
    columns = json.loads(at.dataframe[0].proto.columns)
    assert columns["Class"]["pinned"] is True
    assert all(columns[name]["width"] == 80 for name in ("Precision", "Recall", "F1"))


def test_predict_gives_top_k_for_photos_and_errors_for_bad_files(studio, monkeypatch):
    # Uploads go through predict_bytes: decoded exactly as training decodes (JPEG draft included).
    monkeypatch.setattr("pipeline.predict.Predictor.predict_image", lambda *args: pytest.fail("decoded twice"))
    at = app(studio["token"], "pages/predict.py")
    at.file_uploader(key="predict_photos").upload("blue.jpg", jpeg("blue", 0), "image/jpeg")
    at.file_uploader(key="predict_photos").upload("broken.jpg", b"\xff\xd8\xff not really", "image/jpeg").run()
    assert not at.exception
    assert any("sure)" in m.value for m in at.markdown), "the top guess is named"
    assert len(at.get("plotly_chart")) == 1, "one top-k chart for the good photo"
    # Without plotly's toolbar: on a phone it covered the top guess's bar (a browser walk).
    assert json.loads(at.get("plotly_chart")[0].proto.config)["displayModeBar"] is False
    assert "broken.jpg" in texts(at.error)


def test_predict_a_zip_of_photos_to_csv(studio, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.jpg", jpeg("red", 2))
        archive.writestr("b.jpg", jpeg("green", 1))
        archive.writestr("notes.txt", "not a photo")
    at = app(studio["token"], "pages/predict.py")
    at.file_uploader(key="predict_zip").upload("batch.zip", buffer.getvalue(), "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert list(table["file"]) == ["a.jpg", "b.jpg", "notes.txt"]
    assert table.loc[2, "error"] and not table.loc[0, "error"]
    assert "3 files: 2 predicted, 1 with an error" in texts(at.success)
    workspace = studio["workspace"]
    [csv_path] = list((workspace.path / "predictions").glob("*-batch-*.csv"))
    assert csv_path.name.endswith(f"-{FIRST}-top3.csv")
    unpacked = next(workspace.uploads.glob("*batch.unpacked"))
    assert sorted(p.name for p in unpacked.rglob("*")) == ["a.jpg", "b.jpg", "notes.txt"], "the photos' folder stays"


def test_predict_from_the_camera(studio):
    at = app(studio["token"], "pages/predict.py")
    at.toggle(key="use_camera").set_value(True).run()
    at.camera_input(key="camera").upload("photo.jpg", jpeg("green", 1)).run()
    assert not at.exception
    assert any("sure)" in m.value for m in at.markdown)


def test_runs_lists_compares_downloads_and_deletes(studio):
    workspace = open_workspace(studio["token"])
    copy = workspace.runs / SECOND
    shutil.copytree(studio["run"].path, copy)
    config = RunConfig.load(copy / "config.json")
    config.train.epochs = 3
    config.save(copy / "config.json")
    at = app(studio["token"], "pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["Run"])[:2] == [SECOND, FIRST] and "Test accuracy" in table.columns
    assert set(table["Dataset"]) == {"colours · 42 images · 3 classes"}
    assert all(re.fullmatch(r"\d+\.\d%", value) for value in table["Test accuracy"]), list(table["Test accuracy"])
    assert "None" not in table.to_string() and "Queue wait" in table.columns
    assert {button.label for button in at.get("download_button")} >= {
        "Bundle (.zip)",
        "Keras model",
        "TFLite model",
        "labels.txt",
        "report.json",
        "SavedModel (.zip)",
    }
    at.multiselect(key="compare").set_value([FIRST, SECOND]).run()
    compared = at.table[0].value
    assert list(compared.columns) == [FIRST, SECOND]
    assert compared.loc["Dataset", FIRST] == "colours · 42 images · 3 classes", "full values, never cut"
    [accuracy] = [chart for chart in at.get("plotly_chart") if "Accuracy" in chart.proto.spec]
    assert accuracy.proto.spec.count(FIRST) and accuracy.proto.spec.count(SECOND), "both runs in one figure"
    differences = at.table[-1].value
    assert "Epochs (train.epochs)" in list(differences.index)  # Configure's words first, the config's name after
    at.selectbox(key="chosen_run").set_value(SECOND).run()
    buttons(at, "Delete…")[0].click().run()
    buttons(at, "Delete")[0].click().run()
    assert not at.exception
    assert not copy.exists()
    assert SECOND not in set(at.dataframe[0].value["Run"])


def test_comparing_a_best_accuracy_run_with_a_quick_one_names_both_presets(studio):
    # A newcomer who trained with Best accuracy, then Quick, compares them by the names they chose on Configure.
    workspace = open_workspace(studio["token"])
    best, quick = "run-20240101-000009-b357", "run-20240101-000010-90c1"
    for name, preset in [(best, "Best accuracy"), (quick, "Quick")]:
        shutil.copytree(studio["run"].path, workspace.runs / name)
        config = RunConfig.load(workspace.runs / name / "config.json")
        config.train.bottleneck_layer = None  # the tiny backbone's; a built-in one needs none
        apply_preset(config, preset).save(workspace.runs / name / "config.json")
    try:
        at = app(studio["token"], "pages/runs.py")
        table = at.dataframe[0].value.set_index("Run")
        assert (table.loc[best, "Settings"], table.loc[quick, "Settings"]) == ("Best accuracy", "Quick")
        assert table.loc[FIRST, "Settings"] == "Custom", "its own .keras backbone is no preset"
        at.multiselect(key="compare").set_value([best, quick]).run()
        compared = at.table[0].value
        assert list(compared.loc["Settings"]) == ["Best accuracy", "Quick"]
        assert list(compared.loc["Backbone"]) == ["efficientnet_lite0 + efficientnet_lite1", "efficientnet_lite0"]
        # Their curves: the legend of two long run names goes under the plot (beside it, it squeezed a phone's plot
        # to a sliver), and the two runs differ in colour, not only in shade: colours of our own palette (plotly's
        # default ones are swapped by Streamlit's theme for two shades of blue).
        [accuracy] = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if "Accuracy" in c.proto.spec]
        assert accuracy["layout"]["legend"]["orientation"] == "h"
        colours = {trace["legendgroup"].split(",")[0]: trace["line"]["color"] for trace in accuracy["data"]}
        assert colours[best] != colours[quick] and {colours[best], colours[quick]} <= set(px.colors.qualitative.D3)
        # Predict's model list: runs of one dataset read alike but for their preset and score.
        at = AppTest.from_file(APP, default_timeout=90)
        at.query_params["ws"] = studio["token"]
        at.switch_page("pages/predict.py")
        at.session_state["predict_run"] = FIRST  # its tiny backbone loads in a blink; the copies say they are Lite
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        options = at.selectbox(key="predict_run").options
        for name, preset in [(best, "Best accuracy"), (quick, "Quick"), (FIRST, "Custom")]:
            pattern = rf"{name} · colours · 42 images · 3 classes · {preset} · test accuracy \d+\.\d%"
            assert any(re.fullmatch(pattern, option) for option in options), (pattern, options)
        # A phone cuts the chosen name short: the caption under it says the preset and score too.
        assert re.search(
            r"Trained on colours · 42 images · 3 classes · Custom · test accuracy \d+\.\d%", texts(at.caption)
        )
    finally:
        for name in (best, quick):
            shutil.rmtree(workspace.runs / name)


def test_another_session_sees_none_of_these_runs(studio):
    stranger = new_token()
    at = app(stranger, "pages/runs.py")
    assert "No runs yet" in texts(at.info)
    at = app(stranger, "pages/evaluate.py")
    assert "No model yet" in texts(at.info)
    assert not list((studio["root"] / "workspaces" / stranger / "runs").iterdir())


def test_the_sidebar_and_page_follow_a_run_to_its_end(studio):
    """The Train page and the sidebar read the same status: a run that ends shows its end in both (the browser test
    shows it happens without a click)."""
    with current_run(studio, state="training", step="training", progress=0.75) as run:
        at = app(studio["token"], "pages/train.py")
        assert "Training" in texts(at.subheader) and "Training" in texts(at.sidebar.markdown)
        run.write_status("done", 1.0, "done", test_accuracy=0.5)
        at.run()
        assert "Finished" in texts(at.subheader) and "Finished" in texts(at.sidebar.markdown)
        assert not at.exception


def test_train_shows_one_line_per_stage_and_a_whole_run_estimate(studio):
    from pipeline.stage_progress import StageBoard, run_stage_keys

    board = StageBoard(run_stage_keys(["keras"], augmenting=False, fine_tuning=False))
    board.end("dataset")
    board.end("backbone")
    board.from_progress("caching", Progress("caching", 0, 0, 0.0, None, "all 42 cached"))  # nothing to do: no "0/0"
    board.advance("training", 120, 300, 40.0, 4.5, unit="steps")
    with current_run(studio, state="training", step="training", progress=0.75, **board.to_status()):
        at = app(studio["token"], "pages/train.py")
        lines = texts(at.markdown)
        assert (
            "reading each photo once with the backbone (saved for reruns): skipped — all 42 cached" in lines
            and "0/0" not in lines
        )
        assert "training: 120/300 steps (40.0/s, about 4 s left)" in lines
        assert "evaluating: waiting" in lines and "export keras: waiting" in lines
        assert [bar.proto.text for bar in at.get("progress")] == ["Whole run: at least 4 s left"]


def test_preparing_the_backbone_is_its_own_line_not_caching_at_zero(studio):
    # The first run with a backbone makes it ready for this server (a minute for the pair here) before any photo is
    # cached: the page shows that step's own line, not "caching 0/90" with a guess at why nothing moves.
    from pipeline.stage_progress import StageBoard, run_stage_keys

    board = StageBoard(run_stage_keys(["keras"], augmenting=False, fine_tuning=False))
    board.end("dataset")
    board.end("backbone")
    board.clock = lambda: time.time() - 40
    board.begin("preparing", message="first time on this server: building the model")
    with current_run(studio, state="caching", step="caching", **board.to_status()):
        at = app(studio["token"], "pages/train.py")
        lines = texts(at.markdown)
        assert re.search(r"preparing the backbone: working, 4\d s so far — first time on this server", lines), lines
        # The heading and the sidebar say the same, not "Reading every image" while no image is read yet.
        heading = "Preparing the backbone (first time on this server)"
        assert heading in texts(at.subheader) and heading in texts(at.sidebar.markdown), texts(at.subheader)
        assert "reading each photo once with the backbone (saved for reruns): waiting" in lines
        assert "(saved for reruns): 0/" not in lines


def test_a_skipped_preparing_line_says_why_without_the_word_bottleneck(studio):
    # Seen in a browser walk: after a likely-mistakes check had read every photo, the run's skipped "preparing the
    # backbone" line said "every bottleneck was in the cache", the one engine term left on a page of plain lines.
    from pipeline.stage_progress import StageBoard, run_stage_keys

    board = StageBoard(run_stage_keys(["keras"], augmenting=False, fine_tuning=False))
    board.end("dataset")
    board.end("backbone")
    board.skip("preparing", "not needed: every bottleneck was in the cache")  # pipeline/retrain.py's words
    board.from_progress("caching", Progress("caching", 0, 0, 0.0, None, "all 42 cached"))
    with current_run(studio, state="training", step="training", **board.to_status()):
        at = app(studio["token"], "pages/train.py")
        lines = texts(at.markdown)
        assert "preparing the backbone: skipped — not needed: every photo was already read by the backbone" in lines
        assert "bottleneck" not in lines, lines


def test_evaluate_and_runs_are_not_blocked_by_a_run_in_progress(studio):
    with current_run(studio, state="caching", step="caching"):  # the new run is the current one, not finished
        at = app(studio["token"], "pages/evaluate.py")
        assert f"Run `{QUEUED}` is not finished yet" in texts(at.info)
        metrics = {metric.label: metric.value for metric in at.metric}
        assert metrics["Test accuracy"].endswith("%"), "the latest finished run is shown"
        assert f"Run `{FIRST}` · trained on colours · 42 images · 3 classes" in texts(at.caption)
        assert "Too few test images" in texts(at.warning) and "accuracy" not in texts(at.success)
        at = app(studio["token"], "pages/runs.py")
        assert f"Run `{QUEUED}` is not finished yet" in texts(at.info)
        assert {QUEUED, FIRST} <= set(at.dataframe[0].value["Run"])


def test_the_runs_table_follows_a_run_to_its_end(studio):
    """The Runs table (a fragment that polls while a run is going) shows a queued run, then its end; the notice goes."""
    workspace = open_workspace(studio["token"])
    waiter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = fake_run(workspace, QUEUED, state="training", step="training", pid=waiter.pid, progress=0.5)
    try:
        at = app(studio["token"], "pages/runs.py")
        assert f"Run `{QUEUED}` is not finished yet" in texts(at.info)
        table = at.dataframe[0].value.set_index("Run")
        assert table.loc[QUEUED, "State"] == "Training", "the state in the words the sidebar uses"
        run.write_status("done", 1.0, "done", test_accuracy=0.5)
        at.run()
        assert not at.exception and "not finished yet" not in texts(at.info)
        table = at.dataframe[0].value.set_index("Run")
        assert table.loc[QUEUED, "State"] == table.loc[FIRST, "State"] == "Finished"
        assert table.loc[QUEUED, "Test accuracy"] == "50.0%"
    finally:
        waiter.kill()
        waiter.wait()
        shutil.rmtree(run.path)


def test_evaluate_chooses_among_finished_runs_and_names_downloads_by_run(studio):
    workspace = open_workspace(studio["token"])
    copy = workspace.runs / SECOND
    shutil.copytree(studio["run"].path, copy)
    try:
        at = app(studio["token"], "pages/evaluate.py")
        chooser = at.selectbox(key=f"finished_run:{SECOND}")
        assert chooser.value == FIRST, "the current run, finished, is shown first"
        chooser.set_value(SECOND).run()
        assert f"Run `{SECOND}`" in texts(at.caption)
        names = {button.label: button.proto.url for button in at.get("download_button")}
        assert set(names) == {"Download model (.keras)", "Download bundle (.zip)"}
    finally:
        shutil.rmtree(copy)


def test_configure_names_the_preset_until_a_setting_differs(studio):
    token = new_token()
    workspace = open_workspace(token)
    workspace.update_state(**{k: v for k, v in studio["workspace"].state().items() if k not in ("run", "config")})
    at = app(token, "pages/configure.py")
    assert "Settings: **Quick**" in texts(at.caption)
    at.number_input(key="knob.train.dropout").set_value(0.3).run()
    assert "Settings: **Quick (edited)**" in texts(at.caption)
    at.number_input(key="knob.train.epochs").set_value(3).run()
    assert "Settings: **Custom**" in texts(at.caption)
    at = app(token, "pages/train.py")
    assert "Custom: up to 3 epochs" in texts(at.markdown)


def test_too_few_test_photos_names_the_apps_control_not_the_cli_flag(studio):
    """The engine's warning names --testing_percentage (right on the CLI); Train and Evaluate name the app's button."""
    engine = json.loads(studio["run"].report.read_text())["test_split_warning"]
    assert "--testing_percentage" in engine, "the CLI's wording is the engine's, unchanged"
    for page, where in (("pages/train.py", "warning"), ("pages/evaluate.py", "warning")):
        shown = texts(getattr(app(studio["token"], page), where))
        assert "Too few test images" in shown, page
        assert "--testing_percentage" not in shown and "command line" not in shown, (page, shown)
        assert "on the Dataset page, 'Add photos or classes'" in shown and "held out for testing" in shown, shown
    at = app(studio["token"], "pages/dataset.py")
    assert buttons(at, "Add photos or classes"), "the control the warning names is on the Dataset page"


def test_every_download_says_what_it_is_for(studio):
    # Seen in a browser walk: seven buttons named by format (Keras, TFLite, SavedModel, preprocessing.json…) and
    # nothing to tell a newcomer which one to take.
    at = app(studio["token"], "pages/runs.py")
    downloads = {button.label: button.proto.help for button in at.get("download_button")}
    assert {"Bundle (.zip)", "Keras model", "TFLite model", "SavedModel (.zip)", "labels.txt"} <= set(downloads)
    assert all(downloads.values()), downloads
    assert "phones" in downloads["TFLite model"] and "Everything in one zip" in downloads["Bundle (.zip)"]
    assert "Not sure which to take? The bundle holds them all." in texts(at.caption)


def test_train_says_a_runs_stages_and_end_without_ml_jargon(studio):
    at = app(studio["token"], "pages/train.py")
    stages = texts(at.markdown)
    assert "reading each photo once with the backbone (saved for reruns): done" in stages
    assert "bottleneck" not in stages
    workspace = open_workspace(studio["token"])
    fake_run(workspace, FAILED, state="cancelled", message="cancelled; every bottleneck cached so far is kept")
    workspace.update_state(run=FAILED)
    try:
        at = app(studio["token"], "pages/train.py")
        assert "Cancelled: cancelled; every photo read so far is kept for the next run" in texts(at.warning)
    finally:
        workspace.update_state(run=FIRST)
        shutil.rmtree(workspace.runs / FAILED)


def test_the_runs_table_fits_a_desktop_and_keeps_the_rest_a_click_away(studio):
    """Beside the sidebar at 1400 px the main column is about 940 px: the table opens on what a user compares
    (run, state, accuracy, preset, when, dataset) in set widths that fit it; the other columns are one click away."""
    at = app(studio["token"], "pages/runs.py")
    table = at.dataframe[0]
    assert list(table.proto.column_order) == ["Run", "State", "Test accuracy", "Settings", "Started", "Dataset"]
    columns = json.loads(table.proto.columns)
    assert sum(columns[name]["width"] for name in table.proto.column_order) <= 940
    assert columns["Run"]["pinned"] is True, "on a phone, which run a row is stays in view"
    assert {"Backbone", "Duration", "Queue wait", "Max epochs"} <= set(table.value.columns), "all still there"
    at.button_group(key="runs_more_columns").set_value(["Duration", "Backbone"]).run()
    assert list(at.dataframe[0].proto.column_order)[6:] == ["Backbone", "Duration"]
