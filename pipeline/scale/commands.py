"""What `--engine ray` runs for each CLI command: build the table as today, then hand the heavy part to Ray."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pandas as pd

from pipeline.config import RunConfig
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
    from pipeline.runs import cache_root
    from pipeline.scale.cluster import ray_session
    from pipeline.scale.extract import ExtractJob, extract_to_shards

    table, image_root, classes, problems = dataset_table(config)
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer)  # identity only: lazy
    bottleneck_dir = config.output.bottleneck_dir or str(cache_root() / "bottlenecks")
    job = ExtractJob(config.train.architecture, config.train.bottleneck_layer, bottleneck_dir, backbone.identity,
                     backbone.input_size, options.batch_size, options.actors)
    with ray_session(options.address, options.object_store_mb):
        summary = extract_to_shards(table, image_root, job, progress=print_progress)
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
    from pipeline.scale.cluster import ray_session

    if not image_dir or not output:
        raise RetrainError("--engine ray predicts a whole folder: give --image_dir DIR (or a URI) and "
                           "--output FILE.csv or FILE.parquet")
    if not output.endswith((".csv", ".parquet")):
        raise RetrainError(f"--output {output}: name a .csv or .parquet file")
    with ray_session(options.address, options.object_store_mb):
        results = predict_folder(model_dir, image_dir, top_k, options.actors)
    write_predictions(results, output, top_k, image_dir)
    print(json.dumps({"images": len(results), "errors": sum("error" in r for r in results), "output": output}))
