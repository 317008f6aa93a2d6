"""Experiment: Lite0 pooled features at other input resolutions (FixRes effect), all flowers, LiteRT."""
import os, sys, time, dataclasses
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from concurrent.futures import ThreadPoolExecutor
from pipeline.backbones import efficientnet_lite as el
from pipeline.backbones.bottleneck import cut_at_bottleneck
from pipeline.backbones.runtime import litert_forward
from pipeline.config import DatasetConfig
from pipeline.dataset import load_dataset
from pipeline.images import load_for_model
ds = load_dataset(DatasetConfig(image_dir="/work/shared/datasets/flowers"), check_images=False)
rows = ds.usable(); paths = list(rows["path"])
arch = os.environ.get("ARCH", "efficientnet_lite0")
for S in [int(s) for s in sys.argv[1].split(",")]:
    v = dataclasses.replace(el.VARIANTS[arch], input_size=S)
    def build():
        return cut_at_bottleneck(el.build_imagenet_classifier(el.weights_path(v), v), "global_pool", "x")
    f = litert_forward(build, f"acc2-res|{arch}|{S}", S, f"acc2res{S}")
    outs = []; t = time.time()
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(paths), 32):
            imgs = np.stack(list(pool.map(lambda p: load_for_model(p, S), paths[i:i+32])))
            outs.append(f(imgs))
            if i % 1280 == 0: print(S, i, time.time() - t, flush=True)
    np.savez(f"/tmp/acc2-exp/feat_{arch}_{S}.npz", x=np.concatenate(outs), labels=np.array(rows["label"]).astype(str), split=np.array(rows["split"]).astype(str))
    print("done", S, time.time() - t, flush=True)
