"""Head training from the cache against the Keras transfer-learning guide's frozen-base fit.

The guide's way (keras-io `guides/transfer_learning.py`): a frozen base inside the model, a new
head on top, `model.fit` over a tf.data pipeline that reads, decodes and resizes every image every
epoch. Ours: the base ran once, into the cache; an epoch reads vectors and trains a Dense layer.
Both sides start from files on disk (photos, or the cache file) and see the same examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bench.timing import Stopwatch
from pipeline.backbones import Backbone
from pipeline.bottlenecks import ExtractItem, cache_bottlenecks
from pipeline.config import TrainConfig

if TYPE_CHECKING:  # pipeline.train imports TensorFlow: only when a measurement starts
    from pipeline.train import HeadData

BATCH = 32  # the guide's batch size, and TrainConfig's default


class FrozenBaseFit:
    """The guide's model (frozen base, dropout, new softmax) and its image pipeline, compiled once up front.

    It freezes `backbone.model`, so give it a backbone of its own.
    """

    def __init__(self, backbone: Backbone, paths: Sequence[str], labels: Sequence[int], num_classes: int):
        import keras
        import tensorflow as tf

        size = backbone.input_size
        base = backbone.model
        base.trainable = False
        inputs = keras.Input((size, size, 3))
        features = base(inputs, training=False)  # inference mode, as the guide insists
        outputs = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.Dropout(0.2)(features))
        self.model = keras.Model(inputs, outputs)
        self.model.compile(
            optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )

        @tf.autograph.experimental.do_not_convert  # straight-line code; AutoGraph only warns about the closure
        def load(path, label):
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            return tf.image.resize(image, (size, size)), label

        self.images = (
            tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, dtype=np.int64)))
            .shuffle(len(paths), seed=0)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(BATCH)
            .prefetch(tf.data.AUTOTUNE)
        )
        self.model.fit(self.images.take(1), epochs=1, shuffle=False, verbose=0)  # trace and build once, untimed

    def epoch_seconds(self) -> float:
        with Stopwatch() as watch:
            self.model.fit(self.images, epochs=1, shuffle=False, verbose=0)  # the dataset shuffles itself
        return watch.seconds


def cache_epoch_seconds(
    items: Sequence[ExtractItem], labels: Sequence[int], num_classes: int, backbone: Backbone, bottleneck_dir: str
) -> float:
    """Read the items' bottlenecks from a warm cache and train a new head one epoch on them."""
    from pipeline.train import HeadData, train_head

    with Stopwatch() as watch:
        cached = cache_bottlenecks(items, backbone, bottleneck_dir)
        if cached.computed:
            raise RuntimeError(f"the cache was not warm: {cached.computed} bottlenecks had to be computed")
        x = np.stack([cached.vectors[item] for item in items])
        empty = np.zeros((0, x.shape[1]), np.float32)
        data = HeadData(x, np.asarray(labels), empty, np.zeros(0, int), num_classes)
        train_head(data, TrainConfig(epochs=1, early_stopping=0))
    return watch.seconds


def head_steps_seconds(data: HeadData, steps: int) -> float:
    """Train a head for exactly `steps` steps at the default batch (no early stop, so all steps run)."""
    from pipeline.train import train_head

    with Stopwatch() as watch:
        _, rows = train_head(data, TrainConfig(how_many_training_steps=steps, early_stopping=0))
    if rows[-1]["step"] < steps:
        raise RuntimeError(f"head training stopped at step {rows[-1]['step']} of {steps}")
    return watch.seconds
