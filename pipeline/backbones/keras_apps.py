"""Keras Applications (Inception V3, MobileNet V2 at any width, ResNet-50) as backbones that take RGB 0–255.

Each network's own preprocessing is put inside the model, so every backbone takes the same input and an
exported classifier needs no separate preprocessing step. Their ImageNet weights download once to Keras's
usual cache (`~/.keras/models`); without internet that fails at once and we say so in one line, pointing at
the offline `efficientnet_lite0`.
"""

from __future__ import annotations

import urllib.error
from typing import TYPE_CHECKING

import numpy as np

from pipeline.backbones.bottleneck import Backbone, cut_at_bottleneck, describe_backbone, weights_fingerprint
from pipeline.errors import BackboneUnavailable

if TYPE_CHECKING:
    import keras

# name → (keras.applications constructor, preprocessing mode as in keras.applications.imagenet_utils)
APPLICATIONS = {
    "inception_v3": ("InceptionV3", "tf"),
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "resnet50": ("ResNet50", "caffe"),
}
MOBILENET_V2_WIDTHS = ("0.35", "0.5", "0.75", "1.0", "1.3", "1.4")  # the widths with published ImageNet weights
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # ImageNet channel means that caffe-mode preprocessing subtracts
CAFFE_FIRST_CONV = "conv1_conv"  # ResNet-50's first convolution, which absorbs the RGB→BGR swap


def parse_app_name(architecture: str) -> tuple[str, float | None]:
    """("mobilenet_v2", 0.35) for "mobilenet_v2_0.35"; (name, None) for the others; KeyError if not an app."""
    if architecture in APPLICATIONS:
        return architecture, None
    base, _, width = architecture.rpartition("_")
    if base == "mobilenet_v2" and width in MOBILENET_V2_WIDTHS:
        return base, float(width)
    raise KeyError(architecture)


def load_keras_app(
    architecture: str,
    input_size: int,
    bottleneck_layer: str | None = None,
    weights: str | None = "imagenet",
) -> Backbone:
    """A Keras Application cut at `bottleneck_layer` (default: its last feature map, average-pooled).

    `weights=None` builds it untrained, without any download: tests use that to check layers and preprocessing.
    """
    base, alpha = parse_app_name(architecture)
    network = _application(architecture, input_size, alpha, weights)
    if APPLICATIONS[base][1] == "caffe":
        _read_rgb_in_first_conv(network)
    layer = bottleneck_layer or network.layers[-1].name
    features = cut_at_bottleneck(network, layer, architecture)
    model = _with_preprocessing(features, APPLICATIONS[base][1], input_size, architecture)
    weights_id = f"{weights or 'untrained'}-{weights_fingerprint(network)}"
    return describe_backbone(architecture, input_size, weights_id, layer, model)


def _application(architecture: str, input_size: int, alpha: float | None, weights: str | None) -> keras.Model:
    """The headless network, with its ImageNet weights downloaded if needed; BackboneUnavailable if they cannot be."""
    import keras

    base, _ = parse_app_name(architecture)
    constructor = getattr(keras.applications, APPLICATIONS[base][0])
    options = {"alpha": alpha} if alpha is not None else {}
    try:
        return constructor(include_top=False, weights=weights, input_shape=(input_size, input_size, 3), **options)
    except Exception as error:  # keras.utils.get_file raises a bare Exception when the download fails
        if weights is None or not _is_download_failure(error):
            raise
        raise BackboneUnavailable(
            f"{architecture} needs to download its ImageNet weights once from the internet and could not "
            f"({_root_cause(error)}); use efficientnet_lite0, which works offline."
        ) from error


def _is_download_failure(error: BaseException) -> bool:
    """True when `error` (or what caused it) is a failed or corrupted weights download."""
    for cause in _causes(error):
        if isinstance(cause, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return True
        if str(cause).startswith(("URL fetch failure", "Incomplete or corrupted file")):
            return True
    return False


def _root_cause(error: BaseException) -> str:
    """The innermost reason, e.g. "[Errno -2] Name or service not known", for the one-line message."""
    innermost = _causes(error)[-1]
    return str(getattr(innermost, "reason", innermost)) or type(innermost).__name__


def _causes(error: BaseException) -> list[BaseException]:
    chain = [error]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    return chain


def _read_rgb_in_first_conv(network: keras.Model) -> None:
    """Make a caffe-mode network (trained on BGR) read RGB by reversing its first kernel's input channels.

    conv(BGR image, kernel) == conv(RGB image, kernel with input channels reversed), exactly; doing the swap
    here keeps the model free of custom layers and of an extra layer that fine-tuning could disturb.
    """
    conv = network.get_layer(CAFFE_FIRST_CONV)
    kernel, *rest = conv.get_weights()
    conv.set_weights([kernel[:, :, ::-1, :], *rest])


def _with_preprocessing(features: keras.Model, mode: str, input_size: int, architecture: str) -> keras.Model:
    """`image` (RGB 0–255) → the network's own input scaling → `features`, as one model."""
    import keras

    image = keras.Input((input_size, input_size, 3), name="image")
    if mode == "caffe":  # subtract the channel means; the BGR swap lives in the first conv
        offset = -np.asarray(CAFFE_MEAN_RGB, dtype="float32")
        scaled = keras.layers.Rescaling(1.0, offset=offset, name="preprocess")(image)
    else:  # "tf": scale to −1…1
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(image)
    model_name = architecture.replace(".", "_") + "_backbone"
    return keras.Model(image, features(scaled), name=model_name)
