"""End to end in a real headless browser: the app as a stranger on the public demo would use it.

Debian's chromium drives a real `streamlit run app.py` on a free port with a temporary data root. One
test walks the wizard from a zip of real photos to a downloaded model and saves a screenshot of each
page in test-artifacts/; another trains in two browser sessions at once and checks neither sees the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import FLOWERS
from imagegen import make_class_folders, make_zip

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TRAINING_TIMEOUT_MS = 300_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (bash .ci/setup --tests installs it)",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_path_factory, root: Path | None = None):
    """`streamlit run app.py` on a free port, with its own data root; its URL. Nothing is requested but the health
    check (which runs no script), so the first page request is the session's first run."""
    root = root or tmp_path_factory.mktemp("data")
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "streamlit.log", "w")
    env = {
        **os.environ,
        "RETRAIN_STUDIO_DATA_ROOT": str(root),
        "RETRAIN_STUDIO_MAX_JOBS": "1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    env.pop("RETRAIN_STUDIO_SAMPLES", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"streamlit did not answer on {url}; see {log.name}")
    try:
        yield {"url": url, "root": root}
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
    return context, context.new_page()


def shot(page, name: str) -> None:
    """A screenshot of the page as it is now, after running widgets settle."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_for_text(page, text: str, timeout: float = 60_000) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)


def click(page, label: str) -> None:
    page.get_by_role("button", name=label).first.click()


def upload(page, path: Path, index: int = 0) -> None:
    page.get_by_test_id("stFileUploaderDropzoneInput").nth(index).set_input_files(str(path))


def flowers_zip(tmp_path: Path) -> Path:
    """12 real photos of each of 3 flower classes (the first 12 by name: a fixed selection), zipped."""
    folder = tmp_path / "flowers_small"
    for label in ("daisy", "roses", "tulips"):
        (folder / label).mkdir(parents=True)
        for photo in sorted((FLOWERS / label).glob("*.jpg"))[:12]:
            shutil.copy(photo, folder / label / photo.name)
    return make_zip(folder, tmp_path / "flowers_small.zip", top_folder="flowers_small")


@pytest.mark.skipif(not FLOWERS.is_dir(), reason=f"real photos not found at {FLOWERS}")
def test_from_a_zip_of_photos_to_a_downloaded_model(server, browser, tmp_path):
    context, page = new_page(browser)
    page.goto(server["url"])
    wait_for_text(page, "Drop a zip of your photos here")
    shot(page, "1-dataset-empty")

    upload(page, flowers_zip(tmp_path))  # click 1: drop the zip
    wait_for_text(page, "Current dataset: flowers_small")
    assert re.search(r"[?&]ws=[A-Za-z0-9_-]{22}", page.url), page.url
    shot(page, "2-dataset-loaded")

    page.get_by_role("link", name="Explore").click()
    wait_for_text(page, "Images per class")
    page.get_by_test_id("stImage").first.wait_for()
    shot(page, "3-explore")
    page.get_by_role("link", name="Configure").click()
    wait_for_text(page, "Preview")
    shot(page, "4-configure")
    page.get_by_role("link", name="Dataset").click()

    click(page, "Next: Train")  # click 2
    wait_for_text(page, "No run yet")
    click(page, "Start training")  # click 3
    page.wait_for_timeout(3000)
    shot(page, "5-train-running")
    wait_for_text(page, "Finished: test accuracy", timeout=TRAINING_TIMEOUT_MS)
    shot(page, "6-train-done")

    click(page, "Next: Evaluate")  # click 4
    wait_for_text(page, "Test accuracy")
    shot(page, "7-evaluate")
    accuracy = page.get_by_test_id("stMetricValue").first.inner_text()
    assert re.fullmatch(r"\d+\.\d%", accuracy), accuracy
    cell = page.locator(".js-plotly-plot .scatterlayer .point").first.bounding_box()  # the (daisy, daisy) cell
    page.mouse.click(cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2)
    wait_for_text(page, "of daisy predicted as daisy")
    with page.expect_download() as download_info:
        click(page, "Download model (.keras)")  # click 5
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.suffix == ".keras" and zipfile.is_zipfile(saved)
    with zipfile.ZipFile(saved) as archive:
        assert "config.json" in archive.namelist()

    click(page, "Next: Predict")
    wait_for_text(page, "Drop one or more photos")
    upload(page, sorted((FLOWERS / "tulips").glob("*.jpg"))[-1])
    wait_for_text(page, "sure)")
    page.get_by_test_id("stPlotlyChart").first.wait_for()
    shot(page, "8-predict")

    click(page, "Next: Runs and downloads")
    wait_for_text(page, "Compare two runs")
    shot(page, "9-runs")
    context.close()


def test_two_sessions_train_at_once_and_stay_apart(server, browser, tmp_path):
    sessions = []
    for name, classes in [("alpha", {"red": 12, "blue": 12}), ("beta", {"green": 12, "yellow": 12})]:
        zip_path = make_zip(make_class_folders(tmp_path / name, classes), tmp_path / f"{name}.zip", top_folder=name)
        context, page = new_page(browser)
        page.goto(server["url"])
        wait_for_text(page, "Drop a zip of your photos here")
        upload(page, zip_path)
        wait_for_text(page, f"Current dataset: {name}")
        click(page, "Next: Train")
        wait_for_text(page, "No run yet")
        sessions.append((name, context, page))
    for _, _, page in sessions:
        click(page, "Start training")
    # One training slot (RETRAIN_STUDIO_MAX_JOBS=1): while one run trains, the other shows it waits its turn.
    deadline = time.monotonic() + 60
    while not any(page.get_by_text("another run is training now").count() for _, _, page in sessions):
        assert time.monotonic() < deadline, "neither session showed the queue"
        time.sleep(0.3)
    waiting = next(page for _, _, page in sessions if page.get_by_text("another run is training now").count())
    working = next(page for _, _, page in sessions if page is not waiting)
    shot(waiting, "two-sessions-queued")
    # A reload during the run shows it going on, stage by stage, without a click.
    working.reload()
    wait_for_text(working, "reading the dataset")
    wait_for_text(working, "loading the backbone")
    shot(working, "train-mid-run")
    # Neither page is touched from here: each reaches its final state by itself, the sidebar with it.
    for name, _, page in sessions:
        wait_for_text(page, "Finished: test accuracy", timeout=TRAINING_TIMEOUT_MS)
        page.get_by_test_id("stSidebar").get_by_text("Finished").first.wait_for(timeout=10_000)
        assert "trained on " + name in page.inner_text("body"), name
        assert "Waiting for a free training slot" not in page.inner_text("body"), name
        shot(page, f"two-sessions-{name}-train")

    tokens = [re.search(r"ws=([A-Za-z0-9_-]{22})", page.url).group(1) for _, _, page in sessions]
    assert tokens[0] != tokens[1]
    runs = [sorted(p.name for p in (server["root"] / "workspaces" / token / "runs").iterdir()) for token in tokens]
    assert len(runs[0]) == 1 and len(runs[1]) == 1
    for (name, context, page), own, other in [(sessions[0], runs[0], runs[1]), (sessions[1], runs[1], runs[0])]:
        page.get_by_role("link", name="Runs").click()
        wait_for_text(page, "Compare two runs")
        body = page.inner_text("body")
        assert own[0] in body and other[0] not in body, name
        assert name in page.get_by_test_id("stSidebar").inner_text()
        for label, file in [("Bundle (.zip)", "bundle.zip"), ("labels.txt", "labels.txt")]:
            with page.expect_download() as download_info:
                click(page, label)
            assert download_info.value.suggested_filename == f"{own[0]}-{file}", label
        shot(page, f"two-sessions-{name}-runs")
        page.get_by_role("link", name="Evaluate").click()
        wait_for_text(page, "Confusion matrix")
        shot(page, f"two-sessions-{name}-evaluate")
        context.close()


def test_a_cold_servers_first_request_is_a_deep_link_and_stays_in_the_apps_navigation(
    tmp_path_factory, browser, monkeypatch
):
    # Streamlit runs the first session of a process in its legacy pages-folder mode (a folder named pages/ sits
    # beside app.py), which runs pages/train.py by itself: the page must still come inside app.py's navigation.
    from pipeline.config import DatasetConfig
    from pipeline.studio.workspaces import new_token, open_workspace

    root = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
    token = new_token()
    images = make_class_folders(root / "shapes", {"red": 12, "blue": 12})
    open_workspace(token).update_state(dataset=dataclasses.asdict(DatasetConfig(image_dir=str(images))))
    with running_server(tmp_path_factory, root) as cold:
        context, page = new_page(browser)
        page.goto(f"{cold['url']}/train?ws={token}")
        for attempt in ("first request", "reload"):
            page.get_by_role("button", name="Start training").wait_for(timeout=60_000)  # the Train page's own
            assert page.get_by_role("heading", name="Train").count(), attempt
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.get_by_text("shapes").first.wait_for()  # app.py's sidebar: the workspace's dataset
            assert sidebar.get_by_role("link", name="Configure").count(), attempt  # app.py's navigation
            assert sidebar.get_by_role("link", name="Runs").count(), attempt
            assert "/train" in page.url and f"ws={token}" in page.url, (attempt, page.url)
            if attempt == "first request":
                page.reload()
        page.get_by_role("link", name="Dataset").click()
        wait_for_text(page, "Current dataset: shapes")
        click(page, "Next: Train")  # the wizard's button switches with the st.Page object
        page.get_by_role("button", name="Start training").wait_for(timeout=60_000)
        page.wait_for_url(f"**/train?ws={token}", timeout=10_000)
        assert page.get_by_test_id("stSidebar").get_by_text("shapes").count()
        shot(page, "deep-link-train")
        context.close()
