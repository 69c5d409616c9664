"""The parameter-snapshot series on disk: one zarr v3 array per parameter, written and read with tensorstore.

    RUN_DIR/snapshots/index.json   {"layout": "zarr3", "steps": [...], "params": [names]}, written by
                                   process 0 after the row's chunks are written (the row count)
    RUN_DIR/snapshots/NAME/        zarr v3 array [time, member, ...] (`W_E`, `blocks.0.attn.W_Q`, ...)

Each chunk is one snapshot row of the members one device holds ([1, local members, ...]; every
member for a one-process run), so processes writing their own members never touch the same file, and
the time axis grows without rewriting anything. Every chunk carries a CRC32C (the zarr `crc32c`
codec): a flipped, truncated or missing chunk is found when read, and `bad_rows` names the snapshot.
Storage may be float16/bfloat16 and zstd-compressed on request; readers always get the dtype the
params were trained in (float32 for float16/bfloat16 storage).

Reading is lazy: `LazyArray` is a view that reads on `np.asarray` (or numpy arithmetic), so opening
a 15 GB sweep costs nothing until a slice of it is read. I/O only: nothing here is traced by jax.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import tensorstore as ts

ZARR_LAYOUT = "zarr3"
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
COMPRESSIONS = ("none", "zstd")
VERIFY_BYTES = 64 << 20  # bytes read at once while checking the chunks: bounds the memory of `bad_rows`


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt (the message names it); `store` re-exports it."""


# every chunk is stored, zeros too (a zero bias row otherwise leaves no file), so a missing chunk is an error
_EVERY_CHUNK = {"store_data_equal_to_fill_value": True}


def _codecs(compression: str) -> list[dict]:
    if compression not in COMPRESSIONS:
        raise ValueError(f"snapshot compression must be one of {COMPRESSIONS}, got {compression!r}")
    squeeze = [{"name": "zstd", "configuration": {"level": 3}}] if compression == "zstd" else []
    return [{"name": "bytes", "configuration": {"endian": "little"}}, *squeeze, {"name": "crc32c"}]


def storage_dtype(leaf_dtype, dtype: str | None) -> np.dtype:
    """The dtype a float leaf is stored in: its own (`dtype` None) or "float32", "float16", "bfloat16"."""
    if dtype is not None and dtype not in STORAGE_DTYPES:
        raise ValueError(f"snapshot dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    floating = np.issubdtype(leaf_dtype, np.floating)
    return np.dtype(STORAGE_DTYPES[dtype] if dtype is not None and floating else leaf_dtype)


def create_array(path: Path, shape: tuple, chunk_members: int, dtype, compression: str = "none") -> ts.TensorStore:
    """A new (replacing any old) zarr v3 array of `shape` [time, member, ...], one chunk per row and
    block of `chunk_members` members."""
    chunk = [1, chunk_members, *shape[2:]]
    return ts.open({
        "driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)},
        "metadata": {"shape": list(shape), "data_type": np.dtype(dtype).name,
                     "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
                     "codecs": _codecs(compression), "fill_value": 0},
        "create": True, "delete_existing": True, **_EVERY_CHUNK,
    }).result()


def open_array(path: Path) -> ts.TensorStore:
    """An existing array; reading a chunk never written is an error, not zeros."""
    try:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)},
                        "open": True, "fill_missing_data_reads": False, **_EVERY_CHUNK}).result()
    except ValueError as e:
        raise CheckpointError(f"cannot open snapshot array {path}: {e}") from None


