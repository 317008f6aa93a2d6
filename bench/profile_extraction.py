"""Where cold-cache extraction's time goes, against the forward pass alone (a profile, not a figure).

    python bench/profile_extraction.py [--images 512] [--reps 3]

Prints wall images/s and CPU ms per image (this process, all threads) for: the forward pass on
decoded images; the tf.data decode stage alone (the engine's `load_item_for_model` in parallel
`numpy_function`s, no model); `cache_bottlenecks` as it is; and `cache_bottlenecks` with its
forward pass compiled once and reused — the proposed engine fix, prototyped by patching
`pipeline.bottlenecks.compiled_forward` here (the engine builds and traces a new tf.function on
every call). CPU ms per image is the number to trust on a shared machine: wall time halves
whenever another busy process takes one of the two cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import extraction  # noqa: E402
from bench.modes import FLOWERS, evenly_spaced  # noqa: E402
from bench.timing import Stopwatch, Throughput, interleaved, median  # noqa: E402


def decode_only(items, size: int) -> Throughput:
    """The engine's decode stage as tf.data runs it (parallel numpy_function, batch, prefetch), without the model."""
    import tensorflow as tf

    from pipeline.bottlenecks import load_item_for_model

    def load(index):
        image = tf.numpy_function(lambda i: load_item_for_model(items[int(i)], size, None), [index], tf.uint8)
        image.set_shape((size, size, 3))
        return image

    dataset = (
        tf.data.Dataset.range(len(items))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(32)
        .prefetch(2)
    )
    with Stopwatch() as watch:
        for _ in dataset:
            pass
    return Throughput(len(items), watch.seconds, watch.cpu_seconds)


def retrace_cost(backbone, warm_forward, images) -> Throughput:
    """What a fresh `compiled_forward` costs on its first batch beyond a warm one: the per-call retrace."""
    from pipeline.bottlenecks import compiled_forward

    with Stopwatch() as fresh:
        compiled_forward(backbone)(images[:32]).numpy()
    with Stopwatch() as warm:
        warm_forward(images[:32]).numpy()
    return Throughput(1, fresh.seconds - warm.seconds, fresh.cpu_seconds - warm.cpu_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from pipeline import bottlenecks
    from pipeline.backbones import load_backbone
    from pipeline.config import DatasetConfig
    from pipeline.dataset import load_dataset

    backbone = load_backbone()
    rows = load_dataset(DatasetConfig(image_dir=str(FLOWERS)), check_images=False).usable()
    items = [bottlenecks.ExtractItem(row.path, row.sha256) for row in rows.itertuples()]
    items = list({item.sha256: item for item in evenly_spaced(items, args.images)}.values())
    images = extraction.decode_all(items, backbone.input_size)
    forward = extraction.ForwardPass(backbone, images)
    compiled_once = forward.forward

    def extract_compiled_once(_):
        with mock.patch.object(bottlenecks, "compiled_forward", lambda _backbone: compiled_once):
            return extraction.extract_throughput(items, backbone, workdir)

    with tempfile.TemporaryDirectory(prefix="profile-extraction-") as folder:
        workdir = Path(folder)
        runs = interleaved(
            args.reps,
            {
                "forward pass alone": lambda _: forward.throughput(),
                "decode stage alone": lambda _: decode_only(items, backbone.input_size),
                "cache_bottlenecks as is": lambda _: extraction.extract_throughput(items, backbone, workdir),
                "cache_bottlenecks, forward compiled once": extract_compiled_once,
                "retrace of a new compiled_forward": lambda _: retrace_cost(backbone, compiled_once, images),
            },
        )
    print(f"\n{len(items)} flowers images, median of {args.reps}; load average now {os.getloadavg()[0]:.1f}")
    print(f"{'':44}{'images/s':>10}{'CPU ms/image':>14}")
    for name, values in runs.items():
        if name.startswith("retrace"):
            print(
                f"{name:44}{median([v.seconds for v in values]):>9.2f}s wall, "
                f"{median([v.cpu_seconds for v in values]):.2f}s CPU per call"
            )
        else:
            print(
                f"{name:44}{median([v.per_second for v in values]):>10.1f}"
                f"{median([v.cpu_ms_per_image for v in values]):>14.2f}"
            )


if __name__ == "__main__":
    main()
