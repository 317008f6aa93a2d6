"""Configure: the backbone, augmentation (with a live preview), class balancing and training settings of the next
run."""

from __future__ import annotations

import dataclasses
import json

import streamlit as st

from pages import app_words, charts, navigation, session, widgets
from pipeline import images
from pipeline.augment import balance_counts, preview_copies
from pipeline.backbones import backbone_input_size, list_backbones
from pipeline.backbones.measured import backbone_table, measured_note
from pipeline.config import PRESETS, AugmentConfig, TrainConfig
from pipeline.errors import ImageProblem, RetrainError
from pipeline.studio.next_run import preset_label, resolved_config, save_working_config, working_config

# The settings most people touch; every other field of TrainConfig is under "Advanced".
MAIN_TRAIN = ["epochs", "learning_rate", "train_batch_size", "early_stopping", "dropout", "class_weights"]
AUGMENT = ["flip_left_right", "random_crop", "random_brightness", "rotation", "zoom", "augment_copies"]
MORE_AUGMENT = [f.name for f in dataclasses.fields(AugmentConfig) if f.name not in AUGMENT + ["class_size"]]
PREVIEW_WIDTH = 112
COMPARE_COLUMNS = [
    "Backbone",
    "Flowers test accuracy",
    "Extraction, LiteRT (img/s)",
    "Predict p50 (ms)",
    "Exported model (MB)",
    "Input (px)",
    "Offline",
    "Extraction, TensorFlow (img/s)",
]
# The measured figures' headings in plain words; the exact terms stay in each column's help for ML engineers.
COMPARE_WORDS = {
    "Flowers test accuracy": st.column_config.TextColumn(
        "Accuracy on flowers", help="Test accuracy of a default run on the flowers photos (0 to 1)."
    ),
    "Extraction, LiteRT (img/s)": st.column_config.TextColumn(
        "Photos per second",
        help="Photos the backbone reads per second on the fast runtime the app uses (LiteRT, XNNPACK): how quickly "
        "a new dataset is prepared. Feature extraction throughput, img/s.",
    ),
    "Predict p50 (ms)": st.column_config.TextColumn(
        "Typical time per photo (ms)",
        help="Median (p50) time to answer for one photo, as on the Predict page, in milliseconds.",
    ),
    "Exported model (MB)": st.column_config.TextColumn("Model size (MB)", help="Size of the exported model.keras."),
    "Input (px)": st.column_config.TextColumn("Photo size (px)", help="Input size: photos are resized to this."),
    "Extraction, TensorFlow (img/s)": st.column_config.TextColumn(
        "Photos per second, without the fast runtime",
        help="The same on TensorFlow (RETRAIN_STUDIO_RUNTIME=tensorflow, or where LiteRT is not installed).",
    ),
}
MIRROR_HELP = (
    'The mirror view is "Mirror view" under Advanced: the model also looks at each photo flipped left to right '
    "and averages the two, in training and in the downloaded model."
)
ADVANCED_TRAIN = [
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in MAIN_TRAIN + ["architecture", "bottleneck_layer"]
]


