"""What `--engine ray` runs for each CLI command: build the table as today, then hand the heavy part to Ray."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from pipeline.config import RunConfig
from pipeline.progress import ProgressCallback, print_progress


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
        return load_remote_dataset(image_dir, config.dataset.validation_percentage, config.dataset.testing_percentage)
    dataset = load_dataset(config.dataset, check_images=False, progress=print_progress)
    usable = dataset.usable()[["path", "file", "label", "split", "sha256"]].reset_index(drop=True)
    return usable, image_dir, dataset.classes, dataset.problems


def extract_with_ray(
    config: RunConfig,
    options: RayOptions,
    progress: ProgressCallback | None = print_progress,
    should_stop: Callable[[], bool] | None = None,
):
    """Bottlenecks of every image of the configured dataset into Parquet shards; (summary, table, classes).

    `should_stop` is polled as batches come back: the job then ends with RunCancelled, its shards kept.
    """
    from pipeline.backbones import load_backbone
    from pipeline.backbones.runtime import feature_identity
    from pipeline.scale.cluster import ray_session, require_ray
    from pipeline.scale.extract import ExtractJob, extract_to_shards
    from pipeline.scale.storage import probe

    require_ray()  # before any work: without the extra, say how to install it and nothing else
    table, image_root, classes, problems = dataset_table(config)
    backbone = load_backbone(
        config.train.architecture,
        config.train.bottleneck_layer,  # identity only: lazy
        config.train.mirror_view,
    )
    bottleneck_dir = bottleneck_dir_of(config)
    job = ExtractJob(
        config.train.architecture,
        config.train.bottleneck_layer,
        bottleneck_dir,
        feature_identity(backbone),
        backbone.input_size,
        options.batch_size,
        options.actors,
        config.train.mirror_view,
    )
    probe(bottleneck_dir)  # a wrong bucket or missing credentials: one line now, not after Ray has started
    with ray_session(options.address, options.object_store_mb):
        summary = extract_to_shards(table, image_root, job, progress=progress, should_stop=should_stop)
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
    from pipeline.scale.batch_predict import predict_folder, refuse_foreign_predictions, write_predictions
    from pipeline.scale.cluster import ray_session, require_ray
    from pipeline.scale.storage import is_uri, probe

    require_ray()
    if not image_dir or not output:
        raise RetrainError(
            "--engine ray predicts a whole folder: give --image_dir DIR (or a URI) and "
            "--output FILE.csv or FILE.parquet"
        )
    if not output.endswith((".csv", ".parquet")):
        raise RetrainError(f"--output {output}: name a .csv or .parquet file")
    if is_uri(output):  # the driver writes it: a URI would become a strange local folder
        raise RetrainError(f"--output {output}: give a local file; copy it to object storage afterwards")
    refuse_foreign_predictions(output)  # before any work, and again just before writing
    probe(image_dir)
    with ray_session(options.address, options.object_store_mb):
        results = predict_folder(model_dir, image_dir, top_k, options.actors)
    refuse_foreign_predictions(output)
    write_predictions(results, output, top_k, image_dir)
    print(json.dumps({"images": len(results), "errors": sum("error" in r for r in results), "output": output}))


def train_command(config: RunConfig, options: RayOptions) -> None:
    """`train --engine ray` (`pipeline.scale.run`): the report's table, then one line of JSON."""
    from pipeline.scale.run import train_run

    report = train_run(config, options)
    print(report.table())
    print(
        json.dumps(
            {
                "run_dir": config.output.output_dir,
                "test_accuracy": report.test_accuracy,
                "top5_accuracy": report.top5_accuracy,
                "export_parity": report.extra["export_parity"],
            }
        )
    )


def bottleneck_dir_of(config: RunConfig) -> str:
    """Where the shards go: --bottleneck_dir, else the shared cache's bottleneck folder."""
    from pipeline.settings import default_bottleneck_dir

    return config.output.bottleneck_dir or str(default_bottleneck_dir())
