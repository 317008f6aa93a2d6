"""Experiment: Lite0 feature maps entering the top blocks (block13_add output, 7x7x192) for all flowers, LiteRT."""
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from concurrent.futures import ThreadPoolExecutor
from pipeline.backbones import load_backbone
from pipeline.backbones.runtime import litert_forward
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.images import load_for_model
layer, out, mirror = sys.argv[1], sys.argv[2], len(sys.argv) > 3
b = load_backbone("efficientnet_lite0"); m = b.model; S = b.input_size
fm = m.get_layer(layer).output
lower = keras.Model(m.input, keras.layers.Flatten()(fm))
f = litert_forward(lambda: lower, f"acc2-lower|{layer}", S, "acc2lower")
ds = load_dataset(DatasetConfig(image_dir="/work/shared/datasets/flowers"), check_images=False)
rows = ds.usable(); paths = list(rows["path"])
outs = []
t = time.time()
def load(p):
    x = load_for_model(p, S)
    return np.ascontiguousarray(x[:, ::-1]) if mirror else x
with ThreadPoolExecutor(2) as pool:
    for i in range(0, len(paths), 32):
        imgs = np.stack(list(pool.map(load, paths[i:i+32])))
        outs.append(f(imgs).astype(np.float16))
        if i % 640 == 0: print(i, time.time() - t, flush=True)
np.savez(out, maps=np.concatenate(outs), labels=np.array(rows["label"]).astype(str), split=np.array(rows["split"]).astype(str), path=np.array(paths).astype(str))
print("done", time.time() - t, fm.shape)
