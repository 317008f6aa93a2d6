"""AppTest of the pages before training: Dataset, Explore, Configure (and the app shell around them)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from apptest_pages import open_app
from imagegen import make_class_folders, make_zip, write_labels_csv, write_not_an_image, write_truncated_jpeg
from streamlit.testing.v1 import AppTest

import pipeline.images
from pipeline.config import DatasetConfig, TrainConfig
from pipeline.dataset import load_dataset
from pipeline.studio.next_run import working_config
from pipeline.studio.workspaces import is_valid_token, new_token, open_workspace

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    monkeypatch.delenv("RETRAIN_STUDIO_SAMPLES", raising=False)
    return root


def app(token: str | None = None, page: str | None = None) -> AppTest:
    """The app, run once on `page` in the workspace of `token`."""
    at = open_app(page, token)
    assert not at.exception, [e.value for e in at.exception]
    return at


def with_dataset(tmp_path: Path, classes: dict[str, int], broken: int = 0) -> str:
    """A workspace whose current dataset is a generated folder (with `broken` bad files in the first class)."""
    images = make_class_folders(tmp_path / "shapes", classes)
    first = sorted(classes)[0]
    for index in range(broken):
        (write_truncated_jpeg if index % 2 else write_not_an_image)(images / first / f"bad_{index}.jpg")
    token = new_token()
    workspace = open_workspace(token)
    workspace.update_state(
        dataset=dataclasses.asdict(DatasetConfig(image_dir=str(images))),
        dataset_summary={"name": "shapes", "images": sum(classes.values()), "classes": len(classes)},
    )
    return token


def texts(elements) -> str:
    """What the elements say, as the user reads it (Markdown escapes of user text removed)."""
    return re.sub(r"\\(.)", r"\1", " | ".join(str(element.value) for element in elements))


def plotly_values(values) -> list:
    """A trace's numbers as plotly's JSON holds them: a list, or a typed array {dtype, bdata (base64)}."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_landing_page_paints_without_tensorflow(data_root):
    # A fresh interpreter, as a server has: the first paint must not import TensorFlow (what makes it slow;
    # the time itself is the benchmark's business, not a test's, on a machine this noisy).
    script = (
        "import json, sys; from streamlit.testing.v1 import AppTest; "
        f"at = AppTest.from_file({APP!r}, default_timeout=30).run(); "
        "print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, "
        "'titles': [t.value for t in at.title], 'exceptions': len(at.exception)}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["titles"] == ["Dataset"] and result["exceptions"] == 0, result
    assert not result["tensorflow"], "app.py or the Dataset page imports TensorFlow"


def test_a_new_session_gets_a_workspace_in_the_url_and_keeps_it(data_root):
    at = app()
    token = at.query_params["ws"]
    assert is_valid_token(token) and (data_root / "workspaces" / token / "runs").is_dir()
    assert "None yet" in texts(at.sidebar.caption)
    assert at.title[0].value == "Dataset"


def test_a_malformed_workspace_id_is_replaced_not_used(data_root):
    at = app("../../../etc/passwd")
    assert is_valid_token(at.query_params["ws"])
    assert not (data_root / "etc").exists() and not (data_root.parent / "etc").exists()


def test_uploading_a_zip_loads_the_dataset(data_root, tmp_path):
    zip_path = make_zip(
        make_class_folders(tmp_path / "shapes", {"red": 12, "blue": 12}), tmp_path / "shapes.zip", top_folder="shapes"
    )
    at = app()
    at.file_uploader(key="zip_upload").upload("shapes.zip", zip_path.read_bytes(), "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Usable images"] == "24" and metrics["Classes"] == "2"
    state = open_workspace(at.query_params["ws"]).state()
    assert state["dataset_summary"] == {"name": "shapes", "images": 24, "classes": 2, "problems": 0}
    assert "shapes" in texts(at.sidebar.markdown)
    next_train = [button for button in at.button if button.label == "Next: Train"]
    assert next_train
    next_train[0].click().run()
    assert at.title[0].value == "Train"


def test_a_bad_zip_shows_the_engines_message(data_root, tmp_path):
    at = app()
    at.file_uploader(key="zip_upload").upload("photos.zip", b"definitely not a zip", "application/zip").run()
    assert not at.exception
    assert "not a readable zip archive" in texts(at.error)


def test_a_zip_with_unsafe_paths_is_refused(data_root, tmp_path):
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../outside.jpg", b"\xff\xd8\xff")
    at = app()
    at.file_uploader(key="zip_upload").upload("evil.zip", evil.read_bytes(), "application/zip").run()
    assert "unsafe to extract" in texts(at.error)
    assert not any(data_root.parent.rglob("outside.jpg"))


def test_a_one_class_zip_says_what_to_fix(data_root, tmp_path):
    zip_path = make_zip(make_class_folders(tmp_path / "one", {"red": 6}), tmp_path / "one.zip")
    at = app()
    at.file_uploader(key="zip_upload").upload("one.zip", zip_path.read_bytes(), "application/zip").run()
    assert "cannot be trained on yet" in texts(at.error) and "one class" in texts(at.error)


def test_a_csv_of_labels_with_a_zip_of_images(data_root, tmp_path):
    images = make_class_folders(tmp_path / "classes", {"red": 6, "blue": 6})
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for path in sorted(images.rglob("*.jpg")):
        rows.append((path.name, path.parent.name))
        path.rename(flat / path.name)
    at = app()
    at.file_uploader(key="csv_upload").upload(
        "labels.csv", write_labels_csv(tmp_path / "l.csv", rows).read_bytes(), "text/csv"
    )
    at.file_uploader(key="csv_zip_upload").upload(
        "images.zip", make_zip(flat, tmp_path / "i.zip").read_bytes(), "application/zip"
    ).run()
    assert not at.error, texts(at.error)
    assert {metric.label: metric.value for metric in at.metric}["Usable images"] == "12"


def test_server_folders_only_under_the_data_root(data_root, tmp_path):
    make_class_folders(data_root / "mine", {"red": 5, "blue": 5})
    at = app()
    at.text_input(key="server_folder").set_value("../../etc")
    [button for button in at.button if button.label == "Use this folder"][0].click().run()
    assert "'..' is not allowed" in texts(at.error)
    at.text_input(key="server_folder").set_value("/etc")
    [button for button in at.button if button.label == "Use this folder"][0].click().run()
    assert "outside the data folder" in texts(at.error)
    at.text_input(key="server_folder").set_value("mine")
    [button for button in at.button if button.label == "Use this folder"][0].click().run()
    assert not at.error and {metric.label: metric.value for metric in at.metric}["Classes"] == "2"


def test_a_sample_dataset_in_one_click(data_root, tmp_path, monkeypatch):
    make_class_folders(tmp_path / "samples" / "colours", {"red": 5, "blue": 5})
    monkeypatch.setenv("RETRAIN_STUDIO_SAMPLES", str(tmp_path / "samples"))
    at = app()
    at.button(key="sample-colours").click().run()
    assert not at.error
    assert open_workspace(at.query_params["ws"]).state()["dataset_summary"]["name"] == "colours"


def test_pages_without_a_dataset_point_to_the_dataset_page(data_root):
    at = app(new_token(), "pages/explore.py")
    assert "Choose a dataset first" in texts(at.info)
    [button for button in at.button if button.label == "Go to Dataset"][0].click().run()
    assert at.title[0].value == "Dataset"


def test_explore_shows_counts_gallery_imbalance_and_problems(data_root, tmp_path):
    token = with_dataset(tmp_path, {"red": 30, "blue": 8}, broken=2)
    at = app(token, "pages/explore.py")
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Usable images"] == "38" and metrics["Problem files"] == "2"
    assert "Classes are imbalanced" in texts(at.warning)
    assert at.get("plotly_chart"), "the class chart is drawn"
    problems = at.dataframe[0].value
    assert sorted(problems["File"]) == ["blue/bad_0.jpg", "blue/bad_1.jpg"]
    assert all(problems["What is wrong"].str.len() > 0)
    assert len(at.image) >= 1 and len(at.image[0].value) == 8  # blue's 8 usable photos, one page


def test_configure_builds_widgets_from_the_config_and_saves_edits(data_root, tmp_path):
    token = with_dataset(tmp_path, {"red": 6, "blue": 6})
    at = app(token, "pages/configure.py")
    assert at.number_input(key="knob.train.epochs").value == 15  # the Quick preset
    assert at.number_input(key="knob.train.learning_rate").help.startswith("How fast the head learns")
    at.number_input(key="knob.train.epochs").set_value(7).run()
    assert open_workspace(token).state()["config"]["train"]["epochs"] == 7
    at.toggle(key="knob.augment.flip_left_right").set_value(True).run()
    assert len(at.image[-1].value) == 6  # the original and five augmented copies
    resolved = json.loads(at.json[0].value)
    assert resolved["train"]["epochs"] == 7 and resolved["dataset"]["image_dir"].endswith("shapes")
    at.button_group(key="preset").set_value("Best accuracy").run()
    assert not at.exception
    assert at.number_input(key="knob.train.epochs").value == 80
    saved = open_workspace(token).state()["config"]
    # The most accurate recipe measured: Lite0 and Lite1 side by side, each photo also seen mirrored.
    assert saved["train"]["architecture"] == "efficientnet_lite0+efficientnet_lite1" and saved["train"]["mirror_view"]
    assert saved["augment"]["augment_copies"] == 0
    assert at.selectbox[0].value == "efficientnet_lite0+efficientnet_lite1"
    assert "side by side" in " ".join(caption.value for caption in at.caption)


def test_best_accuracy_says_before_training_why_preparing_the_photos_takes_longer(data_root, tmp_path):
    # Two backbones, each photo also mirrored: four reads of every photo. Said on Configure and on Train, in words,
    # before Start is pressed; Quick (one read) says nothing.
    token = with_dataset(tmp_path, {"red": 6, "blue": 6})
    at = app(token, "pages/configure.py")
    assert "Slower to prepare" not in texts(at.caption)
    at.button_group(key="preset").set_value("Best accuracy").run()
    notes = [caption for caption in at.caption if "Slower to prepare" in caption.value]
    assert notes, "Best accuracy says why it is slower: " + texts(at.caption)
    note = notes[0]
    assert "each photo is read 4 times (two networks side by side, each also on its mirror image)" in note.value
    assert "about four times as long" in note.value and "Mirror view" in note.help
    at = app(token, "pages/train.py")
    assert "each photo is read 4 times" in texts(at.caption)
    # The pair's name wraps between its two names in the narrow column, not inside one.
    assert "**Backbone**  \n" + "efficientnet_lite0 + efficientnet_lite1" in texts(at.markdown)
    at = app(token, "pages/configure.py")
    at.toggle(key="knob.train.mirror_view").set_value(False).run()
    assert "each photo is read 2 times (two networks side by side) where one network reads it once" in texts(
        at.caption
    ), "the note follows an edit at once, not one rerun late"


def test_quick_after_best_accuracy_is_quick_again(data_root, tmp_path):
    # Best accuracy sets the pair and the mirror view; going back to Quick must undo both, not train the slow pair
    # under the name "Quick (edited)".
    token = with_dataset(tmp_path, {"red": 6, "blue": 6})
    at = app(token, "pages/configure.py")
    at.button_group(key="preset").set_value("Best accuracy").run()
    at.button_group(key="preset").set_value("Quick").run()
    assert not at.exception
    saved = open_workspace(token).state()["config"]["train"]
    assert (saved["architecture"], saved["mirror_view"], saved["epochs"]) == ("efficientnet_lite0", False, 15)
    assert at.selectbox[0].value == "efficientnet_lite0" and at.toggle(key="knob.train.mirror_view").value is False
    assert "Settings: **Quick**" in texts(at.caption) and "Slower to prepare" not in texts(at.caption)
    at = app(token, "pages/train.py")
    assert "Quick: up to 15 epochs" in texts(at.markdown) and "efficientnet_lite0" in texts(at.markdown)


def test_configure_bounds_every_number_by_the_config_s_range(data_root, tmp_path, monkeypatch):
    token = with_dataset(tmp_path, {"red": 6, "blue": 6})
    workspace = open_workspace(token)
    saved = working_config(workspace)
    saved.train.dropout = 3.0  # saved before the ranges existed, say
    workspace.update_state(config=saved.to_dict())
    decoded = []
    real_decode = pipeline.images.decode_image
    monkeypatch.setattr(
        "pipeline.images.decode_image",
        lambda data, min_side=None: decoded.append(min_side) or real_decode(data, min_side),
    )
    at = app(token, "pages/configure.py")
    for field in dataclasses.fields(TrainConfig):
        if "min" in field.metadata and field.type in ("int", "float"):
            widget = at.number_input(key=f"knob.train.{field.name}")
            assert (widget.min, widget.max) == (field.metadata["min"], field.metadata["max"]), field.name
    assert at.number_input(key="knob.train.dropout").value == 0.95, "clamped into its range"
    assert working_config(workspace).validate().train.dropout == 0.95 and not at.error
    assert decoded and set(decoded) == {224}, "the preview decodes at the backbone's size, as training does"


def test_class_balancing_counts_training_photos_in_words_that_say_so(data_root, tmp_path):
    # Seen in a browser walk: 20 photos in each folder, and the page said "the largest has 15" (its training split).
    token = with_dataset(tmp_path, {"red": 20, "blue": 20})
    at = app(token, "pages/configure.py")
    train = load_dataset(DatasetConfig(image_dir=str(tmp_path / "shapes")), check_images=False).class_counts()
    largest = max(n["train"] for n in train.values())
    assert f"the largest has {largest} training photos; the rest of each class is kept aside" in texts(at.caption)


def test_class_balancing_is_off_by_default_and_charts_the_copies(data_root, tmp_path):
    token = with_dataset(tmp_path, {"red": 30, "blue": 8, "green": 14})
    at = app(token, "pages/configure.py")
    assert at.toggle(key="knob.balance").value is False and not at.get("plotly_chart")
    assert open_workspace(token).state().get("config", {}).get("augment", {}).get("class_size", 0) == 0
    at.toggle(key="knob.balance").set_value(True).run()
    train = {
        label: n["train"]
        for label, n in load_dataset(DatasetConfig(image_dir=str(tmp_path / "shapes")), check_images=False)
        .class_counts()
        .items()
    }
    size = max(train.values())
    assert at.number_input(key="knob.augment.class_size").value == size, "starts at the largest class"
    at.number_input(key="knob.augment.class_size").set_value(40).run()
    assert open_workspace(token).state()["config"]["augment"]["class_size"] == 40
    [chart] = at.get("plotly_chart")
    bars = {
        trace["name"]: dict(zip(trace["x"], plotly_values(trace["y"]), strict=True))
        for trace in json.loads(chart.proto.spec)["data"]
    }
    assert bars["now"] == train
    assert bars["after balancing"] == {label: n * (40 // n - 1 + 1) if n < 40 else n for label, n in train.items()}
    at.toggle(key="knob.balance").set_value(False).run()
    assert open_workspace(token).state()["config"]["augment"]["class_size"] == 0


def test_configure_lists_backbones_offline_first(data_root, tmp_path):
    at = app(with_dataset(tmp_path, {"red": 4, "blue": 4}), "pages/configure.py")
    backbone = at.selectbox[0]
    assert backbone.options[0].startswith("efficientnet_lite0") and "offline" in backbone.options[0]
    assert [option.split()[0] for option in backbone.options[1:3]] == ["efficientnet_lite1", "efficientnet_lite2"]
    # Every offline choice (the pair of two of them included) before the first that needs the internet.
    offline = ["works offline" in option for option in backbone.options]
    assert offline == sorted(offline, reverse=True) and offline.count(True) == 4, backbone.options
    assert all("needs internet once" in option for option in backbone.options[offline.count(True) :])


def test_no_backbone_is_called_more_accurate_than_its_compare_table_shows(data_root, tmp_path):
    # The picker's words and its "Compare backbones" table (bench/backbones.json) sit one above the other: a
    # backbone described as "more accurate" (than Lite0) or "most accurate" must not score lower there.
    at = app(with_dataset(tmp_path, {"red": 4, "blue": 4}), "pages/configure.py")
    table = at.dataframe[0].value.set_index("Backbone")["Flowers test accuracy"]
    measured = {name: float(value) for name, value in table.items() if value != "not measured"}
    if "efficientnet_lite0" not in measured:
        pytest.skip("bench/backbones.json has no flowers accuracy for efficientnet_lite0")
    for option in at.selectbox[0].options:
        name = option.split()[0]
        at.selectbox[0].set_value(name).run()
        words = texts(at.caption).lower()  # the backbone's description is one of the captions
        if name not in measured:
            continue
        if "most accurate" in words and "not always the most accurate" not in words:
            assert measured[name] >= max(measured.values()), (name, words, measured)
        if "more accurate" in words and "not always more accurate" not in words:
            assert measured[name] > measured["efficientnet_lite0"], (name, words, measured)


def test_compare_backbones_shows_accuracy_and_speed_next_to_the_name(data_root, tmp_path):
    # A phone shows about three columns of the table: the name, its accuracy and its speed, every column still there.
    at = app(with_dataset(tmp_path, {"red": 4, "blue": 4}), "pages/configure.py")
    table = at.dataframe[0]  # the first table on the page
    order = list(table.proto.column_order)
    assert order[:3] == ["Backbone", "Flowers test accuracy", "Extraction, LiteRT (img/s)"]
    assert sorted(order) == sorted(table.value.columns)


def test_configure_says_the_engines_terms_in_plain_words(data_root, tmp_path):
    """A newcomer reads what a figure means ("Photos per second", "Typical time per photo"); the exact terms (LiteRT,
    p50) stay in the column's help. Settings' help names the control to change, not the CLI's flag."""
    at = app(with_dataset(tmp_path, {"red": 4, "blue": 4}), "pages/configure.py")
    columns = json.loads(at.dataframe[0].proto.columns)
    headings = [columns.get(name, {}).get("label") or name for name in at.dataframe[0].proto.column_order]
    assert "Photos per second" in headings and "Typical time per photo (ms)" in headings, headings
    assert not re.search(r"LiteRT|p50|Extraction", " ".join(headings)), headings
    assert "LiteRT" in columns["Extraction, LiteRT (img/s)"]["help"] and "p50" in columns["Predict p50 (ms)"]["help"]
    tips = {widget.label: widget.help for widget in at.number_input}
    assert tips["How many training steps"] == "Training steps (retrain.py meaning); 0 means train by 'Epochs'."
    assert not [label for label, tip in tips.items() if "--" in (tip or "")], tips


def test_a_setting_to_fix_is_named_by_its_controls_label(data_root, tmp_path):
    at = app(with_dataset(tmp_path, {"red": 4, "blue": 4}), "pages/configure.py")
    pair = next(option for option in at.selectbox[0].options if "+" in option).split()[0]
    at.selectbox[0].set_value(pair).run()
    at.number_input(key="knob.train.fine_tune_layers").set_value(1).run()
    said = texts(at.error)
    assert "This setting must be fixed before training: 'Fine tune layers' works on one backbone" in said, said
    assert "fine_tune_layers" not in said


def test_configure_timing_budget(data_root, tmp_path):
    started = time.monotonic()
    app(with_dataset(tmp_path, {"red": 4, "blue": 4}), "pages/configure.py")
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    "name",
    [
        "*bold* _it_ `code` ~~gone~~",
        "[link](https://x.org) ![img](y.png) <b>html</b>",
        "see https://x.org, www.y.com or me@z.org",
        ":red[colour] :material/home: $x^2$ &amp;",
        "1. list\n# heading\n- item | table |",
        "café\\ back\\slash",
    ],
)
def test_user_text_is_shown_as_typed(name):
    """One rule for every page: user text in Markdown shows as typed — no formatting, link, icon, math, entity or
    block from it; removing the escapes gives back the text (line breaks become spaces)."""
    from pages.widgets import plain

    shown = plain(name)
    assert re.sub(r"\\(.)", r"\1", shown) == name.replace("\n", " ")
    assert "\n" not in shown
    unescaped = re.sub(r"\\.", "", shown)  # what Markdown could still give a meaning to
    assert not re.search(r"[\\`*_\[\]<>()#|~:$&@!.{}+-]", unescaped), unescaped
