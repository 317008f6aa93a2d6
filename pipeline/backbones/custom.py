"""A user's own Keras model (a .keras file) as the backbone.

Assumed (and to be said wherever a user picks a file): the model takes RGB images with values 0–255 at its
own square input size and does any other preprocessing itself, as all our built-in backbones do. The
bottleneck is the layer the user names, or the model's output when that is already one vector per image.
The identity carries the file's sha256 (and not the path typed), so editing the file can never mix old and new
bottlenecks, and one file reached by two paths is cached once.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.backbones.bottleneck import Backbone, cut_at_bottleneck, describe_backbone, file_fingerprint
from pipeline.errors import RetrainError

if TYPE_CHECKING:
    import keras

MODEL_SUFFIX = ".keras"
OWN_MODEL = "keras_file"  # the name in a user's model's identity: its sha256 says which file, whatever its path


def is_model_path(architecture: str) -> bool:
    """True when `architecture` names a file rather than a built-in backbone."""
    return architecture.lower().endswith((MODEL_SUFFIX, ".h5")) or "/" in architecture or "\\" in architecture


def input_size(architecture: str) -> int:
    """The square input side of the model file, read from its config without importing TensorFlow if possible."""
    path = _existing_model_file(architecture)
    shape = _input_shape_from_config(path)
    if shape is None:  # unusual layout: let Keras work it out
        shape = _load(path).input_shape
    return _square_side(shape, path)


def load_custom_backbone(architecture: str, bottleneck_layer: str | None = None) -> Backbone:
    """The model in the file cut at `bottleneck_layer`, or at its output when that is already a vector."""
    path = _existing_model_file(architecture)
    before = _sha256(path)
    model = _load(path)
    # Keyed by the file's bytes, not by the path typed: "mine.keras" and "/home/me/mine.keras" (or a copy) are one
    # backbone, whose bottlenecks are cached once. The bytes hashed must be the bytes loaded: a file saved over
    # while it was read would otherwise cache the old model's features under the new file's key.
    if _sha256(path) != before:
        raise RetrainError(
            f"{path} changed while it was being read (saved over, or a link moved to another file). Wait until it is "
            "written completely, then start the run again."
        )
    if len(model.inputs) != 1:
        raise RetrainError(f"{path} has {len(model.inputs)} inputs; a backbone must take exactly one image input.")
    side = _square_side(model.inputs[0].shape, path)
    layer = bottleneck_layer or _vector_output_layer(model, path)
    features = cut_at_bottleneck(model, layer, str(path))
    return describe_backbone(architecture, side, f"sha256:{before}", layer, features, keyed_as=OWN_MODEL)


def _existing_model_file(architecture: str) -> Path:
    path = Path(architecture).expanduser()
    if path.suffix.lower() != MODEL_SUFFIX:
        raise RetrainError(f"Backbone file {path} is not a .keras file; save your model with model.save('name.keras').")
    if not path.is_file():
        raise RetrainError(f"Backbone model file not found: {path}. Check the path, or pick a built-in backbone.")
    return path


def _sha256(path: Path) -> str:
    try:
        return file_fingerprint(str(path), 64)
    except OSError as error:  # deleted, or its folder unmounted, between one look and the next
        raise RetrainError(
            f"Backbone model file {path} could not be read ({error.strerror or error}). Check the path, then start the "
            "run again."
        ) from None


def _load(path: Path) -> keras.Model:
    import keras

    if not zipfile.is_zipfile(path):  # Keras would call a truncated file "File not found"
        raise RetrainError(
            f"{path} is not a whole .keras file (not a zip archive: cut short while copying, or another format). "
            "Copy it again, or save it again with model.save('name.keras')."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for bad files; all mean "cannot use this file"
        raise RetrainError(
            f"Cannot load {path} as a Keras model ({str(error).splitlines()[0] if str(error) else error!r}). "
            "Save it with model.save('name.keras') using built-in layers only."
        ) from error


def _input_shape_from_config(path: Path) -> list | None:
    """The batch shape of the first InputLayer in the file's config.json, or None if there is none."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise RetrainError(f"{path} is not a valid .keras file ({error}). Save it again with model.save().") from None
    return _find_input_shape(config)


def _find_input_shape(node: Any) -> list | None:
    """Depth-first search for an InputLayer's batch shape; the outer model's inputs come first."""
    if isinstance(node, dict):
        if node.get("class_name") == "InputLayer":
            layer_config = node.get("config", {})
            return layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        shape = _find_input_shape(child)
        if shape is not None:
            return shape
    return None


def _square_side(shape: Any, path: Path) -> int:
    """The side S of a (batch, S, S, 3) input shape; RetrainError for anything else."""
    shape = tuple(shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise RetrainError(
            f"{path} takes input of shape {shape}; a backbone needs a fixed square RGB input (batch, S, S, 3)."
        )
    return int(shape[1])


def _vector_output_layer(model: keras.Model, path: Path) -> str:
    """The output layer's name when the model has one output that is already a vector per image."""
    if len(model.outputs) == 1 and len(model.outputs[0].shape) == 2:
        # Functional models name their outputs; a Sequential model's output is its last layer.
        return (getattr(model, "output_names", None) or [model.layers[-1].name])[0]
    recent = ", ".join(layer.name for layer in model.layers[-6:])
    raise RetrainError(f"{path} does not end in one feature vector; give bottleneck_layer, e.g. one of: {recent}.")
