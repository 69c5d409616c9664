"""Toy models of superposition (Elhage et al. 2022), one instance each; callers vmap over instances.

Axes: `feat` (n_features, the sparse input features), `hidden` (n_hidden = m < n), `batch`.

ReLU-output model:  h = W x,  x' = ReLU(W^T h + b_final)          params {"W": [hidden, feat], "b_final": [feat]}
Linear model:       x' = W^T W x + b_final                            (same params)
Absolute value:     x' = ReLU(W_out ReLU(W_in x + b_in) + b_final)   params {"W_in": [hidden, feat],
                    (computes |x| through a privileged hidden layer)  "b_in": [hidden], "W_out": [feat, hidden],
                                                                     "b_final": [feat]}

Init: weights Xavier-normal (std sqrt(2 / (fan_in + fan_out))), biases zero, as the ARENA notebook
does. `features(params)` gives the matrix whose columns are the feature directions (W, or W_in for
the abs model), which is what the superposition measures read.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

ModelKind = Literal["relu", "linear", "abs"]


def _xavier(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    std = (2.0 / (shape[0] + shape[1])) ** 0.5
    return std * jax.random.normal(key, shape, jnp.float32)


def init_params(key: jax.Array, n_features: int, n_hidden: int, model: ModelKind = "relu") -> dict:
    """Params of ONE toy model (no instance axis)."""
    if model == "abs":
        k_in, k_out = jax.random.split(key)
        return {
            "W_in": _xavier(k_in, (n_hidden, n_features)),
            "b_in": jnp.zeros((n_hidden,), jnp.float32),
            "W_out": _xavier(k_out, (n_features, n_hidden)),
            "b_final": jnp.zeros((n_features,), jnp.float32),
        }
    return {"W": _xavier(key, (n_hidden, n_features)), "b_final": jnp.zeros((n_features,), jnp.float32)}


def _matmul_small(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [batch, k] @ w [k, n]. For tiny k * n, unrolled column sums: elementwise ops that XLA fuses
    with the rest of the step (on CPU faster than a dot per instance, whose call costs more
    than its flops)."""
    k, n = w.shape
    if k * n > 64:
        return x @ w
    cols = [sum(x[:, j] * w[j, i] for j in range(k)) for i in range(n)]
    return jnp.stack(cols, -1)


def hidden(params: dict, x: jax.Array) -> jax.Array:
    """x [batch, feat] -> the hidden activations [batch, hidden]."""
    if "W_in" in params:
        return jax.nn.relu(_matmul_small(x, params["W_in"].T) + params["b_in"])
    return _matmul_small(x, params["W"].T)


def apply(params: dict, x: jax.Array, model: ModelKind = "relu") -> jax.Array:
    """x [batch, feat] -> reconstruction (or |x| for the abs model) [batch, feat]."""
    return output(params, hidden(params, x), model)


def output(params: dict, h: jax.Array, model: ModelKind = "relu") -> jax.Array:
    """The hidden activations [batch, hidden] -> the model's output [batch, feat]."""
    if model == "abs":
        return jax.nn.relu(_matmul_small(h, params["W_out"].T) + params["b_final"])
    out = _matmul_small(h, params["W"]) + params["b_final"]
    return jax.nn.relu(out) if model == "relu" else out


def features(params: dict) -> jax.Array:
    """The feature directions [hidden, feat]: column i is feature i's embedding W_i."""
    return params["W_in"] if "W_in" in params else params["W"]


def target(x: jax.Array, model: ModelKind = "relu") -> jax.Array:
    """What the model should output: x itself, or |x| for the abs model."""
    return jnp.abs(x) if model == "abs" else x


def weighted_loss(params: dict, x: jax.Array, importance: jax.Array, model: ModelKind = "relu",
                  out: jax.Array | None = None) -> jax.Array:
    """mean over batch of sum_i importance_i (target_i - x'_i)^2; x [batch, feat], importance [feat];
    `out`: the model's output x' when already computed (from edited hidden activations, say)."""
    err = target(x, model) - (apply(params, x, model) if out is None else out)
    return (importance * err * err).sum(-1).mean()


# ---- one-hidden-layer ReLU MLP (the boolean AND-in-superposition toy) ------------------------

def init_mlp(key: jax.Array, n_in: int, n_hidden: int, n_out: int) -> dict:
    """{"W_in": [hidden, in], "b_in": [hidden], "W_out": [out, hidden], "b_out": [out]} (Xavier, zero bias)."""
    k_in, k_out = jax.random.split(key)
    return {
        "W_in": _xavier(k_in, (n_hidden, n_in)),
        "b_in": jnp.zeros((n_hidden,), jnp.float32),
        "W_out": _xavier(k_out, (n_out, n_hidden)),
        "b_out": jnp.zeros((n_out,), jnp.float32),
    }


def apply_mlp(params: dict, x: jax.Array, hooks: dict | None = None) -> jax.Array:
    """x [batch, in] -> logits [batch, out] = W_out ReLU(W_in x + b_in) + b_out.
    hooks: {"hidden_pre" or "hidden": fn([batch, hidden]) -> [batch, hidden]}, applied to the neurons'
    pre-activations W_in x + b_in, or to their ReLU."""
    hooks = hooks or {}
    keep = lambda a: a  # noqa: E731
    pre = hooks.get("hidden_pre", keep)(x @ params["W_in"].T + params["b_in"])
    h = hooks.get("hidden", keep)(jax.nn.relu(pre))
    return h @ params["W_out"].T + params["b_out"]
