"""Linear probes as trajectory measures: one forward pass caches an activation, and a probe is fitted
to it and scored on held-out samples for each checkpoint (inside the compiled call, see `probes`).

Samples are (sequence, position) pairs, sequence-major: the activation at hook point `hook`,
act[b, positions[j]] [d], is sample b * len(positions) + j.

    grokking (modular addition, tokens a, b, =):  the residual stream at `=` (after the last layer by
        default) probed for cos(w_k x), sin(w_k x), w_k = 2πk/p, of x = a, b and a + b, for each key
        frequency k; held-out R² [key_freq, 2] (cos, sin)
    induction:  the layer-0 attention output (`blocks.0.hook_attn_out`) at positions q >= 1 probed
        for the previous token's identity t[q - 1] (multinomial over the vocabulary); held-out accuracy
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.interventions import probes
from mi_jax.interventions.metrics import position_indices
from mi_jax.models.names import check_hook_name
from mi_jax.models import transformer as tfm


def linear_probe_measure(
    cfg: tfm.TransformerConfig, tokens, targets: dict, *, hook: str, positions=-1, kind: str = "ridge",
    n_classes: int | None = None, ridge: float = 1e-3, l2: float = 1e-3, steps: int = 50, test_frac: float = 0.5, seed: int = 0,
    hooks: dict | None = None,
):
    """Probes of hook point `hook` at `positions` of tokens [batch, pos], one per entry of `targets`.
    hooks: interventions in place during the forward pass (a run's `train.interventions`, say).

    targets {name: [sample] or [sample, t]} (ridge) or {name: labels [sample] in 0..n_classes-1} (logistic).
    -> fn(params, data) -> {"{name}_r2": [t] (or []) } or {"{name}_accuracy": []}.
    """
    check(kind in ("ridge", "logistic"), f"probe kind must be ridge or logistic, got {kind!r}")
    check(kind == "ridge" or n_classes is not None, "a logistic probe needs n_classes")
    check_hook_name(cfg, hook)
    tokens = jnp.asarray(tokens, jnp.int32)
    check(tokens.ndim == 2, f"probe tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    pos = position_indices(positions, tokens.shape[1])
    n_samples = tokens.shape[0] * len(pos)
    for name, target in targets.items():
        probes.check_targets(np.zeros((n_samples, 0)), target, f"probe target {name!r}")
    fit, test = probes.split(n_samples, test_frac, seed)
    targets = {k: jnp.asarray(v, jnp.int32 if kind == "logistic" else jnp.float32) for k, v in targets.items()}

    def measure(params, data=None):
        act = tfm.apply(params, tokens, cfg, cache=[hook], hooks=hooks)[1][hook][:, pos]  # [batch, n_pos, d]
        X = act.reshape(n_samples, -1).astype(jnp.float32)
        if kind == "ridge":  # every target's columns in one solve: the fit is column by column anyway
            Y = jnp.concatenate([y.reshape(n_samples, -1) for y in targets.values()], 1)
            r2 = probes.ridge_r2(X[fit], Y[fit], X[test], Y[test], ridge)
            ends = np.cumsum([0] + [int(np.prod(y.shape[1:])) for y in targets.values()])
            return {f"{k}_r2": r2[a:b].reshape(y.shape[1:]) for (k, y), a, b in zip(targets.items(), ends[:-1], ends[1:])}
        return {
            f"{k}_accuracy": probes.logistic_accuracy(X[fit], y[fit], X[test], y[test], n_classes, l2, steps)
            for k, y in targets.items()
        }

    return measure


def fourier_targets(x: np.ndarray, p: int, key_freqs) -> np.ndarray:
    """[sample, 2 K]: cos(w_k x), sin(w_k x) for each key frequency k, interleaved (cos k1, sin k1, cos k2, ...)."""
    w = 2 * np.pi * np.asarray(key_freqs, np.float64) / p
    return np.stack([np.cos(np.outer(x, w)), np.sin(np.outer(x, w))], -1).reshape(len(x), -1).astype(np.float32)


def grokking_probe_measure(
    mcfg, key_freqs, *, hook: str | None = None, position: int = -1, of=("a", "b", "sum"), ridge: float = 1e-3,
    test_frac: float = 0.5, seed: int = 0,
):
    """Ridge probes of the residual stream at `=` (`hook` at `position`: by default the last layer's
    `hook_resid_post` at -1) for the key frequencies' waves of a, b and a + b (mod p) over all p² inputs.

    mcfg: a `GrokkingConfig`. -> fn(params, data) -> {"probe_{x}_r2": [key_freq, 2]} for x in `of`.
    """
    from mi_jax.tasks.grokking import GrokkingData

    cfg, p = mcfg.transformer, mcfg.p
    key_freqs = np.atleast_1d(np.asarray(key_freqs, int))
    in_range = key_freqs.size > 0 and key_freqs.min() >= 1 and key_freqs.max() <= p // 2
    check(in_range, f"key frequencies must be in 1..{p // 2}, got {key_freqs.tolist()}")
    check(set(of) <= {"a", "b", "sum"}, f"probe targets must be among a, b, sum, got {list(of)}")
    tokens = GrokkingData.from_config(mcfg).tokens
    a, b = tokens[:, 0].astype(np.int64), tokens[:, 1].astype(np.int64)
    value = {"a": a, "b": b, "sum": (a + b) % p}
    hook = hook or f"blocks.{cfg.n_layers - 1}.hook_resid_post"
    inner = linear_probe_measure(
        cfg, tokens, {f"probe_{x}": fourier_targets(value[x], p, key_freqs) for x in of},
        hook=hook, positions=position, ridge=ridge, test_frac=test_frac, seed=seed,
    )
    return lambda params, data=None: {k: v.reshape(-1, 2) for k, v in inner(params).items()}


def induction_probe_measure(
    cfg: tfm.TransformerConfig, tokens, *, hook: str = "blocks.0.hook_attn_out", l2: float = 1e-3, steps: int = 50,
    test_frac: float = 0.5, seed: int = 0, hooks: dict | None = None,
):
    """Logistic probe of `hook` at positions q >= 1 for the previous token t[q - 1]; tokens [batch, pos];
    `hooks` in place during the forward pass. -> fn(params, data) -> {"probe_prev_token_accuracy": []}."""
    tokens = np.asarray(tokens)
    previous = tokens[:, :-1].reshape(-1)
    return linear_probe_measure(
        cfg, tokens, {"probe_prev_token": previous}, hook=hook, positions=np.arange(1, tokens.shape[1]),
        kind="logistic", n_classes=cfg.d_vocab, l2=l2, steps=steps, test_frac=test_frac, seed=seed, hooks=hooks,
    )
