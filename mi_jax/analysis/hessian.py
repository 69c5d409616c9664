"""The curvature of the loss at ONE model: Hessian spectrum and trace, and the mean loss on a data set.

Every measure is a pure function `(params, data) -> value`, so `mi_jax.analysis.core.analyze`
runs it over every checkpoint and seed in one call. Notation: w the params raveled into one
vector [param] (`jax.flatten_util.ravel_pytree`), L(w) the mean loss on a fixed data set
(`dataset_loss`: the whole set, in chunks), H = ∇²L(w) [param, param], never formed:

    Hessian-vector product   Hv = d/dt ∇L(w + t v) at t = 0  (`jax.jvp` of `jax.grad`)
    top-k eigenvalues        Lanczos (Lanczos 1950; Golub & Van Loan §10.1) from a fixed unit start
                             q_1: β_j q_{j+1} = H q_j - α_j q_j - β_{j-1} q_{j-1}, α_j = q_jᵀ H q_j,
                             every q_{j+1} re-orthogonalised (twice) against all earlier q; the
                             eigenvalues of the tridiagonal T = tridiag(β, α, β) [m, m] (the Ritz
                             values) approximate H's extreme ones. The k largest, descending.
    Hessian trace            Hutchinson (1990): tr H = E[zᵀ H z] for Rademacher z (±1 entries);
                             the mean over `n_probes` probes from a fixed key
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mi_jax.config import check

LossFn = Callable[[dict, Any], jax.Array]  # (params, batch) -> mean loss over the batch


def n_examples(data: Any) -> int:
    """The length of the leading (example) axis every leaf of `data` shares."""
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(data)}
    check(len(sizes) == 1 and None not in sizes,
          f"data leaves must share one leading example axis, got sizes {sorted(map(str, sizes))}")
    return sizes.pop()


def dataset_loss(loss_fn: LossFn, params: dict, data: Any, chunk_size: int = 1024) -> jax.Array:
    """Mean of `loss_fn` over every example of `data` (leaves [example, ...]), chunk by chunk.

    Whole chunks go through one `lax.map`, the remainder through one more call; each chunk's
    mean is weighted by its size, so the result is the mean over the whole set (no padding).
    """
    n = n_examples(data)
    chunk = min(chunk_size, n)
    n_whole = n // chunk
    head = jax.tree.map(lambda x: x[: n_whole * chunk].reshape(n_whole, chunk, *x.shape[1:]), data)
    total = jax.lax.map(lambda batch: loss_fn(params, batch), head).sum() * chunk
    if n_whole * chunk < n:
        rest = jax.tree.map(lambda x: x[n_whole * chunk :], data)
        total = total + loss_fn(params, rest) * (n - n_whole * chunk)
    return total / n


def raveled_loss(loss_fn: LossFn, params: dict, data: Any, chunk_size: int = 1024) -> tuple[Callable, jax.Array]:
    """(w -> L(w) on the whole of `data`, w* [param]): the loss as a function of the raveled params."""
    w_star, unravel = ravel_pytree(params)
    return (lambda w: dataset_loss(loss_fn, unravel(w), data, chunk_size)), w_star


def hvp(loss_of_w: Callable[[jax.Array], jax.Array], w: jax.Array, v: jax.Array) -> jax.Array:
    """H(w) v [param] without forming H: forward-mode derivative of the gradient."""
    return jax.jvp(jax.grad(loss_of_w), (w,), (v,))[1]


def lanczos_top_eigenvalues(
    matvec: Callable, dim: int, k: int, n_steps: int, key: jax.Array, dtype=jnp.float32
) -> jax.Array:
    """The k largest Ritz values [k], descending, of a symmetric operator on R^dim after n_steps.

    A breakdown (β_j ≈ 0: the Krylov space is invariant, e.g. H has few distinct eigenvalues)
    restarts from a fresh random vector orthogonal to the basis, with β_j = 0 in T.
    """
    m = min(n_steps, dim)  # at most dim orthonormal vectors exist
    check(1 <= k <= m, f"k={k} must be in 1..{m} (the Lanczos steps, at most the {dim} params)")
    start_key, restart_key = jax.random.split(key)
    q0 = jax.random.normal(start_key, (dim,), dtype)
    Q = jnp.zeros((m + 1, dim), dtype).at[0].set(q0 / jnp.linalg.norm(q0))  # [step, param] the basis, one spare row

    def orthogonalise(r, Q):
        for _ in range(2):  # twice: one pass loses orthogonality in float32 (Parlett's "twice is enough")
            r = r - Q.T @ (Q @ r)
        return r

    def step(j, carry):
        Q, alpha, beta = carry
        q = Q[j]
        r = matvec(q)
        a = q @ r
        r = orthogonalise(r, Q)  # rows past j are zero, so this is against q_0 .. q_j only
        b = jnp.linalg.norm(r)
        fresh = orthogonalise(jax.random.normal(jax.random.fold_in(restart_key, j), (dim,), dtype), Q)
        broke = b <= 1e-6 * jnp.maximum(jnp.abs(a), 1.0)
        q_next = jnp.where(broke, fresh / jnp.linalg.norm(fresh), r / jnp.where(broke, 1.0, b))
        return Q.at[j + 1].set(q_next), alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b))

    _, alpha, beta = jax.lax.fori_loop(0, m, step, (Q, jnp.zeros(m, dtype), jnp.zeros(m, dtype)))
    T = jnp.diag(alpha) + jnp.diag(beta[: m - 1], 1) + jnp.diag(beta[: m - 1], -1)
    return jnp.linalg.eigvalsh(T)[::-1][:k]


def hutchinson_trace(
    matvec: Callable, dim: int, n_probes: int, key: jax.Array, dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """(estimate of tr A, its standard error; NaN for one probe) from n_probes Rademacher probes zᵀ A z."""
    z = jax.random.rademacher(key, (n_probes, dim), dtype=dtype)  # [probe, param]
    quad = jax.lax.map(lambda v: v @ matvec(v), z)  # one probe at a time: bounded memory
    se = quad.std(ddof=1) / jnp.sqrt(n_probes) if n_probes > 1 else jnp.full((), jnp.nan, dtype)
    return quad.mean(), se


def hessian_top_eigenvalues_measure(
    loss_fn: LossFn, data: Any, k: int = 5, n_steps: int = 30, seed: int = 0, chunk_size: int = 1024
) -> Callable:
    """A measure: params -> the k largest Hessian eigenvalues of the mean loss on `data` [k]."""
    check(k >= 1, f"k must be >= 1, got {k}")
    check(n_steps >= k, f"n_steps={n_steps} must be >= k={k}")

    def measure(params, _unused=None):
        loss_of_w, w = raveled_loss(loss_fn, params, data, chunk_size)
        matvec = lambda v: hvp(loss_of_w, w, v)  # noqa: E731
        return lanczos_top_eigenvalues(matvec, w.size, k, n_steps, jax.random.key(seed), w.dtype)

    return measure


def hessian_trace_measure(
    loss_fn: LossFn, data: Any, n_probes: int = 32, seed: int = 0, chunk_size: int = 1024
) -> Callable:
    """A measure family: params -> {"hessian_trace": [], "hessian_trace_se": []} (Hutchinson)."""
    check(n_probes >= 1, f"n_probes must be >= 1, got {n_probes}")

    def measure(params, _unused=None):
        loss_of_w, w = raveled_loss(loss_fn, params, data, chunk_size)
        trace, se = hutchinson_trace(lambda v: hvp(loss_of_w, w, v), w.size, n_probes, jax.random.key(seed), w.dtype)
        return {"hessian_trace": trace, "hessian_trace_se": se}

    return measure
