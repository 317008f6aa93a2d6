"""ONNX export, optional: the fixed-size classifier converted by tf2onnx, class names in its metadata.

tf2onnx and onnxruntime are an optional extra (requirements-onnx.txt, or `pip install .[onnx]`):
where they are missing, or a conversion fails, the format is reported unavailable in one line and
the run goes on with the others; a converted model that predicts differently still fails the run,
like any export. The model takes prepared images (the centre crop and the antialiased resize stay
outside: TensorFlow's resize op has no ONNX counterpart in tf2onnx), as TFLite does, and carries
`labels` and `preprocessing` (JSON) in its metadata_props.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import ExportUnavailable
from pipeline.files import write_bytes_atomic
from pipeline.quiet import native_logs_silenced

# ONNX opset of the converted graph: 17 is read by every onnxruntime since 1.13 and by most other runtimes.
OPSET = 17
INSTALL = "pip install -r requirements-onnx.txt (or pip install '.[onnx]')"


def write_onnx(classifier, path: Path, labels: list[str], preprocessing: dict) -> None:
    """Convert the classifier ((N, S, S, 3) float 0-255 → `probabilities`) and write it atomically to `path`."""
    try:
        import onnx
        import tf2onnx
    except ImportError:
        raise ExportUnavailable(
            f"ONNX export needs tf2onnx and onnxruntime, which are not installed: {INSTALL}"
        ) from None
    except Exception as error:  # installed against another numpy/protobuf: AttributeError, OSError from a .so, ...
        raise _broken(error) from None
    import tensorflow as tf

    size = int(classifier.input_shape[1])
    forward = tf.function(lambda image: {"probabilities": classifier(image, training=False)})
    spec = [tf.TensorSpec((None, size, size, 3), tf.float32, name="image")]
    try:
        with native_logs_silenced():
            model, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    except Exception as error:  # tf2onnx raises many types for an op it cannot map
        raise ExportUnavailable(
            f"the ONNX conversion failed ({type(error).__name__}: {str(error)[:200]}); the other formats are unaffected"
        ) from None
    onnx.helper.set_model_props(
        model,
        {
            "labels": json.dumps(labels, ensure_ascii=False),
            "preprocessing": json.dumps(preprocessing, ensure_ascii=False),
        },
    )
    write_bytes_atomic(path, model.SerializeToString())


def onnx_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    """model.onnx on prepared (N, S, S, 3) images, through onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:  # a model nobody here can check is never offered
        raise ExportUnavailable(
            f"checking the ONNX export needs onnxruntime, which is not installed: {INSTALL}"
        ) from None
    except Exception as error:
        raise _broken(error) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": images.astype(np.float32)})[0]


def _broken(error: Exception) -> ExportUnavailable:
    return ExportUnavailable(
        f"the ONNX extra is installed but broken and cannot be loaded ({type(error).__name__}: "
        f"{str(error)[:200]}); reinstall it: {INSTALL}. The other formats are unaffected"
    )
