"""What the reference forward pass (`transformer.py`) and its fast paths (`fast.py`) share: the MLP
activations, the causal mask and the dense product."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def causal_mask(n_q: int, n_k: int) -> jax.Array:
    """[n_q, n_k] bool: query i, the i-th of the last n_q positions, sees keys up to its own position."""
    return jnp.arange(n_q)[:, None] + (n_k - n_q) >= jnp.arange(n_k)[None, :]


def dense(x: jax.Array, W: jax.Array) -> jax.Array:
    """x [..., d_in] @ W [d_in, d_out] -> [..., d_out], as one 2-D matrix product: XLA:CPU differentiates the
    batched form [batch, pos, d_in] @ W about twice as slowly (its weight gradient contracts two axes)."""
    return (x.reshape(-1, x.shape[-1]) @ W).reshape(*x.shape[:-1], W.shape[-1])
