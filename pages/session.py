"""The browser session: its workspace (named by the URL's ?ws=), what it keeps between reruns (one typed
`PageState`, never loose keys), page switches, and the current dataset and run with the notices when there is none.

Only this module reads or writes st.session_state outside widget keys, and only this module changes the workspace's
saved state for the pages.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from pages import navigation
from pipeline.config import DEFAULT_PRESET, DatasetConfig, apply_preset
from pipeline.dataset import Dataset
from pipeline.errors import RetrainError
from pipeline.progress import Progress
from pipeline.runs import STATE_INFO, RunDir, refreshed_status
from pipeline.studio.current_dataset import DatasetRead, choose_dataset, read_current_dataset
from pipeline.studio.expiry import expire_now_and_then
from pipeline.studio.launch import dispatch_queue
from pipeline.studio.next_run import save_working_config, working_config
from pipeline.studio.run_history import (
    active_runs,
    current_run,
    finished_runs,
    forget_missing_run,
    run_dataset_text,
    run_to_show,
)
from pipeline.studio.workspaces import Workspace, is_valid_token, new_token, open_workspace


@dataclass
class PageState:
    """What one browser session keeps between reruns (widget values keep their own keys)."""

    token: str | None = None  # the session's workspace; also in the URL's ?ws=
    dataset: DatasetRead | None = None  # the current dataset as last read, reused while still true
    dataset_error: str | None = None  # why the last dataset choice failed, shown until the next one
    uploads_handled: dict[str, tuple] = field(default_factory=dict)  # upload widget -> files already read
    label_check: tuple[Any, Any] | None = None  # (what was checked, LabelCheck) of Explore
    live_state: str | None = None  # the run state the live Train view drew last
    confirm_delete: str | None = None  # the run whose deletion waits for an answer
    chosen_run: tuple[str, str] | None = None  # (newest finished run then, run chosen) on Evaluate
    preview_index: int = 0  # which photo Configure's augmentation preview shows
    confusion_clicked: tuple[Any, Any] | None = None  # the confusion-matrix cell clicked last
    builder_round: int = 0  # the builder's upload widgets start fresh after each change
    builder_notice: tuple[str, str] | None = None  # (kind, message) the builder shows after its rerun
    builder_select: str | None = None  # the class the builder works on next


def page_state() -> PageState:
    """This session's PageState (made on first use)."""
    state = st.session_state.get("page_state")
    if not isinstance(state, PageState):  # first use, or a state from before the app's code was reloaded
        state = st.session_state["page_state"] = PageState()
    return state


def open_session_workspace() -> Workspace | None:
    """The workspace named by the URL's ?ws= (kept there so the same link reopens it), new if none or malformed."""
    token = st.query_params.get("ws")
    if not is_valid_token(token):
        if token:
            st.toast("That link's workspace id is not valid, so a new workspace was started.", icon=":material/info:")
        token = page_state().token if is_valid_token(page_state().token) else new_token()
    page_state().token = token
    if st.query_params.get("ws") != token:
        st.query_params["ws"] = token
    with contextlib.suppress(RetrainError, OSError):  # housekeeping: never in the way of this session's page
        expire_now_and_then()  # idle workspaces of other sessions, at most once an hour
    try:
        return open_workspace(token)
    except (RetrainError, OSError) as error:
        st.error(f"Cannot open this workspace: {error}")
        return None


def workspace() -> Workspace:
    """The workspace app.py opened for this run of the script."""
    return open_workspace(page_state().token)


def go(page: str) -> None:
    """Switch to another page by its name in pages/navigation.py ("train"), keeping the workspace in the URL."""
    st.switch_page(navigation.page(page), query_params={"ws": page_state().token})


def use_dataset(ws: Workspace, config: DatasetConfig) -> Dataset:
    """Read and check a dataset with a progress bar, and make it the workspace's current one."""
    bar = st.progress(0.0, text="Checking images…")

    def show(progress: Progress) -> None:
        bar.progress(
            min(progress.fraction, 1.0),
            text=f"Checking images: {progress.done}/{progress.total} ({progress.per_second:.0f} per second)",
        )

    read = choose_dataset(ws, config, progress=show)
    bar.empty()
    page_state().dataset = read
    return read.dataset


def current_dataset(ws: Workspace) -> Dataset | None:
    """The workspace's dataset with its decisions applied, read again only when it changed; None if there is none."""
    state = page_state()
    with st.spinner("Reading the dataset…"):  # shown only when it takes a while (every image decoded)
        state.dataset = read_current_dataset(ws, state.dataset)
    return state.dataset.dataset if state.dataset else None


def require_dataset(ws: Workspace) -> Dataset:
    """The current dataset, or a pointer to the Dataset page and a stop."""
    try:
        dataset = current_dataset(ws)
    except RetrainError as error:
        st.error(f"The dataset cannot be read any more: {error}")
        dataset = None
    if dataset is None:
        st.info("Choose a dataset first: upload a zip of photos, or pick a sample.", icon=":material/folder_open:")
        if st.button("Go to Dataset", type="primary", icon=":material/arrow_back:"):
            go("dataset")
        st.stop()
    return dataset


