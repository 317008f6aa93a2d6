"""The one list of settings, shared by the CLI and the app.

Every knob is a dataclass field with a default and a one-line help. The CLI builds its flags
from these fields (retrain.py's names where the meaning carries over) and the app builds its
widgets from the same help text, so there is no second list to drift out of date.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.backbones.registry import check_architecture
from pipeline.backbones.side_by_side import LITE0_AND_LITE1, is_side_by_side
from pipeline.errors import RetrainError


def knob(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field whose help text the CLI and the app both show."""
    if isinstance(default, list):  # mutable defaults need a factory
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class DatasetConfig:
    image_dir: str | None = knob(None, "Folder of class sub-folders, or of train/ val/ test/ folders of them.")
    zip: str | None = knob(None, "Zip archive of either folder layout (with or without one top folder).")
    label_csv: str | None = knob(None, "CSV with columns image_id,label; images are in --image_dir.")
    testing_percentage: int = knob(10, "Percent of images held out for the final test.", min=0, max=90)
    validation_percentage: int = knob(10, "Percent of images used to validate while training.", min=0, max=90)
    overrides: str | None = knob(None, "JSON file of per-image decisions (drop or relabel) for this dataset.")


@dataclass
class AugmentConfig:
    flip_left_right: bool = knob(False, "Randomly mirror training images left to right.")
    random_crop: int = knob(0, "Percent of margin to randomly crop away (retrain.py meaning).", min=0, max=100)
    random_scale: int = knob(0, "Percent to randomly scale up by (retrain.py meaning).", min=0, max=100)
    random_brightness: int = knob(0, "Percent to randomly brighten or darken by (retrain.py meaning).", min=0, max=100)
    rotation: float = knob(0.0, "Largest random rotation, in degrees.", min=0, max=180)
    width_shift: float = knob(0.0, "Largest horizontal shift, as a fraction of the width.", min=0, max=1)
    height_shift: float = knob(0.0, "Largest vertical shift, as a fraction of the height.", min=0, max=1)
    shear: float = knob(0.0, "Largest shear angle, in degrees (Keras ImageDataGenerator meaning).", min=0, max=90)
    zoom: float = knob(0.0, "Largest zoom in or out, as a fraction (0.2 = 80% to 120%).", min=0, max=0.9)
    fill_mode: str = knob(
        "nearest", "How to fill pixels uncovered by a transform.", choices=["nearest", "reflect", "constant", "wrap"]
    )
    augment_copies: int = knob(0, "Augmented copies of each training image, each cached like an image.", min=0, max=20)
    class_size: int = knob(
        0, "Bring every class's training split to about this many images with augmented copies.", min=0, max=20000
    )

    def is_active(self) -> bool:
        """True when any transform is on (copies are made only then)."""
        return any(
            [
                self.flip_left_right,
                self.random_crop,
                self.random_scale,
                self.random_brightness,
                self.rotation,
                self.width_shift,
                self.height_shift,
                self.shear,
                self.zoom,
            ]
        )

    def transform_key(self) -> str:
        """A stable text of the transform settings, part of each augmented copy's cache key."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("augment_copies", "class_size")}
        return json.dumps(settings, sort_keys=True)


@dataclass
class TrainConfig:
    architecture: str = knob(
        "efficientnet_lite0",
        "Backbone: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 (offline), two of those side by "
        "side (efficientnet_lite0+efficientnet_lite1: the most accurate), inception_v3, mobilenet_v2[_ALPHA], "
        "resnet50, or PATH.keras for your own model.",
    )
    bottleneck_layer: str | None = knob(
        None, "Backbone layer whose output is the bottleneck (default: its pooled features)."
    )
    mirror_view: bool = knob(
        False,
        "Describe each photo by the mean of its own and its mirror image's features, in training and in "
        "the exported model; twice the extraction time (on flowers: no gain for Lite0 alone, part of the most "
        "accurate recipe with efficientnet_lite0+efficientnet_lite1).",
    )
    optimizer: str = knob("adam", "Optimizer for the new head.", choices=["adam", "sgd", "rmsprop"])
    learning_rate: float = knob(0.001, "How fast the head learns; lower is slower but steadier.", min=1e-07, max=1.0)
    train_batch_size: int = knob(32, "Images per training step.", min=1, max=4096)
    how_many_training_steps: int = knob(
        0, "Training steps (retrain.py meaning); 0 means train by --epochs.", min=0, max=1000000
    )
    epochs: int = knob(
        40,
        "Passes over the training set when --how_many_training_steps is 0 (small datasets get at least 300 steps).",
        min=1,
        max=10000,
    )
    eval_step_interval: int = knob(0, "Validate every this many steps (0: once per epoch).", min=0, max=1000000)
    validation_batch_size: int = knob(-1, "Images per validation batch (-1: all at once).", min=-1, max=100000)
    test_batch_size: int = knob(-1, "Images per test batch (-1: all at once).", min=-1, max=100000)
    dropout: float = knob(
        0.5, "Fraction of bottleneck features dropped while training, against overfitting.", min=0, max=0.95
    )
    hidden_units: int = knob(0, "Size of an optional hidden layer in the head (0: none).", min=0, max=8192)
    label_smoothing: float = knob(0.0, "Soften the targets (e.g. 0.1); can help when labels are noisy.", min=0, max=0.5)
    class_weights: bool = knob(True, "Weight classes by inverse frequency when they are imbalanced.")
    early_stopping: int = knob(8, "Stop after this many validations without improvement (0: never).", min=0, max=1000)
    seed: int = knob(0, "Random seed; the same seed and data give the same model.", min=0, max=2**31 - 1)
    fine_tune_layers: int = knob(
        0,
        "Unfreeze the top N backbone layers, rounded up to whole blocks, after the head converges (slow).",
        min=0,
        max=1000,
    )
    fine_tune_epochs: int = knob(2, "Epochs of fine-tuning when --fine_tune_layers is set.", min=1, max=1000)
    fine_tune_learning_rate: float = knob(1e-5, "Learning rate while fine-tuning.", min=1e-08, max=0.1)


@dataclass
class OutputConfig:
    output_dir: str | None = knob(None, "Run directory: config, status, metrics, report and exports go here.")
    bottleneck_dir: str | None = knob(None, "Where cached bottlenecks live (shared between runs).")
    summaries_dir: str | None = knob(None, "TensorBoard logs (default: RUN_DIR/logs).")
    output_labels: str | None = knob(None, "Also write labels.txt here.")
    saved_model_dir: str | None = knob(None, "Also write the SavedModel here.")
    export_formats: list[str] = knob(
        ["keras", "saved_model", "tflite"],
        "Formats to export (quantized TFLite: tflite_float16, tflite_dynamic, tflite_int8; onnx needs the onnx extra).",
        choices=["keras", "saved_model", "tflite", "tflite_float16", "tflite_dynamic", "tflite_int8", "onnx"],
    )
    print_misclassified_test_images: bool = knob(False, "Print every misclassified test image.")


@dataclass
class RunConfig:
    """Everything one run needs; written resolved to RUN_DIR/config.json."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from pipeline.files import write_json_atomic

        write_json_atomic(path, self.to_dict())

    def validate(self) -> RunConfig:
        """Raise RetrainError naming the first setting outside its range or choices; else return self."""
        for section_name in ("dataset", "augment", "train", "output"):
            section = getattr(self, section_name)
            for spec in dataclasses.fields(section):
                _check_setting(section_name, spec, getattr(section, spec.name))
        if self.dataset.testing_percentage + self.dataset.validation_percentage >= 100:
            raise RetrainError(
                "testing_percentage + validation_percentage must be under 100, leaving images to train on"
            )
        check_architecture(self.train.architecture, self.train.bottleneck_layer)  # a bad pair, before the run starts
        if is_side_by_side(self.train.architecture) and self.train.fine_tune_layers:
            raise RetrainError(
                f"fine_tune_layers works on one backbone, and {self.train.architecture!r:.80} joins two: set it to 0, "
                "or choose one backbone to fine-tune"
            )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        sections = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise RetrainError(f"config has unknown sections {sorted(unknown)}; expected {sorted(sections)}")
        for name in sections:
            if not isinstance(data.get(name, {}), dict):
                raise RetrainError(f"config section {name!r} must be an object of settings, not {data[name]!r}")
        return cls(**{name: section_from_dict(factory, data.get(name, {}), name) for name, factory in sections.items()})

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """A config.json read and type-checked (pipeline.records.DamagedFile names what is wrong)."""
        from pipeline.records import read_config

        return read_config(path)


