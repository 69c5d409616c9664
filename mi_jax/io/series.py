"""The parameter series on disk (RUN_DIR/snapshots/): one zarr v3 array per parameter, written and read
with tensorstore.

    snapshots/index.json   {"layout": "zarr3", "steps": [...], "params": [names]}: the rows written so far
    snapshots/NAME/        zarr v3 array [time, member, ...] (`W_E`, `blocks.0.attn.W_Q`, ...)

Each chunk is one snapshot row of the members one device holds ([1, members per device, ...]; every
member of a one-device run), so the processes of a multi-process run each write the members on their
own devices and never touch the same file, and the time axis grows without rewriting anything. The
index is replaced (atomically) only once every chunk of the rows it lists is on disk, so a listed row
is a written row. Every chunk carries a CRC32C (the zarr `crc32c` codec): a flipped, truncated or
missing chunk is found when read, and `bad_rows` names the snapshot. Storage may be float16/bfloat16
and zstd-compressed on request; readers always get the dtype the params were trained in (float32 for
float16/bfloat16 storage).

Reading is lazy: `LazyArray` is a view that reads on `np.asarray` (or numpy arithmetic), so opening
a 15 GB sweep costs nothing until a slice of it is read.

Older run dirs hold one .npy per parameter and a CRC32 per row in index.json (and, before runs had a
member axis, solo runs' files have none); they load as they are, and `convert_npy` rewrites them.
"""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import tensorstore as ts

from mi_jax.io import CheckpointError, atomic_write
from mi_jax.trees import flatten

ZARR_LAYOUT = "zarr3"
MEMBER_LAYOUT = "member"  # the .npy layout's index "layout": every file has a [member] axis after [time]
INDEX = "index.json"
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
COMPRESSIONS = ("none", "zstd")
VERIFY_BYTES = 64 << 20  # bytes read at once while checking the chunks: bounds the memory of `bad_rows`

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


def grow(array: ts.TensorStore, rows: int) -> ts.TensorStore:
    """`array` with at least `rows` rows (adds metadata only: no chunk is rewritten)."""
    if array.shape[0] >= rows:
        return array
    return array.resize(exclusive_max=[rows, *([None] * (array.rank - 1))], expand_only=True).result()


# ----------------------------------------------------------------------------- which process writes what


def _member_sharded(leaf) -> bool:
    """Whether `leaf` [member, ...] is a jax Array split over its member axis only."""
    return (isinstance(leaf, jax.Array) and leaf.ndim > 0 and not leaf.is_fully_replicated
            and all(s.data.shape[1:] == leaf.shape[1:] for s in leaf.addressable_shards))


def local_blocks(leaf, n_members: int | None = None) -> list[tuple[slice, np.ndarray]]:
    """(member slice, values [members, ...]) of each block of `leaf` [member, ...] that this process
    writes, cut to the first `n_members` (the rest pad the member axis to a multiple of the devices):
    the addressable shards of a member-sharded jax Array (one replica each); of any other array (host,
    one device, or replicated) the whole, on process 0 only."""
    n = int(np.shape(leaf)[0]) if n_members is None else n_members
    if _member_sharded(leaf):
        blocks = {}
        for shard in leaf.addressable_shards:
            start, stop, _ = shard.index[0].indices(leaf.shape[0])
            if shard.replica_id == 0 and start < n:
                blocks[start] = (slice(start, min(stop, n)), np.asarray(shard.data)[: min(stop, n) - start])
        return [blocks[start] for start in sorted(blocks)]
    if jax.process_index() != 0:
        return []
    whole = leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf
    return [(slice(0, n), np.asarray(whole)[:n])]


def chunk_members(leaf, n_members: int | None = None) -> int:
    """Members per chunk: one device's block of a member-sharded leaf [member, ...], else all of them."""
    if _member_sharded(leaf):
        return int(leaf.addressable_shards[0].data.shape[0])
    return int(np.shape(leaf)[0]) if n_members is None else n_members


# ----------------------------------------------------------------------------- writing


