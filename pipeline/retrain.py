"""One run, start to finish: dataset → bottlenecks → head → report → exports.

This is retrain.py's whole job, told in the order data flows. Each stage writes where it is to
status.json so the app (or a second terminal) can watch; SIGTERM stops the run at the next
batch with everything cached so far kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.augment import copies_per_class, effective_augment
from pipeline.bottlenecks import CacheResult, ExtractItem, cache_bottlenecks
from pipeline.config import RunConfig
from pipeline.dataset import Dataset, load_dataset, require_trainable
from pipeline.errors import ExportUnavailable, RetrainError, RunCancelled
from pipeline.evaluate import Report, build_report, small_test_split_warning
from pipeline.familiarity import fit_familiarity, save_familiarity
from pipeline.files import describe_write_error, disk_full_message, looks_like_disk_full, printable
from pipeline.head import HEAD_FILE, as_keras_head, head_probabilities
from pipeline.images import bytes_for_model
from pipeline.manifest import as_queued, write_manifest
from pipeline.progress import Progress, ProgressCallback
from pipeline.run_dataset import summarize_dataset, write_run_dataset
from pipeline.runs import STATE_INFO, RunDir, job_slot, max_jobs, process_started
from pipeline.settings import cache_root, default_bottleneck_dir
from pipeline.stage_progress import EXPORT_PREFIX, PENDING, StageBoard, run_stage_keys, stage_title

PARITY_IMAGES = 16  # test images each export is reloaded and checked on
REPRESENTATIVE_IMAGES = 100  # training images full int8 quantization calibrates on


class StopFlag:
    """Set by SIGTERM or SIGINT while a run is on, or by a cancel request file; polled between batches."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, cancel_request: Path, event: threading.Event | None = None) -> None:
        # A shared `event` puts the handlers back for a flag already in use (after a library replaced them).
        self.event = event or threading.Event()
        self.cancel_request = cancel_request
        self.previous: dict = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            self.previous = {sig: signal.signal(sig, lambda *_: self.event.set()) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def is_set(self) -> bool:
        return self.event.is_set() or self.cancel_request.exists()


@dataclass
class RunContext:
    config: RunConfig
    run: RunDir
    stop: StopFlag
    echo: ProgressCallback | None
    timings: dict[str, float] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)  # format → pending, building, ready, failed, ...
    # each stage's own line (pipeline.stage_progress), written with every status
    board: StageBoard = field(default_factory=lambda: StageBoard([]))
    # what every later status keeps saying once known (the test accuracy, from the report on, while exports build)
    known: dict = field(default_factory=dict)

    def status(self, state: str, fraction: float, step: str, message: str = "", **details) -> None:
        low, high = STATE_INFO[state].span if state in STATE_INFO else (0.0, 1.0)
        details = {**self.known, **details}
        if self.exports:
            details["exports"] = dict(self.exports)
        details.update(self.board.to_status())
        self.run.write_status(state, low + (high - low) * min(max(fraction, 0.0), 1.0), step, message, **details)

    def stage_progress(self, key: str, state: str, unit: str = "images") -> ProgressCallback:
        """A ProgressCallback for one stage: its line on the board, status.json and the CLI."""

        def report(progress: Progress) -> None:
            self.board.from_progress(key, progress, unit)
            if progress.total == 0:
                step = f"{stage_title(key)}: nothing to do" + (f" ({progress.message})" if progress.message else "")
                self.status(state, 1.0, step)
            else:
                eta = f", about {progress.eta_seconds:.0f}s left" if progress.eta_seconds is not None else ""
                self.status(
                    state,
                    progress.fraction,
                    f"{stage_title(key)} {progress.done}/{progress.total} {unit} ({progress.per_second:.1f}/s{eta})",
                    done=progress.done,
                    total=progress.total,
                    per_second=round(progress.per_second, 2),
                    eta_seconds=None if progress.eta_seconds is None else round(progress.eta_seconds, 1),
                )
            if self.echo:
                self.echo(replace(progress, stage=stage_title(key)))

        return report

    def uncounted_stage(self, key: str, state: str) -> ProgressCallback:
        """A ProgressCallback for one uncounted step (`bottlenecks.prepare_backbone`'s): an indeterminate report
        begins its stage, the next one ends it."""

        def report(progress: Progress) -> None:
            if progress.indeterminate:
                self.stage_begin(key, state, 0.0, progress.message)
            else:
                self.stage_end(key, state, 0.0, progress.message)

        return report

    def stage_begin(self, key: str, state: str, fraction: float, message: str = "") -> None:
        """A stage whose work cannot be counted: its line shows the time so far, the CLI a running timer."""
        self.board.begin(key, message=message)
        self.status(state, fraction, f"{stage_title(key)}" + (f": {message}" if message else ""))
        if self.echo:
            self.echo(Progress(stage_title(key), 0, 0, 0.0, None, message, indeterminate=True))

    def stage_end(self, key: str, state: str, fraction: float, message: str = "") -> None:
        self.board.end(key, message)
        self.status(state, fraction, f"{stage_title(key)} done" + (f": {message}" if message else ""))
        if self.echo:
            self.echo(Progress(stage_title(key), 1, 1, 0.0, 0.0, message or "done"))

    def stage_skip(self, key: str, state: str, fraction: float, why: str) -> None:
        self.board.skip(key, why)
        self.status(state, fraction, f"{stage_title(key)}: skipped ({why})")
        if self.echo:
            self.echo(Progress(stage_title(key), 0, 0, 0.0, None, f"skipped: {why}"))

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise RunCancelled("cancelled; every bottleneck cached so far is kept")


