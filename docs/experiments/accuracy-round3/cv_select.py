"""Choose among recipes without the test split and with more than 356 validation photos: 5-fold cross-validation
of the default head over train+validation (3311 flowers photos; folds by a fixed permutation, the same for
every recipe). Each fold's head early-stops on that fold, so every recipe is equally optimistic; the test split
is never read.

Usage: cv_select.py A.npz[+B.npz...] ...
"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head

for recipe in sys.argv[1:]:
    parts = [np.load(f) for f in recipe.split("+")]
    for d in parts[1:]:
        assert (d["labels"] == parts[0]["labels"]).all() and (d["split"] == parts[0]["split"]).all()
    x = np.concatenate([d["x"].astype(np.float32) for d in parts], 1)
    labels = sorted(set(parts[0]["labels"])); y = np.array([labels.index(l) for l in parts[0]["labels"]])
    pool = np.flatnonzero(parts[0]["split"] != "test")
    folds = np.array_split(np.random.default_rng(0).permutation(pool), 5)
    acc = []
    for k, held in enumerate(folds):
        rest = np.setdiff1d(pool, held)
        h, _ = train_head(HeadData(x[rest], y[rest], x[held], y[held], len(labels)), TrainConfig(seed=k))
        acc.append(round(float(np.mean(h.predict(x[held], verbose=0).argmax(1) == y[held])), 4))
    print(json.dumps({"recipe": "+".join(os.path.basename(f) for f in recipe.split("+")), "fold_accuracy": acc,
                      "cv_mean": round(float(np.mean(acc)), 4)}), flush=True)