def show() -> None:
    """The Configure page."""
    ws = session.workspace()
    widgets.header(
        "Configure",
        "The recommended settings work well for most photo datasets. Pick a preset, "
        "or change what you need — every setting explains itself when you hover its ?.",
    )
    config = working_config(ws)

    preset = st.segmented_control(
        "Preset",
        list(PRESETS),
        default=session.preset(ws),
        key="preset",
        help="Quick: a first model in a minute or two. Best accuracy: two backbones side by side, each photo "
        "also seen mirrored, and more epochs; about four times as long to prepare the photos.",
    )
    if preset and preset != session.preset(ws):
        session.choose_preset(ws, preset)
        st.rerun()
    label_slot = st.empty()  # filled at the end, with the settings as edited on this run of the page

    st.subheader("Backbone")
    backbones = {info.name: info for info in list_backbones()}
    names = list(backbones) + ([config.train.architecture] if config.train.architecture not in backbones else [])
    architecture = st.selectbox(
        "Pretrained network that turns each photo into features",
        names,
        index=names.index(config.train.architecture),
        format_func=lambda name: (
            name
            if name not in backbones
            else f"{name}  (works offline)"
            if backbones[name].offline
            else f"{name}  (needs internet once)"
        ),
    )
    if architecture in backbones:
        st.caption(backbones[architecture].description)
    slower_slot = st.empty()  # filled at the end: the mirror view is set under Advanced, further down
    with st.expander("Compare backbones: measured speed, accuracy and size"):
        # What a newcomer compares first, accuracy then speed, next to the name: a phone shows three columns.
        st.dataframe(backbone_table(), hide_index=True, column_order=COMPARE_COLUMNS, column_config=COMPARE_WORDS)
        st.caption(measured_note())

    st.subheader("Training")
    train_values = {"architecture": architecture}
    columns = st.columns(3)
    for index, name in enumerate(MAIN_TRAIN):
        with columns[index % 3]:
            train_values[name] = widgets.knob_input("train", config.train, name)

    st.subheader("Augmentation")
    st.caption(
        "Augmented copies are changed versions of your training photos (mirrored, cropped, brighter…). "
        "They help with small datasets, and are cached like photos, so later runs reuse them."
    )
    left, right = st.columns([3, 2])
    augment_values = {}
    with left:
        inner = st.columns(2)
        for index, name in enumerate(AUGMENT):
            with inner[index % 2]:
                augment_values[name] = widgets.knob_input("augment", config.augment, name)
        with st.expander("More transforms"):
            inner = st.columns(2)
            for index, name in enumerate(MORE_AUGMENT):
                with inner[index % 2]:
                    augment_values[name] = widgets.knob_input("augment", config.augment, name)
    with right:
        st.markdown("**Preview** — the same code training uses")
        try:
            dataset = session.current_dataset(ws)
        except RetrainError:
            dataset = None
        train_rows = dataset.usable()[dataset.usable()["split"] == "train"] if dataset is not None else None
        if train_rows is None or train_rows.empty:
            st.caption("Choose a dataset to see augmented copies of one of its photos.")
        else:
            if st.button("Another photo", icon=":material/shuffle:", key="preview_next"):
                session.page_state().preview_index += 7
            row = train_rows.iloc[session.page_state().preview_index % len(train_rows)]
            try:
                size = backbone_input_size(architecture)  # decoded and cropped at the backbone's size, as in training
                original = images.decode_image(images.read_bytes(row.path), min_side=size)
                copies = preview_copies(original, AugmentConfig(**augment_values), count=5, size=size)
            except (ImageProblem, RetrainError, ValueError) as error:
                st.warning(f"No preview: {error}")
            else:
                st.image(
                    [images.prepare_for_model(original, size)] + copies,
                    width=PREVIEW_WIDTH,
                    caption=["original"] + [f"copy {i + 1}" for i in range(len(copies))],
                )
                if not copies:
                    st.caption("Turn on a transform (flip, crop, rotation…) to see augmented copies.")
            st.caption(f"From {widgets.plain(row.file)}")

    st.subheader("Class balancing")
    counts = dataset.class_counts() if dataset is not None else {}
    largest = max([c["train"] for c in counts.values()] or [0])
    balance = st.toggle(
        "Balance classes with augmented copies",
        value=config.augment.class_size > 0,
        key="knob.balance",
        help="Small classes get more augmented copies of their photos (never fewer photos for big "
        "ones), so the model does not lean towards the big classes.",
    )
    augment_values["class_size"] = 0
    if balance:
        left, right = st.columns([1, 2])
        with left:
            st.session_state.setdefault("knob.augment.class_size", config.augment.class_size or max(largest, 1))
            augment_values["class_size"] = max(widgets.knob_input("augment", config.augment, "class_size"), 1)
            st.caption(
                f"Balance classes to about {augment_values['class_size']} training images each: a class of "
                "n photos gets ⌊N / n⌋ − 1 copies of each. With no transform on, copies are rotated, shifted, "
                "zoomed and flipped. Augmented copies (above) are then not made."
            )
        if counts:
            right.plotly_chart(
                charts.balance_figure(balance_counts(counts, AugmentConfig(**augment_values))), key="balance_chart"
            )
    else:
        # "Training photos": a user who put 20 photos in each folder otherwise reads "the largest has 15" as wrong.
        st.caption(
            f"Off: every class trains on the photos it has (the largest has {largest} training photos; the rest "
            "of each class is kept aside to check the model)."
        )

    with st.expander("Advanced"):
        train_values["bottleneck_layer"] = widgets.knob_input("train", config.train, "bottleneck_layer")
        columns = st.columns(3)
        for index, name in enumerate(ADVANCED_TRAIN):
            with columns[index % 3]:
                train_values[name] = widgets.knob_input("train", config.train, name)
        export_formats = widgets.knob_input("output", config.output, "export_formats")

    edited = widgets.edited_config(widgets.edited_config(config, "train", train_values), "augment", augment_values)
    edited = widgets.edited_config(edited, "output", {"export_formats": export_formats or ["keras"]})
    if edited != config:
        save_working_config(ws, edited)
    if note := widgets.preparation_note(edited.train):
        slower_slot.caption(note, help=MIRROR_HELP if edited.train.mirror_view else None)
    label_slot.caption(
        f"Settings: **{preset_label(ws, session.preset(ws), edited)}**",
        help="A preset's name "
        'while the settings are exactly it; "(edited)" once you change a setting it leaves alone; '
        '"Custom" once you change one it sets.',
    )
    try:
        edited.validate()
    except RetrainError as error:
        fix = widgets.plain(app_words.setting_words(str(error)))  # the controls' labels, not the config's names
        st.error(f"This setting must be fixed before training: {fix}", icon=":material/error:")

    with st.expander("The resolved config.json"):
        resolved = resolved_config(ws, edited).to_dict()
        st.json(resolved, expanded=1)
        st.download_button(
            "Download config.json",
            json.dumps(resolved, indent=2),
            file_name="config.json",
            mime="application/json",
            icon=":material/download:",
        )

    widgets.next_step("train", "Next: Train", "Settings are saved as you change them.")


if __name__ == "__main__":  # Streamlit's pages/-folder mode ran this file by itself: see pages/navigation.py
    navigation.run_app()
