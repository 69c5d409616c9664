"""Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023): the effect of one sender head on the
logits *through* one receiver head's queries, keys or values only.

Sender s = (l_s, h_s), receiver r = (l_r, h_r), l_s < l_r. With R the corrupted run's residual stream
entering layer l_r (`hook_resid_pre`) and o_s the sender's output (`hook_result`, z W_O) in each run,
the receiver's input is recomputed from the residual stream in which only the sender's direct
contribution is clean,

    R' = R + o_s(clean) - o_s(corrupted),        k_r' = LN(R') W_K[h_r] + b_K[h_r]   (q, v alike)

and only the receiver's k (or q, or v) is replaced by k_r', everything else left corrupted (every
other path frozen); the receiver's output then flows to the logits as usual:

    path[s, r] = (m(that run) - m_corrupted) / (m_clean - m_corrupted)

One vmapped computation over every (sender head, receiver head) pair and each of q, k, v.
For an induction circuit the previous-token head -> induction head path is a K-path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.interventions.metrics import Metric, normalise
from mi_jax.models.names import check_layer_head
from mi_jax.interventions.patching import baseline_metrics
from mi_jax.models import transformer as tfm


def _receiver_input(params, cfg, resid, layer):
    """The attention input of `layer` from its residual stream [batch, pos, d_model] (layer norm if the model has it)."""
    if not cfg.layer_norm:
        return resid
    x = resid - resid.mean(-1, keepdims=True)
    scale = jnp.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)
    return x / scale * params["blocks"][layer]["ln1"]["w"] + params["blocks"][layer]["ln1"]["b"]


def check_order(sender_layer: int, receiver_layer: int) -> None:
    check(sender_layer < receiver_layer,
          f"the sender layer ({sender_layer}) must come before the receiver layer ({receiver_layer})")


def path_patching(
    params: dict, cfg: tfm.TransformerConfig, clean: jax.Array, corrupted: jax.Array, metric: Metric,
    sender_layer: int = 0, receiver_layer: int = 1,
) -> dict[str, jax.Array]:
    """Sender head -> receiver head's q, k, v: {"q"|"k"|"v": [sender_head, receiver_head]}, normalised."""
    check_layer_head(cfg, sender_layer)
    check_layer_head(cfg, receiver_layer)
    check_order(sender_layer, receiver_layer)
    result, resid = f"blocks.{sender_layer}.attn.hook_result", f"blocks.{receiver_layer}.hook_resid_pre"
    m_clean, m_corrupt, clean_cache, corrupt_cache = baseline_metrics(params, cfg, clean, corrupted, metric, [result, resid])
    sender_delta = clean_cache[result] - corrupt_cache[result]  # [batch, pos, head, d_model]
    attn = params["blocks"][receiver_layer]["attn"]
    n = cfg.n_heads

    def one(kind, sender, receiver):
        x = _receiver_input(params, cfg, corrupt_cache[resid] + sender_delta[:, :, sender], receiver_layer)
        W, b = attn[f"W_{kind.upper()}"], attn[f"b_{kind.upper()}"]
        recomputed = jnp.einsum("bpd,hde->bphe", x, W) + b  # [batch, pos, head, d_head]

        def fn(act):
            return jnp.where((jnp.arange(n) == receiver)[None, None, :, None], recomputed, act)

        hooks = {f"blocks.{receiver_layer}.attn.hook_{kind}": fn}
        return metric(tfm.apply(params, corrupted, cfg, hooks=hooks)[0])

    pairs = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    out = {}
    for kind in ("q", "k", "v"):  # three hook points: a loop of 3, each over every pair at once
        raw = jax.vmap(lambda p: one(kind, p[0], p[1]))(jnp.asarray(pairs)).reshape(n, n)
        out[kind] = normalise(raw, m_clean, m_corrupt)
    return out
