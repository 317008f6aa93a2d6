"""A run as one download: its checked models, labels.txt, report.json and a model card in Markdown.

Only exports the run marked ready go in (a cancelled or failed format never does), so the zip
holds nothing that was not reloaded and checked. The model card says what a user of the model
needs to know without Retrain Studio: the data, classes, scores, preprocessing, use and limits.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from pipeline.backbones.side_by_side import is_side_by_side, split_names
from pipeline.config import RunConfig
from pipeline.errors import RetrainError
from pipeline.evaluate import Report
from pipeline.runs import RunDir

PREPROCESSING = (
    "RGB photos; the largest centred square is cropped and resized (bilinear, antialiased) to {size}x{size}; "
    "values stay 0-255 (the model scales them itself). `model.keras` takes pixels of any size and does the "
    "crop and resize itself (Keras's `Resizing` layer; pixels may differ from ours by one level). "
    "`saved_model/1/` has `serving_bytes` (encoded image files in) and `serving_pixels` (uint8 pixels of any "
    "size in), which do the crop and resize themselves and answer class names next to the probabilities. "
    "The TFLite and ONNX files take prepared images: `preprocessing.json` says exactly how to prepare them."
)


def ready_files(run: RunDir) -> list[Path]:
    """The run's files a bundle may hold: labels, report, and every export marked ready."""
    from pipeline.export import FILES, PREPROCESSING_FILE

    status = run.status()
    exports = status.get("exports")
    if not isinstance(exports, dict):  # a run from before per-export states: only a done run's exports
        exports = {name: "ready" for name in FILES} if status.get("state") == "done" else {}
    ready = [run.path / FILES[name] for name, state in exports.items() if state == "ready" and name in FILES]
    described = [run.path / PREPROCESSING_FILE] if (run.path / PREPROCESSING_FILE).is_file() else []
    return [run.path / "labels.txt", run.report, *described] + [path for path in ready if path.exists()]


MIRROR_WORDS = (
    " Each photo is also seen mirrored left to right: the head reads the mean of both views' features, inside the"
    " model, so every export does the same."
)


def _backbone_words(architecture: str) -> str:
    if is_side_by_side(architecture):
        parts = " and ".join(f"`{name}`" for name in split_names(architecture))
        return f"the {parts} ImageNet backbones side by side (their features joined)"
    return f"the `{architecture.rsplit('/', 1)[-1]}` ImageNet backbone"


def model_card(run: RunDir) -> str:
    """A short Markdown card: data, classes and counts, metrics, preprocessing, intended use, limits."""
    report, config = Report.load(run.report), RunConfig.load(run.config)
    counts = report.extra.get("train_class_counts", {})
    size = report.extra.get("input_size", "S")  # S: the backbone's input size (reports from before it was kept)
    lines = [
        f"# Model card: {run.name}",
        "",
        f"An image classifier for {len(report.labels)} classes, trained with Retrain Studio by transfer "
        f"learning: {_backbone_words(config.train.architecture)}, frozen"
        f"{' (top layers fine-tuned)' if config.train.fine_tune_layers else ''}, and a new softmax head."
        f"{MIRROR_WORDS if config.train.mirror_view else ''}",
        "",
        "## Data",
        "",
        f"Source: `{Path(config.dataset.image_dir or config.dataset.zip or '?').name}`; "
        f"{sum(counts.values())} training images (augmented copies included), "
        f"{report.extra.get('validation_images', '?')} validation, {report.test_images} "
        f"{report.extra.get('evaluated_on', 'test')} images.",
        "",
        "| class | training images | precision | recall |",
        "|---|---|---|---|",
    ]
    for label in report.labels:
        scores = report.per_class.get(label)
        lines.append(
            f"| {_cell(label)} | {counts.get(label, 0)} | {scores.precision:.3f} | {scores.recall:.3f} |"
            if scores
            else f"| {_cell(label)} | {counts.get(label, 0)} | | |"
        )
    lines += [
        "",
        "## Metrics",
        "",
        f"- {report.extra.get('evaluated_on', 'test')} accuracy: "
        f"{report.test_accuracy:.3f}; top-5: {report.top5_accuracy:.3f}",
    ]
    for name, variant in report.extra.get("tflite_variants", {}).items():
        lines.append(
            f"- `{variant['file']}` ({name}, {variant['size_mb']} MB): accuracy {variant['test_accuracy']:.3f}"
        )
    lines += [
        "",
        "## Preprocessing",
        "",
        PREPROCESSING.format(size=size),
        "",
        "## Intended use",
        "",
        "Sorting photos like the ones it was trained on into these classes, with a person checking "
        "low-confidence answers.",
        "",
        "## Limits",
        "",
        "- It always answers one of its classes, even for a photo of something else.",
        "- Its scores hold for photos like the training set (camera, lighting, framing); measure again "
        "on your own photos before relying on it.",
        f"- Scored on {report.test_images} held-out images: small classes have uncertain scores.",
        "",
    ]
    return "\n".join(lines)


def bundle_bytes(run_dir: str | Path) -> bytes:
    """The run's bundle as zip bytes (the app's download button; `write_bundle` for a file)."""
    run = RunDir(run_dir)
    if not run.report.exists():
        raise RetrainError(f"{run.path}: no report.json yet; a bundle is made once the model is checked")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in ready_files(run):
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    archive.write(file, f"{run.name}/{file.relative_to(run.path).as_posix()}")
        archive.writestr(f"{run.name}/MODEL_CARD.md", model_card(run))
    return buffer.getvalue()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
