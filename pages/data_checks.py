"""Explore's two checks of the photos themselves: likely mistakes (a background check with a live progress line,
its results kept and paged) and near-duplicate groups (with drop-all-but-one and label-all actions)."""

from __future__ import annotations

import streamlit as st

from pages import app_words, charts, widgets
from pipeline.dataset import Dataset
from pipeline.errors import RetrainError
from pipeline.studio import mistakes
from pipeline.studio.datasets import decisions
from pipeline.studio.workspaces import Workspace

SUSPECTS_PAGE = 8
GROUPS_PAGE = 5
MAP_LAYOUTS = {"Quick": "pca", "Clearer clusters": "tsne"}
POLL_SECONDS = 1.5


def likely_mistakes(ws: Workspace, dataset: Dataset) -> None:
    """Start, watch, cancel and read the background check for likely mistakes."""
    page = st.session_state.get("suspects_page") or 1
    view = mistakes.mistakes_view(ws, dataset, page, SUSPECTS_PAGE)
    running = view.state in mistakes.RUNNING
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    layout = left.segmented_control(
        "Map layout",
        list(MAP_LAYOUTS),
        default="Quick",
        key="map_layout",
        help="Quick (PCA): instant, distances are honest. Clearer clusters (t-SNE): groups "
        "stand out, slower; distances between groups mean little.",
    )
    if right.button(
        "Check again" if view.page else "Find likely mistakes",
        icon=":material/search_check:",
        type="secondary" if view.page else "primary",
        key="find_mistakes",
        disabled=running,
        width="stretch",
    ):
        try:
            mistakes.start_check(ws, MAP_LAYOUTS[layout or "Quick"])
        except RetrainError as error:
            st.error(f"Cannot start the check: {widgets.plain(error)}", icon=":material/error:")
        else:
            st.rerun()
    if running:
        _progress(ws)
    elif view.state == "cancelled":
        st.info(
            f"The last check was cancelled: {widgets.plain(app_words.engine_words(view.line))}", icon=":material/info:"
        )
    elif view.state in ("failed", "damaged"):
        st.error(
            f"The last check {'failed' if view.state == 'failed' else 'cannot be read'}: "
            f"{widgets.plain(app_words.engine_words(view.line))}",
            icon=":material/error:",
        )
    if view.problem:
        st.error(widgets.plain(view.problem), icon=":material/error:")
    if view.page is not None:
        _results(ws, dataset, view)


@st.fragment(run_every=POLL_SECONDS)
def _progress(ws: Workspace) -> None:
    """The running check's line, redrawn every POLL_SECONDS; the whole page once it ends (to show its results)."""
    state, fraction, line = mistakes.check_progress(ws)
    if state not in mistakes.RUNNING:
        st.rerun(scope="app")
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.progress(fraction, text=f"Looking for likely mistakes: {line}")
    right.button("Cancel", key="cancel_check", icon=":material/cancel:", on_click=mistakes.cancel_check, args=(ws,))
    st.caption("You can leave this page: the check goes on, and its results are kept here.")


def _results(ws: Workspace, dataset: Dataset, view) -> None:
    results, overrides = view.page, decisions(ws)
    decided = len(overrides["drop"]) + len(overrides["relabel"])
    if view.stale:
        st.warning(
            "These results are from an older version of the dataset (its photos changed since the check). "
            "Press *Check again* to update them.",
            icon=":material/history:",
        )
    st.markdown(
        f"**{results.total} likely mistake(s)** among {results.checked_images} photos"
        + (f" · {decided} decision(s) recorded for the next run" if decided else "")
    )
    chart, picked = st.columns([3, 2])
    with chart:
        event = st.plotly_chart(
            charts.map_figure(view.points), key="data_map", on_select="rerun", selection_mode="points"
        )
        st.caption(
            "The dataset map: each dot is a photo, placed so that photos the backbone sees as alike are "
            "close. Ringed dots are likely mistakes. Click a dot to see its photo."
        )
    points = ((event or {}).get("selection") or {}).get("points") or []
    with picked:
        image = mistakes.map_photo(ws, view, (points[0].get("customdata") or [None])[0] if points else None)
        if image is None:
            st.info("Click a dot on the map to see the photo here.", icon=":material/ads_click:")
        else:
            if picture := widgets.thumbnails([image["path"]], 320)[0]:
                st.image(picture, width=320)
            widgets.decision_row(ws, image, dataset.classes, overrides, key="map", picture=False)
    if not results.total:
        st.success("No photo looks like it is in the wrong class.", icon=":material/check_circle:")
        return
    st.caption("Most confident first: the photos the model is surest belong to another class.")
    for suspect in results.suspects:
        with st.container(border=True):
            widgets.decision_row(ws, suspect, dataset.classes, overrides, key=f"suspect-{suspect['file']}")
    if results.pages > 1:
        st.pagination(results.pages, key="suspects_page")