def _check_setting(section: str, spec: dataclasses.Field, value: Any) -> None:
    meta, where = spec.metadata, f"{section}.{spec.name}"
    if value is None:
        return
    if "choices" in meta:
        values = value if isinstance(value, list) else [value]
        wrong = [v for v in values if v not in meta["choices"]]
        if wrong:
            raise RetrainError(f"{where} = {wrong[0]!r} is not one of {meta['choices']}")
    if "min" in meta:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RetrainError(f"{where} must be a number, not {value!r}")
        if not meta["min"] <= value <= meta["max"]:
            raise RetrainError(
                f"{where} = {value} is out of range: use {meta['min']} to {meta['max']} ({meta['help']})"
            )


def section_from_dict(factory: Any, values: dict[str, Any], where: str = "") -> Any:
    """One config section (named `where` in messages) from a dict, every value of its field's type, else
    RetrainError."""
    section = factory()
    where = where or type(section).__name__
    fields = {f.name: f for f in dataclasses.fields(section)}
    unknown = set(values) - set(fields)
    if unknown:
        raise RetrainError(f"config section {where} has unknown keys {sorted(unknown)}")
    return dataclasses.replace(section, **{name: _typed(where, fields[name], value) for name, value in values.items()})


def _typed(section: str, spec: dataclasses.Field, value: Any) -> Any:
    """`value` as the field's declared type (an int is a fine float), or RetrainError naming the setting."""
    kind = str(spec.type)
    if value is None and "None" in kind:
        return None
    if kind.startswith("list"):
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    elif kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise RetrainError(f"{section}.{spec.name} = {value!r:.80} is not a valid {kind}")
    return value


