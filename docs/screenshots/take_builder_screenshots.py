"""Retake the README's screenshot of the Build page: a dataset made in the browser from nothing.

    .venv/bin/python docs/screenshots/take_builder_screenshots.py

Starts `streamlit run app.py` with a throwaway data root, opens it in headless Chromium with the fake camera,
creates a dataset on the Dataset page's "New dataset" tab, adds two classes with real flower photos dropped from
../shared/datasets/flowers, takes one photo with the camera, and saves builder.png (the Build page on the class just photographed)
and builder-all-classes.png (every class at a glance). No training, so it takes under a minute.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from take_screenshots import CHROMIUM, CHROMIUM_ARGS, SAMPLES, TALL, WIDTH, free_port, save, start_server

FLOWERS = SAMPLES / "flowers"
CLASSES = ("daisy", "sunflowers")
PER_CLASS = 12


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        server = start_server(Path(scratch) / "data", port, Path(scratch) / "streamlit.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
                    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
                page = browser.new_context(viewport={"width": WIDTH, "height": TALL},
                                           permissions=["camera"]).new_page()
                build(page, f"http://127.0.0.1:{port}")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=20)


def build(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="New dataset").click()
    page.get_by_label("Name of the new dataset").fill("my flowers")
    page.get_by_role("button", name="Create and start adding photos").click()
    page.get_by_text("Add a first class").wait_for(timeout=60_000)
    for label in CLASSES:
        page.get_by_label("New class").fill(label)
        page.get_by_role("button", name="Add class").click()
        page.get_by_text(f"{label}: 0 photos", exact=True).wait_for(timeout=60_000)
        photos = sorted((FLOWERS / label).glob("*.jpg"))[:PER_CLASS]
        page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files([str(p) for p in photos])
        page.get_by_text(f"{label}: {PER_CLASS} photos", exact=True).wait_for(timeout=60_000)
    page.get_by_role("tab", name="Camera").click()
    page.get_by_text("Use the camera").click()
    take = page.get_by_role("button", name="Take Photo")
    take.wait_for(timeout=60_000)
    page.wait_for_timeout(2000)
    take.click()
    page.get_by_text(f"{CLASSES[-1]}: {PER_CLASS + 1} photos", exact=True).wait_for(timeout=60_000)
    page.get_by_role("button", name="Take Photo").wait_for(timeout=60_000)  # ready for the next shot
    page.get_by_role("tab", name="Drop photos").click()  # the class's photos, each with its split, in view
    page.get_by_text("#13 · ").first.wait_for(timeout=60_000)
    save(page, "builder", height=1100)
    page.get_by_text("All classes at a glance").click()
    save(page, "builder-all-classes", top="All classes at a glance", height=700)


if __name__ == "__main__":
    main()
