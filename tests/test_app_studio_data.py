"""AppTest of the data and model-use items of issue 11: a reopened workspace decodes nothing, near-duplicate groups
with their actions, the landing introduction, the imbalance rule, Predict's choice of model and its caution notes,
and read-only share links."""

from __future__ import annotations

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

import numpy as np
import pytest
from apptest_pages import open_app
from imagegen import class_image, make_class_folders, make_split_folders
from PIL import Image
from test_near_duplicates import _photo, _write_copies

import pipeline.dataset as dataset_module
from pipeline.config import DatasetConfig, RunConfig
from pipeline.dataset import load_overrides
from pipeline.runs import RunDir
from pipeline.shares import list_shares
from pipeline.studio.datasets import imbalance_advice
from pipeline.studio.predict_models import delete_workspace_run, model_choices, share_link, share_run
from pipeline.studio.workspaces import new_token, open_workspace

REPO = Path(__file__).resolve().parents[1]
OLD, NEW, OTHER = "run-20240101-000000-0001", "run-20240102-000000-0002", "run-20240103-000000-0003"


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    monkeypatch.delenv("RETRAIN_STUDIO_SAMPLES", raising=False)
    return root


def texts(elements) -> str:
    """What the elements say, as the user reads it (Markdown escapes of user text removed)."""
    return re.sub(r"\\(.)", r"\1", " | ".join(str(element.value) for element in elements))


def aged(root: Path) -> Path:
    """Every file given an mtime in the past, as photos copied in a while ago have (the check store trusts those)."""
    past = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (past, past))
    return root


def workspace_on(folder: Path) -> str:
    token = new_token()
    open_workspace(token).update_state(dataset=dataclasses.asdict(DatasetConfig(image_dir=str(folder))))
    return token


def test_a_reopened_workspace_shows_its_pages_without_decoding_an_image(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path / "cache"))  # a check store of this test's own
    decodes = {"n": 0}
    real = dataset_module.decode_image

    def counting(data, *args, **kwargs):
        decodes["n"] += 1
        return real(data, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "decode_image", counting)
    token = workspace_on(aged(make_class_folders(tmp_path / "photos", {"red": 9, "blue": 9})))
    first = open_app("pages/explore.py", token)
    assert not first.exception and decodes["n"] == 18, "the first read checks every photo"
    for page in ("pages/dataset.py", "pages/configure.py", "pages/explore.py"):  # a new tab: a new session
        again = open_app(page, token)
        assert not again.exception, [e.value for e in again.exception]
        assert decodes["n"] == 18, f"reopening {page} decoded photos again"
    assert {m.label: m.value for m in again.metric}["Usable images"] == "18"


def test_one_photo_re_encoded_ten_times_is_one_near_duplicate_group_with_actions(data_root, tmp_path):
    images = make_class_folders(tmp_path / "photos", {"red": 8, "blue": 8}, size=(64, 48))
    names = _write_copies(images / "daisy", _photo())
    token = workspace_on(images)
    at = open_app("pages/explore.py", token)
    assert not at.exception, [e.value for e in at.exception]
    assert "Near-duplicate groups: 1**" in texts(at.markdown)
    assert [len(image.proto.imgs) for image in at.image].count(10) == 1, "a thumbnail per copy"
    keep = at.selectbox(key="keep-near-0")
    keep.set_value(f"daisy/{names[3]}").run()
    at.button(key="dedupe-near-0").click().run()
    assert not at.exception
    overrides = open_workspace(token).state()["dataset"]["overrides"]
    assert sorted(load_overrides(overrides)["drop"]) == sorted(f"daisy/{name}" for name in names if name != names[3])
    assert "Near-duplicate groups: 0**" in texts(at.markdown), "the dropped copies leave the group"
    assert sorted(p.name for p in (images / "daisy").iterdir()) == sorted(names), "no photo deleted"


def test_a_group_split_across_classes_can_be_labelled_as_one(data_root, tmp_path):
    images = make_class_folders(tmp_path / "photos", {"red": 8, "blue": 8}, size=(64, 48))
    names = _write_copies(images / "daisy", _photo())
    shutil.move(images / "daisy" / names[0], images / "red" / names[0])
    token = workspace_on(images)
    at = open_app("pages/explore.py", token)
    at.selectbox(key="label-near-0").set_value("daisy").run()
    at.button(key="merge-near-0").click().run()
    assert not at.exception
    relabel = load_overrides(open_workspace(token).state()["dataset"]["overrides"])["relabel"]
    assert relabel[f"red/{names[0]}"] == "daisy" and len(relabel) == 10