def current_run_or_notice(ws: Workspace) -> RunDir | None:
    """The current run; when it was deleted (in another tab) it is forgotten, and the page says so."""
    if gone := forget_missing_run(ws):
        st.warning(
            f"Run `{gone}` was deleted (in another tab?), so there is no current run now.", icon=":material/delete:"
        )
    return current_run(ws)


def require_finished_run(ws: Workspace) -> RunDir:
    """The current run when it has finished with a report; otherwise say what to do and stop."""
    run = current_run_or_notice(ws)
    status = refreshed_status(run) if run else {}
    if run is None or status.get("state") != "done" or not run.report.exists():
        what = "No model yet" if run is None else f"Run {run.name} is not finished ({status.get('state', '?')})"
        st.info(f"{what}. Train one first, or open a finished run on the Runs page.", icon=":material/info:")
        left, right = st.columns(2)
        if left.button("Go to Train", type="primary", icon=":material/model_training:"):
            go("train")
        if right.button("Go to Runs", icon=":material/history:"):
            go("runs")
        st.stop()
    return run


def notice_active_runs(ws: Workspace) -> None:
    """One line per run still queued or working, above a page that shows a finished run meanwhile; a run already
    scored (building its model files) says its score, so the finished run's numbers below are not taken for it."""
    from pipeline.run_rows import format_percent

    for run in active_runs(ws):
        status = refreshed_status(run)
        if status.get("state") == "exporting" and status.get("test_accuracy") is not None:
            where = (
                f"Run `{run.name}` is trained (test accuracy {format_percent(status['test_accuracy'])}); its model "
                "files are being written and checked, and it appears here when they are ready."
            )
        else:
            words = run_state_words(status)
            where = f"Run `{run.name}` is not finished yet ({words.lower()}): it appears here when it is."
        st.info(f"{where} Until then this page shows an earlier finished run.", icon=":material/hourglass_top:")


def choose_finished_run(ws: Workspace) -> RunDir:
    """The finished run Evaluate shows: the one chosen, else the current run when finished, else the newest finished.

    Runs still queued or training are a notice above it, never in the way; with no finished run, say what to do and
    stop.
    """
    current_run_or_notice(ws)  # a current run deleted in another tab: forgotten, with a notice
    notice_active_runs(ws)
    finished = finished_runs(ws)
    if not finished:
        st.info("No model yet. Train one first, or open a finished run on the Runs page.", icon=":material/info:")
        left, right = st.columns(2)
        if left.button("Go to Train", type="primary", icon=":material/model_training:"):
            go("train")
        if right.button("Go to Runs", icon=":material/history:"):
            go("runs")
        st.stop()
    names = [run.name for run in finished]
    state = page_state()
    # A choice holds until another run finishes: then the newest is shown (it is what the user waited for).
    chosen = state.chosen_run[1] if state.chosen_run and state.chosen_run[0] == names[0] else None
    shown = chosen if chosen in names else run_to_show(ws, finished).name
    if len(names) > 1:
        key = f"finished_run:{names[0]}"  # a new widget when one more run finishes, so it starts from `shown`

        def remember() -> None:
            state.chosen_run = (names[0], st.session_state[key])

        shown = st.selectbox(
            "Finished run",
            names,
            index=names.index(shown),
            key=key,
            on_change=remember,
            format_func=lambda name: f"{name} · {run_dataset_text(finished[names.index(name)])}",
        )
    return finished[names.index(shown)]


def run_state_words(status: dict[str, Any]) -> str:
    """A run state's words for a notice (pipeline.runs.STATE_INFO's)."""
    info = STATE_INFO.get(status.get("state", ""))
    return info.words if info else str(status.get("state") or "not started")


def keep_queue_moving() -> None:
    """Start queued runs whose turn has come (runs also do this as they end; this covers a run that died)."""
    try:
        dispatch_queue()
    except (RetrainError, OSError, sqlite3.Error) as error:
        st.warning(f"The training queue cannot be read: {error}", icon=":material/warning:")


def choose_preset(ws: Workspace, name: str) -> None:
    """Set the next run's settings from a preset, and drop the widgets' remembered values so they show it."""
    save_working_config(ws, apply_preset(working_config(ws), name))
    ws.update_state(preset=name)
    for key in [key for key in st.session_state if str(key).startswith("knob.")]:
        del st.session_state[key]


# ---- The workspace's saved state, typed -------------------------------------------------------------------------


def preset(ws: Workspace) -> str:
    """The preset the settings were last set from."""
    return str(ws.state().get("preset") or DEFAULT_PRESET)


def dataset_summary(ws: Workspace) -> dict[str, Any]:
    """The current dataset's name, images, classes and problems as last read ({} before one is chosen)."""
    return ws.state().get("dataset_summary") or {}


def has_dataset(ws: Workspace) -> bool:
    return bool(ws.state().get("dataset"))


def make_current(ws: Workspace, run_name: str | None) -> None:
    """Make a run the current one (None: no current run)."""
    ws.update_state(run=run_name)


def forget_run(ws: Workspace, run_name: str) -> None:
    """After a run is deleted: no current run, when it was that one."""
    if ws.state().get("run") == run_name:
        make_current(ws, None)
