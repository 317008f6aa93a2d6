"""Training the new head on cached bottlenecks: plain arrays in, a small softmax model out.

This is the step retrain.py users waited half an hour for. With features cached, the head is a
Dense layer or two over float vectors, so whole epochs run as one compiled call
(`steps_per_execution`) and thousands of steps take seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import TrainConfig
from pipeline.errors import RetrainError, RunCancelled

MetricsCallback = Callable[[dict], None]
MIN_STEPS = 300  # the fewest steps a head gets in epochs mode, whatever the dataset size


@dataclass
class HeadData:
    """Bottlenecks and integer labels for the head, per split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


def build_head(feature_dim: int, num_classes: int, config: TrainConfig) -> keras.Model:
    """Dropout, an optional hidden layer, and a softmax over the classes."""
    inputs = keras.Input((feature_dim,), name="bottleneck")
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(inputs)
    if config.hidden_units:
        x = keras.layers.Dense(config.hidden_units, activation="relu", name="head_hidden")(x)
        x = keras.layers.Dropout(config.dropout, name="head_hidden_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def make_optimizer(config: TrainConfig, learning_rate: float | None = None):
    """The optimizer a config names (sgd gets momentum, as retrain.py users usually wanted)."""
    rate = learning_rate if learning_rate is not None else config.learning_rate
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    raise RetrainError(f"unknown optimizer {config.optimizer!r}; choose adam, sgd or rmsprop")


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Inverse-frequency weights when classes are imbalanced (largest over 1.5x the smallest)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts[counts > 0]
    if len(present) == 0 or present.max() <= 1.5 * present.min():
        return None
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return {index: float(weight) for index, weight in enumerate(weights)}


def schedule(config: TrainConfig, train_size: int) -> tuple[int, int]:
    """(steps between validations, number of validations) for steps mode or epochs mode.

    In epochs mode a small dataset still gets MIN_STEPS steps: 15 epochs of 30 photos would be 15
    steps, far too few for a new head; early stopping keeps the best weights either way.
    """
    steps_per_epoch = max(math.ceil(train_size / config.train_batch_size), 1)
    if config.how_many_training_steps > 0:
        total = config.how_many_training_steps
    else:
        total = max(config.epochs * steps_per_epoch, MIN_STEPS)
    # About 40 validations a run: enough for a curve and early stopping, few enough to stay fast.
    interval = config.eval_step_interval or min(max(steps_per_epoch, math.ceil(total / 40)), total)
    if config.how_many_training_steps > 0 and total % interval:
        interval = _nearest_divisor(total, interval)  # exactly the steps asked for, as retrain.py gave
    return interval, math.ceil(total / interval)


def _nearest_divisor(total: int, wanted: int) -> int:
    """The divisor of `total` closest to `wanted` (ties: the larger, fewer validations)."""
    divisors = [d for d in range(1, math.isqrt(total) + 1) if total % d == 0]
    divisors += [total // d for d in divisors]
    return min(divisors, key=lambda d: (abs(d - wanted), -d))


def train_head(
    data: HeadData,
    config: TrainConfig,
    on_metrics: MetricsCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[keras.Model, list[dict]]:
    """Train a new head; returns it (best validation weights) and one metrics row per validation."""
    if len(data.x_train) == 0:
        raise RetrainError("no training images with bottlenecks; check the dataset's problems")
    keras.utils.set_random_seed(config.seed)
    head = build_head(data.x_train.shape[1], data.num_classes, config)
    interval, rounds = schedule(config, len(data.x_train))
    head.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=interval,
    )
    train = (
        tf.data.Dataset.from_tensor_slices((data.x_train, one_hot(data.y_train, data.num_classes)))
        .shuffle(len(data.x_train), seed=config.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(config.train_batch_size)
    )
    has_validation = len(data.x_val) > 0
    recorder = MetricsRecorder(interval, on_metrics, should_stop)
    callbacks: list = [recorder]
    if has_validation and config.early_stopping > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
        )
    validation = (data.x_val, one_hot(data.y_val, data.num_classes)) if has_validation else None
    head.fit(
        train,
        steps_per_epoch=interval,
        epochs=rounds,
        validation_data=validation,
        validation_batch_size=max(len(data.x_val), 1)
        if config.validation_batch_size < 0
        else config.validation_batch_size,
        class_weight=class_weights(data.y_train, data.num_classes) if config.class_weights else None,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )  # the dataset shuffles itself
    if recorder.cancelled:
        raise RunCancelled("training was cancelled")
    return head, recorder.rows


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as one-hot float32 rows, the targets every head is trained on."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=int)]


class MetricsRecorder(keras.callbacks.Callback):
    """Turns each validation into a metrics row, and stops training when asked to."""

    def __init__(
        self, steps_per_round: int, on_metrics: MetricsCallback | None, should_stop: Callable[[], bool] | None
    ):
        super().__init__()
        self.steps_per_round, self.on_metrics, self.should_stop = steps_per_round, on_metrics, should_stop
        self.rows: list[dict] = []
        self.cancelled = False
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {
            "step": (epoch + 1) * self.steps_per_round,
            "epoch": epoch + 1,
            "train_loss": _rounded(logs.get("loss")),
            "train_accuracy": _rounded(logs.get("accuracy")),
            "val_loss": _rounded(logs.get("val_loss")),
            "val_accuracy": _rounded(logs.get("val_accuracy")),
            "elapsed_seconds": round(time.monotonic() - self.started, 3),
        }
        self.rows.append(row)
        if self.on_metrics:
            self.on_metrics(row)
        if self.should_stop and self.should_stop():
            self.cancelled = True
            self.model.stop_training = True


def _rounded(value) -> float | None:
    return None if value is None else round(float(value), 6)
