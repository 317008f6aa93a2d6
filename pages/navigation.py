"""The app's pages in one list: app.py registers them with st.navigation, and pages switch with them.

Each page module in pages/ exposes `show()`. A page here is an `st.Page` of that function with a fixed url path
(/train, /runs, ...), so every page runs inside app.py's navigation (its workspace, its sidebar), whatever the
address, and pages switch with these objects, never with file paths.

One trade-off shaped `run_app`: the design names the folder pages/, and Streamlit switches on its legacy
pages-folder mode for the first session of a server process whenever a folder of that name sits beside the entry
script. In that mode the first run executes the page file the address names (a server's very first request being a
link to /train; AppTest's first run) as `__main__`, without app.py. Each page file therefore ends by handing such a
run to app.py, in the same run (so nothing the user did is lost); app.py's st.navigation ends the legacy mode for
good. Only public API: no flag of Streamlit's is touched.
"""

from __future__ import annotations

import dataclasses
import importlib
import runpy
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parents[1] / "app.py"


@dataclasses.dataclass(frozen=True)
class PageEntry:
    name: str  # the module in pages/ and the url path
    title: str
    icon: str
    section: str


PAGES = [
    PageEntry("dataset", "Dataset", ":material/folder_open:", "Build a model"),
    PageEntry("builder", "Build", ":material/add_photo_alternate:", "Build a model"),
    PageEntry("explore", "Explore", ":material/insights:", "Build a model"),
    PageEntry("configure", "Configure", ":material/tune:", "Build a model"),
    PageEntry("train", "Train", ":material/model_training:", "Build a model"),
    PageEntry("evaluate", "Evaluate", ":material/fact_check:", "Use it"),
    PageEntry("predict", "Predict", ":material/image_search:", "Use it"),
    PageEntry("runs", "Runs", ":material/history:", "Use it"),
]
DEFAULT = "dataset"


def page(name: str) -> st.Page:
    """The st.Page of one page by name ("train"): the same page app.py registers (pages are keyed by url path)."""
    entry = next((entry for entry in PAGES if entry.name == name), None)
    if entry is None:
        raise KeyError(f"No page named {name!r}; the pages are {[entry.name for entry in PAGES]}")
    return st.Page(
        _shower(entry.name), title=entry.title, icon=entry.icon, url_path=entry.name, default=entry.name == DEFAULT
    )


def sections() -> dict[str, list[st.Page]]:
    """Every page, by sidebar section, for st.navigation."""
    grouped: dict[str, list[st.Page]] = {}
    for entry in PAGES:
        grouped.setdefault(entry.section, []).append(page(entry.name))
    return grouped


def _shower(name: str):
    """The page's `show`, its module imported on first use (so the first page paints before the others load)."""

    def show() -> None:
        importlib.import_module(f"pages.{name}").show()

    show.__name__ = show.__qualname__ = name
    return show


def run_app() -> None:
    """Run app.py in this script run: for a page file that Streamlit's pages-folder mode ran by itself."""
    runpy.run_path(str(APP), run_name="__main__")
