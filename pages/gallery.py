"""Drawing bits the dataset builder and Explore share: every class at a glance.

Not a page (app.py does not list it); it sits here because it draws with Streamlit.
"""

from __future__ import annotations

import streamlit as st

from pages import widgets
from pipeline.dataset import Dataset
from pipeline.studio.datasets import imbalance_advice

# Photos shown per class in the all-classes view: enough to see what a class is, few enough for 40 classes.
PER_CLASS = 6


def all_classes(dataset: Dataset, per_class: int = PER_CLASS, advice: bool = True) -> None:
    """A grid of a few photos of every class, with its count per split and each photo's split under it
    (and the imbalance warning, unless the page shows it already)."""
    counts = dataset.class_counts()
    if advice and (advice := imbalance_advice(counts)):
        st.warning(widgets.plain(advice), icon=":material/balance:")
    usable = dataset.usable()
    for label in dataset.classes:
        splits = counts.get(label, {})
        total = sum(splits.values())
        st.markdown(
            f"**{widgets.plain(label)}** · {total} photo(s): "
            + ", ".join(f"{n} {split}" for split, n in splits.items())
        )
        rows = usable[usable["label"] == label].head(per_class)
        pairs = [
            (image, split)
            for image, split in zip(widgets.thumbnails(list(rows["path"]), 96), rows["split"], strict=True)
            if image
        ]
        if pairs:
            st.image([image for image, _ in pairs], caption=[split for _, split in pairs], width=96)