def retrain(config: RunConfig, run_dir: str | Path, echo: ProgressCallback | None = None) -> Report:
    """Run the whole job into run_dir, keeping status.json true at every step.

    Refused before anything is written when run_dir is not a run folder of ours or another run is
    writing into it. A full disk ends the run as failed with a message saying where and how much.
    """
    run = RunDir(run_dir)
    with run.claim(config.to_dict()):
        try:
            return _retrain(config, run, echo)
        except Exception as error:
            message = _machine_problem(error, run)
            if message is None:
                raise
            with contextlib.suppress(OSError):
                run.write_status("failed", message=message, **_settled_by_this_run(run))
            raise RetrainError(message) from None


# What write_ending said of the exports and stages: the model checked before the disk filled stays offered.
SETTLED_KEYS = ("exports", "stages", "run_eta_seconds", "run_eta_is_lower_bound")


def _settled_by_this_run(run: RunDir) -> dict:
    """The export states and stage lines this process's status.json holds (none from an earlier run's)."""
    status = run.status()
    if status.get("pid") != os.getpid():
        return {}
    return {key: status[key] for key in SETTLED_KEYS if key in status}


def _machine_problem(error: Exception, run: RunDir) -> str | None:
    """What a full disk, or a read-only or vanished folder, did to the run, in one line; None for anything
    else (a RetrainError says itself; other errors are bugs and keep their traceback in run.log)."""
    if isinstance(error, RetrainError) or not (isinstance(error, OSError) or looks_like_disk_full(error, run.path)):
        return None
    where = getattr(error, "filename", None) or run.path
    if looks_like_disk_full(error, where):
        return f"the run stopped: {disk_full_message(where, run.needed_mb)}"
    return f"the run stopped: {describe_write_error(error, where)}"


def _retrain(config: RunConfig, run: RunDir, echo: ProgressCallback | None) -> Report:
    run.path.mkdir(parents=True, exist_ok=True)
    run.clear_outputs()
    config.output.output_dir = str(run.path)
    config.save(run.config)
    run.write_status(
        "queued", 0.0, "waiting for a free training slot", pid=os.getpid(), pid_started=process_started(os.getpid())
    )
    context: RunContext | None = None
    try:
        config.validate()
        refuse_foreign_folder(config.output.saved_model_dir)

        def waiting() -> None:
            run.write_status("queued", 0.0, "waiting for a free training slot", waiting=True)

        with (
            StopFlag(run.cancel_request) as stop,
            job_slot(max_jobs(), cache_root() / "jobs", on_wait=waiting, should_stop=stop.is_set),
        ):
            keys = run_stage_keys(
                config.output.export_formats, augmenting=True, fine_tuning=config.train.fine_tune_layers > 0
            )
            context = RunContext(config, run, stop, echo, board=StageBoard(keys))
            report = _run_stages(context)
    except Exception as error:
        write_ending(run, context, error)
        raise
    write_done(run, context, report)
    return report


def save_report(context: RunContext, report: Report) -> None:
    """report.json with the run's timings so far; written again as later stages add theirs."""
    report.extra["timings"] = {k: round(v, 2) for k, v in context.timings.items()}
    report.save(context.run.report)


