"""Two offline backbones side by side: names, sizes and keys without TensorFlow; features equal to both parts'."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOWERS, flowers_subset, needs_flowers

from pipeline.backbones import backbone_input_size, list_backbones, load_backbone, runtime
from pipeline.bundle import bundle_bytes
from pipeline.config import OutputConfig, RunConfig, TrainConfig
from pipeline.errors import RetrainError
from pipeline.predict import Predictor
from pipeline.retrain import retrain

REPO = Path(__file__).resolve().parents[1]
PAIR = "efficientnet_lite0+efficientnet_lite1"


def test_pair_is_offered_with_its_size_and_key_without_tensorflow():
    code = (
        "import sys; from pipeline.backbones import load_backbone, backbone_input_size; "
        f"b = load_backbone({PAIR!r}); m = load_backbone({PAIR!r}, mirror_view=True); "
        f"print(backbone_input_size({PAIR!r}), b.input_size, b.feature_dim); print(b.identity); print(m.identity); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    sizes, identity, mirrored = result.stdout.strip().splitlines()
    assert sizes == "240 240 2560"  # Lite1's side; 1280 + 1280 features
    lite0, lite1 = load_backbone("efficientnet_lite0").identity, load_backbone("efficientnet_lite1").identity
    # Keyed by both parts' exact weights, in order, so a pair never shares cached vectors with either part.
    assert identity == f"[{lite0}]+[{lite1}]|input:240"
    assert mirrored == f"{identity}|views:mirror"
    assert PAIR in {info.name for info in list_backbones()}


def test_parts_in_the_other_order_are_another_backbone():
    swapped = load_backbone("efficientnet_lite1+efficientnet_lite0")
    assert swapped.input_size == 240 and swapped.identity != load_backbone(PAIR).identity


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_lite0+efficientnet_lite0",
        "efficientnet_lite0+resnet50",
        "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2",
        "efficientnet_lite0+",
        "+",
    ],
)
def test_only_two_different_offline_backbones_pair(name):
    """Refused up front by the run's settings too, in the words loading uses (not only once a run has started)."""
    said = set()
    for call in (
        lambda: load_backbone(name),
        lambda: backbone_input_size(name),
        lambda: RunConfig(train=TrainConfig(architecture=name)).validate(),
    ):
        with pytest.raises(RetrainError, match="two different offline backbones joined by '\\+'") as raised:
            call()
        said.add(str(raised.value))
    assert len(said) == 1, said


def test_pair_has_no_bottleneck_layer_to_choose():
    with pytest.raises(RetrainError, match="^bottleneck_layer does not apply to 'efficientnet_lite0") as loading:
        load_backbone(PAIR, "block6a_add")
    with pytest.raises(RetrainError) as validating:
        RunConfig(train=TrainConfig(architecture=PAIR, bottleneck_layer="block6a_add")).validate()
    assert str(validating.value) == str(loading.value)


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_lite0\n+efficientnet_lite1",
        "efficientnet_lite0+\tefficientnet_lite1",
        "efficientnet_lite0+efficientnet_lite1\r",
        "\x1b[2Jefficientnet_lite0+efficientnet_lite1",
        "efficientnet_lite0\u2028+efficientnet_lite1",
        "efficientnet_lite0\x00",
        "models/my\nmodel.keras",
        "efficientnet_lite0\u202e+efficientnet_lite1",  # a right-to-left override: the rest of the line reversed
        "models/\u2067sarek.keras",
    ],
)
def test_a_name_with_a_control_character_is_refused_in_one_line(name):
    """Spaces around '+' are forgiven; a newline or tab is not stripped into a valid pair (nor printed raw)."""
    from pipeline.files import has_control_character

    for call in (
        lambda: load_backbone(name),
        lambda: backbone_input_size(name),
        lambda: RunConfig(train=TrainConfig(architecture=name)).validate(),
    ):
        with pytest.raises(RetrainError, match="holds a control character") as raised:
            call()
        said = str(raised.value)
        assert not has_control_character(said) and len(said) < 300, said
        assert said.startswith(f"Architecture {name!r:.80}")


@pytest.mark.skipif(not runtime.litert_installed(), reason="ai-edge-litert is not installed")
def test_pair_features_are_both_parts_features_concatenated():
    """On LiteRT, as extraction runs it: Lite0 sees the photo resized to 224 inside the model, Lite1 the photo."""
    import keras

    images = np.random.default_rng(0).integers(0, 256, (3, 240, 240, 3), dtype=np.uint8)
    pair = runtime.backbone_forward(load_backbone(PAIR))(images)
    photo = images.astype(np.float32)
    lite0 = np.asarray(load_backbone("efficientnet_lite0").model(keras.layers.Resizing(224, 224)(photo)))
    lite1 = np.asarray(load_backbone("efficientnet_lite1").model(photo))
    expected = np.concatenate([lite0, lite1], axis=1)
    assert pair.shape == (3, 2560)
    assert float(np.abs(pair - expected).max()) < runtime.CONVERSION_TOLERANCE * max(1.0, float(np.abs(expected).max()))


