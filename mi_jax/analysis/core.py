"""The trajectory analysis layer: every measure, every checkpoint and member, one compiled program.

A *measure* is a pure function `(params, data) -> value` (scalar or array) of ONE model's
params (a dict like `init_params` gives) and whatever fixed data it needs. A measure may also
return a dict `{name: value}`: a *family* of measures that share one forward pass (the attention
scores of every head from one cached run, say); its entries become results of their own.
`analyze` evaluates a dict of measures over a whole `Trajectory`: vmapped over members,
`lax.map`ped in chunks of checkpoints, the checkpoints split over the local devices, jitted
once, streamed from disk in blocks (bounded host and device memory). It never loops over
checkpoints in Python. This folder holds pure measures only; writing results and figures is
`mi_jax.reports`' job.

    results = mj.analyze(traj, {"weight_norm": weight_norm}, data)
    results["weight_norm"]   # [time, member]
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mi_jax import runtime
from mi_jax.config import ConfigError
from mi_jax.io.series import read_tree

Measure = Callable[[dict, Any], Any]
STREAM_BYTES = 64 << 20  # params read from disk (and copied to the device) per block of checkpoints
_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("progress", default=False)


@contextlib.contextmanager
def showing_progress(enabled: bool = True):
    """While this block runs, calls of `analyze` over several blocks of checkpoints show a progress bar
    (what `mi-jax analyze` and `mi-jax llc` do unless --quiet)."""
    token = _PROGRESS.set(enabled)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def evaluate_measures(measures: dict[str, Measure], params: dict, data: Any) -> dict:
    """All measures of one model (no time or member axis); a family's entries are merged in."""
    out = {}
    for name, fn in measures.items():
        value = fn(params, data)
        family = value if isinstance(value, dict) else {name: value}
        clash = sorted(set(family) & set(out))
        if clash:
            raise ConfigError(f"measure {name!r} returns {clash[0]!r}, which another measure also returns")
        out.update(family)
    return out


def default_chunk_size() -> int:
    """Checkpoints per vmapped batch of the `lax.map`: 1 on CPU (one model's forward already fills
    the cores, and a batched body runs slower there), 16 on an accelerator."""
    return 1 if jax.default_backend() == "cpu" else 16


def analyze_params(
    params: dict,
    measures: dict[str, Measure],
    data: Any = None,
    *,
    member_axis: bool = True,
    per_member: dict | None = None,
    chunk_size: int | None = None,
    block_bytes: int = STREAM_BYTES,
    members_in_turn: bool = False,
) -> dict[str, np.ndarray]:
    """Measures over stacked params with leaves [time, member, ...] -> {name: [time, member, ...]}
    (with `member_axis=False`: leaves [time, ...] -> [time, ...]).

    `per_member`: {name: [member, ...]} arrays that differ between members (each member's key
    frequencies, say); member m's measures see `{**data, name: value[m]}` (`data` must be a dict).
    With several local devices (the CPU devices `mi-jax` makes of the cores, or GPUs) the
    checkpoints are split over them, each device mapping over its share, with no communication.
    The params may be lazy (a loaded `Trajectory`'s): they are read in blocks of about `block_bytes`.
    `members_in_turn`: the members of a checkpoint one after another (a `lax.map`), not vmapped at once:
    a member's memory instead of all of theirs, for measures that hold much (the LLC's chains and probes).
    """
    if not measures:
        raise ConfigError("no measures to compute")
    if per_member is not None and not member_axis:
        raise ConfigError("per_member data needs params with a member axis")
    n_members = jax.tree.leaves(params)[0].shape[1] if member_axis else 1
    own = per_member or {}
    if member_axis and n_members == 1:  # one member: mapped as a single model, its axis put back after
        params = jax.tree.map(lambda x: x[:, 0], params)
        own = jax.tree.map(lambda x: np.asarray(x)[0], own)
        out = analyze_params(params, measures, {**data, **own} if own else data, member_axis=False,
                             chunk_size=chunk_size, block_bytes=block_bytes)
        return jax.tree.map(lambda y: y[:, None], out)
    # the data's large arrays are arguments of the program, not constants compiled into it: XLA would
    # fold what the measures compute from them alone (a base model's forward pass) at compile time
    (data, own), leaves = _lifted((data, own))
    one = lambda p, mine, d: evaluate_measures(measures, p, {**d, **mine} if mine else d)  # noqa: E731

    def per_time(p, lifted):
        d, mine = _restored((data, own), lifted)
        if not member_axis:
            return one(p, {}, d)
        if members_in_turn:
            return jax.lax.map(lambda qm: one(*qm, d), (p, mine))
        return jax.vmap(lambda q, m: one(q, m, d))(p, mine)

    return _map_fitting_memory(per_time, params, leaves, chunk_size or default_chunk_size(), block_bytes)