def write_ending(run: RunDir, context: RunContext | None, error: Exception) -> None:
    """status.json for a run that stops early: cancelled, failed with its reason, or failed on a bug (see run.log)."""
    if isinstance(error, RunCancelled):
        state, message = "cancelled", str(error)
    elif isinstance(error, RetrainError):
        state, message = "failed", str(error)
    else:
        state, message = "failed", f"internal error ({type(error).__name__}: {error}); see run.log"
    run.write_status(state, message=message, **settled_exports(context, state))


def write_done(run: RunDir, context: RunContext, report: Report) -> None:
    """status.json for a finished run: its score, the state of every export, its stage lines and any warning."""
    warning = {"test_split_warning": report.extra["test_split_warning"]} if "test_split_warning" in report.extra else {}
    run.write_status(
        "done",
        1.0,
        "done",
        f"test accuracy {report.test_accuracy:.1%}",
        test_accuracy=report.test_accuracy,
        exports=dict(context.exports),
        **warning,
        **context.board.to_status(),
    )


def settled_exports(context: RunContext | None, ending: str) -> dict:
    """Export states (and stage lines) for a run that ends early: what was being built did not finish, the rest
    was not built."""
    if context is None:
        return {}
    context.board.settle(ending)
    if not context.exports:
        return context.board.to_status()
    settled = {"building": ending, "pending": "not built"}
    return {
        "exports": {name: settled.get(state, state) for name, state in context.exports.items()},
        **context.board.to_status(),
    }


def refuse_foreign_folder(folder: str | None) -> None:
    """--saved_model_dir must be new or empty: a copy must never overwrite a user's other files."""
    if (
        folder
        and Path(folder).exists()
        and any(Path(folder).iterdir())
        and not (Path(folder) / "saved_model.pb").exists()
    ):
        raise RetrainError(f"--saved_model_dir {folder} exists and holds other files; choose a new or empty folder")


def _run_stages(context: RunContext) -> Report:
    from pipeline.backbones import load_backbone

    config, started = context.config, time.monotonic()
    context.stage_begin("dataset", "caching", 0.0, "listing the images")
    dataset = load_dataset(
        config.dataset,
        check_images=False,
        workdir=cache_root() / "datasets",
        progress=context.stage_progress("dataset", "caching", "files"),
    )
    dataset, gone = as_queued(dataset, context.run.path)  # the photos as they were when the run was queued
    if gone:
        print(
            f"note: {gone} photo(s) of the dataset as it was queued were deleted or changed since; the run "
            "trains without them",
            file=sys.stderr,
            flush=True,
        )
        dataset.warnings.append(f"{gone} photo(s) were deleted or changed after the run was queued; left out")
    write_manifest(dataset, context.run.path)  # the run's record of its data, whatever the folder becomes later
    summary = summarize_dataset(dataset, config.dataset)
    write_run_dataset(context.run.path, summary)  # what every view of this run shows as its dataset
    require_trainable(dataset)
    context.stage_end("dataset", "caching", 0.0, f"{summary['images']} images, {summary['classes']} classes")
    name = printable(Path(config.train.architecture).name)  # a 100 kB name must not be a 100 kB stage line
    context.stage_begin("backbone", "caching", 0.0, name if len(name) <= 80 else name[:79] + "…")
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer, config.train.mirror_view)
    context.stage_end("backbone", "caching", 0.0)
    context.run.needed_mb = _space_needed_mb(dataset, backbone, config)
    context.check_stop()
    features = _cache_features(context, dataset, backbone)
    labels = dataset.classes  # sorted, and kept current when images fail to decode
    head, head_data, rows = _train(context, dataset, features, labels)
    if config.train.fine_tune_layers == 0:  # fine-tuning changes the backbone: the cached features no longer apply
        x_train, y_train, _ = _split_arrays(dataset, features, labels, "train")
        save_familiarity(fit_familiarity(x_train, y_train, labels), context.run.path)
    classifier = (
        _fine_tune(context, dataset, features, labels, backbone, head) if config.train.fine_tune_layers > 0 else None
    )
    context.stage_begin("evaluating", "evaluating", 0.0, "on the test images")
    report = _evaluate(dataset, features, head, labels, classifier, backbone.input_size)
    context.stage_end("evaluating", "evaluating", 1.0, f"{report.test_images} images")
    percentage = None if dataset.layout == "pre_split" else config.dataset.testing_percentage
    if warning := small_test_split_warning(report, percentage):
        report.extra["test_split_warning"] = warning
    report.extra.update(_report_extras(context, dataset, head_data, backbone))
    report.extra["dataset"] = summarize_dataset(dataset, config.dataset)
    report.extra["cache"] = features.cache_summary
    report.extra["input_size"] = backbone.input_size
    # The head and its report before any Keras model is built: on a warm cache this is seconds after the start,
    # with TensorFlow not yet imported. The exports follow, each checked before it is offered.
    if classifier is None:  # its digest in the report: Predict answers with this head file and no other
        report.extra["head_sha256"] = head.save(context.run.path / HEAD_FILE)
    context.timings["report_seconds"] = time.monotonic() - started
    save_report(context, report)
    context.known["test_accuracy"] = report.test_accuracy  # said by every status from here on, so pages keep it
    context.status(
        "exporting",
        0.0,
        "building the exports",
        f"test accuracy {report.test_accuracy:.1%}; the exports are being built and checked",
    )
    context.check_stop()
    _write_summaries(config, context.run, rows)
    export_started = time.monotonic()
    exporter = Exporter(context, backbone, head, labels, _export_data(dataset, features, classifier), classifier)
    context.run.needed_mb = _space_needed_mb(dataset, backbone, config)  # now with the built model's size
    quick, rest = exporter.plan()
    for name in quick:  # the model a user waits for: quick to write and check
        exporter.build(name)
    context.timings["model_ready_seconds"] = time.monotonic() - started
    report.extra["export_parity"] = exporter.rounded_parity()
    save_report(context, report)
    for name in rest:  # the heavier formats, each checked before it is offered
        exporter.build(name)
        report.extra["export_parity"] = exporter.rounded_parity()
        if exporter.variants:
            report.extra["tflite_variants"] = exporter.variants
        if exporter.unavailable:
            report.extra["exports_unavailable"] = exporter.unavailable
    context.timings["export_seconds"] = time.monotonic() - export_started
    context.timings["total_seconds"] = time.monotonic() - started
    save_report(context, report)
    unready = {name: state for name, state in context.exports.items() if state not in ("ready", "unavailable")}
    if unready:  # cannot happen without an error above; a run is done only when every export passed
        raise RetrainError(f"exports not ready: {unready}")
    return report