def near_duplicates(ws: Workspace, dataset: Dataset) -> None:
    """Groups of near-identical photos (re-encoded, resized, recoloured), with what to do about each."""
    groups = mistakes.near_duplicate_groups(dataset)
    if mistakes.features_cached(ws, dataset) and st.toggle(
        "Also compare what the backbone sees (finds crops and edits)", key="feature_duplicates"
    ):
        try:
            groups += _feature_groups(ws, dataset)
        except RetrainError as error:
            st.error(widgets.plain(error), icon=":material/error:")
    st.markdown(
        f"**Near-duplicate groups: {len(groups)}** — the same picture saved more than once, maybe "
        "re-encoded or resized. Copies make the score look better than it is when they land in different "
        "splits."
    )
    pages = max(1, -(-len(groups) // GROUPS_PAGE))
    page = st.session_state.get("groups_page") or 1
    for index, group in enumerate(groups[(page - 1) * GROUPS_PAGE : page * GROUPS_PAGE]):
        with st.container(border=True):
            _group(ws, dataset, group, f"near-{(page - 1) * GROUPS_PAGE + index}")
    if pages > 1:
        st.pagination(pages, key="groups_page")


def _feature_groups(ws: Workspace, dataset: Dataset) -> list[dict]:
    usable = tuple(zip(dataset.usable()["file"], dataset.usable()["label"], strict=True))  # decisions change it
    return _cached_feature_groups(str(ws.path), dataset.signature, usable, _ws=ws, _dataset=dataset)


@st.cache_data(max_entries=4, show_spinner="Comparing the cached backbone features…")
def _cached_feature_groups(
    workspace: str, signature: str, usable: tuple, _ws: Workspace, _dataset: Dataset
) -> list[dict]:
    return mistakes.feature_groups(_ws, _dataset)


def _group(ws: Workspace, dataset: Dataset, group: dict, key: str) -> None:
    files, labels = group["files"], group["labels"]
    kinds = {label: labels.count(label) for label in sorted(set(labels))}
    st.markdown(
        f"**{len(files)} photos** labelled "
        + ", ".join(
            f"{widgets.plain(label)}" + (f" ({count})" if len(kinds) > 1 else "") for label, count in kinds.items()
        )
    )
    stems = [file.rsplit("/", 1)[-1].rsplit(".", 1)[0] for file in files]
    captions = [stem if len(stem) <= 12 else stem[:11] + "…" for stem in stems]  # one line under a 96-pixel photo
    shown = [
        (image, caption)
        for image, caption in zip(widgets.thumbnails(group["paths"], 96), captions, strict=True)
        if image
    ]
    if shown:
        st.image([image for image, _ in shown], caption=[caption for _, caption in shown], width=96)
    # Each choice over its own button, the two side by side on a desktop and one under the other on a phone
    # (columns stack there): a choice beside its button got so narrow on a phone that the file name was cut.
    keeping, labelling = st.columns(2)
    keep = keeping.selectbox(
        "Photo to keep", files, key=f"keep-{key}", format_func=lambda file: file.rsplit("/", 1)[-1]
    )
    keeping.button(
        "Drop all but this one",
        key=f"dedupe-{key}",
        icon=":material/filter_1:",
        on_click=mistakes.keep_only,
        args=(ws, files, keep),
    )
    if len(set(labels)) > 1:
        label = labelling.selectbox(
            "Class for all of them",
            dataset.classes,
            key=f"label-{key}",
            index=dataset.classes.index(labels[0]) if labels[0] in dataset.classes else 0,
        )
        labelling.button(
            f"Label all as {widgets.plain(label)}",
            key=f"merge-{key}",
            icon=":material/label:",
            on_click=mistakes.label_all,
            args=(ws, files, label),
        )
