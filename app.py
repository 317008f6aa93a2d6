"""Retrain Studio: turn a zip of labelled photos into an image classifier, in the browser.

    streamlit run app.py

This file only sets the page up, finds the session's workspace, draws the sidebar and hands over to
the chosen page in pages/. Nothing heavy is imported here (no TensorFlow), so the first page paints
at once; the pages import the engine (`pipeline/`) as they need it.

Settings are environment variables only (the list is made by `python -m pipeline.settings docstring`; a test
checks it against pipeline/settings.py):
    RETRAIN_STUDIO_DATA_ROOT (default: ./data)
        folder the app reads and writes: uploads, workspaces and runs (each browser session's in workspaces/ under
        it, by a random id); server folders can only be chosen inside it
    RETRAIN_STUDIO_SAMPLES (default: unset)
        a folder whose sub-folders are offered as one-click sample datasets (e.g. ../shared/datasets)
    RETRAIN_STUDIO_MAX_JOBS (default: 1)
        training runs at once across all sessions; the rest wait in a visible queue
    RETRAIN_STUDIO_MAX_QUEUED (default: 20)
        runs waiting at once across all sessions; more are refused until some start
    RETRAIN_STUDIO_MAX_QUEUED_PER_WORKSPACE (default: 2)
        runs one browser session may have queued or training
    RETRAIN_STUDIO_WORKSPACE_QUOTA_MB (default: 2048)
        what one session may hold: uploads, what they unpack to, its runs and its bottleneck cache
    RETRAIN_STUDIO_DISK_BUDGET_MB (default: 20480)
        what all sessions together may hold: every workspace, the queue and the shared bottleneck cache
    RETRAIN_STUDIO_WORKSPACE_TTL_DAYS (default: 7)
        a workspace unused this long is removed (never while a run of it is queued or working); `0` keeps them
    STREAMLIT_SERVER_MAX_UPLOAD_SIZE (default: 500 (MB, .streamlit/config.toml))
        largest upload, in MB (Streamlit's own setting)
    RETRAIN_STUDIO_MAX_UNZIPPED_MB (default: 2048)
        zip-bomb cap: the most one zip may unpack to
    RETRAIN_STUDIO_MAX_ZIP_FILES (default: 50000)
        zip-bomb cap: the most files and folders in one zip
    RETRAIN_STUDIO_MAX_PIXELS (default: 50000000 in the app, 100000000 on the CLI)
        largest image decoded; larger ones are refused as possible decompression bombs
    RETRAIN_STUDIO_DECODE_BUDGET_PIXELS (default: RETRAIN_STUDIO_MAX_PIXELS)
        pixels being decoded at once in one process, shared by all its decoding threads
    RETRAIN_STUDIO_CACHE (default: ~/.cache/retrain-studio)
        shared caches: built backbones, bottlenecks, unpacked zips
    RETRAIN_STUDIO_RUNTIME (default: unset)
        `tensorflow` runs the built-in backbones on TensorFlow instead of LiteRT
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import navigation, session, widgets
from pipeline.studio.hosting import use_hosted_defaults

# The favicon is a file of ours: a Material-icon favicon is fetched from the internet by the browser.
st.set_page_config(
    page_title="Retrain Studio", page_icon=str(Path(__file__).parent / ".streamlit" / "favicon.png"), layout="wide"
)

use_hosted_defaults()  # before any image is decoded; runs started from here inherit it
if "share" in st.query_params:  # a share link: one read-only page; no workspace is opened or made, no sidebar
    from pages import shared

    st.navigation(
        [st.Page(shared.show, title="Shared model", icon=":material/share:", url_path="shared", default=True)],
        position="hidden",
    ).run()
else:
    page = st.navigation(navigation.sections())
    workspace = session.open_session_workspace()
    if workspace is not None:
        sidebar = st.sidebar.container()
        try:
            page.run()
        finally:  # drawn after the page, so it shows what the page just changed (also when the page stops early)
            with sidebar:
                widgets.sidebar(workspace)
