"""The drawing helpers that make the pages look alike: user text made plain, the wizard's header and Next button,
thumbnails, settings widgets built from the config dataclasses, a photo with its decision buttons, and the sidebar.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import streamlit as st

from pages import app_words, session
from pipeline.backbones.side_by_side import SEPARATOR, is_side_by_side, split_names
from pipeline.bundle import bundle_bytes
from pipeline.config import PRESETS, RunConfig, knob_of
from pipeline.errors import ImageProblem, RetrainError
from pipeline.images import thumbnail
from pipeline.run_rows import MISSING, format_percent
from pipeline.runs import NOT_STARTED_INFO, STATE_INFO, UNKNOWN, UNKNOWN_INFO, WAITING_INFO, refreshed_status
from pipeline.studio.datasets import decision_text, record_decision, undo_decision
from pipeline.studio.launch import queue_place
from pipeline.studio.next_run import preset_label
from pipeline.studio.run_history import (
    active_runs,
    current_run,
    download_name,
    is_waiting_for_slot,
    run_dataset_text,
)
from pipeline.studio.workspaces import Workspace

# Every character Markdown (GFM autolinks, Streamlit's ":icon:", ":red[...]" and $math$ included) gives a meaning
# to, backslash-escaped: CommonMark lets any ASCII punctuation be escaped, so the text shows exactly as typed. "@"
# for e-mail autolinks; ":" and "." break "https:" and "www." autolinks.
MARKDOWN_CHARACTERS = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~:$&@])")
# How often a live part (the sidebar's run, the Train page's run) reads its run again while one is going.
REFRESH_SECONDS = 1.5
# Float settings whose natural step is not 0.05.
FLOAT_STEPS = {"learning_rate": 0.0005, "fine_tune_learning_rate": 1e-5, "rotation": 5.0, "shear": 5.0}


def plain(value: Any) -> str:
    """A user-supplied string (class, file, dataset name, or a message holding one) for Markdown, shown as typed: a
    class called `*a*` or `[x](y)` is neither formatting nor a link, an address is no live link, and a line break in
    a name cannot start a heading or list."""
    return MARKDOWN_CHARACTERS.sub(r"\\\1", str(value)).replace("\r", " ").replace("\n", " ")


def code_text(value: Any) -> str:
    """A user-supplied string as a Markdown code span (shown literally), however many backticks it holds."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def backbone_name(architecture: str) -> str:
    """A backbone as the user reads it: a file's name without its folder; a pair with spaces round its "+", so a
    narrow column wraps between the two names, not inside one."""
    name = architecture.rsplit("/", 1)[-1]
    return f" {SEPARATOR} ".join(split_names(name)) if is_side_by_side(name) else name


def preparation_note(train) -> str:
    """Why reading the photos takes longer with these settings (a TrainConfig), in a newcomer's words; "" when each
    photo is read once. Counted, not measured: each part of a pair and each mirror view is one more pass."""
    parts = len(split_names(train.architecture)) if is_side_by_side(train.architecture) else 1
    views = 2 if train.mirror_view else 1
    if parts * views == 1:
        return ""
    why = {
        (2, 2): "two networks side by side, each also on its mirror image",
        (2, 1): "two networks side by side",
        (1, 2): "also as its mirror image",
    }.get((parts, views), f"{parts} networks, {views} views")
    times = {2: "about twice", 4: "about four times"}.get(parts * views, f"about {parts * views} times")
    return (
        f"Slower to prepare: each photo is read {parts * views} times ({why}) where one network reads it once, so "
        f"preparing the photos takes {times} as long. Done once: later runs with the same backbone reuse them."
    )


def settings_name(ws: Workspace, run) -> str:
    """The preset a run's settings were, as Configure names them ("Best accuracy", "Quick (edited)"), else "Custom";
    "—" when its config.json cannot be read."""
    try:
        config = RunConfig.load(run.config)
    except RetrainError:
        return MISSING
    names = (preset_label(ws, name, config) for name in PRESETS)
    return next((name for name in names if name != "Custom"), "Custom")


def run_choice_text(ws: Workspace, run) -> str:
    """What tells finished runs of one dataset apart in a list: "Best accuracy · test accuracy 95.0%"."""
    return f"{settings_name(ws, run)} · test accuracy {format_percent(refreshed_status(run).get('test_accuracy'))}"


def header(title: str, intro: str) -> None:
    st.title(title)
    st.caption(intro)


def next_step(page: str, label: str, note: str = "") -> None:
    """The wizard's 'Next' button at the bottom of a page; `page` is a name in pages/navigation.py."""
    st.divider()
    left, right = st.columns([3, 1], vertical_alignment="center")
    if note:
        left.caption(note)
    if right.button(label, type="primary", icon=":material/arrow_forward:", width="stretch", key=f"next-{page}"):
        session.go(page)


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


def queue_words(place) -> str:
    """'number 2 in line (3 waiting, 1 training), starts in about 4 min' for a pipeline.run_queue.Place."""
    words = f"number {place.position} in line ({place.waiting} waiting, {place.running} training)"
    if place.estimate_seconds is None:
        return words + "; no estimate until a run has finished"
    if place.estimate_seconds < 30:
        return words + ", starts any moment now (estimated from recent runs)"
    return words + f", starts in about {max(round(place.estimate_seconds / 60), 1)} min (estimated from recent runs)"


def state_text(status: dict) -> tuple[str, str]:
    """(icon, words) for a run's state (the words are pipeline.runs.STATE_INFO's)."""
    state = status.get("state", "")
    info = (
        WAITING_INFO
        if is_waiting_for_slot(status)
        else UNKNOWN_INFO
        if state == UNKNOWN
        else STATE_INFO.get(state, NOT_STARTED_INFO)
    )
    if state == "caching" and _preparing_backbone(status):  # no image is read yet: say what the wait is
        return f":material/{info.icon}:", PREPARING_WORDS
    return f":material/{info.icon}:", info.words


