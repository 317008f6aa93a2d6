"""Backbones: the torch-free weights reader, our EfficientNet-Lite0 against the reference, the build cache,
the Keras Applications wrappers (untrained, offline), a user's own .keras model, and the registry."""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import subprocess
import sys
import time
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.backbones import (
    backbone_input_size,
    efficientnet_lite,
    keras_apps,
    list_backbones,
    load_backbone,
    load_imagenet_classifier,
)
from pipeline.backbones.torch_weights import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, read_torch_state_dict
from pipeline.errors import BackboneUnavailable, RetrainError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "efficientnet_lite0.keras"
FLOWERS = SHARED / "datasets" / "flowers"
DAISY = 985  # ImageNet class "daisy"

needs_shared = pytest.mark.skipif(
    not (REFERENCE.is_file() and FLOWERS.is_dir()),
    reason=f"shared test data (reference model, flower photos) not found beside the repo at {SHARED}",
)


def photos(paths: list[Path], size: int = 224) -> np.ndarray:
    """Center-cropped, bilinear-resized RGB float 0–255 batch; both models under comparison see these arrays."""
    images = [ImageOps.fit(Image.open(p).convert("RGB"), (size, size), Image.BILINEAR) for p in paths]
    return np.stack([np.asarray(image, dtype=np.float32) for image in images])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """Our Lite0 classifier, built once for this module in its own cache folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path_factory.mktemp("backbone_cache")))
        yield load_imagenet_classifier()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RETRAIN_STUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "backbones"


# ---------------------------------------------------------------------------------------------- Lite0 vs reference


@needs_shared
def test_lite0_matches_reference_on_real_photos(classifier):
    import keras

    all_photos = sorted(FLOWERS.glob("*/*.jpg"))
    batch = photos(all_photos[:: len(all_photos) // 16][:16])
    reference = keras.saving.load_model(REFERENCE)

    def features_and_probabilities(model):
        probe = keras.Model(model.input, [model.get_layer("global_pool").output, model.get_layer("predictions").output])
        return probe.predict(batch, verbose=0)

    ours, theirs = features_and_probabilities(classifier), features_and_probabilities(reference)
    feature_diff = float(np.abs(ours[0] - theirs[0]).max())
    probability_diff = float(np.abs(ours[1] - theirs[1]).max())
    print(f"max abs diff vs reference: global_pool {feature_diff:.3g}, predictions {probability_diff:.3g}")
    assert feature_diff < 1e-3 and probability_diff < 1e-3


@needs_shared
def test_lite0_recognises_daisies(classifier):
    batch = photos(sorted((FLOWERS / "daisy").glob("*.jpg"))[:20])
    top5 = np.argsort(classifier.predict(batch, verbose=0), axis=1)[:, -5:]
    assert np.mean([DAISY in row for row in top5]) >= 0.6


@needs_shared
@pytest.mark.parametrize("architecture", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lites_recognise_daisies(architecture, cache_dir):
    """Lite1 and Lite2 come from their own wheels through the same converter: wrong scaling would not load."""
    model = load_imagenet_classifier(architecture)
    size = backbone_input_size(architecture)
    assert (
        tuple(model.input.shape) == (None, size, size, 3)
        and size == {"efficientnet_lite1": 240, "efficientnet_lite2": 260}[architecture]
    )
    assert tuple(model.get_layer("global_pool").output.shape) == (None, 1280)
    batch = photos(sorted((FLOWERS / "daisy").glob("*.jpg"))[:20], size)
    top5 = np.argsort(model.predict(batch, verbose=0), axis=1)[:, -5:]
    assert np.mean([DAISY in row for row in top5]) >= 0.6
    backbone = load_backbone(architecture)
    assert backbone.identity.startswith(f"{architecture}|") and backbone.feature_dim == 1280


def test_lite_scaling_matches_googles_builder():
    """Lite2 = width 1.1, depth 1.2: channels rounded to multiples of 8, first and last stage repeats fixed."""
    lite2 = efficientnet_lite.VARIANTS["efficientnet_lite2"]
    assert [stage[0] for stage in lite2.stages()] == [1, 3, 3, 4, 4, 5, 1]
    assert [stage[4] for stage in lite2.stages()] == [16, 24, 48, 88, 120, 208, 352]
    assert len(list(efficientnet_lite.block_specs(efficientnet_lite.VARIANTS["efficientnet_lite1"]))) == 21
    assert len(list(efficientnet_lite.block_specs())) == 16  # Lite0 unchanged


def test_weights_of_another_size_are_refused():
    lite1, lite2 = (efficientnet_lite.VARIANTS[f"efficientnet_lite{n}"] for n in (1, 2))
    model = efficientnet_lite.build_architecture(lite2)
    with pytest.raises(BackboneUnavailable, match="efficientnet_lite2 weights file"):
        efficientnet_lite.assign_weights(model, read_torch_state_dict(efficientnet_lite.weights_path(lite1)), lite2)


def test_lite0_contract(classifier):
    assert classifier.input.name == "image" and tuple(classifier.input.shape) == (None, 224, 224, 3)
    assert tuple(classifier.get_layer("global_pool").output.shape) == (None, 1280)
    assert classifier.output_names == ["predictions"]
    assert tuple(classifier.output.shape) == (None, 1000)
    assert all(type(layer).__module__.startswith("keras.") for layer in classifier.layers)  # no custom objects


# ---------------------------------------------------------------------------------------------- built-model cache


def test_second_load_is_served_from_the_cache(cache_dir, monkeypatch):
    import keras

    first = load_backbone()
    assert not list(cache_dir.glob("*.keras")), "the model is built only when first used"
    first.model  # noqa: B018 - builds and caches it
    cached = list(cache_dir.glob("efficientnet_lite0-*.keras"))
    assert len(cached) == 1 and [path.name for path in cache_dir.iterdir()] == [cached[0].name]  # no temp files left
    assert first.identity.startswith("efficientnet_lite0|") and first.identity.endswith("|layer:global_pool")
    assert keras.saving.load_model(cached[0]).get_layer("global_pool")  # a plain .keras file, no custom objects

    def no_rebuild(_weights, _variant):
        raise AssertionError("the cached model should have been used")

    monkeypatch.setattr(efficientnet_lite, "build_imagenet_classifier", no_rebuild)
    started = time.perf_counter()
    second = load_backbone()
    second.model  # noqa: B018 - loads it from the cache file
    assert time.perf_counter() - started < 10
    assert second.identity == first.identity and second.feature_dim == 1280
    sample = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(second.model.predict(sample, verbose=0), first.model.predict(sample, verbose=0))


def test_damaged_cache_file_is_rebuilt(cache_dir):
    weights = efficientnet_lite.weights_path()
    damaged = efficientnet_lite.cached_model_path(efficientnet_lite.weights_id(weights))
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"PK\x03\x04 half a download")
    backbone = load_backbone()
    assert backbone.feature_dim == 1280 and backbone.model.output.shape[-1] == 1280
    assert damaged.stat().st_size > 1_000_000  # replaced by a real model


def test_named_lite0_layer_is_pooled_and_keyed_apart(classifier):  # served from the module's cache
    default, inner = load_backbone(), load_backbone("efficientnet_lite0", "block15_project_bn")
    assert inner.feature_dim == 320 and tuple(inner.model.output.shape) == (None, 320)
    assert inner.identity != default.identity and "block15_project_bn" in inner.identity
    with pytest.raises(RetrainError, match="no layer named 'nope'.*global_pool"):
        load_backbone("efficientnet_lite0", "nope")


# ---------------------------------------------------------------------------------------------- torch reader


class FakeStorage:
    """A flat buffer standing in for a torch storage when writing test files."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class FakeTensor:
    """Pickles the way a torch tensor does: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

    def __init__(self, storage: FakeStorage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def fake_torch_modules() -> dict[str, types.ModuleType]:
    """Just enough of a `torch` module for pickle to name the globals a real state dict names."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    utils._rebuild_tensor_v2 = lambda *args: None
    utils._rebuild_tensor_v2.__module__, utils._rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


