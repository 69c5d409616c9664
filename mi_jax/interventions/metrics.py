"""Patching metrics: scalars of one run's logits [batch, pos, vocab_out], and their normalisation.

At the chosen positions P (one position, or a list of them) with answer tokens a (and wrong tokens w):

    logit_diff   mean over batch and P of  L[a] - L[w]
    logprob      mean of  log softmax(L)[a]
    loss         mean of  -log softmax(L)[a]  (the cross-entropy of the answers)

    normalised(m) = (m - m_corrupted) / (m_clean - m_corrupted):   0 = corrupted run, 1 = clean run

(`logprob` and `loss` normalise to the same number; their raw values differ in sign.)
A checkpoint whose clean and corrupted metrics coincide has no effect to recover: its normalised
values are inf or nan.
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check

MetricName = Literal["logit_diff", "logprob", "loss"]
METRICS = ("logit_diff", "logprob", "loss")
Metric = Callable[[jax.Array], jax.Array]


def position_indices(positions, n_pos: int) -> np.ndarray:
    pos = np.atleast_1d(np.asarray(positions, np.int64))
    check(pos.ndim == 1 and pos.size > 0, f"positions must be an int or a list of ints, got {positions!r}")
    check(pos.min() >= -n_pos and pos.max() < n_pos, f"position {positions!r} is out of range for sequences of {n_pos} tokens")
    return pos % n_pos


def answer_tokens(tokens, batch: int, n: int, what: str) -> jax.Array:
    """answer tokens [batch] or [batch, n] -> [batch, n]."""
    a = jnp.asarray(tokens, jnp.int32)
    if a.ndim == 1:
        a = a[:, None]
    check(
        a.shape[0] == batch and a.shape[1] in (1, n),
        f"{what} tokens have shape {tuple(jnp.shape(tokens))}, expected [{batch}] or [{batch}, {n}]",
    )
    return jnp.broadcast_to(a, (batch, n))


def make_metric(
    name: MetricName, answer, wrong=None, *, positions=-1, batch: int | None = None, n_pos: int | None = None
) -> Metric:
    """metric(logits [batch, pos, vocab_out]) -> scalar. answer, wrong: [batch] or [batch, len(positions)]."""
    check(name in METRICS, f"metric must be one of {', '.join(METRICS)}, got {name!r}")
    check(name != "logit_diff" or wrong is not None, "the logit_diff metric needs wrong-answer tokens")
    batch = batch if batch is not None else int(np.shape(answer)[0])

    def metric(logits):
        pos = position_indices(positions, logits.shape[1] if n_pos is None else n_pos)
        check(logits.shape[0] == batch, f"answers are for a batch of {batch}, the run has {logits.shape[0]}")
        at = logits[:, pos]  # [batch, n, vocab_out]
        a = answer_tokens(answer, batch, len(pos), "answer")
        pick = lambda x, t: jnp.take_along_axis(x, t[..., None], -1)[..., 0]  # noqa: E731
        if name == "logit_diff":
            return (pick(at, a) - pick(at, answer_tokens(wrong, batch, len(pos), "wrong-answer"))).mean()
        logprob = pick(jax.nn.log_softmax(at.astype(jnp.float32), -1), a).mean()
        return logprob if name == "logprob" else -logprob

    return metric


def normalise(value: jax.Array, clean: jax.Array, corrupted: jax.Array) -> jax.Array:
    """(value - corrupted) / (clean - corrupted): 0 at the corrupted run's metric, 1 at the clean run's."""
    return (value - corrupted) / (clean - corrupted)
