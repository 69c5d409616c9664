"""The training loop: compiled chunks of steps, the snapshots they emit, the state saved between them.

A *task* supplies pure functions (`mi_jax.tasks.registry` lists them): `init_params(key)`,
`batch(key, step)`, `loss(params, batch)`, `evaluate(params)`, and optionally `frozen(path)`. The
`Trainer` compiles them once for a run's device plan (`devices.plan`): `chunk.init_state` and
`chunk.run_segments`, vmapped over the members of an ensemble or a sweep program. `train_task` then
runs chunk after chunk (`schedule.next_chunk`); between chunks, in Python, it writes the snapshots
the chunk emitted (one write per array, each process its own members' blocks), the metrics rows and
the resumable state, once per chunk. A run killed at any point resumes from its last saved state
bit-identically: the data of a step is a function of (seed, step), and the step function is the
same whatever the chunking.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from mi_jax.config import check
from mi_jax.io import CheckpointError
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.run_dir import member_config
from mi_jax.io.series import INDEX, SeriesWriter
from mi_jax.io.state import StateStore
from mi_jax.training import chunk, devices, distributed, failures, schedule
from mi_jax.training.failures import quiet_orbax, writing
from mi_jax.training.config import TrainConfig
from mi_jax.training.optimizer import HYPERPARAMETERS, TRAIN_KEYS
from mi_jax.training.progress import ProgressBar


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run dir keeps the last good checkpoint."""


def train_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, data key) of a seed."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


def _varying(task, tc: TrainConfig, computed: list[dict]) -> dict:
    """What differs by member in one program, each a [member] array: {"h": the optimiser's
    hyperparameters, "task": the task's per-member arrays}; one ConfigError line for a key the
    members of one program cannot differ in."""
    h = {name: jnp.asarray([float(m.get(f"train.{name}", getattr(tc, name))) for m in computed], jnp.float32)
         for name in HYPERPARAMETERS}
    task_keys = sorted({k for m in computed for k in m if k != "seed" and k not in TRAIN_KEYS})
    own = getattr(task, "MEMBER_KEYS", ())
    for key in task_keys:
        check(key in own, f"members of one program cannot differ in {key!r}: only in the seed, "
                          f"{', '.join(TRAIN_KEYS)} and {', '.join(own) or 'no task setting'}")
    if not task_keys:
        return {"h": h}
    each = [task.member_data(member_config(task.cfg, m)) for m in computed]
    return {"h": h, "task": jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *each)}


