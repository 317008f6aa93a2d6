"""What each benchmark mode measures on: how many images, how many repetitions, which dataset.

`full` is the claim as stated (all of flowers); `quick` is the same measurements on a fixed subset
so a change can be checked in minutes; `smoke` only proves the benchmark still runs end to end
(a tiny generated dataset and a tiny backbone, so it needs neither flowers nor a built backbone).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FLOWERS = REPO.parent / "shared" / "datasets" / "flowers"
GROCERY = REPO.parent / "shared" / "datasets" / "grocery"  # train/ val/ test/: its official split
DEFAULT_BACKBONE = "efficientnet_lite0"
SMOKE_LAYER = "features"  # the tiny smoke backbone's bottleneck layer


@dataclass(frozen=True)
class Mode:
    name: str
    per_class: int | None  # flowers images per class (None: all); 0: generated images
    speed_images: int  # images for the forward / extraction figures
    per_image_images: int  # images run one at a time (retrain.py's way); it is slow
    fit_images: int  # examples in the frozen-base fit epoch and its cache twin
    head_steps: int  # steps of the head-training figure (4,000 is the claim)
    predictions: int  # single-image predictions timed for p50 / p95
    reps: int  # repetitions of the short figures (the median is reported)
    rerun_reps: int  # repetitions of each warm whole run
    train: dict = field(default_factory=dict)  # TrainConfig overrides for every whole run
    augment: dict = field(default_factory=lambda: {"flip_left_right": True, "random_crop": 10, "augment_copies": 2})
    backbone_images: int = 256  # images per cold extraction of the per-backbone table (each runtime)
    grocery: bool = False  # also a default Lite2 run on the grocery set's official split

    @property
    def subset(self) -> bool:
        """True when accuracy and first-model figures are not over all of flowers (named `quick_...`)."""
        return self.per_class is not None


MODES = {
    "full": Mode(
        "full",
        per_class=None,
        speed_images=1024,
        per_image_images=256,
        fit_images=1024,
        head_steps=4000,
        predictions=100,
        reps=3,
        rerun_reps=3,
        backbone_images=128,
        grocery=True,
    ),
    "quick": Mode(
        "quick",
        per_class=60,
        speed_images=256,
        per_image_images=64,
        fit_images=256,
        head_steps=4000,
        predictions=30,
        reps=3,
        rerun_reps=2,
        backbone_images=64,
    ),
    "smoke": Mode(
        "smoke",
        per_class=0,
        speed_images=12,
        per_image_images=3,
        fit_images=12,
        head_steps=20,
        predictions=3,
        reps=1,
        rerun_reps=1,
        train={"epochs": 3, "learning_rate": 0.01},
        backbone_images=6,
        augment={"flip_left_right": True, "random_crop": 10, "augment_copies": 1},
    ),
}
SMOKE_CLASSES = ("red", "green", "blue")
SMOKE_PER_CLASS = 8


def prepare_dataset(mode: Mode, workdir: Path) -> Path:
    """The class-folder dataset this mode measures on: flowers itself, a fixed subset copied, or generated."""
    if mode.per_class == 0:
        return generate_dataset(workdir / "dataset")
    if not FLOWERS.is_dir():
        raise SystemExit(f"{FLOWERS} not found: the benchmark measures on flowers (see ../shared/README.md)")
    if mode.per_class is None:
        return FLOWERS
    return copy_subset(FLOWERS, workdir / "dataset", mode.per_class)


def copy_subset(source: Path, target: Path, per_class: int) -> Path:
    """Every class's files spread evenly over its sorted names, copied (the dataset refuses outside symlinks)."""
    for folder in sorted(path for path in source.iterdir() if path.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for path in evenly_spaced(files, per_class):
            shutil.copyfile(path, target / folder.name / path.name)
    return target


def evenly_spaced(items: list, count: int) -> list:
    """`count` items spread over the whole list, always the same ones."""
    if count >= len(items):
        return list(items)
    return [items[int(i * len(items) / count)] for i in range(count)]


def generate_dataset(target: Path) -> Path:
    """A few JPEGs per class, each class its own colour with noise: enough for every code path to run."""
    rng = np.random.default_rng(0)
    for index, label in enumerate(SMOKE_CLASSES):
        (target / label).mkdir(parents=True, exist_ok=True)
        colour = np.eye(3)[index] * 200 + 30
        for number in range(SMOKE_PER_CLASS):
            pixels = np.clip(colour + rng.normal(0, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(target / label / f"{label}{number}.jpg", quality=90)
    return target


def smoke_backbone(workdir: Path) -> str:
    """A tiny user-style .keras backbone (32x32 input, 'features' layer), so smoke runs in seconds."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 255.0)(inputs)
    conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(scaled)
    features = keras.layers.Concatenate(name=SMOKE_LAYER)(
        [keras.layers.GlobalAveragePooling2D()(scaled), keras.layers.GlobalAveragePooling2D()(conv)]
    )
    outputs = keras.layers.Dense(3, activation="softmax")(features)
    path = workdir / "smoke_backbone.keras"
    keras.Model(inputs, outputs).save(path)
    return str(path)
