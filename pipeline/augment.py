"""Augmented copies that keep the cache: each copy is deterministic, so it is cached like a photo.

retrain.py switched its bottleneck cache off whenever a distortion was on, making every step
~100x slower. Here an augmented copy is a pure function of (image content, copy index,
transform settings), so its bottleneck is computed once and reused by every later run.

Transforms: retrain.py's four (flip, random crop, random scale, brightness, with its meanings)
and the Keras ImageDataGenerator set the grocery seed balanced classes with (rotation, shifts,
shear, zoom, horizontal flip, fill mode).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pandas as pd

from pipeline.config import AugmentConfig
from pipeline.images import center_square, resize_square

# The grocery seed's ImageDataGenerator settings, used for class balancing when the user
# turned no transform on: copies of an image with no transform would be the image again.
SEED_TRANSFORMS = {
    "rotation": 40.0,
    "width_shift": 0.2,
    "height_shift": 0.2,
    "shear": 0.2,
    "zoom": 0.2,
    "flip_left_right": True,
    "fill_mode": "nearest",
}


def effective_augment(config: AugmentConfig) -> AugmentConfig:
    """The transforms copies are made with: the user's, or the seed's when balancing asks for copies of none."""
    if config.class_size > 0 and not config.is_active():
        return dataclasses.replace(config, **SEED_TRANSFORMS)
    return config


def copies_per_class(train_counts: dict[str, int], config: AugmentConfig) -> dict[str, int]:
    """Augmented copies to make of each training image, per class.

    With `class_size` N, a class of `count` images gets floor(N / count) - 1 copies per image
    (the grocery seed's formula; none at or above N; never downsampled). Otherwise every class
    gets `augment_copies`, and only when some transform is on.
    """
    if config.class_size > 0:
        return {label: max(config.class_size // count - 1, 0) if count else 0 for label, count in train_counts.items()}
    copies = config.augment_copies if config.is_active() else 0
    return {label: copies for label in train_counts}


def copy_seed(sha256: str, copy: int) -> int:
    """A seed from image content and copy index: the same copy is the same image on every machine."""
    return int.from_bytes(hashlib.sha256(f"{sha256}:{copy}".encode()).digest()[:8], "little")


def augmented_for_model(rgb: np.ndarray, config: AugmentConfig, seed: int, size: int) -> np.ndarray:
    """One augmented copy of a decoded image, as a size x size uint8 model input."""
    rng = np.random.default_rng(seed)
    square = center_square(rgb)
    # retrain.py's crop and scale: enlarge by the margin times a random scale, then crop at random.
    scale = (1 + config.random_crop / 100) * rng.uniform(1.0, 1.0 + config.random_scale / 100)
    work_side = max(size, int(round(size * scale)))
    work = resize_square(square, work_side).astype(np.float32)
    if _has_geometry(config):
        work = _affine(work, config, rng)
    top, left = rng.integers(0, work_side - size + 1, size=2)
    out = work[top : top + size, left : left + size]
    if config.flip_left_right and rng.random() < 0.5:
        out = out[:, ::-1]
    if config.random_brightness:
        out = out * rng.uniform(1 - config.random_brightness / 100, 1 + config.random_brightness / 100)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _has_geometry(config: AugmentConfig) -> bool:
    return bool(config.rotation or config.width_shift or config.height_shift or config.shear or config.zoom)


def _affine(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Rotation, shift, shear and zoom about the centre, as ImageDataGenerator composes them."""
    from scipy import ndimage

    height, width = image.shape[:2]
    theta = math.radians(rng.uniform(-config.rotation, config.rotation))
    shift_y = rng.uniform(-config.height_shift, config.height_shift) * height
    shift_x = rng.uniform(-config.width_shift, config.width_shift) * width
    shear = math.radians(rng.uniform(-config.shear, config.shear))
    zoom_y, zoom_x = rng.uniform(1 - config.zoom, 1 + config.zoom, size=2) if config.zoom else (1.0, 1.0)
    # Matrices map output (row, col) to input coordinates, like scipy.ndimage.affine_transform wants.
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    shearing = np.array([[1, -math.sin(shear)], [0, math.cos(shear)]])
    zooming = np.array([[zoom_y, 0], [0, zoom_x]])
    matrix = rotation @ shearing @ zooming
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    offset = centre - matrix @ centre + np.array([shift_y, shift_x])
    mode = {"nearest": "nearest", "reflect": "reflect", "constant": "constant", "wrap": "grid-wrap"}[config.fill_mode]
    channels = [
        ndimage.affine_transform(image[..., c], matrix, offset=offset, order=1, mode=mode, cval=0.0)
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def preview_copies(rgb: np.ndarray, config: AugmentConfig, count: int, size: int = 224) -> list[np.ndarray]:
    """A few augmented copies of one image, for the app's live preview (same code as training)."""
    config = effective_augment(config)
    if not config.is_active():
        return []
    return [augmented_for_model(rgb, config, copy_seed("preview", k), size) for k in range(1, count + 1)]


def balance_counts(class_counts: dict[str, dict[str, int]], augment: AugmentConfig) -> pd.DataFrame:
    """Training images per class now and with the copies `augment` makes: rows (class, when, images)."""
    train = {label: counts.get("train", 0) for label, counts in class_counts.items()}
    copies = copies_per_class(train, augment)
    return pd.DataFrame(
        [
            {"class": label, "when": when, "images": count * (1 + copies[label] * (when != "now"))}
            for when in ("now", "after balancing")
            for label, count in train.items()
        ]
    )
