"""AppTest of Explore's likely-mistakes finder: the dataset map, the suspects with their thumbnails, and the
drop / relabel / undo decisions that change the next run's training set without touching the photos."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
from apptest_pages import open_app
from imagegen import make_class_folders
from streamlit.testing.v1 import AppTest

from pipeline.config import DatasetConfig, RunConfig, apply_preset
from pipeline.dataset import load_dataset
from pipeline.label_check_job import label_check_status
from pipeline.runs import job_slot
from pipeline.settings import cache_root
from pipeline.splits import split_for_name
from pipeline.studio.launch import start_run
from pipeline.studio.mistakes import check_folder
from pipeline.studio.next_run import working_config
from pipeline.studio.workspaces import new_token, open_workspace

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
CLASSES = {"red": 24, "green": 24, "blue": 24}


@pytest.fixture
def misfiled(tmp_path, monkeypatch, tiny_backbone_file):
    """A workspace whose dataset has two red photos filed under blue, set to check labels with the tiny backbone."""
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(tmp_path / "data"))
    images = make_class_folders(tmp_path / "colours", CLASSES, size=(40, 40))
    moved = []
    for path in sorted((images / "red").glob("*.jpg")):
        if split_for_name(path.name, 10, 10) != "test" and len(moved) < 2:  # test labels are never checked
            path.rename(images / "blue" / path.name)
            moved.append(f"blue/{path.name}")
    token = new_token()
    workspace = open_workspace(token)
    config = apply_preset(RunConfig(), "Quick")
    config.train.architecture, config.train.bottleneck_layer = str(tiny_backbone_file), "features"
    config.output.bottleneck_dir = str(tmp_path / "bottlenecks")
    workspace.update_state(
        dataset=dataclasses.asdict(DatasetConfig(image_dir=str(images))),
        config=config.to_dict(),
        dataset_summary={"name": "colours", "images": 72, "classes": 3},
    )
    files = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in images.rglob("*.jpg")}
    return {"token": token, "workspace": workspace, "images": images, "moved": moved, "files": files}


def wait_for_check(workspace, timeout: float = 180) -> dict:
    """The background check's status once it has ended."""
    deadline = time.monotonic() + timeout
    while (status := label_check_status(check_folder(workspace)))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    return status


def checked(token: str) -> AppTest:
    """Explore, after pressing 'Find likely mistakes' and the background check ending."""
    at = open_app("pages/explore.py", token, timeout=120)
    at.button(key="find_mistakes").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert wait_for_check(open_workspace(token))["state"] == "done"
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return at


def texts(elements) -> str:
    """What the elements say, as the user reads it (Markdown escapes of user text removed)."""
    return re.sub(r"\\(.)", r"\1", " | ".join(str(element.value) for element in elements))


def test_the_map_and_the_suspects_are_shown(misfiled):
    at = checked(misfiled["token"])
    [data_map] = [chart for chart in at.get("plotly_chart") if "likely mistake" in chart.proto.spec]
    traces = json.loads(data_map.proto.spec)["data"]
    assert {trace["name"] for trace in traces} == set(CLASSES) | {"likely mistake"}
    # Its legend under it: at the side it covered a phone's dots and sat under plotly's toolbar (a browser walk).
    assert json.loads(data_map.proto.spec)["layout"]["legend"]["orientation"] == "h"
    shown = [file for trace in traces if trace["name"] != "likely mistake" for file, *_ in trace["customdata"]]
    assert sorted(shown) == sorted(str(p.relative_to(misfiled["images"])) for p in misfiled["files"])
    ringed = {file for file, _ in next(t for t in traces if t["name"] == "likely mistake")["customdata"]}
    assert set(misfiled["moved"]) <= ringed
    assert "likely mistake(s)** among 72 photos" in texts(at.markdown)
    rows = [m.value for m in at.markdown if m.value.startswith("`blue/red_")]
    assert len(rows) == 2 and all("labelled **blue** · looks like **red**" in row for row in rows)
    assert {b.key for b in at.button} >= {f"relabel-suspect-{file}" for file in misfiled["moved"]}
    assert sum(len(image.value) for image in at.image) >= min(len(ringed), 8), "a thumbnail per suspect row"
    # Clicking a dot shows its photo, file and label (with the same actions).
    at.session_state["data_map"] = {
        "selection": {"points": [{"customdata": [misfiled["moved"][0]]}], "point_indices": [0], "box": [], "lasso": []}
    }
    at.run()
    assert not at.exception
    assert any(m.value.startswith(f"`{misfiled['moved'][0]}`") for m in at.markdown if "looks like" in m.value)
    assert at.button(key="drop-map")
    # A rerun does not check again: the result is kept in the session.
    at.run()
    assert at.button(key="find_mistakes").label == "Check again" and at.get("plotly_chart")


