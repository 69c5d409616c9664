"""Induction-head measures: pure functions of ONE model's params (and fixed probe data).

Axes: layer, head, pos (query), key_pos. Scores are attention means on the *repeated probe*
(`probe`: [batch, seq_len] uniform tokens whose last `span` tokens repeat the `span` before,
Elhage et al. 2021 / Olsson et al. 2022); the second copy is queries q >= seq_len - span.

    previous-token   mean attention from q to q - 1 (all q >= 1)
    duplicate-token  mean attention from q in the second copy to q - span (its earlier copy)
    induction        mean attention from q in the second copy to q - span + 1 (the token after
                     the earlier copy of the current token)
    prefix-matching  Olsson et al.'s token-based form: attention mass on every earlier key k whose
                     *previous* token equals the query token (chance repeats count too), averaged
                     over queries that have at least one such key
    ICL score        loss on token `late` minus loss on token `early` (task data)
    composition      ||M1 M2||_F / (||M1||_F ||M2||_F) between each layer-0 head's W_OV and each
                     layer-1 head's W_QK (Q: W_OV1 W_QK2; K: W_QK2 W_OV1^T) or W_OV (V: W_OV1 W_OV2),
                     row-vector convention (resid @ W); raw scores, no random baseline subtracted
    OV copying       sum(Re λ) / sum(|λ|) over the eigenvalues λ of the full OV circuit
                     W_E W_V W_O W_U [vocab, vocab] (Elhage et al.'s positive-eigenvalue criterion;
                     +1 for a pure copying head), computed from the same non-zero eigenvalues of the
                     [d_head, d_head] matrix W_O W_U W_E W_V
    direct logit     each head's output on the probe's second copy, dotted with the correct next
                     token's unembedding minus the mean unembedding (W_U[:, t] - mean_v W_U[:, v])

`make_measures(cfg)` binds the static sizes and returns the measure families for
`mi_jax.analysis.core.analyze`; `probe_data(cfg)` gives the matching `data`; `finish(results)`
turns the "ov_circuit" results into "ov_copying" (eigenvalues on the host, see
`ov_copying_from_circuit`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.models import transformer as tfm
from mi_jax.tasks import induction as task_lib
from mi_jax.tasks.common import training_hooks

HEAD_SCORES = ("previous_token", "duplicate_token", "induction", "prefix_matching")


# ----------------------------------------------------------------------------- attention scores


def attention_cache(params: dict, tokens: jax.Array, model: tfm.TransformerConfig, hooks=None) -> tuple[list, list]:
    """One run on tokens [batch, pos] (with `hooks`, e.g. a run's training interventions) -> (each
    layer's pattern [batch, head, pos, key_pos], each layer's `hook_z` [batch, pos, head, d_head])."""
    layers = range(model.n_layers)
    names = [f"blocks.{l}.attn.hook_pattern" for l in layers] + [f"blocks.{l}.attn.hook_z" for l in layers]
    _, cache = tfm.apply(params, tokens, model, cache=names, hooks=hooks)
    return [cache[f"blocks.{l}.attn.hook_pattern"] for l in layers], [cache[f"blocks.{l}.attn.hook_z"] for l in layers]


@functools.partial(jax.jit, static_argnums=2)
def patterns(params: dict, tokens: jax.Array, model: tfm.TransformerConfig) -> jax.Array:
    """Attention patterns of every head: [batch, layer, head, pos, key_pos]."""
    return jnp.stack(attention_cache(params, tokens, model)[0], axis=1)


def offset_score(pattern: jax.Array, queries: np.ndarray, offset: int) -> jax.Array:
    """Mean attention from each query q in `queries` to key q - offset, over queries and sequences.
    pattern [batch, ..., pos, key_pos] -> [...]. (The entries are gathered before the mean: a
    mean over the batch of whole patterns costs far more, on CPU, than the scores themselves.)"""
    q = np.asarray(queries)
    return pattern[..., q, q - offset].mean((0, -1))


def prefix_matching_score(pattern: jax.Array, tokens: jax.Array) -> jax.Array:
    """pattern [batch, layer, head, pos, key_pos], tokens [batch, pos] -> [layer, head].

    Attention on keys k >= 1 with tokens[k - 1] == tokens[q] (k <= q), averaged over queries with a match.
    """
    n = tokens.shape[1]
    previous = jnp.concatenate([jnp.full_like(tokens[:, :1], -1), tokens[:, :-1]], axis=1)  # [batch, key_pos]
    causal = jnp.tril(jnp.ones((n, n), bool))
    match = (previous[:, None, :] == tokens[:, :, None]) & causal  # [batch, pos, key_pos]
    has = match.any(-1)  # [batch, pos]: the query has a matching key
    # one contraction over (batch, pos, key_pos): the mass on matches, summed over queries with one
    mass = jnp.einsum("blhqk,bqk->lh", pattern, match.astype(pattern.dtype))
    return mass / jnp.maximum(has.sum(), 1)


def head_scores(pattern: jax.Array, tokens: jax.Array, span: int) -> dict[str, jax.Array]:
    """All four attention scores from patterns [batch, layer, head, pos, key_pos] -> {name: [layer, head]}."""
    n = tokens.shape[1]
    second = np.arange(n - span, n)
    return {
        "previous_token": offset_score(pattern, np.arange(1, n), 1),
        "duplicate_token": offset_score(pattern, second, span),
        "induction": offset_score(pattern, second, span - 1),
        "prefix_matching": prefix_matching_score(pattern, tokens),
    }


def chance_scores(tokens: np.ndarray, span: int) -> dict[str, float]:
    """The scores of uniform causal attention on these probe tokens (the 'chance' level)."""
    n = tokens.shape[1]
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    pattern = jnp.broadcast_to(jnp.asarray(uniform, jnp.float32), (tokens.shape[0], 1, 1, n, n))
    scores = jax.jit(head_scores, static_argnums=2)(pattern, jnp.asarray(tokens), span)
    return {k: float(v[0, 0]) for k, v in scores.items()}


# ----------------------------------------------------------------------------- weight-based scores


def _require_layers(params: dict, n: int, what: str) -> None:
    have = len(params["blocks"])
    check(have >= n, f"{what} needs a model with >= {n} layers; this one has {have}")


def ov_matrices(params: dict, layer: int) -> jax.Array:
    """W_V W_O of each head: [head, d_model, d_model]."""
    a = params["blocks"][layer]["attn"]
    return jnp.einsum("hde,hef->hdf", a["W_V"], a["W_O"])


def qk_matrices(params: dict, layer: int) -> jax.Array:
    """W_Q W_K^T of each head: [head, d_model, d_model] (score = x_q W_QK x_k^T)."""
    a = params["blocks"][layer]["attn"]
    return jnp.einsum("hde,hfe->hdf", a["W_Q"], a["W_K"])


def composition(first: jax.Array, second: jax.Array) -> jax.Array:
    """||A B||_F / (||A||_F ||B||_F) for every pair: first [h1, d, d], second [h2, d, d] -> [h1, h2]."""
    product = jnp.einsum("ade,bef->abdf", first, second)
    norm = lambda m: jnp.sqrt((m**2).sum((-2, -1)))  # noqa: E731
    return norm(product) / (norm(first)[:, None] * norm(second)[None, :])


def composition_scores(params: dict, data=None) -> dict[str, jax.Array]:
    """Q-, K-, V-composition of layer-0 heads into layer-1 heads: {"q"|"k"|"v": [head0, head1]}."""
    _require_layers(params, 2, "composition scores")
    ov0, qk1, ov1 = ov_matrices(params, 0), qk_matrices(params, 1), ov_matrices(params, 1)
    return {
        "q": composition(ov0, qk1),
        "k": composition(ov0, jnp.swapaxes(qk1, -1, -2)),  # ||W_QK2 W_OV1^T|| = ||W_OV1 W_QK2^T||
        "v": composition(ov0, ov1),
    }


def ov_circuit(params: dict, data=None) -> jax.Array:
    """Each head's OV circuit in head space, W_O W_U W_E W_V: [layer, head, d_head, d_head].

    It has the same non-zero eigenvalues as the full [vocab, vocab] circuit W_E W_V W_O W_U.
    """
    rows = []
    for layer in range(len(params["blocks"])):
        a = params["blocks"][layer]["attn"]
        rows.append(jnp.einsum("hed,dv,vf,hfg->heg", a["W_O"], params["W_U"], params["W_E"], a["W_V"]))
    return jnp.stack(rows)


def copying_score(eigenvalues):
    """sum(Re λ) / sum(|λ|) over the last axis of eigenvalues [..., d_head] -> [...] (numpy or jax)."""
    return eigenvalues.real.sum(-1) / (abs(eigenvalues).sum(-1) + 1e-30)


def ov_copying_score(params: dict, data=None) -> jax.Array:
    """OV copying score of each head of one model: [layer, head] (jittable; eigenvalues in the graph)."""
    return copying_score(jnp.linalg.eigvals(ov_circuit(params)))


def ov_copying_from_circuit(circuit: np.ndarray) -> np.ndarray:
    """OV copying score from `ov_circuit` results [..., d_head, d_head] -> [...], eigenvalues by numpy.

    The trajectory measures return the circuit and the eigenvalues are taken here, on the host,
    after the compiled call: LAPACK's eigenvalue routine inside the mapped, multi-measure XLA
    program stalled on the 2-core CPU (a call never returned), and it is cheap in numpy.
    """
    return copying_score(np.linalg.eigvals(np.asarray(circuit, np.float64))).astype(np.float32)


def finish(results: dict) -> dict:
    """Replace the "ov_circuit" trajectory measure [..., d_head, d_head] by "ov_copying" [...]."""
    results = dict(results)
    if "ov_circuit" in results:
        results["ov_copying"] = ov_copying_from_circuit(results.pop("ov_circuit"))
    return results


# ----------------------------------------------------------------------------- activation-based measures


def direct_logit_attribution(params: dict, tokens: jax.Array, span: int, z: list[jax.Array]) -> jax.Array:
    """Each head's direct effect on the correct logit over the probe's second copy: [layer, head].

    z: each layer's `attn.hook_z` on `tokens` [batch, pos, head, d_head]. Mean over sequences and
    the queries q in [n - span, n - 2] (which predict token q + 1).
    """
    n = tokens.shape[1]
    q = np.arange(n - span, n - 1)
    direction = params["W_U"] - params["W_U"].mean(-1, keepdims=True)  # [d_model, vocab]
    target = direction.T[tokens[:, q + 1]]  # [batch, q, d_model]
    rows = []
    for layer, z_layer in enumerate(z):
        # the target direction read back into each head's z space: [batch, q, head, d_head]
        read = jnp.einsum("bqd,hed->bqhe", target, params["blocks"][layer]["attn"]["W_O"])
        rows.append((z_layer[:, q] * read).sum((0, 1, 3)) / (tokens.shape[0] * len(q)))
    return jnp.stack(rows)


# ----------------------------------------------------------------------------- bundle


def probe_data(cfg: task_lib.InductionConfig, n: int = 64, seed: int = 7) -> dict[str, jax.Array]:
    """Fixed analysis data: {"probe": repeated probe [n, seq_len], "task": task sequences [n, seq_len]}."""
    key = jax.random.key(seed)
    return {
        "probe": task_lib.repeated_probe(key, n, cfg.seq_len, cfg.d_vocab, cfg.repeat_len),
        "task": task_lib.sample(cfg, jax.random.fold_in(key, 1), n),
    }


def make_measures(cfg: task_lib.InductionConfig) -> dict:
    """{family: fn(params, data) -> {name: value}} of every measure this model supports.

    Families share one forward pass each (`mi_jax.analysis.core` merges their entries): the head
    scores and direct logit attribution from one cached run on the probe, the per-position loss
    and ICL score from one run on task data, and the weight-based composition scores (>= 2 layers)
    and OV circuits ("ov_circuit" -> "ov_copying" by `finish`, after the compiled call).
    A run trained with `train.interventions` is measured with them in place, as it trained and was
    evaluated (the weight-based scores read the weights as they are).
    """
    model, span = cfg.transformer, cfg.repeat_len
    hooks = training_hooks(cfg)

    def attention(params, data):
        layer_patterns, z = attention_cache(params, data["probe"], model, hooks)
        # scored layer by layer ([batch, 1, head, pos, key_pos] each): no stacked copy of the patterns
        per_layer = [head_scores(pattern[:, None], data["probe"], span) for pattern in layer_patterns]
        return {**{k: jnp.concatenate([scores[k] for scores in per_layer]) for k in HEAD_SCORES},
                "direct_logit": direct_logit_attribution(params, data["probe"], span, z)}

    def losses(params, data):
        position_loss = task_lib.per_position_loss(params, data["task"], model, hooks)
        return {"position_loss": position_loss, "icl_score": task_lib.icl_score(position_loss, cfg.early, cfg.late)}

    measures = {"attention": attention, "losses": losses, "ov": lambda p, d: {"ov_circuit": ov_circuit(p)}}
    if model.n_layers >= 2:
        measures["composition"] = lambda p, d: {f"{k}_composition": v for k, v in composition_scores(p).items()}
    return measures


# ----------------------------------------------------------------------------- phase change (one seed's series)


def smooth(values: np.ndarray, width: int = 3) -> np.ndarray:
    """Centred moving average along time (edges use the available neighbours). values [time]."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return values
    kernel = np.ones(min(width, len(values)))  # np.convolve's "same" keeps the longer of the two
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones_like(values), kernel, mode="same")
    return total / count


