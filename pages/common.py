"""What every page shares: the session's workspace, the current dataset and run, the sidebar, and the
small drawing helpers that make the pages look alike. Engine work stays in pipeline/; this module
only moves values between st.session_state, the workspace files and the screen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
import os
import re
import sqlite3
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import navigation
from pipeline.config import DatasetConfig, RunConfig, apply_preset
from pipeline.dataset import Dataset, load_dataset
from pipeline.dataset_builder import content_version, shown_name
from pipeline.errors import ImageProblem, RetrainError
from pipeline.progress import Progress
from pipeline.runs import RunDir, refreshed_status
from pipeline.workspace import (
    Workspace,
    current_run,
    dataset_config,
    decision_text,
    dispatch_queue,
    expire_now_and_then,
    forget_missing_run,
    is_valid_token,
    is_waiting_for_slot,
    new_token,
    open_workspace,
    queue_place,
    record_decision,
    save_working_config,
    thumbnail,
    undo_decision,
    with_overrides,
    working_config,
)

# What each run state means to someone who has never trained a model.
STATE_TEXT = {
    "queued": (":material/hourglass_top:", "Queued: waiting to start"),
    "waiting": (":material/hourglass_top:", "Queued: waiting for a free training slot"),
    "caching": (":material/memory:", "Reading every image through the backbone"),
    "augmenting": (":material/auto_awesome:", "Making augmented copies"),
    "training": (":material/model_training:", "Training"),
    "evaluating": (":material/fact_check:", "Testing on held-out images"),
    "exporting": (":material/inventory_2:", "Exporting the model"),
    "done": (":material/check_circle:", "Finished"),
    "failed": (":material/error:", "Failed"),
    "cancelled": (":material/cancel:", "Cancelled"),
    "unknown": (":material/help:", "Unknown: its status.json is damaged"),
}
# What can turn text into a live link, image or styled text in Streamlit's Markdown, backslash-escaped: brackets
# (links, images, ":red[...]" directives, reference definitions), angle brackets (autolinks, HTML), "@" (e-mail
# autolinks), backslashes (so no escape is undone); and the ":" of "https:" or "mailto:" and the "." of "www." (GFM
# autolinks of bare addresses). Everything else stays as typed, so messages read (and compare) as they were.
LINK_CHARACTERS = re.compile(r"[\\\[\]<>@]")
BARE_ADDRESS = re.compile(r"\b(https?|mailto|xmpp|www)([:.])", re.IGNORECASE)
# Float settings whose natural step is not 0.05.
FLOAT_STEPS = {"learning_rate": 0.0005, "fine_tune_learning_rate": 1e-5, "rotation": 5.0, "shear": 5.0}


# ---- User-supplied text: shown as plain text, never as live links or images ---------------------------------------

def plain(value: Any) -> str:
    """A user-supplied string (class, file, dataset name, or a message holding one) for Markdown: no live links."""
    text = LINK_CHARACTERS.sub(lambda match: "\\" + match.group(0), str(value))
    return BARE_ADDRESS.sub(lambda match: f"{match.group(1)}\\{match.group(2)}", text)


def code_text(value: Any) -> str:
    """A user-supplied string as a Markdown code span (shown literally), however many backticks it holds."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def chart_text(value: Any) -> str:
    """A user-supplied string for a plotly chart: its pseudo-HTML (<a href>, <b>) shown as the characters typed."""
    return html.escape(str(value), quote=False)


# ---- The session's workspace ------------------------------------------------------------------------------------

def open_session_workspace() -> Workspace | None:
    """The workspace named by the URL's ?ws= (kept there so the same link reopens it), new if none or malformed."""
    token = st.query_params.get("ws")
    if not is_valid_token(token):
        if token:
            st.toast("That link's workspace id is not valid, so a new workspace was started.", icon=":material/info:")
        token = st.session_state.get("ws") if is_valid_token(st.session_state.get("ws")) else new_token()
    st.session_state["ws"] = token
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
    return open_workspace(st.session_state["ws"])


def go(page: str) -> None:
    """Switch to another page by its name in pages/navigation.py ("train"), keeping the workspace in the URL."""
    st.switch_page(navigation.page(page), query_params={"ws": st.session_state["ws"]})


def next_step(page: str, label: str, note: str = "") -> None:
    """The wizard's 'Next' button at the bottom of a page; `page` is a name in pages/navigation.py."""
    st.divider()
    left, right = st.columns([3, 1], vertical_alignment="center")
    if note:
        left.caption(note)
    if right.button(label, type="primary", icon=":material/arrow_forward:", width="stretch", key=f"next-{page}"):
        go(page)


