"""Optional fine-tuning: unfreeze the backbone's top layers once the head has converged.

The Keras transfer-learning guide's recipe: start from a trained head (a random head would
wreck the pretrained features with large gradients), keep BatchNorm layers in inference mode,
and use a very low learning rate. It trains on images, not the cache, because the features
change as the backbone does — so it is slow on a CPU, and off by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from pipeline.bottlenecks import ExtractItem, load_item_for_model
from pipeline.config import AugmentConfig, TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.export import build_classifier
from pipeline.keras_head import MetricsRecorder, make_optimizer
from pipeline.train import one_hot

# A layer's block: the start of its name up to the block's number ("block15" of block15_project_bn, "block_16" of
# MobileNetV2's block_16_expand, "block7a" of EfficientNet's block7a_se_reduce). A layer outside numbered blocks
# (stem_conv, head_conv) is a block of its own.
BLOCK_NAME = re.compile(r"^(.*?\d+[a-z]?)_")


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers with weights, bottom to top, looking inside nested models (through their public `layers`)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += weighted_layers(layer)
        elif layer.weights:
            found.append(layer)
    return found


def block_of(layer: keras.layers.Layer) -> str:
    """The name of the block a layer belongs to (see BLOCK_NAME)."""
    match = BLOCK_NAME.match(layer.name)
    return match.group(1) if match else layer.name


def unfreeze_top_layers(backbone_model: keras.Model, count: int) -> int:
    """Make the top `count` weighted layers trainable, rounded up to whole blocks, BatchNorm excepted; returns how
    many layers were made trainable.

    A block is trained whole or not at all: half a block tuned against its frozen other half gains little.
    """
    weighted = weighted_layers(backbone_model)
    if count > len(weighted):
        raise RetrainError(
            f"--fine_tune_layers {count} is more than the backbone's {len(weighted)} layers "
            "with weights; choose a smaller number"
        )
    blocks = {block_of(layer) for layer in weighted[len(weighted) - count :]} if count else set()
    backbone_model.trainable = True
    for layer in weighted:
        # Frozen BatchNorm runs in inference mode in Keras 3, keeping its statistics intact.
        layer.trainable = block_of(layer) in blocks and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(layer.trainable for layer in weighted)


def image_dataset(
    items: Sequence[ExtractItem],
    labels: Sequence[int],
    num_classes: int,
    size: int,
    augment: AugmentConfig | None,
    batch_size: int,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Decoded (and for copies, augmented) images with one-hot labels, through the training decode path."""
    targets = one_hot(np.asarray(labels), num_classes)

    def load(index: np.int64) -> np.ndarray:
        return load_item_for_model(items[int(index)], size, augment).astype(np.float32)

    def to_example(index):
        image = tf.numpy_function(load, [index], tf.float32)
        image.set_shape((size, size, 3))
        return image, tf.gather(targets, index)

    indices = tf.data.Dataset.range(len(items))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(items), seed=shuffle_seed)
    return indices.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def fine_tune(
    backbone,
    head: keras.Model,
    train: tuple[list[ExtractItem], list[int]],
    validation: tuple[list[ExtractItem], list[int]],
    num_classes: int,
    config: TrainConfig,
    augment: AugmentConfig | None,
    on_metrics: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> keras.Model:
    """Backbone + trained head as one model, with the top backbone layers trained a little further."""
    classifier = build_classifier(backbone.model, head, backbone.input_size)
    unfreeze_top_layers(backbone.model, config.fine_tune_layers)
    classifier.compile(
        optimizer=make_optimizer(config, config.fine_tune_learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    size, batch = backbone.input_size, config.train_batch_size
    train_data = image_dataset(*train, num_classes, size, augment, batch, shuffle_seed=config.seed)
    validation_data = image_dataset(*validation, num_classes, size, augment, batch) if validation[0] else None
    steps = -(-len(train[0]) // batch)
    recorder = MetricsRecorder(steps, on_metrics, should_stop)
    classifier.fit(
        train_data, epochs=config.fine_tune_epochs, validation_data=validation_data, callbacks=[recorder], verbose=0
    )
    if recorder.cancelled:
        raise RunCancelled("fine-tuning was cancelled")
    return classifier


def classifier_probabilities(
    classifier: keras.Model, items: Sequence[ExtractItem], size: int, batch_size: int = 32
) -> np.ndarray:
    """The whole model's probabilities for images (after fine-tuning, the cache no longer applies)."""
    if not items:
        return np.zeros((0, classifier.output_shape[-1]), np.float32)
    data = image_dataset(items, [0] * len(items), 1, size, None, batch_size).map(lambda image, _: image)
    return classifier.predict(data, verbose=0)
