"""Navigation goes only through app.py: deep links, the landing page and page switches all run inside the app's
st.navigation (its workspace, its sidebar), with no private Streamlit API (see pages/navigation.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apptest_pages import APP, open_app
from test_app_dataset import data_root  # noqa: F401 (the same empty data root)

from pages import navigation

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("data_root")  # every test in an empty data root
TITLES = {
    "dataset": "Dataset",
    "builder": "Build a dataset",
    "explore": "Explore",
    "configure": "Configure",
    "train": "Train",
    "evaluate": "Evaluate",
    "predict": "Predict",
    "runs": "Runs",
}


def test_no_private_streamlit_api_in_our_code():
    sources = [REPO / "app.py", *(REPO / "pages").glob("*.py"), *(REPO / "pipeline").rglob("*.py")]
    for source in sources:
        text = source.read_text()
        assert not re.search(r"streamlit\.runtime|uses_pages_directory|PagesManager", text), source


def test_every_page_is_registered_once_with_its_own_module():
    assert [entry.name for entry in navigation.PAGES] == list(TITLES)
    for entry in navigation.PAGES:
        source = (REPO / "pages" / f"{entry.name}.py").read_text()
        assert "\ndef show() -> None:" in source, entry.name
        # A run Streamlit's pages-folder mode starts on the file itself is handed to app.py.
        assert source.rstrip().endswith(
            'if __name__ == "__main__":  # Streamlit\'s pages/-folder mode ran this '
            "file by itself: see pages/navigation.py\n    navigation.run_app()"
        ), entry.name
    with pytest.raises(KeyError, match="No page named 'pages/train.py'"):
        navigation.page("pages/train.py")


@pytest.mark.parametrize("name", list(TITLES))
def test_each_page_opens_inside_the_app(name):
    at = open_app(f"pages/{name}.py")
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == TITLES[name]
    assert at.query_params["ws"]  # app.py's workspace
    if name in ("dataset", "configure"):  # pages that do not stop early without a dataset or a run
        assert "Dataset" in " ".join(str(e.value) for e in at.sidebar.markdown)  # app.py's sidebar, drawn after it


def test_a_deep_link_as_a_processes_first_run_goes_through_app_py():
    # A fresh interpreter, as a server's first session has: Streamlit's pages-folder mode runs pages/configure.py
    # by itself; it must hand over to app.py (sidebar, workspace), and its buttons must switch inside the app.
    script = (
        "import json; from streamlit.testing.v1 import AppTest; "
        f"at = AppTest.from_file({APP!r}, default_timeout=60); at.switch_page('pages/configure.py').run(); "
        "first = {'titles': [t.value for t in at.title], 'sidebar': [str(m.value) for m in at.sidebar.markdown],"
        " 'ws': at.query_params.get('ws'), 'exceptions': [str(e.value) for e in at.exception]}; "
        "[b for b in at.button if b.label == 'Next: Train'][0].click().run(); "
        "print(json.dumps({'first': first, 'after': [t.value for t in at.title], "
        "'after_exceptions': [str(e.value) for e in at.exception]}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"]["titles"] == ["Configure"] and not result["first"]["exceptions"], result
    assert any("Dataset" in text for text in result["first"]["sidebar"]) and result["first"]["ws"], result
    assert result["after"] == ["Train"] and not result["after_exceptions"], result


def test_the_wizard_button_switches_page_and_keeps_the_workspace():
    at = open_app("pages/runs.py")
    token = at.query_params["ws"]
    assert at.title[0].value == "Runs"
    [button for button in at.button if button.label == "Go to Train"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Train" and at.query_params["ws"] == token
