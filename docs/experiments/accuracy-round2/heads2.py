"""Experiment: (a) ensemble of 5 default heads per seed (probabilities averaged); (b) stronger head chosen on val."""
import os, sys, json, itertools
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head
d = np.load(sys.argv[1]); x = d["x"]; seeds = [int(s) for s in sys.argv[2].split(",")]; which = sys.argv[3]
labels = sorted(set(d["labels"])); y = np.array([labels.index(l) for l in d["labels"]]); split = d["split"]
tr, va, te = (split == "train"), (split == "validation"), (split == "test")
def acc(p, m): return round(float(np.mean(p[m].argmax(1) == y[m])), 4)
xn = x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(x.shape[1])  # unit length, scaled to keep the lr meaningful
for seed in seeds:
    if which == "ensemble":
        ps = []
        for k in range(5):
            h, _ = train_head(HeadData(x[tr], y[tr], x[va], y[va], len(labels)), TrainConfig(seed=seed * 10 + k))
            ps.append(h.predict(x, verbose=0))
        p = np.mean(ps, 0)
        print(json.dumps({"seed": seed, "what": "ensemble5", "val": acc(p, va), "test": acc(p, te)}), flush=True)
    else:
        best = None
        for l2, ls, dr in itertools.product([False, True], [0.0, 0.1], [0.2, 0.5]):
            f = xn if l2 else x
            h, _ = train_head(HeadData(f[tr], y[tr], f[va], y[va], len(labels)), TrainConfig(seed=seed, label_smoothing=ls, dropout=dr))
            p = h.predict(f, verbose=0)
            vl = float(-np.mean(np.log(p[va][np.arange(va.sum()), y[va]] + 1e-9)))
            row = {"seed": seed, "l2": l2, "ls": ls, "dropout": dr, "val": acc(p, va), "val_loss": round(vl, 4), "test": acc(p, te)}
            print(json.dumps(row), flush=True)
            key = (row["val"], -vl)
            if best is None or key > best[0]: best = (key, row)
        print(json.dumps({"chosen": best[1]}), flush=True)
