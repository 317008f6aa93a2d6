"""The bottleneck cache: each image goes through the backbone once, ever.

Entries are keyed by what determines the vector — the image's content hash, the backbone's
identity (name, weights, layer), the preprocessing, and for augmented copies the copy index and
transform settings — so renaming or moving photos reuses them and two backbones never mix.

Storage is one SQLite file: every batch is committed in one transaction, so kill -9 at any
moment leaves whole entries or none, and a rerun computes only what is missing. Each entry
carries its length and a CRC32; a damaged one is dropped and recomputed, never used. A database
file damaged as a whole (garbage, or a page in its middle) fails SQLite's quick_check when opened,
or raises "malformed" when used: it is set aside (renamed, never deleted), a fresh one is started,
and every entry that can still be read from the old one and passes its CRC is carried over.

Extraction decodes and resizes photos in threads, a couple of batches ahead of the backbone, which
runs on LiteRT where installed and TensorFlow otherwise (see `backbones.runtime`); the cache key
names the runtime, so vectors of the two never mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import sqlite3
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.augment import augmented_for_model, copy_seed
from pipeline.backbones.runtime import backbone_forward, feature_identity, preparation_words
from pipeline.config import AugmentConfig
from pipeline.errors import ImageProblem, RetrainError
from pipeline.files import disk_full_message, display_name, looks_like_disk_full
from pipeline.images import PREPROCESS_ID, load_for_model, load_image
from pipeline.progress import Progress, ProgressCallback, ProgressMeter
from pipeline.stage_progress import stage_title

if TYPE_CHECKING:
    from pipeline.backbones import Backbone

DATABASE_NAME = "bottlenecks.sqlite"
DECODE_THREADS = 2  # photos decoded and resized at once (Pillow releases the GIL while it works)
DECODE_AHEAD = 2  # batches decoded ahead of the backbone: enough to keep it busy, little memory
PREPARING = stage_title("preparing")  # the step before the first photo: building, converting or opening its model


@dataclass(frozen=True)
class ExtractItem:
    """One bottleneck to have: an image file, or its k-th augmented copy (copy >= 1)."""

    path: str
    sha256: str
    copy: int = 0


@dataclass
class CacheResult:
    vectors: dict[ExtractItem, np.ndarray]  # every item that has a bottleneck now
    problems: dict[ExtractItem, str]  # items that could not be decoded, with why
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    damaged: int = 0  # entries found corrupt and recomputed
    repaired: str = ""  # how a damaged database file was set aside and rebuilt

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {
            "images": len(self.vectors) + len(self.problems),
            "computed": self.computed,
            "reused": self.reused,
            "problems": len(self.problems),
            "damaged": self.damaged,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            **({"repaired": self.repaired} if self.repaired else {}),
        }


class BottleneckStore:
    """Crash-safe key → float32 vector storage in one SQLite file."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / DATABASE_NAME
        self.repaired = ""  # set when a damaged file was set aside: what happened, for the run's report
        self.needed_mb: float | None = None  # what the caller still means to store, for a full disk's message
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RetrainError(
                f"cannot create the bottleneck cache folder {display_name(self.directory)} "
                f"({error.strerror or error}); choose a --bottleneck_dir (or RETRAIN_STUDIO_CACHE) "
                "that can be written, or fix its permissions"
            ) from None
        if not self.directory.is_dir():
            raise RetrainError(
                f"the bottleneck cache folder {display_name(self.directory)} is not a folder; "
                "choose another --bottleneck_dir"
            )
        self.connection = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            connection = self._connect()
            if connection.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return connection
            connection.close()
        except sqlite3.OperationalError as error:
            # Locked, disk full, read-only: the file may be healthy, so it is never set aside for these.
            raise self._cannot_use(error) from None
        except sqlite3.DatabaseError:
            pass  # not a database at all (overwritten, garbage), or malformed in its middle
        return self._rebuild()

    def _cannot_use(self, error: sqlite3.Error) -> RetrainError:
        if looks_like_disk_full(error, self.directory):
            return RetrainError(
                f"bottleneck cache {display_name(self.path)}: {disk_full_message(self.directory, self.needed_mb)}"
            )
        return RetrainError(
            f"cannot use the bottleneck cache {display_name(self.path)} ({error}); check that its "
            "folder can be written and has free space, then run again"
        )

    def _rebuild(self) -> sqlite3.Connection:
        """Set the damaged file aside, start a fresh one, and carry over every entry that still reads back.

        Under a lock, and checked again inside it: two runs that both found the file damaged must not
        set aside each other's fresh rebuild.
        """
        with open(self.directory / f"{DATABASE_NAME}.repair-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(sqlite3.DatabaseError):
                connection = self._connect()
                if connection.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                    return connection  # another process rebuilt it meanwhile
                connection.close()
            aside = self.path.with_name(f"{DATABASE_NAME}.damaged-{time.time_ns()}")
            for suffix in ("-wal", "-shm", ""):  # named so SQLite still pairs the set-aside file with its WAL
                part = self.path.with_name(DATABASE_NAME + suffix)
                if part.exists():
                    part.rename(aside.with_name(aside.name + suffix))
            try:
                connection = self._connect()
                carried = self._carry_over(aside, connection)
            except sqlite3.OperationalError as error:
                raise self._cannot_use(error) from None
        self.repaired = (
            f"the cache file was damaged; it was set aside as {aside.name}, and {carried} entries "
            "that still read back intact were carried over (the rest are recomputed)"
        )
        return connection

    @staticmethod
    def _carry_over(damaged: Path, connection: sqlite3.Connection) -> int:
        """Copy the entries of a damaged database that still read back with a good CRC; how many."""
        carried = 0
        try:  # read-only: closing must not checkpoint anything into the file set aside
            source = sqlite3.connect(f"{damaged.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return 0
        try:
            for rows in _readable_rows(source):
                good = [
                    row
                    for row in rows
                    if isinstance(row[3], bytes) and len(row[3]) == row[1] * 4 and zlib.crc32(row[3]) == row[2]
                ]
                with connection:
                    connection.execute("BEGIN IMMEDIATE")
                    connection.executemany("INSERT OR REPLACE INTO bottlenecks VALUES (?, ?, ?, ?)", good)
                carried += len(good)
        finally:
            source.close()
        return carried

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")  # readers (other runs) never block the writer
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is still atomic on power loss
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bottlenecks (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, "
            "crc INTEGER NOT NULL, vector BLOB NOT NULL)"
        )
        connection.execute("SELECT count(*) FROM bottlenecks").fetchone()
        return connection

    def _retrying(self, action: Callable[[], object]) -> object:
        """Run `action`; if the file turns out malformed on use, rebuild it once and run it again.
        A full disk or a read-only folder is a RetrainError that says so."""
        try:
            return action()
        except sqlite3.OperationalError as error:
            raise self._cannot_use(error) from None
        except sqlite3.DatabaseError:
            self.connection.close()
            self.connection = self._rebuild()
        try:
            return action()
        except sqlite3.Error as error:
            raise self._cannot_use(error) from None

    def get_many(self, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], int]:
        """The stored vectors for `keys` (missing ones absent), and how many were damaged."""
        return self._retrying(lambda: self._get_many(keys))

    def _get_many(self, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], int]:
        found: dict[str, np.ndarray] = {}
        damaged: list[str] = []
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, dim, crc, blob in self.connection.execute(
                f"SELECT key, dim, crc, vector FROM bottlenecks WHERE key IN ({marks})", chunk
            ):
                if len(blob) != dim * 4 or zlib.crc32(blob) != crc:
                    damaged.append(key)
                    continue
                found[key] = np.frombuffer(blob, dtype=np.float32)
        if damaged:
            self._delete(damaged)
        return found, len(damaged)

    def put_many(self, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors in one transaction: all of them land, or none do."""
        self._retrying(lambda: self._put_many(vectors))

    def _put_many(self, vectors: dict[str, np.ndarray]) -> None:
        rows = []
        for key, vector in vectors.items():
            blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
            rows.append((key, len(blob) // 4, zlib.crc32(blob), blob))
        with self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany("INSERT OR REPLACE INTO bottlenecks VALUES (?, ?, ?, ?)", rows)

    def delete(self, keys: Iterable[str]) -> None:
        self._retrying(lambda: self._delete(list(keys)))

    def _delete(self, keys: Iterable[str]) -> None:
        with self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany("DELETE FROM bottlenecks WHERE key = ?", [(k,) for k in keys])

    def count(self) -> int:
        return self._retrying(lambda: self.connection.execute("SELECT count(*) FROM bottlenecks").fetchone()[0])

    def close(self) -> None:
        self.connection.close()


def _readable_rows(source: sqlite3.Connection, chunk: int = 256, max_failures: int = 64):
    """Yield lists of (key, dim, crc, vector) rows of a damaged database, in rowid order, skipping the
    damaged stretches: after an error, jump ahead by a growing step until reading works again."""
    position, step, failures = 0, 1, 0
    while failures < max_failures:
        rows: list = []
        try:
            for rowid, *row in source.execute(
                "SELECT rowid, key, dim, crc, vector FROM bottlenecks WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (position, chunk),
            ):
                rows.append(row)
                position = rowid
        except sqlite3.DatabaseError:
            yield rows
            position, step, failures = position + step, min(step * 2, 1 << 20), failures + 1
            continue
        if not rows:
            return
        step = 1
        yield rows


def entry_key(item: ExtractItem, backbone_identity: str, augment: AugmentConfig | None) -> str:
    """The cache key: content + backbone + preprocessing (+ copy and transforms for copies)."""
    variant = "original" if item.copy == 0 else f"copy{item.copy}|{augment.transform_key() if augment else ''}"
    text = f"{item.sha256}|{backbone_identity}|{PREPROCESS_ID}|{variant}"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_bottlenecks(
    items: Sequence[ExtractItem],
    backbone: Backbone,
    bottleneck_dir: str | Path,
    augment: AugmentConfig | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = 32,
    should_stop: Callable[[], bool] | None = None,
    preparing: ProgressCallback | None = None,
) -> CacheResult:
    """Have a bottleneck for every item: load what is cached, compute only what is missing.

    Bad images become `problems`, never a crash. `should_stop` is polled between batches so a
    cancelled run stops promptly with every finished batch already committed. When anything is missing,
    the backbone's forward pass is made ready first, reported to `preparing` as its own step (see
    `prepare_backbone`), so `progress` counts photos only.
    """
    started = time.monotonic()
    store = BottleneckStore(bottleneck_dir)
    try:
        keys = {item: entry_key(item, feature_identity(backbone), augment) for item in items}
        items_by_key: dict[str, list[ExtractItem]] = {}
        for item, key in keys.items():
            items_by_key.setdefault(key, []).append(item)
        stored, damaged = store.get_many(list(dict.fromkeys(keys.values())))
        vectors = {item: stored[key] for item, key in keys.items() if key in stored}
        missing = _unique_missing(items, keys, stored)
        result = CacheResult(vectors=vectors, problems={}, reused=len(vectors), damaged=damaged)
        result.repaired = store.repaired
        store.needed_mb = len(missing) * backbone.feature_dim * 4 * 1.5 / (1 << 20)  # vectors plus SQLite's pages
        stage = "augmenting" if missing and all(item.copy for item in missing) else "caching"
        if missing:
            prepare_backbone(backbone, preparing)
            if should_stop and should_stop():  # cancelled while it was prepared (a minute or more the first time)
                missing, progress = [], None  # no photo started; the stage was not reached, not "nothing to do"
        meter = ProgressMeter(stage, len(missing), progress)
        meter.report()
        for batch_items, features, problems in _extract_batches(missing, backbone, augment, batch_size):
            new = {keys[item]: vector for item, vector in zip(batch_items, features, strict=True)}
            store.put_many(new)
            for key, vector in new.items():  # the same content may stand under two file names
                for item in items_by_key[key]:
                    result.vectors[item] = vector
            result.problems.update(problems)
            result.computed += len(batch_items)
            meter.advance(len(batch_items) + len(problems))
            if should_stop and should_stop():
                break
        _spread_problems(items, keys, result)
        result.repaired = store.repaired  # also when the file turned out damaged only while writing
    finally:
        store.close()
    result.seconds = time.monotonic() - started
    return result


def prepare_backbone(backbone: Backbone, progress: ProgressCallback | None = None) -> None:
    """Make the backbone's forward pass ready, as one uncounted step reported to `progress` (begun, then done).

    The first time on a machine this builds the model and converts it, a minute or more for a pair: not a photo
    cached, so it is reported as its own step rather than as "caching 0/N". A backbone already ready says nothing.
    """
    if backbone.forward is not None:
        return
    if progress:
        progress(Progress(PREPARING, 0, 0, 0.0, None, preparation_words(backbone), indeterminate=True))
    backbone_forward(backbone)
    if progress:
        progress(Progress(PREPARING, 1, 1, 0.0, 0.0, "ready"))


def _unique_missing(items: Sequence[ExtractItem], keys: dict, stored: dict) -> list[ExtractItem]:
    seen: set[str] = set()
    missing = []
    for item in items:
        key = keys[item]
        if key not in stored and key not in seen:
            seen.add(key)
            missing.append(item)
    return missing


def _spread_problems(items: Sequence[ExtractItem], keys: dict, result: CacheResult) -> None:
    """A problem found in one file is a problem for every item with the same content and variant."""
    bad_keys = {keys[item]: message for item, message in result.problems.items()}
    for item in items:
        if item not in result.vectors and keys[item] in bad_keys:
            result.problems.setdefault(item, bad_keys[keys[item]])


def load_item_for_model(item: ExtractItem, size: int, augment: AugmentConfig | None) -> np.ndarray:
    """An item's model input: the image itself, or its deterministic augmented copy."""
    if item.copy == 0:
        return load_for_model(item.path, size)  # the very function prediction uses
    if augment is None:
        raise RetrainError("an augmented copy was requested without augmentation settings")
    return augmented_for_model(load_image(item.path, min_side=size), augment, copy_seed(item.sha256, item.copy), size)