# A run's state while its "preparing the backbone" stage works (the first run with a backbone on a server).
PREPARING_WORDS = "Preparing the backbone (first time on this server)"


def _preparing_backbone(status: dict) -> bool:
    stages = status.get("stages")
    return isinstance(stages, list) and any(
        isinstance(stage, dict) and stage.get("key") == "preparing" and stage.get("state") == "running"
        for stage in stages
    )


def sidebar(ws: Workspace) -> None:
    """Always visible: the current dataset and the current run with its state (kept live while a run is going)."""
    with st.container():
        if damage := ws.damage():
            st.warning(f"This workspace's saved state was damaged: {damage}", icon=":material/warning:")
        st.markdown("##### Dataset")
        summary = session.dataset_summary(ws)
        if summary:
            st.markdown(
                f":material/folder: **{plain(summary['name'])}**  \n{summary['images']} images · "
                f"{summary['classes']} classes"
            )
        else:
            st.caption("None yet — start on the Dataset page.")
        st.markdown("##### Run")
        going = bool(active_runs(ws))
        # Polls only while this workspace has a run queued or working; stops (by a full rerun) when none has.
        st.fragment(sidebar_run, run_every=REFRESH_SECONDS if going else None)(ws, going)
        st.caption("Bookmark this page's address to come back to your dataset and runs.")


def sidebar_run(ws: Workspace, was_going: bool) -> None:
    """The current run's state, its place in the queue and how many runs of this workspace are going."""
    session.keep_queue_moving()
    going = active_runs(ws)
    if was_going and not going:  # the last run just ended: redraw everything (the page too), and stop polling
        st.rerun()
    run = current_run(ws)
    if run:
        status = refreshed_status(run)
        icon, words = state_text(status)
        st.markdown(f"{icon} **{words}**  \n`{run.name}`")
        st.caption(
            f"Trained on {plain(run_dataset_text(run))}"
            if status.get("state") == "done"
            else f"Dataset: {plain(run_dataset_text(run))}"
        )
        if is_waiting_for_slot(status) and (place := queue_place(run)):
            st.caption(queue_words(place).capitalize())
    else:
        st.caption("No run yet.")
    if len(going) > 1 or (going and (run is None or going[0].name != run.name)):
        st.caption(f"{len(going)} run(s) of this workspace queued or training.")


def knob_input(section: str, values: Any, name: str) -> Any:
    """One widget for one config field, with the field's own help and range; returns the value chosen."""
    knob = knob_of(values, name)
    key, current = f"knob.{section}.{name}", getattr(values, name)
    label = app_words.control_label(name)  # the one label a message about this setting names too
    tip = app_words.knob_help(knob.help)  # the CLI's flags named as this page's controls
    low, high = knob.low, knob.high
    if knob.kind in ("int", "float") and current is not None:
        number = int if knob.kind == "int" else float
        low, high = (None if low is None else number(low)), (None if high is None else number(high))
        current = number(current)
        current = current if low is None else max(current, low)  # a saved value from before the ranges existed
        current = current if high is None else min(current, high)
    if key not in st.session_state:
        st.session_state[key] = "" if current is None else current
    if knob.kind == "bool":
        return st.toggle(label, key=key, help=tip)
    if knob.choices is not None:
        chooser = st.multiselect if knob.kind == "list" else st.selectbox
        return chooser(label, knob.choices, key=key, help=tip)
    if knob.kind == "int":
        return int(st.number_input(label, min_value=low, max_value=high, step=1, key=key, help=tip))
    if knob.kind == "float":
        step = FLOAT_STEPS.get(name, 0.05)
        return float(st.number_input(label, min_value=low, max_value=high, step=step, format="%g", key=key, help=tip))
    return st.text_input(label, key=key, help=tip).strip() or None


def edited_config(config: RunConfig, section: str, values: dict[str, Any]) -> RunConfig:
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})


def decision_row(
    ws: Workspace, image: dict[str, Any], classes: list[str], overrides: dict, key: str, picture: bool = True
) -> None:
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
    row.button(
        "Drop from training",
        key=f"drop-{key}",
        icon=":material/block:",
        on_click=record_decision,
        args=(ws, file),
        kwargs={"drop": True},
    )
    if suggested:
        row.button(
            f"Relabel as {plain(suggested)}",
            key=f"relabel-{key}",
            icon=":material/label:",
            on_click=record_decision,
            args=(ws, file),
            kwargs={"label": suggested},
        )
    others = [name for name in classes if name not in (label, suggested)]
    if others:
        row.menu_button(
            "Another class" if suggested else "Relabel as…",
            others,
            key=f"choose-{key}",
            on_click=_relabel_as_chosen,
            args=(ws, file, f"choose-{key}"),
        )


def _relabel_as_chosen(ws: Workspace, file: str, key: str) -> None:
    if chosen := st.session_state.get(key):
        record_decision(ws, file, label=str(chosen))


def bundle_button(place, run, label: str, key: str, primary: bool = False) -> None:
    """The run's bundle (every checked export, labels, report, model card), named after the run; built on click."""
    place.download_button(
        label,
        data=lambda: bundle_bytes(run.path),
        file_name=download_name(run, "bundle.zip"),
        mime="application/zip",
        type="primary" if primary else "secondary",
        icon=":material/folder_zip:",
        width="stretch",
        on_click="ignore",
        key=key,
        help="Everything in one zip: the model in every format made here, labels.txt, report.json and a model card",
    )
