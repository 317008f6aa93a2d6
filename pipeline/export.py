"""Exports that predict what evaluation measured, checked rather than hoped.

The exported classifier is the backbone and the trained head joined into one model that takes
RGB images with values 0-255 at the backbone's input size and does its own scaling. The
SavedModel also carries the rest of our preprocessing, so a client never has to copy it: a
`serving_bytes` signature takes encoded image files (`{"b64": ...}` over TF Serving's REST API)
and `serving_pixels` takes uint8 pixels of any size; both centre-crop and resize inside, and
answer class names next to the probabilities. model.keras takes pixels of any size too, cropping
and resizing with Keras's own `Resizing` layer (so it loads in safe mode with no code of ours);
TFLite and ONNX have no builtin operator for an antialiased resize, so they take prepared
images and `preprocessing.json` beside them says exactly how to prepare them. Each format is
written on its own, then loaded back and compared with the in-memory model on real test images;
a difference beyond tolerance fails the run, and only a checked export is ever marked ready.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.errors import RetrainError
from pipeline.files import write_bytes_atomic
from pipeline.quiet import native_logs_silenced

# Largest allowed difference in any probability between the in-memory model and a reloaded export.
# `cached_bottlenecks` compares the head on cached features (what evaluation measured) with the
# exported whole model on the same images: batched and single-image convolutions round differently.
# `saved_model_pixels` is the pixel signature on already prepared images (its crop and resize are
# then the identity); `saved_model_bytes` decodes in TensorFlow, not Pillow, and decoders differ.
# `keras_any_size` is model.keras on whole decoded photos against the in-memory model behind the same
# Keras `Resizing` (how far that resize is from training's Pillow one is measured in bench/, not here).
# Quantized TFLite variants trade exactness for size: their bound only catches a broken conversion;
# what they cost in accuracy is measured on the whole test split and reported per variant.
TOLERANCE = {
    "keras": 1e-4,
    "keras_any_size": 1e-4,
    "saved_model": 1e-4,
    "saved_model_pixels": 1e-5,
    "saved_model_bytes": 0.02,
    "tflite": 1e-3,
    "cached_bottlenecks": 1e-3,
    "tflite_float16": 0.02,
    "tflite_dynamic": 0.2,
    "tflite_int8": 0.4,
    "onnx": 1e-4,
}
# Exports are written into a folder of this name inside the run, then moved into place; a run killed
# meanwhile leaves one behind, which the next run in that folder removes (pipeline.runs.RunDir.clear_outputs).
STAGING_PREFIX = ".staging-"
# The exported model's name: how a rerun recognises a model file of ours that it may replace.
CLASSIFIER_NAME = "classifier"
SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
PIXELS_SIGNATURE = "serving_pixels"
# The order they are built in: keras is quick; the TFLite ones convert the SavedModel; ONNX is optional.
FORMATS = ("keras", "saved_model", "tflite", "tflite_float16", "tflite_dynamic", "tflite_int8", "onnx")
FILES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic": "model_dynamic.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
TFLITE = ("tflite", "tflite_float16", "tflite_dynamic", "tflite_int8")
# Formats whose converter is an optional extra: one that cannot be made here is reported, and the run goes on.
OPTIONAL = ("onnx",)
# What a client reads to prepare images for the formats that take prepared ones (TFLite, ONNX).
PREPROCESSING_FILE = "preprocessing.json"
# model.keras's own preprocessing layer, and the archive entry that carries the class names inside the file.
RESIZE_LAYER = "centre_crop_and_resize"
KERAS_LABELS_ENTRY = "labels.txt"
# model.keras's any-size check: a few whole photos (each runs at its own size), none larger than this.
ANY_SIZE_CHECK_IMAGES, ANY_SIZE_CHECK_PIXELS = 4, 4_000_000


@dataclass
class ExportCheck:
    """What every reloaded export must reproduce: prepared images, their files' bytes, the expected answer."""

    images: np.ndarray  # (N, S, S, 3) uint8, prepared by pipeline.images (our decode, crop and resize)
    encoded: list[bytes]  # the same images' file bytes, for the SavedModel's bytes signature
    expected: np.ndarray  # (N, classes) probabilities of the in-memory model on `images`
    originals: list[np.ndarray] = field(default_factory=list)  # whole decoded photos, for any-size inputs
    originals_expected: np.ndarray | None = None  # the in-memory model on each, behind model.keras's own resize


