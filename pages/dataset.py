"""Dataset: where the photos come from — an uploaded zip, a CSV of labels with a zip, a server folder, a sample."""

from __future__ import annotations

import streamlit as st

from pages import navigation, session, widgets
from pipeline.config import DatasetConfig
from pipeline.dataset import require_trainable
from pipeline.dataset_builder import built_datasets, dataset_config_for, new_dataset
from pipeline.errors import RetrainError
from pipeline.studio.hosting import data_root, list_samples
from pipeline.studio.server_folders import list_server_folders, resolve_server_folder
from pipeline.studio.uploads import dataset_from_zip


def show() -> None:
    """The Dataset page."""
    ws = session.workspace()
    widgets.header(
        "Dataset",
        "Give Retrain Studio your labelled photos: one folder per class (daisy/, roses/, …), "
        "or train/ and val/ folders of them. Nothing is changed in your files.",
    )
    if not session.has_dataset(ws):
        _introduction()

    def load(make_config, what: str) -> None:
        """Unpack (if needed) and check a dataset; errors are shown with the engine's message."""
        what = widgets.plain(what)  # holds a file or folder name someone chose
        try:
            with st.status(f"Reading {what}…", expanded=True) as status:
                st.write("Unpacking safely…" if "zip" in what else "Listing images…")
                config = make_config()
                dataset = session.use_dataset(ws, config)
                status.update(
                    label=f"Read {what}: {len(dataset.usable())} images in {len(dataset.classes)} classes",
                    state="complete",
                    expanded=False,
                )
        except RetrainError as error:
            session.page_state().dataset_error = str(error)
        else:
            session.page_state().dataset_error = None

    def on_new_file(key: str, *files) -> bool:
        """True once per new upload (a rerun must not unpack the same file again)."""
        ids = tuple(file.file_id for file in files)
        handled = session.page_state().uploads_handled
        if handled.get(key) == ids:
            return False
        handled[key] = ids
        return True

    samples = list_samples()
    # Short names: the tab row must fit a phone's width (390 px) without scrolling sideways.
    tabs = st.tabs(["Zip", "CSV + zip", "Folder", "New"] + (["Samples"] if samples else []))
    with tabs[0]:
        upload = st.file_uploader(
            "Drop a zip of your photos here",
            type=["zip"],
            key="zip_upload",
            help="A zip of one folder per class, or of train/ val/ test/ folders of them. "
            "One wrapping top folder is fine.",
        )
        if upload is not None and on_new_file("zip_done", upload):
            load(lambda: dataset_from_zip(ws, upload.name, upload.getvalue()), f"zip {upload.name}")
    with tabs[1]:
        left, right = st.columns(2)
        labels_csv = left.file_uploader("CSV of labels (image_id,label)", type=["csv"], key="csv_upload")
        images_zip = right.file_uploader("Zip of the images it names", type=["zip"], key="csv_zip_upload")
        if labels_csv is not None and images_zip is not None and on_new_file("csv_done", labels_csv, images_zip):
            load(
                lambda: dataset_from_zip(
                    ws, images_zip.name, images_zip.getvalue(), labels_csv.name, labels_csv.getvalue()
                ),
                f"zip {images_zip.name} with {labels_csv.name}",
            )
    with tabs[2]:
        st.caption(f"Folders inside the data folder `{data_root()}` can be used.")
        folders = list_server_folders()
        typed = st.text_input(
            "Folder (inside the data folder)",
            value=folders[0] if folders else "",
            placeholder="e.g. my_photos or projects/cats_vs_dogs",
            key="server_folder",
        )
        if folders:
            st.caption("Folders there: " + ", ".join(widgets.plain(name) for name in folders[:20]))
        if st.button("Use this folder", icon=":material/folder_open:"):
            load(lambda: DatasetConfig(image_dir=str(resolve_server_folder(typed))), f"folder {typed}")
    with tabs[3]:
        st.caption("No photos ready? Start an empty dataset here and add classes and photos (files or the camera).")
        with st.form("new_dataset_here", border=False):
            new_name = st.text_input("Name of the new dataset", placeholder="e.g. my plants", key="new_dataset")
            if st.form_submit_button("Create and start adding photos", type="primary", icon=":material/add:"):
                load(lambda: dataset_config_for(new_dataset(ws, new_name)), "the new dataset")
                if session.page_state().dataset_error is None:
                    session.go("builder")
        if built := built_datasets(ws):
            chosen = st.selectbox("Or open a dataset made here", list(built), key="built_dataset")
            if st.button("Open it", icon=":material/folder_open:"):
                load(lambda: dataset_config_for(built[chosen]), "the dataset")
    if samples:
        with tabs[4]:
            st.caption("Try Retrain Studio on a dataset that is already here.")
            for name, folder in samples.items():
                if st.button(
                    f"Use the {widgets.plain(name)} sample", key=f"sample-{name}", icon=":material/photo_library:"
                ):
                    load(lambda folder=folder: DatasetConfig(image_dir=str(folder)), f"sample {name}")

    if error := session.page_state().dataset_error:
        st.error(widgets.plain(error), icon=":material/error:")

    dataset = None
    if session.has_dataset(ws):
        try:
            dataset = session.current_dataset(ws)
        except RetrainError as error:
            st.error(f"The current dataset cannot be read any more: {widgets.plain(error)}", icon=":material/error:")

    if dataset is not None:
        summary = session.dataset_summary(ws)
        st.subheader(f"Current dataset: {widgets.plain(summary.get('name', ''))}")
        cols = [st.container(horizontal=True)] * 4  # one row that wraps: 2 x 2 on a phone, not 4 tall cards
        cols[0].metric("Usable images", f"{len(dataset.usable()):,}", border=True)
        cols[1].metric("Classes", len(dataset.classes), border=True)
        cols[2].metric("Problem files", len(dataset.problems), border=True)
        cols[3].metric("Warnings", len(dataset.warnings), border=True)
        st.caption(
            "Classes: "
            + ", ".join(map(widgets.plain, dataset.classes[:30]))
            + (" …" if len(dataset.classes) > 30 else "")
        )
        if st.button("Add photos or classes", icon=":material/add_photo_alternate:", key="grow_dataset"):
            session.go("builder")
        try:
            require_trainable(dataset)
        except RetrainError as error:
            st.error(f"This dataset cannot be trained on yet: {widgets.plain(error)}", icon=":material/error:")
            widgets.next_step("explore", "Next: see what is wrong", "Explore lists every problem file.")
        else:
            for warning in dataset.warnings[:3]:
                st.warning(widgets.plain(warning), icon=":material/warning:")
            if len(dataset.warnings) > 3:
                st.caption(f"… and {len(dataset.warnings) - 3} more warnings on the Explore page.")
            st.divider()
            left, middle, right = st.columns([2, 1, 1], vertical_alignment="center")
            left.caption("Look at the data first, or go straight to training with the recommended settings.")
            if middle.button("Explore the data", icon=":material/insights:", width="stretch"):
                session.go("explore")
            if right.button("Next: Train", type="primary", icon=":material/arrow_forward:", width="stretch"):
                session.go("train")


def _introduction() -> None:
    """What the app does, for someone who has never trained a model: shown until a dataset is chosen."""
    with st.container(border=True, key="introduction"):
        st.markdown(
            "**Teach a computer to tell your photos apart** — e.g. healthy and sick leaves, or your five "
            "products on a shelf. No coding or machine-learning knowledge needed."
        )
        st.markdown(
            "1. **Dataset**: give it photos sorted into one folder per kind of thing.\n"
            "2. **Explore**: check them — broken files, copies, photos in the wrong folder.\n"
            "3. **Train**: it learns from your photos (a few minutes).\n"
            "4. **Evaluate**: see how often it is right on photos it has not seen.\n"
            "5. **Predict**: try it on new photos, download it, or share it."
        )
        st.caption(
            ":material/lock: Your photos stay on this server, in a workspace only your link opens. Keep the "
            "address of this page to come back to it."
        )


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