def write_legacy_pth(path: Path, state_dict: dict, storages: list[FakeStorage], monkeypatch) -> None:
    """Write `state_dict` in torch's legacy layout (see torch_weights' docstring)."""
    with monkeypatch.context() as patch:
        modules = fake_torch_modules()
        for name, module in modules.items():
            patch.setitem(sys.modules, name, module)
        storage_class = {"<f4": "FloatStorage", "<i8": "LongStorage"}

        class LegacyPickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, FakeStorage):
                    storage_type = getattr(modules["torch"], storage_class[obj.data.dtype.str])
                    return ("storage", storage_type, obj.key, "cpu", obj.data.size)
                return None

        with path.open("wb") as handle:
            for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
                pickle.dump(header, handle, protocol=2)
            LegacyPickler(handle, protocol=2).dump(collections.OrderedDict(state_dict))
            pickle.dump([storage.key for storage in storages], handle, protocol=2)
            for storage in storages:
                handle.write(storage.data.size.to_bytes(8, "little") + storage.data.tobytes())


def test_torch_reader_round_trips_strides_offsets_and_scalars(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(4, 3, 2, 2)).astype("<f4")  # stored HWIO in memory, OIHW as a tensor, like the real file
    hwio = FakeStorage("0", kernel.transpose(2, 3, 1, 0))
    shared = FakeStorage("1", np.arange(10, dtype="<f4"))  # two tensors viewing one storage at different offsets
    counter = FakeStorage("2", np.array([7], dtype="<i8"))
    state_dict = {
        "conv.weight": FakeTensor(hwio, 0, (4, 3, 2, 2), (1, 4, 24, 12)),
        "bn.weight": FakeTensor(shared, 0, (4,), (1,)),
        "bn.bias": FakeTensor(shared, 4, (3, 2), (2, 1)),
        "bn.num_batches_tracked": FakeTensor(counter, 0, (), ()),
    }
    path = tmp_path / "tiny.pth"
    write_legacy_pth(path, state_dict, [hwio, shared, counter], monkeypatch)

    weights = read_torch_state_dict(path)
    assert list(weights) == list(state_dict)
    np.testing.assert_array_equal(weights["conv.weight"], kernel)
    np.testing.assert_array_equal(weights["bn.weight"], [0, 1, 2, 3])
    np.testing.assert_array_equal(weights["bn.bias"], [[4, 5], [6, 7], [8, 9]])
    assert weights["bn.num_batches_tracked"].shape == () and weights["bn.num_batches_tracked"] == 7
    assert "torch" not in sys.modules


