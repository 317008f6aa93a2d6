"""Feature statistics and logistic-regression probes (C chosen on validation) for saved feature files.

Usage: probe.py FEAT.npz ...  Prints per file: scale and sparsity of the features, then for each transform
(raw, standardised, L2-normalised, signed sqrt + L2) the validation-chosen C, its val and test accuracy.
"""
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression

def load(fn):
    d = np.load(fn); x = d["x"].astype(np.float64)
    labels = sorted(set(d["labels"])); y = np.array([labels.index(l) for l in d["labels"]])
    s = d["split"]
    return x, y, s == "train", s == "validation", s == "test"

def transforms(x, tr):
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    l2 = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    return {"raw": x, "standardised": (x - mu) / sd, "l2": l2(x), "sqrt+l2": l2(np.sign(x) * np.sqrt(np.abs(x))),
            "l2 x sqrt(d)": l2(x) * np.sqrt(x.shape[1]) / 10}

for fn in sys.argv[1:]:
    x, y, tr, va, te = load(fn)
    nrm = np.linalg.norm(x, axis=1)
    print(fn, x.shape, "mean %.3f  max %.2f  frac zero %.3f  frac<0.01 %.3f  row L2 mean %.1f sd %.1f  dims never >0.01: %d"
          % (x.mean(), x.max(), (x == 0).mean(), (np.abs(x) < 0.01).mean(), nrm.mean(), nrm.std(), ((np.abs(x) > 0.01).sum(0) == 0).sum()), flush=True)
    for name, xt in transforms(x, tr).items():
        best = None
        for C in [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30]:
            m = LogisticRegression(C=C, max_iter=3000).fit(xt[tr], y[tr])
            v = m.score(xt[va], y[va])
            if best is None or v > best[1]: best = (C, v, m)
        C, v, m = best
        print("  %-13s C=%-5s val %.4f test %.4f" % (name, C, v, m.score(xt[te], y[te])), flush=True)
