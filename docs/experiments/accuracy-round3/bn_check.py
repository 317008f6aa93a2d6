"""Internal check of a converted backbone: does each BatchNorm's input, on real photos, have the statistics its
moving mean and variance say? A weight copied to the wrong layer (or a wrong stride, padding or order of
blocks) shows up as layers where the two disagree. Lite0 (checked against an independent reference) is the
yardstick for how well they agree when the conversion is right.

Usage: bn_check.py ARCH[,ARCH...] — prints per model the worst layers and a summary.
"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
from pathlib import Path
from pipeline.backbones import load_imagenet_classifier
from pipeline.images import load_for_model

paths = sorted(Path("/work/shared/datasets/flowers").glob("*/*.jpg"))[::57][:64]
for name in sys.argv[1].split(","):
    m = load_imagenet_classifier(name); s = m.input.shape[1]
    bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
    probe = keras.Model(m.input, [l.input for l in bns])
    acts = probe.predict(np.stack([load_for_model(str(p), s) for p in paths]).astype(np.float32), verbose=0, batch_size=16)
    rows = []
    for l, a in zip(bns, acts):
        gamma, beta, mean, var = [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in l.weights]
        bm, bv = a.reshape(-1, a.shape[-1]).mean(0), a.reshape(-1, a.shape[-1]).var(0)
        z = np.abs(bm - mean) / np.sqrt(var + 1e-3)  # batch mean offset in moving-std units
        ratio = np.median(bv / (var + 1e-3))
        corr = np.corrcoef(bm, mean)[0, 1]
        rows.append((l.name, float(np.median(z)), float(ratio), float(corr)))
    print(f"{name} @{s}: {len(rows)} BN layers; median |offset| {np.median([r[1] for r in rows]):.3f}, "
          f"median var ratio {np.median([r[2] for r in rows]):.3f}, min mean-corr {min(r[3] for r in rows):.3f}")
    for r in sorted(rows, key=lambda r: -r[1])[:4]:
        print("   worst offset %-22s offset %.3f var ratio %.3f corr %.3f" % r)
    for r in sorted(rows, key=lambda r: r[3])[:3]:
        print("   worst corr   %-22s offset %.3f var ratio %.3f corr %.3f" % r)
    print("   per block (offset, var ratio):", " ".join(f"{r[0].split('_')[0]}:{r[1]:.2f}/{r[2]:.2f}" for r in rows if r[0].endswith("project_bn") or r[0] in ("stem_bn", "head_bn")), flush=True)
