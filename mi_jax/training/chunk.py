"""The compiled pieces of training: pure functions of one member, at module level, that the Trainer
jits (vmapped over members for an ensemble or a sweep program).

    init_state(program, seed_key, v)                     -> a member's train state at step 0
    run_segments(program, state, acc, seed_key, v, lengths, evaluations)
                                                         -> (state, acc, metrics [slot], params [slot, ...])
    evaluate(program, params, v)                         -> {name: scalar}
    draw(task, shared, key, step)                        -> a training batch, outside a chunk

A *chunk* is a scan over `slots` segments. Segment i runs `lengths[i]` optimiser steps (0: an unused
slot) in a `fori_loop`, then evaluates if `evaluations[i]`, and emits the params after it: the loop
keeps those of the segments that end at a snapshot step, so snapshots never end a chunk. The step
function is the same whatever the segment's length, so a run gives the same numbers however it is
cut into chunks (and resumed between them). The training loss of the steps since the last
evaluation accumulates in `acc` ({total, count, finite}), carried across segments and chunks: an
evaluation reports its mean as `step_loss` (and `step_loss_finite`), then starts it afresh.

`v` is what differs by member within one program: {"h": the optimiser's hyperparameters, "task":
the task's per-member arrays (`task.member_data`)}, either absent when the members share the config's.
`shared` is what every member's batches read (`task.shared_data`, a corpus): an argument of the
program, placed on the devices once, rather than a constant compiled into it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from mi_jax.training.config import TrainConfig
from mi_jax.training.optimizer import make_optimizer
from mi_jax.training.parallel import mean_value_and_grad, split_batch, splitting_batches


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: a static argument of the jitted functions
class Program:
    """What the compiled functions of one run are specialised on: the task, its train config, the
    params' shapes (for the optimiser's frozen leaves), whether any member warms up, whether the task
    takes per-member arrays and shared data, and how each step's batch is split over devices (None: whole)."""

    task: Any
    tc: TrainConfig
    template: Any
    warm_up: bool
    per_member_task: bool
    shared: bool
    batch_sharding: NamedSharding | None


def draw(task, shared, key: jax.Array, step) -> object:
    """A training batch of the task at (key, step) outside a chunk; `shared`: its shared data (a corpus), or None."""
    return task.batch(key, step, shared) if shared else task.batch(key, step)


def _task(program: Program, name: str):
    """The task's function `name`, given this member's task arrays where the program has them."""
    fn = getattr(program.task, name)
    return (lambda *a, v: fn(*a, v["task"])) if program.per_member_task else (lambda *a, v: fn(*a))


def optimizer(program: Program, v: dict) -> optax.GradientTransformation:
    return make_optimizer(v.get("h", program.tc), program.template, getattr(program.task, "frozen", None),
                          program.warm_up)


def init_state(program: Program, seed_key: jax.Array, v: dict) -> dict:
    """{"params", "opt_state", "step"} of a member at step 0 (float32 params, from the seed's init key)."""
    init_key, _ = jax.random.split(seed_key)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), _task(program, "init_params")(init_key, v=v))
    return {"params": params, "opt_state": optimizer(program, v).init(params), "step": jnp.zeros((), jnp.int32)}


def fresh_acc() -> dict:
    """The step-loss accumulator after an evaluation: {total, count, finite}."""
    return {"total": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.int32), "finite": jnp.ones((), bool)}


def evaluate(program: Program, params: dict, v: dict) -> dict:
    return dict(_task(program, "evaluate")(params, v=v))


def _value_and_grad(program: Program):
    loss = program.task.loss
    if program.tc.compute_dtype == "bfloat16":  # the float32 parameters cast for the step; their gradients float32
        loss = lambda params, batch: program.task.loss(jax.tree.map(lambda x: x.astype(jnp.bfloat16), params), batch)  # noqa: E731
    if program.batch_sharding is None:
        return jax.value_and_grad(loss)
    return mean_value_and_grad(loss, program.batch_sharding)


def run_segments(program: Program, state: dict, acc: dict, seed_key: jax.Array, v: dict, lengths: jax.Array,
                 evaluations: jax.Array, shared=None):
    """One chunk of one member (see the module doc): lengths int32 [slot], evaluations bool [slot] ->
    (state, acc, metrics {name: [slot]} (zeros where no evaluation), params {leaf: [slot, ...]})."""
    _, data_key = jax.random.split(seed_key)
    tx = optimizer(program, v)
    value_and_grad = _value_and_grad(program)
    batch_of = _task(program, "batch")
    if program.shared:
        task_batch = batch_of
        batch_of = lambda key, step, v: task_batch(key, step, shared, v=v)  # noqa: E731

    def one_step(_, carry):
        state, acc = carry
        batch = split_batch(batch_of(data_key, state["step"], v=v))
        loss, grads = value_and_grad(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        loss = loss.astype(jnp.float32)
        acc = {"total": acc["total"] + loss, "count": acc["count"] + 1, "finite": acc["finite"] & jnp.isfinite(loss)}
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, acc

    def evaluated(state, acc):
        return {**evaluate(program, state["params"], v), "step_loss": acc["total"] / acc["count"],
                "step_loss_finite": acc["finite"]}

    def segment(carry, inputs):
        n, evaluation = inputs
        state, acc = jax.lax.fori_loop(0, n, one_step, carry)
        shapes = jax.eval_shape(evaluated, state, acc)
        metrics = jax.lax.cond(evaluation, evaluated,
                               lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), state, acc)
        acc = jax.tree.map(lambda fresh, old: jnp.where(evaluation, fresh, old), fresh_acc(), acc)
        return (state, acc), (metrics, state["params"])

    with splitting_batches(program.batch_sharding):  # the batch, and the evaluation if the task splits it
        (state, acc), (metrics, params) = jax.lax.scan(segment, (state, acc), (lengths, evaluations))
    return state, acc, metrics, params
