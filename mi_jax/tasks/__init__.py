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