class Trainer:
    """Compiled training of one task on one device plan: `init_state`, `run_chunk` and `evaluate`.

    members: one dict of settings per member of a sweep program (`{"seed": 3, "train.lr": 1e-3}`;
    keys among TRAIN_KEYS, or the task's MEMBER_KEYS), each member's hyperparameters a [member] array
    of ONE vmapped program and its task arrays (`task.member_data`) passed to the task's functions;
    None: tc's own seed (a solo run) or seeds (an ensemble). Padded over devices (`plan.n_dummies`),
    the program computes copies of the last member, which `run_chunk` and `evaluate` leave out.
    Params, metrics and snapshots come out with a [member] axis, a solo run's of length 1.
    """

    def __init__(self, task, tc: TrainConfig, members: list[dict] | None = None,
                 plan: devices.DevicePlan | None = None):
        self.task, self.tc = task, tc
        self.plan = plan or devices.plan(task, tc, members)
        self.members = list(members) if members is not None else [{"seed": s} for s in tc.seed_list]
        computed = self.members + [self.members[-1]] * self.plan.n_dummies
        varying = _varying(task, tc, computed) if members is not None else {}
        warm_up = any(m.get("train.warmup_steps", tc.warmup_steps) > 0 for m in self.members)
        template = jax.eval_shape(task.init_params, jax.random.key(0))
        shared = getattr(task, "shared_data", None)
        self.program = chunk.Program(task, tc, template, warm_up, "task" in varying, shared is not None,
                                     self.plan.batch)
        keys = jnp.stack([jax.random.key_data(jax.random.key(m["seed"])) for m in computed])
        self._keys, self._varying = (keys if self.plan.vmapped else keys[0]), varying
        program, placed = self.program, {}
        if self.plan.state is not None:  # every output (state, metrics, params) on the state's sharding
            self._keys, self._varying = distributed.put((self._keys, self._varying), self.plan.state)
            placed = {"out_shardings": self.plan.state}
        mesh = (self.plan.state or self.plan.batch)
        self._shared = (None if shared is None else  # replicated on every device of the plan, once
                        distributed.put(shared, NamedSharding(mesh.mesh, PartitionSpec())) if mesh is not None else
                        jax.device_put(shared))
        key = jax.random.wrap_key_data

        def run(state, acc, k, v, lengths, evaluations, shared):
            state, acc, metrics, params = chunk.run_segments(program, state, acc, key(k), v, lengths, evaluations,
                                                             shared)
            return state, acc, metrics, params

        def start_from(params, v):  # a member's state at step 0 from given params: the optimiser's state fresh
            params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
            return {"params": params, "opt_state": chunk.optimizer(program, v).init(params),
                    "step": jnp.zeros((), jnp.int32)}

        if self.plan.vmapped:
            self._start_from = jax.jit(jax.vmap(start_from), **placed)
            self._init = jax.jit(jax.vmap(lambda k, v: chunk.init_state(program, key(k), v)), **placed)
            self._run = jax.jit(jax.vmap(run, in_axes=(0, 0, 0, 0, None, None, None)), donate_argnums=(0, 1), **placed)
            self._evaluate = jax.jit(jax.vmap(lambda p, v: chunk.evaluate(program, p, v)))
        else:  # a solo run's metrics and params given the [member] axis of 1 that every run's have
            one = lambda tree: jax.tree.map(lambda x: x[None], tree)  # noqa: E731
            self._start_from = jax.jit(start_from, **placed)
            self._init = jax.jit(lambda k, v: chunk.init_state(program, key(k), v), **placed)
            self._run = jax.jit(lambda *a: (lambda s, c, m, p: (s, c, one(m), one(p)))(*run(*a)),
                                donate_argnums=(0, 1), **placed)
            self._evaluate = jax.jit(lambda p, v: one(chunk.evaluate(program, p, v)))
        state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(template))
        self.slots = schedule.slots(state_bytes * self.plan.n_computed)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def init_state(self, params: dict | None = None):
        """The train state at step 0: the members' own init, or (a fine-tune) `params`, host leaves [member, ...]
        of the real members, with the optimiser's state fresh."""
        if params is None:
            return self._init(self._keys, self._varying)
        if not self.plan.vmapped:  # a solo run's state has no member axis
            return self._start_from(self.place(jax.tree.map(lambda x: np.asarray(x)[0], params), pad=False),
                                    self._varying)
        return self._start_from(self.place(jax.tree.map(np.asarray, params)), self._varying)

    def fresh_acc(self, values: dict | None = None):
        """The step-loss accumulator, fresh or from a saved state's `values` ({name: [member] list},
        `acc_values`), on the state's devices."""
        fresh = jax.tree.map(np.asarray, chunk.fresh_acc())
        if values is None:
            acc = jax.tree.map(lambda x: np.repeat(x[None], self.n_members, 0), fresh)
        else:
            acc = {name: np.asarray(values[name], fresh[name].dtype) for name in fresh}
        return self.place(acc if self.plan.vmapped else jax.tree.map(lambda x: x[0], acc))

    def acc_values(self, acc) -> dict:
        """The accumulator as a saved state's meta keeps it: {name: [member] list} of the real members."""
        host = distributed.gather(acc)
        return {name: np.atleast_1d(np.asarray(x))[: self.n_members].tolist() for name, x in host.items()}

    def acc_finite(self, acc) -> bool:
        """Whether no loss since the last evaluation was NaN or infinite (any member's)."""
        return bool(np.all(distributed.gather(acc)["finite"]))

    def abstract_state(self, n_computed: int | None = None):
        """The train state's shapes, dtypes and shardings (what a resume restores onto); `n_computed`:
        the shapes of a state saved for that many members instead."""
        shapes = jax.eval_shape(self._init, self._keys, self._varying)
        sharding = self.plan.state or SingleDeviceSharding(jax.devices()[0])
        if n_computed is not None and self.plan.vmapped:
            shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct((n_computed, *s.shape[1:]), s.dtype), shapes)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def place(self, tree, pad: bool = True):
        """Host arrays (of the real members, when `pad`) where the program expects them: padded with copies
        of the last member and put on the state's devices."""
        if pad and self.plan.n_dummies:
            tree = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], self.plan.n_dummies, 0)]), tree)
        return jax.device_put(tree) if self.plan.state is None else distributed.put(tree, self.plan.state)

    def relayout(self, host_state, meta: dict):
        """A state read on the host, saved for another layout of the members, placed for this one."""
        if self.plan.vmapped:
            host_state = jax.tree.map(lambda x: np.asarray(x)[: self.n_members], host_state)
        return self.place(host_state)

    def saved_meta(self) -> dict:
        """What a saved state records of its layout."""
        return {"computed_members": self.plan.n_computed if self.plan.vmapped else None}

    def _real(self, tree):
        """[member, ...] leaves whole on this host, the real members only."""
        return jax.tree.map(lambda x: np.asarray(x)[: self.n_members], distributed.gather(tree))

    def run_chunk(self, state, acc, lengths, evaluations):
        """One chunk -> (state, acc, metrics {name: [slot, member]} of the real members on the host,
        params {leaf: [member, slot, ...]} on the devices, the padding included)."""
        state, acc, metrics, params = self._run(state, acc, self._keys, self._varying,
                                                jnp.asarray(lengths, jnp.int32), jnp.asarray(evaluations, bool),
                                                self._shared)
        metrics = {name: np.swapaxes(m, 0, 1) for name, m in self._real(metrics).items()}
        return state, acc, metrics, params

    def train_steps(self, state, n: int, eval_every: int | None = None):
        """`n` steps from `state` as one chunk, evaluating every `eval_every` of them and at the end (default:
        at the end only) -> (state, metrics {name: [eval, member]} of the real members). A run's loop is
        `train_task`; this is for trying a task's training out (tests, benchmarks)."""
        every = eval_every or n
        lengths = [every] * (n // every) + ([n % every] if n % every else [])
        check(len(lengths) <= self.slots, f"{len(lengths)} evaluations do not fit one chunk of {self.slots} slots")
        pad = self.slots - len(lengths)
        state, _, metrics, _ = self.run_chunk(state, self.fresh_acc(), lengths + [0] * pad,
                                              [True] * len(lengths) + [False] * pad)
        return state, {name: m[: len(lengths)] for name, m in metrics.items()}

    def evaluate_state(self, state):
        """The metrics of `state` as it stands, through the chunk program (one program less to compile
        than `evaluate`) -> (state, given back: the chunk takes it, {name: [member]} of the real members)."""
        state, _, metrics, _ = self.run_chunk(state, self.fresh_acc(), np.zeros(self.slots, np.int32),
                                              np.arange(self.slots) == 0)
        return state, {name: m[0] for name, m in metrics.items() if not name.startswith("step_loss")}

    def member_params(self, params) -> dict:
        """The params as the run dir keeps them: leaves [member, ...] of the real members, on the host."""
        return self._real(self.snapshot(params))

    def evaluate(self, params) -> dict:
        """{name: [member]} of the real members, on the host."""
        return self._real(self._evaluate(params, self._varying))

    def metric_names(self, params) -> list[str]:
        """The names `evaluate` returns, from its shapes alone (nothing computed or gathered)."""
        return list(jax.eval_shape(self._evaluate, params, self._varying))

    def snapshot(self, params):
        """The params as a snapshot row takes them: leaves [member, ...] (a solo run's member axis added)."""
        return params if self.plan.vmapped else jax.tree.map(lambda x: x[None], params)

    def snapshot_shapes(self):
        """The shapes of a snapshot row of the real members: leaves [member, ...]."""
        params = jax.eval_shape(self._init, self._keys, self._varying)["params"]
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct((self.n_members, *s.shape[self.plan.vmapped:]), s.dtype),
                            params)


