"""Several processes training one run (multi-host): JAX's own `jax.distributed`, and who writes.

    mi-jax sweep grokking_small --grid train.lr=1e-3,3e-3 --distributed          # SLURM, TPU VM, Open MPI
    mi-jax sweep ... --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0  # anywhere else

Every process runs the same program on its own devices; the [member] axis (or a solo run's batch)
is split over the devices of all processes (`devices.plan`). Each process writes the snapshot blocks
of the members on its own devices, and the train state is saved by all processes together (orbax's
multi-host save: each its own shards); process 0 alone writes the rest of the run dir (config,
members, the snapshot index, metrics, wandb, the progress bar) and holds its lock. Between the
checks every process makes of a run dir and process 0's writes, the processes wait for each other
(`writer_lock`, `sync`), so no process reads a half-made run dir and a failure on process 0 stops
every process with one line.

With one process (the default) every function here is a no-op or the obvious identity.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mi_jax.config import ConfigError, check
from mi_jax.io import run_dir as run_dir_lib


def initialize(*, auto: bool = False, coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the processes of a multi-host run (call before any JAX computation).

    `auto`: let `jax.distributed.initialize` find the cluster in the environment (SLURM, a TPU VM,
    Open MPI, or JAX_COORDINATOR_ADDRESS); otherwise `coordinator` ("host:port" of process 0),
    `num_processes` and `process_id` (0 .. num_processes - 1) all given. Nothing given: one process.
    """
    explicit = (coordinator, num_processes, process_id)
    if not auto and all(v is None for v in explicit):
        return
    check(auto or None not in explicit,
          "--coordinator, --num-processes and --process-id go together (or pass --distributed to detect the cluster)")
    if num_processes is not None:
        check(num_processes >= 1, f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None:
        check(0 <= process_id < num_processes,
              f"--process-id must be in 0..{num_processes - 1}, got {process_id}")
    if jax.config.jax_cpu_collectives_implementation is None:  # CPU devices of several processes talk over gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"cannot join the distributed run: {e}") from None


def is_writer() -> bool:
    """Whether this process writes the run dir (process 0; with one process, always)."""
    return jax.process_index() == 0


def gather(tree):
    """Every array of `tree` whole on this host (numpy): arrays split over the devices of several
    processes are all-gathered; with one process the tree comes back as it is (no copy, no sync).
    The split arrays must share their leading axis (a run's [member, ...] leaves)."""
    if jax.process_count() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    split = [x for x in leaves if isinstance(x, jax.Array) and not x.is_fully_replicated]
    whole = {id(x): np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x) for x in leaves
             if not isinstance(x, jax.Array) or x.is_fully_replicated}  # host arrays (already gathered) as they are
    if split:  # one all-gathered [member, n] block per dtype, cut back into the arrays in order
        blocks = _rows_by_dtype(split[0].sharding.mesh)(split)
        blocks = {dtype: np.asarray(block.addressable_data(0)) for dtype, block in blocks.items()}
        start = dict.fromkeys(blocks, 0)
        for x in split:
            dtype, width = str(x.dtype), math.prod(x.shape[1:])
            whole[id(x)] = blocks[dtype][:, start[dtype]: start[dtype] + width].reshape(x.shape)
            start[dtype] += width
    return treedef.unflatten([whole[id(x)] for x in leaves])


@functools.cache
def _rows_by_dtype(mesh: Mesh):
    """[member, ...] arrays -> {dtype: [member, n] their rows side by side}, replicated on every device:
    one all-gather per dtype (one per array, as `multihost_utils.process_allgather` does, costs a
    rendezvous of every process each)."""
    def rows(leaves):
        by_dtype: dict[str, list] = {}
        for x in leaves:
            by_dtype.setdefault(str(x.dtype), []).append(x.reshape(x.shape[0], -1))
        return {dtype: jnp.concatenate(xs, axis=1) for dtype, xs in by_dtype.items()}

    return jax.jit(rows, out_shardings=NamedSharding(mesh, PartitionSpec()))


def put(tree, sharding):
    """Host arrays, equal on every process, as global arrays on `sharding` (each process places its shards)."""
    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree)


def sync(name: str) -> None:
    """Wait until every process gets here (with one process: return)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(value: int) -> int:
    """Process 0's `value`, on every process (with one process: `value`)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def all_ok(ok: bool) -> bool:
    """Whether every process got through a step (a barrier: every process must call it)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


@contextlib.contextmanager
def writer_lock(run_dir: Path, what: str, before: Callable[[], object] = lambda: None):
    """`io.run_dir.lock(run_dir, what)` held by the writer alone, after `before()` (e.g. making
    the dir) on the writer; yields whether this process writes. Every process first waits for the
    others to finish their checks of the run dir (they must not see what the writer makes); a
    ConfigError on the writer (the dir busy or unwritable) is raised on every process."""
    sync(f"mi_jax: checked {run_dir}")
    with contextlib.ExitStack() as held:
        error = None
        if is_writer():
            try:
                before()
                held.enter_context(run_dir_lib.lock(run_dir, what))
            except ConfigError as e:
                error = e
        if not all_ok(error is None):
            raise error or ConfigError(f"process 0 could not take the run dir {run_dir} (see its error)")
        yield is_writer()
