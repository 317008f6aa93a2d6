"""Head training on arrays: learns, is reproducible by seed, honours steps, weights and cancel."""

import numpy as np
import pytest

from pipeline.config import TrainConfig
from pipeline.errors import RunCancelled
from pipeline.train import HeadData, class_weights, schedule, train_head


def blobs(per_class=(60, 60, 60), dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(per_class), dim))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (n, dim)) for c, n in enumerate(per_class)])
    y = np.concatenate([[c] * n for c, n in enumerate(per_class)])
    return x.astype(np.float32), y


def data(per_class=(60, 60, 60)):
    x, y = blobs(per_class)
    xv, yv = blobs((15,) * len(per_class), seed=0)
    return HeadData(x, y, xv, yv, len(per_class))


def test_head_learns_separable_blobs():
    rows = []
    head, history = train_head(data(), TrainConfig(epochs=30, train_batch_size=32, learning_rate=0.01), rows.append)
    assert history == rows and len(rows) >= 1
    assert rows[-1]["val_accuracy"] > 0.9
    assert set(rows[0]) == {
        "step",
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "elapsed_seconds",
    }


def test_same_seed_same_model():
    config = TrainConfig(epochs=5, train_batch_size=32, dropout=0.3, seed=42)
    first, _ = train_head(data(), config)
    second, _ = train_head(data(), config)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_training_steps_mode_counts_steps():
    config = TrainConfig(how_many_training_steps=50, eval_step_interval=10, train_batch_size=16, early_stopping=0)
    assert schedule(config, 180) == (10, 5)
    _, rows = train_head(data(), config)
    assert [row["step"] for row in rows] == [10, 20, 30, 40, 50]


def test_early_stopping_stops_before_the_last_epoch():
    _, rows = train_head(data(), TrainConfig(epochs=300, early_stopping=2, learning_rate=0.05))
    assert len(rows) < 300


def test_class_weights_only_when_imbalanced():
    assert class_weights(np.array([0] * 10 + [1] * 10), 2) is None
    weights = class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert weights[1] > weights[0] and weights[1] / weights[0] == pytest.approx(9.0)


def test_no_validation_data_still_trains():
    d = data()
    d.x_val, d.y_val = d.x_val[:0], d.y_val[:0]
    _, rows = train_head(d, TrainConfig(epochs=3))
    assert rows[-1]["val_accuracy"] is None and rows[-1]["train_accuracy"] is not None


def test_cancel_stops_training():
    with pytest.raises(RunCancelled):
        train_head(data(), TrainConfig(epochs=50, early_stopping=0), should_stop=lambda: True)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_each_optimizer_with_hidden_layer(optimizer):
    _, rows = train_head(data(), TrainConfig(epochs=20, optimizer=optimizer, hidden_units=16, learning_rate=0.01))
    assert rows[-1]["val_accuracy"] > 0.8


def test_small_datasets_still_get_enough_steps():
    from pipeline.train import MIN_STEPS

    interval, rounds = schedule(TrainConfig(epochs=15, train_batch_size=32), 30)
    assert interval * rounds >= MIN_STEPS and rounds <= 41
    assert schedule(TrainConfig(epochs=40, train_batch_size=32), 2900) == (91, 40)  # large sets: per epoch


def test_head_saves_and_loads_exactly(tmp_path):
    from pipeline.head import Head

    head, _ = train_head(data(), TrainConfig(epochs=3, hidden_units=8))
    head.save(tmp_path / "head.npz")
    loaded = Head.load(tmp_path / "head.npz")
    x = data().x_val
    np.testing.assert_array_equal(loaded.probabilities(x), head.probabilities(x))
    assert loaded.hidden_units == 8 and loaded.num_classes == 3


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut short", b"\xff\xfe not npz"])
def test_damaged_head_file_is_refused_with_its_name(tmp_path, damage):
    from pipeline.errors import RetrainError
    from pipeline.head import Head

    path = tmp_path / "head.npz"
    path.write_bytes(damage)
    with pytest.raises(RetrainError, match="head.npz"):
        Head.load(path)


def test_head_matches_its_keras_twin():
    """The exported model is built from the NumPy head's weights: both must give the same probabilities."""
    config = TrainConfig(epochs=3, hidden_units=8, dropout=0.4)
    head, _ = train_head(data(), config)
    x = data().x_val
    np.testing.assert_allclose(head.to_keras(config).predict(x, verbose=0), head.probabilities(x), atol=1e-5)


