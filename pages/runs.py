"""Runs: every run of this workspace — open one, compare two, download the model, delete."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import charts, navigation, session, widgets
from pipeline.errors import RetrainError
from pipeline.run_rows import run_row
from pipeline.runs import RunDir, refreshed_status
from pipeline.studio.predict_models import delete_workspace_run
from pipeline.studio.run_history import (
    active_runs,
    config_differences,
    download_name,
    find_run,
    run_dataset_text,
    saved_model_zip,
    workspace_runs,
)
from pipeline.studio.workspaces import Workspace

# Each file with what it is for, in a newcomer's words: the format names alone do not say which one to take.
DOWNLOADS = [
    ("model.keras", "Keras model", "application/octet-stream", "The model for Python programs (Keras 3)."),
    ("model.tflite", "TFLite model", "application/octet-stream", "The model for phones and small devices."),
    ("model.onnx", "ONNX model", "application/octet-stream", "The model for programs that run ONNX models."),
    ("labels.txt", "labels.txt", "text/plain", "The class names, one a line, in the order the model answers."),
    ("report.json", "report.json", "application/json", "This run's scores and settings."),
    (
        "preprocessing.json",
        "preprocessing.json",
        "application/json",
        "How a photo is resized before the model sees it: for whoever builds it into another program.",
    ),
]
SAVED_MODEL_HELP = "The model for TensorFlow tools (TensorFlow Serving, converters), zipped."
# The rows of run comparison (run_row's cells, and the preset its settings are), in order.
COMPARED = [
    "state",
    "dataset",
    "test accuracy",
    "settings",
    "backbone",
    "duration",
    "queue wait",
    "max epochs",
    "started",
]
# The runs table as it opens, in pixels: which run, how it went and did, its preset, when, and on what — narrow
# enough for a laptop (about 940 px beside the sidebar at 1400) without sideways scrolling. Set widths, not widths
# by content: a long state ("Reading every image through the backbone") or dataset name is cut, not the table.
TABLE_COLUMNS = {"Run": 185, "State": 130, "Test accuracy": 100, "Settings": 140, "Started": 130, "Dataset": 210}
MORE_COLUMNS = ["Backbone", "Duration", "Queue wait", "Max epochs"]  # one click away, under the table


def show() -> None:
    """The Runs page."""
    ws = session.workspace()
    widgets.header(
        "Runs",
        "Every model trained in this workspace. Open one to evaluate or use it, compare two, download, or delete.",
    )
    current = session.current_run_or_notice(ws)
    runs = workspace_runs(ws)
    if not runs:
        st.info("No runs yet.", icon=":material/history:")
        if st.button("Go to Train", type="primary", icon=":material/model_training:"):
            session.go("train")
        st.stop()

    going = bool(active_runs(ws))
    # Polls only while a run of this workspace is queued or working; stops (by a full rerun) when none is.
    st.fragment(runs_table, run_every=widgets.REFRESH_SECONDS if going else None)(ws, going)

    names = [run.name for run in runs]
    chosen = st.selectbox(
        "Run", names, index=names.index(current.name) if current and current.name in names else 0, key="chosen_run"
    )
    run = find_run(ws, chosen)
    if run is None:  # deleted in another tab since the list was read
        st.warning(f"Run `{chosen}` was just deleted (in another tab?).", icon=":material/delete:")
        if st.button("Refresh the list", icon=":material/refresh:"):
            st.rerun()
        st.stop()
    status = refreshed_status(run)
    icon, words = widgets.state_text(status)
    is_current = bool(current and current.name == run.name)
    st.markdown(
        f"{icon} **{words}** · `{run.name}` · trained on {widgets.plain(run_dataset_text(run))}"
        + (" · current run" if is_current else "")
    )
    if status.get("damaged"):
        st.warning(status["message"], icon=":material/warning:")

    actions = st.columns(4)
    if actions[0].button(
        "Open (make current)",
        icon=":material/open_in_new:",
        width="stretch",
        disabled=bool(current and current.name == run.name),
    ):
        session.make_current(ws, run.name)
        st.rerun()
    if status.get("state") == "done" and actions[1].button(
        "Evaluate it", icon=":material/fact_check:", width="stretch"
    ):
        session.make_current(ws, run.name)
        session.go("evaluate")

    def forget_delete() -> None:
        session.page_state().confirm_delete = None

    @st.dialog("Delete this run?", on_dismiss=forget_delete)
    def confirm_delete(name: str) -> None:
        st.write(f"Run `{name}` and its models will be deleted. This cannot be undone.")
        left, right = st.columns(2)
        if right.button("Keep it", width="stretch"):
            forget_delete()
            st.rerun()
        if left.button("Delete", type="primary", icon=":material/delete:", width="stretch"):
            forget_delete()
            doomed = find_run(ws, name)
            try:
                if doomed is not None:  # else it is gone already (deleted in another tab)
                    delete_workspace_run(ws, doomed)  # its share links revoked first
            except RetrainError as error:
                st.error(str(error))
                return
            session.forget_run(ws, name)
            st.rerun()

    if actions[3].button("Delete…", icon=":material/delete:", width="stretch"):
        session.page_state().confirm_delete = run.name
    # Kept in session state so the dialog stays open until answered, whatever reruns in between.
    if (doomed := session.page_state().confirm_delete) and find_run(ws, doomed):
        confirm_delete(doomed)

    if status.get("state") == "done":
        st.subheader("Downloads")
        st.caption(
            f"Not sure which to take? The bundle holds them all. Every file is named after the run (`{run.name}-…`), "
            "so two runs' models never collide."
        )
        cols = st.columns(3)
        if run.report.is_file():
            widgets.bundle_button(cols[0], run, "Bundle (.zip)", key="download-bundle", primary=True)
        shown = [download for download in DOWNLOADS if (run.path / download[0]).exists()]
        for index, (file, label, mime, use) in enumerate(shown, start=1):
            cols[index % 3].download_button(
                label,
                data=(run.path / file).read_bytes,
                file_name=download_name(run, file),
                mime=mime,
                icon=":material/download:",
                width="stretch",
                on_click="ignore",
                key=f"download-{file}",
                help=use,
            )
        if (run.path / "saved_model").is_dir():
            cols[(len(shown) + 1) % 3].download_button(
                "SavedModel (.zip)",
                data=lambda: saved_model_zip(run),
                file_name=download_name(run, "saved_model.zip"),
                mime="application/zip",
                icon=":material/download:",
                width="stretch",
                on_click="ignore",
                key="download-saved_model",
                help=SAVED_MODEL_HELP,
            )
        exports = status.get("exports") if isinstance(status.get("exports"), dict) else {}
        if unavailable := sorted(str(name) for name, state in exports.items() if state == "unavailable"):
            st.caption(
                f"Not made on this server: {', '.join(unavailable)} (its optional converter is not "
                "installed; report.json says why)."
            )

    st.subheader("Compare two runs")
    pair = st.multiselect(
        "Runs to compare", names, default=names[:2] if len(names) > 1 else names, max_selections=2, key="compare"
    )
    first, second = (find_run(ws, name) for name in pair) if len(pair) == 2 else (None, None)
    if first and second:
        compared = [shown_row(ws, first), shown_row(ws, second)]
        # A table, not metrics or a dataframe: every value is shown whole, however long.
        st.table(
            pd.DataFrame(
                {row["run"]: [row[name] for name in COMPARED] for row in compared},
                index=[name.capitalize() for name in COMPARED],
            )
        )
        curves = []
        for other in (first, second):
            try:
                curves += [{**row, "run": other.name} for row in other.read_metrics()]
            except RetrainError as error:
                st.warning(str(error), icon=":material/warning:")
        if curves:
            left, right = st.columns(2)
            left.plotly_chart(charts.curves_figure(curves, "accuracy", by="run"), key="compare-accuracy")
            right.plotly_chart(charts.curves_figure(curves, "loss", by="run"), key="compare-loss")
        else:
            st.caption("No training curves yet.")
        differences = config_differences(first, second)
        if differences:
            st.markdown("**Settings that differ**")
            rows = pd.DataFrame(differences)
            rows["setting"] = rows["setting"].map(setting_words)
            st.table(rows.set_index("setting"))
        else:
            st.caption("Both runs used the same settings.")
    elif len(names) < 2:
        st.caption("Train a second run to compare them.")

    widgets.next_step("dataset", "Start over with new data", "Or change settings on Configure and train again.")


def shown_row(ws: Workspace, run: RunDir) -> dict[str, str]:
    """run_row's cells in COMPARED's order, with the state in the words the sidebar and Train use ("Finished", not
    "done"), the preset its settings are, and a pair's name spaced to wrap at its "+"."""
    row = run_row(run) | {
        "state": widgets.state_text(refreshed_status(run))[1],
        "settings": widgets.settings_name(ws, run),
    }
    row["backbone"] = widgets.backbone_name(row["backbone"])
    return {name: row[name] for name in ["run", *COMPARED]}


