"""What several tasks share: label log-probabilities, the hooks of a config's training interventions, and the
hook points an SAE reads."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mi_jax.models import transformer as tfm
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


def merged_hooks(training: dict, extra: dict | None) -> dict:
    """The training interventions' hooks with `extra` {name: fn} added; at a name both hook, `extra`'s
    fn sees the intervention's output (an SAE splices into the model as it was trained)."""
    if not extra:
        return training
    out = dict(training)
    for name, fn in extra.items():
        first = out.get(name)
        out[name] = fn if first is None else (lambda a, f=first, g=fn: g(f(a)))
    return out


@functools.lru_cache(maxsize=32)
def vector_hook_points(model: tfm.TransformerConfig) -> tuple[str, ...]:
    """The hook points of a transformer whose activation is one vector per token, [batch, pos, d] with
    d > 1 (residual streams, attention and MLP outputs, MLP neurons): what an SAE can read. The final
    residual stream comes first (the default), the rest in forward order."""
    tokens = jnp.zeros((2, 2), jnp.int32)
    abstract = jax.eval_shape(lambda k: tfm.init_params(model, k), jax.random.key(0))
    cache = jax.eval_shape(lambda p: tfm.apply(p, tokens, model, cache=tfm.ALL)[1], abstract)
    names = [n for n in tfm.hook_names(model)
             if len(cache[n].shape) == 3 and cache[n].shape[:2] == (2, 2) and cache[n].shape[-1] > 1]
    last = f"blocks.{model.n_layers - 1}.hook_resid_post"
    return tuple(sorted(names, key=lambda n: n != last))