def originals_for_check(classifier: keras.Model, encoded: list[bytes]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A few whole decoded photos and what the in-memory model answers on them through model.keras's own resize."""
    from PIL import Image

    from pipeline.images import decode_image

    originals = []
    for data in encoded:
        with Image.open(io.BytesIO(data)) as image:  # the header only: a huge photo is never decoded here
            if image.size[0] * image.size[1] > ANY_SIZE_CHECK_PIXELS:
                continue
        originals.append(decode_image(data))
        if len(originals) == ANY_SIZE_CHECK_IMAGES:
            break
    if not originals:
        return [], None
    any_size = any_size_classifier(classifier)  # shares the classifier's weights
    return originals, np.concatenate([eager_probabilities(any_size, rgb[None]) for rgb in originals])


def build_classifier(backbone_model: keras.Model, head: keras.Model, input_size: int) -> keras.Model:
    """Backbone + head as one model: (batch, S, S, 3) RGB 0-255 → class probabilities."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    probabilities = head(backbone_model(inputs))
    return keras.Model(inputs, probabilities, name=CLASSIFIER_NAME)


def any_size_classifier(classifier: keras.Model) -> keras.Model:
    """The classifier behind Keras's own centre crop and resize: (batch, H, W, 3) RGB 0-255 of any size → probabilities.

    `Resizing(crop_to_aspect_ratio=True)` cuts the same centred square as pipeline.images and resizes
    it bilinear, antialiased; unlike Pillow it does not round to whole values, so pixels differ by up
    to one level (an image already at the model's size passes through unchanged). A built-in layer
    keeps the file loadable with `safe_mode=True` and no code of ours, on any Keras backend.
    """
    size = int(classifier.input_shape[1])
    pixels = keras.Input((None, None, 3), name="pixels")
    square = keras.layers.Resizing(
        size, size, interpolation="bilinear", crop_to_aspect_ratio=True, antialias=True, name=RESIZE_LAYER
    )(pixels)
    # training=False is recorded in the graph: with Resizing in front, Keras 3 otherwise runs the head's Dropout
    # on a plain `model(x)` call, a different answer each time (`predict` was unaffected). An export is for inference.
    return keras.Model(pixels, classifier(square, training=False), name=CLASSIFIER_NAME)


def fixed_size_model(model: keras.Model) -> keras.Model:
    """The (S, S) classifier inside our any-size model.keras (a model from an older run, or a user's, as it is)."""
    if model.input_shape[1] is not None:
        return model
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.input_shape[1] is not None]
    if len(inner) != 1:
        raise RetrainError(
            f"model {model.name!r} takes images of any size and holds no fixed-size classifier; "
            "give a model.keras that Retrain Studio exported"
        )
    return inner[0]


def preprocessing_description(labels: list[str], size: int) -> dict:
    """preprocessing.json: what each format takes, and how to prepare an image for those that take prepared ones."""
    prepared = {
        "input": "image",
        "shape": [None, size, size, 3],
        "dtype": "float32",
        "range": [0, 255],
        "preprocessing": "yours: see prepare",
    }
    return {
        "labels": labels,
        "input_size": size,
        "prepare": {
            "color": "RGB (EXIF orientation applied; transparent pixels laid on white)",
            "crop": "the largest centred square: side = min(H, W), top = (H - side) // 2, left = (W - side) // 2",
            "resize": f"to {size}x{size}, bilinear, antialiased on the way down, rounded to whole values "
            "(Pillow's Image.resize(..., Image.BILINEAR))",
            "scale": "none: values stay 0-255 and the model scales them itself",
            "jpeg": f"decoded at the reduced scale Pillow's draft('RGB', ({size}, {size})) picks",
        },
        "formats": {
            "model.keras": {
                "input": "pixels",
                "shape": [None, None, None, 3],
                "dtype": "float32 (uint8 accepted)",
                "range": [0, 255],
                "preprocessing": "inside: centre crop and resize (keras Resizing)",
                "labels": f"{KERAS_LABELS_ENTRY} inside the .keras archive, and labels.txt beside",
            },
            "saved_model/1": {
                "signatures": {
                    SIGNATURE: "image: as model.tflite",
                    BYTES_SIGNATURE: "image_bytes: encoded JPEG/PNG/GIF/BMP/WebP files",
                    PIXELS_SIGNATURE: "pixels: uint8 RGB of any one size",
                },
                "labels": "output `classes` of serving_bytes and serving_pixels; assets/labels.txt",
            },
            **{FILES[name]: {**prepared, "labels": "labels.txt beside"} for name in TFLITE},
            "model.onnx": {**prepared, "labels": "metadata_props `labels` (JSON), and labels.txt beside"},
        },
    }


def looks_like_our_model(path: Path) -> bool:
    """A .keras file holding a model `build_classifier` made (a rerun may replace it; a user's own model not)."""

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        return config["config"]["name"] == CLASSIFIER_NAME
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError):  # not a zip, not Keras's, not ours
        return False


def write_labels(labels: list[str], path: str | Path) -> None:
    """retrain.py's output_labels format: one label a line, in output order."""
    write_bytes_atomic(path, ("\n".join(labels) + "\n").encode())


def write_export(
    name: str, classifier: keras.Model, labels: list[str], run_dir: str | Path, representative: np.ndarray | None = None
) -> None:
    """Write one format into run_dir (replacing an older one only once the new one is complete).

    `representative`: prepared training images, which full int8 quantization calibrates on.
    """
    if name not in FORMATS:
        raise RetrainError(f"unknown export format {name!r}; choose from {list(FORMATS)}")
    if name in TFLITE:
        _write_tflite(classifier, Path(run_dir), name, representative)
    elif name == "onnx":
        from pipeline.onnx_export import write_onnx

        size = int(classifier.input_shape[1])
        write_onnx(classifier, Path(run_dir) / FILES[name], labels, preprocessing_description(labels, size))
    else:
        {"keras": _write_keras, "saved_model": _write_saved_model}[name](classifier, labels, Path(run_dir))


def check_export(name: str, run_dir: str | Path, check: ExportCheck) -> dict[str, float]:
    """Load one written format back; its largest differences from the in-memory model, by check name."""
    run_dir, images = Path(run_dir), check.images.astype(np.float32)
    if not len(check.expected):
        return {name: 0.0}
    differences = {}
    if name == "keras":
        model = keras.saving.load_model(run_dir / "model.keras")
        differences["keras"] = _difference(eager_probabilities(model, images), check.expected)
        if check.originals:  # whole photos of any size through the model's own crop and resize
            differences["keras_any_size"] = max(
                _difference(eager_probabilities(model, rgb[None]), expected[None])
                for rgb, expected in zip(check.originals, check.originals_expected, strict=True)
            )
    elif name == "saved_model":
        loaded = tf.saved_model.load(str(run_dir / "saved_model" / "1"))  # once: loading is the slow part
        differences["saved_model"] = _difference(predict_saved_model(loaded, images), check.expected)
        differences["saved_model_pixels"] = _difference(
            predict_saved_model_pixels(loaded, check.images), check.expected
        )
        differences["saved_model_bytes"] = _difference(
            predict_saved_model_bytes(loaded, check.encoded)[0], check.expected
        )
    elif name == "tflite":
        differences["tflite"] = _difference(predict_tflite(run_dir, images), check.expected)
    elif name in TFLITE:
        differences[name] = _difference(tflite_probabilities(run_dir / FILES[name], images), check.expected)
    elif name == "onnx":
        from pipeline.onnx_export import onnx_probabilities

        differences[name] = _difference(onnx_probabilities(run_dir / FILES[name], images), check.expected)
    return differences


def remove_export(name: str, run_dir: str | Path) -> None:
    """Delete one format's files (a cancelled or failed export is never left to be mistaken for a good one)."""
    target = Path(run_dir) / FILES[name]
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


def require_parity(parity: dict[str, float]) -> None:
    """Fail loudly when a reloaded export predicts differently from the trained model."""
    failed = {name: diff for name, diff in parity.items() if diff > TOLERANCE[name]}
    if failed:
        detail = ", ".join(
            f"{name} differs by {diff:.2e} (allowed {TOLERANCE[name]:.0e})" for name, diff in failed.items()
        )
        raise RetrainError(f"export check failed: {detail}; the exported files must not be used")


def _difference(predicted: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(predicted - expected).max())


def _write_keras(classifier: keras.Model, labels: list[str], run_dir: Path) -> None:
    """model.keras: any-size pixels in; the class names ride inside the archive (Keras's loader ignores the entry).

    Not in the model's config: Keras layer names must be valid TensorFlow scope names (no spaces or
    quotes), and the one built-in layer made to hold strings (StringLookup) runs only on TensorFlow.
    """
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=STAGING_PREFIX) as tmp:
        staged = Path(tmp) / "model.keras"
        any_size_classifier(classifier).save(staged)
        with zipfile.ZipFile(staged, "a") as archive:
            archive.writestr(KERAS_LABELS_ENTRY, "\n".join(labels) + "\n")
        staged.replace(run_dir / "model.keras")


