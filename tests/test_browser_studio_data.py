"""In a real headless browser: zips whose entry names lack the UTF-8 flag keep their class names, a share link
opened in a fresh browser context can predict but sees nothing else, and screenshots of the data pages (landing,
Explore with suspects and near-duplicates, Predict with an unsure flag, the shared page, phone width) for a person
to look at in /tmp/studio-data-shots/.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from imagegen import make_class_folders
from PIL import Image
from test_browser import CHROMIUM, REPO, new_page, running_server, upload, wait_for_text
from test_near_duplicates import _photo, _write_copies

SHOTS = Path("/tmp/studio-data-shots")
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shot(page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(1000)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def drawn(page, charts: int) -> None:
    """Wait until photos and the first `charts` Plotly charts are drawn (they paint after the text)."""
    page.locator(".js-plotly-plot .main-svg").nth(charts - 1).wait_for(timeout=30_000)
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)


def zip_with_raw_names(folder: Path, zip_path: Path, placeholder: bytes, raw: bytes) -> Path:
    """A zip of `folder` whose entry names hold `raw` bytes where the files say `placeholder`, without the UTF-8
    flag (bit 0x800): what the common `zip` tool (raw UTF-8) or an old Windows tool (cp437) writes."""
    assert len(placeholder) == len(raw)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, path.relative_to(folder.parent).as_posix())  # ASCII names: no flag set
    data = buffer.getvalue().replace(placeholder, raw)
    zip_path.write_bytes(data)
    with zipfile.ZipFile(zip_path) as check:
        assert not any(info.flag_bits & 0x800 for info in check.infolist())
    return zip_path


@pytest.mark.parametrize(
    "kind, placeholder, raw", [("cp437", b"cafX", "café".encode("cp437")), ("raw-utf8", b"cafXX", "café".encode())]
)
def test_zip_names_without_the_utf8_flag_come_out_right(tmp_path_factory, browser, tmp_path, kind, placeholder, raw):
    folder = make_class_folders(tmp_path / "shop", {placeholder.decode(): 6, "plain": 6})
    zip_path = zip_with_raw_names(folder, tmp_path / f"{kind}.zip", placeholder, raw)
    with running_server(tmp_path_factory) as server:
        context, page = new_page(browser)
        page.goto(server["url"])
        wait_for_text(page, "Drop a zip of your photos here")
        upload(page, zip_path)
        wait_for_text(page, "Current dataset")
        body = page.inner_text("body")
        assert "Classes: café, plain" in body, body[-600:]
        assert "caf├⌐" not in body and "cafÃ©" not in body
        context.close()


# ---- A workspace with a dataset, a finished check and a run; the owner's pages and a shared link ----------------


def daisy() -> bytes:
    y, x = np.mgrid[:64, :64]
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = (40, 140, 40)
    image[(y - 32) ** 2 + (x - 32) ** 2 < 26**2] = (250, 250, 250)
    image[(y - 32) ** 2 + (x - 32) ** 2 < 8**2] = (240, 200, 20)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_backbone_file):
    from pipeline.config import DatasetConfig, RunConfig, apply_preset
    from pipeline.label_check_job import label_check_status
    from pipeline.splits import split_for_name
    from pipeline.studio.mistakes import check_folder, start_check

    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(root))
        from pipeline.studio.workspaces import new_token, open_workspace

        token = new_token()
        workspace = open_workspace(token)
        images = make_class_folders(workspace.uploads / "colours", {"red": 20, "blue": 20}, size=(64, 48))
        moved = [p for p in sorted((images / "red").glob("*.jpg")) if split_for_name(p.name, 10, 10) != "test"][:3]
        for path in moved:
            path.rename(images / "blue" / path.name)
        _write_copies(images / "blue", _photo())
        bottlenecks = tmp_path_factory.mktemp("bottlenecks")
        run = workspace.runs / "run-20240101-000000-0001"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "train",
                "--image_dir",
                str(images),
                "--output_dir",
                str(run),
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
            dataset=dataclasses.asdict(DatasetConfig(image_dir=str(images))), run=run.name, config=config.to_dict()
        )
        start_check(workspace)
        deadline = time.monotonic() + 300
        while label_check_status(check_folder(workspace))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert label_check_status(check_folder(workspace))["state"] == "done"
        with running_server(tmp_path_factory, root) as server:
            yield {**server, "token": token, "workspace": workspace, "run": run.name}


def test_the_owners_pages_and_a_share_link_opened_elsewhere(studio, browser, tmp_path):
    url, token = studio["url"], studio["token"]
    tall = browser.new_context(viewport={"width": 1400, "height": 4200})
    page = tall.new_page()
    page.goto(f"{url}/explore?ws={token}")
    wait_for_text(page, "Most confident first")
    wait_for_text(page, "Near-duplicate groups: 1")
    drawn(page, charts=3)
    shot(page, "explore-suspects-near-duplicates")
    tall.close()
    context, page = new_page(browser)

    page.goto(f"{url}/predict?ws={token}")
    wait_for_text(page, "Drop one or more photos")
    (tmp_path / "daisy.jpg").write_bytes(daisy())
    upload(page, tmp_path / "daisy.jpg")
    wait_for_text(page, "Be careful with this answer")
    drawn(page, charts=1)
    shot(page, "predict-unsure")
    page.get_by_role("tab", name="Share").click()
    page.get_by_role("button", name="Create a share link").click()
    wait_for_text(page, "?share=")
    link = next(line for line in page.inner_text("body").split() if "?share=" in line)
    assert link.startswith(url + "/?share=") and token not in link
    shot(page, "predict-share-tab")
    context.close()

    visitor, shared = new_page(browser)  # a fresh context: no cookie, no session, no workspace
    shared.goto(link)
    wait_for_text(shared, "Try a shared model")
    assert not shared.get_by_test_id("stSidebar").count() or not shared.get_by_test_id("stSidebar").is_visible()
    body = shared.inner_text("body")
    assert "Current dataset" not in body and "Runs" not in body and "Delete" not in body and "Cancel" not in body
    assert "ws=" not in shared.url
    (tmp_path / "red.jpg").write_bytes(daisy())
    upload(shared, tmp_path / "red.jpg")
    wait_for_text(shared, "sure)")
    drawn(shared, charts=1)
    shot(shared, "shared-predict")
    shared.goto(link.replace("/?share=", "/runs?share="))  # another page's address: still only the shared page
    wait_for_text(shared, "Try a shared model")
    assert "Compare two runs" not in shared.inner_text("body")
    shared.goto(f"{url}/?share={'A' * 32}")
    wait_for_text(shared, "This link does not open a model")
    visitor.close()
    workspaces = sorted(p.name for p in (studio["root"] / "workspaces").iterdir() if not p.name.startswith("."))
    assert workspaces == [token], "opening a share link must make no workspace"


def test_landing_and_phone_width(studio, browser):
    context, page = new_page(browser)
    page.goto(studio["url"])
    wait_for_text(page, "Teach a computer to tell your photos apart")
    shot(page, "dataset-landing")
    context.close()
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = phone.new_page()
    page.goto(studio["url"])
    wait_for_text(page, "Teach a computer to tell your photos apart")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    tabs = page.get_by_role("tablist").first
    tab_overflow = tabs.evaluate("t => t.scrollWidth - t.clientWidth")
    shot(page, "phone-dataset-landing")
    phone.close()
    # Screenshots of whole pages at phone width: Streamlit scrolls inside its own container, so the window is tall.
    phone = browser.new_context(
        viewport={"width": PHONE["width"], "height": 3600}, device_scale_factor=1, is_mobile=True, has_touch=True
    )
    page = phone.new_page()
    for name in ("explore", "predict", "evaluate"):
        page.goto(f"{studio['url']}/{name}?ws={studio['token']}")
        page.get_by_role("heading", name=name.capitalize()).first.wait_for(timeout=60_000)
        page.wait_for_timeout(2500)
        shot(page, f"phone-{name}")
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{name} scrolls sideways by {wide}px at phone width"
    phone.close()
    assert overflow <= 0, f"the Dataset page scrolls sideways by {overflow}px at phone width"
    assert tab_overflow <= 0, f"the Dataset tabs need sideways scrolling ({tab_overflow}px) at phone width"
