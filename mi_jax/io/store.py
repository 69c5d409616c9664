"""The run directory: config, metrics, the parameter-snapshot series and the resumable state.

    RUN_DIR/config.json        the experiment config (kind + fields)
    RUN_DIR/metrics.jsonl      one JSON row per evaluation: {"step": s, "train_loss": x or [x per seed], ...}
    RUN_DIR/snapshots/         the parameter series, one zarr v3 array per parameter [time, member, ...]
                               (a solo run is one member), a CRC32C per chunk, written as training
                               goes (`mi_jax.io.snapshots`), and index.json: {"layout": "zarr3",
                               "steps": [...], "params": [...]}. Older run dirs hold one .npy per
                               parameter and a CRC32 per row in index.json; they load as they are, and
                               `convert_npy` (`mi-jax convert`) rewrites them
    RUN_DIR/state/             orbax-checkpoint CheckpointManager: the latest full train state
                               (params, optimizer state, step), the last two kept for fallback
    RUN_DIR/members.json       the members of a sweep program: one dict of settings each (a solo run
                               or a seed ensemble has none: its config's seeds are its members)
    RUN_DIR/.lock              held by the one process that writes the run dir (`run_dir_lock`)

Loading the series is lazy: nothing is read until a slice of it is. Every stored snapshot carries a
checksum, so a truncated or overwritten one is found and named.
I/O only: nothing here is traced by jax.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from pathlib import Path

import jax
import numpy as np

from mi_jax.io import snapshots
from mi_jax.io.snapshots import CheckpointError

SNAPSHOTS, STATE, METRICS, CONFIG, MEMBERS = "snapshots", "state", "metrics.jsonl", "config.json", "members.json"
MEMBER_LAYOUT = "member"  # index.json's "layout": every parameter file has a [member] axis after [time]


def leaf_name(path: tuple) -> str:
    """`("blocks", 0, "attn", "W_Q")` -> `"blocks.0.attn.W_Q"`."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten(tree) -> dict[str, np.ndarray]:
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """Inverse of `flatten` for nested dicts (integer keys come back as ints)."""
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, last = [int(p) if p.isdigit() else p for p in name.split(".")]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _row_crc(arrays: list[np.ndarray], row: int) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a[row]).view(np.uint8), crc)
    return crc


class SnapshotWriter:
    """Appends parameter snapshots to the run dir's series (the zarr layout, `mi_jax.io.snapshots`).

    `template` and each written `params` have leaves [member, ...] (host arrays, or jax Arrays
    sharded over the member axis: each process writes only the blocks it holds). `capacity` is a
    hint: the series grows past it. `dtype` (None: the params' own; "float32", "float16", "bfloat16")
    and `compression` ("none", "zstd") choose the storage of a new series; a resumed one keeps its own. Resuming a
    series in the older .npy layout converts it first."""

    def __init__(self, run_dir: Path, template: dict, capacity: int, resume_rows: int | None = None, *,
                 dtype: str | None = None, compression: str = "none"):
        self.dir = Path(run_dir) / SNAPSHOTS
        self.dir.mkdir(parents=True, exist_ok=True)
        flat = flatten(template)
        self.names = list(flat)
        self.writes_index = jax.process_index() == 0
        if resume_rows is None:
            self.steps = []
            self.arrays = {}
            for name, leaf in flat.items():
                stored = snapshots.storage_dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype, dtype)
                self.arrays[name] = (snapshots.create_array(self.dir / name, (max(capacity, 1), *np.shape(leaf)),
                                                            snapshots.chunk_members(leaf), stored, compression)
                                     if self.writes_index else snapshots.await_array(self.dir / name))
            return
        index = read_index(self.dir)
        if index.get("layout") != snapshots.ZARR_LAYOUT:
            convert_npy(Path(run_dir), solo=None, template=flat, on_corrupt="raise")
            index = read_index(self.dir)
        self.steps = index["steps"][:resume_rows]
        if len(self.steps) != resume_rows:
            raise CheckpointError(f"{self.dir / 'index.json'} lists {len(self.steps)} snapshots, state expects {resume_rows}")
        self.arrays = {}
        for name, leaf in flat.items():
            array = snapshots.open_array(self.dir / name)
            if tuple(array.shape[1:]) != np.shape(leaf):
                raise CheckpointError(f"{self.dir / name} holds rows of shape {tuple(array.shape[1:])}, "
                                      f"expected {np.shape(leaf)}")
            self.arrays[name] = snapshots.grow(array, capacity)

    @property
    def rows(self) -> int:
        return len(self.steps)

    def write(self, step: int, params) -> None:
        row = self.rows
        if row >= next(iter(self.arrays.values())).shape[0]:  # more snapshots than planned: double the room
            self.arrays = {n: snapshots.grow(a, max(2 * a.shape[0], row + 1)) for n, a in self.arrays.items()}
        snapshots.write_row(self.arrays, row, flatten(params))
        self.steps.append(int(step))
        if self.writes_index:  # after the row's chunks: a listed row is a written row
            snapshots.write_index(self.dir, self.steps, self.names, _atomic_write)


