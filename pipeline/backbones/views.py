"""The mirror view, baked into a backbone: a photo's features are the mean of its own and its mirror image's.

A linear head on one view of a photo is near its ceiling on flowers; averaging the features of the photo and
of its left-right mirror gives the head a steadier description of it (bench/ and the README measure what it
buys). The view is part of the backbone model itself, not of the extraction loop, so everything that runs
the backbone — extraction on either runtime, the exported classifier, prediction, fine-tuning — computes the
same thing, and the exports need no code of ours to load. It costs one more forward pass per image.

The mirror uses core Keras layers only: the width axis is moved last and multiplied by a fixed reversal
matrix (an exact permutation of the pixels: every output is one input times 1.0), then moved back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.backbones.bottleneck import Backbone

if TYPE_CHECKING:
    import keras

MIRROR = "mirror"  # the view's name in backbone identities (and so in bottleneck cache keys)


def with_mirror_view(backbone: Backbone) -> Backbone:
    """`backbone` whose features are the mean over the image and its mirror image; keyed apart from it."""
    return Backbone(
        backbone.name,
        backbone.input_size,
        f"{backbone.identity}|views:{MIRROR}",
        backbone.feature_dim,
        model_loader=lambda: mirror_averaged(backbone.model),
    )


def mirror_averaged(model: keras.Model) -> keras.Model:
    """A model computing `model` on the image and on its mirror image, and their mean."""
    import keras

    inputs = keras.Input(model.input_shape[1:], name="image")
    features = keras.layers.Average(name="mean_of_views")([model(inputs), model(mirror_image(inputs))])
    return keras.Model(inputs, features, name=f"{model.name}_{MIRROR}")


def mirror_image(images: keras.KerasTensor) -> keras.KerasTensor:
    """(N, H, W, C) images flipped left-right, exactly, by a frozen permutation matrix over the width axis."""
    import keras

    width = int(images.shape[2])
    width_last = keras.layers.Permute((1, 3, 2), name="mirror_width_last")(images)
    reverse = keras.layers.Dense(width, use_bias=False, trainable=False, name="mirror_reverse")
    flipped = reverse(width_last)
    reverse.set_weights([np.eye(width, dtype=np.float32)[::-1]])
    return keras.layers.Permute((1, 3, 2), name="mirror_width_back")(flipped)
