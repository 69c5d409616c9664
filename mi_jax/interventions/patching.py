"""Activation patching: every component of a grid patched from the clean run into the corrupted run, in ONE
vmapped computation (no Python loop over layers, heads or positions).

A *site* names an activation per layer and the axes of it that index components:

    resid_pre / resid_mid / resid_post   blocks.{l}.hook_resid_*   [batch, pos, d_model]        -> [layer, pos]
    attn_out, mlp_out                    blocks.{l}.hook_*_out     [batch, pos, d_model]        -> [layer, pos]
    head                                 blocks.{l}.attn.hook_z    [batch, pos, head, d_head]   -> [layer, head]
    head_by_pos                          the same, per position                               -> [layer, pos, head]
    q, k, v                              blocks.{l}.attn.hook_q/k/v [batch, pos, head, d_head]  -> [layer, head]
    pattern                              blocks.{l}.attn.hook_pattern [batch, head, pos, key_pos] -> [layer, head]

(a head's output is z W_O, so patching its `hook_z` patches its output.) For component c (a layer and
an index along the site's axes) the corrupted run is repeated with that slice of the activation
replaced by the clean run's, x_c <- where(mask_c, x_clean, x_corrupted), and scored with the metric:

    patched[c] = (m(run with c patched) - m_corrupted) / (m_clean - m_corrupted)

so 1 means the component alone restores the clean behaviour. The masks are built from traced
indices, so the components are a vmap axis of one forward pass.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.interventions.metrics import Metric, normalise
from mi_jax.models import transformer as tfm

SITES: dict[str, tuple[str, tuple[int, ...]]] = {
    "resid_pre": ("blocks.{layer}.hook_resid_pre", (1,)),
    "resid_mid": ("blocks.{layer}.hook_resid_mid", (1,)),
    "resid_post": ("blocks.{layer}.hook_resid_post", (1,)),
    "attn_out": ("blocks.{layer}.hook_attn_out", (1,)),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", (1,)),
    "head": ("blocks.{layer}.attn.hook_z", (2,)),
    "head_by_pos": ("blocks.{layer}.attn.hook_z", (1, 2)),
    "q": ("blocks.{layer}.attn.hook_q", (2,)),
    "k": ("blocks.{layer}.attn.hook_k", (2,)),
    "v": ("blocks.{layer}.attn.hook_v", (2,)),
    "pattern": ("blocks.{layer}.attn.hook_pattern", (1,)),
}


def site(name: str, cfg: tfm.TransformerConfig) -> tuple[list[str], tuple[int, ...]]:
    """(hook name of each layer, component axes) of a site; ConfigError for an unknown or absent one."""
    check(name in SITES, f"unknown patching site {name!r} (known: {', '.join(SITES)})")
    needs_mlp = name in ("resid_mid", "mlp_out")
    check(cfg.d_mlp is not None or not needs_mlp, f"site {name!r} needs a model with MLPs; this one is attention-only")
    template, axes = SITES[name]
    return [template.format(layer=l) for l in range(cfg.n_layers)], axes


def check_pair(clean, corrupted) -> None:
    check(
        jnp.shape(clean) == jnp.shape(corrupted),
        f"clean and corrupted batches must have the same shape, got {tuple(jnp.shape(clean))} and {tuple(jnp.shape(corrupted))}",
    )


def component_mask(shape: tuple[int, ...], axes: tuple[int, ...], index: tuple) -> jax.Array:
    """Boolean mask broadcastable to `shape`: True where the coordinate along each of `axes` equals `index`."""
    mask = jnp.asarray(True)
    for axis, i in zip(axes, index):
        along = [1] * len(shape)
        along[axis] = shape[axis]
        mask = mask & (jnp.arange(shape[axis]).reshape(along) == i)
    return mask


def grid_indices(n_layers: int, sizes: tuple[int, ...]) -> np.ndarray:
    """Every (layer, *index) of the grid, row-major: [n_components, 1 + len(sizes)] int32."""
    return np.asarray(list(itertools.product(range(n_layers), *map(range, sizes))), np.int32).reshape(-1, 1 + len(sizes))


def patched_metrics(
    params: dict, cfg: tfm.TransformerConfig, source_cache: dict, tokens: jax.Array, metric: Metric,
    names: list[str], axes: tuple[int, ...], batch_size: int | None = None,
) -> jax.Array:
    """Raw metric of the run on `tokens` with each component patched from `source_cache`: [layer, *sizes].

    source_cache: {name: activation} of the source run for every name in `names` (one per layer).
    batch_size: None runs every component in one vmap; a number runs them `batch_size` at a time
    (`lax.map`), bounding the memory of large grids (e.g. heads x positions).
    """
    sizes = tuple(source_cache[names[0]].shape[a] for a in axes)

    def one(index):  # index [1 + len(axes)] int32: (layer, position along each axis)
        def hook(layer, name):
            def fn(x):
                mask = component_mask(x.shape, axes, tuple(index[1:])) & (index[0] == layer)
                return jnp.where(mask, source_cache[name], x)

            return fn

        hooks = {name: hook(layer, name) for layer, name in enumerate(names)}
        return metric(tfm.apply(params, tokens, cfg, hooks=hooks)[0])

    indices = jnp.asarray(grid_indices(len(names), sizes))
    values = jax.vmap(one)(indices) if batch_size is None else jax.lax.map(one, indices, batch_size=batch_size)
    return values.reshape(len(names), *sizes)


def baseline_metrics(params, cfg, clean, corrupted, metric: Metric, cache=()) -> tuple[jax.Array, jax.Array, dict, dict]:
    """(m_clean, m_corrupted, clean cache, corrupted cache) of `cache` names, one run of each."""
    check_pair(clean, corrupted)
    clean_logits, clean_cache = tfm.apply(params, clean, cfg, cache=list(cache))
    corrupt_logits, corrupt_cache = tfm.apply(params, corrupted, cfg, cache=list(cache))
    return metric(clean_logits), metric(corrupt_logits), clean_cache, corrupt_cache


def activation_patching(
    params: dict, cfg: tfm.TransformerConfig, clean: jax.Array, corrupted: jax.Array, metric: Metric, site_name: str = "head",
    batch_size: int | None = None,
) -> jax.Array:
    """Normalised activation patching (clean -> corrupted) of every component of `site_name`: [layer, ...]
    (shapes in the module docstring). clean, corrupted: tokens [batch, pos]. batch_size: see `patched_metrics`."""
    names, axes = site(site_name, cfg)
    m_clean, m_corrupt, clean_cache, _ = baseline_metrics(params, cfg, clean, corrupted, metric, names)
    raw = patched_metrics(params, cfg, clean_cache, corrupted, metric, names, axes, batch_size)
    return normalise(raw, m_clean, m_corrupt)


def resid_patching(params, cfg, clean, corrupted, metric: Metric, hook: str = "resid_pre") -> jax.Array:
    """The residual stream (`hook` resid_pre, resid_mid or resid_post) patched per layer and position: [layer, pos]."""
    check(hook in ("resid_pre", "resid_mid", "resid_post"), f"hook must be resid_pre, resid_mid or resid_post, got {hook!r}")
    return activation_patching(params, cfg, clean, corrupted, metric, hook)


def head_patching(params, cfg, clean, corrupted, metric: Metric, by_position: bool = False) -> jax.Array:
    """Each head's output patched: [layer, head], or [layer, pos, head] with `by_position`."""
    return activation_patching(params, cfg, clean, corrupted, metric, "head_by_pos" if by_position else "head")


def mlp_patching(params, cfg, clean, corrupted, metric: Metric) -> jax.Array:
    """Each MLP's output patched per layer and position: [layer, pos]."""
    return activation_patching(params, cfg, clean, corrupted, metric, "mlp_out")


def head_input_patching(params, cfg, clean, corrupted, metric: Metric) -> dict[str, jax.Array]:
    """Each head's queries, keys, values and attention pattern patched: {"q"|"k"|"v"|"pattern": [layer, head]}."""
    return {s: activation_patching(params, cfg, clean, corrupted, metric, s) for s in ("q", "k", "v", "pattern")}


def patch(source_cache: dict, names, positions=None) -> dict:
    """Activation patching as a hook dict: overwrite `names` with the activations in `source_cache` (from a
    run of `apply(..., cache=names)` on other inputs), at every position or only at `positions`."""

    def make(name):
        source = source_cache[name]

        def fn(x):
            if positions is None:
                return source
            return x.at[:, positions].set(source[:, positions])

        return fn

    return {name: make(name) for name in names}