def fastest_change(steps: np.ndarray, values: np.ndarray, width: int = 3) -> tuple[int, float]:
    """(step, slope): where the smoothed series changes fastest (largest |d value / d step|)."""
    s = smooth(values, width)
    slope = np.diff(s) / np.diff(np.asarray(steps, float))
    i = int(np.argmax(np.abs(slope)))
    return int((steps[i] + steps[i + 1]) // 2), float(slope[i])


def transition_window(steps: np.ndarray, values: np.ndarray, lo: float = 0.1, hi: float = 0.9) -> tuple[int, int]:
    """First steps at which the series has made `lo` and `hi` of its change from start to its extreme."""
    v = smooth(values)
    end = v.max() if v[-1] >= v[0] else v.min()
    progress = (v - v[0]) / (end - v[0]) if end != v[0] else np.zeros_like(v)
    first = lambda frac: int(steps[int(np.argmax(progress >= frac))])  # noqa: E731
    return first(lo), first(hi)


def lower_convex_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The lower convex hull of the points (x, y) (x increasing), evaluated at every x: [n]."""
    corners: list[int] = []
    for i in range(len(x)):
        # drop the last corner while it lies on or above the chord from the one before it to point i
        while len(corners) >= 2 and ((y[corners[-1]] - y[corners[-2]]) * (x[i] - x[corners[-2]])
                                     >= (y[i] - y[corners[-2]]) * (x[corners[-1]] - x[corners[-2]])):
            corners.pop()
        corners.append(i)
    return np.interp(x, x[corners], y[corners])


def hull_excess(steps: np.ndarray, loss: np.ndarray, width: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, smoothed loss, its excess over its lower convex hull in log(step)), each [n], from the first
    fall's steepest point on: the loss smoothed over `width` evaluations; the excess is 0 wherever the curve
    is convex in log training time, as a power law is (warm-up and the first drop, which bend the other way
    by nature, are left out). steps, loss [n_evals]."""
    steps, loss = np.asarray(steps), np.asarray(loss, float)
    later = steps > 0  # log(step): the evaluation at step 0 has no place on the axis
    steps, x, y = steps[later], np.log(steps[later].astype(float)), smooth(loss[later], width)
    if len(x) == 0:
        return steps, y, np.zeros_like(y)
    slope = np.diff(y) / np.diff(x)
    start = int(np.argmax(np.append(np.diff(slope) > 0, True)))  # where the first fall stops steepening
    steps, x, y = steps[start:], x[start:], y[start:]
    return steps, y, y - lower_convex_hull(x, y)


def loss_bump(steps: np.ndarray, loss: np.ndarray, width: int = 5) -> dict:
    """Olsson et al.'s loss bump: the stretch where the loss curve stops being convex in log training
    time, slowing down and then falling faster again (in their small models the only such stretch, at
    the phase change). steps, loss [n_evals]; found without knowing where the phase change is (all 0
    when there is no evaluation after step 0).

    bump: the largest excess of the smoothed loss over its lower convex hull (`hull_excess`, nats), at
    bump_step; plateau_start, plateau_end: the stretch around it where the excess is at least half its
    peak (the slow stretch, then the start of the faster fall); rise: the largest rise of the smoothed
    loss over its running minimum in that stretch (0 where the loss only slows, without climbing)."""
    steps, y, excess = hull_excess(steps, loss, width)
    if len(steps) == 0:  # no evaluation after step 0
        return {"bump": 0.0, "bump_step": 0, "plateau_start": 0, "plateau_end": 0, "rise": 0.0}
    peak = int(np.argmax(excess))
    low = excess < excess[peak] / 2
    first = peak - int(np.argmax(low[:peak + 1][::-1])) + 1 if low[:peak + 1].any() else 0
    last = peak + int(np.argmax(low[peak:])) - 1 if low[peak:].any() else len(y) - 1
    stretch = y[first:last + 1]
    return {"bump": float(excess[peak]), "bump_step": int(steps[peak]),
            "plateau_start": int(steps[first]), "plateau_end": int(steps[last]),
            "rise": float((stretch - np.minimum.accumulate(stretch)).max())}


def phase_change(
    steps: np.ndarray,
    induction: np.ndarray,
    icl: np.ndarray,
    loss_steps: np.ndarray,
    copy_loss: np.ndarray,
    loss: np.ndarray,
    min_rise: float = 0.25,
) -> dict:
    """Phase-change summary of one seed. steps, induction (the induction head's score), icl [time];
    loss_steps, copy_loss (loss on the probe's repeated half, which only in-context learning lowers),
    loss (the whole test loss) [n_evals]. "coincide": the induction score rose by at least
    `min_rise` and its fastest change, the ICL score's and the copy loss's lie within one 10%-90%
    induction window (at least one checkpoint interval) of each other. The loss bump (`loss_bump`) is found on
    the whole loss, apart from the change, so that the two can be set side by side."""
    ind_step, ind_slope = fastest_change(steps, induction)
    icl_step, icl_slope = fastest_change(steps, icl)
    loss_step, loss_slope = fastest_change(loss_steps, copy_loss)
    lo, hi = transition_window(steps, induction)
    tolerance = max(hi - lo, int(np.diff(steps).max()))
    rise = float(np.max(induction) - induction[0])
    return {
        "induction_rise": rise,
        "induction_step": ind_step,
        "induction_slope": ind_slope,
        "induction_window": (lo, hi),
        "icl_step": icl_step,
        "icl_slope": icl_slope,
        "loss_step": loss_step,
        "loss_slope": loss_slope,
        **loss_bump(loss_steps, loss),
        "coincide": bool(
            rise >= min_rise and abs(ind_step - icl_step) <= tolerance and abs(ind_step - loss_step) <= tolerance
        ),
    }
