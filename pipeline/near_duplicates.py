"""Near-duplicate photos: the same picture re-encoded, resized or recoloured, which a sha256 cannot see.

Two signals, both cheap once the dataset is checked:
- a perceptual hash (pHash: the signs of the 63 lowest DCT frequencies of a 32x32 grey thumbnail against
  their median) of every image, computed while the check decodes it anyway and stored with the
  checked files, so reopening costs nothing. Photos within NEAR_HAMMING bits are one group.
- once bottlenecks are cached, cosine similarity of the backbone's features (`bottleneck_groups`):
  catches crops and edits the pixel hash misses.

The hash and threshold were chosen on flowers with `bench/near_duplicates.py`: a 64-bit difference
hash (dHash) moved up to 9 bits under JPEG re-encoding and resizing while unrelated photos of a
flower centred on a dark background came within 5, so no threshold separated them; pHash moved at
most 4 bits on the same copies, and the pairs of distinct files it puts within 8 bits were, looked at,
nearly all edits of one photo. Groups are connected components (a ~ b ~ c is one group).
Dropping or merging a group produces the same override decisions the drop feature writes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image

# Photos whose pHashes differ in at most this many of 63 bits are near-duplicates (see the module docstring):
# twice the most a re-encoded or resized copy moved.
NEAR_HAMMING = 8
_SIDE = 32  # the grey thumbnail the DCT is taken of
_DCT = np.cos(np.pi * (2 * np.arange(_SIDE)[None, :] + 1) * np.arange(_SIDE)[:, None] / (2 * _SIDE))
# Bottleneck vectors at least this cosine-similar are near-duplicates. Not yet measured on real photos with
# the real backbone (bench/near_duplicates.py measures the hash only): a conservative starting point.
NEAR_COSINE = 0.97


def perceptual_hash(rgb: np.ndarray) -> str:
    """The 63-bit perceptual hash (pHash) of an RGB image, as 16 hex digits."""
    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX), np.float64)
    low = (_DCT @ grey @ _DCT.T)[:8, :8].flatten()[1:]  # the DC term is the mean brightness: left out
    bits = low > np.median(low)
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):016x}"


def hamming(first: str, second: str) -> int:
    """How many bits two perceptual hashes differ in."""
    return (int(first, 16) ^ int(second, 16)).bit_count()


def hash_groups(files: Sequence[str], hashes: Sequence[str], max_distance: int = NEAR_HAMMING) -> list[list[str]]:
    """Groups (2+ files, file order) of images whose hashes are within `max_distance` bits; "" hashes are skipped."""
    known = [(file, int(h, 16)) for file, h in zip(files, hashes, strict=True) if h]
    if len(known) < 2:
        return []
    values = np.array([value for _, value in known], dtype=np.uint64)
    parent = list(range(len(known)))
    for i in range(len(known)):
        # XOR against all later hashes at once, then count bits: O(n^2) in numpy, fine for tens of thousands.
        xor = np.bitwise_xor(values[i + 1 :], values[i])
        distances = _popcount(xor)
        for j in np.nonzero(distances <= max_distance)[0]:
            _union(parent, i, i + 1 + int(j))
    return _components(parent, [file for file, _ in known])


def bottleneck_groups(files: Sequence[str], vectors: np.ndarray, min_cosine: float = NEAR_COSINE) -> list[list[str]]:
    """Groups (2+ files) of images whose bottleneck vectors are at least `min_cosine` similar."""
    if len(files) < 2:
        return []
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    parent = list(range(len(files)))
    for start in range(0, len(files), 1024):  # blocks keep the similarity matrix small
        similar = unit[start : start + 1024] @ unit.T
        for i, j in zip(*np.nonzero(similar >= min_cosine), strict=True):
            if start + i < j:
                _union(parent, start + int(i), int(j))
    return _components(parent, list(files))


def cached_bottleneck_groups(dataset, backbone, bottleneck_dir, min_cosine: float = NEAR_COSINE) -> list[dict]:
    """Near-duplicate groups of a dataset's usable images by backbone features (computed only when not cached):
    [{"files": [...], "labels": [...]}]."""
    from pipeline.suspects import dataset_bottlenecks

    features = dataset_bottlenecks(dataset, backbone, bottleneck_dir)
    label_of = dict(zip(features.rows["file"], features.rows["label"], strict=True))
    groups = bottleneck_groups(list(features.rows["file"]), features.x, min_cosine)
    return [{"files": group, "labels": [label_of[file] for file in group]} for group in groups]


def table_groups(table, max_distance: int = NEAR_HAMMING) -> list[dict]:
    """Near-duplicate groups of a dataset table's usable rows: [{"files": [...], "labels": [...]}], file order."""
    usable = table[(table["status"] == "ok") & (table["phash"] != "")]
    label_of = dict(zip(usable["file"], usable["label"], strict=True))
    groups = hash_groups(list(usable["file"]), list(usable["phash"]), max_distance)
    return [{"files": group, "labels": [label_of[file] for file in group]} for group in groups]


def keep_one_decisions(group: Sequence[str], keep: str) -> list[str]:
    """The files to drop so only `keep` of a group stays (each one a `dataset.save_override(..., drop=True)`)."""
    if keep not in group:
        raise ValueError(f"{keep} is not in the group")
    return [file for file in group if file != keep]


def drop_duplicates(overrides_path, group: Sequence[str], keep: str) -> list[str]:
    """Drop every file of a near-duplicate group but `keep`, as the drop feature does; the dropped files."""
    from pipeline.dataset import save_override

    dropped = keep_one_decisions(group, keep)
    for file in dropped:
        save_override(overrides_path, file, drop=True)
    return dropped


def merge_label(overrides_path, group: Sequence[str], label: str) -> None:
    """Give every file of a group one label (a group split across classes is one photo): relabel decisions."""
    from pipeline.dataset import save_override
    from pipeline.errors import RetrainError

    # Checked before anything is written: "" would erase the group's decisions, and a control character makes
    # the loader set every photo of the group aside as a problem (labels.txt holds one label a line).
    if not isinstance(label, str) or not label.strip():
        raise RetrainError("the label to merge the group into is empty; choose one of the classes")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in label):
        raise RetrainError(f"the label {label!r} contains a control character (newline, tab, ...); choose another")
    for file in group:
        save_override(overrides_path, file, label=label)


def _popcount(values: np.ndarray) -> np.ndarray:
    bytes_view = values.view(np.uint8).reshape(-1, 8)
    return np.unpackbits(bytes_view, axis=1).sum(axis=1)


def _union(parent: list[int], a: int, b: int) -> None:
    root_a, root_b = _find(parent, a), _find(parent, b)
    if root_a != root_b:
        parent[max(root_a, root_b)] = min(root_a, root_b)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _components(parent: list[int], files: list[str]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for i, file in enumerate(files):
        groups.setdefault(_find(parent, i), []).append(file)
    return sorted((sorted(group) for group in groups.values() if len(group) > 1), key=lambda group: group[0])
