"""What `--engine ray` runs for each CLI command: build the table as today, then hand the heavy part to Ray."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import RunConfig
from pipeline.evaluate import build_report
from pipeline.progress import print_progress


@dataclass(frozen=True)
class RayOptions:
    """The Ray engine's own settings (flags --ray_address, --ray_actors, --ray_batch_size)."""

    address: str | None = None  # None: start a local Ray instance; "auto" or "ray://host:port": that cluster
    actors: int | None = None  # backbone actors; None sizes the pool from the cluster's resources
    batch_size: int = 128  # images per actor call and per Parquet shard
    object_store_mb: int | None = None  # a local instance's object store (None: Ray's default)


def dataset_table(config: RunConfig) -> tuple[pd.DataFrame, str, list[str], list[dict]]:
    """(table of path, file, label, split, sha256; image root; classes; problems) for a folder or a URI."""
    from pipeline.dataset import load_dataset
    from pipeline.scale.remote_dataset import load_remote_dataset
    from pipeline.scale.storage import is_uri

    image_dir = config.dataset.image_dir or ""
    if is_uri(image_dir):
        return load_remote_dataset(image_dir, config.dataset.validation_percentage,
                                   config.dataset.testing_percentage)
    dataset = load_dataset(config.dataset, check_images=False, progress=print_progress)
    usable = dataset.usable()[["path", "file", "label", "split", "sha256"]].reset_index(drop=True)
    return usable, image_dir, dataset.classes, dataset.problems


def extract_with_ray(config: RunConfig, options: RayOptions):
    """Bottlenecks of every image of the configured dataset into Parquet shards; (summary, table, classes)."""
    from pipeline.backbones import load_backbone
    from pipeline.backbones.runtime import feature_identity
    from pipeline.scale.cluster import ray_session, require_ray
    from pipeline.scale.extract import ExtractJob, extract_to_shards

    require_ray()  # before any work: without the extra, say how to install it and nothing else
    table, image_root, classes, problems = dataset_table(config)
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer,  # identity only: lazy
                             config.train.mirror_view)
    bottleneck_dir = _bottleneck_dir(config)
    job = ExtractJob(config.train.architecture, config.train.bottleneck_layer, bottleneck_dir,
                     feature_identity(backbone), backbone.input_size, options.batch_size, options.actors,
                     config.train.mirror_view)
    with ray_session(options.address, options.object_store_mb):
        summary = extract_to_shards(table, image_root, job, progress=print_progress)
    summary.feature_dim = backbone.feature_dim
    files = dict(zip(table["path"], table["file"], strict=True))  # problems named as the dataset names files
    summary.problems = {files.get(path, path): why for path, why in summary.problems.items()}
    summary.problems.update({problem["file"]: problem["problem"] for problem in problems})
    return summary, table, classes


def cache_command(config: RunConfig, options: RayOptions) -> None:
    """`cache --engine ray`: problems one line each on stderr, then the summary as JSON."""
    summary, _, _ = extract_with_ray(config, options)
    for path, problem in sorted(summary.problems.items()):
        print(f"problem: {path}: {problem}", file=sys.stderr)
    print(json.dumps(summary.to_dict()))


def predict_command(model_dir: str, image_dir: str, output: str | None, top_k: int, options: RayOptions) -> None:
    """`predict --engine ray --image_dir DIR|URI --output FILE.csv|.parquet`: one summary line of JSON."""
    from pipeline.errors import RetrainError
    from pipeline.scale.batch_predict import predict_folder, write_predictions
    from pipeline.scale.cluster import ray_session, require_ray

    require_ray()
    if not image_dir or not output:
        raise RetrainError("--engine ray predicts a whole folder: give --image_dir DIR (or a URI) and "
                           "--output FILE.csv or FILE.parquet")
    if not output.endswith((".csv", ".parquet")):
        raise RetrainError(f"--output {output}: name a .csv or .parquet file")
    with ray_session(options.address, options.object_store_mb):
        results = predict_folder(model_dir, image_dir, top_k, options.actors)
    write_predictions(results, output, top_k, image_dir)
    print(json.dumps({"images": len(results), "errors": sum("error" in r for r in results), "output": output}))


