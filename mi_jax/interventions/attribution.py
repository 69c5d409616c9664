"""Attribution patching (Nanda 2023; Syed, Rager, Conmy 2023): activation patching to first order.

For a component c of activation x (a slice of it, see `patching.SITES`), the effect of patching the
clean value into the corrupted run is approximated by the gradient of the metric at the corrupted run:

    m(x_corrupted + Δ_c) - m_corrupted  ≈  Σ_{i ∈ c} ∂m/∂x_i |_corrupted · (x_clean - x_corrupted)_i

normalised by (m_clean - m_corrupted) like `patching`. One forward and one backward pass give every
component of every layer: the gradients w.r.t. the activations are taken as gradients w.r.t. zero
perturbations added by hooks (x -> x + δ, ∂m/∂δ = ∂m/∂x at δ = 0). The approximation is exact when
the metric is linear in the patched activation (e.g. the last layer's head outputs with no layer
norm, under the logit difference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mi_jax.interventions.metrics import Metric, normalise
from mi_jax.interventions.patching import baseline_metrics, site
from mi_jax.models import transformer as tfm


def activation_gradients(params, cfg, tokens, metric: Metric, names) -> dict[str, jax.Array]:
    """∂ metric / ∂ activation of the run on `tokens`, for each hook point in `names`: {name: [activation shape]}."""
    _, cache = tfm.apply(params, tokens, cfg, cache=list(names))
    zeros = {n: jnp.zeros_like(cache[n]) for n in names}

    def scored(deltas):
        hooks = {n: (lambda x, n=n: x + deltas[n]) for n in names}
        return metric(tfm.apply(params, tokens, cfg, hooks=hooks)[0])

    return jax.grad(scored)(zeros)


def per_component(values: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Sum of values [activation shape] over every axis but `axes` (kept in order): [*sizes]."""
    return values.sum(tuple(a for a in range(values.ndim) if a not in axes))


def attribution_patching(
    params: dict, cfg: tfm.TransformerConfig, clean: jax.Array, corrupted: jax.Array, metric: Metric, site_name: str = "head"
) -> jax.Array:
    """Normalised attribution patching of every component of `site_name`: the shape `activation_patching` gives."""
    names, axes = site(site_name, cfg)
    m_clean, m_corrupt, clean_cache, corrupt_cache = baseline_metrics(params, cfg, clean, corrupted, metric, names)
    grads = activation_gradients(params, cfg, corrupted, metric, names)
    effect = jnp.stack([per_component(grads[n] * (clean_cache[n] - corrupt_cache[n]), axes) for n in names])
    return normalise(m_corrupt + effect, m_clean, m_corrupt)


def agreement(attribution: jax.Array, patched: jax.Array, n_leading: int = 0) -> dict[str, jax.Array]:
    """How well attribution patching matches activation patching, over the component axes.

    attribution, patched: [*lead, *components] with `n_leading` leading axes (time, seed) kept.
    -> {"correlation": [*lead] (Pearson, over components; nan where either is constant),
        "max_error": [*lead] (max |difference|)}.
    """
    a = attribution.reshape(*attribution.shape[:n_leading], -1)
    p = patched.reshape(*patched.shape[:n_leading], -1)
    a_c, p_c = a - a.mean(-1, keepdims=True), p - p.mean(-1, keepdims=True)
    corr = (a_c * p_c).sum(-1) / jnp.sqrt((a_c**2).sum(-1) * (p_c**2).sum(-1))
    return {"correlation": corr, "max_error": jnp.abs(a - p).max(-1)}
