"""Which backbones exist, how big their input is, and loading one by name.

Listing and input sizes must not import TensorFlow (the app shows them before anything heavy loads), so
this module and everything it imports at the top keep Keras imports inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.backbones import custom, efficientnet_lite, keras_apps, side_by_side, views
from pipeline.backbones.bottleneck import Backbone
from pipeline.errors import RetrainError
from pipeline.files import has_control_character

if TYPE_CHECKING:
    import keras

DEFAULT_BACKBONE = efficientnet_lite.LITE0.name
LITE = efficientnet_lite.VARIANTS
OFFLINE = tuple(LITE)  # the backbones whose weights ship with the app: the only ones a side-by-side pair may join
LITE0_AND_LITE1 = side_by_side.LITE0_AND_LITE1


@dataclass(frozen=True)
class BackboneInfo:
    """What the app shows about a built-in backbone before loading it (no TensorFlow needed)."""

    name: str  # "efficientnet_lite0", "efficientnet_lite1", ..., "inception_v3", "mobilenet_v2", "resnet50"
    input_size: int  # square side in pixels
    offline: bool  # True when no download is ever needed; the others need internet once
    description: str  # one line for the UI


CATALOGUE = (
    BackboneInfo(
        DEFAULT_BACKBONE,
        LITE[DEFAULT_BACKBONE].input_size,
        True,
        "EfficientNet-Lite0 (default): fast and accurate; works offline, its weights ship with the app.",
    ),
    BackboneInfo(
        "efficientnet_lite1",
        LITE["efficientnet_lite1"].input_size,
        True,
        "EfficientNet-Lite1: wider and deeper than Lite0, 240 px input; slower, and not always more accurate "
        "(see Compare backbones). Works offline.",
    ),
    BackboneInfo(
        "efficientnet_lite2",
        LITE["efficientnet_lite2"].input_size,
        True,
        "EfficientNet-Lite2: the largest offline one, 260 px input; the slowest of the three, and not always "
        "the most accurate (see Compare backbones). Works offline.",
    ),
    BackboneInfo(
        LITE0_AND_LITE1,
        side_by_side.input_size([LITE["efficientnet_lite0"].input_size, LITE["efficientnet_lite1"].input_size]),
        True,
        "Lite0 and Lite1 side by side, their features joined: the most accurate offline choice (best with the "
        "mirror view); each photo goes through both, so it takes about as long as the two together. Works offline.",
    ),
    BackboneInfo(
        "inception_v3",
        299,
        False,
        "Inception V3: retrain.py's classic default; larger and slower. Needs internet once.",
    ),
    BackboneInfo(
        "mobilenet_v2",
        224,
        False,
        "MobileNet V2: small and fast; widths mobilenet_v2_0.35 … _1.4 also accepted. Needs internet once.",
    ),
    BackboneInfo("resnet50", 224, False, "ResNet-50: a large, strong classic. Needs internet once."),
)


def list_backbones() -> list[BackboneInfo]:
    """The built-in backbones, the offline default first."""
    return list(CATALOGUE)


def check_architecture(architecture: str, bottleneck_layer: str | None = None) -> None:
    """Refuse, in one line and without loading anything, what no backbone can be: a name holding a control
    character, a side-by-side name other than two different offline backbones, or a pair with a bottleneck layer.

    Loading a backbone and `RunConfig.validate` both call this, so a run is refused before it starts, in the words
    loading would use.
    """
    if has_control_character(architecture):  # "lite0\n+lite1" must not be stripped into a pair, nor printed raw
        raise RetrainError(
            f"Architecture {architecture!r:.80} holds a control character (newline, tab, ...): type the backbone's "
            "name again without it, or rename the .keras file."
        )
    if not side_by_side.is_side_by_side(architecture):
        return
    side_by_side.part_names(architecture, OFFLINE)
    if bottleneck_layer:
        raise RetrainError(
            f"bottleneck_layer does not apply to {architecture!r:.80}: two backbones side by side always join their "
            "pooled features. Leave it unset, or choose one backbone."
        )


def backbone_input_size(architecture: str) -> int:
    """The square image side `architecture` expects: a built-in name (with width suffix) or a .keras path."""
    check_architecture(architecture)
    if custom.is_model_path(architecture):
        return custom.input_size(architecture)
    if side_by_side.is_side_by_side(architecture):
        return side_by_side.input_size(
            [LITE[name].input_size for name in side_by_side.part_names(architecture, OFFLINE)]
        )
    return _info(architecture).input_size


def load_backbone(
    architecture: str = DEFAULT_BACKBONE, bottleneck_layer: str | None = None, mirror_view: bool = False
) -> Backbone:
    """The backbone named `architecture`, cut at `bottleneck_layer` (default: its pooled features).

    With `mirror_view`, its features are the mean over each image and its mirror image (see `views`).
    """
    backbone = _load(architecture, bottleneck_layer)
    return views.with_mirror_view(backbone) if mirror_view else backbone


def _load(architecture: str, bottleneck_layer: str | None) -> Backbone:
    check_architecture(architecture, bottleneck_layer)
    if custom.is_model_path(architecture):
        return custom.load_custom_backbone(architecture, bottleneck_layer)
    if side_by_side.is_side_by_side(architecture):
        return _load_side_by_side(architecture)
    info = _info(architecture)
    if info.name in LITE:
        return efficientnet_lite.load_backbone(bottleneck_layer, LITE[info.name])
    return keras_apps.load_keras_app(architecture, info.input_size, bottleneck_layer)


def _load_side_by_side(architecture: str) -> Backbone:
    names = side_by_side.part_names(architecture, OFFLINE)
    parts = [efficientnet_lite.load_backbone(None, LITE[name]) for name in names]
    return side_by_side.join(side_by_side.SEPARATOR.join(names), parts)  # "a + b" is "a+b"


def load_imagenet_classifier(architecture: str = DEFAULT_BACKBONE) -> keras.Model:
    """A full EfficientNet-Lite with its 1000-way ImageNet `predictions` output (for tests and sanity checks)."""
    if architecture not in LITE:
        raise _unknown_architecture(architecture)
    return efficientnet_lite.load_imagenet_classifier(LITE[architecture])


def _info(architecture: str) -> BackboneInfo:
    """The catalogue entry for a name; width variants such as "mobilenet_v2_0.35" map to their family."""
    family = architecture
    if architecture not in LITE:
        try:
            family, _ = keras_apps.parse_app_name(architecture)
        except KeyError:
            raise _unknown_architecture(architecture) from None
    return next(info for info in CATALOGUE if info.name == family)


def _unknown_architecture(architecture: str) -> RetrainError:
    widths = ", ".join(f"_{width}" for width in keras_apps.MOBILENET_V2_WIDTHS)
    valid = ", ".join(info.name for info in CATALOGUE)
    return RetrainError(
        f"Unknown architecture {architecture!r:.80}. Valid: {valid} (mobilenet_v2 also as {widths}), "
        "or the path of your own .keras model."
    )
