"""What several tasks share: label log-probabilities and the hooks of a config's training interventions."""

from __future__ import annotations

import jax

from mi_jax.models.hook_specs import parse_interventions


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
    return parse_interventions(cfg.train.interventions, cfg.transformer)
