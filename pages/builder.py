"""Build: make a dataset in the browser, or grow one — classes, photos from files, a zip or the camera."""

from __future__ import annotations

import streamlit as st

from pages import navigation, session, widgets
from pages.gallery import all_classes, plain
from pipeline import dataset_builder as builder
from pipeline.errors import RetrainError
from pipeline.studio.datasets import dataset_config

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp"]
PHOTOS_SHOWN = 48

def show() -> None:
    """The Builder page."""
    ws = session.workspace()
    widgets.header("Build a dataset", "Add a class for each kind of thing the model should tell apart, then photos of "
                  "each: drop files, a zip, or take them with the camera. 20 or more per class is a good start.")


    def act(action, done: str | None = None) -> None:
        """Run one engine change; say what happened (after the rerun that shows it) or why it was refused.

        Either way the upload widgets start fresh, so the rerun does not hand the same files in again.
        """
        state = session.page_state()
        state.builder_round += 1
        try:
            result = action()
        except RetrainError as error:
            state.builder_notice = ("error", str(error))
            return
        if isinstance(result, str):  # a class name: work on that class next
            state.builder_select = result
        if isinstance(result, builder.AddResult):
            done = f"Added {len(result.added)} photo(s)." + (
                f" {len(result.already_there)} were already there." if result.already_there else "")
            refused = [f"{item['file']}: {item['reason']}" for item in result.refused]
            state.builder_notice = ("warning" if refused else "success", " ".join([done, *refused]))
        elif done:
            state.builder_notice = ("success", done)


    def use(root) -> None:
        session.use_dataset(ws, builder.dataset_config_for(root))
        st.rerun()


    root = builder.current_root(ws)
    if root is None:
        with st.form("new_dataset", border=True):
            name = st.text_input("Name of the new dataset", placeholder="e.g. my plants", key="new_dataset_name")
            if st.form_submit_button("Create an empty dataset", type="primary", icon=":material/add:"):
                try:
                    use(builder.new_dataset(ws, name))
                except RetrainError as error:
                    st.error(plain(error), icon=":material/error:")
        config = dataset_config(ws)
        if config is not None:
            st.caption("Or add photos and classes to the current dataset. A folder on the server or a sample is never "
                       "changed: you get an editable copy in your workspace (it counts against your space).")
            if st.button("Grow the current dataset", icon=":material/edit:"):
                try:
                    with st.spinner("Making it editable…"):
                        use(builder.editable_root(ws, config))
                except RetrainError as error:
                    st.error(plain(error), icon=":material/error:")
        st.stop()

    counts = builder.class_counts(root)
    notice = st.empty()  # always there, so the page below keeps its place (and its open tab) whether or not it says
    state = session.page_state()
    kind, message = state.builder_notice or (None, None)
    state.builder_notice = None
    if kind:
        with notice:
            getattr(st, kind)(plain(message))
    round_ = state.builder_round
    top = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    top[0].text(f"Dataset: {builder.dataset_label(root)}")
    top[1].metric("Classes", len(counts))
    top[2].metric("Photos", sum(counts.values()))
    top[3].download_button("Export as zip", lambda: builder.export_zip(root), file_name="dataset.zip",
                           mime="application/zip", icon=":material/download:", on_click="ignore")

    with st.form("add_class", clear_on_submit=True, border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        new_class = left.text_input("New class", placeholder="e.g. cats", key="new_class_name")
        if right.form_submit_button("Add class", icon=":material/add:", width="stretch"):
            act(lambda: builder.add_class(ws, root, new_class), "Class added.")
            st.rerun()
    if not counts:
        st.info("Add a first class: type its name above.", icon=":material/add:")
        st.stop()

    names = list(counts)
    selected, state.builder_select = state.builder_select, None
    if selected in names:
        st.session_state["builder_class"] = selected
    if st.session_state.get("builder_class") not in names:  # deleted or renamed (maybe in another tab)
        st.session_state.pop("builder_class", None)
    chosen = st.selectbox("Class to work on", names, key="builder_class")
    st.text(f"{chosen}: {counts[chosen]} photos")
    drop, camera, from_zip, manage = st.tabs(["Drop photos", "Camera", "A zip of photos", "Rename or delete"],
                                             key="builder_tab", on_change="rerun")
    with drop:
        files = st.file_uploader("Drop photos of this class", type=IMAGE_TYPES, accept_multiple_files=True,
                                 key=f"builder_files_{round_}")
        if files:
            act(lambda: builder.add_photos(ws, root, chosen, [(file.name, file.getvalue()) for file in files]))
            st.rerun()
    with camera:
        if st.toggle("Use the camera", key="builder_camera", help="Your browser asks for permission first."):
            shot = st.camera_input("Take a photo of this class", key=f"builder_shot_{round_}")
            if shot is not None:  # the fresh camera after the rerun is ready for the next shot, same class
                act(lambda: builder.add_photos(ws, root, chosen, [("camera photo", shot.getvalue())]))
                st.rerun()
    with from_zip:
        upload = st.file_uploader("Drop a zip: every photo in it joins this class", type=["zip"],
                                  key=f"builder_zip_{round_}")
        if upload is not None:
            with st.spinner("Unpacking safely and checking every photo…"):
                act(lambda: builder.add_zip(ws, root, chosen, upload.name, upload.getvalue()))
            st.rerun()
    with manage:
        with st.form("rename_class", border=False):
            new_name = st.text_input("New name", value=chosen, key=f"rename_to_{chosen}")
            merge = st.checkbox("If a class has that name, merge this one into it", key="merge")
            if st.form_submit_button("Rename", icon=":material/edit:"):
                act(lambda: builder.rename_class(ws, root, chosen, new_name, merge), "Class renamed.")
                st.rerun()
        sure = st.checkbox(f"Yes, delete this class and its {counts[chosen]} photos", key="confirm_delete_class")
        if st.button("Delete class", icon=":material/delete:", disabled=not sure):
            act(lambda: builder.delete_class(ws, root, chosen), "Class deleted.")
            st.rerun()

    photos = builder.class_photos(root, chosen)
    if photos:
        config = builder.dataset_config_for(root)
        shown = photos[:PHOTOS_SHOWN]
        pairs = [(image, f"#{i + 1} · {builder.photo_split(p.name, config)}")
                 for i, (p, image) in enumerate(zip(shown, widgets.thumbnails([str(p) for p in shown], 96),
                                                    strict=True))
                 if image]
        if pairs:
            st.image([image for image, _ in pairs], caption=[caption for _, caption in pairs], width=96)
        if len(photos) > PHOTOS_SHOWN:
            st.caption(f"The first {PHOTOS_SHOWN} of {len(photos)} photos.")
        numbers = st.multiselect("Photos to remove", range(1, len(shown) + 1), format_func=lambda n: f"#{n}",
                                 key=f"remove_{chosen}_{round_}")
        if st.button("Remove selected photos", icon=":material/delete:", disabled=not numbers):
            act(lambda: builder.remove_photos(ws, root, chosen, [shown[n - 1].name for n in numbers]), "Removed.")
            st.rerun()

    with st.expander("All classes at a glance", expanded=False):
        try:
            all_classes(session.current_dataset(ws))
        except RetrainError as error:
            st.error(plain(error))
    widgets.next_step("train", "Next: Train", "Train as soon as every class has a few photos.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