def _space_needed_mb(dataset: Dataset, backbone, config: RunConfig) -> float | None:
    """A rough upper bound of what the run writes: a bottleneck per image and copy, and each export
    about the size of the backbone's weights once its model is built. Only for a full disk's message."""
    weights = 0  # until the model is built for the exports: building it only for this estimate costs seconds
    if backbone.built:
        try:
            weights = backbone.model.count_params() * 4
        except Exception:  # the estimate must never be what fails a run
            return None
    copies = 1 + max(config.augment.augment_copies, 1 if config.augment.class_size else 0)
    cached = len(dataset.usable()) * copies * backbone.feature_dim * 4
    return (cached + weights * len(config.output.export_formats)) / (1 << 20)


@dataclass
class Features:
    """Bottlenecks by item, and the augmented copies made of each training image."""

    vectors: dict[ExtractItem, np.ndarray]
    copies: dict[str, list[ExtractItem]]  # image path → its augmented copies that have vectors
    cache_summary: dict


def _cache_features(context: RunContext, dataset: Dataset, backbone) -> Features:
    config = context.config
    bottleneck_dir = config.output.bottleneck_dir or str(default_bottleneck_dir())
    started = time.monotonic()
    usable = dataset.usable()
    originals = [ExtractItem(row.path, row.sha256) for row in usable.itertuples()]
    result = cache_bottlenecks(
        originals,
        backbone,
        bottleneck_dir,
        progress=context.stage_progress("caching", "caching"),
        should_stop=context.stop.is_set,
        preparing=context.uncounted_stage("preparing", "caching"),
    )
    context.check_stop()
    _record_problems(dataset, result)
    context.stage_end("caching", "caching", 1.0, _cache_words(result))
    context.timings["caching_seconds"] = time.monotonic() - started
    augment = effective_augment(config.augment)
    copies = _copy_items(dataset.usable(), augment)
    wanted = [item for group in copies.values() for item in group]
    if not wanted:
        context.stage_skip("augmenting", "augmenting", 1.0, "no augmented copies asked for")
    augmented = cache_bottlenecks(
        wanted,
        backbone,
        bottleneck_dir,
        augment=augment,
        progress=context.stage_progress("augmenting", "augmenting") if wanted else None,
        should_stop=context.stop.is_set,
        preparing=context.uncounted_stage("preparing", "augmenting"),
    )
    context.check_stop()
    if wanted:
        context.stage_end("augmenting", "augmenting", 1.0, _cache_words(augmented))
    if context.board.stages["preparing"].state == PENDING:  # every vector came from the cache
        context.stage_skip("preparing", "augmenting", 1.0, "not needed: every bottleneck was in the cache")
    context.timings["augmenting_seconds"] = time.monotonic() - started - context.timings["caching_seconds"]
    vectors = {**result.vectors, **augmented.vectors}
    copies = {path: [item for item in group if item in vectors] for path, group in copies.items()}
    summary = {"originals": result.summary(), "augmented": augmented.summary(), "bottleneck_dir": bottleneck_dir}
    return Features(vectors, copies, summary)


