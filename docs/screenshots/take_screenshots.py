"""Retake the README's screenshots: the app on the flowers sample, driven by headless Chromium.

    RETRAIN_STUDIO_CACHE=/tmp/retrain-studio-tests .venv/bin/python docs/screenshots/take_screenshots.py

Starts `streamlit run app.py` with a throwaway data root and the shared datasets as samples, walks
Dataset → Explore (with the likely-mistakes finder) → Train → Evaluate → Predict, and writes one PNG per
step here. A warm bottleneck cache (RETRAIN_STUDIO_CACHE) makes it take about a minute instead of several.
PNGs over MAX_BYTES are reduced to 256 colours, which screenshots survive well.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLES = REPO.parent / "shared" / "datasets"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WIDTH = 1400
TALL = 2600  # the window's height: tall enough that Streamlit's own scrolling never cuts a shot short
MAX_BYTES = 300_000


# Where on the screen the dataset map draws the dot of one file (its "likely mistake" ring).
POINT_ON_MAP = """file => {
    const chart = [...document.querySelectorAll('.js-plotly-plot')]
        .find(g => g._fullData && g._fullData.some(t => t.name === 'likely mistake'));
    const trace = chart._fullData.find(t => t.name === 'likely mistake');  // decoded arrays, unlike .data
    chart.scrollIntoView({block: 'center'});
    const i = [...Array(trace.customdata.length).keys()].find(k => trace.customdata[k][0] === file);
    const layout = chart._fullLayout, box = chart.getBoundingClientRect();
    return [box.left + layout._size.l + layout.xaxis.d2p(trace.x[i]),
            box.top + layout._size.t + layout.yaxis.d2p(trace.y[i])];
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(data_root: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RETRAIN_STUDIO_DATA_ROOT": str(data_root), "RETRAIN_STUDIO_SAMPLES": str(SAMPLES),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                "--server.headless", "true", "--server.address", "127.0.0.1"],
                               cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"streamlit did not start; see {log}")


def save(page, name: str, top: str | None = None, height: int = 900) -> None:
    """A WIDTH x height screenshot from the element with text `top` (else from the title), kept small."""
    page.mouse.move(0, 0)  # no hover effects in the picture
    page.wait_for_timeout(1500)  # let charts and images settle
    element = page.get_by_text(top, exact=True).first if top else page.locator("h1").first
    element.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    y = max(element.bounding_box()["y"] - 32, 0)
    path = HERE / f"{name}.png"
    page.screenshot(path=str(path), clip={"x": 0, "y": y, "width": WIDTH, "height": height})
    if path.stat().st_size > MAX_BYTES:
        Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path.name}: {path.stat().st_size // 1024} KB")


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        server = start_server(Path(scratch) / "data", port, Path(scratch) / "streamlit.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": WIDTH, "height": TALL})
                walk(page, f"http://127.0.0.1:{port}")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=20)


def walk(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Sample datasets").click()
    page.get_by_role("button", name="Use the flowers sample").click()
    page.get_by_text("Current dataset: flowers").wait_for(timeout=120_000)

    page.get_by_role("link", name="Explore").click()
    page.get_by_text("Images per class").wait_for()
    page.get_by_test_id("stImage").first.wait_for()
    save(page, "explore", height=1250)

    page.get_by_role("radio", name="Clearer clusters").click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Find likely mistakes").click()
    page.get_by_text("likely mistake(s)", exact=False).first.wait_for(timeout=600_000)
    page.wait_for_timeout(1500)
    second_suspect = page.get_by_test_id("stMain").locator("code").nth(1).inner_text()
    page.mouse.click(*page.evaluate(POINT_ON_MAP, second_suspect))
    page.get_by_text("Click a dot on the map").wait_for(state="detached", timeout=30_000)
    page.get_by_role("button", name="Relabel as", exact=False).nth(1).click()  # the first suspect's row
    page.get_by_text("Relabelled as", exact=False).first.wait_for()
    save(page, "likely-mistakes", top="Likely mistakes", height=1150)

    page.get_by_role("link", name="Configure").click()
    page.get_by_text("Class balancing").wait_for()
    page.get_by_text("Balance classes with augmented copies").click()
    page.get_by_role("spinbutton", name="Training images per class (about)").fill("1500")
    page.keyboard.press("Enter")
    page.get_by_text("Balance classes to about 1500", exact=False).wait_for()
    save(page, "configure-balance", top="Class balancing", height=520)
    page.get_by_text("Balance classes with augmented copies").click()  # off again: the run below stays quick
    page.get_by_text("Off: every class trains", exact=False).wait_for()

    page.get_by_role("link", name="Train").click()
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Step", exact=True).first.wait_for(timeout=600_000)
    page.wait_for_timeout(6000)
    save(page, "train", height=1000)
    page.get_by_text("Finished: test accuracy", exact=False).wait_for(timeout=900_000)

    page.get_by_role("button", name="Next: Evaluate").click()
    page.get_by_text("Confusion matrix").wait_for()
    save(page, "evaluate", height=1500)

    page.get_by_role("button", name="Next: Predict").click()
    page.get_by_text("Drop one or more photos").wait_for()
    photo = sorted((SAMPLES / "flowers" / "tulips").glob("*.jpg"))[-1]
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(photo))
    page.get_by_text("sure)", exact=False).wait_for(timeout=60_000)
    save(page, "predict", height=700)


if __name__ == "__main__":
    main()
