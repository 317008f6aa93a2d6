"""Training the new head on cached bottlenecks: plain arrays in, a small softmax head out, in NumPy.

This is the step retrain.py users waited half an hour for. With features cached, the head is a Dense layer
or two over float vectors: thousands of steps take about a second in NumPy, with no TensorFlow start-up (which
alone takes longer than a warm rerun should). The maths is Keras's for the same head — Glorot-uniform
kernels, inverted dropout, softmax cross-entropy with label smoothing and per-class weights, Keras's Adam,
SGD-with-momentum and RMSprop updates, early stopping on validation loss keeping the best weights — so
`Head.to_keras` gives the exported model exactly the weights evaluated here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.config import TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.head import Head, softmax

MetricsCallback = Callable[[dict], None]
MIN_STEPS = 300  # the fewest steps a head gets in epochs mode, whatever the dataset size
EPSILON = 1e-7  # Keras's optimizer epsilon and probability clip


@dataclass
class HeadData:
    """Bottlenecks and integer labels for the head, per split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


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
) -> tuple[Head, list[dict]]:
    """Train a new head; returns it (best validation weights) and one metrics row per validation."""
    if len(data.x_train) == 0:
        raise RetrainError("no training images with bottlenecks; check the dataset's problems")
    rng = np.random.default_rng(config.seed)
    x_train = np.asarray(data.x_train, np.float32)
    head = initial_head(x_train.shape[1], data.num_classes, config.hidden_units, rng)
    interval, rounds = schedule(config, len(x_train))
    targets = smoothed(one_hot(data.y_train, data.num_classes), config.label_smoothing)
    weights = _sample_weights(data.y_train, data.num_classes) if config.class_weights else None
    step = SgdStep(head, make_optimizer(config), config.dropout, rng)
    batches = Batches(len(x_train), config.train_batch_size, rng)
    validation = Validation(data, config.label_smoothing) if len(data.x_val) else None
    stopper = EarlyStopping(config.early_stopping) if validation and config.early_stopping > 0 else None
    rows: list[dict] = []
    started = time.monotonic()
    for round_number in range(1, rounds + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging head is said below, in one line
            loss, accuracy = step.run(x_train, targets, weights, [batches.next() for _ in range(interval)])
        if not all(np.isfinite(array).all() for array in head.get_weights()):
            raise RetrainError(
                f"training diverged by step {round_number * interval}: the head's weights overflowed to "
                f"infinity or NaN; lower the learning rate (now {config.learning_rate}) and train again"
            )
        val_loss, val_accuracy = validation.measure(head) if validation else (None, None)
        row = _row(round_number * interval, round_number, loss, accuracy, val_loss, val_accuracy, started)
        rows.append(row)
        if on_metrics:
            on_metrics(row)
        if should_stop and should_stop():
            raise RunCancelled("training was cancelled")
        if stopper and stopper.should_stop(val_loss, head):
            break
    return (stopper.best if stopper and stopper.best else head), rows


def initial_head(feature_dim: int, num_classes: int, hidden_units: int, rng: np.random.Generator) -> Head:
    """Glorot-uniform kernels and zero biases, Keras's defaults for Dense."""
    sizes = [feature_dim] + ([hidden_units] if hidden_units else []) + [num_classes]
    layers = []
    for fan_in, fan_out in zip(sizes, sizes[1:], strict=False):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        layers.append((rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32), np.zeros(fan_out, np.float32)))
    return Head(layers)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as one-hot float32 rows, the targets every head is trained on."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=int)]


def smoothed(targets: np.ndarray, label_smoothing: float) -> np.ndarray:
    """Keras's label smoothing: a little of every target's weight spread evenly over all classes."""
    return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1] if label_smoothing else targets


def _sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    weights = class_weights(labels, num_classes)
    return None if weights is None else np.array([weights[int(label)] for label in labels], np.float32)