def _cache_words(result: CacheResult) -> str:
    """What caching did, in words: "all 397 reused from the cache" rather than a bar at 0/0."""
    if result.computed == 0 and not result.problems:
        return f"all {result.reused} reused from the cache"
    problems = f", {len(result.problems)} unreadable" if result.problems else ""
    return f"{result.computed} computed, {result.reused} reused{problems}"


def _record_problems(dataset: Dataset, result: CacheResult) -> None:
    """Images that failed to decode leave training, as reported problems, and the dataset is rechecked."""
    if result.problems:
        dataset.mark_problems({item.path: message for item, message in result.problems.items()})
        require_trainable(dataset)


def _copy_items(usable: pd.DataFrame, augment) -> dict[str, list[ExtractItem]]:
    train = usable[usable["split"] == "train"]
    per_class = copies_per_class(train["label"].value_counts().to_dict(), augment)
    return {
        row.path: [ExtractItem(row.path, row.sha256, copy) for copy in range(1, per_class[row.label] + 1)]
        for row in train.itertuples()
        if per_class[row.label]
    }


def _split_items(
    dataset: Dataset, features: Features, labels: list[str], split: str, with_copies: bool = False
) -> tuple[list[ExtractItem], list[int], list[str]]:
    """The items (images, and for training their augmented copies) of one split, with label indices."""
    index = {label: i for i, label in enumerate(labels)}
    rows = dataset.usable()
    items, targets, files = [], [], []
    for row in rows[rows["split"] == split].itertuples():
        for item in [ExtractItem(row.path, row.sha256)] + (features.copies.get(row.path, []) if with_copies else []):
            items.append(item)
            targets.append(index[row.label])
            files.append(row.file)
    return items, targets, files


