"""The Ray engine's cost on one machine, and proof that it runs on more than one.

    python bench/scale.py              # 576 flowers photos, efficientnet_lite0 (about a minute on 2 cores)
    python bench/scale.py --images 96  # quicker (fewer batches after the first: noisier)
    python bench/run.py --stages scale --output /tmp/r.md   # the same figures in run.py's last-line JSON

Two ratios of the same jobs, side by side, because no bench-sized job has the proportions of a million images:

- `ray_vs_local_extract` (**steady state**, goal >= 0.8): the local-Ray engine's images per second once running
  over the local engine's. Ray: the pool's images finished once every actor had finished its first batch, over
  the time from then to the last (`steady_images_per_second`; start-up excluded). Until 2026-11-30 it was a sum of
  per-actor rates, which counted the cores twice when one actor ran alone while the other started (1.31 then).
  Local: `cache_bottlenecks` over the same photos into a fresh folder, its forward pass already built and traced.
  This is Ray's per-image overhead, the figure a large job's speed tends to. It flatters Ray on a small set: read
  tasks decode ahead while the actors start, so Ray's timed window is mostly forward passes.
- `ray_vs_local_extract_whole_job` (**whole job, start-up included**): images over the wall time of one whole
  call, each side from a cold start inside a running process. Ray: `extract_to_shards` in a running Ray instance
  (the actors start, import TensorFlow, load and trace the backbone, then read, decode, compute, write shards).
  Local: `cache_bottlenecks` on a freshly loaded backbone (built and traced in the call). It understates Ray for
  a large set, where start-up is amortised. The Ray instance's own start (`ray.init`, once per command) is in
  neither: it is `ray_init_seconds`.

A million-image job sits between the two ratios. The pool with the better steady rate of 1 and 2 actors is the
one both ratios use; each pool's rates are reported too (the curve over 1 and 2 actors). The local engine runs
between the two Ray jobs, so load falls on both sides alike. Then the job runs on a simulated two-node cluster
(`ray.cluster_utils.Cluster`, one CPU per node, two actors that cannot share a node): `two_node_nodes_used` counts
the nodes whose actors computed vectors. Figures: one JSON object on the last line of stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.modes import DEFAULT_BACKBONE, FLOWERS, evenly_spaced  # noqa: E402
from bench.report import load_average  # noqa: E402
from bench.timing import log  # noqa: E402

BATCH = 32  # images per actor call (and shard): the local engine's batch, so steady state starts early
# (photos per job, images per actor call) in each of bench/run.py's modes; smoke's small batches give each
# actor several, so even its figures come from the same code path.
MODES = {"full": (576, BATCH), "quick": (96, BATCH), "smoke": (24, 4)}
TWO_NODE_BATCHES = 8  # batches in the two-node run: a few per actor, so both get work once batches queue
# The figures bench/run.py puts in its last-line JSON (None when the scale extra is not installed), and what each is.
FIGURES = {
    "ray_vs_local_extract": "steady-state images/s of the better Ray pool (1 or 2 actors) / the local engine's, "
    "warm (see bench/scale.py)",
    "ray_vs_local_extract_whole_job": "the same jobs' whole-call images/s, start-up included on both sides "
    "(ray.init excluded)",
    "ray_1_actor_images_per_second": "local Ray instance, 1 backbone actor + read tasks, steady state",
    "ray_2_actors_images_per_second": "local Ray instance, 2 backbone actors (fractional CPUs) + read tasks, "
    "steady state",
    "two_node_nodes_used": "nodes of a simulated 2-node cluster (1 CPU each, an actor loaded on each) whose "
    "actors computed vectors",
}


def image_table(image_dir: Path, count: int):
    """`count` photos spread over the dataset, with their content hashes (as the dataset table has them)."""
    import pandas as pd

    paths = sorted(str(path) for path in image_dir.rglob("*.jpg"))
    chosen = evenly_spaced(paths, count)
    return pd.DataFrame(
        {"path": chosen, "sha256": [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in chosen]}
    )


def local_rates(table, architecture: str, layer: str | None, workdir: Path) -> tuple[float, float]:
    """(warm, whole-call) images per second of the local engine (see the module docstring)."""
    from pipeline.backbones import load_backbone
    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks

    items = [ExtractItem(path, sha) for path, sha in zip(table["path"], table["sha256"], strict=True)]
    backbone = load_backbone(architecture, layer)  # fresh: the first call builds and traces it
    cold = cache_bottlenecks(items, backbone, tempfile.mkdtemp(dir=workdir))
    warm = cache_bottlenecks(items, backbone, tempfile.mkdtemp(dir=workdir))
    return warm.computed / warm.seconds, cold.computed / cold.seconds


def ray_rates(table, job, workdir: Path) -> tuple[float, float]:
    """(steady-state, whole-call) images per second of one Ray job (see the module docstring)."""
    from pipeline.scale.extract import extract_to_shards

    summary = extract_to_shards(table, "", job(tempfile.mkdtemp(dir=workdir)))
    return summary.steady_images_per_second, summary.computed / summary.seconds


def measure(
    image_dir: Path = FLOWERS,
    images: int = 576,  # 18 batches: a steady window of a dozen or more (192 swung 0.5-1.0 run to run)
    architecture: str = DEFAULT_BACKBONE,
    layer: str | None = None,
    batch_size: int = BATCH,
) -> dict:
    """Every figure of this benchmark as a dict (FIGURES and the rates and counts behind them)."""
    from pipeline.backbones import load_backbone
    from pipeline.backbones.runtime import feature_identity
    from pipeline.scale.cluster import ray_session
    from pipeline.scale.extract import ExtractJob

    backbone = load_backbone(architecture, layer)  # its identity and input size only (the model loads lazily)
    table = image_table(Path(image_dir), images)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))

    def job_for(actors: int):
        return lambda folder: ExtractJob(
            architecture,
            layer,
            folder,
            feature_identity(backbone),
            backbone.input_size,
            batch_size=batch_size,
            actors=actors,
        )

    figures: dict = {"scale_images": len(table), "load_before": load_average()}
    started = time.monotonic()
    with ray_session():  # a local instance, as `--engine ray` without --ray_address starts
        figures["ray_init_seconds"] = time.monotonic() - started
        for actors, name in ((1, "ray_1_actor"), (2, "ray_2_actors")):
            if actors == 2:
                warm, whole = local_rates(table, architecture, layer, workdir)
                figures["local_extract_images_per_second"] = warm
                figures["local_extract_whole_job_images_per_second"] = whole
                log(f"local engine: {warm:.1f} img/s warm, {whole:.1f} img/s over the whole call")
            steady, whole = ray_rates(table, job_for(actors), workdir)
            figures[f"{name}_images_per_second"], figures[f"{name}_whole_job_images_per_second"] = steady, whole
            log(f"ray, {actors} actor(s): {steady:.1f} img/s steady, {whole:.1f} img/s over the whole job")
    best = max(("ray_1_actor", "ray_2_actors"), key=lambda name: figures[f"{name}_images_per_second"])
    figures["ray_vs_local_extract"] = figures[f"{best}_images_per_second"] / figures["local_extract_images_per_second"]
    figures["ray_vs_local_extract_whole_job"] = (
        figures[f"{best}_whole_job_images_per_second"] / figures["local_extract_whole_job_images_per_second"]
    )
    figures["ray_vs_local_actors"] = 1 if best == "ray_1_actor" else 2  # the pool both ratios are of
    figures.update(two_node_run(table.head(TWO_NODE_BATCHES * batch_size), job_for(2), workdir))
    figures["cores"] = os.cpu_count()
    figures["load_after"] = load_average()
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in figures.items()}


def two_node_run(table, job, workdir: Path) -> dict:
    """The extraction job on a simulated cluster of two one-CPU nodes (two actors, one per node)."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.data import DataContext

    from pipeline.scale.cluster import init_options
    from pipeline.scale.extract import extract_to_shards

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    context = DataContext.get_current()
    waited = context.wait_for_min_actors_s
    # Both actors loaded (one per node: they cannot share a one-CPU node) before the first batch. Which of
    # them computes is Ray Data's choice: with a fast backbone one actor keeps up with the decoding alone,
    # so `two_node_nodes_used` can be 1 on a small set; it is 2 once batches queue.
    context.wait_for_min_actors_s = 600
    try:
        ray.init(address=cluster.address, **{k: v for k, v in init_options().items() if k != "include_dashboard"})
        cluster.wait_for_nodes()
        nodes = [node for node in ray.nodes() if node["Alive"]]
        summary = extract_to_shards(table, "", job(tempfile.mkdtemp(dir=workdir)))
        log(
            f"two-node cluster: {summary.computed} images by {summary.actors} actors on {summary.nodes} "
            f"of {len(nodes)} nodes"
        )
        return {
            "two_node_nodes": len(nodes),
            "two_node_nodes_used": summary.nodes,
            "two_node_actors": summary.actors,
            "two_node_images": summary.computed,
            "two_node_seconds": summary.seconds,
        }
    finally:
        context.wait_for_min_actors_s = waited
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", default=str(FLOWERS))
    parser.add_argument("--images", type=int, default=MODES["full"][0])
    parser.add_argument("--architecture", default=DEFAULT_BACKBONE)
    parser.add_argument("--bottleneck_layer", default=None)
    args = parser.parse_args()
    started = time.monotonic()
    figures = measure(Path(args.image_dir), args.images, args.architecture, args.bottleneck_layer)
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
