"""Predict: the model's top guesses for new photos (uploaded or from the camera), or a CSV for a zip of them."""

from __future__ import annotations

import io

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import common, navigation
from pages.gallery import plain
from pipeline import dataset_builder as builder
from pipeline.dataset_builder import current_root
from pipeline.errors import ImageProblem, RetrainError
from pipeline.images import decode_image
from pipeline.workspace import predictions_path, save_predictions, save_upload, unpack_upload

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp"]

@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def load_predictor(run_path: str, modified: float):
    """One loaded model per finished run (TensorFlow is imported here, not when the app starts)."""
    from pipeline.predict import Predictor

    return Predictor(run_path)


def show() -> None:
    """The Predict page."""
    ws = common.workspace()
    common.header("Predict", "Give the model photos it has never seen and look at its top guesses.")
    run = common.require_finished_run(ws)


    def top_k_chart(guesses: list[dict], key: str) -> None:
        frame = pd.DataFrame(guesses).iloc[::-1]
        frame["label"] = frame["label"].map(common.chart_text)
        fig = px.bar(frame, x="score", y="label", orientation="h", text=frame["score"].map("{:.1%}".format))
        # Room right of 100% for the score written after the longest bar.
        fig.update_layout(height=60 + 36 * len(frame), margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis_title=None,
                          xaxis={"range": [0, 1.12], "tickvals": [0, 0.25, 0.5, 0.75, 1], "tickformat": ".0%",
                                 "title": None})
        fig.update_traces(marker_color="#2563eb", textposition="outside", cliponaxis=False)
        st.plotly_chart(fig, key=key)


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
            picture.error(f"{common.plain(name)}: {common.plain(guesses)}", icon=":material/broken_image:")
            return
        # Shown upright and small (a phone photo's rotation is in its EXIF; the browser is sent a few KB, not MBs).
        picture.image(decode_image(data, min_side=440), caption=name, width=220)
        with chart:
            st.markdown(f"**{common.plain(guesses[0]['label'])}** ({guesses[0]['score']:.0%} sure)")
            top_k_chart(guesses, key)
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
    right.caption(f"Model from run `{run.name}` · classes: {', '.join(map(common.plain, predictor.labels[:20]))}")
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
                zip_path = save_upload(ws, batch.name, batch.getvalue())
                root = unpack_upload(ws, zip_path)
                csv_path = predictions_path(ws, zip_path, run.name, k)
                if not csv_path.exists():  # once per zip, run and k: a rerun does not predict again
                    from pipeline.predict import image_files

                    with st.spinner("Predicting every photo in the zip…"):
                        save_predictions(predictor.predict_files(image_files(root), k), csv_path, k, root)
            except RetrainError as error:
                st.error(str(error), icon=":material/error:")
            else:
                table = pd.read_csv(io.BytesIO(csv_path.read_bytes()), keep_default_na=False)
                errors = int((table["error"] != "").sum())
                st.success(f"{len(table)} files: {len(table) - errors} predicted, {errors} with an error.")
                st.download_button("Download predictions.csv", csv_path.read_bytes(), file_name="predictions.csv",
                                   mime="text/csv", type="primary", icon=":material/download:", on_click="ignore")
                st.dataframe(table, hide_index=True, width="stretch", key="predictions")

    common.next_step("runs", "Next: Runs and downloads", "Compare runs and download the model in every format.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
