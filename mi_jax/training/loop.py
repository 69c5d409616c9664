"""The jitted training loop: chunks of steps inside `lax.scan`, ensembles as one vmapped program.

A *task* supplies pure functions (see `mi_jax.tasks`):
    init_params(key) -> params
    batch(key, step) -> batch             (jittable; the data order is a function of (seed, step))
    loss(params, batch) -> scalar
    evaluate(params) -> {name: scalar}    (train/test loss and accuracy, ...; its fixed arrays
                                           may pass `parallel.split_batch`, to be split in data-parallel chunks)
    frozen(path) -> bool                  (parameters the optimiser leaves alone)

One compiled *chunk* runs the steps between two scheduled snapshots (`schedule`: every
`ckpt_every` steps, or log-spaced), with an evaluation every `eval_every` steps and at its end.
Between chunks (Python, outside jit): parameter snapshots, the resumable state, metrics rows,
logging. A run with `seeds=(0, 1, ...)` vmaps the chunk over a leading [seed] axis;
member k equals the solo run with seed k up to float reassociation. With `data_parallel` (or
`devices`, or several processes: `training.distributed`) the chunk is one SPMD program over the
devices of every process (see `data_sharding`), the members padded to a multiple of the devices.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mi_jax.config import check
from mi_jax.io import store
from mi_jax.io.members import member_config
from mi_jax.training import distributed, schedule
from mi_jax.training.config import TrainConfig
from mi_jax.training.parallel import mean_value_and_grad, split_batch, splitting_batches


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run dir keeps the last good checkpoint."""


# the TrainConfig fields in which the members of one compiled program may differ (as [member] arrays)
HYPERPARAMETERS = ("lr", "weight_decay", "beta1", "beta2", "warmup_steps")
TRAIN_KEYS = tuple(f"train.{name}" for name in HYPERPARAMETERS)


def make_optimizer(h, params, frozen: Callable[[tuple], bool], warm_up: bool) -> optax.GradientTransformation:
    """AdamW with linear warm-up (lr at step s: lr * min(s / warmup_steps, 1)); parameters for which
    `frozen(path)` holds are never updated. h: the HYPERPARAMETERS by name (a TrainConfig, or one
    member's traced values); `warm_up`: whether any member warms up (the state then counts steps)."""
    h = {name: getattr(h, name) for name in HYPERPARAMETERS} if isinstance(h, TrainConfig) else h
    if warm_up:
        lr, warmup = h["lr"], h["warmup_steps"]
        schedule = lambda count: lr * jnp.where(warmup > 0, jnp.minimum(count / jnp.maximum(warmup, 1), 1.0), 1.0)  # noqa: E731
    else:
        schedule = h["lr"]
    adamw = optax.adamw(schedule, b1=h["beta1"], b2=h["beta2"], weight_decay=h["weight_decay"])
    labels = jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if frozen(p) else "train", params)
    if "frozen" not in jax.tree.leaves(labels):
        return adamw
    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)


def train_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, data key) of a seed."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


def check_devices(tc: TrainConfig) -> None:
    """A ConfigError (one line) when tc asks for more devices than this run has (those of every process)."""
    count = jax.device_count()
    check(tc.devices is None or tc.devices <= count,
          f"train.devices={tc.devices} but only {count} device{'s' * (count > 1)} exist{'s' * (count == 1)} "
          f"({jax.devices()[0].platform}; on CPU set JAX_NUM_CPU_DEVICES)")


def split_devices(task, tc: TrainConfig, n_members: int | None = None) -> int:
    """How many devices a run's leading axis is split over (1: a plain one-device run).

    Several members (`n_members`): `tc.devices`, or min(devices, members) with data_parallel (with
    several processes: every device of every process); the Trainer pads the members to a multiple
    of it. A solo run splits its batch over `tc.devices`, which must divide it, or with data_parallel
    over the most devices that divide it. Asking for more devices than exist is a ConfigError.
    """
    check_devices(tc)
    count = jax.device_count()
    several_processes = jax.process_count() > 1
    check(not several_processes or tc.devices in (None, count),
          f"train.devices={tc.devices}: a run of {jax.process_count()} processes splits over all {count} devices")
    if not (tc.data_parallel or tc.devices or several_processes):
        return 1
    if n_members:
        return tc.devices or (count if several_processes else min(count, n_members))
    batch = jax.eval_shape(task.batch, jax.random.key(0), jnp.zeros((), jnp.int32))
    size = math.gcd(*(leaf.shape[0] for leaf in jax.tree.leaves(batch)))
    if tc.devices or several_processes:  # every process must hold a share: no smaller split
        n = tc.devices or count
        check(size % n == 0, f"a batch of {size} rows does not split over {n} devices: set train.batch_size "
                             f"to a multiple of {n}")
        return n
    return max(k for k in range(1, count + 1) if size % k == 0)


