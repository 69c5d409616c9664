"""Where a run computes: planned once per run, before anything is written, from the task, the config and
the member count (`plan`).

A plain run uses one device. With `train.data_parallel`, `train.devices` or several processes
(`training.distributed`), a step is one SPMD program over the devices of every process: a solo run
replicates its state and splits each batch's leading axis (the devices must divide it); a run of
several members (a seed ensemble, a sweep program) splits its leading [member] axis (state, keys and
metrics) and keeps each member's batch whole, padding the members with copies of the last to a
multiple of the devices (the copies are computed like it, never saved or reported).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mi_jax.config import check
from mi_jax.training import chunk
from mi_jax.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """state: the sharding of the train state (and of the members' keys, settings and metrics), None for
    one device; batch: that of each step's batch (a solo run's split), None when whole; vmapped: whether
    the program maps over a [member] axis; n_members: the real members; n_dummies: copies padded in."""

    state: NamedSharding | None
    batch: NamedSharding | None
    vmapped: bool
    n_members: int
    n_dummies: int = 0

    @property
    def n_computed(self) -> int:
        return self.n_members + self.n_dummies

    @property
    def padding(self) -> str | None:
        """The one line that says members were padded (None when not)."""
        if not self.n_dummies:
            return None
        plural = "s" * (self.n_dummies > 1)
        return (f"{self.state.mesh.size} devices, {self.n_members} members: padded to {self.n_computed} "
                f"({self.n_dummies} dummy member{plural} not saved)")


def _check_count(tc: TrainConfig) -> None:
    count = jax.device_count()
    check(tc.devices is None or tc.devices <= count,
          f"train.devices={tc.devices} but only {count} device{'s' * (count > 1)} exist{'s' * (count == 1)} "
          f"({jax.devices()[0].platform}; on CPU set JAX_NUM_CPU_DEVICES)")
    check(jax.process_count() == 1 or tc.devices in (None, count),
          f"train.devices={tc.devices}: a run of {jax.process_count()} processes splits over all {count} devices")


def _split(task, tc: TrainConfig, n_members: int | None) -> int:
    """How many devices the leading axis is split over (1: a plain one-device run); see the module doc."""
    count = jax.device_count()
    several_processes = jax.process_count() > 1
    if not (tc.data_parallel or tc.devices or several_processes):
        return 1
    if n_members:
        return tc.devices or (count if several_processes else min(count, n_members))
    shared = getattr(task, "shared_data", None)
    batch = jax.eval_shape(functools.partial(chunk.draw, task), shared, jax.random.key(0), jnp.zeros((), jnp.int32))
    size = math.gcd(*(leaf.shape[0] for leaf in jax.tree.leaves(batch)))
    if tc.devices or several_processes:  # every process must hold a share: no smaller split
        n = tc.devices or count
        check(size % n == 0, f"a batch of {size} rows does not split over {n} devices: set train.batch_size "
                             f"to a multiple of {n}")
        return n
    return max(k for k in range(1, count + 1) if size % k == 0)


def plan(task, tc: TrainConfig, members: list[dict] | None = None) -> DevicePlan:
    """The devices of a run of `task` under `tc`: `members` those of a sweep program (None: tc's seeds,
    vmapped when tc trains an ensemble). A request the devices cannot meet is one ConfigError line."""
    _check_count(tc)
    vmapped = members is not None or tc.ensemble
    n_members = len(members) if members is not None else len(tc.seed_list)
    n = _split(task, tc, n_members if vmapped else None)
    if n == 1 and jax.process_count() == 1:
        return DevicePlan(None, None, vmapped, n_members)
    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
    split = NamedSharding(mesh, PartitionSpec("data"))
    if vmapped:
        return DevicePlan(split, None, True, n_members, -n_members % n)
    return DevicePlan(NamedSharding(mesh, PartitionSpec()), split, False, n_members)