@needs_flowers()
def test_a_run_on_the_pair_exports_agreeing_models_and_predicts_without_tensorflow(tmp_path):
    """The Best accuracy recipe end to end on real photos: the exports carry both networks and agree."""
    config = RunConfig(
        dataset=flowers_subset(tmp_path, ("daisy", "roses", "sunflowers"), 14),
        train=TrainConfig(architecture=PAIR, mirror_view=True, epochs=30),
        output=OutputConfig(
            bottleneck_dir=str(Path(os.environ["RETRAIN_STUDIO_CACHE"]) / "bottlenecks"),
            # Not tflite: its converter is the one that made the LiteRT pair checked above (features within 1e-4
            # of TensorFlow's), and exporting both networks again costs most of a minute.
            export_formats=["keras", "onnx"],
        ),
    )
    report = retrain(config, tmp_path / "run")
    assert report.test_images >= 3 and report.test_accuracy >= 0.6
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    parity = saved["export_parity"]
    assert parity["keras"] <= 1e-4 and parity["onnx"] <= 1e-3
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "done"
    card = zipfile.ZipFile(io.BytesIO(bundle_bytes(tmp_path / "run"))).read("run/MODEL_CARD.md").decode()
    assert "the `efficientnet_lite0` and `efficientnet_lite1` ImageNet backbones side by side" in card
    assert "Each photo is also seen mirrored left to right" in card
    photos = [str(sorted((FLOWERS / label).iterdir())[-1]) for label in ("daisy", "roses", "sunflowers")]
    from_head = Predictor(tmp_path / "run").predict_files(photos, k=2)  # the run's head on the pair's LiteRT model
    from_keras = Predictor(tmp_path / "run" / "model.keras").predict_files(photos, k=2)
    for head_answer, keras_answer in zip(from_head, from_keras, strict=True):
        assert [g["label"] for g in head_answer["predictions"]] == [g["label"] for g in keras_answer["predictions"]]
        for a, b in zip(head_answer["predictions"], keras_answer["predictions"], strict=True):
            assert abs(a["score"] - b["score"]) <= 1e-3


@pytest.mark.parametrize("path", ["models/my+model.keras", "my+model.H5", "C:\\a+b"])
def test_a_model_file_with_a_plus_in_its_name_is_a_model_file(path):
    from pipeline.backbones.side_by_side import is_side_by_side

    assert not is_side_by_side(path)


def test_spaces_around_the_plus_name_the_same_pair():
    spaced = load_backbone(" efficientnet_lite0 + efficientnet_lite1 ")
    assert spaced.name == PAIR and spaced.identity == load_backbone(PAIR).identity


def test_quick_after_best_accuracy_is_quick_again():
    """Presets are choices between recipes: Quick after Best accuracy must not keep two backbones and the mirror view
    (four times Quick's caching time, under the name "Quick (edited)")."""
    from pipeline.config import apply_preset

    back = apply_preset(apply_preset(RunConfig(), "Best accuracy"), "Quick")
    assert back == apply_preset(RunConfig(), "Quick")
    assert back.train.architecture == "efficientnet_lite0" and not back.train.mirror_view


def test_best_accuracy_over_earlier_backbone_settings_is_valid_at_once():
    """A bottleneck layer or fine-tuning chosen for one backbone would make the pair's run fail (or the page ask for a
    fix the user never made): the preset clears both."""
    from pipeline.config import apply_preset

    earlier = RunConfig(train=TrainConfig(bottleneck_layer="block6a_add", fine_tune_layers=4))
    best = apply_preset(earlier, "Best accuracy").validate()
    assert best.train.architecture == PAIR and best.train.bottleneck_layer is None and best.train.fine_tune_layers == 0


def test_a_bottleneck_layer_with_a_pair_is_refused_before_any_run_starts():
    with pytest.raises(RetrainError, match="^bottleneck_layer does not apply to 'efficientnet_lite0"):
        RunConfig(train=TrainConfig(architecture=PAIR, bottleneck_layer="global_pool")).validate()


@pytest.mark.parametrize("name", ["efficientnet_lite0+" + "x" * 100_000, "y" * 100_000])
def test_a_very_long_architecture_is_one_short_line(name):
    """The message quotes the start of the name: a 100 kB name must not become a 100 kB line (status, page, CLI)."""
    with pytest.raises(RetrainError) as raised:
        load_backbone(name)
    assert len(str(raised.value)) < 500 and "\n" not in str(raised.value)