def data_sharding(task, tc: TrainConfig, n_members: int | None = None) -> tuple[NamedSharding, NamedSharding | None] | None:
    """(sharding of the train state, of each step's batch) over `split_devices` devices, or None for
    a plain one-device run.

    A solo run replicates its state and splits the batch's leading axis; a run of several members
    (`n_members`, by default tc's seeds) splits its leading [member] axis (state, keys and metrics)
    and keeps each member's batch whole (batch sharding None: the vmapped batch follows its member).
    """
    n_members = n_members or (len(tc.seeds) if tc.ensemble else None)
    n = split_devices(task, tc, n_members)
    if n == 1 and jax.process_count() == 1:
        return None
    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
    split = NamedSharding(mesh, PartitionSpec("data"))
    return (split, None) if n_members else (NamedSharding(mesh, PartitionSpec()), split)


class Trainer:
    """Compiled training of one task: `init_state`, `run_chunk` and `evaluate` (all jitted).

    members: one dict of settings per member of a sweep program (`{"seed": 3, "train.lr": 1e-3}`;
    keys among TRAIN_KEYS, or the task's MEMBER_KEYS), each member's hyperparameters a [member]
    array of ONE vmapped program and its task arrays (`task.member_data`) passed to the task's
    `init_params`, `batch` and `evaluate`; None: tc's own seed (a solo run) or seeds (an ensemble,
    vmapped over its seeds).

    Split over devices, the program computes `n_dummies` more members, copies of the last, so that
    the devices divide them; `run_chunk`, `evaluate`, `member_params` and `saved_state` return the
    real members only, as whole host arrays when the run spans several processes.
    """

    def __init__(self, task, tc: TrainConfig, members: list[dict] | None = None):
        self.task, self.tc = task, tc
        per_member = members is not None
        self.members = list(members) if per_member else [{"seed": s} for s in tc.seed_list]
        self.vmapped = per_member or tc.ensemble
        self.seeds = tuple(m["seed"] for m in self.members)
        # the state (and the members' keys and metrics) live on `state_sharding`; None: one device
        self.state_sharding, batch_sharding = data_sharding(task, tc, len(self.members) if self.vmapped else None) \
            or (None, None)
        # members padded to a multiple of the devices with copies of the last: computed like it, never saved
        n_split = self.state_sharding.mesh.size if self.vmapped and self.state_sharding is not None else 1
        self.n_dummies = -len(self.members) % n_split
        computed = self.members + [self.members[-1]] * self.n_dummies
        self.padding = (f"{n_split} devices, {len(self.members)} members: padded to {len(computed)} "
                        f"({self.n_dummies} dummy member{'s' * (self.n_dummies > 1)} not saved)") if self.n_dummies else None
        # what varies by member, vmapped with its key: {"h": hyperparameters [member], "task": task arrays
        # [member, ...]}; what does not is a constant of the program (tc's hyperparameters, the task's data)
        varying = {}
        if per_member:
            varying["h"] = {name: jnp.asarray([float(m.get(f"train.{name}", getattr(tc, name))) for m in computed],
                                              jnp.float32) for name in HYPERPARAMETERS}
            task_keys = sorted({k for m in computed for k in m if k != "seed" and k not in TRAIN_KEYS})
            own = getattr(task, "MEMBER_KEYS", ())
            for key in task_keys:
                check(key in own, f"members of one program cannot differ in {key!r}: only in the seed, "
                                  f"{', '.join(TRAIN_KEYS)} and {', '.join(own) or 'no task setting'}")
            if task_keys:
                each = [task.member_data(member_config(task.cfg, m)) for m in computed]
                varying["task"] = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *each)
        warm_up = any(m.get("train.warmup_steps", tc.warmup_steps) > 0 for m in self.members)
        template = jax.eval_shape(task.init_params, jax.random.key(0))
        # adaptive snapshots need the params at every evaluation of a chunk, not only at its end
        keep_slot_params = schedule.watched_metric(tc) is not None

        def task_fn(name):  # the task's function, given this member's task arrays where it has them
            fn = getattr(task, name)
            return (lambda *a, v: fn(*a, v["task"])) if "task" in varying else (lambda *a, v: fn(*a))

        init_params, batch_of, evaluate = task_fn("init_params"), task_fn("batch"), task_fn("evaluate")

        def optimizer(v):
            return make_optimizer(v.get("h", tc), template, task.frozen, warm_up)

        def init_one(seed_key, v):
            init_key, _ = jax.random.split(seed_key)
            params = jax.tree.map(lambda x: x.astype(jnp.float32), init_params(init_key, v=v))
            return {"params": params, "opt_state": optimizer(v).init(params), "step": jnp.zeros((), jnp.int32)}

        loss = task.loss
        if tc.compute_dtype == "bfloat16":  # the float32 parameters cast for the step; their gradients float32
            loss = lambda params, batch: task.loss(jax.tree.map(lambda x: x.astype(jnp.bfloat16), params), batch)  # noqa: E731
        value_and_grad = (jax.value_and_grad(loss) if batch_sharding is None
                          else mean_value_and_grad(loss, batch_sharding))

        def chunk_one(state, seed_key, v, lengths):
            """lengths: None, a chunk of `slots` evaluations eval_every steps apart (one scan of
            static length, the linear schedule's chunk); or [slots] steps before each evaluation."""
            _, data_key = jax.random.split(seed_key)
            tx = optimizer(v)

            def one_step(state):
                batch = split_batch(batch_of(data_key, state["step"], v=v))
                loss, grads = value_and_grad(state["params"], batch)
                updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
                params = optax.apply_updates(state["params"], updates)
                return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss.astype(jnp.float32)

            def evaluated(state, step_loss, finite):
                metrics = dict(evaluate(state["params"], v=v))
                metrics["step_loss"], metrics["step_loss_finite"] = step_loss, finite
                return state, (metrics, state["params"] if keep_slot_params else None)

            def fixed_eval(state, _):
                state, losses = jax.lax.scan(lambda state, _: one_step(state), state, length=tc.eval_every)
                return evaluated(state, losses.mean(), jnp.isfinite(losses).all())

            def steps_then_eval(state, n):
                def step(_, carry):
                    state, total, finite = carry
                    state, loss = one_step(state)
                    return state, total + loss, finite & jnp.isfinite(loss)

                start = (state, jnp.zeros((), jnp.float32), jnp.ones((), bool))
                state, total, finite = jax.lax.fori_loop(0, n, step, start)
                return evaluated(state, total / n, finite)

            def variable_eval(state, n):  # n steps, then an evaluation; n = 0: an unused slot, skipped
                _, outputs = jax.eval_shape(steps_then_eval, state, n)
                skip = lambda state, n: (state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), outputs))  # noqa: E731
                return jax.lax.cond(n > 0, steps_then_eval, skip, state, n)

            with splitting_batches(batch_sharding):  # the batch, and the evaluation if the task splits it
                if lengths is None:
                    return jax.lax.scan(fixed_eval, state, length=schedule.eval_slots(tc))
                return jax.lax.scan(variable_eval, state, lengths)

        keys = jnp.stack([jax.random.key_data(jax.random.key(m["seed"])) for m in computed])
        self._seed_keys = keys if self.vmapped else keys[0]
        self._varying = varying
        wrap = jax.vmap if self.vmapped else (lambda f, in_axes=None: f)
        placed = {}
        if self.state_sharding is not None:  # every output (state, metrics) on the state's sharding
            self._seed_keys = distributed.put(self._seed_keys, self.state_sharding)
            self._varying = distributed.put(self._varying, self.state_sharding)
            placed = {"out_shardings": self.state_sharding}
        self._init = jax.jit(wrap(lambda k, v: init_one(jax.random.wrap_key_data(k), v)), **placed)
        self._chunk = jax.jit(wrap(lambda s, k, v: chunk_one(s, jax.random.wrap_key_data(k), v, None)),
                              donate_argnums=0, **placed)
        # a chunk of other evaluation lengths (log-spaced snapshots): [slots] steps, one array for every member
        self._variable_chunk = jax.jit(wrap(lambda s, k, v, n: chunk_one(s, jax.random.wrap_key_data(k), v, n),
                                            in_axes=(0, 0, 0, None)), donate_argnums=0, **placed)
        self._evaluate = jax.jit(wrap(lambda p, v: evaluate(p, v=v)))

    def init_state(self):
        return self._init(self._seed_keys, self._varying)

    def _real(self, tree):
        """`tree` whole on this host ([member, ...] leaves of the real members only, dummies dropped)."""
        tree = distributed.gather(tree)
        return jax.tree.map(lambda x: x[: len(self.members)], tree) if self.n_dummies else tree

    def place(self, state):
        """Put a host state (a restored checkpoint, real members only) where `run_chunk` expects it."""
        if self.n_dummies:
            state = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], self.n_dummies, axis=0)]), state)
        if self.state_sharding is None:
            return jax.device_put(state)
        return distributed.put(state, self.state_sharding)

    def saved_state(self, state):
        """The train state as host arrays, as the run dir keeps it (dummy members dropped; `place` undoes it)."""
        return jax.device_get(self._real(state))

    def run_chunk(self, state, lengths=None):
        """Run one chunk: `lengths` [slots] steps before each of its evaluations (0: an unused slot;
        None: eval_every each, a chunk of ckpt_every steps).
        -> (state after sum(lengths) more steps, metrics {name: [slots, (member)]} of the real members, the params after
        each evaluation {leaf: [slots, (member), ...]} where `ckpt_watch` asks for them, else None)."""
        if lengths is None or np.all(np.asarray(lengths) == self.tc.eval_every):
            state, (metrics, slot_params) = self._chunk(state, self._seed_keys, self._varying)
        else:
            state, (metrics, slot_params) = self._variable_chunk(state, self._seed_keys, self._varying,
                                                                 jnp.asarray(lengths, jnp.int32))
        metrics, slot_params = self._real((metrics, slot_params))
        if self.vmapped:  # vmap puts [member] first; rows and snapshots want [eval, member]
            metrics, slot_params = jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), (metrics, slot_params))
        return state, metrics, slot_params

    def evaluate(self, params):
        return self._real(self._evaluate(params, self._varying))

    def metric_names(self, params) -> list[str]:
        """The names `evaluate` returns, from its shapes alone (nothing computed or gathered)."""
        return list(jax.eval_shape(self._evaluate, params, self._varying))

    def member_params(self, params):
        """Params with leaves [member, ...] of the real members, as the run dir keeps them (a solo run is one member)."""
        return self._real(params) if self.vmapped else jax.tree.map(lambda x: x[None], distributed.gather(params))


