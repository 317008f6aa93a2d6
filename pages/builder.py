"""Build: make a dataset in the browser, or grow one — classes, photos from files, a zip or the camera."""

from __future__ import annotations

import streamlit as st

from pages import navigation, session, widgets
from pages.gallery import all_classes
from pipeline import dataset_builder as builder
from pipeline.errors import RetrainError
from pipeline.studio.datasets import dataset_config

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp"]
PHOTOS_SHOWN = 48


def act(action, done: str | None = None) -> None:
    """Run one engine change; say what happened (after the rerun that shows it) or why it was refused.

    Either way the photo picker for removing starts fresh (the numbers it held may now be other photos).
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
        state.builder_notice = ("warning" if result.refused else "success", result.summary())
    elif done:
        state.builder_notice = ("success", done)


def take(ws, key: str, root, what: str) -> None:
    """on_change of a drop zone or the camera: add what came in, to the class shown, before the page reruns.

    The drop zones keep one key for good: a zone given a fresh key after each drop (or 'Add class') was replaced
    in the browser while files dropped on it were still uploading, and those files never arrived. So a zone
    lists what was dropped on it; files taken before (by id) are skipped. The camera gets a fresh key after
    each shot, which is what makes it ready for the next one.
    """
    taken = st.session_state.setdefault("builder_taken", set())
    value = st.session_state.get(key)
    files = [file for file in (value if isinstance(value, list) else [value]) if file and file.file_id not in taken]
    taken.update(file.file_id for file in files)
    if what == "shot":
        st.session_state["builder_shots"] = st.session_state.get("builder_shots", 0) + 1
    name = st.session_state.get("builder_class")
    if files and what == "zip":
        with st.spinner("Unpacking safely and checking every photo…"):
            act(lambda: builder.add_zip(ws, root, name, files[0].name, files[0].getvalue()))
    elif files:
        act(
            lambda: builder.add_photos(
                ws, root, name, [("camera photo" if what == "shot" else file.name, file.getvalue()) for file in files]
            )
        )


def use(ws, root) -> None:
    session.use_dataset(ws, builder.dataset_config_for(root))
    st.rerun()


def show() -> None:
    """The Builder page."""
    ws = session.workspace()
    widgets.header(
        "Build a dataset",
        "Add a class for each kind of thing the model should tell apart, then photos of "
        "each: drop files, a zip, or take them with the camera. 20 or more per class is a good start.",
    )

    root = builder.current_root(ws)
    if root is None:
        with st.form("new_dataset", border=True):
            name = st.text_input("Name of the new dataset", placeholder="e.g. my plants", key="new_dataset_name")
            if st.form_submit_button("Create an empty dataset", type="primary", icon=":material/add:"):
                try:
                    use(ws, builder.new_dataset(ws, name))
                except RetrainError as error:
                    st.error(widgets.plain(error), icon=":material/error:")
        config = dataset_config(ws)
        if config is not None:
            st.caption(
                "Or add photos and classes to the current dataset. A folder on the server or a sample is never "
                "changed: you get an editable copy in your workspace (it counts against your space)."
            )
            if st.button("Grow the current dataset", icon=":material/edit:"):
                try:
                    with st.spinner("Making it editable…"):
                        use(ws, builder.editable_root(ws, config))
                except RetrainError as error:
                    st.error(widgets.plain(error), icon=":material/error:")
        return

    counts = builder.class_counts(root)
    notice = st.empty()  # always there, so the page below keeps its place (and its open tab) whether or not it says
    state = session.page_state()
    kind, message = state.builder_notice or (None, None)
    state.builder_notice = None
    if kind:
        with notice:
            getattr(st, kind)(widgets.plain(message))
    round_ = state.builder_round
    st.text(f"Dataset: {builder.dataset_label(root)}")
    # One row, also on a phone (columns stack there, one per line, pushing the drop zone a screen down).
    top = st.container(horizontal=True, vertical_alignment="bottom", gap="large")
    top.metric("Classes", len(counts), width="content")
    top.metric("Photos", sum(counts.values()), width="content")
    top.download_button(
        "Export as zip",
        lambda: builder.export_zip(root),
        file_name="dataset.zip",
        mime="application/zip",
        icon=":material/download:",
        on_click="ignore",
    )

    with st.form("add_class", clear_on_submit=True, border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.text_input("New class", placeholder="e.g. cats", key="new_class_name")
        # Changes run as callbacks, before the page: an st.rerun() from mid-page made the browser drop and redraw
        # every widget below it — with a drop zone that files were being uploaded to.
        right.form_submit_button(
            "Add class",
            icon=":material/add:",
            width="stretch",
            on_click=act,
            args=(lambda: builder.add_class(ws, root, st.session_state["new_class_name"]), "Class added."),
        )
    if not counts:
        st.info("Add a first class: type its name above.", icon=":material/add:")
        return

    names = list(counts)
    selected, state.builder_select = state.builder_select, None
    if selected in names:
        st.session_state["builder_class"] = selected
    if st.session_state.get("builder_class") not in names:  # deleted or renamed (maybe in another tab)
        st.session_state.pop("builder_class", None)
    chosen = st.selectbox("Class to work on", names, key="builder_class")
    st.text(f"{chosen}: {counts[chosen]} photos")
    drop, camera, from_zip, manage = st.tabs(
        ["Drop photos", "Camera", "A zip of photos", "Rename or delete"], key="builder_tab", on_change="rerun"
    )
    with drop:
        st.file_uploader(
            "Drop photos of this class",
            type=IMAGE_TYPES,
            accept_multiple_files=True,
            key="builder_files",
            on_change=take,
            args=(ws, "builder_files", root, "files"),
        )
    with camera:
        if st.toggle("Use the camera", key="builder_camera", help="Your browser asks for permission first."):
            key = f"builder_shot_{st.session_state.get('builder_shots', 0)}"
            st.camera_input("Take a photo of this class", key=key, on_change=take, args=(ws, key, root, "shot"))
    with from_zip:
        st.file_uploader(
            "Drop a zip: every photo in it joins this class",
            type=["zip"],
            key="builder_zip",
            on_change=take,
            args=(ws, "builder_zip", root, "zip"),
        )
    with manage:
        with st.form("rename_class", border=False):
            st.text_input("New name", value=chosen, key=f"rename_to_{chosen}")
            st.checkbox("If a class has that name, merge this one into it", key="merge")
            st.form_submit_button(
                "Rename",
                icon=":material/edit:",
                on_click=act,
                args=(
                    lambda old=chosen: builder.rename_class(
                        ws, root, old, st.session_state[f"rename_to_{old}"], st.session_state["merge"]
                    ),
                    "Class renamed.",
                ),
            )
        sure = st.checkbox(f"Yes, delete this class and its {counts[chosen]} photos", key="confirm_delete_class")
        st.button(
            "Delete class",
            icon=":material/delete:",
            disabled=not sure,
            on_click=act,
            args=(lambda old=chosen: builder.delete_class(ws, root, old), "Class deleted."),
        )

    photos = builder.class_photos(root, chosen)
    if photos:
        config = builder.dataset_config_for(root)
        shown = photos[:PHOTOS_SHOWN]
        images = widgets.thumbnails([str(p) for p in shown], 96)
        pairs = [
            (image, f"#{i + 1} · {builder.photo_split(p.name, config)}")
            for i, (p, image) in enumerate(zip(shown, images, strict=True))
            if image
        ]
        if pairs:
            st.image([image for image, _ in pairs], caption=[caption for _, caption in pairs], width=96)
        if len(photos) > PHOTOS_SHOWN:
            st.caption(f"The first {PHOTOS_SHOWN} of {len(photos)} photos.")
        picker = f"remove_{chosen}_{round_}"
        numbers = st.multiselect(
            "Photos to remove", range(1, len(shown) + 1), format_func=lambda n: f"#{n}", key=picker
        )
        st.button(
            "Remove selected photos",
            icon=":material/delete:",
            disabled=not numbers,
            on_click=act,
            args=(
                lambda old=chosen, listed=shown, key=picker: builder.remove_photos(
                    ws, root, old, [listed[n - 1].name for n in st.session_state[key]]
                ),
                "Removed.",
            ),
        )

    with st.expander("All classes at a glance", expanded=False):
        try:
            all_classes(session.current_dataset(ws))
        except RetrainError as error:
            st.error(widgets.plain(error))
    widgets.next_step("train", "Next: Train", "Train as soon as every class has a few photos.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