def test_label_smoothing_and_class_weights_still_learn():
    d = data(per_class=(120, 30, 30))
    head, rows = train_head(d, TrainConfig(epochs=20, label_smoothing=0.1, learning_rate=0.01))
    assert rows[-1]["val_accuracy"] > 0.9


@pytest.mark.parametrize(
    "arrays",
    [
        [np.full((16, 3), "a"), np.zeros(3, np.float32)],  # text, not numbers
        [np.zeros((16, 3), np.complex64), np.zeros(3, np.complex64)],
        [np.zeros((16, 8), np.float32), np.zeros(8, np.float32), np.zeros((5, 3), np.float32), np.zeros(3)],
        [np.zeros((16, 3), np.float32), np.zeros(1, np.float32)],  # a bias that would broadcast silently
        [np.full((16, 3), np.nan, np.float32), np.zeros(3, np.float32)],
        [np.full((16, 3), np.inf, np.float32), np.zeros(3, np.float32)],
        [np.array([{"a": 1}] * 16, dtype=object).reshape(16, 1), np.zeros(1, np.float32)],  # pickled objects
    ],
    ids=["text", "complex", "layers-disagree", "short-bias", "nan", "inf", "pickle"],
)
def test_head_file_with_arrays_that_cannot_be_a_head_is_refused(tmp_path, arrays):
    """An npz of the right names but wrong contents is refused when loaded, not when it first answers (a traceback
    or NaN scores)."""
    from pipeline.errors import RetrainError
    from pipeline.head import Head

    path = tmp_path / "head.npz"
    np.savez(path, **{f"w{i}": array for i, array in enumerate(arrays)})
    with pytest.raises(RetrainError, match="head.npz"):
        Head.load(path)


def test_head_save_returns_the_digest_of_what_it_wrote(tmp_path):
    from pipeline.files import file_sha256

    head, _ = train_head(data(), TrainConfig(epochs=1))
    assert head.save(tmp_path / "head.npz") == file_sha256(tmp_path / "head.npz")


def test_a_diverging_head_fails_the_run_with_the_fix(recwarn):
    """Too large a learning rate for the features' scale: the weights overflow to inf and NaN. That must stop the
    run with what to change, not be saved, scored (argmax of NaN is class 0) and exported."""
    from pipeline.errors import RetrainError

    d = data()
    d.x_train, d.x_val = d.x_train * 1000, d.x_val * 1000
    config = TrainConfig(epochs=3, learning_rate=1.0, optimizer="sgd", hidden_units=64)
    with pytest.raises(RetrainError, match=r"diverged.*learning rate \(now 1\.0\)"):
        train_head(d, config)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # no NumPy overflow noise


def test_head_file_claiming_to_unpack_past_any_head_is_refused_unread(tmp_path):
    """A compressed .npz that would unpack to over a gigabyte (1 MB on disk) is refused before np.load unpacks it."""
    import zipfile

    from pipeline.errors import RetrainError
    from pipeline.head import MAX_UNPACKED_BYTES, Head

    path = tmp_path / "head.npz"
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("w0.npy", "w", force_zip64=True) as member:
            for _ in range(MAX_UNPACKED_BYTES // len(zeros) + 1):
                member.write(zeros)
    assert path.stat().st_size < 10 << 20
    with pytest.raises(RetrainError, match=r"head.npz would unpack to 1,075 MB, more than any head"):
        Head.load(path)


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A .npy file whose header claims `shape` but whose data is 64 bytes: what a hostile head file holds."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(64)


@pytest.mark.parametrize(
    "members",
    [
        {"w0.npy": _npy_header_only((1 << 20, 1 << 20)), "w1.npy": _npy_header_only((1 << 20,))},  # 4 TiB claimed
        {"w0": b"not an array at all", "w1": b"x"},  # names np.load answers with raw bytes
        {"w0.npy": b"\x93NUMPY\x03\x00garbage", "w1.npy": b""},
        {"weights.npy": _npy_header_only((2,))},
    ],
    ids=["header-claims-terabytes", "raw-bytes-members", "bad-npy-version", "foreign-names"],
)
def test_hostile_head_file_is_refused_with_its_name_not_a_traceback(tmp_path, members):
    """Headers and member names are a file's claims: a head file is refused on them before anything is allocated."""
    import zipfile

    from pipeline.errors import RetrainError
    from pipeline.head import Head

    path = tmp_path / "head.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(RetrainError, match="head.npz is not a head saved by Retrain Studio"):
        Head.load(path)
