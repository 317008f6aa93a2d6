"""Experiment: fine-tune top block(s) + head on cached maps, optional map-flip augmentation; per-epoch val/test."""
import os, sys, time, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras, tensorflow as tf
from pipeline.backbones import load_backbone
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head, make_optimizer
d = np.load(sys.argv[1]); seeds = [int(s) for s in sys.argv[2].split(",")]
cut, lr, epochs, flip = sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "flip"
ls = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
labels = sorted(set(d["labels"])); y = np.array([labels.index(l) for l in d["labels"]]); split = d["split"]
tr, va, te = (split == "train"), (split == "validation"), (split == "test")
b = load_backbone("efficientnet_lite0"); m = b.model
maps = d["maps"].astype(np.float32).reshape(-1, 7, 7, 192)
def sub(model, start, end=None):
    return keras.Model(model.get_layer(start).output, model.get_layer(end).output if end else model.output)
if cut == "block14_add":
    maps = sub(m, "block13_add", "block14_add").predict(maps, batch_size=256, verbose=0)
feats = sub(m, cut).predict(maps, batch_size=256, verbose=0)
def acc(p, mask): return float(np.mean(p.argmax(1) == y[mask]))
Y = np.eye(len(labels), dtype=np.float32)[y]
for seed in seeds:
    cfg = TrainConfig(seed=seed)
    head, _ = train_head(HeadData(feats[tr], y[tr], feats[va], y[va], len(labels)), cfg)
    print(json.dumps({"seed": seed, "what": "head", "val": acc(head.predict(feats[va], verbose=0), va), "test": acc(head.predict(feats[te], verbose=0), te)}), flush=True)
    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(m); tuned.set_weights(m.get_weights())
    upper = sub(tuned, cut)
    for layer in upper.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    inp = keras.Input(maps.shape[1:]); model = keras.Model(inp, head(upper(inp)))
    model.compile(optimizer=make_optimizer(cfg, lr), loss=keras.losses.CategoricalCrossentropy(label_smoothing=ls), metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((maps[tr], Y[tr])).shuffle(int(tr.sum()), seed=seed)
    if flip:
        ds = ds.map(lambda a, t: (tf.cond(tf.random.uniform(()) < 0.5, lambda: tf.reverse(a, [1]), lambda: a), t))
    ds = ds.batch(32)
    t = time.time()
    for ep in range(epochs):
        model.fit(ds, epochs=1, verbose=0)
        pv = model.predict(maps[va], batch_size=256, verbose=0); pt = model.predict(maps[te], batch_size=256, verbose=0)
        vloss = float(-np.mean(np.log(pv[np.arange(va.sum()), y[va]] + 1e-9)))
        print(json.dumps({"seed": seed, "cut": cut, "lr": lr, "flip": flip, "ls": ls, "epoch": ep + 1, "val": round(acc(pv, va), 4), "val_loss": round(vloss, 4),
                          "test": round(acc(pt, te), 4), "sec": round(time.time() - t, 1)}), flush=True)