def _rows(steps: list[int], metrics: dict[str, np.ndarray], solo: bool) -> list[dict]:
    """Metrics rows {"step": s, name: value or [value per member]} from metrics {name: [eval, member, ...]}."""
    rows = []
    for i, step in enumerate(steps):
        row: dict[str, Any] = {"step": int(step)}
        for name, values in metrics.items():
            if name != "step_loss_finite":
                value = np.asarray(values[i])[0] if solo else np.asarray(values[i])  # a solo run's rows: no member axis
                row[name] = value.tolist() if value.ndim else float(value)
        rows.append(row)
    return rows


def train_task(task, run_dir: Path, *, resume: bool = False, logger=None, progress: bool = True,
               stop_after_chunks: int | None = None, members: list[dict] | None = None,
               plan: devices.DevicePlan | None = None, init_params: dict | None = None) -> dict:
    """Train `task` into `run_dir` (which holds config.json already) -> the final metrics row.

    With `resume`, continue from the newest good state in `run_dir`; the result is bit-identical
    to an uninterrupted run on the same device layout. `stop_after_chunks` ends early (for tests).
    `members`: the members of a sweep program (see `Trainer`); `plan`: the device plan, if made already.
    `init_params`: a fresh run's params at step 0 instead of its own init (a fine-tune; host leaves
    [member, ...]); a resume reads them from its saved state.
    """
    tc: TrainConfig = task.cfg.train
    with tc.precision():
        trainer = Trainer(task, tc, members, plan)
        return _train(trainer, Path(run_dir), resume, logger, progress, stop_after_chunks, init_params)


