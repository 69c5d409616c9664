"""CPU fast paths of the transformer's forward pass: the same functions as the reference in
`transformer.py`, computed in ways XLA's CPU backend runs faster (tests check values and gradients).
Measured effects are in experiments/results/benchmarks.md.

    last_query_attention        one query per sequence (the last-position training path): products
                                and sums instead of batched matmuls
    first_layer_last_query      layer 0 of a model without layer norm at the last position: queries,
                                keys and values from [pos, vocab] tables instead of per-token projections
    attend / attend_hooked      softmax attention evaluated as [batch, head, key_pos, pos] (softmax
                                over axis -2), the orientation XLA's CPU forward runs fastest;
                                `attend` is differentiated in the reference orientation (custom_jvp),
                                whose backward pass runs faster there; hooks see [batch, head, pos, key_pos]
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def project(x, W, b):
    """x [batch, pos, d_model] @ W [head, d_model, d_head] -> [batch, pos, head, d_head], as one 2-D matmul."""
    n_head, d_model, d_head = W.shape
    flat = x.reshape(-1, d_model) @ W.transpose(1, 0, 2).reshape(d_model, n_head * d_head)
    return flat.reshape(*x.shape[:-1], n_head, d_head) + b


def last_query_attention(p, q, k, v):
    """Attention output [batch, 1, d_model] of one query per sequence: q [batch, 1, head, d_head],
    k, v [batch, key_pos, head, d_head]; p the layer's attention params."""
    scores = (q * k).sum(-1) / math.sqrt(q.shape[-1])  # [batch, key_pos, head]
    pattern = jax.nn.softmax(scores, axis=1)
    z = (pattern[..., None] * v).sum(1, keepdims=True)  # [batch, 1, head, d_head]
    return z.reshape(z.shape[0], 1, -1) @ p["W_O"].reshape(-1, p["W_O"].shape[-1]) + p["b_O"]


def first_layer_last_query(params, tokens):
    """Layer 0's attention at the last position of a model without layer norm.

    There the residual stream is `W_E[token] + W_pos[pos]`, so queries, keys and values are rows of
    per-(position, token) tables `(W_E + W_pos[pos]) @ W`: n_ctx * d_vocab rows to project instead of
    batch * pos, then a gather. -> (attn_out [batch, 1, d_model], resid at the last position [batch, 1, d_model]).
    """
    p = params["blocks"][0]["attn"]
    n_pos = tokens.shape[1]
    embed = params["W_E"][None] + (params["W_pos"][:n_pos, None] if "W_pos" in params else 0.0)  # [pos, vocab, d_model]
    embed = jnp.broadcast_to(embed, (n_pos, *params["W_E"].shape))
    rows = jnp.arange(n_pos) * params["W_E"].shape[0] + tokens  # [batch, pos] -> row of the table
    flat_embed = embed.reshape(-1, embed.shape[-1])
    k = project(flat_embed, p["W_K"], p["b_K"])[rows]  # [batch, pos, head, d_head]
    v = project(flat_embed, p["W_V"], p["b_V"])[rows]
    q = project(embed[-1], p["W_Q"], p["b_Q"])[tokens[:, -1:]]  # [batch, 1, head, d_head]
    return last_query_attention(p, q, k, v), embed[-1][tokens[:, -1:]]


def _scores_kq(q, k, causal: bool):
    """Scaled scores [batch, head, key_pos, pos] (masked keys -inf) from q [batch, pos, head, d_head]
    and k [batch, key_pos, head, d_head]."""
    scores = jnp.einsum("bkhe,bqhe->bhkq", k, q / math.sqrt(q.shape[-1]))
    if not causal:
        return scores
    n_q, n_k = q.shape[1], k.shape[1]
    future = jnp.arange(n_q)[None, :] + (n_k - n_q) < jnp.arange(n_k)[:, None]  # [key_pos, pos]
    return scores + jnp.where(future, -jnp.inf, 0.0)


def _attend_kq(q, k, v, causal: bool):
    return jnp.einsum("bhkq,bkhe->bqhe", jax.nn.softmax(_scores_kq(q, k, causal), axis=-2), v)


def _attend_qk(q, k, v, causal: bool):
    # written out rather than `_scores_kq` transposed: that graph's backward pass is the slower one
    scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])  # [batch, head, pos, key_pos]
    if causal:
        n_q, n_k = scores.shape[-2:]
        scores = jnp.where(jnp.arange(n_q)[:, None] + (n_k - n_q) >= jnp.arange(n_k)[None, :], scores, -jnp.inf)
    return jnp.einsum("bhqk,bkhe->bqhe", jax.nn.softmax(scores, axis=-1), v)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def attend(q, k, v, causal: bool):
    """Softmax attention z [batch, pos, head, d_head], nothing hooked: evaluated as `_attend_kq`,
    differentiated as `_attend_qk` (the same function either way)."""
    return _attend_kq(q, k, v, causal)


attend.defjvp(lambda causal, primals, tangents: jax.jvp(functools.partial(_attend_qk, causal=causal), primals, tangents))


def attend_hooked(q, k, v, causal: bool, on_scores, on_pattern):
    """Softmax attention z [batch, pos, head, d_head] with the scores and pattern passed through
    `on_scores` / `on_pattern` (the hooks), which see and return [batch, head, pos, key_pos]."""
    swap = lambda a: jnp.swapaxes(a, -1, -2)  # noqa: E731  [.., key_pos, pos] <-> [.., pos, key_pos]
    scores = swap(on_scores(swap(_scores_kq(q, k, causal))))
    pattern = swap(on_pattern(swap(jax.nn.softmax(scores, axis=-2))))
    return jnp.einsum("bhkq,bkhe->bqhe", pattern, v)
