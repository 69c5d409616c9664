"""Coordinates of ONE model's weights in a subspace, and how far each update moved them there.

    subspace coordinates     c = B x for an orthonormal basis B [k, n] (rows) and x = select(params)
                             [n, ...] (e.g. W_E [token, d_model] and B the key frequencies' Fourier
                             rows): c [k, ...]. As B's rows are orthonormal, |c_{t+1} - c_t| is the
                             norm of the update x_{t+1} - x_t projected on span(B) (`update_norms`,
                             on the host, over the series the trajectory layer returns).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.analysis import fourier
from mi_jax.config import check


def subspace_coordinates_measure(select: Callable[[dict], jax.Array], basis: np.ndarray) -> Callable:
    """A measure: params -> B @ select(params) [k, ...], B [k, n] with orthonormal rows acting on
    the first axis of select(params) [n, ...] (e.g. `fourier_rows` on W_E [token, d_model])."""
    B = np.asarray(basis, np.float32)
    check(B.ndim == 2, f"basis must be [k, n], got shape {B.shape}")
    check(np.allclose(B @ B.T, np.eye(len(B)), atol=1e-4), "basis rows must be orthonormal (B @ B.T = I)")

    def measure(params, _unused=None):
        x = select(params)
        return jnp.tensordot(jnp.asarray(B), x, axes=(1, 0))

    return measure


def fourier_rows(p: int, freqs) -> np.ndarray:
    """[2|freqs| (1 for an even p's Nyquist), p]: the cos and sin rows of `fourier.basis(p)` at `freqs`."""
    keep = np.isin(fourier.freq_of_component(p), np.asarray(list(freqs)))
    return fourier.basis(p)[keep]


def update_norms(coordinates: np.ndarray) -> np.ndarray:
    """Per-interval update norms |c_{t+1} - c_t| from a series [time, member, ...] -> [time - 1, member]."""
    c = np.asarray(coordinates, np.float64)
    check(c.shape[0] >= 2, f"need at least 2 checkpoints for an update, got {c.shape[0]}")
    diff = np.diff(c, axis=0)
    return np.sqrt((diff**2).reshape(*diff.shape[:2], -1).sum(-1))
