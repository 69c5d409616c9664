"""Splitting a batch over the devices of a data-parallel training chunk (`TrainConfig.data_parallel`):
`split_batch` for the arrays a step computes on, `mean_value_and_grad` for its gradients.

The Trainer traces each chunk inside `splitting_batches(sharding)`; there `split_batch(x)`
constrains x's leading (batch) axis to be split over the devices, so every device computes on
its share. The Trainer applies it to each step's batch; a task applies it to the fixed arrays of
its in-chunk evaluation (otherwise every device evaluates the whole set). Outside such a chunk,
or when the devices do not divide the batch, `split_batch` returns x unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec

_BATCH_SHARDING: contextvars.ContextVar[NamedSharding | None] = contextvars.ContextVar("batch_sharding", default=None)


@contextlib.contextmanager
def splitting_batches(sharding: NamedSharding | None):
    """While tracing inside this block, `split_batch` splits leading axes over `sharding` (None: it does not)."""
    token = _BATCH_SHARDING.set(sharding)
    try:
        yield
    finally:
        _BATCH_SHARDING.reset(token)


def split_batch(tree):
    """Each array of `tree` with its leading axis split over the devices of the chunk being traced
    (see module doc); arrays whose leading axis the devices do not divide stay whole."""
    sharding = _BATCH_SHARDING.get()
    if sharding is None:
        return tree

    def split(x):
        x = jax.numpy.asarray(x)
        return jax.lax.with_sharding_constraint(x, sharding) if x.ndim and x.shape[0] % sharding.mesh.size == 0 else x

    return jax.tree.map(split, tree)


def mean_value_and_grad(loss, sharding: NamedSharding):
    """`jax.value_and_grad(loss)` for a loss that is a mean over the batch's leading axis, with the
    batch split over `sharding`'s one mesh axis: each device differentiates the mean over its share
    and ONE all-reduce of (loss, grads) raveled into a single vector averages them. (XLA's own split
    of `value_and_grad` reduces the gradient leaves in one rendezvous each, which costs more on CPU.) params are replicated; (params, batch) -> (loss, grads)."""
    (axis,) = sharding.mesh.axis_names

    def local(params, batch):
        flat, unravel = ravel_pytree(jax.value_and_grad(loss)(params, batch))
        return unravel(jax.lax.pmean(flat, axis))

    # check_vma=False: the local gradients stay per device (no implicit sum of the replicated
    # params' cotangents); the pmean above is the only reduction
    return jax.shard_map(local, mesh=sharding.mesh, in_specs=(PartitionSpec(), PartitionSpec(axis)),
                         out_specs=PartitionSpec(), check_vma=False)
