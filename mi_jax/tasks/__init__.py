"""Tasks: the data and objective of each experiment kind, as pure functions for training.

A task class takes its config and supplies `init_params(key)`, `batch(key, step)`,
`loss(params, batch)`, `evaluate(params)` and `frozen(path)` (see `mi_jax.training.loop`);
`mi_jax.kinds` maps each kind's name to its config and task.
"""

from __future__ import annotations

import jax


def label_log_probs(log_probs, labels):
    """log_probs [..., vocab] at labels [...] -> [...].

    A one-hot contraction, not a gather: the gradient of `take_along_axis` is a scatter, which
    XLA on CPU runs serially.
    """
    return (log_probs * jax.nn.one_hot(labels, log_probs.shape[-1], dtype=log_probs.dtype)).sum(-1)


def training_hooks(cfg) -> dict:
    """The hooks dict of `cfg.train.interventions` for a transformer task's forward passes ({} when none);
    a spec that names no hook point is one ConfigError line, raised when the task is made."""
    if not cfg.train.interventions:
        return {}
    # imported here: mi_jax.interventions' measures import the tasks
    from mi_jax.interventions.spec import parse_interventions

    return parse_interventions(cfg.train.interventions, cfg.transformer)
