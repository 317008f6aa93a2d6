"""A shared model: one run's Predict page, read-only, opened by a share link (?share=TOKEN) — no workspace, no
dataset, no runs list, nothing to change or delete. app.py shows only this page when the address holds a share."""

from __future__ import annotations

import streamlit as st

from pages import navigation, prediction_view, widgets
from pipeline.errors import RetrainError
from pipeline.run_dataset import dataset_line, run_dataset_summary
from pipeline.shares import ShareRefused
from pipeline.studio.predict_models import open_shared


def show() -> None:
    """The shared Predict page."""
    widgets.header(
        "Try a shared model",
        "Someone shared this image classifier with you. Give it a photo and see "
        "its top guesses. Your photos are not kept.",
    )
    try:
        shared = open_shared(st.query_params.get("share"))
        predictor = prediction_view.load_predictor(
            str(shared.run_dir), (shared.run_dir / "model.keras").stat().st_mtime
        )
    except ShareRefused as refused:
        st.error(f"This link does not open a model: {widgets.plain(refused)}.", icon=":material/link_off:")
        st.stop()
    except (RetrainError, OSError) as error:
        st.error(
            f"The shared model cannot be loaded: {widgets.plain(error)}. Ask its owner to share it again.",
            icon=":material/error:",
        )
        st.stop()
    st.caption(
        f"Trained on {widgets.plain(dataset_line(run_dataset_summary(shared.run_dir)))} · it can only answer "
        f"one of: {', '.join(map(widgets.plain, predictor.labels[:20]))}"
    )
    with st.columns([1, 2])[0]:
        k = prediction_view.top_k_slider(predictor)
    photos_tab, camera_tab = st.tabs(["Photos", "Camera"])
    with photos_tab:
        prediction_view.uploaded_photos(predictor, k)
    with camera_tab:
        prediction_view.camera_photo(predictor, k)


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