def header(title: str, intro: str) -> None:
    st.title(title)
    st.caption(intro)


# ---- The current dataset ----------------------------------------------------------------------------------------

def use_dataset(ws: Workspace, config: DatasetConfig) -> Dataset:
    """Read and check a dataset with a progress bar, and make it the workspace's current one.

    Its decisions (drop, relabel) live in the workspace's file for this dataset, kept when it is chosen again.
    """
    config = with_overrides(ws, config)
    bar = st.progress(0.0, text="Checking images…")

    def show(progress: Progress) -> None:
        bar.progress(min(progress.fraction, 1.0), text=f"Checking images: {progress.done}/{progress.total} "
                     f"({progress.per_second:.0f} per second)")

    dataset = load_dataset(config, check_images=True, progress=show)
    bar.empty()
    ws.update_state(dataset=dataclasses.asdict(config))
    _remember_dataset(ws, config, dataset)
    return dataset


def current_dataset(ws: Workspace) -> Dataset | None:
    """The workspace's dataset with its decisions applied, read once per session; None if there is none.

    Every image is decoded on the first read. When only the decisions changed since, the dataset is
    listed again without decoding (a second, not a minute, on a big one) and the broken images
    found the first time are marked again.
    """
    config = dataset_config(ws)
    if config is None:
        return None
    key, version = _dataset_key(dataclasses.asdict(config)), _dataset_version(config)
    cached = st.session_state.get("dataset_cache")
    if cached and cached[:2] == (key, version):
        return cached[2]
    if cached and cached[0] == key:
        dataset = load_dataset(config, check_images=False)
        dataset.mark_problems(cached[3])
    else:
        with st.spinner("Reading the dataset…"):
            dataset = load_dataset(config, check_images=True)
    _remember_dataset(ws, config, dataset)
    return dataset


def _remember_dataset(ws: Workspace, config: DatasetConfig, dataset: Dataset) -> None:
    summary = {"name": shown_name(ws, config), "images": int(len(dataset.usable())), "classes": len(dataset.classes),
               "problems": len(dataset.problems)}
    if ws.state().get("dataset_summary") != summary:
        ws.update_state(dataset_summary=summary)
    broken = dict(zip(dataset.table["path"], dataset.table["problem"], strict=True))
    broken = {path: problem for path, problem in broken.items() if problem}
    st.session_state["dataset_cache"] = (_dataset_key(dataclasses.asdict(config)), _dataset_version(config),
                                         dataset, broken)


def _dataset_version(config: DatasetConfig) -> tuple[int, int]:
    """Changes when the decisions change, or the photos of a dataset built in the browser (another tab too)."""
    return _file_version(config.overrides), content_version(config)


def _file_version(path: str | None) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return 0


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


@st.cache_data(max_entries=4000, show_spinner=False)
def cached_thumbnail(path: str, size: int, modified: float) -> bytes:
    """A gallery thumbnail as JPEG bytes; `modified` makes a changed file a new entry."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(thumbnail(path, size)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def thumbnails(paths: list[str], size: int = 120) -> list[bytes | None]:
    """Thumbnails of image files; None for a file that cannot be shown."""
    shown = []
    for path in paths:
        try:
            shown.append(cached_thumbnail(str(path), size, os.path.getmtime(path)))
        except (ImageProblem, OSError):
            shown.append(None)
    return shown


def dataset_key(ws: Workspace) -> str:
    """Names the workspace's current dataset (its source and split settings), for caches of things about it."""
    config = dataset_config(ws)
    return _dataset_key(dataclasses.asdict(config)) if config else ""


def _dataset_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


# ---- The current run --------------------------------------------------------------------------------------------

def current_run_or_notice(ws: Workspace) -> RunDir | None:
    """The current run; when it was deleted (in another tab) it is forgotten, and the page says so."""
    if gone := forget_missing_run(ws):
        st.warning(f"Run `{gone}` was deleted (in another tab?), so there is no current run now.",
                   icon=":material/delete:")
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


def keep_queue_moving() -> None:
    """Start queued runs whose turn has come (runs also do this as they end; this covers a run that died)."""
    try:
        dispatch_queue()
    except (RetrainError, OSError, sqlite3.Error) as error:
        st.warning(f"The training queue cannot be read: {error}", icon=":material/warning:")


