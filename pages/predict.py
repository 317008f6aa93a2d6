"""Predict: the model's top guesses for new photos (uploaded or from the camera), or a CSV for a zip of them."""

from __future__ import annotations

import streamlit as st

from pages import charts, navigation, session, widgets
from pages.gallery import plain
from pipeline import dataset_builder as builder
from pipeline.dataset_builder import current_root
from pipeline.errors import ImageProblem, RetrainError
from pipeline.images import decode_image
from pipeline.studio.predict_zip import predict_zip, read_predictions

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp"]

@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def load_predictor(run_path: str, modified: float):
    """One loaded model per finished run (TensorFlow is imported here, not when the app starts)."""
    from pipeline.predict import Predictor

    return Predictor(run_path)


def show() -> None:
    """The Predict page."""
    ws = session.workspace()
    widgets.header("Predict", "Give the model photos it has never seen and look at its top guesses.")
    run = session.require_finished_run(ws)


    def predict(data: bytes) -> list[dict] | ImageProblem:
        """The model's top-k for image bytes, decoded exactly as training decodes; the problem for a bad file."""
        try:
            return predictor.predict_bytes(data, k)
        except ImageProblem as problem:
            return problem


    def show_prediction(name: str, data: bytes, key: str, guesses: list[dict] | ImageProblem | None = None) -> None:
        """The photo and the model's top-k for it (bad files say why), and a way to add it to the dataset."""
        picture, chart = st.columns([1, 2], vertical_alignment="center")
        guesses = predict(data) if guesses is None else guesses
        if isinstance(guesses, ImageProblem):
            picture.error(f"{widgets.plain(name)}: {widgets.plain(guesses)}", icon=":material/broken_image:")
            return
        # Shown upright and small (a phone photo's rotation is in its EXIF; the browser is sent a few KB, not MBs).
        picture.image(decode_image(data, min_side=440), caption=name, width=220)
        with chart:
            st.markdown(f"**{widgets.plain(guesses[0]['label'])}** ({guesses[0]['score']:.0%} sure)")
            st.plotly_chart(charts.top_k_figure(guesses), key=key)
            add_to_dataset(name, data, guesses[0]["label"], key)


    def add_to_dataset(name: str, data: bytes, suggested: str, key: str) -> None:
        """'Add this photo to class …', the model's guess suggested: the next run learns from its mistakes."""
        classes = builder.class_names(editable) if editable else []
        if not classes:
            return
        left, right = st.columns([2, 1], vertical_alignment="bottom")
        label = left.selectbox("Add this photo to class", classes, key=f"add-class-{key}",
                               index=classes.index(suggested) if suggested in classes else 0)
        if right.button("Add to the dataset", key=f"add-{key}", icon=":material/add_photo_alternate:"):
            try:
                result = builder.add_photos(ws, editable, label, [(name, data)])
            except RetrainError as error:
                st.error(plain(error), icon=":material/error:")
                return
            for item in result.refused:
                st.error(plain(f"{item['file']}: {item['reason']}"), icon=":material/error:")
            if result.added or result.already_there:
                st.success(plain(f"{'Added to' if result.added else 'Already in'} class {label} "
                                 f"({len(builder.class_photos(editable, label))} photos now)."),
                           icon=":material/check:")


    try:
        predictor = load_predictor(str(run.path), (run.path / "model.keras").stat().st_mtime)
    except (RetrainError, OSError) as error:
        st.error(f"The model of run {run.name} cannot be loaded: {error}", icon=":material/error:")
        st.stop()
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    top = min(5, len(predictor.labels))
    k = left.slider("How many guesses to show", 1, top, min(3, top), key="top_k") if top > 1 else 1
    right.caption(f"Model from run `{run.name}` · classes: {', '.join(map(widgets.plain, predictor.labels[:20]))}")
    editable = current_root(ws)
    if editable is None:
        st.caption("To add photos from here back into your data, make the dataset editable on the Build page first.")

    photos_tab, camera_tab, zip_tab = st.tabs(["Photos", "Camera", "A zip of photos → CSV"])
    with photos_tab:
        uploads = st.file_uploader("Drop one or more photos", type=IMAGE_TYPES, accept_multiple_files=True,
                                   key="predict_photos")
        results = [(upload.name, upload.getvalue(), predict(upload.getvalue())) for upload in uploads or []]
        # Least sure first: the photos the model hesitates on are the ones most worth adding with their right class.
        results.sort(key=lambda item: -1.0 if isinstance(item[2], ImageProblem) else item[2][0]["score"])
        for index, (name, data, guesses) in enumerate(results):
            show_prediction(name, data, f"photo-{index}", guesses)
    with camera_tab:
        if st.toggle("Use the camera", key="use_camera", help="Your browser asks for permission first."):
            shot = st.camera_input("Take a photo", key="camera")
            if shot is not None:
                show_prediction("camera photo", shot.getvalue(), "camera-chart")
    with zip_tab:
        batch = st.file_uploader("Drop a zip of photos", type=["zip"], key="predict_zip",
                                 help="Every file in it gets a row; files that are not readable photos get "
                                      "their error.")
        if batch is not None:
            try:
                with st.spinner("Predicting every photo in the zip…"):  # shown only when it takes a while
                    csv_path = predict_zip(ws, predictor, batch.name, batch.getvalue(), run.name, k)
            except RetrainError as error:
                st.error(str(error), icon=":material/error:")
            else:
                table = read_predictions(csv_path)
                errors = int((table["error"] != "").sum())
                st.success(f"{len(table)} files: {len(table) - errors} predicted, {errors} with an error.")
                st.download_button("Download predictions.csv", csv_path.read_bytes(), file_name="predictions.csv",
                                   mime="text/csv", type="primary", icon=":material/download:", on_click="ignore")
                st.dataframe(table, hide_index=True, width="stretch", key="predictions")

    widgets.next_step("runs", "Next: Runs and downloads", "Compare runs and download the model in every format.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