def _train(trainer: Trainer, run_dir: Path, resume: bool, logger, progress: bool, stop_after_chunks,
           init_params: dict | None = None) -> dict:
    tc, writer = trainer.tc, distributed.is_writer()  # process 0 writes the run dir; all write their snapshots
    if trainer.plan.padding and writer:
        print(f"mi-jax: {trainer.plan.padding}", file=sys.stderr)
    watch = schedule.watched_metric(tc)
    capacity = len(schedule.base_steps(tc)) + (tc.ckpt_extra if watch else 0)
    states = None
    try:
        with quiet_orbax(), distributed.explaining(lambda lost: str(failures.peer_lost(lost, run_dir))):
            with writing(run_dir / run_dir_lib.STATE):
                states = StateStore(run_dir)
            if resume:
                state, acc, snapshots, step, watched = _restored(trainer, run_dir, states, capacity)
            else:
                state, acc, snapshots, step, watched = _started(trainer, run_dir, states, capacity, watch, init_params)
            final = _chunks(trainer, run_dir, states, state, acc, snapshots, step, watched, logger,
                            ProgressBar(tc.steps, step, progress and writer), stop_after_chunks)
        states.close()
        return final
    except Exception as e:
        if states is not None:  # the error that stopped the run is the one to see, not what closing says then
            with contextlib.suppress(Exception), quiet_orbax():
                states.close()
        stopped = failures.stopped_by(e, run_dir)
        if stopped is None:
            raise
        raise stopped from None


def _started(trainer: Trainer, run_dir: Path, states: StateStore, capacity: int, watch: str | None,
             init_params: dict | None = None):
    """A fresh run: the state at step 0 (from `init_params` if given), its evaluation (metrics row 0) and
    snapshot (row 0), saved."""
    tc, snap_dir = trainer.tc, run_dir / run_dir_lib.SNAPSHOTS
    state, first = trainer.evaluate_state(trainer.init_state(init_params))
    if watch is not None:
        names = trainer.metric_names(state["params"])
        check(watch in names, f"train.ckpt_watch={watch!r} is not a metric of this task: {', '.join(sorted(names))}")
    params = trainer.snapshot(state["params"])
    if distributed.is_writer():
        with writing(snap_dir):
            series = SeriesWriter.create(snap_dir, params, capacity, trainer.n_members, dtype=tc.snapshot_dtype,
                                         compression=tc.snapshot_compression)
            series.write_index()
    distributed.sync(f"mi_jax: made {snap_dir}")
    if not distributed.is_writer():
        series = SeriesWriter.open(snap_dir, 0, None)
    with writing(snap_dir):
        series.write(0, params, trainer.n_members)
    _commit(run_dir, series, _rows([0], {k: v[None] for k, v in first.items()}, not trainer.plan.vmapped))
    acc = trainer.fresh_acc()
    watched = schedule.watched_value(watch, first[watch]).tolist() if watch else None
    _save(states, trainer, 0, state, acc, series, watched)
    return state, acc, series, 0, watched


