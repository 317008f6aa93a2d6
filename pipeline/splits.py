"""Which split an image belongs to, decided by its file name alone (retrain.py's scheme, kept exactly).

Hashing the name rather than drawing at random means an image stays in the same split forever:
adding photos never moves existing ones between train, validation and test, so a test score
stays comparable across runs and a cached bottleneck never leaks from test into train.
Names with `_nohash_` in them hash as the part before it, so near-copies of one photo
(`dog_nohash_1.jpg`, `dog_nohash_2.jpg`) always land in the same split together.
"""

from __future__ import annotations

import hashlib
import re

from pipeline.errors import RetrainError

# retrain.py's MAX_NUM_IMAGES_PER_CLASS; part of the scheme, so changing it would reshuffle every split.
_HASH_BUCKETS = 2**27 - 1


def validate_percentages(validation_percentage: float, testing_percentage: float) -> None:
    """Raise RetrainError unless both percentages are in 0..100 and leave some images to train on."""
    flags = {"--validation_percentage": validation_percentage, "--testing_percentage": testing_percentage}
    for flag, value in flags.items():
        if not 0 <= value <= 100:
            raise RetrainError(f"{flag} is {value}; it must be between 0 and 100")
    if validation_percentage + testing_percentage >= 100:
        raise RetrainError(
            f"--validation_percentage {validation_percentage} plus --testing_percentage "
            f"{testing_percentage} is {validation_percentage + testing_percentage}; together "
            "they must be under 100 so some images are left to train on"
        )


def name_percentage(file_name: str) -> float:
    """Where a file name falls on 0..100 (stable; `_nohash_` and what follows are ignored)."""
    hash_name = re.sub(r"_nohash_.*$", "", file_name)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    return (int(hashed, 16) % (_HASH_BUCKETS + 1)) * (100.0 / _HASH_BUCKETS)


def split_for_name(file_name: str, validation_percentage: float, testing_percentage: float) -> str:
    """ "train", "validation" or "test" for a file's base name, exactly as retrain.py assigned it."""
    percentage = name_percentage(file_name)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "test"
    return "train"
