"""The backbone runtime: LiteRT features agree with TensorFlow's, the cache key names the runtime, the converted
.tflite is cached and repaired, and a user's own model stays on TensorFlow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.backbones import load_backbone, runtime
from pipeline.bottlenecks import ExtractItem, cache_bottlenecks, compiled_forward
from pipeline.images import load_for_model
from tests.conftest import FLOWERS, needs_flowers

pytestmark = pytest.mark.skipif(not runtime.litert_installed(), reason="ai-edge-litert is not installed")


@pytest.fixture(scope="module")
def lite0():
    """The real Lite0; its .tflite is converted once into the tests' shared backbone cache."""
    return load_backbone("efficientnet_lite0")


def flower_photos(count: int) -> list[Path]:
    every = sorted(FLOWERS.glob("*/*.jpg"))
    return every[:: max(len(every) // count, 1)][:count]


@needs_flowers()
def test_litert_features_match_tensorflow_on_real_photos(lite0):
    images = np.stack([load_for_model(path, lite0.input_size) for path in flower_photos(12)])
    litert = runtime.backbone_forward(lite0)(images)
    tensorflow = compiled_forward(lite0)(images).numpy()
    assert isinstance(runtime.backbone_forward(lite0), runtime.LiteRTRunner)
    assert litert.shape == (12, 1280) and litert.dtype == np.float32
    assert float(np.abs(litert - tensorflow).max()) < 1e-4


@needs_flowers()
def test_cache_keys_say_which_runtime_made_them(lite0, tmp_path, monkeypatch):
    items = [ExtractItem(str(path), f"{i:064x}") for i, path in enumerate(flower_photos(3))]
    first = cache_bottlenecks(items, lite0, tmp_path)
    assert first.computed == 3 and runtime.feature_identity(lite0).endswith("|runtime:litert")
    assert cache_bottlenecks(items, lite0, tmp_path).reused == 3

    monkeypatch.setenv(runtime.RUNTIME_ENV, "tensorflow")
    tensorflow_backbone = load_backbone("efficientnet_lite0")
    assert runtime.feature_identity(tensorflow_backbone).endswith("|runtime:tensorflow")
    second = cache_bottlenecks(items, tensorflow_backbone, tmp_path)
    assert second.computed == 3 and second.reused == 0  # never served the other runtime's vectors
    for item in items:
        assert float(np.abs(first.vectors[item] - second.vectors[item]).max()) < 1e-4


def test_damaged_tflite_is_reconverted(tmp_path, monkeypatch, tiny_backbone_file):
    import keras

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path))
    model = keras.saving.load_model(tiny_backbone_file)
    features = keras.Model(model.input, model.get_layer("features").output)
    path = runtime.tflite_path("tiny|test", "tiny")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"TFL3 half a flatbuffer")
    forward = runtime.litert_forward(lambda: features, "tiny|test", 32, "tiny")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = features.predict(images.astype(np.float32), verbose=0)
    assert float(np.abs(forward(images) - expected).max()) < 1e-4
    assert path.stat().st_size > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".sha256"]  # no temp left

    def no_conversion():
        raise AssertionError("the cached .tflite should have been used")

    again = runtime.litert_forward(no_conversion, "tiny|test", 32, "tiny")
    np.testing.assert_allclose(again(images), forward(images))

    # One flipped byte in the middle (a weight, most likely) passes the loader's structure check: the sha256 not.
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    rebuilt = runtime.litert_forward(lambda: features, "tiny|test", 32, "tiny")
    assert float(np.abs(rebuilt(images) - expected).max()) < 1e-4
    assert runtime._open_cached(path) is not None  # repaired on disk too


def test_unwritable_cache_runs_from_memory(tmp_path, monkeypatch, tiny_backbone_file):
    import keras

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    model = keras.saving.load_model(tiny_backbone_file)
    features = keras.Model(model.input, model.get_layer("features").output)
    forward = runtime.litert_forward(lambda: features, "tiny|unwritable", 32, "tiny")
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert float(np.abs(forward(images) - features.predict(images.astype(np.float32), verbose=0)).max()) < 1e-4


def test_a_wrong_conversion_is_refused(tmp_path, monkeypatch, tiny_backbone_file):
    import keras

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path))
    model = keras.saving.load_model(tiny_backbone_file)
    features = keras.Model(model.input, model.get_layer("features").output)
    other = keras.Model(model.input, keras.layers.Lambda(lambda x: x * 2.0)(features.output))
    flatbuffer = runtime.convert_to_tflite(other, 32)
    with pytest.raises(runtime.RetrainError, match="differs from TensorFlow"):
        runtime.check_conversion(features, flatbuffer, 32)


def test_runtime_choice(tiny_backbone_file, monkeypatch):
    assert runtime.runtime_for(str(tiny_backbone_file)) == runtime.TENSORFLOW  # a user's model: any layers
    assert runtime.runtime_for("efficientnet_lite2") == runtime.LITERT
    monkeypatch.setenv(runtime.RUNTIME_ENV, "TensorFlow")
    assert runtime.runtime_for("efficientnet_lite2") == runtime.TENSORFLOW


