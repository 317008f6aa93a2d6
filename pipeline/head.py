"""The new head as plain arrays: its weights, its forward pass, and the same head as a Keras model for export.

The head is a softmax over the classes, after an optional ReLU hidden layer, applied to bottleneck vectors.
Held as NumPy arrays it trains, evaluates and is saved without TensorFlow, which is what lets a rerun on a
warm cache give its report in seconds: TensorFlow's import alone takes longer than that on a small CPU.
The Keras model (`to_keras`) is built only by the steps that need one — exports and fine-tuning.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import RetrainError

if TYPE_CHECKING:
    import keras

    from pipeline.config import TrainConfig

HEAD_FILE = "head.npz"
CHUNK = 4096  # rows per forward call: bounds memory for very large splits
# The most a head file may unpack to. The largest head the settings allow (an 8,192-unit hidden layer on a 25,088-wide
# custom bottleneck) is about 0.8 GB; a file claiming more is not ours, and must not be unpacked into memory.
MAX_UNPACKED_BYTES = 1 << 30


@dataclass
class Head:
    """Dense layers as (kernel, bias) pairs, bottom to top: a ReLU hidden layer when there are two."""

    layers: list[tuple[np.ndarray, np.ndarray]]

    @property
    def feature_dim(self) -> int:
        return int(self.layers[0][0].shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.layers[-1][0].shape[1])

    @property
    def hidden_units(self) -> int:
        return int(self.layers[0][0].shape[1]) if len(self.layers) == 2 else 0

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for bottleneck vectors (N, feature_dim)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate([softmax(self.logits(vectors[i : i + CHUNK])) for i in range(0, len(vectors), CHUNK)])

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        x = vectors
        for kernel, bias in self.layers[:-1]:
            x = np.maximum(x @ kernel + bias, 0.0)
        kernel, bias = self.layers[-1]
        return x @ kernel + bias

    def get_weights(self) -> list[np.ndarray]:
        """Kernel, bias, kernel, bias, ... in Keras's order for the same layers."""
        return [array for pair in self.layers for array in pair]

    def to_keras(self, config: TrainConfig) -> keras.Model:
        """The same head as a Keras model (layer names and dropout as `keras_head.build_head`), for exports."""
        from pipeline.keras_head import build_head

        model = build_head(self.feature_dim, self.num_classes, config)
        model.set_weights(self.get_weights())
        return model

    def save(self, path: str | Path) -> str:
        """Write the weights atomically (a killed run never leaves half a head that loads); returns their sha256,
        which the report records so that only this file is ever taken for the head it scored."""
        import hashlib
        import io

        from pipeline.files import write_bytes_atomic

        buffer = io.BytesIO()
        np.savez(buffer, **{f"w{i}": array for i, array in enumerate(self.get_weights())})
        write_bytes_atomic(Path(path), buffer.getvalue())
        return hashlib.sha256(buffer.getvalue()).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> Head:
        """A head saved by `save`; a damaged, foreign or oversized file is refused in one line naming it."""
        try:
            arrays = _read_arrays(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise RetrainError(f"{path} is not a head saved by Retrain Studio ({error}); train the run again") from None
        if not _layers_fit(arrays):
            raise RetrainError(f"{path} does not hold a head's weights; train the run again")
        return cls([(arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)])


def _read_arrays(path: str | Path) -> list[np.ndarray]:
    """w0, w1, ... of a head file, each checked before it is read: no member unpacks past what it claims, no array
    claims more than its member holds (np.load would allocate whatever an array's header says, terabytes even),
    and every member is an array (np.load hands back the raw bytes of one that is not)."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        unpacked = sum(member.file_size for member in members)
        if unpacked > MAX_UNPACKED_BYTES:
            raise RetrainError(
                f"{path} would unpack to {unpacked / 1e6:,.0f} MB, more than any head; train the run again"
            )
        if sorted(member.filename for member in members) != sorted(f"w{i}.npy" for i in range(len(members))):
            raise ValueError(f"its members are {[member.filename for member in members][:4]}, not w0.npy, w1.npy, ...")
        return [_read_array(archive, f"w{i}.npy") for i in range(len(members))]


def _read_array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):  # what np.savez writes for arrays of numbers
            raise ValueError(f"{name} is a .npy file of version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
        if dtype.hasobject or math.prod(shape) * dtype.itemsize > archive.getinfo(name).file_size:
            raise ValueError(f"{name} claims a {dtype} array of shape {shape}, more than the file holds")
    with archive.open(name) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _layers_fit(arrays: list[np.ndarray]) -> bool:
    """Kernel and bias pairs of finite real numbers, each layer's input the size of the one below's output."""
    if len(arrays) not in (2, 4) or any(
        a.ndim != n or a.dtype.kind != "f" for a, n in zip(arrays, [2, 1] * 2, strict=False)
    ):
        return False
    sizes = [arrays[0].shape[0]] + [kernel.shape[1] for kernel in arrays[::2]]
    shapes = [(sizes[i], sizes[i + 1]) for i in range(len(arrays) // 2)]
    return (
        [kernel.shape for kernel in arrays[::2]] == shapes
        and [bias.shape for bias in arrays[1::2]] == [(size,) for size in sizes[1:]]
        and all(np.isfinite(a).all() for a in arrays)
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def as_keras_head(head, config: TrainConfig):
    """A Keras head for the export and fine-tuning steps, whichever engine trained it (Ray's is Keras already)."""
    return head.to_keras(config) if isinstance(head, Head) else head


def head_probabilities(head, vectors: np.ndarray) -> np.ndarray:
    """Probabilities from a NumPy head or a Keras one."""
    if isinstance(head, Head):
        return head.probabilities(vectors)
    return head.predict(vectors, verbose=0) if len(vectors) else np.zeros((0, head.output_shape[-1]), np.float32)
