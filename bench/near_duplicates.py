"""Which perceptual hash, and which threshold, tells re-encoded copies from distinct photos (run on flowers).

Prints, for a hash: the most bits any of 10 re-encodings (JPEG quality 10-95, 30%-150% size) of 60
photos moved from their original, and how many pairs of distinct files of the whole dataset fall
within each distance. A usable threshold sits above the first number and where the second is still
small (and the pairs it finds, looked at, are edits of one photo). `pipeline.near_duplicates` took
its hash and NEAR_HAMMING from this.

    .venv/bin/python -m bench.near_duplicates /work/shared/datasets/flowers
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.images import decode_image
from pipeline.near_duplicates import hamming, perceptual_hash

VARIANTS = [
    (10, 1.0),
    (20, 0.4),
    (30, 0.5),
    (40, 0.6),
    (50, 0.75),
    (60, 1.5),
    (70, 0.9),
    (80, 1.25),
    (90, 0.3),
    (95, 1.0),
]


def reencoded(image: Image.Image, quality: int, scale: float) -> np.ndarray:
    width, height = image.size
    smaller = image.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    smaller.save(buffer, "JPEG", quality=quality)
    return decode_image(buffer.getvalue())


def main(folder: str) -> None:
    files = sorted(Path(folder).rglob("*.jpg"))
    rng = np.random.default_rng(1)
    moved = []
    for path in [files[i] for i in rng.choice(len(files), min(60, len(files)), replace=False)]:
        image = Image.open(path).convert("RGB")
        original = perceptual_hash(np.asarray(image))
        moved += [hamming(original, perceptual_hash(reencoded(image, q, s))) for q, s in VARIANTS]
    print(f"copies: most bits moved {max(moved)}, 99th percentile {np.percentile(moved, 99):.0f}")
    hashes = np.array(
        [int(perceptual_hash(np.asarray(Image.open(p).convert("RGB"))), 16) for p in files], dtype=np.uint64
    )
    counts = np.zeros(65, dtype=int)
    for i in range(len(hashes)):
        xor = np.bitwise_xor(hashes[i + 1 :], hashes[i])
        bits = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        counts += np.bincount(bits, minlength=65)
    within = np.cumsum(counts)
    print(f"distinct pairs ({within[-1]:,}) within t bits:", {t: int(within[t]) for t in range(0, 17, 2)})


if __name__ == "__main__":
    main(sys.argv[1])