def test_a_near_duplicate_groups_choices_each_get_a_column_that_stacks_on_a_phone(data_root, tmp_path):
    """Each choice sits over its own button in one of two st.columns (side by side on a desktop, stacked on a
    phone): in one wrapping row with the buttons, a phone squeezed the choice until its file name was cut."""
    images = make_class_folders(tmp_path / "photos", {"red": 8, "blue": 8}, size=(64, 48))
    names = _write_copies(images / "daisy", _photo())
    shutil.move(images / "daisy" / names[0], images / "red" / names[0])
    at = open_app("pages/explore.py", workspace_on(images))
    assert not at.exception, [e.value for e in at.exception]
    holding = [column for column in at.columns if column.selectbox and column.button]
    keeping = [c for c in holding if [s.key for s in c.selectbox] == ["keep-near-0"]]
    labelling = [c for c in holding if [s.key for s in c.selectbox] == ["label-near-0"]]
    assert len(keeping) == len(labelling) == 1, "each choice in a column of its own"
    assert [b.key for b in keeping[0].button] == ["dedupe-near-0"] and [b.key for b in labelling[0].button] == [
        "merge-near-0"
    ]
    assert at.selectbox(key="keep-near-0").label == "Photo to keep"
    assert at.selectbox(key="label-near-0").label == "Class for all of them"


def test_a_cancelled_check_says_what_is_kept_without_jargon(data_root, tmp_path):
    """The check's own message (the CLI's words) says "bottlenecks"; Explore says what that means for the user."""
    token = workspace_on(make_class_folders(tmp_path / "photos", {"red": 9, "blue": 9}))
    folder = open_workspace(token).path / "label-check"
    folder.mkdir()
    status = {"state": "cancelled", "step": "cancelled", "updated": time.time()}
    status["message"] = "cancelled; bottlenecks cached so far are kept"  # as label_check_job writes it
    (folder / "status.json").write_text(json.dumps(status))
    at = open_app("pages/explore.py", token)
    assert not at.exception, [e.value for e in at.exception]
    said = texts(at.info)
    assert "The last check was cancelled" in said and "the photos read so far are kept" in said, said
    assert "bottleneck" not in said


@pytest.mark.parametrize("damage", [b"", b'{"state": "do', "\u00e9t\u00e9".encode("latin-1"), b"[1, 2]"])
def test_a_damaged_check_record_is_a_clear_message_and_a_fresh_start(data_root, tmp_path, damage):
    token = workspace_on(make_class_folders(tmp_path / "photos", {"red": 9, "blue": 9}))
    folder = open_workspace(token).path / "label-check"
    folder.mkdir()
    for name in ("status.json", "results.json"):
        (folder / name).write_bytes(damage)
    at = open_app("pages/explore.py", token)
    assert not at.exception, [e.value for e in at.exception]
    message = texts(at.error)
    assert "status.json" in message or "results.json" in message, message
    assert "start the check again" in message, "says what to do"
    assert not at.button(key="find_mistakes").disabled, "a new check can be started"


def test_a_new_workspace_opens_with_a_short_introduction(data_root, tmp_path):
    at = open_app()
    intro = texts(at.markdown)
    assert "Teach a computer to tell your photos apart" in intro and "5. **Predict**" in intro
    assert "Your photos stay on this server" in texts(at.caption)
    token = workspace_on(make_class_folders(tmp_path / "photos", {"red": 9, "blue": 9}))
    assert "Teach a computer" not in texts(open_app(None, token).markdown), "not once a dataset is chosen"


def test_imbalance_is_judged_on_the_whole_class_not_an_uneven_split():
    # Balanced classes whose hash split happened to put more of one in train: no advice.
    assert (
        imbalance_advice(
            {"a": {"train": 12, "validation": 1, "test": 2}, "b": {"train": 7, "validation": 4, "test": 4}}
        )
        is None
    )
    advice = imbalance_advice(
        {"a": {"train": 40, "validation": 5, "test": 5}, "b": {"train": 10, "validation": 2, "test": 3}}
    )
    assert "'a' has 50 images" in advice and "'b' only 15" in advice and "Balance classes" in advice


