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

A process that dies (killed, its host gone) must not take the others down with a C++ stack trace, nor
leave them waiting. Every process beats (a counter in JAX's coordination service, every `BEAT_S`,
from a thread of its own); a process whose beat has not moved for `SILENT_S` is lost. The others
notice at their next collective, which raises (gloo's connection to the dead process closes) or
waits for ever (a collective that needs a connection the dead process never made):
`lost_processes` turns the error into the lost processes' ids, which the loop stops with in one line
(`training.failures.PeerLost`); a process stuck in a collective is stopped by its beat thread with that
line (`explaining`) once the loss is `GRACE_S` old. Either way `leave` ends the process without JAX's
own distributed shutdown, which would wait for the dead process and then abort. JAX's own heartbeat
timeout, `HEARTBEAT_TIMEOUT_S` (60 s here, `$MI_JAX_HEARTBEAT_TIMEOUT`; JAX's default is 100), ends a
process with JAX's C++ abort when nothing above has; if process 0, which hosts the coordination
service, dies, JAX ends the others that way at once (no Python handler can run).

With one process (the default) every function here is a no-op or the obvious identity.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mi_jax.config import ConfigError, check
from mi_jax.io import run_dir as run_dir_lib


HEARTBEAT_TIMEOUT_S = int(os.environ.get("MI_JAX_HEARTBEAT_TIMEOUT", 60))
BEAT_S = 1.0  # how often each process beats
SILENT_S = 30.0  # a process whose beat has not moved for this long is lost: long enough that a busy one is not
GRACE_S = 2.0  # how long a loss may wait for the main thread to report it before the beat thread does
_JOINED: dict = {}  # how this process joined: {"auto": bool, "coordinator": "host:port"}
# the beat thread's view: when each process's beat last moved (monotonic), the processes found lost,
# whether the main thread reports a loss, and how to say one (`explaining`)
_WATCH: dict = {"seen": {}, "lost": [], "reporting": False, "explain": [], "running": False}
_STOPPING = threading.Lock()


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
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"cannot join the distributed run: {e}") from None
    _JOINED.update(auto=auto, coordinator=coordinator)
    if jax.process_count() > 1:
        threading.Thread(target=_beat, name="mi_jax-beat", daemon=True).start()


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


def on_every_process(command: str) -> str:
    """`command` (a `mi-jax` command line) as every process of this run must run it: with one process
    `command` itself, quoted; with several, with the flags that join them."""
    n = jax.process_count()
    if n == 1:
        return f"`{command}`"
    if _JOINED.get("auto"):
        return f"`{command} --distributed` on every process"
    from jax._src.distributed import global_state

    address = _JOINED.get("coordinator") or global_state.coordinator_address or "HOST:PORT"
    return f"`{command} --coordinator {address} --num-processes {n} --process-id I` on each process I = 0..{n - 1}"


# what a collective raises when a process it waits for has gone (gloo's TCP pairs, the coordination service)
_LOST_SIGNS = ("gloo", "connection closed", "connection reset", "broken pipe", "socket closed", "heartbeat",
               "unavailable")


def _client():
    from jax._src.distributed import global_state

    return global_state.client


def _beat() -> None:
    """Every `BEAT_S`: move this process's beat and note when each process's beat last moved; a loss the
    main thread has not taken up within `GRACE_S` (it is stuck in a collective) is reported from here."""
    client, me, n = _client(), jax.process_index(), jax.process_count()
    seen, beats, found = dict.fromkeys(range(n), time.monotonic()), {}, None
    _WATCH["running"] = True
    while _client() is client:  # until JAX's distributed shutdown, at exit
        try:
            client.key_value_increment(f"mi_jax/beat/{me}", 1)
            answers = client.key_value_dir_get("mi_jax/beat/")
        except Exception:  # noqa: BLE001 - a call that failed (the service gone with process 0: JAX ends this one)
            time.sleep(BEAT_S)
            continue
        for key, value in answers:  # a beat seen to move, however late this thread looks, is a process alive
            i = int(key.rsplit("/", 1)[-1])
            if beats.get(i) != value:
                beats[i], seen[i] = value, time.monotonic()
        _WATCH["seen"] = dict(seen)
        lost = [i for i, t in seen.items() if time.monotonic() - t > SILENT_S]
        found = (found or time.monotonic()) if lost else None
        if found is not None and not _WATCH["reporting"] and time.monotonic() - found > GRACE_S:
            _stuck(lost)
        time.sleep(BEAT_S)


def _stuck(lost: list[int]) -> None:
    """The main thread waits in a collective that will not end: say the loss here and end the process."""
    if not _STOPPING.acquire(blocking=False):
        return
    _WATCH["lost"] = lost
    explain = _WATCH["explain"][0] if _WATCH["explain"] else lost_text
    try:
        text = explain(lost)
    except Exception:  # noqa: BLE001 - the plain words, then
        text = lost_text(lost)
    print(f"mi-jax: error: {text}", file=sys.stderr)
    leave(2)


def lost_text(lost: list[int]) -> str:
    """`process 1 of 2 stopped answering`: what a loss is called."""
    who = f"process {lost[0]}" if len(lost) == 1 else f"processes {', '.join(map(str, lost))}"
    return f"{who} of {jax.process_count()} stopped answering"


@contextlib.contextmanager
def explaining(explain: Callable[[list[int]], str]):
    """While the block runs, a loss the beat thread reports (the main thread stuck) is said as
    `explain(lost ids)`; nested, the outermost says it (it knows the command that continues)."""
    _WATCH["explain"].append(explain)
    try:
        yield
    finally:
        _WATCH["explain"].remove(explain)


def lost_processes(error: BaseException) -> list[int] | None:
    """The processes of this run that stopped answering, when `error` (raised by a collective) is what a
    collective raises when one has gone; None when `error` is not that (or only one process runs).

    Waits until every other process's beat has either moved since (it answers) or been still for
    `SILENT_S` (it is lost). Found any, this process is to end with `leave` (at exit, if nothing calls
    it before: JAX's distributed shutdown would wait for the lost process, then abort)."""
    n = jax.process_count()
    text = " ".join(str(e) for e in (error, error.__cause__) if e is not None).lower()
    if n == 1 or not _WATCH["running"] or not any(sign in text for sign in _LOST_SIGNS):
        return None
    _WATCH["reporting"] = True
    since, deadline = time.monotonic(), time.monotonic() + SILENT_S + 4 * BEAT_S
    while True:
        now, seen = time.monotonic(), _WATCH["seen"]
        lost = sorted(i for i, t in seen.items() if now - t > SILENT_S)
        answering = {i for i, t in seen.items() if t > since}
        if len(answering | set(lost)) >= n or now > deadline:
            break
        time.sleep(BEAT_S / 4)
    if not lost:
        _WATCH["reporting"] = False
        return None
    if not _STOPPING.acquire(blocking=False):  # the beat thread is saying it already, and ends the process
        while True:
            time.sleep(1)
    _WATCH["lost"] = lost
    atexit.register(leave, 1)  # runs before JAX's own shutdown (registered earlier), which would hang
    return lost


def leave(code: int) -> None:
    """With several processes, end this one now with exit status `code`, skipping JAX's distributed
    shutdown: after a run stopped (a process lost, a full disk) that waits for processes that will not
    come (until the heartbeat timeout, then aborts). Process 0 hosts the coordination service, without
    which JAX ends the others at once: it first waits (`SILENT_S` at most) for the other live processes
    to leave. With one process: nothing (the caller exits as usual)."""
    if jax.process_count() == 1:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        client, n, me = _client(), jax.process_count(), jax.process_index()
        if me != 0:
            client.key_value_set(f"mi_jax/leaving/{me}", "bye", allow_overwrite=True)
        else:
            others = set(range(1, n)) - set(_WATCH["lost"])
            deadline = time.monotonic() + SILENT_S
            while others and time.monotonic() < deadline:
                others -= {int(key.rsplit("/", 1)[-1]) for key, _ in client.key_value_dir_get("mi_jax/leaving/")}
                time.sleep(0.1)
    os._exit(code)


@contextlib.contextmanager
def writer_lock(run_dir: Path, what: str, before: Callable[[], object] = lambda: None):
    """`io.run_dir.lock(run_dir, what)` held by the writer alone, after `before()` (e.g. making
    the dir) on the writer; yields whether this process writes. Every process first waits for the
    others to finish their checks of the run dir (they must not see what the writer makes); a
    ConfigError on the writer (the dir busy or unwritable, the disk full) is raised on every process."""
    sync(f"mi_jax: checked {run_dir}")
    with contextlib.ExitStack() as held:
        error = None
        if is_writer():
            try:
                before()
                held.enter_context(run_dir_lib.lock(run_dir, what))
            except ConfigError as e:
                error = e
            except OSError as e:  # the lock's owner file unwritable: a full disk, a read-only mount
                error = ConfigError(f"cannot take the run dir {run_dir}: {e.strerror or e}")
        if not all_ok(error is None):
            raise error or ConfigError(f"process 0 could not take the run dir {run_dir} (see its error)")
        yield is_writer()
