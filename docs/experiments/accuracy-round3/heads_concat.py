"""Default head (pipeline.train.train_head, TrainConfig(seed=s)) on the concatenation of saved feature files
(the same photos in the same order, e.g. two backbones' features), seeds 0-4; val and test accuracy per seed.

Usage: heads_concat.py SEEDS A.npz[+B.npz...] ...
"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head

seeds = [int(s) for s in sys.argv[1].split(",")]
for recipe in sys.argv[2:]:
    parts = [np.load(f) for f in recipe.split("+")]
    for d in parts[1:]:
        assert (d["labels"] == parts[0]["labels"]).all() and (d["split"] == parts[0]["split"]).all()
    x = np.concatenate([d["x"].astype(np.float32) for d in parts], 1)
    labels = sorted(set(parts[0]["labels"])); y = np.array([labels.index(l) for l in parts[0]["labels"]])
    split = parts[0]["split"]; tr, va, te = split == "train", split == "validation", split == "test"
    vals, tests = [], []
    for seed in seeds:
        h, _ = train_head(HeadData(x[tr], y[tr], x[va], y[va], len(labels)), TrainConfig(seed=seed))
        p = h.probabilities(x)  # the NumPy head (the Keras head of round 3 had .predict)
        vals.append(round(float(np.mean(p[va].argmax(1) == y[va])), 4)); tests.append(round(float(np.mean(p[te].argmax(1) == y[te])), 4))
    print(json.dumps({"recipe": "+".join(os.path.basename(f) for f in recipe.split("+")), "classes": len(labels),
                      "train/val/test": [int(tr.sum()), int(va.sum()), int(te.sum())], "val": vals, "test": tests,
                      "test_median": float(np.median(tests)), "test_min": min(tests)}), flush=True)
