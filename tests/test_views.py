"""The mirror view: exact, keyed apart, and inside the model, so a saved classifier does the same by itself."""

from __future__ import annotations

import numpy as np

from pipeline.backbones import load_backbone
from pipeline.backbones.views import mirror_image


def test_mirror_is_an_exact_flip():
    import keras

    inputs = keras.Input((5, 7, 3))
    model = keras.Model(inputs, mirror_image(inputs))
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    assert np.array_equal(model.predict(images, verbose=0), images[:, :, ::-1])


def test_mirror_view_averages_both_views_and_survives_saving(tiny_backbone_file, tmp_path):
    import keras

    plain = load_backbone(str(tiny_backbone_file), "features")
    mirrored = load_backbone(str(tiny_backbone_file), "features", mirror_view=True)
    assert mirrored.identity == plain.identity + "|views:mirror" and mirrored.feature_dim == plain.feature_dim
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    expected = (plain.model.predict(images, verbose=0) + plain.model.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(mirrored.model.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, plain.model.predict(images, verbose=0))  # the view changes the features

    path = tmp_path / "mirrored.keras"
    mirrored.model.save(path)
    reloaded = keras.saving.load_model(path)  # safe mode, no custom objects
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