def runs_table(ws: Workspace, was_going: bool) -> None:
    """The notices for runs not finished yet and the table of every run, read again while one is going."""
    going_runs = active_runs(ws)
    if was_going and not going_runs:  # the last run just ended: redraw the whole page (its state line too)
        st.rerun()
    for going in going_runs:  # a notice, never a blocker: finished runs stay usable meanwhile
        words = session.run_state_words(refreshed_status(going))
        st.info(
            f"Run `{going.name}` is not finished yet ({words.lower()}); its row updates when it is.",
            icon=":material/hourglass_top:",
        )
    rows = pd.DataFrame([shown_row(ws, run) for run in workspace_runs(ws)]).rename(columns=str.capitalize)
    table = st.container()  # filled after the chooser below is read, so its choice applies on this very run
    more = st.pills("More columns", MORE_COLUMNS, selection_mode="multi", key="runs_more_columns") or []
    table.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        key="runs_table",
        column_order=[*TABLE_COLUMNS, *(name for name in MORE_COLUMNS if name in more)],
        column_config={
            **{name: st.column_config.TextColumn(width=width) for name, width in TABLE_COLUMNS.items()},
            "Run": st.column_config.TextColumn(width=TABLE_COLUMNS["Run"], pinned=True),  # in view on a phone
            "Settings": st.column_config.TextColumn(
                width=TABLE_COLUMNS["Settings"], help="The preset on Configure the run's settings were"
            ),
            "Duration": st.column_config.TextColumn(help="Time spent working, from leaving the queue to the end"),
            "Queue wait": st.column_config.TextColumn(help="Time spent waiting for a free training slot"),
        },
    )


SETTING_WORDS = {"architecture": "Backbone"}  # the one setting whose field name says less than Configure's label


def setting_words(setting: str) -> str:
    """ "train.learning_rate" → "Learning rate (train.learning_rate)": Configure's words, then the config's name."""
    name = setting.rsplit(".", 1)[-1]
    return f"{SETTING_WORDS.get(name, name.replace('_', ' ').capitalize())} ({setting})"


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
