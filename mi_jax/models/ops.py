"""What the reference forward pass (`transformer.py`) and its fast paths (`fast.py`) share: the MLP
activations, the causal mask, the dense product and the cross-entropy of labelled logits."""

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


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """-log softmax(logits)[label]: logits [..., vocab], labels [...] int -> [...] (float32 at least).
    logsumexp less the label's logit, gathered: no log-softmax is written whole, and the gather's scatter
    gradient runs no slower than a one-hot product (language_attn_2l's training step 115 -> 100 ms on CPU)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


# XLA:CPU writes a whole [rows, vocab] product to memory and reads it back for the log-sum-exp; blocks of
# about this many logits (8 MB in float32) stay in cache: the forward ~1.5-2x faster. Its gradient is not
# (in language_attn_2l's training step, blocks with their logits recomputed: 75-85 -> 87-93 ms a step)
BLOCK_LOGITS = 2**21


def unembedded_cross_entropy(x: jax.Array, W_U: jax.Array, b_U: jax.Array, labels: jax.Array) -> jax.Array:
    """cross_entropy(x @ W_U + b_U, labels): x [..., d_model], labels [...] -> [...]. On CPU, where the
    logits exceed BLOCK_LOGITS, evaluated in blocks of rows mapped in turn, so that no more than one block's
    logits are held; differentiated as the whole product."""
    flat_x, flat_labels = x.reshape(-1, x.shape[-1]), labels.reshape(-1)
    blocked = jax.default_backend() == "cpu" and _n_row_blocks(flat_x.shape[0], W_U.shape[-1]) > 1
    loss = _in_row_blocks if blocked else _unembedded_loss
    return loss(flat_x, W_U, b_U, flat_labels).reshape(labels.shape)


def _n_row_blocks(n_rows: int, vocab: int) -> int:
    """Blocks of rows whose logits hold at most about BLOCK_LOGITS each."""
    return -(-n_rows * vocab // BLOCK_LOGITS)


def _unembedded_loss(x, W_U, b_U, labels):
    return cross_entropy(dense(x, W_U) + b_U, labels)


@jax.custom_jvp
def _in_row_blocks(x, W_U, b_U, labels):
    n = x.shape[0]
    n_blocks = _n_row_blocks(n, W_U.shape[-1])
    rows = -(-n // n_blocks)
    pad = n_blocks * rows - n
    blocks = (jnp.pad(x, ((0, pad), (0, 0))).reshape(n_blocks, rows, -1), jnp.pad(labels, (0, pad)).reshape(n_blocks, rows))
    return jax.lax.map(lambda block: _unembedded_loss(block[0], W_U, b_U, block[1]), blocks).reshape(-1)[:n]


_in_row_blocks.defjvp(lambda primals, tangents: jax.jvp(_unembedded_loss, primals, tangents))
