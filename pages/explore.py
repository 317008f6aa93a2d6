"""Explore: how many images each class has per split, what they look like, which files have problems, and
which photos are likely in the wrong class (with a map of the whole dataset) — to drop or relabel them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import charts, data_checks, navigation, session, widgets
from pages.gallery import all_classes
from pipeline.studio.datasets import imbalance_advice

GALLERY_PAGE = 24


def show() -> None:
    """The Explore page."""
    ws = session.workspace()
    widgets.header(
        "Explore", "Check the data before training: balanced classes, the right photos in each class, no broken files."
    )
    dataset = session.require_dataset(ws)
    counts = dataset.class_counts()

    cols = [st.container(horizontal=True)] * 4  # one row that wraps: 2 x 2 on a phone, not 4 tall cards
    cols[0].metric("Usable images", f"{len(dataset.usable()):,}", border=True)
    cols[1].metric("Classes", len(dataset.classes), border=True)
    cols[2].metric("Problem files", len(dataset.problems), border=True)
    cols[3].metric(
        "Exact duplicates",
        len(dataset.duplicates),
        border=True,
        help="Groups of byte-identical photos; near-duplicates are listed further down.",
    )

    st.subheader("Images per class")
    if (fig := charts.class_counts_figure(counts)) is not None:
        st.plotly_chart(fig, key="class_counts")
        st.caption(
            "Training learns from *train*, *validation* picks the best moment to stop, *test* is held out "
            "for the final score. Images are assigned to a split by their file name, so the split never "
            "changes."
        )
    if advice := imbalance_advice(counts):
        st.warning(widgets.plain(advice), icon=":material/balance:")

    st.subheader("Photos by class")
    if dataset.classes:
        left, right = st.columns([2, 1])
        label = left.selectbox("Class", dataset.classes, key="gallery_class")
        rows = dataset.usable()[dataset.usable()["label"] == label]
        pages = max(1, -(-len(rows) // GALLERY_PAGE))
        page = right.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="gallery_page")
        shown = rows.iloc[(page - 1) * GALLERY_PAGE : page * GALLERY_PAGE]
        names = [file.rsplit("/", 1)[-1].rsplit(".", 1)[0] for file in shown["file"]]
        pairs = [
            (image, name if len(name) <= 15 else name[:14] + "…")  # one line under a 120-pixel photo
            for image, name in zip(widgets.thumbnails(list(shown["path"])), names, strict=True)
            if image
        ]
        if pairs:
            st.image([image for image, _ in pairs], caption=[caption for _, caption in pairs], width=120)
        st.caption(f"{len(rows)} usable images in '{widgets.plain(label)}'.")

    st.subheader("All classes at a glance")
    with st.expander(f"A few photos of each of the {len(dataset.classes)} classes, with the split each falls into"):
        all_classes(dataset, advice=False)

    st.subheader("Problems")
    if dataset.problems:
        st.caption("These files are left out of training. Fix or delete them and load the dataset again.")
        st.dataframe(
            pd.DataFrame(dataset.problems).rename(columns={"file": "File", "problem": "What is wrong"}),
            hide_index=True,
            width="stretch",
            key="problems",
        )
    else:
        st.success("Every image could be read.", icon=":material/check_circle:")
    if dataset.duplicates:
        st.markdown("**Duplicates** — the same picture more than once")
        st.dataframe(
            pd.DataFrame(
                [
                    {"Files": ", ".join(group["files"]), "Classes": ", ".join(sorted(set(group["labels"])))}
                    for group in dataset.duplicates
                ]
            ),
            hide_index=True,
            width="stretch",
            key="duplicates",
        )
    if dataset.warnings:
        with st.expander(f"All warnings ({len(dataset.warnings)})"):
            for warning in dataset.warnings:
                st.markdown(f"- {widgets.plain(warning)}")

    st.subheader("Near-duplicates")
    data_checks.near_duplicates(ws, dataset)

    st.subheader("Likely mistakes")
    st.caption(
        "A model trained on the other photos guesses each photo's class. Photos it puts in another class than "
        "their folder says are often mislabelled (or odd). Drop them from training or relabel them: your files "
        "are never changed, the decisions apply to the next run. The check runs in the background."
    )
    data_checks.likely_mistakes(ws, dataset)

    widgets.next_step("configure", "Next: Configure", "Choose the backbone and settings, or keep the recommended ones.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