def test_a_balanced_but_unevenly_split_dataset_gets_no_imbalance_warning(data_root, tmp_path):
    images = make_split_folders(
        tmp_path / "photos",
        {"train": {"red": 12, "blue": 7}, "val": {"red": 1, "blue": 4}, "test": {"red": 2, "blue": 4}},
    )
    at = open_app("pages/explore.py", workspace_on(images))
    assert not at.exception and {m.label: m.value for m in at.metric}["Usable images"] == "30"
    assert "imbalanced" not in texts(at.warning)
    for path in sorted((images / "train" / "blue").glob("*.jpg"))[:6]:
        path.unlink()
    assert "Classes are imbalanced" in texts(open_app("pages/explore.py", workspace_on(images)).warning)


# ---- Predict: which model, caution, share --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone_file):
    """A data root with a workspace on dataset A holding a run of A (older) and a run of dataset B (newer)."""
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
        token = new_token()
        workspace = open_workspace(token)
        first = make_class_folders(workspace.uploads / "colours", {"red": 14, "blue": 14})
        second = make_class_folders(workspace.uploads / "other", {"red": 14, "green": 14})
        for name, images in ((OLD, first), (NEW, second)):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "train",
                    "--image_dir",
                    str(images),
                    "--output_dir",
                    str(workspace.runs / name),
                    "--architecture",
                    str(tiny_backbone_file),
                    "--bottleneck_layer",
                    "features",
                    "--epochs",
                    "20",
                    "--bottleneck_dir",
                    str(tmp_path_factory.mktemp("bottlenecks")),
                ],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
        workspace.update_state(dataset=dataclasses.asdict(DatasetConfig(image_dir=str(first))), run=NEW)
        yield {"token": token, "workspace": workspace, "root": root}


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def daisy() -> bytes:
    """A white flower with a yellow heart on green: nothing like the red and blue squares the model learned."""
    y, x = np.mgrid[:64, :64]
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = (40, 140, 40)
    image[(y - 32) ** 2 + (x - 32) ** 2 < 26**2] = (250, 250, 250)
    image[(y - 32) ** 2 + (x - 32) ** 2 < 8**2] = (240, 200, 20)
    return jpeg(image)


def test_predict_defaults_to_the_newest_run_of_the_current_dataset(trained):
    choices = model_choices(trained["workspace"])
    assert [choice.run for choice in choices] == [OLD, NEW] and choices[0].current_dataset
    at = open_app("pages/predict.py", trained["token"])
    assert not at.exception, [e.value for e in at.exception]
    chooser = at.selectbox(key="predict_run")
    assert chooser.value == OLD and chooser.options[0].startswith(f"{OLD} · colours · 28 images · 2 classes")
    assert "Trained on colours · 28 images · 2 classes" in texts(at.caption)
    chooser.set_value(NEW).run()
    assert "trained on another dataset" in texts(at.info)
    assert "Trained on other · 28 images · 2 classes" in texts(at.caption)


def test_predict_is_not_blocked_while_a_new_run_trains(trained):
    workspace = trained["workspace"]
    training = RunDir(workspace.runs / OTHER)
    training.path.mkdir()
    RunConfig().save(training.config)
    training.write_status("training", 0.3, "training", pid=os.getpid(), pid_started=None)
    workspace.update_state(run=OTHER)
    try:
        at = open_app("pages/predict.py", trained["token"])
        assert not at.exception and at.selectbox(key="predict_run").value == OLD
        assert OTHER not in at.selectbox(key="predict_run").options
    finally:
        shutil.rmtree(training.path)
        workspace.update_state(run=NEW)


