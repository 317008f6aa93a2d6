"""Running a frozen backbone on a CPU: LiteRT (XNNPACK) where it is installed, TensorFlow otherwise.

The backbone converted once to a float32 .tflite and run by `ai-edge-litert`'s interpreter (XNNPACK, two
threads, one image per call) is faster on a small CPU than TensorFlow's compiled batched forward pass, and
its features agree with TensorFlow's to about 1e-5 (bench/ measures both side by side). It also needs far less
memory: once the .tflite is cached, extraction never imports TensorFlow.

The .tflite is cached beside the built backbones (`model_cache`), named by a hash of what determines it: the
backbone's identity (name, exact weights, layer) or, for a model we only hold in memory, a hash of its weights
and input size, plus `TFLITE_VERSION`. Converting takes TensorFlow and several seconds, once per machine.

The two runtimes round differently, so bottleneck cache keys say which one made a vector
(`feature_identity`): a cache never mixes them. `RETRAIN_STUDIO_RUNTIME=tensorflow` forces TensorFlow. A
user's own .keras backbone always runs on TensorFlow, since it may hold layers the converter does not know.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline import settings
from pipeline.backbones import custom
from pipeline.backbones.model_cache import backbone_cache_dir, sweep_stale_temporaries, warn_not_cached
from pipeline.errors import RetrainError
from pipeline.files import write_bytes_atomic
from pipeline.quiet import native_logs_silenced

if TYPE_CHECKING:
    import keras

    from pipeline.backbones.bottleneck import Backbone

log = logging.getLogger(__name__)

RUNTIME_ENV = settings.RUNTIME.name  # "tensorflow" forces TensorFlow; anything else (or unset) prefers LiteRT
LITERT, TENSORFLOW = "litert", "tensorflow"
THREADS = 2  # XNNPACK threads per interpreter: the machines we target have two cores
TFLITE_VERSION = "tfl1"  # bump whenever the conversion below changes, so stale cached .tflite files are not reused
CONVERSION_TOLERANCE = 1e-4  # largest difference from TensorFlow's features accepted, relative to their scale

Forward = Callable[[np.ndarray], np.ndarray]  # (N, S, S, 3) uint8 RGB → (N, feature_dim) float32


def litert_installed() -> bool:
    """True when `ai-edge-litert` can be imported (without importing it)."""
    return importlib.util.find_spec("ai_edge_litert") is not None


def runtime_for(architecture: str) -> str:
    """Which runtime runs `architecture`'s backbone here: "litert" or "tensorflow"."""
    if (settings.RUNTIME.raw() or "").lower() == TENSORFLOW or custom.is_model_path(architecture):
        return TENSORFLOW
    return LITERT if litert_installed() else TENSORFLOW


def feature_identity(backbone: Backbone) -> str:
    """The backbone's identity plus the runtime that computes its features: what bottleneck cache keys use."""
    return f"{backbone.identity}|runtime:{runtime_for(backbone.name)}"


def backbone_forward(backbone: Backbone) -> Forward:
    """The backbone's forward pass on the runtime `runtime_for` picks; made once per loaded backbone."""
    if backbone.forward is None:
        if runtime_for(backbone.name) == LITERT:
            backbone.forward = litert_forward(
                lambda: backbone.model, _litert_key(backbone), backbone.input_size, backbone.name
            )
        else:
            backbone.forward = tensorflow_forward(backbone.model, backbone.input_size)
    return backbone.forward


def preparation_words(backbone: Backbone) -> str:
    """What making `backbone_forward(backbone)` ready takes on this machine, in words for the step that does it."""
    if backbone.forward is not None:
        return "ready"
    if runtime_for(backbone.name) == TENSORFLOW:
        return "starting TensorFlow and loading the model"
    path = tflite_path(_litert_key(backbone), backbone.name)
    if path.is_file() and _digest_path(path).is_file():
        return "opening the copy this server made before"
    return (
        "first time on this server: building the model and converting it for this processor (a minute or more; "
        "later runs reuse it)"
    )


def _litert_key(backbone: Backbone) -> str:
    return f"{backbone.identity}|{backbone.input_size}"


# ---------------------------------------------------------------------------------------------- TensorFlow


