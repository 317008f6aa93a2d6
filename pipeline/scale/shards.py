"""Bottlenecks as Parquet shards: one file per extracted batch, columns `key` (the SQLite cache's key) and
`vector` (float32, fixed length).

Many small immutable files instead of one database, because many machines write at once and object
stores have no transactions. A shard is written under a hidden temporary name and renamed when whole
(on object stores an upload is only visible once complete), so readers, resumed jobs included, never
take half a shard for a whole one. A shard's name is a hash of its keys: a retried task rewrites the
same file instead of adding a twin. A shard that cannot be read is skipped and its keys recomputed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import RetrainError
from pipeline.files import is_hidden
from pipeline.scale.storage import _short, filesystem_for, join

SHARD_FOLDER = "parquet"  # under --bottleneck_dir, beside the SQLite cache of the local engine
SUFFIX = ".parquet"
ROW_GROUP = 4096  # rows per Parquet row group: readers hold one group (20 MB at 1,280-d), not a whole shard
# Keys are unique hashes and vectors are floats: a dictionary never pays, and decoding its fallback
# pages made reading three times slower.
WRITE_OPTIONS = {"row_group_size": ROW_GROUP, "use_dictionary": False}


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("vector", pa.list_(pa.float32(), dim))])


def write_shard(bottleneck_dir: str, keys: Sequence[str], vectors: np.ndarray) -> str | None:
    """Write one shard atomically; returns its path (None when there is nothing to write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(keys) == 0:
        return None
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    table = pa.table(
        {
            "key": pa.array(list(keys), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        },
        schema=_schema(dim),
    )
    filesystem, base = filesystem_for(bottleneck_dir)
    folder = join(base, SHARD_FOLDER)
    name = "bottlenecks-" + hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24] + SUFFIX
    final = join(folder, name)
    from pyarrow import fs

    if isinstance(filesystem, fs.LocalFileSystem):
        filesystem.create_dir(folder, recursive=True)
        temporary = join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, temporary, filesystem=filesystem, **WRITE_OPTIONS)
            filesystem.move(temporary, final)  # rename: atomic within a folder
        except BaseException:
            try:
                filesystem.delete_file(temporary)
            except Exception:
                pass
            raise
    else:  # an object store's upload appears only once complete: no rename needed (or possible)
        pq.write_table(table, final, filesystem=filesystem, **WRITE_OPTIONS)
    return final


@dataclass
class ShardScan:
    """What is in a shard folder: readable shards with their keys, and shards that could not be read."""

    keys_by_shard: dict[str, list[str]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # path → why

    @property
    def keys(self) -> set[str]:
        return {key for keys in self.keys_by_shard.values() for key in keys}

    @property
    def paths(self) -> list[str]:
        return sorted(self.keys_by_shard)


def scan_shards(bottleneck_dir: str) -> ShardScan:
    """Read only the `key` column of every complete shard (cheap: Parquet reads columns apart)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, base = filesystem_for(bottleneck_dir)
    folder = join(base, SHARD_FOLDER)
    scan = ShardScan()
    try:
        entries = filesystem.get_file_info(fs.FileSelector(folder, allow_not_found=True))
    except Exception as error:
        raise RetrainError(
            f"cannot list {bottleneck_dir}: {_short(error)}; check the name and your credentials"
        ) from None
    for entry in sorted(entries, key=lambda e: e.path):
        name = entry.path.rsplit("/", 1)[-1]
        if entry.type != fs.FileType.File or is_hidden(name) or not name.endswith(SUFFIX):
            continue
        try:
            column = pq.read_table(entry.path, columns=["key"], filesystem=filesystem)["key"]
            scan.keys_by_shard[entry.path] = column.to_pylist()
        except Exception as error:
            scan.damaged[entry.path] = _short(error)
    return scan


def iter_shard(bottleneck_dir: str, path: str, batch_rows: int = 4096) -> Iterator[tuple[list[str], np.ndarray]]:
    """(keys, vectors) of one shard in record batches of at most `batch_rows` (memory stays bounded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    filesystem, _ = filesystem_for(bottleneck_dir)
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            vectors = batch.column("vector")
            dim = vectors.type.list_size
            yield batch.column("key").to_pylist(), vectors.flatten().to_numpy().reshape(-1, dim)
    # Arrow's allocator keeps freed pages for reuse; over a pass through gigabytes that is most of a process.
    pa.default_memory_pool().release_unused()


def read_vectors(bottleneck_dir: str, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Every vector (or those of `keys`) by key: for sets that fit in memory (tests, the parity check)."""
    wanted = set(keys) if keys is not None else None
    found: dict[str, np.ndarray] = {}
    scan = scan_shards(bottleneck_dir)  # keys only: then just the shards that hold a wanted key are read
    for path in (path for path in scan.paths if wanted is None or wanted.intersection(scan.keys_by_shard[path])):
        for batch_keys, vectors in iter_shard(bottleneck_dir, path):
            for key, vector in zip(batch_keys, vectors, strict=True):
                if wanted is None or key in wanted:
                    found[key] = vector.copy()
    return found