def test_drop_relabel_and_undo_change_the_next_run_not_the_photos(misfiled, monkeypatch):
    monkeypatch.setattr("pipeline.studio.launch.dispatch_queue", lambda root=None: [])
    first, second = misfiled["moved"]
    at = checked(misfiled["token"])
    usable = {m.label: m.value for m in at.metric}["Usable images"]
    at.button(key=f"drop-suspect-{first}").click().run()
    at.button(key=f"relabel-suspect-{second}").click().run()
    assert not at.exception
    workspace = misfiled["workspace"]
    config = DatasetConfig(**workspace.state()["dataset"])
    assert Path(config.overrides).parent == workspace.path / "overrides"
    assert json.loads(Path(config.overrides).read_text()) == {"drop": [first], "relabel": {second: "red"}}
    assert "Dropped from training (your photo is left as it is)" in texts(at.caption)
    assert "Relabelled as red" in texts(at.caption)
    assert at.button(key=f"undo-suspect-{first}") and at.button(key=f"undo-suspect-{second}")
    assert {m.label: m.value for m in at.metric}["Usable images"] == str(int(usable) - 1), "the page counts it"
    table = load_dataset(config, check_images=False).table.set_index("file")
    assert table.loc[first, "status"] == "dropped" and table.loc[second, "label"] == "red"

    run = start_run(workspace, working_config(workspace))  # the next run trains on the decisions
    trained_on = load_dataset(RunConfig.load(run.config).dataset, check_images=False).usable().set_index("file")
    assert first not in trained_on.index and trained_on.loc[second, "label"] == "red"

    at.button(key=f"undo-suspect-{first}").click().run()
    others = [b for b in at.get("menu_button") if b.key.startswith("choose-suspect-")]
    others[0].click("green").run()
    chosen = others[0].key.removeprefix("choose-suspect-")
    assert json.loads(Path(config.overrides).read_text()) == {"drop": [], "relabel": {second: "red", chosen: "green"}}
    assert {
        path: (path.read_bytes(), path.stat().st_mtime_ns) for path in misfiled["images"].rglob("*.jpg")
    } == misfiled["files"], "no photo was moved, changed or deleted"


def test_the_check_runs_in_the_background_is_kept_paged_ordered_flagged_when_stale_and_cancellable(
    misfiled, monkeypatch
):
    token, workspace = misfiled["token"], misfiled["workspace"]
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_JOBS", "1")
    at = open_app("pages/explore.py", token, timeout=120)
    with job_slot(1, cache_root() / "jobs"):  # the server's one slot is busy: the check waits, the page does not
        at.button(key="find_mistakes").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert "Looking for likely mistakes" in " ".join(str(p.proto.text) for p in at.get("progress"))
        assert at.button(key="find_mistakes").disabled and at.button(key="cancel_check")
        assert "You can leave this page" in texts(at.caption)
    assert wait_for_check(workspace)["state"] == "done"

    monkeypatch.setattr("pages.data_checks.SUSPECTS_PAGE", 1)
    later = open_app("pages/explore.py", token, timeout=120)  # another tab (or back from another page): kept
    assert not later.exception and later.button(key="find_mistakes").label == "Check again"
    summary = next(m.value for m in later.markdown if "likely mistake(s)**" in m.value)
    total = int(summary.split("**")[1].split()[0])
    assert total >= 2 and "among 72 photos" in summary
    shown = []
    for page in range(1, total + 1):  # one suspect a page: every page holds the next most confident one
        later.session_state["suspects_page"] = page
        later.run()
        rows = [m.value for m in later.markdown if "· looks like **" in m.value and m.value.startswith("`")]
        assert len(rows) == 1, rows
        shown.append(int(rows[0].rsplit("(", 1)[1].split("%")[0]))
    assert shown == sorted(shown, reverse=True), "ordered by the confidence shown"
    assert not [w for w in later.warning if "older version" in w.value]

    new_photo = misfiled["images"] / "green" / "extra.jpg"
    new_photo.write_bytes(next(iter(misfiled["files"].values()))[0])
    stale = open_app("pages/explore.py", token, timeout=120)
    assert any("older version of the dataset" in w.value for w in stale.warning)

    with job_slot(1, cache_root() / "jobs"):
        stale.button(key="find_mistakes").click().run()
        stale.button(key="cancel_check").click().run()
        assert not stale.exception
    assert wait_for_check(workspace)["state"] == "cancelled"
    stale.run()
    assert "The last check was cancelled" in texts(stale.info)
    assert any("likely mistake(s)**" in m.value for m in stale.markdown), "earlier results stay readable"


def test_after_a_check_near_duplicates_can_also_be_found_by_backbone_features(misfiled):
    images = misfiled["images"]
    copy = images / "green" / "copy_of_red.jpg"
    copy.write_bytes(next(p for p in misfiled["files"] if p.parent.name == "red").read_bytes())
    at = checked(misfiled["token"])
    assert not at.exception
    at.toggle(key="feature_duplicates").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    summary = next(m.value for m in at.markdown if "Near-duplicate groups:" in m.value)
    assert int(summary.split("Near-duplicate groups: ")[1].split("**")[0]) >= 1
    assert any(b.key.startswith("merge-near-") for b in at.button), "the cross-class copy can be labelled as one"
