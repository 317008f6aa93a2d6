"""Training a head from Parquet bottleneck shards without loading them all: tf.data streams them.

A million 1,280-d bottlenecks are 5 GB, more than a worker should hold, and the head only ever needs a
batch at a time. Shards are read a record batch at a time, in a seeded order that changes each pass,
and mixed through a fixed-size shuffle buffer; the validation split is held once, up to a cap. What
training holds is therefore set by `StreamLimits`, whatever the set's size (tests/test_scale.py trains
on two sizes of set and checks the peak is the same). Labels are joined by key: that table (and each
shard's key list) is the part that grows with the set, a few hundred bytes per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.config import TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.scale.shards import iter_shard, scan_shards


@dataclass(frozen=True)
class StreamLimits:
    """How many vectors streamed training holds at once: the bound on its memory, whatever the set's size."""

    shuffle_buffer: int = 10_000  # vectors mixed at once: 50 MB at 1,280-d
    record_batch: int = 2_048  # rows read from a shard at a time (10 MB at 1,280-d)
    validation_cap: int = 20_000  # validation vectors held (100 MB at 1,280-d); a larger split is sampled

    def held_vectors(self, batch_size: int) -> int:
        """Vectors held at the peak: the buffer, a record batch as read and as mixed out, a batch being
        assembled and the two prefetched, and the validation split."""
        return self.shuffle_buffer + 2 * self.record_batch + 3 * batch_size + self.validation_cap


@dataclass
class ShardSplit:
    """One split's examples: which key has which label, and the shards that hold them."""

    labels_by_key: dict[str, int]
    shard_paths: list[str]

    def __len__(self) -> int:
        return len(self.labels_by_key)


def split_from_shards(bottleneck_dir: str, labels_by_key: dict[str, int]) -> ShardSplit:
    """The shards (complete, readable) holding any of the given keys."""
    scan = scan_shards(bottleneck_dir)
    paths = [path for path, keys in scan.keys_by_shard.items() if any(key in labels_by_key for key in keys)]
    return ShardSplit(labels_by_key, sorted(paths))


