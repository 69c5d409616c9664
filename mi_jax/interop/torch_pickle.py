"""Read `torch.save` files without torch: tensors come back as numpy arrays.

A `torch.save` file (torch >= 1.6) is a zip archive:

    PREFIX/data.pkl      a pickle of the saved object; each tensor is a call
                         `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
                         whose storage is a persistent id ("storage", StorageType, key, location, numel)
    PREFIX/data/KEY      the raw bytes of storage KEY (in the byte order named by PREFIX/byteorder)

The pickle is read by a restricted unpickler: it resolves only the globals a state dict, a list of
them, or the TransformerLens Grokking demo's checkpoint dict needs (tensor and parameter rebuilds,
storage types and dtypes as names, `collections.OrderedDict`, `torch.device` as a string, numpy
scalars, and TransformerLens's `HookedTransformerConfig` read as a plain dict of its fields, never
imported). Any other global is refused with one line before anything is called, so a pickle that
would run code (`os.system`, ...) is never executed.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from mi_jax.config import ConfigError, check

# torch's typed-storage class names and dtype names -> numpy dtypes
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
}
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")  # pre-zip torch.save files start with it


class TorchDtype(str):
    """A torch dtype read from a pickle, as its name (`"float32"`)."""


class TLConfigRecord(dict):
    """The fields of a pickled TransformerLens `HookedTransformerConfig`, as a plain dict."""

    def __setstate__(self, state):  # pickle's BUILD step: the dataclass's __dict__
        check(isinstance(state, dict), "a pickled HookedTransformerConfig holds no field dict")
        self.update(state)


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """One storage's elements, flat: `data` [numel] of the storage's dtype."""

    def __init__(self, data: np.ndarray):
        self.data = data


def _strided(flat: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    """The tensor view `flat[offset + sum(i_k * stride_k)]` of shape `size`, as a contiguous copy."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    check(len(size) == len(stride) and min(stride, default=0) >= 0 and offset >= 0, "malformed tensor layout")
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    check(last < len(flat), f"tensor of shape {size} runs past the end of its storage ({len(flat)} elements)")
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * flat.itemsize for s in stride], writeable=False)
    return np.array(view)


def _check_metadata(metadata) -> None:
    # torch writes a neg/conj bit here only for lazily negated or conjugated tensors
    check(not metadata or not any(metadata.values()), f"tensors with lazy neg/conj bits {metadata} are not read")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    check(isinstance(storage, _Storage), "a tensor's storage is not a storage record")
    _check_metadata(metadata)
    return _strided(storage.data, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    check(isinstance(storage, _Storage) and isinstance(dtype, TorchDtype), "malformed untyped-storage tensor")
    _check_metadata(metadata)
    return _strided(storage.data.view(_TORCH_DTYPES[dtype]), offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    check(isinstance(data, np.ndarray), "a parameter's data is not a tensor")
    return data


def _device(kind: str, index: int | None = None) -> str:
    return kind if index is None else f"{kind}:{index}"


def _numpy_dtype(spec, align=False, copy=False) -> np.dtype:
    dtype = np.dtype(spec)
    check(dtype.kind in "biufc", f"only numeric numpy scalars are read, not dtype {dtype}")
    return dtype


def _numpy_scalar(dtype, data=None):
    check(isinstance(dtype, np.dtype) and isinstance(data, bytes), "malformed numpy scalar")
    return np.frombuffer(data, dtype)[0].item()


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # pickle protocol 2 writes every bytes object as `_codecs.encode(text, "latin1")`
    check(isinstance(text, str) and encoding == "latin1", "malformed bytes in pickle")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    return b""  # protocol 2 writes b"" as a call of bytes()


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "device"): _device,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,  # protocol 2 (torch's) writes Python 2 module names
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "bytes"): _empty_bytes,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, read_storage):
        super().__init__(file)
        self.source, self.read_storage = source, read_storage

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return TorchDtype(name)
        if module.split(".")[0] == "transformer_lens" and name == "HookedTransformerConfig":
            return TLConfigRecord
        raise ConfigError(
            f"refusing to load {module}.{name} from {self.source}: only tensors and plain containers are read"
        )

    def persistent_load(self, pid):
        check(
            isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType),
            f"unknown persistent record {str(pid)[:60]} in {self.source}",
        )
        _, storage_type, key, _location, numel = pid
        return self.read_storage(str(key), storage_type.dtype, int(numel))


def _data_pickle_name(archive: zipfile.ZipFile, source: str) -> str:
    names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    check(len(names) == 1, f"{source} is a zip archive but not a torch.save file (no PREFIX/data.pkl)")
    return names[0]


def load(path: str | Path) -> Any:
    """The object saved by `torch.save` at `path`, with every tensor as a numpy array.

    State dicts come back as (ordered) dicts of arrays, a `HookedTransformerConfig` as a
    `TLConfigRecord` (a dict of its fields), torch dtypes as `TorchDtype` names, devices as strings.
    Raises ConfigError (one line) for a file that is not a torch.save zip archive, or that holds any
    object other than tensors, plain containers and those records.
    """
    path = Path(path)
    check(path.is_file(), f"no such file: {path}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(16)
        check(
            _LEGACY_MAGIC not in head,
            f"{path} is a legacy (pre-zip) torch.save file; re-save it with torch >= 1.6 to read it without torch",
        )
        raise ConfigError(f"{path} is not a torch.save file (not a zip archive)")
    with zipfile.ZipFile(path) as archive:
        pkl = _data_pickle_name(archive, str(path))
        prefix = pkl[: -len("data.pkl")]
        names = set(archive.namelist())
        order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        check(order in ("little", "big"), f"{path}: unknown byte order {order!r}")
        cache: dict[str, np.ndarray] = {}

        def read_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
            # storages shared by several tensors (views) are read once
            if key not in cache:
                member = f"{prefix}data/{key}"
                check(member in names, f"{path} lacks storage {member}")
                raw = np.frombuffer(archive.read(member), dtype.newbyteorder("<" if order == "little" else ">"))
                cache[key] = raw.astype(dtype)
            data = cache[key]
            check(len(data) >= numel, f"{path}: storage {key} holds {len(data)} elements, expected {numel}")
            return _Storage(data.view(dtype) if data.dtype != dtype else data)

        with archive.open(pkl) as f:
            try:
                return _RestrictedUnpickler(f, str(path), read_storage).load()
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - a malformed pickle is one error to the user
                raise ConfigError(f"{path} holds a malformed pickle: {type(e).__name__}: {e}") from None