def _extract_batches(items: Sequence[ExtractItem], backbone: Backbone, augment: AugmentConfig | None, batch_size: int):
    """Yield (items, features, problems) per batch: decoding runs ahead in threads while the backbone runs.

    At most `DECODE_AHEAD` batches are decoded ahead of the backbone, so memory stays flat however many
    images there are, and each batch is handed on (and stored by the caller) as soon as it is done.
    """
    if not items:
        return
    forward = backbone_forward(backbone)  # built, converted or loaded before any decoding starts
    batches = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode") as pool:
        pending = deque(
            pool.submit(_decode_batch, batch, backbone.input_size, augment) for batch in batches[:DECODE_AHEAD]
        )
        for index in range(len(batches)):
            good, images, problems = pending.popleft().result()
            if index + DECODE_AHEAD < len(batches):
                pending.append(pool.submit(_decode_batch, batches[index + DECODE_AHEAD], backbone.input_size, augment))
            features = forward(images) if good else np.zeros((0, backbone.feature_dim), np.float32)
            yield good, features.astype(np.float32, copy=False), problems


def _decode_batch(batch: Sequence[ExtractItem], size: int, augment: AugmentConfig | None):
    """(decodable items, their (N, S, S, 3) uint8 inputs, {item: why not} for the rest)."""
    good, images, problems = [], [], {}
    for item in batch:
        try:
            images.append(load_item_for_model(item, size, augment))
            good.append(item)
        except ImageProblem as problem:
            problems[item] = str(problem)
        except Exception as err:  # a decoder bug must not end a run over one photo
            problems[item] = f"could not decode ({type(err).__name__}: {err})"
    return good, (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)), problems


def compiled_forward(backbone: Backbone) -> Callable:
    """TensorFlow's forward pass as one compiled graph over uint8 batches (traced once per backbone).

    Extraction runs `backbone_forward` (LiteRT where installed); this is TensorFlow's, for comparisons.
    """
    import tensorflow as tf

    if backbone.compiled is None:
        size = backbone.input_size
        model = backbone.model  # built (or loaded) here, eagerly: building inside the trace below cannot save it

        @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)], reduce_retracing=True)
        def forward(images):
            return model(tf.cast(images, tf.float32), training=False)

        backbone.compiled = forward
    return backbone.compiled
