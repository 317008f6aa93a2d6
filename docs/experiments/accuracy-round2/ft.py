"""Experiment: fine-tune Lite0's top block(s) + head on cached feature maps (block13_add output)."""
import os, sys, time, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from pipeline.backbones import load_backbone
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head, make_optimizer
d = np.load(sys.argv[1]); seeds = [int(s) for s in sys.argv[2].split(",")]
cut = sys.argv[3]          # layer whose output is the trainable part's input: block13_add or block14_add
lrs = [float(x) for x in sys.argv[4].split(",")]
epochs = int(sys.argv[5])
labels = sorted(set(d["labels"])); y = np.array([labels.index(l) for l in d["labels"]]); split = d["split"]
tr, va, te = (split == "train"), (split == "validation"), (split == "test")
b = load_backbone("efficientnet_lite0"); m = b.model
maps = d["maps"].astype(np.float32).reshape(-1, 7, 7, 192)
def sub(model, start, end=None):
    return keras.Model(model.get_layer(start).output, model.get_layer(end).output if end else model.output)
t = time.time()
if cut == "block14_add":
    maps = sub(m, "block13_add", "block14_add").predict(maps, batch_size=256, verbose=0)
print("prep", time.time() - t, maps.shape, flush=True)
upper0 = sub(m, cut)
feats = upper0.predict(maps, batch_size=256, verbose=0)
print("feats", time.time() - t, flush=True)
def acc(p, mask): return float(np.mean(p.argmax(1) == y[mask]))
for seed in seeds:
    cfg = TrainConfig(seed=seed)
    head, _ = train_head(HeadData(feats[tr], y[tr], feats[va], y[va], len(labels)), cfg)
    base = head.get_weights()
    pv, pt = head.predict(feats[va], verbose=0), head.predict(feats[te], verbose=0)
    print(json.dumps({"seed": seed, "what": "head", "val": acc(pv, va), "test": acc(pt, te)}), flush=True)
    for lr in lrs:
        keras.utils.set_random_seed(seed)
        tuned = keras.models.clone_model(m); tuned.set_weights(m.get_weights())
        upper = sub(tuned, cut)
        for layer in upper.layers:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        h = keras.models.clone_model(head); h.set_weights(base)
        inp = keras.Input(maps.shape[1:]); model = keras.Model(inp, h(upper(inp)))
        model.compile(optimizer=make_optimizer(cfg, lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        t = time.time()
        for ep in range(epochs):
            model.fit(maps[tr], y[tr], batch_size=32, epochs=1, shuffle=True, verbose=0)
            pv = model.predict(maps[va], batch_size=256, verbose=0); pt = model.predict(maps[te], batch_size=256, verbose=0)
            vloss = float(-np.mean(np.log(pv[np.arange(va.sum()), y[va]] + 1e-9)))
            print(json.dumps({"seed": seed, "cut": cut, "lr": lr, "epoch": ep + 1, "val": acc(pv, va), "val_loss": round(vloss, 4),
                              "test": acc(pt, te), "sec": round(time.time() - t, 1)}), flush=True)
