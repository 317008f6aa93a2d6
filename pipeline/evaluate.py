"""Evaluation as an object: the CLI prints a Report, the app plots the same one.

A Report is built from true labels and predicted probabilities only, so it does not care
whether those came from the head on cached bottlenecks or from a fine-tuned whole model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import write_json_atomic


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Prediction:
    """One test image: its file, its true label, what the model said, and how sure it was."""

    file: str
    true_label: str
    predicted_label: str
    confidence: float


@dataclass
class Report:
    test_accuracy: float  # 0-1, on the held-out test split
    top5_accuracy: float
    test_images: int
    labels: list[str]
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted label
    misclassified: list[Prediction]
    predictions: list[Prediction] = field(default_factory=list)  # every test image, right or wrong
    extra: dict[str, Any] = field(default_factory=dict)  # export_parity, timings, train_class_counts, ...

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """A saved report.json, its shape checked (pipeline.records.DamagedFile names what is wrong)."""
        from pipeline.records import read_report

        return read_report(path)

    def table(self) -> str:
        """A readable per-class table with the headline numbers, for the terminal."""
        width = max([len(label) for label in self.labels] + [9])
        lines = [
            f"test accuracy {self.test_accuracy:.4f}   top-5 {self.top5_accuracy:.4f}   "
            f"({self.test_images} test images)",
            "",
            f"{'class':<{width}}  precision  recall     f1  support",
        ]
        for label in self.labels:
            s = self.per_class[label]
            lines.append(f"{label:<{width}}  {s.precision:9.3f}  {s.recall:6.3f}  {s.f1:5.3f}  {s.support:7d}")
        return "\n".join(lines)


# Below these, a score is mostly luck: with 4 test photos of a class one photo moves its recall by 25 points,
# and with 19 in all one photo moves the accuracy by more than 5 points — more than most changes of settings do.
MIN_TEST_PER_CLASS = 5
MIN_TEST_IMAGES = 20


def small_test_split_warning(report: Report, testing_percentage: float | None = None) -> str | None:
    """What to tell the user when the evaluated split is too small for its score to mean much, else None.

    `testing_percentage` None means the dataset came split in folders (the fix is more test photos).
    """
    supports = {label: scores.support for label, scores in report.per_class.items()}
    few = sorted(label for label, n in supports.items() if n < MIN_TEST_PER_CLASS)
    if not few and report.test_images >= MIN_TEST_IMAGES:
        return None
    split = "validation" if report.extra.get("evaluated_on") == "validation" else "test"
    if report.test_images == 0:
        measured = f"no {split} images, so this score measures nothing"
    else:
        step = 100 / report.test_images
        measured = f"only {report.test_images} {split} image(s), so one photo moves the accuracy by {step:.0f} points"
    if few:
        shown = ", ".join(f"{label} ({supports[label]})" for label in few[:5]) + (" ..." if len(few) > 5 else "")
        measured += f"; fewer than {MIN_TEST_PER_CLASS} for {shown}"
    enough = f"at least {MIN_TEST_PER_CLASS} per class and {MIN_TEST_IMAGES} in all"
    if testing_percentage is None:  # a pre-split dataset: its test/ folder decides
        return f"{measured}. Treat the score as a rough guess: add photos to the test folder of each class ({enough})."
    return (
        f"{measured}. Treat the score as a rough guess: add more photos to each class, or (on the command line) "
        f"raise the test percentage (now {testing_percentage:g}%, --testing_percentage) so that {enough} are held "
        "out for testing."
    )


def build_report(true_indices: np.ndarray, probabilities: np.ndarray, labels: list[str], files: list[str]) -> Report:
    """Accuracy, top-5, per-class P/R/F1, confusion matrix and misclassified images."""
    true_indices = np.asarray(true_indices, dtype=int)
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    count = len(true_indices)
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (true_indices, predicted), 1)
    top_k = min(5, len(labels))
    top5 = np.argsort(-probabilities, axis=1)[:, :top_k] if count else np.zeros((0, top_k), dtype=int)
    wrong = np.flatnonzero(predicted != true_indices)
    # Most confident mistakes first: those are the ones worth looking at.
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])] if len(wrong) else wrong
    return Report(
        test_accuracy=float((predicted == true_indices).mean()) if count else 0.0,
        top5_accuracy=float((top5 == true_indices[:, None]).any(axis=1).mean()) if count else 0.0,
        test_images=count,
        labels=list(labels),
        per_class=_per_class_scores(confusion, labels),
        confusion_matrix=confusion.tolist(),
        misclassified=[_prediction(i, files, labels, true_indices, predicted, probabilities) for i in wrong],
        predictions=[_prediction(i, files, labels, true_indices, predicted, probabilities) for i in range(count)],
    )


def _prediction(
    i: int,
    files: list[str],
    labels: list[str],
    true_indices: np.ndarray,
    predicted: np.ndarray,
    probabilities: np.ndarray,
) -> Prediction:
    return Prediction(
        files[i], labels[true_indices[i]], labels[predicted[i]], round(float(probabilities[i, predicted[i]]), 4)
    )


def _per_class_scores(confusion: np.ndarray, labels: list[str]) -> dict[str, ClassScores]:
    scores = {}
    for index, label in enumerate(labels):
        true_positive = confusion[index, index]
        predicted_as = confusion[:, index].sum()
        support = confusion[index, :].sum()
        precision = true_positive / predicted_as if predicted_as else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[label] = ClassScores(
            round(float(precision), 4), round(float(recall), 4), round(float(f1), 4), int(support)
        )
    return scores


def cell_images(predictions: list[Prediction], true_label: str, predicted_label: str) -> list[dict[str, Any]]:
    """The images of one confusion-matrix cell from a report's predictions: [{file, true_label, predicted_label,
    confidence}].

    Mistakes come most confident first (the ones to look at); correct ones least confident first
    (the near misses).
    """
    items = [
        dataclasses.asdict(p)
        for p in predictions
        if p.true_label == true_label and p.predicted_label == predicted_label
    ]
    sign = 1 if true_label == predicted_label else -1
    return sorted(items, key=lambda item: sign * item["confidence"])
