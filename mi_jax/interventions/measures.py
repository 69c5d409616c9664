"""Patching as trajectory measures: factories that bind a clean / corrupted batch and the answers and
return pure `fn(params, data) -> {name: value}` for `mi_jax.analysis.core.analyze_params`, which
evaluates them for every checkpoint (lax.map over time, vmap over seeds): a per-model result
[layer, head] becomes [time, (seed,) layer, head].

    measures = {"patching": head_patching_measure(cfg, clean, corrupted, answer, wrong)}
    results = analyze_params(stacked_params, measures)        # results["head_patching"] [time, layer, head]

The bound batches are constants of the compiled call (`data` is not used).
"""

from __future__ import annotations

import jax.numpy as jnp

from mi_jax.config import check
from mi_jax.interventions import attribution as attr
from mi_jax.interventions import metrics as mt
from mi_jax.interventions import patching as pt
from mi_jax.models.names import check_layer_head
from mi_jax.interventions.path_patching import check_order, path_patching
from mi_jax.models import transformer as tfm


def bind_metric(cfg: tfm.TransformerConfig, clean, corrupted, answer, wrong, metric: str, positions) -> tuple:
    """Checked arrays (clean, corrupted [batch, pos]) and the metric, with every bad input refused now."""
    clean, corrupted = jnp.asarray(clean, jnp.int32), jnp.asarray(corrupted, jnp.int32)
    pt.check_pair(clean, corrupted)
    check(clean.ndim == 2, f"clean and corrupted tokens must be [batch, pos], got shape {tuple(clean.shape)}")
    check(clean.shape[1] <= cfg.n_ctx, f"sequence length {clean.shape[1]} exceeds model.n_ctx={cfg.n_ctx}")
    batch, n_pos = clean.shape
    n = len(mt.position_indices(positions, n_pos))  # checks the positions
    mt.answer_tokens(answer, batch, n, "answer")
    if wrong is not None:
        mt.answer_tokens(wrong, batch, n, "wrong-answer")
    return clean, corrupted, mt.make_metric(metric, answer, wrong, positions=positions, batch=batch, n_pos=n_pos)


def patching_measure(
    cfg: tfm.TransformerConfig, clean, corrupted, answer, wrong=None, *, metric: mt.MetricName = "logit_diff",
    positions=-1, sites=("head",), attribution: bool = False, batch_size: int | None = None,
):
    """Activation patching of each site in `sites` (see `patching.SITES`), sharing one clean and one corrupted run.

    -> fn(params, data) -> {"{site}_patching": [layer, ...], "clean_metric": [], "corrupted_metric": []}
    and with `attribution` also "{site}_attribution" (same shape) and its agreement with patching,
    "{site}_attribution_correlation" [] and "{site}_attribution_max_error" [].
    batch_size: components patched at a time (None: all in one vmap; see `patching.patched_metrics`).
    Put every site of one clean / corrupted pair in one call: two of these measures would both return
    "clean_metric", which `analyze` refuses.
    """
    clean, corrupted, score = bind_metric(cfg, clean, corrupted, answer, wrong, metric, positions)
    layout = {s: pt.site(s, cfg) for s in sites}
    names = sorted({n for layer_names, _ in layout.values() for n in layer_names})

    def measure(params, data=None):
        m_clean, m_corrupt, clean_cache, corrupt_cache = pt.baseline_metrics(params, cfg, clean, corrupted, score, names)
        out = {"clean_metric": m_clean, "corrupted_metric": m_corrupt}
        grads = attr.activation_gradients(params, cfg, corrupted, score, names) if attribution else None
        for s, (layer_names, axes) in layout.items():
            raw = pt.patched_metrics(params, cfg, clean_cache, corrupted, score, layer_names, axes, batch_size)
            out[f"{s}_patching"] = patched = mt.normalise(raw, m_clean, m_corrupt)
            if attribution:
                diff = {n: clean_cache[n] - corrupt_cache[n] for n in layer_names}
                effect = jnp.stack([attr.per_component(grads[n] * diff[n], axes) for n in layer_names])
                out[f"{s}_attribution"] = approx = mt.normalise(m_corrupt + effect, m_clean, m_corrupt)
                fit = attr.agreement(approx, patched)
                out[f"{s}_attribution_correlation"], out[f"{s}_attribution_max_error"] = fit["correlation"], fit["max_error"]
        return out

    return measure


