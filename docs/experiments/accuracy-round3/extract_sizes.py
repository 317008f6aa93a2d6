"""Pooled features of all of a dataset at other input sizes than the backbone's own (same weights), on LiteRT.

Usage: extract_sizes.py ARCH IMAGE_DIR SIZE[,SIZE...] OUT_PREFIX — writes OUT_PREFIX_SIZE.npz per size.
With MIRROR=1 in the environment, of each photo's mirror image instead (what --mirror_view averages in).
"""
import os, sys, time, dataclasses
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from pipeline.backbones import efficientnet_lite as el
from pipeline.backbones.bottleneck import cut_at_bottleneck
from pipeline.backbones.runtime import litert_forward
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.images import load_for_model

arch, image_dir, sizes, prefix = sys.argv[1:5]
ds = load_dataset(DatasetConfig(image_dir=image_dir), check_images=False)
rows = ds.usable(); paths = list(rows["path"])
MIRROR = os.environ.get("MIRROR") == "1"
def load(p, S):
    x = load_for_model(p, S)
    return np.ascontiguousarray(x[:, ::-1]) if MIRROR else x
for S in [int(s) for s in sizes.split(",")]:
    v = dataclasses.replace(el.VARIANTS[arch], input_size=S)
    build = lambda: cut_at_bottleneck(el.build_imagenet_classifier(el.weights_path(v), v), "global_pool", "x")
    f = litert_forward(build, f"acc3-res|{arch}|{S}", S, f"acc3res-{arch}-{S}")
    outs = []; t = time.time()
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(paths), 32):
            outs.append(f(np.stack(list(pool.map(lambda p: load(p, S), paths[i:i + 32])))))
    np.savez(f"{prefix}_{S}.npz", x=np.concatenate(outs), labels=np.array(rows["label"]).astype(str),
             split=np.array(rows["split"]).astype(str), path=np.array(paths).astype(str))
    print("done", arch, S, round(time.time() - t, 1), "s; load", open("/proc/loadavg").read().split()[:3], flush=True)
