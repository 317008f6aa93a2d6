"""Default head over seeds on saved feature files; val and test accuracy."""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from pipeline.config import TrainConfig
from pipeline.train import HeadData, train_head
seeds = [int(s) for s in sys.argv[1].split(",")]
for fn in sys.argv[2:]:
    d = np.load(fn); x = d["x"]
    labels = sorted(set(d["labels"])); y = np.array([labels.index(l) for l in d["labels"]]); split = d["split"]
    tr, va, te = (split == "train"), (split == "validation"), (split == "test")
    res = []
    for seed in seeds:
        h, _ = train_head(HeadData(x[tr], y[tr], x[va], y[va], len(labels)), TrainConfig(seed=seed))
        p = h.predict(x, verbose=0)
        res.append((round(float(np.mean(p[va].argmax(1) == y[va])), 4), round(float(np.mean(p[te].argmax(1) == y[te])), 4)))
    print(os.path.basename(fn), "val", [r[0] for r in res], "test", [r[1] for r in res], "median test", float(np.median([r[1] for r in res])), flush=True)