@dataclass(frozen=True)
class Knob:
    """What the CLI and the app both need to offer one config field: its kind, help, choices and range."""

    name: str
    kind: str  # "bool", "int", "float", "list" or "text" (the field's type, read once here)
    help: str
    choices: list | None = None
    low: float | None = None
    high: float | None = None


def knob_of(section: Any, name: str) -> Knob:
    """The Knob of one field of a config dataclass (or an instance of one)."""
    field_ = next(f for f in dataclasses.fields(section) if f.name == name)
    type_name = str(field_.type).split(" ")[0]  # "int | None" is an int field that may be unset
    kind = "list" if type_name.startswith("list") else type_name if type_name in ("bool", "int", "float") else "text"
    meta = field_.metadata
    return Knob(name, kind, meta.get("help", ""), meta.get("choices"), meta.get("min"), meta.get("max"))


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Quick: a first model in a minute; good enough to see whether the data works. It sets the backbone and view
    # back too: after Best accuracy, "Quick" must not keep two backbones and the mirror view (four times as slow).
    "Quick": {
        "train": {"architecture": TrainConfig().architecture, "mirror_view": False, "epochs": 15, "early_stopping": 4},
        "augment": {"augment_copies": 0},
    },
    # Best accuracy: the most accurate recipe measured (README, "The accuracy experiments"): Lite0 and Lite1 side
    # by side, each photo also seen mirrored, chosen by cross-validation; about four times Quick's caching time.
    # No augmented copies: on top of four passes a photo they would triple it again, for a gain never measured.
    "Best accuracy": {
        # The pair takes neither a bottleneck layer nor fine-tuning: an earlier choice of either is cleared, so the
        # preset never leaves settings that must be fixed before training.
        "train": {
            "architecture": LITE0_AND_LITE1,
            "mirror_view": True,
            "bottleneck_layer": None,
            "fine_tune_layers": 0,
            "epochs": 80,
            "early_stopping": 12,
        },
        "augment": {"augment_copies": 0},
    },
}
DEFAULT_PRESET = "Quick"  # what a new workspace starts with


def apply_preset(config: RunConfig, preset: str) -> RunConfig:
    """A copy of `config` with a named preset's values set."""
    if preset not in PRESETS:
        raise RetrainError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    changed = {name: dataclasses.replace(getattr(config, name), **values) for name, values in PRESETS[preset].items()}
    return dataclasses.replace(config, **changed)
