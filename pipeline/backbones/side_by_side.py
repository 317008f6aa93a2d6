"""Two offline backbones side by side, their features of a photo concatenated: "efficientnet_lite0+efficientnet_lite1".

A linear head on one Lite backbone's features stops near 0.93 on flowers, whatever the view, resolution or
feature transform (README, "The accuracy experiments"). Two backbones' features together are what moved it:
Lite0 + Lite1 with the mirror view, chosen by cross-validation without the test split, gives 0.936–0.953 over
seeds 0–4 (bench/). Each photo then costs both forward passes.

The pair is one Keras model, so everything downstream treats it as one backbone: the bottleneck cache keys it
by both parts' identities, both runtimes run it, and every export carries both networks behind one input. That
input has the larger part's side; the other part gets the same photo resized inside the model (bilinear), so
the exported model needs no code of ours and every runtime sees the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.backbones import custom
from pipeline.backbones.bottleneck import Backbone
from pipeline.errors import RetrainError

if TYPE_CHECKING:
    import keras

SEPARATOR = "+"
LITE0_AND_LITE1 = "efficientnet_lite0+efficientnet_lite1"  # the pair that beat every single backbone on flowers
PARTS = 2  # more would multiply every photo's cost again for a gain nobody measured


def is_side_by_side(architecture: str) -> bool:
    """Whether `architecture` names backbones joined by "+" (a model file's path, "+" in it or not, never does)."""
    return SEPARATOR in architecture and not custom.is_model_path(architecture)


def split_names(architecture: str) -> list[str]:
    """The names joined by "+", spaces around them dropped, unchecked: "a + b" → ["a", "b"]."""
    return [name.strip() for name in architecture.split(SEPARATOR)]


def part_names(architecture: str, offline: tuple[str, ...]) -> list[str]:
    """The parts of a side-by-side name, each one of the `offline` backbones; a clear error otherwise."""
    names = split_names(architecture)
    choices = ", ".join(offline)
    if len(names) != PARTS or len(set(names)) != PARTS or not all(name in offline for name in names):
        raise RetrainError(
            f"Architecture {architecture!r:.80}: two different offline backbones joined by '+' are accepted "
            f"(choose from {choices}), e.g. 'efficientnet_lite0+efficientnet_lite1'."
        )
    return names


def input_size(sizes: list[int]) -> int:
    """The pair's input side: the larger part's, so neither part is fed a photo upsampled by us."""
    return max(sizes)


def join(architecture: str, parts: list[Backbone]) -> Backbone:
    """One Backbone computing `parts`' features of the same photo, concatenated in the order given."""
    size = input_size([part.input_size for part in parts])
    identity = SEPARATOR.join(f"[{part.identity}]" for part in parts) + f"|input:{size}"
    return Backbone(
        architecture,
        size,
        identity,
        sum(part.feature_dim for part in parts),
        model_loader=_builder(architecture, parts, size),
    )


def _builder(architecture: str, parts: list[Backbone], size: int) -> Callable[[], keras.Model]:
    return lambda: side_by_side_model(architecture, [part.model for part in parts], size)


def side_by_side_model(architecture: str, models: list[keras.Model], size: int) -> keras.Model:
    """(N, size, size, 3) RGB 0–255 → each model's features of the photo, concatenated."""
    import keras

    image = keras.Input((size, size, 3), name="image")
    features = []
    for index, model in enumerate(models):
        side = int(model.input_shape[1])
        # Half-pixel bilinear resizing converts to TFLite's RESIZE_BILINEAR and to ONNX's Resize alike.
        view = image if side == size else keras.layers.Resizing(side, side, name=f"resize_for_part{index}")(image)
        features.append(model(view))
    joined = keras.layers.Concatenate(name="side_by_side_features")(features)
    return keras.Model(image, joined, name=architecture.replace(SEPARATOR, "_and_"))