def train_command(config: RunConfig, options: RayOptions) -> None:
    """`train --engine ray`: extract on Ray into shards, then train, evaluate and export from the shards.

    The head streams from the shards (`stream`), so the set never has to fit in memory; the run directory
    gets config.json, metrics.csv, report.json, model.keras and labels.txt (checked by reloading), which
    `predict` (either engine) uses as it is.
    """
    from pipeline.errors import DatasetError, RetrainError
    from pipeline.runs import RunDir
    from pipeline.scale.stream import predict_from_shards, split_from_shards, train_head_from_shards

    if not config.output.output_dir:
        raise RetrainError("--output_dir is required: the run directory for config, metrics, report and exports")
    config.validate()
    summary, table, classes = extract_with_ray(config, options)
    table = table[table["path"].isin(summary.keys)].assign(key=lambda t: t["path"].map(summary.keys))
    index = {label: i for i, label in enumerate(classes)}
    splits = {name: {key: index[label] for key, label in zip(rows["key"], rows["label"], strict=True)}
              for name, rows in table.groupby("split")}
    trained_classes = {label for label in table[table["split"] == "train"]["label"]}
    if len(trained_classes) < 2:
        raise DatasetError(f"{config.dataset.image_dir}: fewer than two classes have training images with "
                           f"bottlenecks ({sorted(trained_classes)}); see the problems above")
    run = RunDir(config.output.output_dir)
    with run.claim():  # a folder that is not a run of ours is refused untouched; one run at a time
        run.clear_outputs()
        config.save(run.config)
        bottleneck_dir = _bottleneck_dir(config)
        dim = int(summary.feature_dim)
        shard_split = {name: split_from_shards(bottleneck_dir, splits.get(name, {}))
                       for name in ("train", "validation", "test")}
        head, _ = train_head_from_shards(bottleneck_dir, shard_split["train"], shard_split["validation"], dim,
                                         len(classes), config.train, on_metrics=run.append_metrics)
        evaluated_on = "test" if len(shard_split["test"]) else "validation"
        truth, probabilities, keys = predict_from_shards(bottleneck_dir, shard_split[evaluated_on], dim,
                                                         len(classes), head)
        file_of = dict(zip(table["key"], table["file"], strict=False))
        report = build_report(truth, probabilities, classes, [file_of[key] for key in keys])
        report.extra.update({"evaluated_on": evaluated_on, "engine": "ray", "cache": summary.to_dict(),
                             "problems": [{"file": f, "problem": p} for f, p in sorted(summary.problems.items())],
                             "export_parity": _export(config, head, classes, table[table["split"] == evaluated_on],
                                                      run.path)})
        report.save(run.report)
        # What `predict` trusts: the run finished, and its model.keras was reloaded and checked.
        run.write_status("done", 1.0, "", exports={"keras": "ready"})
        print(report.table())
        print(json.dumps({"run_dir": str(run.path), "test_accuracy": report.test_accuracy,
                          "top5_accuracy": report.top5_accuracy, "export_parity": report.extra["export_parity"]}))


def _bottleneck_dir(config: RunConfig) -> str:
    from pipeline.settings import default_bottleneck_dir

    return config.output.bottleneck_dir or str(default_bottleneck_dir())


def _export(config: RunConfig, head, classes: list[str], sample: pd.DataFrame, run_dir) -> dict:
    """model.keras (backbone + head) and labels.txt, reloaded and compared on up to 16 evaluation images."""
    import numpy as np

    from pipeline.backbones import load_backbone
    from pipeline.export import (
        ExportCheck,
        build_classifier,
        check_export,
        eager_probabilities,
        require_parity,
        write_export,
        write_labels,
    )
    from pipeline.images import bytes_for_model
    from pipeline.scale.storage import filesystem_for, read_file_bytes

    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer, config.train.mirror_view)
    filesystem = filesystem_for(str(config.dataset.image_dir))[0]
    images = np.stack([bytes_for_model(read_file_bytes(filesystem, path), backbone.input_size)
                       for path in sample["path"].head(16)])
    classifier = build_classifier(backbone.model, head, backbone.input_size)
    check = ExportCheck(images, [], eager_probabilities(classifier, images))
    write_export("keras", classifier, classes, run_dir)
    write_labels(classes, Path(run_dir) / "labels.txt")
    parity = check_export("keras", run_dir, check)
    require_parity(parity)
    return {name: float(f"{value:.3g}") for name, value in parity.items()}
