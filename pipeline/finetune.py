"""Optional fine-tuning: unfreeze the backbone's top layers once the head has converged.

The Keras transfer-learning guide's recipe: start from a trained head (a random head would
wreck the pretrained features with large gradients), keep BatchNorm layers in inference mode,
and use a very low learning rate. It trains on images, not the cache, because the features
change as the backbone does — so it is slow on a CPU, and off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from pipeline.bottlenecks import ExtractItem, load_item_for_model
from pipeline.config import AugmentConfig, TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.export import build_classifier
from pipeline.train import MetricsRecorder, make_optimizer


def unfreeze_top_layers(backbone_model: keras.Model, count: int) -> int:
    """Make the top `count` weighted layers trainable, BatchNorm excepted; returns how many were."""
    weighted = [layer for layer in backbone_model._flatten_layers(include_self=False, recursive=True)
                if layer.weights and not isinstance(layer, keras.Model)]
    if count > len(weighted):
        raise RetrainError(f"--fine_tune_layers {count} is more than the backbone's {len(weighted)} layers "
                           "with weights; choose a smaller number")
    backbone_model.trainable = True
    for index, layer in enumerate(weighted):
        # Frozen BatchNorm runs in inference mode in Keras 3, keeping its statistics intact.
        layer.trainable = index >= len(weighted) - count and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(layer.trainable for layer in weighted)


def image_dataset(items: Sequence[ExtractItem], labels: Sequence[int], num_classes: int, size: int,
                  augment: AugmentConfig | None, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Decoded (and for copies, augmented) images with one-hot labels, through the training decode path."""
    targets = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=int)]

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


def fine_tune(backbone, head: keras.Model, train: tuple[list[ExtractItem], list[int]],
              validation: tuple[list[ExtractItem], list[int]], num_classes: int, config: TrainConfig,
              augment: AugmentConfig | None, on_metrics: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> keras.Model:
    """Backbone + trained head as one model, with the top backbone layers trained a little further."""
    classifier = build_classifier(backbone.model, head, backbone.input_size)
    unfreeze_top_layers(backbone.model, config.fine_tune_layers)
    classifier.compile(optimizer=make_optimizer(config, config.fine_tune_learning_rate),
                       loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                       metrics=["accuracy"])
    size, batch = backbone.input_size, config.train_batch_size
    train_data = image_dataset(*train, num_classes, size, augment, batch, shuffle_seed=config.seed)
    validation_data = image_dataset(*validation, num_classes, size, augment, batch) if validation[0] else None
    steps = -(-len(train[0]) // batch)
    recorder = MetricsRecorder(steps, on_metrics, should_stop)
    classifier.fit(train_data, epochs=config.fine_tune_epochs, validation_data=validation_data,
                   callbacks=[recorder], verbose=0)
    if recorder.cancelled:
        raise RunCancelled("fine-tuning was cancelled")
    return classifier


def classifier_probabilities(classifier: keras.Model, items: Sequence[ExtractItem], size: int,
                             batch_size: int = 32) -> np.ndarray:
    """The whole model's probabilities for images (after fine-tuning, the cache no longer applies)."""
    if not items:
        return np.zeros((0, classifier.output_shape[-1]), np.float32)
    data = image_dataset(items, [0] * len(items), 1, size, None, batch_size).map(lambda image, _: image)
    return classifier.predict(data, verbose=0)
