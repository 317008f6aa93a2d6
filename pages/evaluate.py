"""Evaluate: how the finished model does on held-out photos — scores, confusion matrix, its mistakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages import app_words, charts, navigation, session, widgets
from pipeline.config import RunConfig
from pipeline.errors import RetrainError
from pipeline.evaluate import Report, cell_images
from pipeline.run_rows import format_percent
from pipeline.studio.datasets import dataset_root, image_path
from pipeline.studio.run_history import download_name, run_dataset_text, test_split_warning

GALLERY = 24
THUMBNAIL = 140


def show() -> None:
    """The Evaluate page."""
    ws = session.workspace()
    widgets.header("Evaluate", "Scores on test photos the model never saw while training.")
    run = session.choose_finished_run(ws)
    try:
        report, config = Report.load(run.report), RunConfig.load(run.config)
    except RetrainError as error:  # a damaged report.json or config.json: say which, keep the app working
        st.error(str(error), icon=":material/error:")
        st.stop()

    def gallery(items: list[dict], key: str) -> None:
        """Thumbnails with true label, prediction and confidence (the report's file names, found under the dataset)."""
        try:
            root = dataset_root(config.dataset)
        except RetrainError as error:
            st.warning(f"The photos cannot be shown: {error}")
            return
        paths = [image_path(root, item["file"]) for item in items[:GALLERY]]
        pictures = widgets.thumbnails([str(path) for path in paths if path], THUMBNAIL)
        captions = [
            f"{item['true_label']} → {item['predicted_label']}"
            + (f" ({item['confidence']:.0%})" if item.get("confidence") is not None else "")
            for item, path in zip(items[:GALLERY], paths, strict=True)
            if path
        ]
        shown = [(picture, caption) for picture, caption in zip(pictures, captions, strict=True) if picture]
        if shown:
            st.image([p for p, _ in shown], caption=[c for _, c in shown], width=THUMBNAIL)
        if len(items) > GALLERY:
            st.caption(f"Showing {GALLERY} of {len(items)}.")

    where = (
        "test" if report.extra.get("evaluated_on", "test") == "test" else "validation (the dataset has no test split)"
    )
    cols = [st.container(horizontal=True)] * 4  # one row that wraps: 2 x 2 on a phone, not 4 tall cards
    cols[0].metric("Test accuracy", format_percent(report.test_accuracy), border=True)
    if len(report.labels) > 5:  # with 5 classes or fewer every answer is in the top 5: always 100%
        cols[1].metric("Top-5 accuracy", f"{report.top5_accuracy:.1%}", border=True)
    else:
        cols[1].metric("Mistakes", len(report.misclassified), border=True)
    cols[2].metric("Test images", report.test_images, border=True)
    cols[3].metric("Classes", len(report.labels), border=True)
    left, right = st.columns([3, 1], vertical_alignment="center")
    backbone = config.train.architecture.rsplit("/", 1)[-1]
    left.caption(
        f"Run `{run.name}` · trained on {widgets.plain(run_dataset_text(run))} · scored on the {where} "
        f"images · backbone {backbone}"
    )
    if warning := test_split_warning(run):
        st.warning(
            f"Too few test images: {widgets.plain(app_words.split_warning_words(warning))}", icon=":material/warning:"
        )
    model_file = run.path / "model.keras"
    if model_file.exists():
        right.download_button(
            "Download model (.keras)",
            data=model_file.read_bytes,
            file_name=download_name(run, "model.keras"),
            mime="application/octet-stream",
            type="primary",
            icon=":material/download:",
            width="stretch",
            on_click="ignore",
            key="download_keras",
        )
        widgets.bundle_button(right, run, "Download bundle (.zip)", key="download_bundle")
    variants = report.extra.get("tflite_variants") or {}
    if variants:
        st.subheader("Smaller TFLite models")
        st.caption("Quantized copies for phones and small devices, each scored on the same test photos.")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "File": "model.keras (full precision)",
                        "Size (MB)": round(model_file.stat().st_size / 1e6, 2) if model_file.exists() else None,
                        "Test accuracy": report.test_accuracy,
                    }
                ]
                + [
                    {"File": v["file"], "Size (MB)": v["size_mb"], "Test accuracy": v["test_accuracy"]}
                    for v in variants.values()
                ]
            ),
            hide_index=True,
            key="tflite_variants",
            column_config={"Test accuracy": st.column_config.NumberColumn(format="percent")},
        )

    st.subheader("Per class")
    scores = pd.DataFrame(
        [
            {"Class": label, "Precision": s.precision, "Recall": s.recall, "F1": s.f1, "Test images": s.support}
            for label, s in report.per_class.items()
        ]
    )
    # Narrow bars and a pinned class name: on a phone the whole row fits (or scrolls with its class in view).
    bar = {"min_value": 0.0, "max_value": 1.0, "format": "percent", "width": 80}
    st.dataframe(
        scores,
        hide_index=True,
        width="stretch",
        key="per_class",
        column_config={
            "Class": st.column_config.TextColumn(pinned=True),
            "Test images": st.column_config.NumberColumn(width="small"),
            "Precision": st.column_config.ProgressColumn(
                help="Of the photos predicted as this class, the share that are", **bar
            ),
            "Recall": st.column_config.ProgressColumn(help="Of this class's photos, the share found", **bar),
            "F1": st.column_config.ProgressColumn(help="Precision and recall in one number", **bar),
        },
    )

    st.subheader("Confusion matrix")
    st.caption(
        "Rows are the true class, columns what the model said. Click a cell (or choose below) to see its photos."
    )
    labels, matrix = report.labels, np.array(report.confusion_matrix)
    fig = charts.confusion_figure(labels, matrix)
    chart_column, cell_column = st.columns([3, 2])
    with chart_column:
        event = st.plotly_chart(fig, key="confusion", on_select="rerun", selection_mode="points")
    points = (event.get("selection") or {}).get("points") or [] if event else []
    state = session.page_state()
    if points and (points[0].get("y"), points[0].get("x")) != state.confusion_clicked:
        state.confusion_clicked = (points[0].get("y"), points[0].get("x"))
        st.session_state["cell_true"], st.session_state["cell_predicted"] = points[0]["y"], points[0]["x"]
    if "cell_true" not in st.session_state or st.session_state["cell_true"] not in labels:
        off = matrix - np.diag(np.diag(matrix))
        true_index, predicted_index = np.unravel_index(np.argmax(off), off.shape) if off.any() else (0, 0)
        st.session_state["cell_true"], st.session_state["cell_predicted"] = labels[true_index], labels[predicted_index]
    with cell_column:
        left, right = st.columns(2)
        true_label = left.selectbox("True class", labels, key="cell_true")
        predicted_label = right.selectbox("Predicted as", labels, key="cell_predicted")
    # Reports from before every prediction was listed hold only the mistakes.
    items = cell_images(report.predictions or report.misclassified, true_label, predicted_label)
    with cell_column:
        st.markdown(
            f"**{len(items)} photo(s)** of *{widgets.plain(true_label)}* predicted as "
            f"*{widgets.plain(predicted_label)}*"
        )
        if not report.predictions and true_label == predicted_label:
            st.caption("This run's report lists only the mistakes; train again to see the right answers too.")
        gallery(items, "cell")

    st.subheader("Mistakes, most confident first")
    if report.misclassified:
        gallery([m.__dict__ for m in report.misclassified], "mistakes")
    else:
        st.success("No test photo was misclassified.", icon=":material/check_circle:")

    widgets.next_step("predict", "Next: Predict", "Try the model on new photos. All downloads are on Runs.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
