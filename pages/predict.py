"""Predict: the model's top guesses for new photos (uploaded or from the camera), or a CSV for a zip of them; which
run's model is used (by default the newest finished one of the current dataset); share it read-only."""

from __future__ import annotations

import streamlit as st

from pages import navigation, prediction_view, session, widgets
from pipeline import dataset_builder as builder
from pipeline.dataset_builder import current_root
from pipeline.errors import RetrainError
from pipeline.studio.predict_models import chosen_run, model_choices, revoke, run_shares, share_link, share_run
from pipeline.studio.predict_zip import predict_zip, read_predictions
from pipeline.studio.run_history import find_run


def show() -> None:
    """The Predict page."""
    ws = session.workspace()
    widgets.header("Predict", "Give the model photos it has never seen and look at its top guesses.")
    session.notice_active_runs(ws)
    choices = model_choices(ws)
    if not choices:
        session.require_finished_run(ws)  # says what to do, and stops
    # Runs of one dataset read alike ("run-… · flowers · 90 images"): their preset and score tell them apart.
    labels = {
        choice.run: f"{choice.label} · {widgets.run_choice_text(ws, run)}"
        for choice in choices
        if (run := find_run(ws, choice.run))
    }
    picked = st.selectbox(
        "Model",
        list(labels),
        format_func=labels.get,
        key="predict_run",
        help="Finished runs, newest first; those trained on the current dataset come first.",
    )
    run = chosen_run(ws, picked)
    choice = next(choice for choice in choices if choice.run == run.name)
    if not choice.current_dataset:
        st.info("This model was trained on another dataset than the current one.", icon=":material/info:")
    try:
        predictor = prediction_view.load_predictor(str(run.path), (run.path / "model.keras").stat().st_mtime)
    except (RetrainError, OSError) as error:
        st.error(f"The model of run {run.name} cannot be loaded: {error}", icon=":material/error:")
        st.stop()
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    with left:
        k = prediction_view.top_k_slider(predictor)
    right.caption(
        f"Trained on {widgets.plain(choice.dataset)} · {widgets.run_choice_text(ws, run)} · classes: "
        f"{', '.join(map(widgets.plain, predictor.labels[:20]))}"  # a phone cuts the model's name before its preset
    )
    editable = current_root(ws)
    add = _adder(ws, editable) if editable else None
    if editable is None:
        st.caption("To add photos from here back into your data, make the dataset editable on the Build page first.")

    photos_tab, camera_tab, zip_tab, share_tab = st.tabs(["Photos", "Camera", "A zip → CSV", "Share"])
    with photos_tab:
        prediction_view.uploaded_photos(predictor, k, add)
    with camera_tab:
        prediction_view.camera_photo(predictor, k, add)
    with zip_tab:
        _zip_predictions(ws, predictor, run.name, k)
    with share_tab:
        _share_links(ws, run.name)

    widgets.next_step("runs", "Next: Runs and downloads", "Compare runs and download the model in every format.")


def _adder(ws, editable) -> prediction_view.AddRow:
    def add(name: str, data: bytes, suggested: str, key: str) -> None:
        """'Add this photo to class …', the model's guess suggested: the next run learns from its mistakes."""
        classes = builder.class_names(editable)
        if not classes:
            return
        left, right = st.columns([2, 1], vertical_alignment="bottom")
        label = left.selectbox(
            "Add this photo to class",
            classes,
            key=f"add-class-{key}",
            index=classes.index(suggested) if suggested in classes else 0,
        )
        if right.button("Add to the dataset", key=f"add-{key}", icon=":material/add_photo_alternate:"):
            try:
                result = builder.add_photos(ws, editable, label, [(name, data)])
            except RetrainError as error:
                st.error(widgets.plain(error), icon=":material/error:")
                return
            for item in result.refused:
                st.error(widgets.plain(f"{item['file']}: {item['reason']}"), icon=":material/error:")
            if result.added or result.already_there:
                st.success(
                    widgets.plain(
                        f"{'Added to' if result.added else 'Already in'} class {label} "
                        f"({len(builder.class_photos(editable, label))} photos now)."
                    ),
                    icon=":material/check:",
                )

    return add


def _zip_predictions(ws, predictor, run_name: str, k: int) -> None:
    batch = st.file_uploader(
        "Drop a zip of photos",
        type=["zip"],
        key="predict_zip",
        help="Every file in it gets a row; files that are not readable photos get their error.",
    )
    if batch is None:
        return
    try:
        with st.spinner("Predicting every photo in the zip…"):  # shown only when it takes a while
            csv_path = predict_zip(ws, predictor, batch.name, batch.getvalue(), run_name, k)
    except RetrainError as error:
        st.error(widgets.plain(error), icon=":material/error:")
        return
    table = read_predictions(csv_path)
    errors, doubtful = int((table["error"] != "").sum()), int((table["caution"] != "").sum())
    st.success(f"{len(table)} files: {len(table) - errors} predicted, {errors} with an error.")
    if doubtful:
        st.warning(f"{doubtful} prediction(s) to doubt: see the caution column.", icon=":material/help:")
    st.download_button(
        "Download predictions.csv",
        csv_path.read_bytes(),
        file_name=f"predictions-{run_name}.csv",
        mime="text/csv",
        type="primary",
        icon=":material/download:",
        on_click="ignore",
    )
    st.dataframe(table, hide_index=True, width="stretch", key="predictions")


def _share_links(ws, run_name: str) -> None:
    st.caption(
        "A share link opens only this model's Predict page, read-only: whoever has it can try the model, but "
        "cannot see your dataset or your other runs, and cannot change or delete anything. Revoke it any time."
    )
    if st.button("Create a share link", icon=":material/share:", key="create_share"):
        try:
            share_run(ws, run_name)
        except RetrainError as error:
            st.error(widgets.plain(error), icon=":material/error:")
    for share in run_shares(ws, run_name):
        left, right = st.columns([4, 1], vertical_alignment="center")
        names = [entry.name for entry in navigation.PAGES]
        left.code(share_link(st.context.url, share.token, names), language=None)  # st.code has a copy button
        right.button(
            "Revoke", key=f"revoke-{share.token}", icon=":material/link_off:", on_click=revoke, args=(ws, share.token)
        )


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