def await_array(path: Path, timeout_s: float = 300.0) -> ts.TensorStore:
    """The array process 0 creates, opened by another process of a multi-process run once it exists."""
    deadline = time.monotonic() + timeout_s
    while not (Path(path) / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return open_array(path)


def grow(array: ts.TensorStore, rows: int) -> ts.TensorStore:
    """`array` with at least `rows` rows (adds metadata only: no chunk is rewritten)."""
    if array.shape[0] >= rows:
        return array
    return array.resize(exclusive_max=[rows, *([None] * (array.rank - 1))], expand_only=True).result()


def _member_sharded(leaf) -> bool:
    """Whether `leaf` [member, ...] is a jax Array split over its member axis only."""
    return (isinstance(leaf, jax.Array) and leaf.ndim > 0 and not leaf.is_fully_replicated
            and all(s.data.shape[1:] == leaf.shape[1:] for s in leaf.addressable_shards))


def local_blocks(leaf) -> list[tuple[slice, np.ndarray]]:
    """(member slice, values [members, ...]) of each block of `leaf` [member, ...] this process writes:
    the addressable shards of a member-sharded jax Array (one replica each), else the whole array
    (process 0 only, for a jax Array of a multi-process run)."""
    if _member_sharded(leaf):
        blocks = {}
        for shard in leaf.addressable_shards:
            if shard.replica_id == 0:
                blocks[shard.index[0].indices(leaf.shape[0])[:2]] = np.asarray(shard.data)
        return [(slice(*key), block) for key, block in sorted(blocks.items())]
    if isinstance(leaf, jax.Array) and jax.process_index() != 0:
        return []
    return [(slice(0, np.shape(leaf)[0]), np.asarray(leaf))]


def chunk_members(leaf) -> int:
    """Members per chunk: one device's block of a member-sharded leaf, else all of them."""
    return int(leaf.addressable_shards[0].data.shape[0]) if _member_sharded(leaf) else int(np.shape(leaf)[0])


def write_row(arrays: dict[str, ts.TensorStore], row: int, flat: dict) -> None:
    """Write snapshot `row` of every parameter (each this process's blocks), all writes in flight at once."""
    pending = []
    for name, array in arrays.items():
        for members, block in local_blocks(flat[name]):
            pending.append(array[row, members.start : members.stop].write(block.astype(array.dtype.numpy_dtype)))
    for future in pending:
        future.result()


# ----------------------------------------------------------------------------- lazy reading


def _index_dim(comp, size: int):
    """One axis's index -> an int, a unit-step slice or an int array (negative indices counted from the end)."""
    if isinstance(comp, (int, np.integer)):
        if not -size <= comp < size:
            raise IndexError(f"index {comp} is out of bounds for an axis of size {size}")
        return int(comp) % size
    if isinstance(comp, slice):
        start, stop, step = comp.indices(size)
        if step == 1:
            return slice(start, max(start, stop))
        return np.arange(size)[comp]
    comp = np.asarray(comp)
    if comp.dtype == bool:
        return np.flatnonzero(comp)
    return np.arange(size)[comp]


class LazyArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A stored array read on demand: indexing gives another lazy view, `np.asarray(x)` reads it.

    Supports `[...]` (ints, slices, index arrays; several index arrays index their axes
    independently), `.shape`, `.dtype`, numpy arithmetic and ufuncs (which read first). The values
    come back in `dtype`, the params' training dtype (float16/bfloat16 storage is widened)."""

    __array_priority__ = 20

    def __init__(self, view: ts.TensorStore, dtype, name: str = ""):
        self._view, self.dtype, self.name = view, np.dtype(dtype), name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self._view.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, index) -> LazyArray:
        index = index if isinstance(index, tuple) else (index,)
        if any(c is None for c in index):
            raise IndexError("LazyArray does not take np.newaxis: read it first (np.asarray)")
        if any(c is Ellipsis for c in index):
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (self.ndim - len(index) + 1) + index[at + 1 :]
        if len(index) > self.ndim:
            raise IndexError(f"too many indices for an array of {self.ndim} dimensions")
        comps = tuple(_index_dim(c, n) for c, n in zip(index, self.shape))
        view = self._view.oindex[comps] if comps else self._view
        return LazyArray(view.translate_to[0] if view.rank else view, self.dtype, self.name)

    def read_async(self) -> ts.Future:
        return self._view.read()

    def finish(self, future) -> np.ndarray:
        """The values a `read_async` future gives, in `dtype`; a bad chunk is named."""
        try:
            return np.asarray(future.result()).astype(self.dtype, copy=False)
        except ValueError as e:
            raise CheckpointError(f"cannot read snapshot {self.name}: {e}") from None

    def __array__(self, dtype=None, copy=None):
        values = self.finish(self.read_async())
        return values if dtype is None else values.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, LazyArray) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


def read_tree(tree):
    """`tree` with every LazyArray leaf read (all reads in flight at once); other leaves as numpy arrays."""
    leaves, treedef = jax.tree.flatten(tree)
    futures = [x.read_async() if isinstance(x, LazyArray) else None for x in leaves]
    values = [x.finish(f) if f is not None else np.asarray(x) for x, f in zip(leaves, futures)]
    return jax.tree.unflatten(treedef, values)


def open_series(snap_dir: Path, names: list[str], n_rows: int) -> dict[str, LazyArray]:
    """{name: LazyArray [n_rows, member, ...]} of a series written in the zarr layout."""
    out = {}
    for name in names:
        array = open_array(Path(snap_dir) / name)
        if array.shape[0] < n_rows:
            raise CheckpointError(f"snapshot array {Path(snap_dir) / name} holds {array.shape[0]} rows, "
                                  f"the index lists {n_rows}")
        dtype = np.dtype(array.dtype.numpy_dtype)
        dtype = np.dtype(np.float32) if dtype in (np.float16, ml_dtypes.bfloat16) else dtype
        out[name] = LazyArray(array[:n_rows], dtype, name)
    return out


def bad_rows(series: dict[str, LazyArray]) -> dict[int, str]:
    """{row: why} for each row with a chunk that is missing, truncated or fails its checksum. Reads the
    whole series once, `VERIFY_BYTES` at a time, and keeps none of it."""
    n_rows = next(iter(series.values())).shape[0]
    row_bytes = sum(x.nbytes for x in series.values()) // max(n_rows, 1)
    per_batch = max(1, VERIFY_BYTES // max(row_bytes, 1))
    bad = {}
    for start in range(0, n_rows, per_batch):
        rows = range(start, min(start + per_batch, n_rows))
        reads = [(row, name, x[row].read_async()) for row in rows for name, x in series.items()]
        for row, name, future in reads:
            try:
                future.result()
            except ValueError as e:
                bad.setdefault(row, f"{name}: {e}")
    return bad


def write_index(snap_dir: Path, steps: list[int], names: list[str], atomic_write) -> None:
    atomic_write(Path(snap_dir) / "index.json",
                 json.dumps({"layout": ZARR_LAYOUT, "steps": steps, "params": names}))