def _split_arrays(
    dataset: Dataset, features: Features, labels: list[str], split: str, with_copies: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    items, targets, files = _split_items(dataset, features, labels, split, with_copies)
    dim = next(iter(features.vectors.values())).shape[0] if features.vectors else 0
    vectors = np.stack([features.vectors[item] for item in items]) if items else np.zeros((0, dim), np.float32)
    return vectors, np.array(targets, dtype=int), files


def _train(context: RunContext, dataset: Dataset, features: Features, labels: list[str]):
    from pipeline.train import HeadData, schedule, train_head

    config = context.config
    x_train, y_train, _ = _split_arrays(dataset, features, labels, "train", with_copies=True)
    x_val, y_val, _ = _split_arrays(dataset, features, labels, "validation")
    data = HeadData(x_train, y_train, x_val, y_val, len(labels))
    interval, rounds = schedule(config.train, len(x_train))
    total_steps = interval * rounds
    started = time.monotonic()

    def on_metrics(row: dict) -> None:
        context.run.append_metrics(row)
        accuracy = row["val_accuracy"] if row["val_accuracy"] is not None else row["train_accuracy"]
        rate = row["step"] / max(row["elapsed_seconds"], 1e-9)
        eta = (total_steps - row["step"]) / rate if rate > 0 else None
        context.board.advance("training", row["step"], total_steps, rate, eta, f"loss {row['train_loss']:.3f}", "steps")
        context.status(
            "training",
            row["step"] / total_steps,
            f"training step {row['step']}/{total_steps}, loss {row['train_loss']:.3f}, accuracy {accuracy:.1%}",
            step_number=row["step"],
            total_steps=total_steps,
        )
        if context.echo:
            context.echo(
                Progress(
                    stage_title("training"),
                    row["step"],
                    total_steps,
                    rate,
                    eta,
                    f"loss {row['train_loss']:.3f} val_acc {row['val_accuracy']}",
                )
            )

    context.board.begin("training", total_steps, "steps", f"{len(x_train)} examples")
    context.status("training", 0.0, f"training the head on {len(x_train)} examples")
    head, rows = train_head(data, config.train, on_metrics, context.stop.is_set)
    context.stage_end("training", "training", 1.0)
    context.timings["training_seconds"] = time.monotonic() - started
    return head, data, rows


def _fine_tune(context: RunContext, dataset: Dataset, features: Features, labels: list[str], backbone, head):
    from pipeline.finetune import fine_tune

    config = context.config
    train_items, train_targets, _ = _split_items(dataset, features, labels, "train", with_copies=True)
    val_items, val_targets, _ = _split_items(dataset, features, labels, "validation")
    epochs = config.train.fine_tune_epochs
    started = time.monotonic()
    head_steps = int((context.run.read_metrics() or [{"step": 0}])[-1]["step"] or 0)

    def on_metrics(row: dict) -> None:  # fine-tuning's rows continue the head's step count
        context.run.append_metrics({**row, "step": head_steps + row["step"]})
        elapsed = time.monotonic() - started
        rate = row["epoch"] / max(elapsed, 1e-9)
        context.board.advance("fine-tuning", row["epoch"], epochs, rate, (epochs - row["epoch"]) / rate, unit="epochs")
        context.status(
            "training",
            0.9 + 0.1 * row["epoch"] / epochs,
            f"fine-tuning (slow) epoch {row['epoch']}/{epochs}, loss {row['train_loss']:.3f}",
        )

    context.board.begin("fine-tuning", epochs, "epochs", f"top {config.train.fine_tune_layers} backbone layers")
    context.status(
        "training",
        0.9,
        f"fine-tuning the top {config.train.fine_tune_layers} backbone layers "
        f"on {len(train_items)} images (slow on a CPU)",
    )
    classifier = fine_tune(
        backbone,
        as_keras_head(head, config.train),
        (train_items, train_targets),
        (val_items, val_targets),
        len(labels),
        config.train,
        effective_augment(config.augment),
        on_metrics,
        context.stop.is_set,
    )
    context.stage_end("fine-tuning", "training", 1.0)
    context.timings["fine_tune_seconds"] = time.monotonic() - started
    return classifier


def _write_summaries(config: RunConfig, run: RunDir, rows: list[dict]) -> None:
    """TensorBoard scalars `loss` and `accuracy` in two runs, train/ and validation/, so their curves overlay
    under one tag; written with core TF ops (no tensorboard package) once the report is out, since the head
    trains in a second or two and TensorFlow's import would otherwise come first."""
    import tensorflow as tf
    from tensorflow.core.framework.summary_pb2 import SummaryMetadata

    root = Path(config.output.summaries_dir or run.logs_dir)
    metadata = SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    for split, prefix in (("train", "train_"), ("validation", "val_")):
        writer = tf.summary.create_file_writer(str(root / split))
        with writer.as_default():
            for row in rows:
                for name in ("loss", "accuracy"):
                    if row[prefix + name] is not None:
                        tf.summary.write(
                            name, tf.constant(row[prefix + name], tf.float32), step=int(row["step"]), metadata=metadata
                        )
        writer.flush()
        writer.close()


def _evaluation_split(dataset: Dataset) -> str:
    """The test split, or validation when the dataset has no test images (said in the report)."""
    usable = dataset.usable()
    return "test" if (usable["split"] == "test").any() else "validation"


def _evaluate(
    dataset: Dataset,
    features: Features,
    head,
    labels: list[str],
    classifier,
    input_size: int,
) -> Report:
    split = _evaluation_split(dataset)
    if classifier is not None:  # fine-tuned: the cached features are no longer the model's
        from pipeline.finetune import classifier_probabilities

        items, targets, files = _split_items(dataset, features, labels, split)
        probabilities, y = classifier_probabilities(classifier, items, input_size), np.array(targets, dtype=int)
    else:
        x, y, files = _split_arrays(dataset, features, labels, split)
        probabilities = head_probabilities(head, x) if len(x) else np.zeros((0, len(labels)))
    report = build_report(y, probabilities, labels, files)
    report.extra["evaluated_on"] = split
    return report


@dataclass
class ExportData:
    """The images exports are checked on, wherever they live (the local engine's and the Ray engine's runs)."""

    evaluated: pd.DataFrame  # the evaluation split's rows (path, label): parity sample, quantized variants' scores
    training: pd.DataFrame  # the training split's rows (path): full-int8 calibration
    read: Callable[[str], bytes]  # a file's bytes by its path (a local file, or one behind a URI)
    # The head's input for some rows as training saw it (the bottleneck cache); None for a fine-tuned
    # model, whose features are no longer the cache's.
    cached_vectors: Callable[[pd.DataFrame], np.ndarray] | None = None


def _export_data(dataset: Dataset, features: Features, classifier) -> ExportData:
    from pipeline.images import read_bytes

    usable = dataset.usable()

    def cached_vectors(rows: pd.DataFrame) -> np.ndarray:
        return np.stack([features.vectors[ExtractItem(row.path, row.sha256)] for row in rows.itertuples()])

    return ExportData(
        usable[usable["split"] == _evaluation_split(dataset)],
        usable[usable["split"] == "train"],
        read_bytes,
        None if classifier is not None else cached_vectors,
    )


class Exporter:
    """Builds the requested formats one at a time, each written, reloaded and checked before it is ready.

    status.json says where each format is (`exports`: pending, building, ready, failed, cancelled),
    so predict and the app use only what a run finished and checked. Cancel is honoured between
    formats and after each is written: a format that was cancelled or failed is removed, never
    marked ready.
    """

    def __init__(
        self, context: RunContext, backbone, head, labels: list[str], data: ExportData, classifier=None
    ) -> None:
        from pipeline.export import ExportCheck, build_classifier, eager_probabilities, originals_for_check

        self.context, self.labels, self.input_size = context, labels, backbone.input_size
        self.evaluated, self.training, self.read = data.evaluated, data.training, data.read
        self.variants: dict[str, dict] = {}  # quantized TFLite files: size and test accuracy
        self.unavailable: dict[str, str] = {}  # optional formats that could not be made here, and why
        self.evaluated_images: np.ndarray | None = None
        sample = self.evaluated.head(PARITY_IMAGES)
        raw = [self.read(path) for path in sample["path"]]
        images = np.stack([bytes_for_model(data, backbone.input_size) for data in raw])
        self.classifier = classifier or build_classifier(
            backbone.model, as_keras_head(head, context.config.train), backbone.input_size
        )
        expected = eager_probabilities(self.classifier, images)
        originals = (
            originals_for_check(self.classifier, raw) if "keras" in context.config.output.export_formats else ([], None)
        )
        self.check = ExportCheck(images, raw, expected, *originals)
        self.parity: dict[str, float] = {}
        if data.cached_vectors is not None:
            # The exported model must also agree with what evaluation measured: the head on cached bottlenecks.
            cached = data.cached_vectors(sample)
            self.parity["cached_bottlenecks"] = float(np.abs(head_probabilities(head, cached) - expected).max())

    def plan(self) -> tuple[list[str], list[str]]:
        """(quick formats, heavier formats) of those requested, in build order; all start pending."""
        from pipeline.export import (
            FORMATS,
            PREPROCESSING_FILE,
            preprocessing_description,
            remove_export,
            require_parity,
            write_labels,
        )
        from pipeline.files import write_bytes_atomic

        require_parity(self.parity)
        wanted = self.context.config.output.export_formats
        unknown = sorted(set(wanted) - set(FORMATS))
        if unknown:
            raise RetrainError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
        write_labels(self.labels, self.context.run.path / "labels.txt")
        description = preprocessing_description(self.labels, self.input_size)
        write_bytes_atomic(
            self.context.run.path / PREPROCESSING_FILE,
            (json.dumps(description, indent=1, ensure_ascii=False) + "\n").encode(),
        )
        if self.context.config.output.output_labels:
            from pipeline.files import looks_like_labels_file, refuse_to_replace

            refuse_to_replace(self.context.config.output.output_labels, looks_like_labels_file, "a labels file")
            write_labels(self.labels, self.context.config.output.output_labels)
        ordered = [name for name in FORMATS if name in wanted]
        for name in FORMATS:  # an earlier run's files in this folder never pass for this run's
            remove_export(name, self.context.run.path)
        self.context.exports.update({name: "pending" for name in ordered})
        return [name for name in ordered if name == "keras"], [name for name in ordered if name != "keras"]

    def build(self, name: str) -> None:
        """Write, reload and check one format; mark it ready only when it passed and no cancel came."""
        from pipeline.export import OPTIONAL, check_export, remove_export, require_parity, write_export

        context = self.context
        context.check_stop()
        started = time.monotonic()
        done = sum(state == "ready" for state in context.exports.values())
        context.exports[name] = "building"
        context.stage_begin(EXPORT_PREFIX + name, "exporting", done / len(context.exports), "writing and checking")
        try:
            representative = self._images(self.training, REPRESENTATIVE_IMAGES) if name == "tflite_int8" else None
            write_export(name, self.classifier, self.labels, context.run.path, representative)
            context.check_stop()  # a cancel that came while writing: never offer what was written
            differences = check_export(name, context.run.path, self.check)
            require_parity(differences)
            context.check_stop()
        except ExportUnavailable as why:
            remove_export(name, context.run.path)
            if name not in OPTIONAL:
                raise
            self._skip(name, str(why))
            return
        except BaseException:
            remove_export(name, context.run.path)
            raise
        self.parity.update(differences)
        if name.startswith("tflite_"):
            self.variants[name] = self._variant_scores(name)
        self._copy_to_user_folders(name)
        context.exports[name] = "ready"
        context.timings[f"export_{name}_seconds"] = time.monotonic() - started
        done += 1
        context.stage_end(EXPORT_PREFIX + name, "exporting", done / len(context.exports), f"{name} ready")

    def _skip(self, name: str, why: str) -> None:
        """An optional format that cannot be made here: said in one line, and the run goes on without it."""
        self.context.exports[name] = "unavailable"
        self.unavailable[name] = why  # report.json keeps why; the CLI prints it once the run is done
        done = sum(state == "ready" for state in self.context.exports.values())
        self.context.stage_skip(
            EXPORT_PREFIX + name, "exporting", done / len(self.context.exports), f"unavailable: {why}"
        )

    def _images(self, rows, limit: int | None = None) -> np.ndarray:
        """Prepared images of some dataset rows (evenly spaced when limited)."""
        if limit and len(rows) > limit:
            rows = rows.iloc[np.linspace(0, len(rows) - 1, limit).astype(int)]
        return np.stack([bytes_for_model(self.read(path), self.input_size) for path in rows["path"]])

    def _variant_scores(self, name: str) -> dict:
        """A quantized variant's file size and accuracy on the whole evaluation split, so a user picks knowingly."""
        from pipeline.export import FILES, tflite_probabilities

        path = self.context.run.path / FILES[name]
        index = {label: i for i, label in enumerate(self.labels)}
        targets = np.array([index[label] for label in self.evaluated["label"]])
        if self.evaluated_images is None:  # decoded once for all the variants
            self.evaluated_images = self._images(self.evaluated)
        predicted = tflite_probabilities(path, self.evaluated_images).argmax(1) if len(targets) else targets
        accuracy = float((predicted == targets).mean()) if len(targets) else 0.0
        return {
            "file": FILES[name],
            "size_mb": round(path.stat().st_size / 1e6, 2),
            "test_accuracy": round(accuracy, 4),
        }

    def _copy_to_user_folders(self, name: str) -> None:
        if name == "saved_model" and self.context.config.output.saved_model_dir:
            _copy_tree(self.context.run.path / "saved_model" / "1", Path(self.context.config.output.saved_model_dir))

    def rounded_parity(self) -> dict[str, float]:
        return {k: float(f"{v:.3g}") for k, v in self.parity.items()}


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a SavedModel to the user's folder (checked at the start to be new, empty, or a SavedModel)."""
    import shutil

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def _report_extras(context: RunContext, dataset: Dataset, data, backbone) -> dict:
    train_counts = pd.Series(data.y_train).value_counts().sort_index()
    labels = dataset.classes
    return {
        "architecture": context.config.train.architecture,
        "backbone_identity": backbone.identity,
        "train_class_counts": {labels[i]: int(n) for i, n in train_counts.items()},
        "validation_images": int(len(data.x_val)),
        "problems": dataset.problems,
        "warnings": dataset.warnings,
    }
