"""One list of settings (pipeline/settings.py): every RETRAIN_STUDIO_* variable declared once, read when used, and
the README's table and app.py's docstring made from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import settings
from pipeline.errors import RetrainError

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "app.py", *(REPO / folder for folder in ("pipeline", "pages", "bench", "tests"))]


def python_files():
    for source in SOURCES:
        yield from ([source] if source.is_file() else sorted(source.rglob("*.py")))


def test_every_variable_the_code_names_is_declared_once():
    declared = [setting.name for setting in settings.SETTINGS]
    assert len(declared) == len(set(declared))
    named = {name for path in python_files() for name in re.findall(r"RETRAIN_STUDIO_[A-Z_]*[A-Z]", path.read_text())}
    assert named <= set(declared), f"declare these in pipeline/settings.py: {sorted(named - set(declared))}"


def test_only_the_settings_module_reads_the_environment_for_them():
    reading = re.compile(r"environ(\.get)?[\[(]\s*[\"']RETRAIN_STUDIO_")
    for path in python_files():
        if path.parent.name != "tests" and path != REPO / "pipeline" / "settings.py":
            assert not reading.search(path.read_text()), f"{path} reads a setting itself; use pipeline.settings"


def test_the_readme_and_app_docstring_list_them_as_declared():
    assert settings.readme_table() in (REPO / "README.md").read_text(), (
        "README's settings table is out of date: paste `python -m pipeline.settings readme`"
    )
    assert settings.docstring_block() in (REPO / "app.py").read_text(), (
        "app.py's docstring is out of date: paste `python -m pipeline.settings docstring`"
    )


def test_settings_are_read_when_used(monkeypatch, tmp_path):
    monkeypatch.delenv(settings.MAX_JOBS.name, raising=False)
    assert settings.MAX_JOBS.whole() == 1
    monkeypatch.setenv(settings.MAX_JOBS.name, " 3 ")
    assert settings.MAX_JOBS.whole() == 3
    monkeypatch.setenv(settings.MAX_JOBS.name, "two")
    with pytest.raises(RetrainError, match="RETRAIN_STUDIO_MAX_JOBS='two' is not a whole number"):
        settings.MAX_JOBS.whole()
    monkeypatch.setenv(settings.CACHE.name, str(tmp_path / "cache"))
    assert settings.default_bottleneck_dir() == tmp_path / "cache" / "bottlenecks"
    monkeypatch.delenv(settings.DECODE_BUDGET_PIXELS.name, raising=False)
    assert settings.DECODE_BUDGET_PIXELS.whole(default=7) == 7
