"""`train --engine ray`: one run start to finish, with extraction on Ray and the head streamed from shards.

The run folder is the local engine's (`pipeline.retrain`): claimed the same way, status.json kept true at
every stage, cancelled the same way (`pipeline.runs.cancel_run`: a cancel file and SIGTERM, polled between
batches), and exported by the same `Exporter`, so every format the local engine writes is written and checked
here too. What differs is where the vectors come from: Parquet shards, never all in memory. Two local-engine
features are refused up front rather than silently skipped: augmented copies and fine-tuning (both need the
images again at training time, which is what this engine exists to avoid).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from pipeline.config import RunConfig
from pipeline.errors import DatasetError, RetrainError
from pipeline.evaluate import Report, build_report
from pipeline.files import printable
from pipeline.progress import Progress, print_progress
from pipeline.scale.commands import bottleneck_dir_of, extract_with_ray
from pipeline.stage_progress import SKIPPED


def refuse_local_only_settings(config: RunConfig) -> None:
    """One line naming a setting `--engine ray` cannot honour, and what to use instead."""
    augment = config.augment
    if augment.class_size > 0 or (augment.augment_copies > 0 and augment.is_active()):
        raise RetrainError(
            "--engine ray trains on each image's bottleneck once: augmented copies (--augment_copies, "
            "--class_size, or the distortion flags) need --engine local, or leave them out"
        )
    if config.train.fine_tune_layers > 0:
        raise RetrainError(
            "--engine ray trains the head on cached bottlenecks: fine-tuning (--fine_tune_layers) "
            "reads every image at each epoch; use --engine local for it, or leave it out"
        )


RAY_WORKER_STAGES = ("dataset", "backbone", "preparing")  # done by the Ray job, within its "caching" stage


def train_run(config: RunConfig, options) -> Report:
    """Claim the run folder, extract on Ray, train from the shards, evaluate, export; returns the report."""
    from pipeline.retrain import RunContext, StopFlag, refuse_foreign_folder, write_done, write_ending
    from pipeline.runs import RunDir, process_started
    from pipeline.scale.cluster import require_ray
    from pipeline.stage_progress import StageBoard, run_stage_keys

    refuse_local_only_settings(config)
    if not config.output.output_dir:
        raise RetrainError("--output_dir is required: the run directory for config, metrics, report and exports")
    config.validate()
    require_ray()  # before the folder is touched: without the extra, one line saying how to install it
    refuse_foreign_folder(config.output.saved_model_dir)
    run = RunDir(config.output.output_dir)
    with run.claim(config.to_dict()):  # a folder that is not a run of ours is refused untouched
        run.cancel_request.unlink(missing_ok=True)  # a new run: an old cancel does not carry over
        run.clear_outputs()
        config.save(run.config)
        run.write_status("caching", 0.0, "starting Ray", pid=os.getpid(), pid_started=process_started(os.getpid()))
        with StopFlag(run.cancel_request) as stop:
            # The Ray job lists the photos and each worker loads (and prepares) the backbone inside "caching": the
            # local engine's dataset/backbone/preparing stages would wait on the board for the whole run.
            keys = [
                key
                for key in run_stage_keys(config.output.export_formats, augmenting=False, fine_tuning=False)
                if key not in RAY_WORKER_STAGES
            ]
            context = RunContext(config, run, stop, print_progress, board=StageBoard(keys))
            try:
                report = _stages(context, options)
            except Exception as error:
                write_ending(run, context, error)
                raise
        write_done(run, context, report)
        return report


def _stages(context, options) -> Report:
    from pipeline.retrain import StopFlag
    from pipeline.scale.cluster import ray_session

    config, run, started = context.config, context.run, time.monotonic()
    # ray.init puts in a SIGTERM handler of its own (exit at once), which outlives the session: ours go
    # back in after it, so a cancel stops at the next batch with every shard written so far kept.
    with ray_session(options.address, options.object_store_mb), StopFlag(run.cancel_request, context.stop.event):
        context.check_stop()
        progress = context.stage_progress("caching", "caching")
        summary, table, classes = extract_with_ray(config, options, progress=progress, should_stop=context.stop.is_set)
    # Skipped already when every photo was in the shards, or when none was usable: then its problems still show.
    if context.board.stages["caching"].state != SKIPPED or summary.problems:
        context.stage_end("caching", "caching", 1.0, _cache_words(summary))
    context.timings["caching_seconds"] = time.monotonic() - started
    with StopFlag(run.cancel_request, context.stop.event):
        context.check_stop()
        return _train_evaluate_export(context, summary, table, classes, started)


def _cache_words(summary) -> str:
    """ "20 computed, 4 reused, 12 problems": what the caching stage did, its unusable files counted."""
    words = f"{summary.computed} computed, {summary.reused} reused"
    return words + (f", {len(summary.problems)} with problems" if summary.problems else "")


def _train_evaluate_export(context, summary, table: pd.DataFrame, classes: list[str], started: float) -> Report:
    """Everything after extraction: the head from the shards, its report, and the checked exports."""
    from pipeline.retrain import save_report

    config = context.config
    table = table[table["path"].isin(summary.keys)].assign(key=lambda t: t["path"].map(summary.keys))
    shard_splits, counts = _splits(config, bottleneck_dir_of(config), table, classes, summary.problems)
    head = _train(context, shard_splits, int(summary.feature_dim), len(classes))
    report = _evaluate(context, shard_splits, table, classes, head, int(summary.feature_dim))
    report.extra.update(
        {
            "engine": "ray",
            "cache": summary.to_dict(),
            "architecture": config.train.architecture,
            "train_class_counts": counts,
            "validation_images": len(shard_splits["validation"]),
            "problems": [{"file": f, "problem": p} for f, p in sorted(summary.problems.items())],
        }
    )
    _export(context, head, classes, table, report, summary)
    context.timings["total_seconds"] = time.monotonic() - started
    save_report(context, report)
    return report


def _splits(config: RunConfig, bottleneck_dir: str, table: pd.DataFrame, classes: list[str], problems: dict):
    """Each split's ShardSplit (key → label index, the shards holding them) and the training class counts."""
    from pipeline.scale.stream import split_from_shards

    index = {label: i for i, label in enumerate(classes)}
    labels = {
        name: {key: index[label] for key, label in zip(rows["key"], rows["label"], strict=True)}
        for name, rows in table.groupby("split")
    }
    train = table[table["split"] == "train"]
    if train["label"].nunique() < 2:
        raise DatasetError(
            f"{config.dataset.image_dir}: fewer than two classes have training images with "
            f"bottlenecks ({sorted(set(train['label']))}){_problems_words(problems)}"
        )
    splits = {name: split_from_shards(bottleneck_dir, labels.get(name, {})) for name in ("train", "validation", "test")}
    return splits, {label: int(count) for label, count in train["label"].value_counts().sort_index().items()}


