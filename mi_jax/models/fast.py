"""Fast paths of the transformer's forward pass: the same functions as the reference in
`transformer.py`, computed in ways XLA's CPU backend runs faster (tests check each equal to the
reference, values and gradients). What each was measured to give is in experiments/results/benchmarks.md.

    last_query_attention        one query per sequence (the last-position training path): products
                                and sums instead of batched matmuls
    first_layer_last_query      layer 0 of a model without layer norm at the last position: queries,
                                keys and values from [pos, vocab] tables instead of per-token projections
    attend / attend_hooked      softmax attention evaluated as [batch, head, key_pos, pos] (softmax
                                over axis -2), the orientation XLA's CPU forward runs fastest;
                                `attend` runs causal attention in blocks of queries, each against the
                                keys it sees, and is differentiated in the reference orientation
                                (custom_jvp), whose backward pass runs faster there; hooks see
                                [batch, head, pos, key_pos]
    attend_with_pattern         `attend`'s blocks with their pattern, for a pattern that is cached, not edited
    grid_forward                the `=`-position logits and MLP activations of a one-layer model for every
                                input (a, b, =) of a modular-arithmetic task, from per-token tables
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.models.ops import ACTIVATIONS, causal_mask, dense


def project(x, W, b):
    """x [batch, pos, d_model] @ W [head, d_model, d_head] -> [batch, pos, head, d_head], as one 2-D matmul."""
    n_head, d_model, d_head = W.shape
    flat = dense(x, W.transpose(1, 0, 2).reshape(d_model, n_head * d_head))
    return flat.reshape(*x.shape[:-1], n_head, d_head) + b


def last_query_attention(p, q, k, v):
    """Attention output [batch, 1, d_model] of one query per sequence: q [batch, 1, head, d_head],
    k, v [batch, key_pos, head, d_head]; p the layer's attention params."""
    scores = (q * k).sum(-1) / math.sqrt(q.shape[-1])  # [batch, key_pos, head]
    pattern = jax.nn.softmax(scores, axis=1)
    z = (pattern[..., None] * v).sum(1, keepdims=True)  # [batch, 1, head, d_head]
    return dense(z.reshape(z.shape[0], 1, -1), p["W_O"].reshape(-1, p["W_O"].shape[-1])) + p["b_O"]


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
    return jnp.where(causal_mask(q.shape[1], k.shape[1]).T, scores, -jnp.inf) if causal else scores


# Causal attention runs in up to QUERY_BLOCKS blocks of queries (none shorter than MIN_BLOCK), each against
# only the keys it can see (3/4 of the scores at 2 blocks, 5/8 at 4): XLA:CPU's forward and backward both faster
QUERY_BLOCKS, MIN_BLOCK = 4, 64