def _examples(
    bottleneck_dir: str, split: ShardSplit, seed: int | None, record_batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(vectors, labels) per record batch; shards in a new seeded order per pass when `seed` is given."""
    paths = list(split.shard_paths)
    passes = 0
    while True:
        if seed is not None:
            np.random.default_rng(seed + passes).shuffle(paths)
        for path in paths:
            for keys, vectors in iter_shard(bottleneck_dir, path, record_batch):
                # -1: a key of another split (a dict lookup per key: no second key table beside the split's)
                labels = np.fromiter((split.labels_by_key.get(key, -1) for key in keys), np.int32, len(keys))
                rows = np.flatnonzero(labels >= 0)
                if len(rows):
                    yield vectors[rows], labels[rows]
        passes += 1
        if seed is None:  # evaluation: one pass
            return


def validation_arrays(
    bottleneck_dir: str, split: ShardSplit, limits: StreamLimits = StreamLimits()
) -> tuple[np.ndarray, np.ndarray]:
    """The validation split in memory (validated against many times, so read once), at most `validation_cap`.

    A larger split is cut to the keys that sort first: a fixed, content-chosen sample, the same every run.
    The arrays are allocated once at their final size, so reading them never holds two copies.
    """
    cap = limits.validation_cap
    if len(split) > cap:
        split = ShardSplit(dict(sorted(split.labels_by_key.items())[:cap]), split.shard_paths)
    vectors, labels, seen = None, np.zeros(len(split), np.int32), 0
    for batch_vectors, batch_labels in _examples(bottleneck_dir, split, None, limits.record_batch):
        if vectors is None:
            vectors = np.empty((len(split), batch_vectors.shape[1]), np.float32)
        take = min(len(batch_labels), len(split) - seen)  # a key in two shards (a retried batch) can repeat
        vectors[seen : seen + take], labels[seen : seen + take] = batch_vectors[:take], batch_labels[:take]
        seen += take
        if seen == len(split):
            break
    if vectors is None:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int32)
    return vectors[:seen], labels[:seen]


def _shuffled_batches(
    source: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int, buffer: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches drawn through a fixed buffer of `buffer` vectors, as tf.data's shuffle draws, a record batch at once.

    The buffer fills from the stream; after that every vector that arrives takes the place of one chosen at
    random, which goes out. Numpy moves whole record batches, so the cost is per batch, not per vector, and
    memory is the buffer, one record batch and one outgoing batch, whatever the set's size. The stream is
    endless (training repeats the set), so the buffer is never drained.
    """
    rng = np.random.default_rng(seed)
    held_x = held_y = None
    filled = 0
    carry_x, carry_y = None, None  # the tail of the last outgoing chunk, shorter than a batch
    for vectors, labels in source:
        if held_x is None:
            held_x, held_y = np.empty((buffer, vectors.shape[1]), np.float32), np.empty(buffer, np.int32)
        take = min(buffer - filled, len(labels))
        held_x[filled : filled + take], held_y[filled : filled + take] = vectors[:take], labels[:take]
        filled += take
        for start in range(take, len(labels), buffer):  # a record batch larger than the buffer: in pieces
            count = min(buffer, len(labels) - start)
            slots = rng.choice(buffer, size=count, replace=False)
            out_x, out_y = held_x[slots], held_y[slots]  # copies: the slots are overwritten next
            held_x[slots], held_y[slots] = vectors[start : start + count], labels[start : start + count]
            if carry_x is not None:
                out_x, out_y = np.concatenate([carry_x, out_x]), np.concatenate([carry_y, out_y])
            whole = len(out_y) // batch_size * batch_size
            for first in range(0, whole, batch_size):
                yield out_x[first : first + batch_size], out_y[first : first + batch_size]
            carry_x, carry_y = (out_x[whole:].copy(), out_y[whole:].copy()) if whole < len(out_y) else (None, None)


def shard_dataset(
    bottleneck_dir: str,
    split: ShardSplit,
    dim: int,
    num_classes: int,
    batch_size: int,
    seed: int | None = None,
    limits: StreamLimits = StreamLimits(),
):
    """A tf.data pipeline of (vectors, one-hot) batches: endless and shuffled with `seed`, else one pass in order."""
    import tensorflow as tf

    # A buffer larger than the split would only fill with repeats (and wait passes for them).
    buffer = max(1, min(limits.shuffle_buffer, len(split)))

    def batches():
        source = _examples(bottleneck_dir, split, seed, limits.record_batch)
        if seed is None:
            for vectors, labels in source:
                for start in range(0, len(labels), batch_size):
                    yield vectors[start : start + batch_size], labels[start : start + batch_size]
        else:
            yield from _shuffled_batches(source, batch_size, buffer, seed)

    return _bounded(tf.data.Dataset.from_generator(batches, output_signature=_signature(dim)), num_classes)


def _array_dataset(vectors: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int):
    """Held arrays as a tf.data pipeline that slices them (Keras given the arrays would copy them into a tensor)."""
    import tensorflow as tf

    def batches():
        for start in range(0, len(labels), batch_size):
            yield vectors[start : start + batch_size], labels[start : start + batch_size]

    return _bounded(tf.data.Dataset.from_generator(batches, output_signature=_signature(vectors.shape[1])), num_classes)


def _signature(dim: int):
    import tensorflow as tf

    return tf.TensorSpec((None, dim), tf.float32), tf.TensorSpec((None,), tf.int32)


def _bounded(dataset, num_classes: int):
    """One-hot labels, two batches prefetched, and no autotuning.

    Autotuning grows prefetch buffers within a budget of half the machine's RAM, which is exactly the
    unbounded memory this module exists to avoid (Keras adds a prefetch of its own too).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.map(lambda x, y: (x, tf.one_hot(y, num_classes))).prefetch(2).with_options(options)


def train_head_from_shards(
    bottleneck_dir: str,
    train: ShardSplit,
    validation: ShardSplit,
    dim: int,
    num_classes: int,
    config: TrainConfig,
    on_metrics: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    limits: StreamLimits = StreamLimits(),
):
    """The same head as `pipeline.train.train_head` (its Keras twin in `keras_head`), fed from shards.

    Returns (head, metrics rows). Validation runs at each interval on the validation split held in
    memory (at most `limits.validation_cap` vectors).
    """
    import keras

    from pipeline.keras_head import MetricsRecorder, build_head, make_optimizer
    from pipeline.train import class_weights, schedule

    if len(train) == 0:
        raise RetrainError("no training images with bottlenecks in the shards; check the dataset's problems")
    keras.utils.set_random_seed(config.seed)
    head = build_head(dim, num_classes, config)
    interval, rounds = schedule(config, len(train))
    head.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=interval,
    )
    batches = shard_dataset(bottleneck_dir, train, dim, num_classes, config.train_batch_size, config.seed, limits)
    validation_data = None
    if len(validation):
        x_val, y_val = validation_arrays(bottleneck_dir, validation, limits)
        if len(y_val):
            batch = config.validation_batch_size if config.validation_batch_size > 0 else 4096
            validation_data = _array_dataset(x_val, y_val, num_classes, batch)
    recorder = MetricsRecorder(interval, on_metrics, should_stop)
    callbacks: list = [recorder]
    if validation_data is not None and config.early_stopping > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
        )
    counts = np.fromiter(train.labels_by_key.values(), dtype=int, count=len(train))
    head.fit(
        batches,
        steps_per_epoch=interval,
        epochs=rounds,
        validation_data=validation_data,
        class_weight=class_weights(counts, num_classes) if config.class_weights else None,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )  # the stream shuffles itself
    if recorder.cancelled:
        raise RunCancelled("training was cancelled")
    return head, recorder.rows


def predict_from_shards(
    bottleneck_dir: str, split: ShardSplit, dim: int, num_classes: int, head, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true labels, probabilities, keys) of one split, streamed in shard order."""
    labels, probabilities, keys = [], [], []
    seen: set[str] = set()  # a key in two shards (a batch retried after a damaged shard) counts once
    for path in split.shard_paths:
        for batch_keys, vectors in iter_shard(bottleneck_dir, path, batch_size):
            rows = [row for row, key in enumerate(batch_keys) if key in split.labels_by_key and key not in seen]
            seen.update(batch_keys[row] for row in rows)
            if rows:
                probabilities.append(head.predict(vectors[rows], verbose=0))
                keys.extend(batch_keys[row] for row in rows)
                labels.extend(split.labels_by_key[batch_keys[row]] for row in rows)
    if not probabilities:
        return np.zeros(0, int), np.zeros((0, num_classes), np.float32), []
    return np.asarray(labels, dtype=int), np.concatenate(probabilities), keys
