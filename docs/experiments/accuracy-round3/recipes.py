"""Lite0 recipes on cached features, each with the default head (pipeline.train.train_head, TrainConfig(seed=s)),
seeds 0-4; validation and test accuracy per seed. Nothing is chosen on test: each recipe is one fixed transform
of the features; any of its settings were chosen on validation (see README).

Usage: recipes.py NAME[,NAME...]   (names: see RECIPES)
"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head

E = "/tmp/acc2-exp/"
A = "/tmp/acc3-exp/"
def load(fn):
    d = np.load(fn)
    return d["x"].astype(np.float32), d["labels"], d["split"], d["path"] if "path" in d else None

x224, labels, split, _ = load(E + "feat_efficientnet_lite0_224.npz")
x288, labels288, split288, _ = load(E + "feat_efficientnet_lite0_288.npz")
assert (labels == labels288).all() and (split == split288).all()
names = sorted(set(labels)); y = np.array([names.index(l) for l in labels])
tr, va, te = split == "train", split == "validation", split == "test"

def standardise(x):
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6  # training split's statistics only
    return (x - mu) / sd
def l2(x, scale=1.0):
    return scale * x / np.linalg.norm(x, axis=1, keepdims=True)
def ssqrt(x):
    return np.sign(x) * np.sqrt(np.abs(x))

def extra(name):
    x, lab, spl, _ = load(A + name)
    assert (lab == labels).all() and (spl == split).all(), name  # same photos in the same order
    return x

RECIPES = {
    "default": lambda: x224,
    "288": lambda: x288,
    "standardised": lambda: standardise(x224),
    "l2x16": lambda: l2(x224, 16.0),  # rows scaled to the features' mean L2 norm (15.7)
    "sqrt_l2x16": lambda: l2(ssqrt(x224), 16.0),
    "concat_224_288": lambda: np.concatenate([x224, x288], 1),
    "mean_224_288": lambda: (x224 + x288) / 2,
    "concat_224_288_std": lambda: standardise(np.concatenate([x224, x288], 1)),
}
seeds = [0, 1, 2, 3, 4]
for name in sys.argv[1].split(","):
    if name.startswith("file:"):  # file:a.npz+b.npz -> Lite0 224 px features plus those feature files (in /tmp/acc3-exp)
        x = np.concatenate([x224] + [extra(f) for f in name[5:].split("+")], 1)
    elif name.startswith("only:"):  # only:a.npz+b.npz -> those feature files alone, concatenated
        x = np.concatenate([extra(f) for f in name[5:].split("+")], 1)
    else:
        x = RECIPES[name]()
    vals, tests = [], []
    for seed in seeds:
        h, _ = train_head(HeadData(x[tr], y[tr], x[va], y[va], len(names)), TrainConfig(seed=seed))
        p = h.predict(x, verbose=0)
        vals.append(round(float(np.mean(p[va].argmax(1) == y[va])), 4)); tests.append(round(float(np.mean(p[te].argmax(1) == y[te])), 4))
    print(json.dumps({"recipe": name, "dim": x.shape[1], "val": vals, "test": tests, "val_mean": round(float(np.mean(vals)), 4),
                      "test_median": float(np.median(tests)), "test_min": min(tests)}), flush=True)
