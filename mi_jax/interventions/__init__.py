"""Interventions as hook dictionaries for `mi_jax.models.transformer.apply(..., hooks=...)`.

Each function returns `{hook_name: fn}`; merge several with `{**a, **b}`. They are pure, so an
intervention vmaps over checkpoints and seeds like any measure.

    logits, _ = apply(params, tokens, cfg, hooks=ablate_head(layer=1, head=0))
    logits, _ = apply(params, corrupt, cfg, hooks=patch(clean_cache, ["blocks.0.attn.hook_z"]))
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Ablation = Literal["zero", "mean"]


def ablate_head(layer: int, head: int, mode: Ablation = "zero") -> dict:
    """Remove one head's output (`hook_z` [batch, pos, head, d_head]): zero it, or replace it by its
    mean over the batch and positions of this forward pass (mean ablation)."""

    def fn(z):
        if mode == "zero":
            return z.at[:, :, head].set(0.0)
        return z.at[:, :, head].set(jnp.broadcast_to(z[:, :, head].mean((0, 1)), z[:, :, head].shape))

    return {f"blocks.{layer}.attn.hook_z": fn}


def resample_ablate(name: str, key: jax.Array) -> dict:
    """Replace activation `name` of each sequence by that of another random sequence in the batch."""

    def fn(x):
        return x[jax.random.permutation(key, x.shape[0])]

    return {name: fn}


def patch(source_cache: dict, names, positions=None) -> dict:
    """Activation patching: overwrite `names` with the activations in `source_cache` (from a run
    of `apply(..., cache=names)` on other inputs), at every position or only at `positions`."""

    def make(name):
        source = source_cache[name]

        def fn(x):
            if positions is None:
                return source
            return x.at[:, positions].set(source[:, positions])

        return fn

    return {name: make(name) for name in names}