def _problems_words(problems: dict[str, str]) -> str:
    """The files that could not be used, for a message that refuses the run: the count and the first one, since the
    Ray engine prints no problem lines of its own."""
    if not problems:
        return ""
    file, why = sorted(problems.items())[0]
    return f"; {len(problems)} file(s) could not be used, e.g. {printable(str(file))}: {printable(why)}"


def _train(context, splits: dict, dim: int, num_classes: int):
    from pipeline.scale.stream import train_head_from_shards
    from pipeline.train import schedule

    config, started = context.config, time.monotonic()
    interval, rounds = schedule(config.train, len(splits["train"]))
    total = interval * rounds

    def on_metrics(row: dict) -> None:
        context.run.append_metrics(row)
        rate = row["step"] / max(row["elapsed_seconds"], 1e-9)
        eta = (total - row["step"]) / rate if rate > 0 else None  # as the local engine: a row at step 0 has no rate
        context.board.advance("training", row["step"], total, rate, eta, unit="steps")
        context.status(
            "training",
            row["step"] / total,
            f"training step {row['step']}/{total}, loss {row['train_loss']:.3f}",
            step_number=row["step"],
            total_steps=total,
        )
        print_progress(
            Progress(
                "training",
                row["step"],
                total,
                row["step"] / max(row["elapsed_seconds"], 1e-9),
                None,
                f"loss {row['train_loss']:.3f} val_acc {row['val_accuracy']}",
            )
        )

    context.board.begin("training", total, "steps", f"{len(splits['train'])} examples streamed from shards")
    context.status("training", 0.0, f"training the head on {len(splits['train'])} bottlenecks streamed from shards")
    head, _ = train_head_from_shards(
        bottleneck_dir_of(config),
        splits["train"],
        splits["validation"],
        dim,
        num_classes,
        config.train,
        on_metrics,
        context.stop.is_set,
    )
    context.stage_end("training", "training", 1.0)
    context.timings["training_seconds"] = time.monotonic() - started
    return head


def _evaluate(context, splits: dict, table: pd.DataFrame, classes: list[str], head, dim: int) -> Report:
    from pipeline.scale.stream import predict_from_shards

    context.stage_begin("evaluating", "evaluating", 0.0, "on the test images")
    evaluated_on = "test" if len(splits["test"]) else "validation"
    truth, probabilities, keys = predict_from_shards(
        bottleneck_dir_of(context.config), splits[evaluated_on], dim, len(classes), head
    )
    file_of = dict(zip(table["key"], table["file"], strict=False))
    report = build_report(truth, probabilities, classes, [file_of[key] for key in keys])
    report.extra["evaluated_on"] = evaluated_on
    context.stage_end("evaluating", "evaluating", 1.0, f"{len(keys)} images")
    context.check_stop()
    return report


def _export(context, head, classes: list[str], table: pd.DataFrame, report: Report, summary) -> None:
    """Every requested format through the local engine's Exporter: written, reloaded, checked, then offered."""
    from pipeline.backbones import load_backbone
    from pipeline.retrain import ExportData, Exporter
    from pipeline.scale.shards import read_vectors
    from pipeline.scale.storage import filesystem_for, is_uri, read_file_bytes

    config, started = context.config, time.monotonic()
    context.status("exporting", 0.0, "loading the backbone to export the model")
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer, config.train.mirror_view)
    image_dir = str(config.dataset.image_dir)
    if is_uri(image_dir):
        filesystem = filesystem_for(image_dir)[0]

        def read(path: str) -> bytes:
            return read_file_bytes(filesystem, path)
    else:
        from pipeline.images import read_bytes as read

    def cached_vectors(rows: pd.DataFrame) -> np.ndarray:
        found = read_vectors(bottleneck_dir_of(config), list(rows["key"]))
        return np.stack([found[key] for key in rows["key"]])

    evaluated = table[table["split"] == report.extra["evaluated_on"]]
    data = ExportData(evaluated, table[table["split"] == "train"], read, cached_vectors)
    exporter = Exporter(context, backbone, head, classes, data)
    quick, rest = exporter.plan()
    for name in quick:
        exporter.build(name)
    report.extra.update({"input_size": backbone.input_size, "export_parity": exporter.rounded_parity()})
    report.save(context.run.report)  # the report is there as soon as the model is
    for name in rest:
        exporter.build(name)
        report.extra["export_parity"] = exporter.rounded_parity()
        if exporter.variants:
            report.extra["tflite_variants"] = exporter.variants
    context.timings["export_seconds"] = time.monotonic() - started