class SeriesWriter:
    """The series as it is written: `write` (one snapshot) or `write_rows` (a chunk's snapshots)
    append rows, each process writing the blocks of the members on its devices; `write_index`, called
    on one process once every process has written, lists them. `create` starts a series, `open`
    continues one (a resumed run)."""

    def __init__(self, snap_dir: Path, arrays: dict[str, ts.TensorStore], steps: list[int]):
        self.dir, self.arrays, self.steps = Path(snap_dir), arrays, list(steps)

    @classmethod
    def create(cls, snap_dir: Path, template: dict, capacity: int, n_members: int | None = None, *,
               dtype: str | None = None, compression: str = "none") -> "SeriesWriter":
        """A new series for params like `template` (leaves [member, ...]: jax Arrays, maybe member-sharded,
        or anything with a shape and dtype), of which the first `n_members` (default all) are kept;
        room for `capacity` rows to start with (it grows). `dtype` (None: the params' own; "float32",
        "float16", "bfloat16") and `compression` ("none", "zstd") choose the storage."""
        snap_dir = Path(snap_dir)
        snap_dir.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, leaf in flatten(template).items():
            n = int(np.shape(leaf)[0]) if n_members is None else n_members
            arrays[name] = create_array(snap_dir / name, (max(capacity, 1), n, *np.shape(leaf)[1:]),
                                        chunk_members(leaf, n), storage_dtype(np.dtype(leaf.dtype), dtype), compression)
        return cls(snap_dir, arrays, [])

    @classmethod
    def open(cls, snap_dir: Path, rows: int, template: dict, capacity: int = 1) -> "SeriesWriter":
        """The series in `snap_dir` with its first `rows` rows kept (rows past them are written over),
        checked against `template` (leaves [member, ...] as `create` takes them, or None to skip the
        check). A series in the older .npy layout is converted first."""
        snap_dir = Path(snap_dir)
        index = read_index(snap_dir)
        if index.get("layout") != ZARR_LAYOUT:
            convert_npy(snap_dir, solo=None, template=template, on_corrupt="raise")
            index = read_index(snap_dir)
        steps = index["steps"][:rows]
        if len(steps) != rows:
            raise CheckpointError(f"{snap_dir / INDEX} lists {len(steps)} snapshots, the train state expects {rows}")
        arrays = {}
        for name in index["params"]:
            array = open_array(snap_dir / name)
            arrays[name] = grow(array, capacity)
        for name, leaf in (flatten(template).items() if template is not None else ()):
            have = tuple(arrays[name].shape[2:]) if name in arrays else None
            if have != tuple(leaf.shape[1:]):
                raise CheckpointError(f"{snap_dir / name} holds snapshots of shape {have}, the run's params "
                                      f"{tuple(leaf.shape[1:])}")
        return cls(snap_dir, arrays, steps)

    @property
    def rows(self) -> int:
        return len(self.steps)

    def write(self, step: int, params, n_members: int | None = None) -> None:
        """Append one snapshot: `params` leaves [member, ...] (this process's blocks of the first `n_members`)."""
        self._write([int(step)], {name: [(m, block[:, None]) for m, block in local_blocks(leaf, n_members)]
                                  for name, leaf in flatten(params).items()})

    def write_rows(self, steps: list[int], params, slots, n_members: int | None = None) -> None:
        """Append several snapshots at once, one write per array and block: `params` leaves [member, slot, ...]
        (a chunk's params after each of its slots), `slots` the slots to keep, in the order of `steps`."""
        slots = np.asarray(slots, int)
        self._write([int(s) for s in steps], {name: [(m, block[:, slots]) for m, block in local_blocks(leaf, n_members)]
                                              for name, leaf in flatten(params).items()})

    def _write(self, steps: list[int], blocks: dict[str, list[tuple[slice, np.ndarray]]]) -> None:
        """Write rows `self.rows ...` from blocks {name: [(members, values [members, row, ...])]}."""
        if not steps:
            return
        start, end = self.rows, self.rows + len(steps)
        if end > next(iter(self.arrays.values())).shape[0]:  # more snapshots than planned: double the room
            self.arrays = {n: grow(a, max(2 * a.shape[0], end)) for n, a in self.arrays.items()}
        pending = []
        for name, array in self.arrays.items():
            dtype = array.dtype.numpy_dtype
            for members, block in blocks[name]:
                pending.append(array[start:end, members.start:members.stop].write(np.swapaxes(block, 0, 1).astype(dtype)))
        for future in pending:
            future.result()
        self.steps += steps

    def write_index(self) -> None:
        """List the rows written so far in index.json (after their chunks: a listed row is a written row)."""
        write_index(self.dir, self.steps, list(self.arrays))


def write_index(snap_dir: Path, steps: list[int], names: list[str]) -> None:
    atomic_write(Path(snap_dir) / INDEX, json.dumps({"layout": ZARR_LAYOUT, "steps": steps, "params": names}))


# ----------------------------------------------------------------------------- loading


def read_index(snap_dir: Path) -> dict:
    path = Path(snap_dir) / INDEX
    if not path.exists():
        raise CheckpointError(f"no checkpoints in {path.parent.parent} (missing {path})")
    try:
        index = json.loads(path.read_text())
        zarr = index.get("layout") == ZARR_LAYOUT
        assert zarr or len(index["steps"]) == len(index["crc32"])
        assert not zarr or isinstance(index["params"], list)
    except Exception as e:  # noqa: BLE001 - any malformed index is the same error to the user
        raise CheckpointError(f"corrupt snapshot index {path}: {e}") from None
    return index


def _skip_or_raise(message: str, on_corrupt: str) -> None:
    if on_corrupt == "raise":
        raise CheckpointError(message)
    warnings.warn(message + "; skipping it", stacklevel=3)


