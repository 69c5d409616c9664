"""Superposition measures (Elhage et al. 2022): pure functions of feature matrices, vmapped over instances.

Per-matrix functions take W [hidden, feat] (column i = feature i's direction W_i); `measures(task)`
wraps them into `analyze` measures of a TMS task's params (leading [instance] axis), so one
jitted call covers every instance of every checkpoint (and seed).

    norm_i          ||W_i||
    interference_i  sum_{j != i} (W_i_hat . W_j)^2
    D_i             ||W_i||^2 / sum_j (W_i_hat . W_j)^2   (1 dedicated, 1/2 antipodal pair, 2/5 pentagon)
    dims/feature    m / ||W||_F^2
    polysemanticity of hidden dim d: the participation ratio (sum_i W_di^2)^2 / sum_i W_di^4,
                    the effective number of features it carries (1 = monosemantic); meaningful
                    where the hidden basis is privileged (the abs model's ReLU neurons)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mi_jax.models import toy

EPS = 1e-12


def feature_norms(W: jax.Array) -> jax.Array:
    """[feat] ||W_i||."""
    return jnp.sqrt((W * W).sum(0))


def _overlaps_sq(W: jax.Array) -> jax.Array:
    """[feat, feat] (W_i_hat . W_j)^2 (row i = feature i's unit direction); rows of zero features are 0."""
    unit = W / jnp.maximum(feature_norms(W), EPS)
    return (unit.T @ W) ** 2


def interference(W: jax.Array) -> jax.Array:
    """[feat] sum_{j != i} (W_i_hat . W_j)^2."""
    sq = _overlaps_sq(W)
    return sq.sum(1) - jnp.diagonal(sq)


def dimensionality(W: jax.Array) -> jax.Array:
    """[feat] D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 (0 for a feature with W_i = 0)."""
    norm_sq = (W * W).sum(0)
    return jnp.where(norm_sq > EPS, norm_sq / jnp.maximum(_overlaps_sq(W).sum(1), EPS), 0.0)


def dims_per_feature(W: jax.Array) -> jax.Array:
    """scalar m / ||W||_F^2 (how many hidden dimensions each represented feature gets)."""
    return W.shape[0] / jnp.maximum((W * W).sum(), EPS)


def polysemanticity(W: jax.Array) -> jax.Array:
    """[hidden] participation ratio of each hidden dimension's weights over features."""
    sq = W * W
    return sq.sum(1) ** 2 / jnp.maximum((sq * sq).sum(1), EPS)


def gram(W: jax.Array) -> jax.Array:
    """[feat, feat] W^T W."""
    return W.T @ W


def classify_two_feature(W: jax.Array, represented: float = 0.5) -> jax.Array:
    """Phase of the LAST feature of an n=2 (or any n) model: 0 not represented (||W_n|| < represented),
    1 dedicated dimension (D_n > 3/4), 2 superposed (represented, sharing its dimension)."""
    norm = feature_norms(W)[-1]
    dim = dimensionality(W)[-1]
    return jnp.where(norm < represented, 0, jnp.where(dim > 0.75, 1, 2)).astype(jnp.int32)


def measures(task, with_loss: bool = True) -> dict:
    """`analyze` measures of a TMS task's params (leaves [instance, ...]) -> {name: [instance, ...]}.

    With `with_loss`, the per-instance loss on the task's evaluation batch (passed as `data`)."""
    per_instance = {
        "feature_norm": feature_norms,
        "interference": interference,
        "dimensionality": dimensionality,
        "dims_per_feature": dims_per_feature,
        "polysemanticity": polysemanticity,
    }
    out = {name: (lambda fn: lambda params, data: jax.vmap(fn)(toy.features(params)))(fn)
           for name, fn in per_instance.items()}
    if with_loss:
        out["loss"] = lambda params, x: task.instance_losses(params, x)
    return out