def queue_words(place) -> str:
    """'number 2 in line (3 waiting, 1 training), starts in about 4 min' for a pipeline.run_queue.Place."""
    words = f"number {place.position} in line ({place.waiting} waiting, {place.running} training)"
    if place.estimate_seconds is None:
        return words + "; no estimate until a run has finished"
    if place.estimate_seconds < 30:
        return words + ", starts any moment now (estimated from recent runs)"
    return words + f", starts in about {max(round(place.estimate_seconds / 60), 1)} min (estimated from recent runs)"


def state_text(status: dict) -> tuple[str, str]:
    """(icon, words) for a run's state."""
    state = "waiting" if is_waiting_for_slot(status) else status.get("state", "")
    return STATE_TEXT.get(state, (":material/radio_button_unchecked:", "Not started"))


def sidebar(ws: Workspace) -> None:
    """Always visible: the current dataset and the current run with its state."""
    state = ws.state()
    with st.container():
        if damage := ws.damage():
            st.warning(f"This workspace's saved state was damaged: {damage}", icon=":material/warning:")
        st.markdown("##### Dataset")
        summary = state.get("dataset_summary")
        if summary:
            st.markdown(f":material/folder: **{plain(summary['name'])}**  \n{summary['images']} images · "
                        f"{summary['classes']} classes")
        else:
            st.caption("None yet — start on the Dataset page.")
        st.markdown("##### Run")
        keep_queue_moving()
        run = current_run(ws)
        if run:
            status = refreshed_status(run)
            icon, words = state_text(status)
            st.markdown(f"{icon} **{words}**  \n`{run.name}`")
            if is_waiting_for_slot(status) and (place := queue_place(run)):
                st.caption(queue_words(place).capitalize())
        else:
            st.caption("No run yet.")
        st.caption("Bookmark this page's address to come back to your dataset and runs.")


# ---- Settings widgets, built from the config dataclasses ----------------------------------------------------------

def knob_input(section: str, values: Any, name: str, label: str | None = None) -> Any:
    """One widget for one config field, with the field's own help and range; returns the value chosen."""
    field = next(f for f in dataclasses.fields(values) if f.name == name)
    key, help_text, current = f"knob.{section}.{name}", field.metadata.get("help", ""), getattr(values, name)
    label = label or name.replace("_", " ").capitalize()
    kind = str(field.type)
    low, high = field.metadata.get("min"), field.metadata.get("max")
    if kind in ("int", "float"):
        number = int if kind == "int" else float
        low, high = (None if low is None else number(low)), (None if high is None else number(high))
        current = number(current)
        current = current if low is None else max(current, low)  # a saved value from before the ranges existed
        current = current if high is None else min(current, high)
    if key not in st.session_state:
        st.session_state[key] = "" if current is None else current
    if kind == "bool":
        return st.toggle(label, key=key, help=help_text)
    if "choices" in field.metadata and kind.startswith("list"):
        return st.multiselect(label, field.metadata["choices"], key=key, help=help_text)
    if "choices" in field.metadata:
        return st.selectbox(label, field.metadata["choices"], key=key, help=help_text)
    if kind == "int":
        return int(st.number_input(label, min_value=low, max_value=high, step=1, key=key, help=help_text))
    if kind == "float":
        step = FLOAT_STEPS.get(name, 0.05)
        return float(st.number_input(label, min_value=low, max_value=high, step=step, format="%g", key=key,
                                     help=help_text))
    return st.text_input(label, key=key, help=help_text).strip() or None


def forget_knobs() -> None:
    """Drop the widgets' remembered values so they show the saved config again (after a preset)."""
    for key in [key for key in st.session_state if str(key).startswith("knob.")]:
        del st.session_state[key]


def choose_preset(ws: Workspace, name: str) -> None:
    config = apply_preset(working_config(ws), name)
    save_working_config(ws, config)
    ws.update_state(preset=name)
    forget_knobs()


def edited_config(config: RunConfig, section: str, values: dict[str, Any]) -> RunConfig:
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})


# ---- Charts -----------------------------------------------------------------------------------------------------

