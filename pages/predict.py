"""Predict: the model's top guesses for new photos (uploaded or from the camera), or a CSV for a zip of them."""

from __future__ import annotations

import io

import pandas as pd
import plotly.express as px
import streamlit as st

from pages import common
from pipeline.errors import ImageProblem, RetrainError
from pipeline.images import decode_image
from pipeline.workspace import predictions_path, save_predictions, save_upload, unpack_upload

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp"]

ws = common.workspace()
common.header("Predict", "Give the model photos it has never seen and look at its top guesses.")
run = common.require_finished_run(ws)


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def load_predictor(run_path: str, modified: float):
    """One loaded model per finished run (TensorFlow is imported here, not when the app starts)."""
    from pipeline.predict import Predictor

    return Predictor(run_path)


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


def show_prediction(name: str, data: bytes, key: str) -> None:
    """The photo and the model's top-k for it, decoded exactly as training decodes (bad files say why)."""
    picture, chart = st.columns([1, 2], vertical_alignment="center")
    try:
        guesses = predictor.predict_bytes(data, k)
    except ImageProblem as problem:
        picture.error(f"{common.plain(name)}: {common.plain(problem)}", icon=":material/broken_image:")
        return
    # Shown upright and small (a phone photo's rotation is in its EXIF; the browser is sent a few KB, not MBs).
    picture.image(decode_image(data, min_side=440), caption=name, width=220)
    with chart:
        st.markdown(f"**{common.plain(guesses[0]['label'])}** ({guesses[0]['score']:.0%} sure)")
        top_k_chart(guesses, key)


try:
    predictor = load_predictor(str(run.path), (run.path / "model.keras").stat().st_mtime)
except (RetrainError, OSError) as error:
    st.error(f"The model of run {run.name} cannot be loaded: {error}", icon=":material/error:")
    st.stop()
left, right = st.columns([1, 2], vertical_alignment="bottom")
top = min(5, len(predictor.labels))
k = left.slider("How many guesses to show", 1, top, min(3, top), key="top_k") if top > 1 else 1
right.caption(f"Model from run `{run.name}` · classes: {', '.join(map(common.plain, predictor.labels[:20]))}")

photos_tab, camera_tab, zip_tab = st.tabs(["Photos", "Camera", "A zip of photos → CSV"])
with photos_tab:
    uploads = st.file_uploader("Drop one or more photos", type=IMAGE_TYPES, accept_multiple_files=True,
                               key="predict_photos")
    for index, upload in enumerate(uploads or []):
        show_prediction(upload.name, upload.getvalue(), f"photo-{index}")
with camera_tab:
    if st.toggle("Use the camera", key="use_camera", help="Your browser asks for permission first."):
        shot = st.camera_input("Take a photo", key="camera")
        if shot is not None:
            show_prediction("camera photo", shot.getvalue(), "camera-chart")
with zip_tab:
    batch = st.file_uploader("Drop a zip of photos", type=["zip"], key="predict_zip",
                             help="Every file in it gets a row; files that are not readable photos get their error.")
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

common.next_step("pages/runs.py", "Next: Runs and downloads", "Compare runs and download the model in every format.")
