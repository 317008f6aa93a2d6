"""What a backbone is to the rest of the engine: a model from RGB 0–255 images to bottleneck vectors.

Every kind of backbone (the offline EfficientNet-Lite0, Keras Applications, a user's own .keras file) is cut
at its bottleneck layer the same way here, so layer choice, pooling and identities behave alike for all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import RetrainError
from pipeline.files import file_sha256

if TYPE_CHECKING:
    import keras


@dataclass
class Backbone:
    """A backbone: what the bottleneck cache needs to know about it, and its model, built on first use.

    The model is built lazily so that a run whose bottlenecks are all cached never pays for it
    (an unchanged `cache` rerun is then a hash check, not a TensorFlow start-up).
    """

    name: str  # architecture as given: "efficientnet_lite0", "mobilenet_v2_0.5", "/path/model.keras"
    input_size: int  # square side in pixels the model expects
    identity: str  # name + weights hash + bottleneck layer; part of bottleneck cache keys so backbones never mix
    feature_dim: int  # length of one bottleneck vector
    model_loader: Callable[[], keras.Model] = field(repr=False, compare=False)  # builds `model` when first needed
    # The compiled forward pass, traced once per loaded backbone (originals, then augmented copies, reuse it).
    compiled: Any = field(default=None, compare=False, repr=False)
    # The forward pass on the runtime that computes this backbone's bottlenecks (LiteRT or TensorFlow; see runtime).
    forward: Any = field(default=None, compare=False, repr=False)
    _model: Any = field(default=None, init=False, compare=False, repr=False)

    @property
    def model(self) -> keras.Model:
        """(batch, S, S, 3) RGB float 0–255 → (batch, feature_dim); preprocesses by itself."""
        if self._model is None:
            self._model = self.model_loader()
        return self._model

    @property
    def built(self) -> bool:
        """Whether `model` has been built (reading it would build it, which takes TensorFlow and seconds)."""
        return self._model is not None


def cut_at_bottleneck(model: keras.Model, layer_name: str, source: str) -> keras.Model:
    """`model` from its input to `layer_name`'s output, global-average-pooled when that output is a feature map.

    `source` names the model in the error raised for an unknown layer ("efficientnet_lite0", a file path, ...).
    """
    import keras

    try:
        features = model.get_layer(layer_name).output
    except ValueError:
        raise unknown_layer_error(model, layer_name, source) from None
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name=f"{layer_name}_pool")(features)
    elif len(features.shape) != 2:
        raise RetrainError(
            f"Layer {layer_name!r} of {source} gives shape {tuple(features.shape)}; "
            "choose a layer whose output is a vector or an image-like feature map."
        )
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a single input stays unwrapped
    return keras.Model(inputs, features, name=f"{model.name}_bottleneck")


def unknown_layer_error(model: keras.Model, layer_name: str, source: str) -> RetrainError:
    """A message naming the missing layer and a few layers near the top, which are the usual choices."""
    candidates = ", ".join(layer.name for layer in model.layers[-6:])
    return RetrainError(f"{source} has no layer named {layer_name!r}. Layers near the top: {candidates}.")


def describe_backbone(
    name: str, input_size: int, weights_id: str, layer: str, model: keras.Model, keyed_as: str | None = None
) -> Backbone:
    """A Backbone whose identity ties the name (or `keyed_as`, when the name is not what determines its
    features), the exact weights and the bottleneck layer together."""
    return Backbone(
        name=name,
        input_size=input_size,
        identity=backbone_identity(keyed_as or name, weights_id, layer),
        feature_dim=int(model.output.shape[-1]),
        model_loader=lambda: model,
    )


def backbone_identity(name: str, weights_id: str, layer: str) -> str:
    return f"{name}|weights:{weights_id}|layer:{layer}"


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of every weight value, for backbones whose weights file we never see directly."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:12]


def file_fingerprint(path: str, length: int = 12) -> str:
    """A hash of a file's bytes (`length` hex digits; 64 for the full sha256)."""
    return file_sha256(path)[:length]
