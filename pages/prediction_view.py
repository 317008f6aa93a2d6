"""Drawing a model's guesses for photos, shared by Predict (the owner's) and the shared read-only page: the photo,
its top-k chart, and a caution when the model is unsure or the photo looks unlike its training photos."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pages import charts, widgets
from pipeline.errors import ImageProblem
from pipeline.images import decode_image

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp"]
# Draws the owner's extra row under a prediction: (file name, bytes, top label, widget key).
AddRow = Callable[[str, bytes, str, str], None]


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def load_predictor(run_path: str, modified: float):
    """One loaded model per finished run (a run's head on LiteRT needs no TensorFlow; model.keras imports it here)."""
    from pipeline.predict import Predictor

    return Predictor(run_path)


def judge(predictor, data: bytes, k: int) -> dict | ImageProblem:
    """{"predictions", "caution"} for image bytes, decoded exactly as training decodes; the problem for a bad file."""
    try:
        return predictor.predict_bytes_judged(data, k)
    except ImageProblem as problem:
        return problem


def top_k_slider(predictor) -> int:
    top = min(5, len(predictor.labels))
    return st.slider("How many guesses to show", 1, top, min(3, top), key="top_k") if top > 1 else 1


def uploaded_photos(predictor, k: int, add: AddRow | None = None) -> None:
    """Photos dropped here, least sure first (the ones most worth a second look or adding with their right class)."""
    uploads = st.file_uploader(
        "Drop one or more photos", type=IMAGE_TYPES, accept_multiple_files=True, key="predict_photos"
    )
    results = [(upload.name, upload.getvalue(), judge(predictor, upload.getvalue(), k)) for upload in uploads or []]
    results.sort(key=lambda item: -1.0 if isinstance(item[2], ImageProblem) else item[2]["predictions"][0]["score"])
    for index, (name, data, judged) in enumerate(results):
        prediction(name, data, f"photo-{index}", judged, add)


def camera_photo(predictor, k: int, add: AddRow | None = None) -> None:
    if st.toggle("Use the camera", key="use_camera", help="Your browser asks for permission first."):
        shot = st.camera_input("Take a photo", key="camera")
        if shot is not None:
            prediction("camera photo", shot.getvalue(), "camera-chart", judge(predictor, shot.getvalue(), k), add)


def prediction(name: str, data: bytes, key: str, judged: dict | ImageProblem, add: AddRow | None = None) -> None:
    """The photo and the model's top-k for it (bad files say why), with its caution notes."""
    picture, chart = st.columns([1, 2], vertical_alignment="center")
    if isinstance(judged, ImageProblem):
        picture.error(f"{widgets.plain(name)}: {widgets.plain(judged)}", icon=":material/broken_image:")
        return
    guesses, notes = judged["predictions"], judged["caution"]["notes"]
    # Shown upright and small (a phone photo's rotation is in its EXIF; the browser is sent a few KB, not MBs).
    picture.image(decode_image(data, min_side=440), caption=name, width=220)
    with chart:
        st.markdown(f"**{widgets.plain(guesses[0]['label'])}** ({guesses[0]['score']:.0%} sure)")
        for note in notes:
            st.warning(f"Be careful with this answer: {widgets.plain(note)}.", icon=":material/help:")
        # No toolbar: nothing in three bars to zoom or pan, and on a phone it lay over the top guess's bar.
        st.plotly_chart(charts.top_k_figure(guesses), key=key, config={"displayModeBar": False})
        if add is not None:
            add(name, data, guesses[0]["label"], key)