def read_index(snap_dir: Path) -> dict:
    path = Path(snap_dir) / "index.json"
    if not path.exists():
        raise CheckpointError(f"no checkpoints in {path.parent.parent} (missing {path})")
    try:
        index = json.loads(path.read_text())
        zarr = index.get("layout") == snapshots.ZARR_LAYOUT
        assert zarr or len(index["steps"]) == len(index["crc32"])
        assert not zarr or isinstance(index["params"], list)
    except Exception as e:  # noqa: BLE001 - any malformed index is the same error to the user
        raise CheckpointError(f"corrupt snapshot index {path}: {e}") from None
    return index


def _skip_or_raise(message: str, on_corrupt: str) -> None:
    if on_corrupt == "raise":
        raise CheckpointError(message)
    warnings.warn(message + "; skipping it", stacklevel=3)


def load_snapshots(run_dir: Path, on_corrupt: str = "warn", verify: bool = True) -> tuple[np.ndarray, dict, bool]:
    """-> (steps [time], params {name: [time, member, ...] array}, member_axis) with corrupt rows named
    and dropped. The arrays are lazy (`snapshots.LazyArray`, or memory maps for the .npy layout):
    nothing is held in memory until read. `member_axis` is False for a solo run written before runs
    had a member axis (its arrays are [time, ...]).

    `on_corrupt`: "warn" skips a corrupt snapshot with a warning naming it, "raise" stops.
    `verify`: read every chunk once to find the corrupt ones (bounded memory); False skips the check,
    and a corrupt chunk is then named when it is read.
    """
    snap_dir = Path(run_dir) / SNAPSHOTS
    index = read_index(snap_dir)
    if index.get("layout") != snapshots.ZARR_LAYOUT:
        return load_npy_snapshots(run_dir, on_corrupt)
    n = len(index["steps"])
    if n == 0:
        raise CheckpointError(f"no checkpoints in {run_dir} (the snapshot index is empty)")
    series = snapshots.open_series(snap_dir, index["params"], n)
    bad = snapshots.bad_rows(series) if verify else {}
    for row, why in bad.items():
        step = index["steps"][row]
        _skip_or_raise(f"checkpoint at step {step} (row {row} of {snap_dir}) is corrupt: {why}", on_corrupt)
    if len(bad) == n:
        raise CheckpointError(f"every checkpoint in {run_dir} is corrupt")
    good = np.asarray([row for row in range(n) if row not in bad])
    if bad:
        series = {k: x[good] for k, x in series.items()}
    return np.asarray(index["steps"])[good], series, True


def load_npy_snapshots(run_dir: Path, on_corrupt: str = "warn") -> tuple[np.ndarray, dict, bool]:
    """`load_snapshots` of the older layout: one .npy per parameter [time, member, ...] (or [time, ...]
    for a solo run written before runs had a member axis, `member_axis` False) and a CRC32 per row in
    index.json. The arrays are read-only memory maps."""
    snap_dir = Path(run_dir) / SNAPSHOTS
    index = read_index(snap_dir)
    n = len(index["steps"])
    if n == 0:
        raise CheckpointError(f"no checkpoints in {run_dir} (the snapshot index is empty)")
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
        raise CheckpointError(f"no checkpoints in {run_dir} (no parameter files in {snap_dir})")
    names = sorted(arrays)
    good = []
    for row, (step, crc) in enumerate(zip(index["steps"], index["crc32"])):
        if _row_crc([arrays[k] for k in names], row) == crc:
            good.append(row)
            continue
        _skip_or_raise(f"checkpoint at step {step} (row {row} of {snap_dir}) is corrupt: checksum mismatch",
                       on_corrupt)
    if not good:
        raise CheckpointError(f"every checkpoint in {run_dir} is corrupt")
    rows = np.asarray(good)
    whole = len(good) == n
    params = {k: a[:n] if whole else a[rows] for k, a in arrays.items()}
    return np.asarray(index["steps"])[rows], params, index.get("layout") == MEMBER_LAYOUT