def head_patching_measure(cfg, clean, corrupted, answer, wrong=None, metric: mt.MetricName = "logit_diff", positions=-1):
    """-> fn(params, data) -> {"head_patching": [layer, head]} (normalised, clean -> corrupted)."""
    full = patching_measure(cfg, clean, corrupted, answer, wrong, metric=metric, positions=positions, sites=("head",))
    return lambda params, data=None: {"head_patching": full(params)["head_patching"]}


def head_ablation_measure(
    cfg, tokens, answer, wrong=None, metric: mt.MetricName = "logit_diff", positions=-1, mode: str = "mean",
    reference_tokens=None,
):
    """Each head ablated in turn (one vmap over every head): -> fn(params, data) ->
    {"head_ablation": [layer, head]} = m(run with the head ablated) - m(run as is), the head's total effect.

    mode "zero"; "mean": the head's `hook_z` replaced by its mean over `reference_tokens` [ref_batch, pos]
    (default: `tokens`), per position; "resample": by its value on `reference_tokens` (same shape as tokens).
    The reference activations come from the same checkpoint's run.
    """
    check(mode in ("zero", "mean", "resample"), f"ablation mode must be zero, mean or resample, got {mode!r}")
    check(mode != "resample" or reference_tokens is not None, "resample ablation needs reference_tokens (the other inputs)")
    reference = tokens if reference_tokens is None else reference_tokens
    if mode == "resample":
        tokens, reference, score = bind_metric(cfg, tokens, reference, answer, wrong, metric, positions)
    else:
        tokens, _, score = bind_metric(cfg, tokens, tokens, answer, wrong, metric, positions)
        reference = jnp.asarray(reference, jnp.int32)
        check(
            reference.ndim == 2 and reference.shape[1] == tokens.shape[1],
            f"reference tokens must be [batch, {tokens.shape[1]}], got shape {tuple(reference.shape)}",
        )
    names, axes = pt.site("head", cfg)

    def measure(params, data=None):
        logits, _ = tfm.apply(params, tokens, cfg)
        _, ref_cache = tfm.apply(params, reference, cfg, cache=names)
        if mode == "zero":
            source = {n: jnp.zeros_like(ref_cache[n][:1]) for n in names}
        else:
            source = {n: ref_cache[n].mean(0, keepdims=True) if mode == "mean" else ref_cache[n] for n in names}
        ablated = pt.patched_metrics(params, cfg, source, tokens, score, names, axes)
        return {"head_ablation": ablated - score(logits)}

    return measure


def attribution_measure(
    cfg, clean, corrupted, answer, wrong=None, metric: mt.MetricName = "logit_diff", positions=-1, site: str = "head"
):
    """-> fn(params, data) -> {"{site}_attribution": [layer, ...]}: attribution patching alone (one backward pass)."""
    clean, corrupted, score = bind_metric(cfg, clean, corrupted, answer, wrong, metric, positions)
    pt.site(site, cfg)

    def measure(params, data=None):
        return {f"{site}_attribution": attr.attribution_patching(params, cfg, clean, corrupted, score, site)}

    return measure


def path_patching_measure(
    cfg, clean, corrupted, answer, wrong=None, metric: mt.MetricName = "logit_diff", positions=-1,
    sender_layer: int = 0, receiver_layer: int = 1,
):
    """-> fn(params, data) -> {"path_patching_q"|"_k"|"_v": [sender_head, receiver_head]}."""
    clean, corrupted, score = bind_metric(cfg, clean, corrupted, answer, wrong, metric, positions)
    check_layer_head(cfg, sender_layer)
    check_layer_head(cfg, receiver_layer)
    check_order(sender_layer, receiver_layer)

    def measure(params, data=None):
        paths = path_patching(params, cfg, clean, corrupted, score, sender_layer, receiver_layer)
        return {f"path_patching_{k}": v for k, v in paths.items()}

    return measure
