"""Hook-point names of a model, checked with one clear line (and the nearest valid name) when wrong."""

from __future__ import annotations

import functools

from mi_jax.config import check, check_name
from mi_jax.models import transformer as tfm


@functools.lru_cache(maxsize=32)
def _names(cfg: tfm.TransformerConfig) -> tuple[str, ...]:
    return tuple(tfm.hook_names(cfg))


def check_hook_name(cfg: tfm.TransformerConfig, name: str) -> str:
    """`name` if it is a hook point of a model with this config, else ConfigError naming the nearest one."""
    return check_name(name, _names(cfg), "hook point", " for this model")


def check_layer_head(cfg: tfm.TransformerConfig, layer: int, head: int | None = None) -> None:
    """ConfigError unless 0 <= layer < n_layers (and 0 <= head < n_heads)."""
    n, h = cfg.n_layers, cfg.n_heads
    check(0 <= layer < n, f"layer {layer} is out of range: the model has {n} layers (0..{n - 1})")
    if head is not None:
        check(0 <= head < h, f"head {head} is out of range: the model has {h} heads per layer (0..{h - 1})")


def has_mlp(cfg: tfm.TransformerConfig) -> bool:
    return cfg.d_mlp is not None