def test_predictor_runs_the_backbone_on_litert(tmp_path, monkeypatch, tiny_backbone_file):
    import keras

    from pipeline.export import build_classifier
    from pipeline.predict import Predictor

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path / "cache"))
    backbone = load_backbone(str(tiny_backbone_file), "features")
    inputs = keras.Input((backbone.feature_dim,))
    head = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    classifier = build_classifier(backbone.model, head, 32)
    classifier.save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    expected = classifier.predict(images.astype(np.float32), verbose=0)

    predictor = Predictor(tmp_path / "model.keras")  # a model file with labels.txt beside it
    assert predictor._split is not None and isinstance(predictor._split[0], runtime.LiteRTRunner)
    assert float(np.abs(predictor.probabilities(images) - expected).max()) < 1e-5
    assert list((tmp_path / "cache" / "backbones").glob("*.tflite"))  # converted once, cached for every run

    monkeypatch.setenv(runtime.RUNTIME_ENV, "tensorflow")
    on_tensorflow = Predictor(tmp_path / "model.keras")
    assert on_tensorflow._split is None
    assert float(np.abs(on_tensorflow.probabilities(images) - expected).max()) < 1e-5


def test_temporaries_left_by_a_killed_write_are_swept_fresh_ones_and_other_files_kept(tmp_path, monkeypatch):
    """kill -9 while the pair's 30 MB .tflite (or a part's .keras) was being written leaves its hidden temporary
    copy: the next cache write removes it once it is older than any live write, and nothing else."""
    import os
    import time

    from pipeline.backbones import model_cache

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path))
    folder = model_cache.backbone_cache_dir()
    folder.mkdir(parents=True)
    old = time.time() - model_cache.STALE_TEMPORARY_SECONDS - 60
    left = [folder / ".pair-0123.tflite.abcd.tmp", folder / ".efficientnet_lite1-77cc-conv1.efgh.tmp.keras"]
    kept = [folder / ".pair-0123.tflite.live.tmp", folder / "notes.tmp", folder / ".hidden-notes.txt"]
    for path in left + kept:
        path.write_bytes(b"x" * 10)
    for path in left + kept[1:]:
        os.utime(path, (old, old))
    runtime.write_tflite(b"flatbuffer", folder / "pair-0123.tflite")
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in kept)
    assert (folder / "pair-0123.tflite").read_bytes() == b"flatbuffer"


def test_a_full_disk_while_caching_a_backbone_warns_in_one_format(tmp_path, monkeypatch, caplog):
    """The built model (model_cache) and the converted .tflite (runtime) are both backbone caches: a full disk while
    writing either gives the same warning, naming the file, the disk's free space and what to do."""
    import errno
    import logging

    import keras

    from pipeline.backbones import model_cache

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path))
    monkeypatch.setattr(model_cache, "save_atomic", disk_full)
    monkeypatch.setattr(runtime, "write_bytes_atomic", disk_full)
    built = tmp_path / "backbones" / "tiny.keras"
    with caplog.at_level(logging.WARNING, logger="pipeline.backbones"):
        model = model_cache.load_or_build(built, lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        runtime.write_tflite(b"TFL3 flatbuffer", tmp_path / "backbones" / "tiny.tflite")
    assert model.output_shape == (None, 2)  # the run goes on from memory
    assert len(caplog.records) == 2, caplog.text
    shape = (
        r"Could not cache the (built model|converted backbone) at (.+): the disk holding (.+) is full "
        r"\([\d,.]+ MB free\)\. This run goes on, and the next one makes it again; free some space, or set "
        r"RETRAIN_STUDIO_CACHE to a folder that can be written"
    )
    found = [re.fullmatch(shape, record.getMessage()) for record in caplog.records]
    assert all(found), caplog.text
    assert [match.group(1) for match in found] == ["built model", "converted backbone"]
    assert [match.group(2) for match in found] == [str(built), str(tmp_path / "backbones" / "tiny.tflite")]


def test_preparing_says_first_time_on_this_server_until_the_conversion_is_cached(
    tmp_path, monkeypatch, tiny_backbone_file
):
    import keras

    from pipeline.backbones.bottleneck import Backbone

    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path))
    model = keras.saving.load_model(tiny_backbone_file)
    features = keras.Model(model.input, model.get_layer("features").output)

    def fresh() -> Backbone:  # a built-in-like name (not a file path), so it runs on LiteRT
        return Backbone("tiny", 32, "tiny|prepare-test", int(features.output.shape[-1]), model_loader=lambda: features)

    first = fresh()
    assert runtime.preparation_words(first).startswith("first time on this server: building the model and converting")
    runtime.backbone_forward(first)
    assert runtime.preparation_words(first) == "ready"
    assert runtime.preparation_words(fresh()) == "opening the copy this server made before"
    monkeypatch.setenv(runtime.RUNTIME_ENV, "tensorflow")
    assert runtime.preparation_words(fresh()) == "starting TensorFlow and loading the model"
