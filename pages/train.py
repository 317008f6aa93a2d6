"""Train: start a run in the background and watch it — caching, training curves, the queue, cancel."""

from __future__ import annotations

import streamlit as st

from pages import app_words, charts, navigation, session, widgets
from pipeline.config import RunConfig
from pipeline.errors import RetrainError
from pipeline.run_rows import format_duration, format_percent
from pipeline.runs import RunDir, cancel_run, refreshed_status
from pipeline.stage_progress import run_estimate_line, stage_lines
from pipeline.studio.launch import queue_place, start_run
from pipeline.studio.next_run import preset_label, working_config
from pipeline.studio.run_history import (
    find_run,
    is_active,
    is_waiting_for_slot,
    run_dataset_text,
    test_split_warning,
    workspace_runs,
)


def show() -> None:
    """The Train page."""
    ws = session.workspace()
    widgets.header(
        "Train",
        "Training runs on the server in the background: you can close this tab and come back with the same address.",
    )
    dataset = session.require_dataset(ws)
    config = working_config(ws)
    summary = session.dataset_summary(ws)
    preset = preset_label(ws, session.preset(ws), config)

    with st.container(border=True):
        st.caption("The next run")
        cols = st.columns(4)
        cols[0].markdown(f"**Dataset**  \n{widgets.plain(summary.get('name', '—'))}")
        cols[1].markdown(f"**Photos**  \n{len(dataset.usable()):,} in {len(dataset.classes)} classes")
        cols[2].markdown(f"**Backbone**  \n{widgets.plain(widgets.backbone_name(config.train.architecture))}")
        cols[3].markdown(f"**Settings**  \n{preset}: up to {config.train.epochs} epochs")
        if note := widgets.preparation_note(config.train):
            st.caption(note)

    run = session.current_run_or_notice(ws)
    status = refreshed_status(run) if run is not None else {}
    running = run is not None and is_active(status)
    finished = status.get("state") == "done"  # its result is below: "Next: Evaluate" is the step, not a rerun
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.caption(
        "A run is in progress. Starting another one puts it in the queue."
        if running
        else (
            "The last run is finished: its result is below. The settings changed since: Start training runs them."
            if settings_changed_since(run, config)
            else "The last run is finished: its result is below. To train another, change the backbone or settings "
            "on Configure first."
        )
        if finished
        else "Change the backbone or settings on Configure."
    )
    if right.button(
        "Start another run" if running else "Start training",
        type="secondary" if running or finished else "primary",
        icon=":material/play_arrow:",
        width="stretch",
        key="start_run",
    ):  # one widget whatever its label
        try:
            run = start_run(ws, config, dataset)  # checks the dataset, settings and this workspace's queue first
        except RetrainError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.rerun()

    def draw(run: RunDir) -> dict:
        """The run's state, progress, numbers and curves, as status.json and metrics.csv say now."""
        status = refreshed_status(run)
        state = status.get("state", "")
        words = widgets.state_text(status)[1]
        st.subheader(words, anchor=False)
        verb = "trained on" if state == "done" else "trains on" if is_active(status) else "on"
        st.caption(f"Run `{run.name}` · {verb} {widgets.plain(run_dataset_text(run))}")
        if is_waiting_for_slot(status):
            place = queue_place(run)
            where = f" {widgets.queue_words(place).capitalize()}." if place else ""
            st.info(
                f"Waiting for a free training slot: another run is training now.{where} This one starts by itself "
                "when its turn comes.",
                icon=":material/hourglass_top:",
            )
        lines = stage_lines(status)
        if is_active(status) and not is_waiting_for_slot(status):  # a waiting run's notice above says it all
            estimate = run_estimate_line(status)
            if not estimate:  # model files cannot be counted while written: say what is happening instead
                estimate = (
                    "writing and checking the model files (no time estimate for this part)"
                    if state == "exporting"
                    else "whole run: no estimate until a stage can be timed"
                )
            st.progress(min(max(status.get("progress", 0.0), 0.0), 1.0), text=estimate.capitalize())
            if lines:  # one honest line per stage (runs from before the stage board show their step only)
                # "preparing the backbone" has its own line (first time on this server: a minute or more)
                st.markdown("\n".join(f"- {widgets.plain(app_words.engine_words(line))}" for line in lines))
            elif status.get("step"):
                st.caption(widgets.plain(app_words.engine_words(status["step"])))
        elif lines:
            with st.expander("Stages"):
                st.markdown("\n".join(f"- {widgets.plain(app_words.engine_words(line))}" for line in lines))
        try:
            rows = run.read_metrics()
        except RetrainError as error:
            st.warning(str(error), icon=":material/warning:")
            rows = []
        if rows:
            numbers = st.columns(4)
            last = rows[-1]
            total = status.get("total_steps")
            numbers[0].metric("Step", f"{int(last['step'])}" + (f" / {total}" if total else ""))
            numbers[1].metric("Training loss", f"{last['train_loss']:.3f}")
            accuracy = last["val_accuracy"] if last["val_accuracy"] is not None else last["train_accuracy"]
            numbers[2].metric("Validation accuracy", format_percent(accuracy))
            numbers[3].metric("Training time", format_duration(last["elapsed_seconds"]))
        if rows:
            left, right = st.columns(2)
            left.plotly_chart(charts.curves_figure(rows, "loss"), key=f"loss-{run.name}")
            right.plotly_chart(charts.curves_figure(rows, "accuracy"), key=f"accuracy-{run.name}")
        if status.get("damaged"):
            st.warning(status["message"], icon=":material/warning:")
        if state == "failed":
            reason = app_words.engine_words(status.get("message") or "no reason was recorded")
            st.error(f"The run failed: {widgets.plain(reason)}", icon=":material/error:")
        elif state == "cancelled":
            st.warning(
                f"Cancelled: {widgets.plain(app_words.engine_words(status.get('message', '')))}",
                icon=":material/cancel:",
            )
        elif state == "exporting" and status.get("test_accuracy") is not None:
            st.info(
                f"Trained: test accuracy {format_percent(status['test_accuracy'])}. The model files are being "
                "written and checked; Evaluate and Predict open when they are ready.",
                icon=":material/hourglass_top:",
            )
        elif state == "done":
            score = f"Finished: test accuracy {format_percent(status.get('test_accuracy'))}."
            if warning := test_split_warning(run, status):  # a score from a handful of photos is no success
                st.warning(
                    f"{score} Too few test images: {widgets.plain(app_words.split_warning_words(warning))}",
                    icon=":material/warning:",
                )
            else:
                st.success(score, icon=":material/check_circle:")
        if is_active(status) and st.button("Cancel this run", icon=":material/stop_circle:", key=f"cancel-{run.name}"):
            cancel_run(run.path)
            st.toast("Cancelling… the run stops after its current batch; cached images are kept.")
        return status

    @st.fragment(run_every=widgets.REFRESH_SECONDS)
    def live(run_name: str) -> None:
        """Redrawn every few seconds while the run works; a full rerun when its stage changes or it ends."""
        run = find_run(ws, run_name)
        if run is None:  # deleted in another tab: the full page says so
            st.rerun()
        session.keep_queue_moving()
        status = draw(run)
        state = session.page_state()
        seen, state.live_state = state.live_state, status.get("state")
        if not is_active(status) or (seen and seen != status.get("state")):
            st.rerun()  # a new stage or the end: redraw the whole page, sidebar included

    if run is None:
        st.info(
            # The same time as the run's own "preparing the backbone" line (pipeline/backbones/runtime.py) says.
            "No run yet. Press **Start training** — the first run on this server also prepares the backbone "
            "(a minute or more; later runs reuse it).",
            icon=":material/model_training:",
        )
    else:
        st.divider()
        if running:
            live(run.name)
        else:
            status = draw(run)
            if status.get("state") == "done":
                widgets.next_step("evaluate", "Next: Evaluate", "See how well the model does on photos it never saw.")
        waiting = [
            other for other in workspace_runs(ws) if other.name != run.name and is_active(refreshed_status(other))
        ]
        if waiting:
            st.caption(
                "Also in this workspace: "
                + ", ".join(
                    f"`{other.name}` ({widgets.state_text(refreshed_status(other))[1].lower()})" for other in waiting
                )
            )


def settings_changed_since(run, config) -> bool:
    """Whether the settings a run started now would get differ from `run`'s (backbone, training, augmentation)."""
    try:
        before = RunConfig.load(run.config).to_dict()
    except RetrainError:  # a damaged config.json: nothing to compare, so say nothing about it
        return False
    now = config.to_dict()
    return any(before.get(part) != now.get(part) for part in ("train", "augment"))


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