def _restored(trainer: Trainer, run_dir: Path, states: StateStore, capacity: int):
    """A resumed run: the newest good state, the series cut back to the rows it knew, the metrics to its step."""
    snap_dir = run_dir / run_dir_lib.SNAPSHOTS
    state, meta = states.restore_latest(
        trainer.abstract_state(),
        saved_as=lambda meta: trainer.abstract_state(meta.get("computed_members") or trainer.n_members),
        relayout=trainer.relayout)
    step, rows = int(meta["step"]), int(meta["snapshots"])
    if distributed.is_writer():
        with writing(run_dir / run_dir_lib.METRICS):
            run_dir_lib.truncate_metrics(run_dir, step)
        with writing(snap_dir):
            series = SeriesWriter.open(snap_dir, rows, trainer.snapshot_shapes(), capacity)
    distributed.sync(f"mi_jax: reopened {snap_dir}")
    if not distributed.is_writer():
        series = SeriesWriter.open(snap_dir, rows, None)
    acc = trainer.fresh_acc(meta.get("acc"))
    return state, acc, series, step, meta.get("watched")


def _commit(run_dir: Path, series: SeriesWriter, rows: list[dict]) -> None:
    """Once every process has written its blocks of the new snapshots: process 0 lists them in the
    index and appends the metrics rows."""
    distributed.sync(f"mi_jax: wrote snapshots up to row {series.rows}")
    if distributed.is_writer():
        with writing(series.dir / INDEX):
            series.write_index()
        with writing(run_dir / run_dir_lib.METRICS):
            run_dir_lib.append_metrics(run_dir, rows)


def _save(states: StateStore, trainer: Trainer, step: int, state, acc, series: SeriesWriter, watched) -> None:
    meta = {"snapshots": series.rows, "watched": watched, "acc": trainer.acc_values(acc), **trainer.saved_meta()}
    with writing(states.dir):
        states.save(step, state, meta)


def _chunks(trainer, run_dir, states, state, acc, series, step, watched, logger, bar, stop_after_chunks) -> dict:
    tc, watch, solo = trainer.tc, schedule.watched_metric(trainer.tc), not trainer.plan.vmapped
    last, seconds_per_step, done = {}, None, 0
    try:
        while step < tc.steps and (stop_after_chunks is None or done < stop_after_chunks):
            t0 = time.perf_counter()
            work = distributed.agree(schedule.chunk_steps(seconds_per_step, tc))  # every process cuts the same chunks
            planned = schedule.next_chunk(step, tc, trainer.slots, work)
            state, acc, metrics, params = trainer.run_chunk(state, acc, planned.lengths, planned.evaluations)
            end = planned.ends[-1]
            at_evals = [i for i in range(planned.used) if planned.evaluations[i]]
            metrics = {name: m[at_evals] for name, m in metrics.items()}  # [eval, member]
            finite = trainer.acc_finite(acc) and bool(np.all(metrics["step_loss_finite"]))
            if not finite:
                raise TrainingDiverged(f"loss became NaN/inf between steps {step} and {end}; the last good "
                                       f"checkpoint (step {series.steps[-1]}) is kept in {run_dir}")
            keep = [i for i in range(planned.used) if planned.snapshots[i]]
            if watch:  # extra snapshots where the watched metric moved fast since the last snapshot
                values = schedule.watched_value(watch, metrics[watch])
                budget = tc.ckpt_extra - (series.rows - schedule.base_count(tc, step))
                picks, now = schedule.extra_snapshots(values, planned.snapshots[at_evals], np.asarray(watched),
                                                      tc.ckpt_delta, budget)
                keep = sorted(keep + [at_evals[i] for i in picks])
                watched = now.tolist()
            with writing(series.dir):
                series.write_rows([planned.ends[i] for i in keep], params, keep, trainer.n_members)
            rows = _rows([planned.ends[i] for i in at_evals], metrics, solo)
            _commit(run_dir, series, rows)
            _save(states, trainer, end, state, acc, series, watched)
            seconds = time.perf_counter() - t0
            seconds_per_step = seconds / (end - step) if done else None  # the first chunk compiles
            if rows:
                last = rows[-1]
                if logger is not None:
                    logger.log(rows, steps_per_s=(end - step) / seconds)
            bar.update(end - step, last, (end - step) / seconds)
            step, done = end, done + 1
    finally:
        bar.close()
    return last
