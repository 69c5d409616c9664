"""Ablations as hook dicts: replace (part of) an activation x by a value that carries no input information.

For an activation x [batch, ...] the replacement r is

    zero       r = 0
    mean       r = mean over the reference batch of the reference activations, ref.mean(0) [...]
               (each position its own mean); ref defaults to x itself (this forward pass's batch)
    resample   r = ref[π] : the activation of *other* inputs, row i from reference sequence π(i)
               (π a random permutation when a key is given, else the identity: ref's rows in order)

applied to a selection: the whole activation, one index along an axis (a head of `hook_z`
[batch, pos, head, d_head], neurons of `mlp.hook_post` [batch, pos, d_mlp]), or a subspace:
for an orthonormal basis B [k, d] of directions in the last axis, P = BᵀB and

    project_off   x -> x - x P + r P     (the subspace's part replaced by r's; r = 0: removed)
    project_onto  x -> x P + r (I - P)   (only the subspace kept)

All are pure hook functions, so they work under jit / vmap / grad like `apply` itself.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check

Mode = Literal["zero", "mean", "resample"]
MODES = ("zero", "mean", "resample")


def replacement(x: jax.Array, mode: Mode, reference: jax.Array | None = None, key: jax.Array | None = None) -> jax.Array:
    """The ablated value r with x's shape [batch, ...] (see the module docstring)."""
    check(mode in MODES, f"ablation mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "zero":
        return jnp.zeros_like(x)
    ref = x if reference is None else jnp.asarray(reference, x.dtype)
    expected = ", ".join(map(str, x.shape[1:]))
    check(ref.shape[1:] == x.shape[1:], f"reference activations have shape {ref.shape}, expected [batch, {expected}]")
    if mode == "mean":
        return jnp.broadcast_to(ref.mean(0), x.shape)
    check(reference is not None or key is not None, "resample ablation needs reference activations or a key to permute the batch")
    check(ref.shape[0] == x.shape[0], f"resample reference has batch {ref.shape[0]}, the run has {x.shape[0]}")
    return ref if key is None else ref[jax.random.permutation(key, ref.shape[0])]


def _select(x: jax.Array, axis: int, index) -> jax.Array:
    """Boolean mask [1.., n, ..1] broadcastable to x: True at `index` (int or ints) along `axis`."""
    n = x.shape[axis]
    idx = np.atleast_1d(np.asarray(index))
    check(idx.size > 0 and idx.min() >= -n and idx.max() < n, f"index {index} is out of range for axis of size {n}")
    mask = np.zeros(n, bool)
    mask[idx] = True
    shape = [1] * x.ndim
    shape[axis] = n
    return jnp.asarray(mask.reshape(shape))


def ablate(name: str, mode: Mode = "zero", *, axis: int | None = None, index=None, reference=None, key=None) -> dict:
    """Ablate hook point `name`: all of it, or `index` (int or list) along `axis`. -> {name: fn}."""

    def fn(x):
        r = replacement(x, mode, reference, key)
        return r if axis is None else jnp.where(_select(x, axis, index), r, x)

    return {name: fn}


def ablate_head(layer: int, head: int, mode: Mode = "zero", *, reference=None, key=None) -> dict:
    """Ablate head (layer, head) at its `hook_z` [batch, pos, head, d_head]; its output z W_O goes with it.
    `reference`: a reference batch's `blocks.{layer}.attn.hook_z` (mean or resample ablation)."""
    return ablate(f"blocks.{layer}.attn.hook_z", mode, axis=2, index=head, reference=reference, key=key)


def ablate_neurons(layer: int, neurons, mode: Mode = "zero", *, reference=None, key=None) -> dict:
    """Ablate MLP neurons (int or list) of `layer` at `mlp.hook_post` [batch, pos, d_mlp]."""
    return ablate(f"blocks.{layer}.mlp.hook_post", mode, axis=-1, index=neurons, reference=reference, key=key)


def resample_ablate(name: str, key: jax.Array) -> dict:
    """Replace activation `name` of each sequence by that of another random sequence in the batch."""
    return ablate(name, "resample", key=key)


def _basis(basis) -> jax.Array:
    basis = jnp.asarray(basis)
    check(basis.ndim == 2, f"a subspace basis must be [k, d], got shape {basis.shape}")
    return basis


def project_off(name: str, basis, mode: Mode = "zero", *, reference=None, key=None) -> dict:
    """Ablate the subspace spanned by the rows of `basis` [k, d] (orthonormal) in the last axis of `name`."""
    B = _basis(basis)

    def fn(x):
        check(x.shape[-1] == B.shape[1], f"basis has dimension {B.shape[1]}, {name} has {x.shape[-1]}")
        r = replacement(x, mode, reference, key)
        return x - (x @ B.T) @ B + (r @ B.T) @ B

    return {name: fn}


def project_onto(name: str, basis, mode: Mode = "zero", *, reference=None, key=None) -> dict:
    """Keep only the subspace spanned by `basis` [k, d] in the last axis of `name`; ablate its complement."""
    B = _basis(basis)

    def fn(x):
        check(x.shape[-1] == B.shape[1], f"basis has dimension {B.shape[1]}, {name} has {x.shape[-1]}")
        r = replacement(x, mode, reference, key)
        return (x @ B.T) @ B + r - (r @ B.T) @ B

    return {name: fn}


def orthonormal_rows(vectors) -> np.ndarray:
    """An orthonormal basis [k, d] of the span of vectors [n, d] (rows with no new direction dropped)."""
    v = np.asarray(vectors, np.float64)
    u, s, vt = np.linalg.svd(v, full_matrices=False)
    return vt[s > s.max() * 1e-6].astype(np.float32)


def fourier_directions(W_E_numbers, key_freqs) -> np.ndarray:
    """The embedding's key-frequency directions for modular arithmetic, orthonormal [2 K, d_model].

    W_E_numbers [p, d_model] (the number tokens' rows): for each key frequency k the directions
    Σ_a cos(w_k a) W_E[a] and Σ_a sin(w_k a) W_E[a] that the embedding writes the waves along.
    """
    W = np.asarray(W_E_numbers, np.float64)
    p = W.shape[0]
    a = np.arange(p)
    rows = []
    for k in key_freqs:
        w = 2 * np.pi * int(k) / p
        rows += [np.cos(w * a) @ W, np.sin(w * a) @ W]
    return orthonormal_rows(np.stack(rows))


def _chain(first, second):
    def fn(x):
        y = first(x)
        x = x if y is None else y
        z = second(x)
        return x if z is None else z

    return fn


def compose(*hook_dicts: dict) -> dict:
    """Merge hook dicts; two hooks on one point run in the order given."""
    out: dict = {}
    for hooks in hook_dicts:
        for name, fn in hooks.items():
            out[name] = _chain(out[name], fn) if name in out else fn
    return out
