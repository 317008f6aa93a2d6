"""Is the converted backbone a good ImageNet classifier? Top-1 of the ImageNet head on grocery photos of classes
that ImageNet has (Granny Smith aside: banana, lemon, orange, pineapple, pomegranate, mushroom, cucumber, zucchini,
bell pepper), for each backbone; plus top-1 agreement between backbones. A wrong conversion loses ImageNet accuracy.
"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
from pathlib import Path
from pipeline.backbones import load_imagenet_classifier
from pipeline.images import load_for_model

IMAGENET = {"Banana": 954, "Lemon": 951, "Orange": 950, "Pineapple": 953, "Pomegranate": 957, "Mushroom": 947,
            "Cucumber": 943, "Zucchini": 939, "Pepper": 945}
root = Path("/work/shared/datasets/grocery")
items = [(p, c) for c in IMAGENET for split in ("train", "test") for p in sorted((root / split / c).glob("*.jpg"))[:25]]
target = np.array([IMAGENET[c] for _, c in items])
sizes = {}
preds = {}
for name in sys.argv[1].split(","):
    for size in ([int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [None]):
        m = load_imagenet_classifier(name)
        s = size or m.input.shape[1]
        if size and size != m.input.shape[1]:  # same weights at another input size
            import keras
            from pipeline.backbones import efficientnet_lite as el
            import dataclasses
            v = dataclasses.replace(el.VARIANTS[name], input_size=s)
            m2 = el.build_architecture(v); m2.set_weights(m.get_weights()); m = m2
        p = m.predict(np.stack([load_for_model(str(x), s) for x, _ in items]).astype(np.float32), verbose=0, batch_size=16)
        preds[(name, s)] = p
        top5 = np.argsort(-p, 1)[:, :5]
        print(f"{name} @{s}: top-1 {np.mean(p.argmax(1) == target):.3f} top-5 {np.mean((top5 == target[:, None]).any(1)):.3f} "
              f"mean p(true) {p[np.arange(len(p)), target].mean():.3f} mean max p {p.max(1).mean():.3f} (n={len(items)})", flush=True)
keys = list(preds)
for i in range(len(keys)):
    for j in range(i + 1, len(keys)):
        print("agreement", keys[i], keys[j], round(float(np.mean(preds[keys[i]].argmax(1) == preds[keys[j]].argmax(1))), 3))
