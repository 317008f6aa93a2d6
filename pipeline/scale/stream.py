"""Training a head from Parquet bottleneck shards without loading them all: tf.data streams them.

A million 1,280-d bottlenecks are 5 GB, more than a worker should hold, and the head only ever needs a
batch at a time. Shards are read a record batch at a time, in a seeded order that changes each pass,
and mixed through a bounded shuffle buffer; memory is the buffer plus one record batch, whatever the
set's size. Labels are joined by key: that table (and each shard's key list) is the part that grows
with the set, about 1 KB per image (tests/test_scale.py measures the whole).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.config import TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.scale.shards import iter_shard, scan_shards

SHUFFLE_BUFFER = 10_000  # vectors mixed at once: 50 MB at 1,280-d, the bound on training memory
RECORD_BATCH = 2_048  # rows read from a shard at a time
VALIDATION_CAP = 20_000  # validation vectors held in memory (100 MB at 1,280-d); a larger split is sampled


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


def _examples(bottleneck_dir: str, split: ShardSplit, seed: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(vectors, labels) per record batch; shards in a new seeded order per pass when `seed` is given."""
    import pandas as pd

    labels = pd.Series(split.labels_by_key, dtype="int32")
    paths = list(split.shard_paths)
    passes = 0
    while True:
        if seed is not None:
            np.random.default_rng(seed + passes).shuffle(paths)
        for path in paths:
            for keys, vectors in iter_shard(bottleneck_dir, path, RECORD_BATCH):
                found = labels.reindex(keys)  # vectorised join; keys of other splits become NaN
                rows = np.flatnonzero(found.notna().to_numpy())
                if len(rows):
                    yield vectors[rows], found.to_numpy()[rows].astype(np.int32)
        passes += 1
        if seed is None:  # evaluation: one pass
            return


def validation_arrays(bottleneck_dir: str, split: ShardSplit,
                      cap: int = VALIDATION_CAP) -> tuple[np.ndarray, np.ndarray]:
    """The validation split in memory (validated against many times, so read once), at most `cap` vectors.

    A larger split is cut to the keys that sort first: a fixed, content-chosen sample, the same every run.
    """
    if len(split) > cap:
        kept = dict(sorted(split.labels_by_key.items())[:cap])
        split = ShardSplit(kept, split.shard_paths)
    vectors, labels, seen = [], [], 0
    for batch_vectors, batch_labels in _examples(bottleneck_dir, split, seed=None):
        vectors.append(batch_vectors.copy())
        labels.append(batch_labels)
        seen += len(batch_labels)
        if seen >= cap:
            break
    if not vectors:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int32)
    return np.concatenate(vectors)[:cap], np.concatenate(labels)[:cap]


def _shuffled_batches(source: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int, buffer: int,
                      seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches mixed through a buffer of about `buffer` vectors (numpy, so per batch, not per vector, cost).

    When the buffer fills it is permuted and all but half of it goes out as batches; the kept half mixes
    with what comes next, so neighbours in a shard are spread across many batches.
    """
    rng = np.random.default_rng(seed)
    pending_x: list[np.ndarray] = []
    pending_y: list[np.ndarray] = []
    held = 0
    for vectors, labels in source:
        pending_x.append(vectors)
        pending_y.append(labels)
        held += len(labels)
        if held < buffer + batch_size:
            continue
        order = rng.permutation(held)
        x, y = np.concatenate(pending_x)[order], np.concatenate(pending_y)[order]
        cut = ((held - buffer // 2) // batch_size) * batch_size
        for start in range(0, cut, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        pending_x, pending_y, held = [x[cut:]], [y[cut:]], held - cut


def shard_dataset(bottleneck_dir: str, split: ShardSplit, dim: int, num_classes: int, batch_size: int,
                  seed: int | None = None, shuffle_buffer: int = SHUFFLE_BUFFER):
    """A tf.data pipeline of (vectors, one-hot) batches: endless and shuffled with `seed`, else one pass in order."""
    import tensorflow as tf

    def batches():
        source = _examples(bottleneck_dir, split, seed)
        if seed is None:
            for vectors, labels in source:
                for start in range(0, len(labels), batch_size):
                    yield vectors[start:start + batch_size], labels[start:start + batch_size]
        else:
            yield from _shuffled_batches(source, batch_size, max(shuffle_buffer, batch_size), seed)

    signature = (tf.TensorSpec((None, dim), tf.float32), tf.TensorSpec((None,), tf.int32))
    # No autotuning: it grows prefetch buffers within a budget of half the machine's RAM, which is
    # exactly the unbounded memory this module exists to avoid (Keras adds a prefetch of its own too).
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.from_generator(batches, output_signature=signature)
            .map(lambda x, y: (x, tf.one_hot(y, num_classes)))
            .prefetch(2)
            .with_options(options))


def train_head_from_shards(bottleneck_dir: str, train: ShardSplit, validation: ShardSplit, dim: int,
                           num_classes: int, config: TrainConfig, on_metrics: Callable[[dict], None] | None = None,
                           should_stop: Callable[[], bool] | None = None):
    """The same head as `pipeline.train.train_head` (layers, optimizer, schedule), fed from shards.

    Returns (head, metrics rows). Validation runs at each interval on the validation split held in
    memory (at most VALIDATION_CAP vectors).
    """
    import keras

    from pipeline.train import MetricsRecorder, build_head, class_weights, make_optimizer, one_hot, schedule

    if len(train) == 0:
        raise RetrainError("no training images with bottlenecks in the shards; check the dataset's problems")
    keras.utils.set_random_seed(config.seed)
    head = build_head(dim, num_classes, config)
    interval, rounds = schedule(config, len(train))
    head.compile(optimizer=make_optimizer(config),
                 loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                 metrics=["accuracy"], steps_per_execution=interval)
    batches = shard_dataset(bottleneck_dir, train, dim, num_classes, config.train_batch_size, seed=config.seed)
    validation_data = None
    x_val, y_val = validation_arrays(bottleneck_dir, validation) if len(validation) else (None, [])
    if len(y_val):
        validation_data = (x_val, one_hot(y_val, num_classes))
    recorder = MetricsRecorder(interval, on_metrics, should_stop)
    callbacks: list = [recorder]
    if validation_data is not None and config.early_stopping > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping,
                                                       restore_best_weights=True))
    counts = np.fromiter(train.labels_by_key.values(), dtype=int, count=len(train))
    head.fit(batches, steps_per_epoch=interval, epochs=rounds, validation_data=validation_data,
             validation_batch_size=config.validation_batch_size if config.validation_batch_size > 0 else 4096,
             class_weight=class_weights(counts, num_classes) if config.class_weights else None,
             callbacks=callbacks, shuffle=False, verbose=0)  # the stream shuffles itself
    if recorder.cancelled:
        raise RunCancelled("training was cancelled")
    return head, recorder.rows


def predict_from_shards(bottleneck_dir: str, split: ShardSplit, dim: int, num_classes: int, head,
                        batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, list[str]]:
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