def curves_figure(rows: list[dict], metric: str, by: str | None = None):
    """A line chart of train and validation `metric` ("loss" or "accuracy") against step."""
    frame = pd.DataFrame(rows)
    columns = [f"train_{metric}", f"val_{metric}"]
    frame = frame.melt(id_vars=["step"] + ([by] if by else []), value_vars=columns, var_name="curve",
                       value_name=metric).dropna()
    frame["curve"] = frame["curve"].map({columns[0]: "training", columns[1]: "validation"})
    fig = px.line(frame, x="step", y=metric, color=by or "curve", line_dash="curve" if by else None, markers=True,
                  title=metric.capitalize(), render_mode="svg")
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend_title_text="")
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def map_figure(points: pd.DataFrame):
    """The dataset map: a dot per photo coloured by class, likely mistakes ringed; hover names the photo."""
    points = points.assign(label=points["label"].map(chart_text), file=points["file"].map(chart_text))
    fig = px.scatter(points, x="x", y="y", color="label", custom_data=["file"], render_mode="svg",
                     category_orders={"label": sorted(points["label"].unique())}, labels={"label": "class"},
                     color_discrete_sequence=px.colors.qualitative.D3)  # neighbouring classes in unlike colours
    # A clicked dot stands out, and the others stay visible around it (plotly's default fades them to 0.2).
    fig.update_traces(marker={"size": 7, "opacity": 0.8}, selected={"marker": {"size": 14, "opacity": 1}},
                      unselected={"marker": {"opacity": 0.5}},
                      hovertemplate="%{customdata[0]}<br>class: %{fullData.name}<extra></extra>")
    suspects = points[points["suspect"]] if "suspect" in points else points.iloc[:0]
    if len(suspects):
        fig.add_scatter(x=suspects["x"], y=suspects["y"], mode="markers", name="likely mistake",
                        customdata=suspects[["file", "label"]].to_numpy(),
                        marker={"symbol": "circle-open", "size": 13, "color": "#111827", "line": {"width": 2}},
                        selected={"marker": {"size": 20, "opacity": 1}}, unselected={"marker": {"opacity": 0.6}},
                        hovertemplate="%{customdata[0]}<br>class: %{customdata[1]} · likely mistake<extra></extra>")
    fig.update_layout(height=460, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="",
                      clickmode="event+select", dragmode="pan")
    fig.update_xaxes(showticklabels=False, title=None, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, showgrid=False, zeroline=False)
    return fig


def balance_figure(counts: pd.DataFrame):
    """Per-class training images now and after balancing, side by side."""
    counts = counts.assign(**{"class": counts["class"].map(chart_text)})
    fig = px.bar(counts, x="class", y="images", color="when", barmode="group", text="images",
                 color_discrete_map={"now": "#94a3b8", "after balancing": "#2563eb"})
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="",
                      yaxis_title="training images")
    fig.update_traces(textposition="outside", cliponaxis=False)
    return fig


# ---- One image and what was decided about it ----------------------------------------------------------------------

def decision_row(ws: Workspace, image: dict[str, Any], classes: list[str], overrides: dict, key: str,
                 picture: bool = True) -> None:
    """A photo with its label (and the label a model suggests), and buttons to drop it, relabel it, or undo.

    `image` has file, path, label and optionally suggested and suggested_probability. The choice is
    written to the dataset's decisions file at once (by callbacks, so the page redraws with it).
    """
    file, label, suggested = image["file"], image["label"], image.get("suggested")
    if picture:
        left, words, actions = st.columns([1, 2.6, 4.4], vertical_alignment="center")
        if shown := thumbnails([image["path"]], 96)[0]:
            left.image(shown, width=80)
    else:
        words, actions = st.container(), st.container()
    guess = f" · looks like **{plain(suggested)}** ({image['suggested_probability']:.0%})" if suggested else ""
    words.markdown(f"{code_text(file)}  \nlabelled **{plain(label)}**{guess}")
    if decided := decision_text(overrides, file):
        words.caption(f":material/check_circle: {decided.capitalize()} (your photo is left as it is)")
        actions.button("Undo", key=f"undo-{key}", icon=":material/undo:", on_click=undo_decision, args=(ws, file))
        return
    row = actions.container(horizontal=True)
    row.button("Drop from training", key=f"drop-{key}", icon=":material/block:", on_click=record_decision,
               args=(ws, file), kwargs={"drop": True})
    if suggested:
        row.button(f"Relabel as {plain(suggested)}", key=f"relabel-{key}", icon=":material/label:",
                   on_click=record_decision, args=(ws, file), kwargs={"label": suggested})
    others = [name for name in classes if name not in (label, suggested)]
    if others:
        row.menu_button("Another class" if suggested else "Relabel as…", others, key=f"choose-{key}",
                        on_click=_relabel_as_chosen, args=(ws, file, f"choose-{key}"))


def _relabel_as_chosen(ws: Workspace, file: str, key: str) -> None:
    if chosen := st.session_state.get(key):
        record_decision(ws, file, label=str(chosen))


def duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
