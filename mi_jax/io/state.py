"""The resumable train state (RUN_DIR/state/): params, optimiser state and step, saved with
orbax-checkpoint, the last two kept so that a corrupt one falls back to the one before.

Every process of a run saves and restores together, each writing and reading the shards on its own
devices (orbax's multi-host checkpointing): no process gathers another's members. A state restores
onto an abstract target (`jax.ShapeDtypeStruct`s with their shardings), so nothing is made on the host
first. Each save records a checksum of the state's values, which the restore checks: with one process
the CRC32 of its bytes (`crc32`: the state is on this host's devices, and orbax copies it to the host to
write it anyway), with several a `checksum` computed on the devices, the same whatever the sharding
(no process holds the whole state). A state saved for another layout of the members (other devices,
other padding) is read on the host and handed to `relayout`.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.io import CheckpointError
from mi_jax.io.run_dir import STATE


def saved_step(run_dir: Path) -> int | None:
    """The step of the newest train state in `run_dir` (None: none saved), read from its folder alone:
    opening orbax's manager would wait for every process of a multi-process run, which a lost one
    never joins."""
    import orbax.checkpoint as ocp

    try:
        return max(ocp.utils.checkpoint_steps(Path(run_dir) / STATE), default=None)
    except Exception:  # noqa: BLE001 - an unreadable state folder: no state to name
        return None


def _manager(run_dir: Path, read_only: bool = False):
    import orbax.checkpoint as ocp

    # synchronous: a small state's async save costs more than an in-line one, and on a few cores the
    # background thread only competes with the next chunk anyway (benchmarks.md)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager((Path(run_dir) / STATE).absolute(), options=options)


def _mix(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: every input bit moves about half the output bits."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """x's bits as uint32 words (an axis of 2 more for 8-byte dtypes)."""
    size = x.dtype.itemsize
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if size in (4, 8):
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(jnp.uint32)


@jax.jit
def _checksum(leaves: list) -> jax.Array:
    total = jnp.zeros((), jnp.uint32)
    for j, x in enumerate(leaves):
        words = _words(jnp.asarray(x))
        index = jnp.zeros(words.shape, jnp.uint32)  # each word's position, without a reshape of a sharded array
        for axis, n in enumerate(words.shape):
            index = index * jnp.uint32(n) + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
        leaf = jnp.sum(_mix(words ^ (index * jnp.uint32(0x9E3779B9))), dtype=jnp.uint32)
        total = total + _mix(leaf + jnp.uint32(j) * jnp.uint32(0x85EBCA77))
    return total


def checksum(tree) -> int:
    """A 32-bit checksum of every value of `tree` (jax Arrays, sharded over any devices and processes,
    or host arrays): sums of mixed words wrap exactly, so the layout does not change it."""
    value = _checksum(jax.tree.leaves(tree))
    return int(np.asarray(value.addressable_data(0) if isinstance(value, jax.Array) else value))


def _host_crc(tree) -> int:
    """The CRC32 of a host tree's bytes, leaf after leaf."""
    crc = 0
    for leaf in jax.tree.leaves(tree):
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).view(np.uint8), crc)
    return crc


class StateStore:
    """The resumable train state, saved with orbax-checkpoint (in line, atomically: a save killed midway
    leaves the previous state)."""

    def __init__(self, run_dir: Path, read_only: bool = False):
        self.manager = _manager(run_dir, read_only)
        self.dir = Path(run_dir) / STATE

    def save(self, step: int, state, meta: dict) -> None:
        """Save `state` (every process: its own shards) with `meta` (JSON; the step and checksum added)."""
        import orbax.checkpoint as ocp

        fingerprint = {"crc32": _host_crc(jax.device_get(state))} if jax.process_count() == 1 else \
            {"checksum": checksum(state)}
        meta = {**meta, "step": int(step), **fingerprint}
        self.manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()

    def latest_meta(self) -> dict:
        """The meta of the newest saved state (its step, snapshot rows, layout, ...)."""
        import orbax.checkpoint as ocp

        step = self.manager.latest_step()
        if step is None:
            raise CheckpointError(f"no resumable state in {self.dir}")
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def restore_latest(self, target, saved_as: Callable[[dict], object] | None = None,
                       relayout: Callable[[object, dict], object] = lambda host, meta: host) -> tuple[object, dict]:
        """The newest state whose values check out -> (state, its meta); a corrupt one is named and the
        one before used. `target`: the abstract state (leaves `jax.ShapeDtypeStruct` with shardings).
        `saved_as(meta)`: the abstract state as that save holds it (default: the target); a state saved
        in other shapes (another layout of the members) is read on the host and returned as
        `relayout(host state, meta)`."""
        import orbax.checkpoint as ocp

        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no resumable state in {self.dir}")
        for step in steps:
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                saved = target if saved_as is None else saved_as(meta)
                # a CRC32 needs the whole state on one host: with several processes such a state is read there
                if _shapes(saved) == _shapes(target) and ("checksum" in meta or jax.process_count() == 1):
                    state = self._restore(step, target)
                    _verify(state, meta)
                    return state, meta
                host = self._restore(step, jax.tree.map(lambda s: np.empty(s.shape, s.dtype), saved))
                _verify(host, meta)
                return relayout(host, meta), meta
            except Exception as e:  # noqa: BLE001 - any failure to read means: fall back
                warnings.warn(f"train state at step {step} in {self.dir} is corrupt ({e}); falling back", stacklevel=2)
        raise CheckpointError(f"every train state in {self.dir} is corrupt")

    def _restore(self, step: int, target):
        import orbax.checkpoint as ocp

        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]


def _verify(state, meta: dict) -> None:
    """CheckpointError unless `state` has the checksum its save recorded."""
    ok = checksum(state) == meta["checksum"] if "checksum" in meta else _host_crc(jax.device_get(state)) == meta["crc32"]
    if not ok:
        raise CheckpointError("checksum mismatch")


def _shapes(tree) -> list[tuple]:
    return [tuple(x.shape) for x in jax.tree.leaves(tree)]