def test_unsure_predictions_carry_a_caution_on_photos_and_in_the_zip_table(trained):
    at = open_app("pages/predict.py", trained["token"])
    at.file_uploader(key="predict_photos").upload("daisy.jpg", daisy(), "image/jpeg")
    at.file_uploader(key="predict_photos").upload("red.jpg", jpeg(class_image("red", 3)), "image/jpeg").run()
    assert not at.exception, [e.value for e in at.exception]
    cautions = [w.value for w in at.warning if w.value.startswith("Be careful with this answer")]
    assert cautions and any("unlike the training photos" in text or "unsure" in text for text in cautions)
    assert at.image[0].proto.imgs[0].caption == "daisy.jpg", "the doubtful photo first"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("daisy.jpg", daisy())
        archive.writestr("red.jpg", jpeg(class_image("red", 3)))
    at.file_uploader(key="predict_zip").upload("batch.zip", buffer.getvalue(), "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value.set_index("file")
    assert table.loc["daisy.jpg", "caution"] and "prediction(s) to doubt" in texts(at.warning)


def test_a_share_link_opens_only_a_read_only_predict_page_and_revoking_closes_it(trained):
    at = open_app("pages/predict.py", trained["token"])
    at.button(key="create_share").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [share] = list_shares(trained["workspace"].path, OLD)
    assert any(share.token in str(code.value) for code in at.code), "the link is shown to copy"
    workspaces = sorted(p.name for p in (trained["root"] / "workspaces").iterdir())

    visitor = open_app_shared(share.token)
    assert [t.value for t in visitor.title] == ["Try a shared model"]
    assert "colours · 28 images · 2 classes" in texts(visitor.caption)
    assert "ws" not in visitor.query_params and not visitor.sidebar.markdown and not visitor.selectbox
    assert not [b for b in visitor.button if b.label.startswith(("Delete", "Cancel", "Go to"))]
    visitor.file_uploader(key="predict_photos").upload("red.jpg", jpeg(class_image("red", 3)), "image/jpeg").run()
    assert not visitor.exception and any("sure)" in m.value for m in visitor.markdown)
    assert sorted(p.name for p in (trained["root"] / "workspaces").iterdir()) == workspaces, "no workspace made"

    at.button(key=f"revoke-{share.token}").click().run()
    assert not list_shares(trained["workspace"].path, OLD)
    refused = open_app_shared(share.token)
    assert "This link does not open a model" in texts(refused.error) and not refused.file_uploader
    assert "This link does not open a model" in texts(open_app_shared("x" * 32).error)
    assert "This link does not open a model" in texts(open_app_shared("../../etc").error)


def test_deleting_a_run_revokes_its_share_links(trained, tmp_path):
    workspace = trained["workspace"]
    copy = workspace.runs / OTHER
    shutil.copytree(workspace.runs / OLD, copy)
    share = share_run(workspace, OTHER)
    assert delete_workspace_run(workspace, RunDir(copy)) == 1 and not copy.exists()
    assert "This link does not open a model" in texts(open_app_shared(share.token).error)


def test_the_share_link_is_the_apps_address_with_only_the_token():
    assert share_link("https://host:8501/app/predict", "T", ["predict", "runs"]) == "https://host:8501/app/?share=T"
    assert share_link("http://host/", "T", ["predict"]) == "http://host/?share=T"


def open_app_shared(token: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["share"] = token
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_says_the_score_while_the_exports_are_still_being_built(trained):
    """The report comes seconds into a warm rerun, before the model files: Train shows its score at once."""
    workspace = trained["workspace"]
    exporting = RunDir(workspace.runs / OTHER)
    exporting.path.mkdir()
    RunConfig().save(exporting.config)
    exporting.write_status(
        "exporting", 0.0, "building the exports", test_accuracy=0.875, pid=os.getpid(), pid_started=None
    )
    workspace.update_state(run=OTHER)
    try:
        at = open_app("pages/train.py", trained["token"])
        assert not at.exception, [e.value for e in at.exception]
        assert "Trained: test accuracy 87.5%" in texts(at.info)
        assert at.get("progress")[0].proto.text.startswith("Writing and checking the model files")
        for page in ("pages/evaluate.py", "pages/predict.py"):  # a finished run shown meanwhile is not taken for it
            at = open_app(page, trained["token"])
            assert not at.exception, [e.value for e in at.exception]
            assert f"Run `{OTHER}` is trained (test accuracy 87.5%)" in texts(at.info), page
    finally:
        shutil.rmtree(exporting.path)
        workspace.update_state(run=NEW)


def test_train_says_when_the_settings_changed_since_the_finished_run(trained):
    from pipeline.studio.next_run import save_working_config

    workspace = trained["workspace"]
    before = workspace.state().get("config")
    config = RunConfig.load(RunDir(workspace.runs / NEW).config)
    try:
        save_working_config(workspace, config)
        at = open_app("pages/train.py", trained["token"])
        assert not at.exception and "To train another, change the backbone or settings" in texts(at.caption)
        config.train.learning_rate /= 2
        save_working_config(workspace, config)
        at = open_app("pages/train.py", trained["token"])
        assert "The settings changed since: Start training runs them." in texts(at.caption)
    finally:
        workspace.update_state(config=before)
