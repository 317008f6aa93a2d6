"""The Keras side of the head: its layers, optimizers and a metrics callback, for the steps that train in Keras.

The local engine trains the head in NumPy (`pipeline.train`); Keras is used where a Keras model is the point:
building the exported classifier (`Head.to_keras`), fine-tuning the backbone with the head on top, and the Ray
engine's streamed training. They share these definitions so a head means the same layers everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras

from pipeline.config import TrainConfig
from pipeline.errors import RetrainError
from pipeline.train import MetricsCallback, rounded


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
            "train_loss": rounded(logs.get("loss")),
            "train_accuracy": rounded(logs.get("accuracy")),
            "val_loss": rounded(logs.get("val_loss")),
            "val_accuracy": rounded(logs.get("val_accuracy")),
            "elapsed_seconds": round(time.monotonic() - self.started, 3),
        }
        self.rows.append(row)
        if self.on_metrics:
            self.on_metrics(row)
        if self.should_stop and self.should_stop():
            self.cancelled = True
            self.model.stop_training = True
