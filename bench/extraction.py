"""Images per second three ways: the physical limit, our cold-cache extraction, and retrain.py's loop.

The limit is the compiled forward pass on images already decoded in memory: extraction cannot beat
it, since it must also read, decode and resize every photo. retrain.py's way is one image at a time:
read the file, decode and resize it in one graph call, run the model on a batch of one in a second
(its `run_bottleneck_on_image`). Both of its calls are compiled here, as its `sess.run` calls were,
so the baseline is not slowed by eager Python; the eager variant is measured too, for the record.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.timing import Stopwatch, Throughput
from pipeline.backbones import Backbone
from pipeline.bottlenecks import ExtractItem, cache_bottlenecks, compiled_forward
from pipeline.images import load_for_model

BATCH = 32  # the batch size of extraction (cache_bottlenecks' default)


def decode_all(items: Sequence[ExtractItem], size: int) -> np.ndarray:
    """The items' model inputs, decoded once through the one decode path, as an (N, S, S, 3) uint8 array."""
    return np.stack([load_for_model(item.path, size) for item in items])


class ForwardPass:
    """The backbone's compiled forward pass, traced once up front (tracing is not throughput)."""

    def __init__(self, backbone: Backbone, images: np.ndarray):
        self.forward = compiled_forward(backbone)
        self.images = images
        self.forward(images[:BATCH]).numpy()

    def throughput(self) -> Throughput:
        with Stopwatch() as watch:
            for start in range(0, len(self.images), BATCH):
                self.forward(self.images[start : start + BATCH]).numpy()
        return Throughput(len(self.images), watch.seconds, watch.cpu_seconds)


def extract_throughput(items: Sequence[ExtractItem], backbone: Backbone, workdir: Path) -> Throughput:
    """`cache_bottlenecks` into a fresh, empty folder: every image read, decoded, run and stored."""
    cache = Path(tempfile.mkdtemp(prefix="cold-bottlenecks-", dir=workdir))
    try:
        with Stopwatch() as watch:
            result = cache_bottlenecks(items, backbone, cache, batch_size=BATCH)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if result.computed != len(items):
        raise RuntimeError(f"cold extraction computed {result.computed} of {len(items)} (problems: {result.problems})")
    return Throughput(len(items), watch.seconds, watch.cpu_seconds)


class PerImageLoop:
    """retrain.py's way: for each file, read it, decode and resize it, then run the model on it alone."""

    def __init__(self, backbone: Backbone):
        import tensorflow as tf

        size = backbone.input_size

        # retrain.py's add_jpeg_decoding: decode, to float, add a batch axis, bilinear resize (it squashed).
        @tf.function(input_signature=[tf.TensorSpec((), tf.string)])
        def decode_and_resize(data):
            image = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32)
            return tf.image.resize(image[None], (size, size), method="bilinear")

        @tf.function(input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
        def bottleneck(image):
            return backbone.model(image, training=False)

        self.decode_and_resize, self.bottleneck, self.model = decode_and_resize, bottleneck, backbone.model

    def throughput(self, paths: Sequence[str], eager: bool = False) -> Throughput:
        """Throughput over `paths` after one untimed image (retrain.py, too, built its graph once)."""
        self._one(paths[0], eager)
        with Stopwatch() as watch:
            for path in paths:
                self._one(path, eager)
        return Throughput(len(paths), watch.seconds, watch.cpu_seconds)

    def _one(self, path: str, eager: bool) -> np.ndarray:
        data = Path(path).read_bytes()
        resized = self.decode_and_resize(data).numpy()  # retrain.py fetched the resized image into numpy too
        if eager:  # a plain Keras call per image, as a naive TF2 port of that loop would do
            return np.squeeze(self.model(resized, training=False).numpy())
        return np.squeeze(self.bottleneck(resized).numpy())
