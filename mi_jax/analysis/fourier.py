"""The real Fourier basis of Z_p and the transforms the grokking analysis reads weights with.

For frequency k (w_k = 2πk/p) the basis vectors over x ∈ Z_p are

    const:  1/√p
    cos k:  √(2/p) cos(w_k x),   sin k:  √(2/p) sin(w_k x),     k = 1 .. (p-1)//2
    cos p/2: (-1)^x / √p                                          (even p only)

stacked as the rows of `basis(p)` [p, p] (component, x): an orthonormal matrix, so
`basis(p) @ v` gives the Fourier components of a function v on Z_p and the squared
components sum to |v|². Frequencies are numbered 1 .. n_freqs(p) = p//2; `freq_of_component`
says which frequency each row belongs to (0 for the constant).

Axis names: x (a residue), comp (a Fourier component), freq (1 .. p//2, stored at index k-1).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def n_freqs(p: int) -> int:
    """How many non-constant frequencies Z_p has: p // 2."""
    return p // 2


@functools.lru_cache(maxsize=16)
def _basis_np(p: int) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    x = np.arange(p)
    rows, names, freqs = [np.full(p, 1 / np.sqrt(p))], ["const"], [0]
    for k in range(1, n_freqs(p) + 1):
        w = 2 * np.pi * k / p
        if 2 * k == p:  # the Nyquist frequency of an even p has a cosine only
            rows.append(np.cos(w * x) / np.sqrt(p))
            names.append(f"cos {k}")
            freqs.append(k)
            continue
        rows += [np.sqrt(2 / p) * np.cos(w * x), np.sqrt(2 / p) * np.sin(w * x)]
        names += [f"cos {k}", f"sin {k}"]
        freqs += [k, k]
    return np.stack(rows), tuple(names), np.asarray(freqs)


def basis(p: int) -> np.ndarray:
    """The orthonormal real Fourier basis of Z_p: [comp, x] = [p, p] float64."""
    return _basis_np(p)[0].copy()


def component_names(p: int) -> tuple[str, ...]:
    """Names of the rows of `basis(p)`: "const", "cos 1", "sin 1", ..."""
    return _basis_np(p)[1]


def freq_of_component(p: int) -> np.ndarray:
    """[comp] int: the frequency of each row of `basis(p)` (0 for the constant)."""
    return _basis_np(p)[2].copy()


def freq_indicator(p: int) -> np.ndarray:
    """[comp, freq] 0/1 matrix: row c has a 1 in column k-1 when component c has frequency k."""
    f = freq_of_component(p)
    return (f[:, None] == np.arange(1, n_freqs(p) + 1)[None, :]).astype(np.float64)


def transform_1d(M: jnp.ndarray, F: jnp.ndarray) -> jnp.ndarray:
    """Fourier transform along the first axis: M [x, ...] -> [comp, ...] (= F @ M), F = basis(p)."""
    return jnp.tensordot(F, M, axes=1)


def transform_2d(A: jnp.ndarray, F: jnp.ndarray) -> jnp.ndarray:
    """Fourier transform along the first two axes: A [a, b, ...] -> [comp_a, comp_b, ...] (F A F^T)."""
    return jnp.einsum("ia,jb,ab...->ij...", F, F, A)


def freq_norms(M: jnp.ndarray, F: jnp.ndarray, indicator: jnp.ndarray) -> jnp.ndarray:
    """Norm of each frequency's part of M [x, d]: sqrt(|cos_k M|² + |sin_k M|²) -> [freq].

    The constant component is left out. indicator = freq_indicator(p).
    """
    sq = (transform_1d(M, F) ** 2).sum(axis=tuple(range(1, M.ndim)))  # [comp]
    return jnp.sqrt(sq @ indicator)


def embedding_matrix(params: dict, p: int) -> jnp.ndarray:
    """W_E restricted to the p number tokens: [x, d_model] (the `=` token is left out)."""
    return params["W_E"][:p]


def neuron_logit_map(params: dict, p: int) -> jnp.ndarray:
    """W_L = (W_out W_U)^T of the last MLP over the p outputs: [x = output residue c, d_mlp].

    In Nanda et al.'s column-vector notation this is W_L = W_U W_out: how each neuron's
    activation moves each output logit (the direct path through the unembedding).
    """
    W_out = params["blocks"][max(params["blocks"])]["mlp"]["W_out"]  # [d_mlp, d_model]
    return (W_out @ params["W_U"][:, :p]).T
