"""Runs: every run of this workspace — open one, compare two, download the model, delete."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import charts, navigation, session, widgets
from pipeline.errors import RetrainError
from pipeline.runs import refreshed_status
from pipeline.studio.predict_models import delete_workspace_run
from pipeline.studio.run_history import config_differences, find_run, run_summary, saved_model_zip, workspace_runs

DOWNLOADS = [("model.keras", "Keras model", "application/octet-stream"),
             ("model.tflite", "TFLite model", "application/octet-stream"),
             ("labels.txt", "labels.txt", "text/plain"), ("report.json", "report.json", "application/json")]

def show() -> None:
    """The Runs page."""
    ws = session.workspace()
    widgets.header("Runs", "Every model trained in this workspace. Open one to evaluate or use it, compare two, "
                  "download, or delete.")
    current = session.current_run_or_notice(ws)
    runs = workspace_runs(ws)
    if not runs:
        st.info("No runs yet.", icon=":material/history:")
        if st.button("Go to Train", type="primary", icon=":material/model_training:"):
            session.go("train")
        st.stop()

    summaries = pd.DataFrame([run_summary(run) for run in runs]).rename(columns=str.capitalize)
    st.dataframe(summaries, hide_index=True, width="stretch", key="runs_table", column_config={
        "Test accuracy": st.column_config.NumberColumn(format="%.1f %%")})

    names = [run.name for run in runs]
    chosen = st.selectbox("Run", names, index=names.index(current.name) if current and current.name in names else 0,
                          key="chosen_run")
    run = find_run(ws, chosen)
    if run is None:  # deleted in another tab since the list was read
        st.warning(f"Run `{chosen}` was just deleted (in another tab?).", icon=":material/delete:")
        if st.button("Refresh the list", icon=":material/refresh:"):
            st.rerun()
        st.stop()
    status = refreshed_status(run)
    icon, words = widgets.state_text(status)
    is_current = bool(current and current.name == run.name)
    st.markdown(f"{icon} **{words}** · `{run.name}`" + (" · current run" if is_current else ""))
    if status.get("damaged"):
        st.warning(status["message"], icon=":material/warning:")

    actions = st.columns(4)
    if actions[0].button("Open (make current)", icon=":material/open_in_new:", width="stretch",
                         disabled=bool(current and current.name == run.name)):
        session.make_current(ws, run.name)
        st.rerun()
    if status.get("state") == "done" and actions[1].button("Evaluate it", icon=":material/fact_check:",
                                                           width="stretch"):
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
        cols = st.columns(5)
        for col, (file, label, mime) in zip(cols, DOWNLOADS, strict=False):
            path = run.path / file
            if path.exists():
                col.download_button(label, data=path.read_bytes, file_name=file if file != "model.keras" else
                                    f"{run.name}.keras", mime=mime, icon=":material/download:", width="stretch",
                                    on_click="ignore", key=f"download-{file}")
        if (run.path / "saved_model").is_dir():
            cols[4].download_button("SavedModel (.zip)", data=lambda: saved_model_zip(run), file_name="saved_model.zip",
                                    mime="application/zip", icon=":material/download:", width="stretch",
                                    on_click="ignore", key="download-saved_model")

    st.subheader("Compare two runs")
    pair = st.multiselect("Runs to compare", names, default=names[:2] if len(names) > 1 else names, max_selections=2,
                          key="compare")
    first, second = (find_run(ws, name) for name in pair) if len(pair) == 2 else (None, None)
    if first and second:
        columns = st.columns(2)
        for column, other in zip(columns, (first, second), strict=True):
            with column:
                row = run_summary(other)
                st.markdown(f"**`{other.name}`** — {row['state']}")
                numbers = st.columns(3)
                accuracy = row["test accuracy"]
                numbers[0].metric("Test accuracy", "—" if accuracy is None else f"{accuracy:.1f}%")
                numbers[1].metric("Duration", widgets.duration(row["duration (s)"]))
                numbers[2].metric("Backbone", row["backbone"])
                try:
                    metrics = other.read_metrics()
                except RetrainError as error:
                    st.warning(str(error), icon=":material/warning:")
                    metrics = []
                if metrics:
                    st.plotly_chart(charts.curves_figure(metrics, "accuracy"), key=f"compare-{other.name}")
                else:
                    st.caption("No training curves yet.")
        differences = config_differences(first, second)
        if differences:
            st.markdown("**Settings that differ**")
            st.dataframe(pd.DataFrame(differences), hide_index=True, width="stretch", key="differences")
        else:
            st.caption("Both runs used the same settings.")
    elif len(names) < 2:
        st.caption("Train a second run to compare them.")

    widgets.next_step("dataset", "Start over with new data", "Or change settings on Configure and train again.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
