"""Lite0: pooled outputs of several inner layers for all of flowers, on LiteRT (one model, concatenated)."""
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from concurrent.futures import ThreadPoolExecutor
from pipeline.backbones import load_backbone
from pipeline.backbones.runtime import litert_forward
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.images import load_for_model
LAYERS = ["block10_add", "block13_add", "block15_project_bn", "head_bn"]
b = load_backbone("efficientnet_lite0"); m = b.model; S = b.input_size
pooled = [keras.layers.GlobalAveragePooling2D()(m.get_layer(n).output) for n in LAYERS]
multi = keras.Model(m.input, keras.layers.Concatenate()(pooled))
f = litert_forward(lambda: multi, "acc3-layers|" + ",".join(LAYERS), S, "acc3layers")
ds = load_dataset(DatasetConfig(image_dir="/work/shared/datasets/flowers"), check_images=False)
rows = ds.usable(); paths = list(rows["path"])
outs = []; t = time.time()
with ThreadPoolExecutor(2) as pool:
    for i in range(0, len(paths), 32):
        outs.append(f(np.stack(list(pool.map(lambda p: load_for_model(p, S), paths[i:i + 32])))))
x = np.concatenate(outs)
dims = [int(m.get_layer(n).output.shape[-1]) for n in LAYERS]
start = 0
for n, d in zip(LAYERS, dims):
    np.savez(f"/tmp/acc3-exp/pool_{n}.npz", x=x[:, start:start + d], labels=np.array(rows["label"]).astype(str), split=np.array(rows["split"]).astype(str))
    start += d
print("done", time.time() - t, dims, "load", open("/proc/loadavg").read().split()[:3])
