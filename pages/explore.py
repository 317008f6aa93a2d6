"""Explore: how many images each class has per split, what they look like, which files have problems, and
which photos are likely in the wrong class (with a map of the whole dataset) — to drop or relabel them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import charts, navigation, session, widgets
from pages.gallery import all_classes
from pipeline.errors import RetrainError
from pipeline.progress import Progress
from pipeline.studio.datasets import decisions, imbalance_advice
from pipeline.studio.label_check import check_labels
from pipeline.studio.next_run import working_config

GALLERY_PAGE = 24
SUSPECTS_PAGE = 8
MAP_LAYOUTS = {"Quick": "pca", "Clearer clusters": "tsne"}

def show() -> None:
    """The Explore page."""
    ws = session.workspace()
    widgets.header("Explore", "Check the data before training: balanced classes, the right photos in each class, "
                  "no broken files.")
    dataset = session.require_dataset(ws)
    counts = dataset.class_counts()

    cols = st.columns(4)
    cols[0].metric("Usable images", f"{len(dataset.usable()):,}", border=True)
    cols[1].metric("Classes", len(dataset.classes), border=True)
    cols[2].metric("Problem files", len(dataset.problems), border=True)
    cols[3].metric("Duplicate groups", len(dataset.duplicates), border=True)

    st.subheader("Images per class")
    if (fig := charts.class_counts_figure(counts)) is not None:
        st.plotly_chart(fig, key="class_counts")
        st.caption("Training learns from *train*, *validation* picks the best moment to stop, *test* is held out "
                   "for the final score. Images are assigned to a split by their file name, so the split never "
                   "changes.")
    if advice := imbalance_advice(counts):
        st.warning(widgets.plain(advice), icon=":material/balance:")

    st.subheader("Photos by class")
    if dataset.classes:
        left, right = st.columns([2, 1])
        label = left.selectbox("Class", dataset.classes, key="gallery_class")
        rows = dataset.usable()[dataset.usable()["label"] == label]
        pages = max(1, -(-len(rows) // GALLERY_PAGE))
        page = right.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="gallery_page")
        shown = rows.iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
        names = [file.rsplit("/", 1)[-1].rsplit(".", 1)[0] for file in shown["file"]]
        pairs = [(image, name if len(name) <= 15 else name[:14] + "…")  # one line under a 120-pixel photo
                 for image, name in zip(widgets.thumbnails(list(shown["path"])), names, strict=True) if image]
        if pairs:
            st.image([image for image, _ in pairs], caption=[caption for _, caption in pairs], width=120)
        st.caption(f"{len(rows)} usable images in '{widgets.plain(label)}'.")

    st.subheader("All classes at a glance")
    with st.expander(f"A few photos of each of the {len(dataset.classes)} classes, with the split each falls into"):
        all_classes(dataset, advice=False)

    st.subheader("Problems")
    if dataset.problems:
        st.caption("These files are left out of training. Fix or delete them and load the dataset again.")
        st.dataframe(pd.DataFrame(dataset.problems).rename(columns={"file": "File", "problem": "What is wrong"}),
                     hide_index=True, width="stretch", key="problems")
    else:
        st.success("Every image could be read.", icon=":material/check_circle:")
    if dataset.duplicates:
        st.markdown("**Duplicates** — the same picture more than once")
        st.dataframe(pd.DataFrame([{"Files": ", ".join(group["files"]),
                                    "Classes": ", ".join(sorted(set(group["labels"])))}
                                   for group in dataset.duplicates]),
                     hide_index=True, width="stretch", key="duplicates")
    if dataset.warnings:
        with st.expander(f"All warnings ({len(dataset.warnings)})"):
            for warning in dataset.warnings:
                st.markdown(f"- {widgets.plain(warning)}")

    st.subheader("Likely mistakes")
    st.caption("A model trained on the other photos guesses each photo's class. Photos it puts in another class than "
               "their folder says are often mislabelled (or odd). Drop them from training or relabel them: your files "
               "are never changed, the decisions apply to the next run.")
    config = working_config(ws)
    layout = st.segmented_control("Map layout", list(MAP_LAYOUTS), default="Quick", key="map_layout",
                                  help="Quick (PCA): instant, distances are honest. Clearer clusters (t-SNE): groups "
                                       "stand out, about 15 s per 3,000 photos; distances between groups mean little.")
    method = MAP_LAYOUTS[layout or "Quick"]
    check_key = (session.current_dataset_key(ws), config.train.architecture, config.train.bottleneck_layer, method)
    check = session.page_state().label_check
    check = check[1] if check and check[0] == check_key else None
    if st.button("Check again" if check else "Find likely mistakes", icon=":material/search_check:",
                 type="secondary" if check else "primary", key="find_mistakes"):
        bar = st.progress(0.0, text="Loading the backbone…")

        def show(progress: Progress) -> None:
            words = {"caching": "Reading photos through the backbone (once; cached after)", "checking labels":
                     "Checking labels", "mapping": "Drawing the map"}.get(progress.stage, progress.stage.capitalize())
            bar.progress(min(progress.fraction, 1.0), text=f"{words}: {progress.done}/{progress.total}")

        try:
            check = check_labels(dataset, config.train, config.output.bottleneck_dir, method, progress=show)
        except RetrainError as error:
            st.error(f"Cannot check the labels: {error}", icon=":material/error:")
        else:
            session.page_state().label_check = (check_key, check)
        bar.empty()
    if check is not None:
        overrides = decisions(ws)
        decided = len(overrides["drop"]) + len(overrides["relabel"])
        st.markdown(f"**{len(check.suspects)} likely mistake(s)** among {len(check.points)} photos"
                    + (f" · {decided} decision(s) recorded for the next run" if decided else ""))
        chart, picked = st.columns([3, 2])
        with chart:
            event = st.plotly_chart(charts.map_figure(check.points), key="data_map", on_select="rerun",
                                    selection_mode="points")
            st.caption("The dataset map: each dot is a photo, placed so that photos the backbone sees as alike are "
                       "close. Ringed dots are likely mistakes. Click a dot to see its photo.")
        points = ((event or {}).get("selection") or {}).get("points") or []
        with picked:
            file = (points[0].get("customdata") or [None])[0] if points else None
            rows = check.points[check.points["file"] == file]
            if rows.empty:
                st.info("Click a dot on the map to see the photo here.", icon=":material/ads_click:")
            else:
                suspect = next((s for s in check.suspects if s.file == file), None)
                image = {**rows.iloc[0].to_dict(), **(suspect.__dict__ if suspect else {})}
                if picture := widgets.thumbnails([image["path"]], 320)[0]:
                    st.image(picture, width=320)
                widgets.decision_row(ws, image, dataset.classes, overrides, key="map", picture=False)
        if check.suspects:
            pages = -(-len(check.suspects) // SUSPECTS_PAGE)
            page = st.pagination(pages, key="suspects_page") if pages > 1 else 1
            for suspect in check.suspects[(page - 1) * SUSPECTS_PAGE: page * SUSPECTS_PAGE]:
                with st.container(border=True):
                    widgets.decision_row(ws, suspect.__dict__, dataset.classes, overrides,
                                         key=f"suspect-{suspect.file}")
        else:
            st.success("No photo looks like it is in the wrong class.", icon=":material/check_circle:")

    widgets.next_step("configure", "Next: Configure", "Choose the backbone and settings, or keep the "
                     "recommended ones.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
