"""Opening the app on one page in AppTest, the one way every app test does it.

The pages are `st.Page` objects of functions (pages/navigation.py), keyed by url path; `AppTest.switch_page` can
name such a page only before the session's first run (by its file, pages/train.py → /train). So each test opens a
fresh session on the page it wants; after that, the app's own buttons move between pages (AppTest follows
`st.switch_page`).
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_app(page: str | None = None, token: str | None = None, timeout: float = 60) -> AppTest:
    """A new session of the app, run once on `page` ("pages/train.py"; default: the landing page) in the workspace
    of `token` (default: a new one)."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    if token:
        at.query_params["ws"] = token
    if page and page != "pages/dataset.py":  # the landing page needs no switch (and a switch would stick to it)
        at.switch_page(page)
    return at.run()