def test_torch_reader_refuses_tensors_reaching_outside_their_storage(tmp_path, monkeypatch):
    storage = FakeStorage("0", np.zeros(4, dtype="<f4"))
    path = tmp_path / "hostile.pth"
    write_legacy_pth(path, {"w": FakeTensor(storage, 0, (4, 4), (4, 1))}, [storage], monkeypatch)
    with pytest.raises(BackboneUnavailable, match="hostile.pth"):
        read_torch_state_dict(path)


class RunsShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("position", ["header", "state_dict"])
def test_torch_reader_refuses_a_malicious_pickle(tmp_path, position):
    marker, path = tmp_path / "pwned", tmp_path / "malicious.pth"
    with path.open("wb") as handle:
        if position == "state_dict":
            for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
                pickle.dump(header, handle, protocol=2)
        pickle.dump({"weight": RunsShellCommand(marker)}, handle, protocol=2)
    with pytest.raises(BackboneUnavailable, match=r"malicious\.pth.*refused to load (posix|os)\.system"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_torch_reader_rejects_truncated_and_zip_files(tmp_path):
    real = efficientnet_lite.weights_path().read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(real[: len(real) // 2])
    with pytest.raises(BackboneUnavailable, match="truncated.pth.*ends early"):
        read_torch_state_dict(truncated)
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(BackboneUnavailable, match="zip format"):
        read_torch_state_dict(zipped)


def test_torch_reader_reads_the_packaged_weights():
    weights = read_torch_state_dict(efficientnet_lite.weights_path())
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3) and weights["_fc.weight"].shape == (1000, 1280)
    assert all(array.flags["C_CONTIGUOUS"] for array in weights.values())


# ---------------------------------------------------------------------------------------------- Keras Applications


def inner_network(model):
    """The headless network nested inside a wrapped Keras Application backbone."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def test_mobilenet_width_layers_and_tf_preprocessing():
    backbone = keras_apps.load_keras_app("mobilenet_v2_0.35", 96, weights=None)
    assert backbone.feature_dim == 1280 and tuple(backbone.model.input.shape) == (None, 96, 96, 3)
    images = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    ours = backbone.model.predict(images, verbose=0)
    np.testing.assert_allclose(ours, inner_network(backbone.model).predict(images / 127.5 - 1, verbose=0), atol=1e-5)

    block = keras_apps.load_keras_app("mobilenet_v2_0.35", 96, "block_6_expand_relu", weights=None)
    assert block.feature_dim == 96 and block.model.predict(images, verbose=0).shape == (2, 96)
    assert block.identity.endswith("layer:block_6_expand_relu") and block.identity != backbone.identity
    with pytest.raises(RetrainError, match="no layer named 'block_99'.*out_relu"):
        keras_apps.load_keras_app("mobilenet_v2_0.35", 96, "block_99", weights=None)


def test_resnet50_reads_rgb_with_caffe_preprocessing_inside():
    import keras

    backbone = keras_apps.load_keras_app("resnet50", 32, weights=None)
    assert backbone.feature_dim == 2048
    original = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    original.set_weights(inner_network(backbone.model).get_weights())
    conv1 = original.get_layer("conv1_conv")
    kernel, bias = conv1.get_weights()
    conv1.set_weights([kernel[:, :, ::-1, :], bias])  # undo the RGB→BGR fold to get Keras's own network back
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = original.predict(keras.applications.resnet50.preprocess_input(images.copy()), verbose=0)
    np.testing.assert_allclose(backbone.model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_inception_v3_default_bottleneck():
    backbone = keras_apps.load_keras_app("inception_v3", 75, weights=None)
    assert backbone.feature_dim == 2048 and backbone.identity.endswith("layer:mixed10")


def test_failed_download_says_which_backbone_and_points_offline(tmp_path, monkeypatch):
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # ignore any weights cached on this machine
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    started = time.perf_counter()
    with pytest.raises(BackboneUnavailable) as raised:
        load_backbone("mobilenet_v2_0.35")
    message = str(raised.value)
    assert "mobilenet_v2_0.35" in message and "internet" in message and "efficientnet_lite0" in message
    assert "\n" not in message and time.perf_counter() - started < 30


def test_other_construction_errors_are_not_called_download_failures():
    assert not keras_apps._is_download_failure(ValueError("input_shape must be at least 32"))
    with pytest.raises(ValueError):
        keras_apps.load_keras_app("resnet50", 8, weights=None)  # too small for ResNet-50: Keras's own error


# ---------------------------------------------------------------------------------------------- registry


def test_list_and_sizes_without_tensorflow():
    code = (
        "import sys; from pipeline.backbones import list_backbones, backbone_input_size; list_backbones(); "
        "print([backbone_input_size(n) for n in ('efficientnet_lite0', 'inception_v3', 'mobilenet_v2_0.35')]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[224, 299, 224]"


def test_catalogue():
    backbones = list_backbones()
    assert backbones[0].name == "efficientnet_lite0" and backbones[0].offline
    assert {b.name for b in backbones} == {
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "efficientnet_lite0+efficientnet_lite1",
        "inception_v3",
        "mobilenet_v2",
        "resnet50",
    }
    assert [b.offline for b in backbones] == [True, True, True, True, False, False, False]
    assert all(b.description for b in backbones)
    assert [backbone_input_size(n) for n in ("resnet50", "mobilenet_v2", "mobilenet_v2_1.4")] == [224, 224, 224]
    assert [backbone_input_size(f"efficientnet_lite{n}") for n in range(3)] == [224, 240, 260]
    assert backbone_input_size("efficientnet_lite0+efficientnet_lite1") == 240


@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v2_0.6", "efficientnet_lite3", ""])
def test_unknown_architecture_lists_valid_names(name):
    with pytest.raises(RetrainError, match="Unknown architecture.*efficientnet_lite0.*inception_v3.*mobilenet_v2"):
        load_backbone(name)
    with pytest.raises(RetrainError, match="Unknown architecture"):
        backbone_input_size(name)


# ---------------------------------------------------------------------------------------------- user's own model


@pytest.fixture
def own_model(tmp_path) -> Path:
    import keras

    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, name="conv")(keras.layers.Rescaling(1 / 255)(image))
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    path = tmp_path / "mine.keras"
    keras.Model(image, keras.layers.Dense(3, name="logits")(x)).save(path)
    return path


def test_own_model_as_backbone(own_model):
    assert backbone_input_size(str(own_model)) == 32
    backbone = load_backbone(str(own_model), "features")
    assert backbone.input_size == 32 and backbone.feature_dim == 8
    assert hashlib.sha256(own_model.read_bytes()).hexdigest() in backbone.identity
    assert backbone.model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 8)
    assert load_backbone(str(own_model)).feature_dim == 3  # its output is already a vector: used as is
    assert load_backbone(str(own_model), "conv").feature_dim == 8  # a feature map gets pooled


def test_own_model_by_a_relative_and_an_absolute_path_is_cached_once(own_model, tmp_path, monkeypatch):
    """The identity is the file's content, not the path typed: its bottlenecks are computed once, whichever way (or
    from whichever copy) the file is named."""
    from imagegen import make_class_folders

    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks

    images = make_class_folders(tmp_path / "images", {"red": 2, "blue": 2}, size=(40, 40))
    items = [ExtractItem(str(path), f"{index:064d}") for index, path in enumerate(sorted(images.rglob("*.jpg")))]
    monkeypatch.chdir(own_model.parent)
    relative, absolute = load_backbone(own_model.name, "features"), load_backbone(str(own_model.resolve()), "features")
    assert relative.identity == absolute.identity and relative.name == own_model.name
    assert cache_bottlenecks(items, relative, tmp_path / "bottlenecks").computed == 4
    again = cache_bottlenecks(items, absolute, tmp_path / "bottlenecks")
    assert (again.computed, again.reused) == (0, 4)
    copy = tmp_path / "copy" / "renamed.keras"
    copy.parent.mkdir()
    copy.write_bytes(own_model.read_bytes())
    assert load_backbone(str(copy), "features").identity == relative.identity
    assert load_backbone(own_model.name, "conv").identity != relative.identity  # another layer is another backbone


def test_own_model_errors(own_model, tmp_path):
    import keras

    with pytest.raises(RetrainError, match="not found: .*missing.keras"):
        load_backbone(str(tmp_path / "missing.keras"))
    with pytest.raises(RetrainError, match="not found"):
        backbone_input_size(str(tmp_path / "missing.keras"))
    with pytest.raises(RetrainError, match="no layer named 'pool5'.*features"):
        load_backbone(str(own_model), "pool5")
    with pytest.raises(RetrainError, match=r"not a \.keras file"):
        load_backbone(str(tmp_path / "model.h5"))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(RetrainError, match="broken.keras"):
        load_backbone(str(broken))
    maps = tmp_path / "maps.keras"
    keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv")]).save(maps)
    with pytest.raises(RetrainError, match="give bottleneck_layer.*conv"):
        load_backbone(str(maps))
    wide = tmp_path / "wide.keras"
    keras.Sequential([keras.Input((16, 24, 3)), keras.layers.GlobalAveragePooling2D()]).save(wide)
    with pytest.raises(RetrainError, match="square"):
        backbone_input_size(str(wide))


def test_first_extraction_on_a_machine_builds_and_caches_the_model(cache_dir, tmp_path):
    """On a cold machine the lazily built model is built before the forward pass is compiled, not inside it."""
    from imagegen import make_class_folders

    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks

    images = make_class_folders(tmp_path / "images", {"red": 2})
    items = [ExtractItem(str(path), f"{index:064d}") for index, path in enumerate(sorted(images.rglob("*.jpg")))]
    result = cache_bottlenecks(items, load_backbone(), tmp_path / "bottlenecks")
    assert result.computed == 2 and not result.problems
    (built,) = cache_dir.glob("efficientnet_lite0-*.keras")
    from pipeline.files import current_umask

    assert built.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # readable as an open() file is, not mkstemp's 0600


def test_own_model_truncated_or_changed_while_read_is_refused_in_its_own_words(own_model, tmp_path, monkeypatch):
    """A .keras cut short by a copy is not "File not found" (Keras' words); a file saved over while it was loaded must
    not cache the old model's features under the new file's sha256."""
    from pipeline.backbones import custom

    cut = tmp_path / "cut.keras"
    cut.write_bytes(own_model.read_bytes()[:3000])
    with pytest.raises(RetrainError, match=r"cut.keras is not a whole \.keras file") as refused:
        load_backbone(str(cut), "features")
    assert "not found" not in str(refused.value).lower()

    other = tmp_path / "other.keras"
    other.write_bytes(own_model.read_bytes())
    with open(other, "ab") as handle:  # the same model, other bytes: another sha256
        handle.write(b"\0")
    load = custom._load

    def saved_over_while_loading(path):
        model = load(path)
        path.write_bytes(other.read_bytes())
        return model

    monkeypatch.setattr(custom, "_load", saved_over_while_loading)
    with pytest.raises(RetrainError, match="mine.keras changed while it was being read"):
        load_backbone(str(own_model), "features")

    def deleted_while_loading(path):
        model = load(path)
        path.unlink()
        return model

    monkeypatch.setattr(custom, "_load", deleted_while_loading)
    with pytest.raises(RetrainError, match="mine.keras could not be read"):
        load_backbone(str(own_model), "features")