def _rows(steps: list[int], metrics: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for i, step in enumerate(steps):
        row: dict[str, Any] = {"step": int(step)}
        for name, values in metrics.items():
            if name == "step_loss_finite":
                continue
            value = np.asarray(values[i])
            row[name] = value.tolist() if value.ndim else float(value)
        rows.append(row)
    return rows


def train(
    task,
    run_dir: Path,
    *,
    resume: bool = False,
    logger=None,
    progress: bool = True,
    stop_after_chunks: int | None = None,
    members: list[dict] | None = None,
) -> dict:
    """Train `task` into `run_dir` (which holds config.json already); returns final metrics.

    With `resume`, continue from the newest good state in `run_dir`; the result is bit-identical
    to an uninterrupted run on the same machine. `stop_after_chunks` ends early (for tests).
    `members`: the members of a sweep program (see `Trainer`).
    """
    tc: TrainConfig = task.cfg.train
    run_dir = Path(run_dir)
    x64 = jax.enable_x64(True) if tc.logsoftmax_f64 else contextlib.nullcontext()
    with x64:
        return _train(task, tc, run_dir, resume, logger, progress, stop_after_chunks, members)


def _train(task, tc, run_dir, resume, logger, progress, stop_after_chunks, members):
    trainer = Trainer(task, tc, members)
    base = schedule.base_steps(tc)
    slots = schedule.eval_slots(tc)
    watch = schedule.watched_metric(tc)
    writer = distributed.is_writer()  # process 0 writes the run dir; every process saves the state (orbax)
    snapshot_series = store.SnapshotWriter if writer else _SnapshotSteps
    if trainer.padding and writer:
        print(f"mi-jax: {trainer.padding}", file=sys.stderr)
    states = store.StateStore(run_dir)
    state = trainer.init_state()
    if watch is not None:
        names = trainer.metric_names(state["params"])
        check(watch in names, f"train.ckpt_watch={watch!r} is not a metric of this task: {', '.join(sorted(names))}")
    capacity = len(base) + (tc.ckpt_extra if watch else 0)
    if resume:
        state, meta = states.restore_latest(trainer.saved_state(state))
        state = trainer.place(state)
        step, n_rows = int(meta["step"]), int(meta["snapshots"])
        if step not in base:
            raise store.CheckpointError(f"the train state in {run_dir} is at step {step}, not on the run's schedule")
        start_chunk, watched = base.index(step), meta.get("watched")
        if writer:
            store.truncate_metrics(run_dir, step)
        snapshots = snapshot_series(run_dir, trainer.member_params(state["params"]), capacity, resume_rows=n_rows)
    else:
        start_chunk = 0
        snapshots = snapshot_series(run_dir, trainer.member_params(state["params"]), capacity,
                                    dtype=tc.snapshot_dtype, compression=tc.snapshot_compression)
        first = jax.device_get(trainer.evaluate(state["params"]))
        if writer:
            store.append_metrics(run_dir, _rows([0], jax.tree.map(lambda m: np.asarray(m)[None], first)))
        snapshots.write(0, trainer.member_params(state["params"]))
        watched = schedule.watched_value(watch, first[watch]).ravel().tolist() if watch else None
        states.save(0, trainer.saved_state(state), {"snapshots": snapshots.rows, "watched": watched})
    bar = _progress_bar(tc.steps, base[start_chunk], progress and writer)
    last: dict = {}
    try:
        for chunk in range(start_chunk, len(base) - 1):
            if stop_after_chunks is not None and chunk - start_chunk >= stop_after_chunks:
                break
            t0 = time.perf_counter()
            begin, end = base[chunk], base[chunk + 1]
            lengths = schedule.eval_lengths(begin, end, tc.eval_every, slots)
            state, metrics, slot_params = trainer.run_chunk(state, lengths)
            used = int(np.count_nonzero(lengths))
            metrics = {name: np.asarray(m)[:used] for name, m in jax.device_get(metrics).items()}
            steps = (begin + np.cumsum(lengths[:used])).tolist()
            if not np.all(metrics["step_loss_finite"]):
                raise TrainingDiverged(
                    f"loss became NaN/inf between steps {begin} and {end}; "
                    f"the last good checkpoint (step {snapshots.steps[-1]}) is kept in {run_dir}"
                )
            rows = _rows(steps, metrics)
            if watch:  # extra snapshots where the watched metric moved fast, then the chunk's end
                values = schedule.watched_value(watch, metrics[watch]).reshape(used, -1)
                budget = tc.ckpt_extra - (snapshots.rows - chunk - 1)  # rows so far: chunk + 1 base ones
                for i in schedule.extra_snapshots(values, np.asarray(watched), tc.ckpt_delta, budget):
                    snapshots.write(steps[i], trainer.member_params(jax.tree.map(lambda x: x[i], slot_params)))
                watched = values[-1].tolist()
            snapshots.write(end, trainer.member_params(state["params"]))
            if writer:
                store.append_metrics(run_dir, rows)
            states.save(end, trainer.saved_state(state), {"snapshots": snapshots.rows, "watched": watched})
            dt = time.perf_counter() - t0
            last = rows[-1]
            if logger is not None:
                logger.log(rows, steps_per_s=(end - begin) / dt)
            bar.update(end - begin, last, (end - begin) / dt)
    finally:
        bar.close()
        states.close()
    return last


class _SnapshotSteps:
    """A process other than the writer keeps only the steps of the snapshot series (`store.SnapshotWriter`'s
    `steps` and `rows`); process 0 writes the rows."""

    def __init__(self, run_dir: Path, template, capacity: int, resume_rows: int | None = None, **storage):
        self.steps = store.read_index(Path(run_dir) / store.SNAPSHOTS)["steps"][:resume_rows] if resume_rows else []

    @property
    def rows(self) -> int:
        return len(self.steps)

    def write(self, step: int, params) -> None:
        self.steps.append(int(step))


class _progress_bar:
    """tqdm bar showing step, steps/s and the current losses (silent when disabled)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, n: int, row: dict, steps_per_s: float):
        if self.bar is None:
            return
        shown = {}
        for key in ("train_loss", "test_loss", "test_acc", "step_loss"):
            if key in row:
                value = np.mean(row[key])
                shown[key] = f"{value:.3g}" if math.isfinite(value) else str(value)
        shown["steps/s"] = f"{steps_per_s:.0f}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
