"""Explore: how many images each class has per split, what they look like, and which files have problems."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import common
from pipeline.workspace import imbalance_advice

GALLERY_PAGE = 24

ws = common.workspace()
common.header("Explore", "Check the data before training: balanced classes, the right photos in each class, "
              "no broken files.")
dataset = common.require_dataset(ws)
counts = dataset.class_counts()

cols = st.columns(4)
cols[0].metric("Usable images", f"{len(dataset.usable()):,}", border=True)
cols[1].metric("Classes", len(dataset.classes), border=True)
cols[2].metric("Problem files", len(dataset.problems), border=True)
cols[3].metric("Duplicate groups", len(dataset.duplicates), border=True)

st.subheader("Images per class")
frame = pd.DataFrame([{"class": label, "split": split, "images": n}
                      for label, splits in counts.items() for split, n in splits.items()])
if not frame.empty:
    fig = px.bar(frame, x="class", y="images", color="split", barmode="stack",
                 category_orders={"split": ["train", "validation", "test"]},
                 color_discrete_map={"train": "#2563eb", "validation": "#f59e0b", "test": "#10b981"})
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="")
    st.plotly_chart(fig, key="class_counts")
    st.caption("Training learns from *train*, *validation* picks the best moment to stop, *test* is held out "
               "for the final score. Images are assigned to a split by their file name, so the split never changes.")
if advice := imbalance_advice(counts):
    st.warning(advice, icon=":material/balance:")

st.subheader("Photos by class")
if dataset.classes:
    left, right = st.columns([2, 1])
    label = left.selectbox("Class", dataset.classes, key="gallery_class")
    rows = dataset.usable()[dataset.usable()["label"] == label]
    pages = max(1, -(-len(rows) // GALLERY_PAGE))
    page = right.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="gallery_page")
    shown = rows.iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    pairs = [(image, file.rsplit("/", 1)[-1][:22])
             for image, file in zip(common.thumbnails(list(shown["path"])), shown["file"], strict=True) if image]
    if pairs:
        st.image([image for image, _ in pairs], caption=[caption for _, caption in pairs], width=120)
    st.caption(f"{len(rows)} usable images in '{label}'.")

st.subheader("Problems")
if dataset.problems:
    st.caption("These files are left out of training. Fix or delete them and load the dataset again.")
    st.dataframe(pd.DataFrame(dataset.problems).rename(columns={"file": "File", "problem": "What is wrong"}),
                 hide_index=True, width="stretch", key="problems")
else:
    st.success("Every image could be read.", icon=":material/check_circle:")
if dataset.duplicates:
    st.markdown("**Duplicates** — the same picture more than once")
    st.dataframe(pd.DataFrame([{"Files": ", ".join(group["files"]), "Classes": ", ".join(sorted(set(group["labels"])))}
                               for group in dataset.duplicates]), hide_index=True, width="stretch", key="duplicates")
if dataset.warnings:
    with st.expander(f"All warnings ({len(dataset.warnings)})"):
        for warning in dataset.warnings:
            st.markdown(f"- {warning}")

common.next_step("pages/configure.py", "Next: Configure", "Choose the backbone and settings, or keep the "
                 "recommended ones.")