def convert_npy(run_dir: Path, solo: bool | None, template: dict | None = None, on_corrupt: str = "warn",
                dtype: str | None = None, compression: str = "none") -> int:
    """Rewrite a series in the .npy layout into the zarr layout, in place; -> rows written (corrupt
    rows are named and left out). `solo`: the files hold one model without a member axis unless the
    index says "layout": "member"; None decides by `template`'s leaves [member, ...].

    Crash-safe: the zarr arrays are written beside the .npy files, index.json is then replaced in
    one step (from there on the run is in the new layout) and only then are the .npy files removed."""
    snap_dir = Path(run_dir) / SNAPSHOTS
    steps, flat, member_axis = load_npy_snapshots(run_dir, on_corrupt)
    if not member_axis:
        if solo is None:
            solo = any(np.ndim(flat[k]) < np.ndim(leaf) + 1 for k, leaf in (template or {}).items())
        if solo:
            flat = {k: v[:, None] for k, v in flat.items()}
    names = sorted(flat)
    arrays = {k: snapshots.create_array(snap_dir / k, flat[k].shape, flat[k].shape[1],
                                        snapshots.storage_dtype(flat[k].dtype, dtype), compression) for k in names}
    for row in range(len(steps)):
        snapshots.write_row(arrays, row, {k: np.asarray(flat[k][row]) for k in names})
    snapshots.write_index(snap_dir, [int(s) for s in steps], names, _atomic_write)
    del flat  # the memory maps, before their files go
    for path in snap_dir.glob("*.npy"):
        path.unlink()
    return len(steps)


# ----------------------------------------------------------------------------- resumable state


def _state_manager(run_dir: Path, read_only: bool = False):
    import orbax.checkpoint as ocp

    # synchronous: a small state's async save cost ~100 ms a call against ~40 ms in-line (measured, 12
    # 32x32 leaves), and on 2 cores the background thread only competes with the next chunk anyway
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager((Path(run_dir) / STATE).absolute(), options=options)


def _tree_crc(tree) -> int:
    crc = 0
    for leaf in jax.tree.leaves(tree):
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).view(np.uint8), crc)
    return crc


class StateStore:
    """The resumable train state, saved with orbax-checkpoint (in line, atomically: a save killed midway
    leaves the previous state)."""

    def __init__(self, run_dir: Path, read_only: bool = False):
        self.manager = _state_manager(run_dir, read_only)
        self.dir = Path(run_dir) / STATE

    def save(self, step: int, state, extra: dict) -> None:
        import orbax.checkpoint as ocp

        self.manager.wait_until_finished()
        host = jax.tree.map(lambda x: np.array(x, copy=True), state)  # no view of donated buffers
        meta = {**extra, "step": int(step), "crc32": _tree_crc(host)}
        self.manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta)),
        )

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def restore_latest(self, abstract_state) -> tuple[object, dict]:
        """Newest state whose contents check out; a corrupt one is named and the older one used."""
        import orbax.checkpoint as ocp

        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no resumable state in {self.dir}")
        for step in steps:
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
                state, meta = restored["state"], restored["meta"]
                if _tree_crc(state) != meta["crc32"]:
                    raise CheckpointError("checksum mismatch")
                return state, meta
            except Exception as e:  # noqa: BLE001 - any failure to read means: fall back
                warnings.warn(f"train state at step {step} in {self.dir} is corrupt ({e}); falling back", stacklevel=2)
        raise CheckpointError(f"every train state in {self.dir} is corrupt")


# ----------------------------------------------------------------------------- members


def write_members(run_dir: Path, members: list[dict]) -> None:
    _atomic_write(Path(run_dir) / MEMBERS, json.dumps(members, indent=1))


def read_members(run_dir: Path) -> list[dict] | None:
    """The members a sweep program's run dir lists, or None for a run without members.json."""
    path = Path(run_dir) / MEMBERS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt member table {path}: {e}") from None


# ----------------------------------------------------------------------------- metrics


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()


def read_metrics(run_dir: Path, upto_step: int | None = None) -> list[dict]:
    """The metric rows in step order, one per step: where a step appears twice the last row wins
    (a file written before runs had one writer may repeat steps). A line cut by a crash ends the file."""
    path = Path(run_dir) / METRICS
    by_step: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if upto_step is None or row["step"] <= upto_step:
                by_step[row["step"]] = row
    return [by_step[step] for step in sorted(by_step)]


def truncate_metrics(run_dir: Path, upto_step: int) -> None:
    rows = read_metrics(run_dir, upto_step)
    _atomic_write(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def metrics_arrays(rows: list[dict], solo: bool) -> dict[str, np.ndarray]:
    """Rows -> {"step": [n], name: [n, member, ...]}. A solo run's rows hold one model's values
    (no member axis in the file); `solo` gives them a member axis of 1."""
    if not rows:
        return {"step": np.zeros((0,), np.int64)}
    out = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    if solo:
        out = {k: v if k == "step" else v[:, None] for k, v in out.items()}
    return out