def cross_entropy(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-example loss, with probabilities clipped as Keras clips them."""
    return -(targets * np.log(np.clip(probabilities, EPSILON, 1.0 - EPSILON))).sum(axis=1)


class Batches:
    """Row indices in batches over an endless stream of shuffled epochs (tf.data's shuffle, repeat, batch)."""

    def __init__(self, size: int, batch_size: int, rng: np.random.Generator):
        self.size, self.batch_size, self.rng = size, batch_size, rng
        self.queue = np.zeros(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        while len(self.queue) < self.batch_size:
            self.queue = np.concatenate([self.queue, self.rng.permutation(self.size)])
        batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
        return batch


class SgdStep:
    """One round of minibatch steps: forward with dropout, backward, optimizer update."""

    def __init__(self, head: Head, optimizer, dropout: float, rng: np.random.Generator):
        self.head, self.optimizer, self.dropout, self.rng = head, optimizer, dropout, rng

    def run(
        self, x: np.ndarray, targets: np.ndarray, weights: np.ndarray | None, batches: list[np.ndarray]
    ) -> tuple[float, float]:
        """(mean loss, accuracy) over the round's batches, as Keras's running metrics would say."""
        loss_sum, correct, seen = 0.0, 0, 0
        for rows in batches:
            batch_weights = None if weights is None else weights[rows]
            probabilities = self._step(x[rows], targets[rows], batch_weights)
            losses = cross_entropy(probabilities, targets[rows])
            loss_sum += float((losses if batch_weights is None else losses * batch_weights).mean())
            correct += int((probabilities.argmax(1) == targets[rows].argmax(1)).sum())
            seen += len(rows)
        return loss_sum / max(len(batches), 1), correct / max(seen, 1)

    def _step(self, x: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        activations, masks = [], []
        for kernel, bias in self.head.layers:
            x, mask = self._dropped(x)
            activations.append(x)
            masks.append(mask)
            x = x @ kernel + bias
            if len(activations) < len(self.head.layers):
                x = np.maximum(x, 0.0)
        probabilities = softmax(x)
        # d(mean of weighted losses)/d(logits): Keras sums weighted losses and divides by the batch size.
        delta = probabilities - targets
        if weights is not None:
            delta *= weights[:, None]
        delta /= len(targets)
        gradients = []
        for index in range(len(self.head.layers) - 1, -1, -1):
            kernel, _ = self.head.layers[index]
            gradients.append((activations[index].T @ delta, delta.sum(axis=0)))
            if index:
                delta = (delta @ kernel.T) * (activations[index] > 0)
                if masks[index] is not None:
                    delta *= masks[index]
        self.optimizer.apply(self.head.layers, gradients[::-1])
        return probabilities

    def _dropped(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Inverted dropout: kept units scaled up so inference needs no change."""
        if not self.dropout:
            return x, None
        mask = (self.rng.random(x.shape, dtype=np.float32) >= self.dropout) / np.float32(1.0 - self.dropout)
        return x * mask, mask


class Optimizer:
    """Keras-style optimizer state: one slot per variable, made at the first step, updated in place."""

    def __init__(self, learning_rate: float):
        self.rate, self.iterations, self.slots = learning_rate, 0, None

    def apply(self, layers: list[tuple[np.ndarray, np.ndarray]], gradients: list[tuple[np.ndarray, np.ndarray]]):
        variables, grads = _flat(layers), _flat(gradients)
        if self.slots is None:
            self.slots = [self.new_slot(variable) for variable in variables]
        self.iterations += 1
        for variable, gradient, slot in zip(variables, grads, self.slots, strict=True):
            self.update(variable, gradient, slot)

    def new_slot(self, variable: np.ndarray):
        return np.zeros_like(variable)

    def update(self, variable: np.ndarray, gradient: np.ndarray, slot) -> None:
        raise NotImplementedError


class Adam(Optimizer):
    """Keras 3's Adam (beta_1 0.9, beta_2 0.999, epsilon 1e-7)."""

    beta_1, beta_2 = 0.9, 0.999

    def new_slot(self, variable: np.ndarray):
        return np.zeros_like(variable), np.zeros_like(variable)

    def update(self, variable, gradient, slot) -> None:
        m, v = slot
        t = self.iterations
        alpha = self.rate * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        m += (gradient - m) * (1 - self.beta_1)
        v += (gradient * gradient - v) * (1 - self.beta_2)
        variable -= alpha * m / (np.sqrt(v) + EPSILON)


class Momentum(Optimizer):
    """Keras 3's SGD with momentum 0.9 (not Nesterov)."""

    momentum = 0.9

    def update(self, variable, gradient, velocity) -> None:
        velocity *= self.momentum
        velocity -= self.rate * gradient
        variable += velocity


class RmsProp(Optimizer):
    """Keras 3's RMSprop (rho 0.9, epsilon 1e-7, not centred)."""

    rho = 0.9

    def update(self, variable, gradient, velocity) -> None:
        velocity *= self.rho
        velocity += (1 - self.rho) * gradient * gradient
        variable -= self.rate * gradient / np.sqrt(velocity + EPSILON)


def make_optimizer(config: TrainConfig):
    """The optimizer a config names (sgd gets momentum, as retrain.py users usually wanted)."""
    optimizers = {"adam": Adam, "sgd": Momentum, "rmsprop": RmsProp}
    if config.optimizer not in optimizers:
        raise RetrainError(f"unknown optimizer {config.optimizer!r}; choose adam, sgd or rmsprop")
    return optimizers[config.optimizer](config.learning_rate)


def _flat(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    return [array for pair in pairs for array in pair]


class Validation:
    """Loss and accuracy on the validation split, with the training loss's label smoothing (as Keras reports)."""

    def __init__(self, data: HeadData, label_smoothing: float):
        self.x = np.asarray(data.x_val, np.float32)
        self.targets = smoothed(one_hot(data.y_val, data.num_classes), label_smoothing)
        self.labels = np.asarray(data.y_val, dtype=int)

    def measure(self, head: Head) -> tuple[float, float]:
        probabilities = head.probabilities(self.x)
        loss = float(cross_entropy(probabilities, self.targets).mean())
        return loss, float((probabilities.argmax(1) == self.labels).mean())


class EarlyStopping:
    """Stop after `patience` validations without a lower validation loss, keeping the best head seen."""

    def __init__(self, patience: int):
        self.patience, self.wait, self.lowest, self.best = patience, 0, math.inf, None

    def should_stop(self, val_loss: float, head: Head) -> bool:
        if val_loss < self.lowest:
            self.lowest, self.wait = val_loss, 0
            self.best = Head([(kernel.copy(), bias.copy()) for kernel, bias in head.layers])
            return False
        self.wait += 1
        return self.wait >= self.patience


def _row(step, epoch, loss, accuracy, val_loss, val_accuracy, started) -> dict:
    return {
        "step": step,
        "epoch": epoch,
        "train_loss": rounded(loss),
        "train_accuracy": rounded(accuracy),
        "val_loss": rounded(val_loss),
        "val_accuracy": rounded(val_accuracy),
        "elapsed_seconds": round(time.monotonic() - started, 3),
    }


def rounded(value) -> float | None:
    return None if value is None else round(float(value), 6)