def _in_query_blocks(block_attention, q, k, v, causal: bool):
    """block_attention(q, k, v, mask [pos, key_pos] or None) -> (z, pattern) over blocks of queries ->
    z [batch, pos, head, d_head], pattern [batch, head, pos, key_pos] (0 at the keys a block leaves out:
    the future); a block's keys stop at its last query's own position."""
    n_q, n_k = q.shape[1], k.shape[1]
    if not causal:
        return block_attention(q, k, v, None)
    n_blocks = max(1, min(QUERY_BLOCKS, n_q // MIN_BLOCK))
    cuts = [i * n_q // n_blocks for i in range(n_blocks + 1)]
    mask = causal_mask(n_q, n_k)
    zs, patterns = zip(*(block_attention(q[:, a:b], k[:, :b + n_k - n_q], v[:, :b + n_k - n_q],
                                         mask[a:b, :b + n_k - n_q]) for a, b in zip(cuts, cuts[1:])))
    pad = lambda x: jnp.pad(x, [(0, 0)] * 3 + [(0, n_k - x.shape[-1])])  # noqa: E731
    return jnp.concatenate(zs, axis=1), jnp.concatenate([pad(x) for x in patterns], axis=2)


def _attend_kq(q, k, v, mask):
    scores = jnp.einsum("bkhe,bqhe->bhkq", k, q / math.sqrt(q.shape[-1]))  # [batch, head, key_pos, pos]
    pattern = jax.nn.softmax(scores if mask is None else jnp.where(mask.T, scores, -jnp.inf), axis=-2)
    return jnp.einsum("bhkq,bkhe->bqhe", pattern, v), jnp.swapaxes(pattern, -1, -2)


def _attend_qk(q, k, v, mask):
    # written out rather than `_attend_kq`'s scores transposed: that graph's backward pass is the slower one
    scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])  # [batch, head, pos, key_pos]
    pattern = jax.nn.softmax(scores if mask is None else jnp.where(mask, scores, -jnp.inf), axis=-1)
    return jnp.einsum("bhqk,bkhe->bqhe", pattern, v), pattern


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def attend(q, k, v, causal: bool):
    """Softmax attention z [batch, pos, head, d_head], nothing hooked, in query blocks: evaluated as
    `_attend_kq`, differentiated as `_attend_qk` (the same function either way)."""
    return _in_query_blocks(_attend_kq, q, k, v, causal)[0]


attend.defjvp(lambda causal, primals, tangents: jax.jvp(
    lambda q, k, v: _in_query_blocks(_attend_qk, q, k, v, causal)[0], primals, tangents))


def attend_with_pattern(q, k, v, causal: bool):
    """Softmax attention in query blocks, evaluated as `_attend_kq`, for a pattern that is only read (cached):
    -> z [batch, pos, head, d_head], pattern [batch, head, pos, key_pos]."""
    return _in_query_blocks(_attend_kq, q, k, v, causal)


def attend_hooked(q, k, v, causal: bool, on_scores, on_pattern):
    """Softmax attention z [batch, pos, head, d_head] with the scores and pattern passed through
    `on_scores` / `on_pattern` (the hooks), which see and return [batch, head, pos, key_pos]."""
    swap = lambda a: jnp.swapaxes(a, -1, -2)  # noqa: E731  [.., key_pos, pos] <-> [.., pos, key_pos]
    scores = swap(on_scores(swap(_scores_kq(q, k, causal))))
    pattern = swap(on_pattern(swap(jax.nn.softmax(scores, axis=-2))))
    return jnp.einsum("bhkq,bkhe->bqhe", pattern, v)


# ----------------------------------------------------------------------------- every input of a modular task


def stored(x: jax.Array) -> jax.Array:
    """x itself (exactly, when finite), written so that XLA:CPU computes it once and stores it: its fusion
    pass re-derives a cheap elementwise producer inside each consumer, and a divide counts as expensive
    and is never duplicated (x / (1 + 0 x) cannot be folded: 0 x is NaN for infinite x)."""
    return x / (1.0 + 0.0 * x)


def rough_mean(x: jax.Array) -> jax.Array:
    """x [row, n] -> [n], the mean of its first rows (at most 128): a per-column constant within a few
    standard deviations of the column's mean, enough to subtract before summing squares without losing
    a near-constant column to cancellation (and exactly a constant column's value: 128 rows sum and
    divide without rounding)."""
    return x[:128].mean(0)


def grid_forward_applies(cfg) -> bool:
    """`grid_forward` is exact for one-layer models with an MLP, no layer norm and positions in the residual
    stream (cfg: a TransformerConfig)."""
    return (cfg.n_layers == 1 and cfg.d_mlp is not None and not cfg.layer_norm and cfg.n_ctx >= 3
            and cfg.positional_embedding != "shortformer")


def grid_forward(params: dict, cfg, p: int, roughly_centred: bool = False) -> tuple[jax.Array, jax.Array]:
    """The `=`-position logits and neuron activations for all p² inputs (a, b, =) of a one-layer model.

    -> logits [a*p + b, vocab_out], acts [a*p + b, d_mlp]; the same numbers as `transformer.apply`
    (a test checks it), computed from per-token tables: the residual at position 0 depends
    on a only, at 1 on b only, at 2 not at all, so keys, values and their images under W_O,
    W_in and W_U are [p]-sized tables and only the attention weights and the MLP run per pair.
    roughly_centred: the activations less their `rough_mean` (the logits unchanged), for measures of
    the centred activations, with no second pass over them to centre them.
    """
    blk = params["blocks"][0]
    att, mlp = blk["attn"], blk["mlp"]
    pos = params["W_pos"][:3] if cfg.positional_embedding == "learned" else jnp.zeros((3, cfg.d_model), params["W_E"].dtype)
    x_num = params["W_E"][:p][None] + pos[:2, None]  # [pos 0|1, token, d_model]
    x_eq = params["W_E"][p] + pos[2]  # [d_model]
    q = jnp.einsum("d,hde->he", x_eq, att["W_Q"]) + att["b_Q"]  # [head, d_head]
    keys = jnp.einsum("itd,hde->ithe", x_num, att["W_K"]) + att["b_K"]  # [pos, token, head, d_head]
    key_eq = jnp.einsum("d,hde->he", x_eq, att["W_K"]) + att["b_K"]
    scale = 1 / float(np.sqrt(cfg.d_head))
    s_a, s_b = (jnp.einsum("he,the->th", q, keys[i]) * scale for i in (0, 1))  # [token, head]
    s_eq = (q * key_eq).sum(-1) * scale  # [head]
    scores = jnp.stack(jnp.broadcast_arrays(s_a.T[:, :, None], s_b.T[:, None, :], s_eq[:, None, None]))
    pattern = jax.nn.softmax(scores, axis=0)  # [3, head, a, b]: each (position, head) a contiguous [a, b] plane
    out_num = jnp.einsum("ithe,hed->ithd", jnp.einsum("itd,hde->ithe", x_num, att["W_V"]) + att["b_V"], att["W_O"])
    out_eq = jnp.einsum("he,hed->hd", jnp.einsum("d,hde->he", x_eq, att["W_V"]) + att["b_V"], att["W_O"])
    resid_base = x_eq + att["b_O"]  # [d_model]: the residual at `=` before the weighted values

    def read(W):  # the residual at `=` after attention, read through W [d_model, n] -> [a, b, n]
        on_a, on_b, on_eq = out_num[0] @ W, out_num[1] @ W, out_eq @ W  # [token, head, n], [head, n]
        # a sum of broadcast products, one fused loop: einsums over the heads would batch one of them
        # over b, with a transposed output, which XLA:CPU runs far slower
        return (resid_base @ W) + sum(
            pattern[0, h, :, :, None] * on_a[:, None, h] + pattern[1, h, :, :, None] * on_b[None, :, h]
            + pattern[2, h, :, :, None] * on_eq[h] for h in range(cfg.n_heads))

    acts = ACTIVATIONS[cfg.act_fn](read(mlp["W_in"]) + mlp["b_in"]).reshape(p * p, -1)  # [pair, d_mlp]
    offset = rough_mean(acts) if roughly_centred else jnp.zeros(acts.shape[-1], acts.dtype)  # [d_mlp]
    acts = stored(acts - offset)
    W_L = mlp["W_out"] @ params["W_U"]
    logits = read(params["W_U"]).reshape(p * p, -1) + acts @ W_L + (offset @ W_L + mlp["b_out"] @ params["W_U"] + params["b_U"])
    return stored(logits), acts
