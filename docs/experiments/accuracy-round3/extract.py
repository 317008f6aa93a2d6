"""Pooled features of every usable photo of a dataset, with the engine's own backbone and runtime (LiteRT).

Usage: extract.py ARCH IMAGE_DIR OUT.npz — the split is the engine's (filename hash, or the pre-split folders).
"""
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from pipeline.backbones.registry import load_backbone
from pipeline.backbones.runtime import backbone_forward, feature_identity
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.images import load_for_model

arch, image_dir, out = sys.argv[1:4]
ds = load_dataset(DatasetConfig(image_dir=image_dir), check_images=False)
rows = ds.usable(); paths = list(rows["path"])
backbone = load_backbone(arch)
forward = backbone_forward(backbone)
S = backbone.input_size
print(arch, feature_identity(backbone), "input", S, "photos", len(paths), flush=True)
outs = []; t = time.time()
with ThreadPoolExecutor(2) as pool:
    for i in range(0, len(paths), 32):
        imgs = np.stack(list(pool.map(lambda p: load_for_model(p, S), paths[i:i + 32])))
        outs.append(forward(imgs))
        if i % 1280 == 0: print(i, round(time.time() - t, 1), flush=True)
np.savez(out, x=np.concatenate(outs), labels=np.array(rows["label"]).astype(str),
         split=np.array(rows["split"]).astype(str), path=np.array(paths).astype(str))
print("done", round(time.time() - t, 1), "s; load", open("/proc/loadavg").read().split()[:3], flush=True)
