"""Retrain Studio: turn a zip of labelled photos into an image classifier, in the browser.

    streamlit run app.py

This file only sets the page up, finds the session's workspace, draws the sidebar and hands over to
the chosen page in pages/. Nothing heavy is imported here (no TensorFlow), so the first page paints
at once; the pages import the engine (`pipeline/`) as they need it.

Settings are environment variables only:
    RETRAIN_STUDIO_DATA_ROOT      folder the app reads and writes (default ./data); server folders can be
                                  chosen only inside it, and each browser session's uploads and runs go to
                                  DATA_ROOT/workspaces/<random id>/
    RETRAIN_STUDIO_SAMPLES        folder whose sub-folders are one-click sample datasets (e.g. ../shared/datasets)
    RETRAIN_STUDIO_MAX_JOBS       training runs at once across all sessions (default 1); others wait in a queue
    RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE   runs one session may have queued or training at once (default 2)
    RETRAIN_STUDIO_WORKSPACE_QUOTA_MB         uploads one session may keep, zips and unpacked files (default 2048)
    RETRAIN_STUDIO_MAX_QUEUED     runs waiting at once across all sessions (default 20); more are refused
    RETRAIN_STUDIO_WORKSPACE_QUOTA_MB         (above) counts a session's runs and bottleneck cache too
    RETRAIN_STUDIO_DISK_BUDGET_MB all sessions' workspaces, the queue and the shared cache (default 20480)
    RETRAIN_STUDIO_WORKSPACE_TTL_DAYS         idle workspaces are removed after this many days (default 7; 0 never)
    RETRAIN_STUDIO_MAX_PIXELS     largest image decoded (default 50,000,000 in the app, 100,000,000 on the CLI)
    RETRAIN_STUDIO_DECODE_BUDGET_PIXELS       pixels decoding at once per process (default: MAX_PIXELS)
    STREAMLIT_SERVER_MAX_UPLOAD_SIZE  largest upload in MB (default 500, from .streamlit/config.toml)
    RETRAIN_STUDIO_CACHE          shared caches: built backbones, bottlenecks (default ~/.cache/retrain-studio)
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import navigation, session, widgets
from pipeline.studio.hosting import use_hosted_defaults

# The favicon is a file of ours: a Material-icon favicon is fetched from the internet by the browser.
st.set_page_config(page_title="Retrain Studio", page_icon=str(Path(__file__).parent / ".streamlit" / "favicon.png"),
                   layout="wide")

use_hosted_defaults()  # before any image is decoded; runs started from here inherit it
page = st.navigation(navigation.sections())
workspace = session.open_session_workspace()
if workspace is not None:
    sidebar = st.sidebar.container()
    try:
        page.run()
    finally:  # drawn after the page, so it shows what the page just changed (also when the page stops early)
        with sidebar:
            widgets.sidebar(workspace)
