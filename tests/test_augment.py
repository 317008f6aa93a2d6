"""Augmented copies: deterministic, the right size, and the class-balancing formula."""

import dataclasses

import numpy as np
import pytest

from pipeline.augment import (
    SEED_TRANSFORMS,
    augmented_for_model,
    copies_per_class,
    copy_seed,
    effective_augment,
    preview_copies,
)
from pipeline.config import AugmentConfig


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :40] = (200, 30, 30)
    return np.clip(image + rng.integers(0, 40, image.shape), 0, 255).astype(np.uint8)


ALL_ON = AugmentConfig(
    flip_left_right=True,
    random_crop=10,
    random_scale=10,
    random_brightness=20,
    rotation=30,
    width_shift=0.1,
    height_shift=0.1,
    shear=5,
    zoom=0.2,
)


def test_copy_is_deterministic_per_seed_and_differs_between_copies(photo):
    first = augmented_for_model(photo, ALL_ON, copy_seed("abc", 1), 32)
    again = augmented_for_model(photo, ALL_ON, copy_seed("abc", 1), 32)
    other = augmented_for_model(photo, ALL_ON, copy_seed("abc", 2), 32)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_no_transform_gives_the_plain_model_input(photo):
    from pipeline.images import prepare_for_model

    copy = augmented_for_model(photo, AugmentConfig(), 7, 32)
    assert np.abs(copy.astype(int) - prepare_for_model(photo, 32).astype(int)).max() <= 1


def test_brightness_changes_mean_within_range(photo):
    config = AugmentConfig(random_brightness=50)
    means = [augmented_for_model(photo, config, seed, 32).mean() for seed in range(20)]
    base = augmented_for_model(photo, AugmentConfig(), 0, 32).mean()
    assert min(means) < base < max(means)
    assert max(means) <= base * 1.5 + 1


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant", "wrap"])
def test_every_fill_mode_works(photo, fill_mode):
    config = dataclasses.replace(ALL_ON, fill_mode=fill_mode)
    assert augmented_for_model(photo, config, 3, 24).shape == (24, 24, 3)


def test_flip_mirrors(photo):
    flipped = [augmented_for_model(photo, AugmentConfig(flip_left_right=True), seed, 32) for seed in range(10)]
    plain = augmented_for_model(photo, AugmentConfig(), 0, 32)
    assert any(np.array_equal(copy, plain[:, ::-1]) for copy in flipped)
    assert any(np.array_equal(copy, plain) for copy in flipped)


def test_class_size_uses_the_seed_formula_and_never_downsamples():
    counts = {"rare": 40, "mid": 150, "common": 700}
    config = AugmentConfig(class_size=600)
    assert copies_per_class(counts, config) == {"rare": 600 // 40 - 1, "mid": 3, "common": 0}


def test_copies_only_when_a_transform_is_on():
    assert copies_per_class({"a": 5}, AugmentConfig(augment_copies=3)) == {"a": 0}
    assert copies_per_class({"a": 5}, AugmentConfig(augment_copies=3, flip_left_right=True)) == {"a": 3}


def test_balancing_without_transforms_uses_the_seed_transforms():
    config = effective_augment(AugmentConfig(class_size=100))
    assert all(getattr(config, key) == value for key, value in SEED_TRANSFORMS.items())
    assert effective_augment(AugmentConfig(class_size=100, rotation=5)).rotation == 5


def test_transform_key_ignores_counts_but_not_transforms():
    assert AugmentConfig(augment_copies=1).transform_key() == AugmentConfig(augment_copies=5).transform_key()
    assert AugmentConfig(rotation=1).transform_key() != AugmentConfig(rotation=2).transform_key()


def test_preview(photo):
    assert preview_copies(photo, AugmentConfig(), 3) == []
    copies = preview_copies(photo, ALL_ON, 3, size=40)
    assert len(copies) == 3 and copies[0].shape == (40, 40, 3)
