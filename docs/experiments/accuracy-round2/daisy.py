import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"]="2"
import numpy as np
from pathlib import Path
from pipeline.backbones import load_imagenet_classifier
from pipeline.images import load_for_model
paths = sorted(Path("/work/shared/datasets/flowers/daisy").glob("*.jpg"))[::15][:40]
for name in sys.argv[1:]:
    m = load_imagenet_classifier(name); s = m.input.shape[1]
    p = m.predict(np.stack([load_for_model(str(x), s) for x in paths]).astype(np.float32), verbose=0)
    print(name, "top1 daisy", np.mean(p.argmax(1) == 985), "mean p(daisy)", round(float(p[:, 985].mean()), 3), "mean max p", round(float(p.max(1).mean()), 3), flush=True)