# ---- the SavedModel: float pixels (as before), encoded bytes, and any-size uint8 pixels ------------------------


def prepare_pixels(pixels: tf.Tensor, size: int) -> tf.Tensor:
    """(H, W, 3) uint8 → (size, size, 3) float 0-255: centre square, then Pillow's bilinear resize.

    The TensorFlow twin of pipeline.images.prepare_for_model. Pillow resizes in two passes,
    width then height, each antialiased (a triangle filter widened on the way down) and rounded
    half up to whole numbers; doing the same here keeps nearly every pixel identical (the rest
    differ by one level). An image already at the size passes through unchanged.
    """
    shape = tf.shape(pixels)
    side = tf.minimum(shape[0], shape[1])
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    square = tf.cast(pixels[top : top + side, left : left + side, :3], tf.float32)

    def pillow_bilinear() -> tf.Tensor:
        wide = _round_half_up(tf.image.resize(square, (side, size), method="bilinear", antialias=True))
        return _round_half_up(tf.image.resize(wide, (size, size), method="bilinear", antialias=True))

    resized = tf.cond(side == size, lambda: square, pillow_bilinear)  # no resampling when nothing needs resizing
    return tf.ensure_shape(resized, (size, size, 3))


def _round_half_up(values: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(tf.floor(values + 0.5), 0.0, 255.0)


def decode_for_model(data: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image bytes → (size, size, 3) float 0-255, like pipeline.images.bytes_for_model.

    JPEGs are decoded at the same reduced scale Pillow's `draft` picks (1/2, 1/4, 1/8 while both
    sides stay at least `size`) with the accurate integer DCT, as libjpeg does for Pillow; other
    formats (PNG, GIF's first frame, BMP, WebP) through tf.io.decode_image. Not reproduced: EXIF
    rotation and transparency laid on white.
    """

    def jpeg() -> tf.Tensor:
        height_width = tf.image.extract_jpeg_shape(data)[:2]
        scale = tf.reduce_min(height_width // size)
        index = tf.reduce_sum(tf.cast(scale >= tf.constant([2, 4, 8], tf.int32), tf.int32))
        return tf.switch_case(
            index,
            [
                (lambda ratio=ratio: tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"))
                for ratio in (1, 2, 4, 8)
            ],
        )

    def other() -> tf.Tensor:
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    pixels = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    return prepare_pixels(tf.ensure_shape(pixels, (None, None, 3)), size)


def _write_saved_model(classifier: keras.Model, labels: list[str], run_dir: Path) -> None:
    """TF Serving layout: saved_model/1/ with three signatures and assets/labels.txt.

    `serving_default` takes `image` (N, S, S, 3) float 0-255, as before; `serving_bytes` takes
    `image_bytes` (N,) encoded files; `serving_pixels` takes `pixels` (N, H, W, 3) uint8 of any one
    size. The last two also answer `classes`: the class names, in the order of `probabilities`.
    """
    target = run_dir / "saved_model"
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=STAGING_PREFIX) as tmp:
        staged = Path(tmp) / "saved_model"
        _saved_model_archive(classifier, labels).write_out(str(staged / "1"), verbose=False)
        write_labels(labels, staged / "1" / "assets" / "labels.txt")
        if target.exists():
            shutil.rmtree(target)
        staged.replace(target)


def _saved_model_archive(classifier: keras.Model, labels: list[str] | None) -> keras.export.ExportArchive:
    size = classifier.input_shape[1]
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda image: {"probabilities": classifier(image, training=False)},
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="image")],
    )
    if labels is None:
        return archive
    names = tf.constant(labels)

    def answer(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = classifier(images, training=False)
        return {"probabilities": probabilities, "classes": tf.tile(names[None], [tf.shape(probabilities)[0], 1])}

    prepared = tf.TensorSpec((size, size, 3), tf.float32)
    archive.add_endpoint(
        name=BYTES_SIGNATURE,
        fn=lambda image_bytes: answer(
            tf.map_fn(lambda data: decode_for_model(data, size), image_bytes, fn_output_signature=prepared)
        ),
        input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        name=PIXELS_SIGNATURE,
        fn=lambda pixels: answer(
            tf.map_fn(lambda image: prepare_pixels(image, size), pixels, fn_output_signature=prepared)
        ),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="pixels")],
    )
    return archive


def _write_tflite(
    classifier: keras.Model, run_dir: Path, name: str = "tflite", representative: np.ndarray | None = None
) -> None:
    """A TFLite file from the SavedModel's float signature (LiteRT's string and map ops are not builtin).

    Converted from the run's SavedModel when it was exported, else from one written just for this.
    Variants: float16 weights; dynamic-range (int8 weights, float activations); full int8
    (weights and activations, calibrated on `representative` images; input and output stay float).
    """
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=STAGING_PREFIX) as tmp:
        source = run_dir / "saved_model" / "1"
        if not (source / "saved_model.pb").exists():
            source = Path(tmp) / "saved_model"
            _saved_model_archive(classifier, None).write_out(str(source), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source), [SIGNATURE])
        if name != "tflite":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if name == "tflite_float16":
            converter.target_spec.supported_types = [tf.float16]
        if name == "tflite_int8":
            if representative is None or not len(representative):
                raise RetrainError("int8 quantization needs representative training images; none were given")
            converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with native_logs_silenced():  # the converter's MLIR chatter
            flat = converter.convert()
    write_bytes_atomic(run_dir / FILES[name], flat)


# ---- reloading each format as a client would ---------------------------------------------------------------------


def eager_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model on a few check images, called directly: predict() would first compile a graph, which
    costs seconds with a real backbone while the model a user waits for is being checked."""
    return np.asarray(model(images.astype(np.float32), training=False))


def load_saved_model(saved_model):
    """A loaded SavedModel, from a run folder or as it was given (already loaded)."""
    if isinstance(saved_model, (str, Path)):
        return tf.saved_model.load(str(Path(saved_model) / "saved_model" / "1"))
    return saved_model


def predict_saved_model(saved_model, images: np.ndarray) -> np.ndarray:
    """The float signature; `saved_model` is a run folder or a loaded SavedModel."""
    loaded = load_saved_model(saved_model)
    return loaded.signatures[SIGNATURE](image=tf.constant(images))["probabilities"].numpy()


def predict_saved_model_pixels(saved_model, pixels: np.ndarray) -> np.ndarray:
    """The pixel signature on a batch of same-size uint8 images (any size)."""
    loaded = load_saved_model(saved_model)
    return loaded.signatures[PIXELS_SIGNATURE](pixels=tf.constant(pixels, tf.uint8))["probabilities"].numpy()


def predict_saved_model_bytes(saved_model, encoded: list[bytes]) -> tuple[np.ndarray, list[list[str]]]:
    """The bytes signature on encoded image files: (probabilities, class names of each row)."""
    loaded = load_saved_model(saved_model)
    answer = loaded.signatures[BYTES_SIGNATURE](image_bytes=tf.constant(encoded, tf.string))
    classes = [[name.decode() for name in row] for row in answer["classes"].numpy()]
    return answer["probabilities"].numpy(), classes


def predict_tflite(run_dir: Path, images: np.ndarray) -> np.ndarray:
    return tflite_probabilities(run_dir / "model.tflite", images)


def tflite_interpreter(path: str | Path):
    """LiteRT's interpreter for a .tflite file (tf.lite.Interpreter is deprecated and warns on every use)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # a platform without ai-edge-litert wheels
        Interpreter = tf.lite.Interpreter  # noqa: N806
    with native_logs_silenced():  # "Created TensorFlow Lite XNNPACK delegate" and absl's notice
        return Interpreter(model_path=str(path))


def tflite_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Any of our TFLite files on prepared images, one image per call (the signature's batch is 1)."""
    runner = tflite_interpreter(path).get_signature_runner(SIGNATURE)
    if not len(images):
        return np.zeros((0, 0))
    with native_logs_silenced():  # the first invoke creates the XNNPACK delegate, and says so on descriptor 2
        return np.concatenate([runner(image=image[None].astype(np.float32))["probabilities"] for image in images])
