"""Read a PyTorch state dict saved in the legacy (pre-zip) .pth format, without torch and without trusting it.

The offline backbone's weights ship as such a file. Loading it with plain `pickle` would let the file run
any code it names, so the unpickler here knows only the handful of names a state dict needs (an OrderedDict,
`torch._utils._rebuild_tensor_v2` and the storage types) and refuses everything else.

The legacy layout is five things back to back:
    pickle(magic number) pickle(protocol version) pickle(sys info)
    pickle(state dict, tensors as persistent ids ('storage', storage_type, key, location, numel[, view]))
    pickle(list of storage keys), then per key: int64 little-endian element count + the raw data.
Tensors are rebuilt after the raw data is read, honouring each tensor's offset and strides.
"""

from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.errors import BackboneUnavailable

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL_VERSION = 1001  # torch.serialization.PROTOCOL_VERSION
ZIP_SIGNATURE = b"PK\x03\x04"  # the newer torch.save format is a zip archive


@dataclass(frozen=True)
class StorageType:
    """Stands in for `torch.FloatStorage` and friends: all we need from them is the element dtype."""

    name: str
    dtype: np.dtype


STORAGE_TYPES = {
    name: StorageType(name, np.dtype(code))
    for name, code in {
        "DoubleStorage": "<f8",
        "FloatStorage": "<f4",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


@dataclass(frozen=True)
class StorageRef:
    """A persistent id from the state-dict pickle: which raw buffer a tensor views, and its dtype."""

    key: str
    storage_type: StorageType
    numel: int
    view: tuple[str, int, int] | None  # (root key, element offset, element count) for old storage views


@dataclass(frozen=True)
class TensorRef:
    """What `_rebuild_tensor_v2` was asked to build; materialised once the raw storages are read."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> TensorRef:
    """Record a tensor's view of its storage; requires_grad, hooks and metadata do not matter for weights."""
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("a tensor does not refer to a storage")
    return TensorRef(storage, int(offset), tuple(int(n) for n in size), tuple(int(n) for n in stride))


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): storage_type for name, storage_type in STORAGE_TYPES.items()},
}


class StateDictUnpickler(pickle.Unpickler):
    """An unpickler that can build a state dict and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a plain state dict") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r:.80}")
        if view is not None:
            view = (str(view[0]), int(view[1]), int(view[2]))
        return StorageRef(str(key), storage_type, int(numel), view)


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format PyTorch state dict, as numpy arrays keyed by parameter name.

    Raises BackboneUnavailable naming the file when it is not such a file, is truncated, or asks the
    unpickler for anything beyond a plain state dict (which is how a malicious file would run code).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _read_legacy(handle)
    except FileNotFoundError:
        raise BackboneUnavailable(f"Weights file not found: {path}. Reinstall the package that ships it.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise BackboneUnavailable(
            f"Cannot read PyTorch weights from {path}: {error}. Reinstall the package that ships this file."
        ) from error


def _read_legacy(handle: BinaryIO) -> dict[str, np.ndarray]:
    """Parse the legacy layout from an open file (see the module docstring)."""
    if handle.read(4) == ZIP_SIGNATURE:
        raise ValueError("it is torch's zip format; only the legacy format is supported")
    handle.seek(0)
    if StateDictUnpickler(handle).load() != LEGACY_MAGIC_NUMBER:
        raise ValueError("not a PyTorch legacy file (wrong magic number)")
    if StateDictUnpickler(handle).load() != LEGACY_PROTOCOL_VERSION:
        raise ValueError("unsupported PyTorch file protocol version")
    sys_info = StateDictUnpickler(handle).load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise ValueError("saved on a big-endian machine, which is not supported")
    state_dict = StateDictUnpickler(handle).load()
    storage_keys = StateDictUnpickler(handle).load()
    if not isinstance(state_dict, dict) or not isinstance(storage_keys, list):
        raise ValueError("the file does not hold a state dict")
    storages = _read_storages(handle, storage_keys, _storage_types(state_dict))
    return {str(name): _materialise(tensor, storages) for name, tensor in state_dict.items()}


def _storage_types(state_dict: dict) -> dict[str, StorageRef]:
    """Each storage key's declared type and size, as the tensors refer to them."""
    refs: dict[str, StorageRef] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, TensorRef):
            raise ValueError(f"entry {name!r:.80} is not a tensor")
        root_key = tensor.storage.view[0] if tensor.storage.view else tensor.storage.key
        refs.setdefault(root_key, tensor.storage)
    return refs


def _read_storages(handle: BinaryIO, keys: list, refs: dict[str, StorageRef]) -> dict[str, np.ndarray]:
    """Read each storage's raw bytes, in the order the key list gives, as flat little-endian arrays."""
    storages = {}
    for key in map(str, keys):
        if key not in refs:
            raise ValueError(f"storage {key!r:.80} is not used by any tensor")
        dtype = refs[key].storage_type.dtype
        numel = int.from_bytes(_read_exactly(handle, 8), "little", signed=True)
        if numel < 0 or (refs[key].view is None and numel != refs[key].numel):
            raise ValueError(f"storage {key!r:.80} holds {numel} elements, expected {refs[key].numel}")
        storages[key] = np.frombuffer(_read_exactly(handle, numel * dtype.itemsize), dtype=dtype)
    return storages


def _read_exactly(handle: BinaryIO, count: int) -> bytes:
    """`count` bytes, checked against the file size first so a lying header cannot make us allocate gigabytes."""
    if count > os.fstat(handle.fileno()).st_size - handle.tell():
        raise EOFError("the file ends early (truncated download?)")
    return handle.read(count)


def _materialise(tensor: TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    """Copy a tensor out of its storage, bounds-checked so a hostile stride cannot read outside the buffer."""
    ref = tensor.storage
    if ref.view is None:
        flat = storages[ref.key]
    else:
        root_key, view_offset, view_size = ref.view
        flat = storages[root_key][view_offset : view_offset + view_size]
    if len(tensor.size) != len(tensor.stride) or min((*tensor.size, *tensor.stride, tensor.offset), default=0) < 0:
        raise ValueError(f"tensor of storage {ref.key!r:.80} has an invalid shape or stride")
    if 0 in tensor.size:
        return np.zeros(tensor.size, dtype=flat.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if last >= flat.size:
        raise ValueError(f"tensor of storage {ref.key!r:.80} reaches past the end of its data")
    start = flat[tensor.offset :]
    strides = tuple(s * flat.itemsize for s in tensor.stride)
    return np.lib.stride_tricks.as_strided(start, shape=tensor.size, strides=strides, writeable=False).copy()