def load(snap_dir: Path, on_corrupt: str = "warn", verify: bool = True) -> tuple[np.ndarray, dict, bool]:
    """-> (steps [time], params {name: [time, member, ...] array}, member_axis) with corrupt rows named
    and dropped. The arrays are lazy (`LazyArray`, or memory maps for the .npy layout): nothing is held
    in memory until read. `member_axis` is False for a solo run written before runs had a member axis
    (its arrays are [time, ...]).

    `on_corrupt`: "warn" skips a corrupt snapshot with a warning naming it, "raise" stops.
    `verify`: read every chunk once to find the corrupt ones (bounded memory); False skips the check,
    and a corrupt chunk is then named when it is read.
    """
    snap_dir = Path(snap_dir)
    index = read_index(snap_dir)
    if index.get("layout") != ZARR_LAYOUT:
        return load_npy(snap_dir, on_corrupt)
    n = len(index["steps"])
    if n == 0:
        raise CheckpointError(f"no checkpoints in {snap_dir.parent} (the snapshot index is empty)")
    series = open_series(snap_dir, index["params"], n)
    bad = bad_rows(series) if verify else {}
    for row, why in bad.items():
        step = index["steps"][row]
        _skip_or_raise(f"checkpoint at step {step} (row {row} of {snap_dir}) is corrupt: {why}", on_corrupt)
    if len(bad) == n:
        raise CheckpointError(f"every checkpoint in {snap_dir.parent} is corrupt")
    good = np.asarray([row for row in range(n) if row not in bad])
    if bad:
        series = {k: x[good] for k, x in series.items()}
    return np.asarray(index["steps"])[good], series, True


# ----------------------------------------------------------------------------- the older .npy layout


def _row_crc(arrays: list[np.ndarray], row: int) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a[row]).view(np.uint8), crc)
    return crc


def load_npy(snap_dir: Path, on_corrupt: str = "warn") -> tuple[np.ndarray, dict, bool]:
    """`load` of the older layout: one .npy per parameter [time, member, ...] (or [time, ...] for a solo
    run written before runs had a member axis, `member_axis` False) and a CRC32 per row in index.json.
    The arrays are read-only memory maps."""
    snap_dir = Path(snap_dir)
    index = read_index(snap_dir)
    n = len(index["steps"])
    if n == 0:
        raise CheckpointError(f"no checkpoints in {snap_dir.parent} (the snapshot index is empty)")
    arrays = {}
    for path in sorted(snap_dir.glob("*.npy")):
        try:
            arr = np.load(path, mmap_mode="r")
        except Exception as e:  # noqa: BLE001 - truncated headers and short files land here
            raise CheckpointError(f"corrupt or truncated checkpoint file {path}: {e}") from None
        if arr.shape[0] < n:
            raise CheckpointError(f"checkpoint file {path} holds {arr.shape[0]} rows, index lists {n}")
        arrays[path.stem] = arr
    if not arrays:
        raise CheckpointError(f"no checkpoints in {snap_dir.parent} (no parameter files in {snap_dir})")
    names = sorted(arrays)
    good = []
    for row, (step, crc) in enumerate(zip(index["steps"], index["crc32"])):
        if _row_crc([arrays[k] for k in names], row) == crc:
            good.append(row)
            continue
        _skip_or_raise(f"checkpoint at step {step} (row {row} of {snap_dir}) is corrupt: checksum mismatch",
                       on_corrupt)
    if not good:
        raise CheckpointError(f"every checkpoint in {snap_dir.parent} is corrupt")
    rows = np.asarray(good)
    whole = len(good) == n
    params = {k: a[:n] if whole else a[rows] for k, a in arrays.items()}
    return np.asarray(index["steps"])[rows], params, index.get("layout") == MEMBER_LAYOUT


def convert_npy(snap_dir: Path, solo: bool | None, template: dict | None = None, on_corrupt: str = "warn",
                dtype: str | None = None, compression: str = "none") -> int:
    """Rewrite a series in the .npy layout into the zarr layout, in place; -> rows written (corrupt
    rows are named and left out). `solo`: the files hold one model without a member axis unless the
    index says "layout": "member"; None decides by `template`'s leaves [member, ...].

    Crash-safe: the zarr arrays are written beside the .npy files, index.json is then replaced in
    one step (from there on the series is in the new layout) and only then are the .npy files removed."""
    snap_dir = Path(snap_dir)
    steps, flat, member_axis = load_npy(snap_dir, on_corrupt)
    if not member_axis:
        if solo is None:
            solo = any(np.ndim(flat[k]) < np.ndim(leaf) + 1 for k, leaf in flatten(template or {}).items())
        if solo:
            flat = {k: v[:, None] for k, v in flat.items()}
    names = sorted(flat)
    arrays = {k: create_array(snap_dir / k, flat[k].shape, flat[k].shape[1],
                              storage_dtype(flat[k].dtype, dtype), compression) for k in names}
    writer = SeriesWriter(snap_dir, arrays, [])
    for row, step in enumerate(steps):
        writer.write(int(step), {k: np.asarray(flat[k][row]) for k in names})
    writer.write_index()
    del flat, writer  # the memory maps, before their files go
    for path in snap_dir.glob("*.npy"):
        path.unlink()
    return len(steps)


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


