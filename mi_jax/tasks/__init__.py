"""Tasks: the data and objective of each experiment kind, and the registry of kinds.

A kind is named in a run's config.json (`"kind": "modular"`); `config_class(kind)` and
`make_task(cfg)` find its config dataclass and its task (pure functions for training).
"""

from __future__ import annotations

import importlib

import jax

from mi_jax.config import ConfigError

# kind -> (module, config class, task class)
KINDS = {
    "modular": ("mi_jax.tasks.modular", "ModularConfig", "ModularTask"),
    "induction": ("mi_jax.tasks.induction", "InductionConfig", "InductionTask"),
    "tms": ("mi_jax.tasks.superposition", "TMSConfig", "TMSTask"),
    "and": ("mi_jax.tasks.boolean_and", "ANDConfig", "ANDTask"),
}


def _entry(kind: str):
    if kind not in KINDS:
        raise ConfigError(f"unknown experiment kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]


def config_class(kind: str):
    module, cfg_name, _ = _entry(kind)
    return getattr(importlib.import_module(module), cfg_name)


def make_task(cfg):
    module, _, task_name = _entry(type(cfg).kind)
    return getattr(importlib.import_module(module), task_name)(cfg)


def label_log_probs(log_probs, labels):
    """log_probs [..., vocab] at labels [...] -> [...].

    Written as a one-hot contraction, not a gather: the gradient of `take_along_axis` is a
    scatter, which XLA on CPU runs serially (it doubled the induction_2l training step).
    """
    return (log_probs * jax.nn.one_hot(labels, log_probs.shape[-1], dtype=log_probs.dtype)).sum(-1)