LIFT_SIZE = 1024  # data arrays of at least this many elements are passed to the program, the rest compiled in


class _Lifted:
    """Marks the place of a lifted array in a data tree (a leaf jax does not trace)."""

    def __init__(self, index: int):
        self.index = index


def _lifted(tree):
    """tree with its large arrays replaced by markers -> (tree, [those arrays])."""
    arrays = []

    def lift(x):
        if isinstance(x, (np.ndarray, jax.Array)) and x.size >= LIFT_SIZE:
            arrays.append(x)
            return _Lifted(len(arrays) - 1)
        return x

    return jax.tree.map(lift, tree), arrays


def _restored(tree, arrays):
    return jax.tree.map(lambda x: arrays[x.index] if isinstance(x, _Lifted) else x, tree)


def _block_len(params: dict, n_time: int, n_dev: int, chunk_size: int, block_bytes: int) -> int:
    """Checkpoints per streamed block: the whole series when it fits in `block_bytes`, else as many
    as fit, a multiple of the devices (and of `chunk_size` per device)."""
    step_bytes = sum(int(np.prod(x.shape[1:])) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))
    unit = n_dev * max(chunk_size, 1)  # a block is a whole number of these
    most = max(1, block_bytes // max(step_bytes * unit, 1))  # units per block that fit in block_bytes
    n_units = -(-n_time // unit)
    n_blocks = -(-n_units // most)
    return unit * -(-n_units // n_blocks)  # blocks as even as can be: the last one's padding stays small


def _map_fitting_memory(per_time: Callable, params: dict, extra: list, chunk_size: int,
                        block_bytes: int = STREAM_BYTES) -> dict[str, np.ndarray]:
    """`_map_over_time`, the chunk of checkpoints halved (with a warning) for as long as the device runs out of
    memory: 16 checkpoints of a large model's activations (long contexts, a wide vocabulary, many members) may
    not fit, or a device shared with other processes may hold less than its size."""
    while True:
        try:
            return _map_over_time(per_time, params, extra, chunk_size, block_bytes)
        except jax.errors.JaxRuntimeError as error:
            if "RESOURCE_EXHAUSTED" not in str(error) or chunk_size <= 1:
                raise
            chunk_size //= 2
            warnings.warn(f"the analysis ran out of device memory; trying again with {chunk_size} checkpoint(s) a batch",
                          stacklevel=2)


def _map_over_time(per_time: Callable, params: dict, extra: list, chunk_size: int,
                   block_bytes: int = STREAM_BYTES) -> dict[str, np.ndarray]:
    """`lax.map` of per_time(params, extra) over the leading [time] axis of params, jitted, split over the
    local devices, streamed in blocks of checkpoints (the next block read while this one computes), so
    host and device memory hold about two blocks whatever the series' length; `params` may be lazy
    arrays; `extra` (arrays every checkpoint reads) is placed on the devices once."""
    # batch_size=1 means a plain map, passed as such: lax.map's batch-of-one form (a vmap of size 1) gave
    # wrong, run-to-run different results in the program split over CPU devices
    over_time = lambda ps, extra: jax.lax.map(lambda p: per_time(p, extra), ps,  # noqa: E731
                                              batch_size=chunk_size if chunk_size > 1 else None)
    n_time = jax.tree.leaves(params)[0].shape[0]
    n_dev = min(jax.local_device_count(), n_time)
    block = _block_len(params, n_time, n_dev, chunk_size, block_bytes)
    if n_dev == 1:
        compiled, placed = jax.jit(over_time), jax.device_put(extra)
        run, to_host = (lambda ps: compiled(ps, placed)), lambda out: jax.tree.map(np.asarray, out)
    else:
        run, to_host = _split_over_devices(over_time, extra, n_dev)

    def read(start: int):  # [block, ...] host arrays, the last checkpoint repeated to fill the last block
        host = read_tree(jax.tree.map(lambda x: x[start : start + block], params))
        pad = block - (min(start + block, n_time) - start)
        return jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x, host)

    starts = range(0, n_time, block)
    outs = []
    bar = None
    if _PROGRESS.get() and len(starts) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_time, unit="checkpoint", dynamic_ncols=True, leave=False)
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(read, 0)
        for k, start in enumerate(starts):
            host = pending.result()
            if k + 1 < len(starts):
                pending = reader.submit(read, starts[k + 1])
            # dispatched, not awaited: the next block is queued while this one computes (no idle device
            # between blocks); the last-but-one block's results are fetched now, so at most two are in flight
            outs.append(run(host))
            if k >= 1:
                outs[k - 1] = to_host(outs[k - 1])
                if bar is not None:
                    bar.update(block)
            del host
    outs[-1] = to_host(outs[-1])
    if bar is not None:
        bar.close()
    out = outs[0] if len(outs) == 1 else jax.tree.map(lambda *ys: np.concatenate(ys), *outs)
    return jax.tree.map(lambda y: y[:n_time], out)


def _split_over_devices(over_time: Callable, extra: list, n_dev: int) -> tuple[Callable, Callable]:
    """over_time as one program whose [time] axis (a multiple of n_dev) is split over n_dev local devices,
    each mapping over its share with no communication (`extra` on every device): (run, to_host),
    run(params) dispatching it and to_host(its result) the host arrays [time, ...]."""
    mesh = Mesh(np.array(jax.local_devices()[:n_dev]), ("checkpoints",))
    split = PartitionSpec("checkpoints")

    def on_one_device(block, extra):  # leaves [1, time / n_dev, ...]: this device's checkpoints
        return jax.tree.map(lambda y: y[None], over_time(jax.tree.map(lambda x: x[0], block), extra))

    run = jax.jit(jax.shard_map(on_one_device, mesh=mesh, in_specs=(split, PartitionSpec()), out_specs=split,
                                check_vma=False))
    placed = jax.device_put(extra, NamedSharding(mesh, PartitionSpec()))

    def split_run(params):  # leaves [time, ...] -> [device, time / device, ...]
        shares = jax.tree.map(lambda x: x.reshape(n_dev, -1, *x.shape[1:]), params)
        return run(jax.device_put(shares, NamedSharding(mesh, split)), placed)

    return split_run, lambda out: jax.tree.map(lambda y: np.asarray(y).reshape(-1, *y.shape[2:]), out)


def analyze(traj, measures: dict[str, Measure], data: Any = None, *, per_member: dict | None = None,
            chunk_size: int | None = None, block_bytes: int = STREAM_BYTES,
            members_in_turn: bool = False) -> dict[str, np.ndarray]:
    """Measures for every checkpoint and member of `traj` with one compiled program: {name: [time, member, ...]}.

    measures: {name: fn(params, data)} (a family returns {name: value}); data: fixed arrays the
    measures share; per_member: {name: [member, ...]}, data that differs between members (see
    `analyze_params`); chunk_size: checkpoints per vmapped batch of the map over time; block_bytes:
    params per block streamed from disk (host and device memory hold about two blocks); members_in_turn:
    see `analyze_params`.
    """
    runtime.configure()
    return analyze_params(traj.params, measures, data, per_member=per_member, chunk_size=chunk_size,
                          block_bytes=block_bytes, members_in_turn=members_in_turn)
