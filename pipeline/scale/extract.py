"""The Ray Data extraction job: read+decode tasks → a pool of backbone actors → Parquet shards.

Reading and decoding are stateless, so they are Ray tasks that scale with the cluster's CPUs; the
backbone is expensive to load, so it lives in actors that each load it once and then take batch after
batch. Each actor call writes its batch as one shard before it returns, so what is on storage is
always a set of whole shards, and a killed worker (Ray restarts it and retries the batch) or a killed
job loses only the batches in flight. A rerun skips every key already in a shard.

The vectors are the local engine's: the same decode (`pipeline.images.bytes_for_model`), the same cache
key (`pipeline.bottlenecks.entry_key`) and the same forward function (`pipeline.bottlenecks.compiled_forward`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.bottlenecks import ExtractItem, entry_key
from pipeline.errors import ImageProblem, RunCancelled
from pipeline.progress import ProgressCallback, ProgressMeter
from pipeline.scale.cluster import PoolPlan, cluster_plan
from pipeline.scale.shards import scan_shards, write_shard
from pipeline.scale.storage import filesystem_for

FORWARD_CHUNK = 32  # images per forward call inside an actor: the local engine's batch size


@dataclass(frozen=True)
class ExtractJob:
    """What to extract with, and where the shards go."""

    architecture: str  # a backbone name or a .keras path every worker can read
    bottleneck_layer: str | None
    bottleneck_dir: str  # local folder or URI; shards go to its parquet/ folder
    identity: str  # the backbone's identity and runtime (`feature_identity`), part of every key
    input_size: int
    batch_size: int = 128  # images per actor call, and so per shard
    actors: int | None = None  # None: sized from the cluster's resources
    mirror_view: bool = False  # features averaged with the mirror image's, as --mirror_view


@dataclass
class ExtractSummary:
    images: int
    computed: int = 0
    reused: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # path → why it could not be used
    keys: dict[str, str] = field(default_factory=dict)  # path → key, for every image that has a vector
    seconds: float = 0.0
    actors: int = 0
    nodes: int = 0  # Ray nodes whose actors computed vectors (a multi-node job shows it ran on them)
    damaged_shards: int = 0
    feature_dim: int = 0  # length of one vector (set by the caller, which has the backbone)
    steady_images_per_second: float = 0.0  # after the first batch: the pool's rate without its start-up

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "computed": self.computed,
            "reused": self.reused,
            "problems": len(self.problems),
            "damaged_shards": self.damaged_shards,
            "actors": self.actors,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.computed / self.seconds, 2) if self.seconds > 0 else 0.0,
            "steady_images_per_second": round(self.steady_images_per_second, 2),
        }


def extract_to_shards(
    table: pd.DataFrame,
    image_root: str,
    job: ExtractJob,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExtractSummary:
    """Have a shard entry for every image of `table` (columns path, and sha256 when known, else "").

    Must run inside `cluster.ray_session()`. Bad images become `problems`, never a failed job. `should_stop`
    is polled as each batch comes back; when it says stop, RunCancelled ends the job (its shards are kept).
    """

    started = time.monotonic()
    scan = scan_shards(job.bottleneck_dir)
    done = scan.keys
    summary = ExtractSummary(images=len(table), damaged_shards=len(scan.damaged))
    known = table[table["sha256"] != ""]
    for path, sha in zip(known["path"], known["sha256"], strict=True):
        key = entry_key(ExtractItem(path, sha), job.identity, None)
        if key in done:
            summary.keys[path] = key
    summary.reused = len(summary.keys)
    todo = table[~table["path"].isin(summary.keys)]
    todo = todo.drop_duplicates("sha256", keep="first") if (todo["sha256"] != "").all() else todo
    meter = ProgressMeter("caching", len(todo), progress)
    meter.report()
    if len(todo):
        plan = cluster_plan(job.actors)
        summary.actors = plan.actors
        unknown_done = done if (todo["sha256"] == "").any() else set()
        finished: dict[str, list[float]] = {}  # actor → when it finished each image's batch (its own clock)
        nodes: set[str] = set()
        for batch in _pipeline(todo, image_root, job, plan, unknown_done).iter_batches(
            batch_size=None, batch_format="pandas"
        ):
            for path, key, problem in zip(batch["path"], batch["key"], batch["problem"], strict=True):
                if problem:
                    summary.problems[path] = problem
                else:
                    summary.keys[path] = key
                    summary.computed += key not in done
                    summary.reused += key in done
            meter.advance(len(batch))
            if should_stop and should_stop():
                raise RunCancelled("cancelled; every shard written so far is kept (a rerun skips their images)")
            for actor, node, when in zip(batch["actor"], batch["node"], batch["finished"], strict=True):
                if when == when:  # not NaN: an image this actor computed
                    finished.setdefault(actor, []).append(when)
                    nodes.add(node)
        summary.steady_images_per_second = pool_steady_rate(finished)
        summary.nodes = len(nodes)
    _spread_to_twins(table, job, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _pipeline(todo: pd.DataFrame, image_root: str, job: ExtractJob, plan: PoolPlan, done: set[str]):
    import ray

    blocks = max(1, min(len(todo) // max(job.batch_size // 4, 1), 10_000))  # several read tasks per actor batch
    filesystem = None if "://" not in image_root else filesystem_for(image_root)[0]
    import pyarrow as pa

    listing = pa.table({"path": todo["path"].astype(str).tolist()})
    step = -(-len(todo) // blocks)
    images = ray.data.from_arrow([listing.slice(start, step) for start in range(0, len(todo), step)])
    decoded = images.map_batches(
        decode_batch,
        batch_format="numpy",
        num_cpus=plan.read_cpus,
        fn_kwargs={"filesystem": filesystem, "size": job.input_size, "identity": job.identity, "done": done},
    )
    return decoded.map_batches(
        BackboneActor,
        batch_format="numpy",
        batch_size=job.batch_size,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor or None,
        fn_constructor_kwargs={
            "architecture": job.architecture,
            "bottleneck_layer": job.bottleneck_layer,
            "bottleneck_dir": job.bottleneck_dir,
            "identity": job.identity,
            "mirror_view": job.mirror_view,
        },
    )


def decode_batch(
    batch: dict[str, np.ndarray], filesystem, size: int, identity: str, done: set[str]
) -> dict[str, np.ndarray]:
    """A Ray task: read each file, key it by its content, decode it for the model (or say why not)."""
    from pipeline.images import bytes_for_model, read_bytes
    from pipeline.scale.storage import read_file_bytes

    paths, keys, problems, images = [], [], [], []
    for path in batch["path"]:
        path = str(path)
        try:
            data = read_file_bytes(filesystem, path) if filesystem is not None else read_bytes(path)
        except ImageProblem as problem:
            paths.append(path), keys.append(""), problems.append(str(problem))
            images.append(np.zeros((size, size, 3), np.uint8))
            continue
        key = entry_key(ExtractItem(path, hashlib.sha256(data).hexdigest()), identity, None)
        if key in done:  # a rerun over a URI: the key is only known once the bytes are read
            paths.append(path), keys.append(key), problems.append("")
            images.append(None)
            continue
        try:
            image, problem = bytes_for_model(data, size), ""
        except ImageProblem as error:
            image, problem = np.zeros((size, size, 3), np.uint8), str(error)
        except Exception as error:  # a decoder bug must not end a job over one photo (as locally)
            image, problem = np.zeros((size, size, 3), np.uint8), f"could not decode ({type(error).__name__}: {error})"
        paths.append(path), keys.append(key), problems.append(problem), images.append(image)
    skip = np.array([image is None for image in images], dtype=bool)
    stacked = (
        np.stack([np.zeros((size, size, 3), np.uint8) if image is None else image for image in images])
        if images
        else np.zeros((0, size, size, 3), np.uint8)
    )
    return {
        "path": np.array(paths, dtype=object),
        "key": np.array(keys, dtype=object),
        "problem": np.array(problems, dtype=object),
        "done": skip,
        "image": stacked,
    }


class BackboneActor:
    """A Ray actor: loads the backbone once, then turns batches of decoded images into one shard each."""

    def __init__(
        self,
        architecture: str,
        bottleneck_layer: str | None,
        bottleneck_dir: str,
        identity: str,
        mirror_view: bool = False,
    ):
        import ray

        from pipeline.backbones import load_backbone
        from pipeline.backbones.runtime import backbone_forward, feature_identity

        self.backbone = load_backbone(architecture, bottleneck_layer, mirror_view)
        # The keys name the runtime the driver expects (LiteRT or TensorFlow): a worker that would compute
        # with the other one (ai-edge-litert missing there) must not file its vectors under those keys.
        if feature_identity(self.backbone) != identity:
            raise RuntimeError(
                f"this worker computes {feature_identity(self.backbone)!r}, the job expects "
                f"{identity!r}: install the same requirements on every node"
            )
        self.forward = backbone_forward(self.backbone)  # the local engine's runtime, so vectors match its cache
        self.bottleneck_dir = bottleneck_dir
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = (batch["problem"] == "") & ~batch["done"].astype(bool)
        images = batch["image"][todo]
        vectors = [
            np.asarray(self.forward(images[start : start + FORWARD_CHUNK]), dtype=np.float32)
            for start in range(0, len(images), FORWARD_CHUNK)
        ]
        if vectors:
            write_shard(self.bottleneck_dir, list(batch["key"][todo]), np.concatenate(vectors))
        finished = np.where(todo, time.time(), np.nan)  # each computed image's batch end, for the steady rate
        return {
            "path": batch["path"],
            "key": batch["key"],
            "problem": batch["problem"],
            "finished": finished,
            "actor": np.full(len(todo), self.name, dtype=object),
            "node": np.full(len(todo), self.node, dtype=object),
        }


def pool_steady_rate(finished: dict[str, list[float]]) -> float:
    """The pool's images per second once every actor is warm: from the moment the last actor to start finished
    its first batch, the images finished after it over the time to the last one.

    Actors stamp their own finishing times: the driver receives outputs in bursts, its clock would not do.
    One window for the whole pool, not a sum of per-actor rates: an actor that ran alone while another was still
    starting had every core to itself, and adding its rate to the other's counted those cores twice (2 actors on
    2 cores once "ran" at 1.3x the local engine that way). When no batch ends after every actor is warm (an actor
    started last and got one batch), the window starts at the first actor's first batch instead.
    """
    firsts = [min(times) for times in finished.values() if times]
    if not firsts:
        return 0.0
    stamps = [when for times in finished.values() for when in times]
    for start in (max(firsts), min(firsts)):
        after = [when for when in stamps if when > start]
        if after and max(after) > start:
            return len(after) / (max(after) - start)
    return 0.0


def _spread_to_twins(table: pd.DataFrame, job: ExtractJob, summary: ExtractSummary) -> None:
    """Files whose content was extracted under another name share its key (and its problem)."""
    by_sha: dict[str, str] = {}
    for path, sha in zip(table["path"], table["sha256"], strict=True):
        if sha and path in summary.keys:
            by_sha[sha] = summary.keys[path]
    problem_by_sha = {
        sha: summary.problems[path]
        for path, sha in zip(table["path"], table["sha256"], strict=True)
        if sha and path in summary.problems
    }
    for path, sha in zip(table["path"], table["sha256"], strict=True):
        if path in summary.keys or path in summary.problems or not sha:
            continue
        if sha in by_sha:
            summary.keys[path] = by_sha[sha]
            summary.reused += 1
        elif sha in problem_by_sha:
            summary.problems[path] = problem_by_sha[sha]