def tensorflow_forward(model: keras.Model, input_size: int) -> Forward:
    """`model` as one compiled graph over uint8 batches of any size (traced once)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.uint8)], reduce_retracing=True)
    def forward(images):
        return model(tf.cast(images, tf.float32), training=False)

    return lambda images: forward(images).numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- LiteRT


def litert_forward(model_loader: Callable[[], keras.Model], key: str, input_size: int, name: str) -> Forward:
    """A LiteRT forward pass of the model `key` names, converted from `model_loader()` only when not cached."""
    path = tflite_path(key, name)
    runner = _open_cached(path)
    if runner is None:
        model = model_loader()
        try:
            flatbuffer = convert_to_tflite(model, input_size)
        except Exception as error:  # the converter's own errors are many and undocumented
            raise RetrainError(
                f"cannot convert {name} for LiteRT ({type(error).__name__}: {error}); set "
                f"{RUNTIME_ENV}=tensorflow to run it on TensorFlow"
            ) from None
        check_conversion(model, flatbuffer, input_size)
        write_tflite(flatbuffer, path)
        runner = LiteRTRunner(flatbuffer)
    return runner


def check_conversion(model: keras.Model, flatbuffer: bytes, input_size: int) -> None:
    """Refuse a conversion whose features differ from TensorFlow's on a probe image (never cache a wrong model)."""
    probe = np.random.default_rng(0).uniform(0, 255, (1, input_size, input_size, 3)).astype(np.float32)
    expected = np.asarray(model(probe, training=False))
    got = LiteRTRunner(flatbuffer)(probe)
    difference = float(np.abs(got - expected).max())
    if not difference <= CONVERSION_TOLERANCE * max(1.0, float(np.abs(expected).max())):  # NaN fails too
        raise RetrainError(
            f"the LiteRT conversion of this backbone differs from TensorFlow by {difference:.3g}; "
            f"set {RUNTIME_ENV}=tensorflow to run it on TensorFlow"
        )


def tflite_path(key: str, name: str) -> Path:
    """Where this machine keeps the .tflite for the model `key` names (`name` only makes it readable)."""
    digest = hashlib.sha256(f"{key}|{TFLITE_VERSION}".encode()).hexdigest()[:16]
    readable = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)[:60]
    return backbone_cache_dir() / f"{readable}-{digest}.tflite"


def _open_cached(path: Path) -> LiteRTRunner | None:
    """The runner over a cached .tflite, or None when it is missing, damaged or unloadable (then it is rebuilt).

    The flatbuffer loader checks the file's structure but not its weights, so the bytes are checked against
    the sha256 written beside them: a flipped bit in a weight would otherwise give wrong features for ever.
    """
    try:
        flatbuffer, recorded = path.read_bytes(), _digest_path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if hashlib.sha256(flatbuffer).hexdigest() != recorded:
        log.warning("Reconverting the damaged cached backbone %s (its sha256 does not match)", path)
        return None
    try:
        return LiteRTRunner(flatbuffer)
    except (ValueError, RuntimeError) as error:
        log.warning("Reconverting the unloadable cached backbone %s (%s)", path, error)
        return None


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_tflite(flatbuffer: bytes, path: Path) -> None:
    """Cache a converted backbone: the file, then its sha256 (each atomic; a crash between means "convert again").

    A disk that refuses costs the conversion next time, not this run: the caller runs from memory.
    """
    try:
        sweep_stale_temporaries(path.parent)  # what a process killed while writing here left
        write_bytes_atomic(path, flatbuffer)
        write_bytes_atomic(_digest_path(path), hashlib.sha256(flatbuffer).hexdigest().encode() + b"\n")
    except OSError as error:
        warn_not_cached("the converted backbone", path, error)


def convert_to_tflite(model: keras.Model, input_size: int) -> bytes:
    """The float32 flatbuffer of `model`, run one (1, S, S, 3) float image at a time (XNNPACK's fastest here)."""
    import tensorflow as tf

    if tuple(model.input_shape[1:]) != (input_size, input_size, 3):
        raise RetrainError(f"cannot convert a model with input {model.input_shape} for {input_size} px images")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints every captured variable of the export
        return converter.convert()


class LiteRTRunner:
    """One LiteRT interpreter (XNNPACK, `THREADS` threads) over a batch-1 .tflite; called with whole batches.

    An interpreter is not thread-safe, so calls are serialised by a lock (the app may predict from two
    sessions at once).
    """

    def __init__(self, model: Path | bytes):
        from ai_edge_litert.interpreter import Interpreter

        with native_logs_silenced():  # "Created TensorFlow Lite XNNPACK delegate", C++ on descriptor 2
            if isinstance(model, bytes):
                self.interpreter = Interpreter(model_content=model, num_threads=THREADS)
            else:
                self.interpreter = Interpreter(model_path=str(model), num_threads=THREADS)
            self.interpreter.allocate_tensors()
        (source,), (target,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(source["shape"]) != 4 or source["shape"][0] != 1 or len(target["shape"]) != 2:
            raise ValueError(f"unexpected shapes {source['shape']} → {target['shape']}")
        self.input_index, self.output_index = source["index"], target["index"]
        self.input_size, self.feature_dim = int(source["shape"][1]), int(target["shape"][1])
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        features = np.empty((len(images), self.feature_dim), np.float32)
        with self.lock:
            for index, image in enumerate(images):
                self.interpreter.set_tensor(self.input_index, image[None].astype(np.float32))
                self.interpreter.invoke()
                features[index] = self.interpreter.get_tensor(self.output_index)[0]
        return features
