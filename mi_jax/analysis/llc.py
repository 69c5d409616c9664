"""The local learning coefficient (LLC) of ONE model, by SGLD localised at its params (as a measure).

Lau, Furman, Wang, Murfet, Wei 2023 ("The local learning coefficient: a singularity-aware
complexity measure"); Hoogland et al. 2024. Notation: w [param] the params raveled into one
vector, w* the checkpoint's params, L_n the mean loss over the n training examples, L_m the mean
loss on a minibatch of B examples drawn uniformly (with replacement, fresh each step), n_β the
inverse temperature, γ the localisation strength, ε the step size, ξ ~ N(0, I).

    posterior      p(w) ∝ exp(-n_β L_n(w) - γ/2 |w - w*|²)
    SGLD           w ← w - (ε/2) (n_β ∇L_m(w) + γ (w - w*)) + √ε ξ
    RMSProp-SGLD   (Li, Chen, Carlson, Carin 2016 "Preconditioned SGLD"; Hitchcock & Hoogland 2025,
                   arXiv 2507.21449, and devinterp's `rmsprop_sgld`, whose form this is: V tracks the
                   loss gradient only, so the preconditioner does not depend on γ; no bias correction;
                   the Γ(w) divergence term of pSGLD dropped, as in both, which biases it where G
                   varies with w: on the noiseless quadratic of tests/test_llc.py (d/2 = 10, √V ≈ 0.05)
                   δ = 0.1 gave 10.71 ± 0.11 and δ = 1 gave 10.09 ± 0.08, over 8 chains)
                   V ← α V + (1 - α) (∇L_m(w))²          (V_0 = 0; elementwise)
                   G = 1 / (√V + δ)
                   w ← w - (ε/2) G ⊙ (n_β ∇L_m(w) + γ (w - w*)) + √(ε G) ⊙ ξ
    draws          the chain runs n_burnin + n_draws · steps_between_draws steps from w*; L_m(w) of
                   the step's own minibatch (before its update) is recorded every
                   steps_between_draws steps after the burn-in: loss_trace [chain, draw]
    estimate       llc_c = n_β (mean_draws L_m(w) - L_n(w*)) per chain c, L_n(w*) on the WHOLE
                   training set (`hessian.dataset_loss`, chunked), then mean and std over chains
    n_β default    B / log B (devinterp's `default_nbeta`), B the SGLD minibatch size: n_β = n β reads
                   n as the minibatch size here, not the training set's size

A regular model (L_n quadratic at w*, full rank) has LLC d/2 for d params; a degenerate one less.
Every chain has its own key, `fold_in(key(seed), chain)`, the same for every checkpoint (common
random numbers: the curve over training is not jittered by the sampler's noise), so the estimate
is a pure function of (params, training data, seed). Host-side checks of the chains are in
`llc_diagnostics`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mi_jax.analysis.hessian import LossFn, dataset_loss, n_examples
from mi_jax.config import check


def default_n_beta(batch_size: int) -> float:
    """n_β = B / log B for SGLD minibatches of B examples (devinterp's `default_nbeta`)."""
    check(batch_size >= 2, f"default n_beta = B / log B needs batch_size >= 2, got {batch_size}")
    return batch_size / math.log(batch_size)


@dataclasses.dataclass(frozen=True)
class LLCConfig:
    """The sampler's settings (the symbols of the module docstring)."""

    epsilon: float = 1e-3  # ε, the step size
    gamma: float = 100.0  # γ, the localisation strength
    n_beta: float | None = None  # n_β; None: default_n_beta(batch_size)
    n_chains: int = 4
    n_draws: int = 200
    n_burnin: int = 0
    steps_between_draws: int = 1
    batch_size: int = 64  # B, the SGLD minibatch size
    sampler: Literal["sgld", "rmsprop_sgld"] = "sgld"
    rmsprop_alpha: float = 0.99  # α, the decay of V (1: V stays 0, a constant G = 1/δ)
    rmsprop_delta: float = 0.1  # δ, keeps G finite where V ≈ 0 (devinterp's default)
    seed: int = 0
    chains_per_batch: int | None = None  # chains vmapped at once (memory); None: all
    loss_chunk_size: int = 1024  # examples per chunk of L_n(w*)

    def __post_init__(self):
        check(self.epsilon > 0, f"epsilon (the SGLD step size) must be > 0, got {self.epsilon}")
        check(self.gamma >= 0, f"gamma (the localisation) must be >= 0, got {self.gamma}")
        check(self.n_beta is None or self.n_beta > 0, f"n_beta must be > 0, got {self.n_beta}")
        check(self.n_chains >= 1, f"n_chains must be >= 1, got {self.n_chains}")
        check(self.n_draws >= 1, f"n_draws must be >= 1, got {self.n_draws}")
        check(self.n_burnin >= 0, f"n_burnin must be >= 0, got {self.n_burnin}")
        check(self.steps_between_draws >= 1, f"steps_between_draws must be >= 1, got {self.steps_between_draws}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.n_beta is not None or self.batch_size >= 2,
              f"the default n_beta = B / log B needs batch_size >= 2, got {self.batch_size}; set n_beta")
        check(self.sampler in ("sgld", "rmsprop_sgld"),
              f"sampler must be 'sgld' or 'rmsprop_sgld', got {self.sampler!r}")
        check(0 <= self.rmsprop_alpha <= 1, f"rmsprop_alpha must be in [0, 1], got {self.rmsprop_alpha}")
        check(self.rmsprop_delta > 0, f"rmsprop_delta must be > 0, got {self.rmsprop_delta}")
        check(self.chains_per_batch is None or self.chains_per_batch >= 1,
              f"chains_per_batch must be >= 1, got {self.chains_per_batch}")
        check(self.loss_chunk_size >= 1, f"loss_chunk_size must be >= 1, got {self.loss_chunk_size}")

    @property
    def resolved_n_beta(self) -> float:
        return default_n_beta(self.batch_size) if self.n_beta is None else float(self.n_beta)

    @property
    def n_steps(self) -> int:
        return self.n_burnin + self.n_draws * self.steps_between_draws


class Hyper(NamedTuple):
    """The sampler's numbers as (traceable) scalars, so a grid of them can be vmapped."""

    epsilon: jax.Array
    gamma: jax.Array
    n_beta: jax.Array

    @classmethod
    def of(cls, cfg: LLCConfig) -> "Hyper":
        return cls(jnp.float32(cfg.epsilon), jnp.float32(cfg.gamma), jnp.float32(cfg.resolved_n_beta))


def _step_randomness(key, t, dim: int, batch_size: int, n: int, dtype) -> tuple[jax.Array, jax.Array]:
    """Step t's noise ξ [dim] ~ N(0, I) and minibatch indices [batch] uniform in 0..n-1, from ONE
    uniform draw of dim + batch numbers in (-1, 1): ξ = √2 erf⁻¹(u) (as `jax.random.normal` makes
    it), index = ⌊(u + 1)/2 · n⌋. One threefry call instead of four (split, randint, normal): the
    LLC program of a 3-param quadratic, 3 chains, compiled in 0.84 s instead of 2.5 s (2 busy CPU cores)."""
    lowest = jnp.nextafter(jnp.asarray(-1, dtype), jnp.asarray(1, dtype))  # erf⁻¹(-1) = -inf
    u = jax.random.uniform(jax.random.fold_in(key, t), (dim + batch_size,), dtype, lowest, 1)
    noise = jnp.sqrt(jnp.asarray(2, dtype)) * jax.lax.erf_inv(u[:dim])
    idx = jnp.minimum(((u[dim:] + 1) / 2 * n).astype(jnp.int32), n - 1)
    return noise, idx


def _chain_loss_trace(loss_fn: LossFn, train_data: Any, params: dict, hyper: Hyper, cfg: LLCConfig, key) -> jax.Array:
    """One chain from w* -> the minibatch loss L_m(w) at every step [step]."""
    w_star, unravel = ravel_pytree(params)
    dtype = w_star.dtype
    eps, gamma, n_beta = (jnp.asarray(h, dtype) for h in hyper)
    n = n_examples(train_data)
    value_and_grad = jax.value_and_grad(lambda w, batch: loss_fn(unravel(w), batch))

    def step(state, t):
        w, v = state
        noise, idx = _step_randomness(key, t, w.size, cfg.batch_size, n, dtype)
        loss, grad = value_and_grad(w, jax.tree.map(lambda x: x[idx], train_data))
        drift = n_beta * grad + gamma * (w - w_star)
        if cfg.sampler == "rmsprop_sgld":
            v = cfg.rmsprop_alpha * v + (1 - cfg.rmsprop_alpha) * grad**2
            g = 1 / (jnp.sqrt(v) + cfg.rmsprop_delta)
            w = w - eps / 2 * g * drift + jnp.sqrt(eps * g) * noise
        else:
            w = w - eps / 2 * drift + jnp.sqrt(eps) * noise
        return (w, v), loss

    _, losses = jax.lax.scan(step, (w_star, jnp.zeros_like(w_star)), jnp.arange(cfg.n_steps))
    return losses


def sample_llc(loss_fn: LossFn, train_data: Any, params: dict, cfg: LLCConfig, hyper: Hyper | None = None) -> dict:
    """The LLC of ONE model (pure; jit it or map it): {"llc_mean": [], "llc_std": [],
    "llc_per_chain": [chain], "loss_trace": [chain, draw], "init_loss": [], "n_finite_chains": []}.

    `llc_mean` and `llc_std` (ddof 1; NaN for one chain) are over the chains whose trace is
    finite, `n_finite_chains` of them; `llc_diagnostics.diagnose` marks the rest.
    """
    hyper = Hyper.of(cfg) if hyper is None else hyper
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.key(cfg.seed), c))(jnp.arange(cfg.n_chains))
    one_chain = lambda key: _chain_loss_trace(loss_fn, train_data, params, hyper, cfg, key)  # noqa: E731
    if cfg.chains_per_batch is None or cfg.chains_per_batch >= cfg.n_chains:
        losses = jax.vmap(one_chain)(keys)
    else:  # a plain map for one chain at a time (see core.analyze_params on lax.map's batch of one)
        per_batch = cfg.chains_per_batch if cfg.chains_per_batch > 1 else None
        losses = jax.lax.map(one_chain, keys, batch_size=per_batch)
    trace = losses[:, cfg.n_burnin :: cfg.steps_between_draws]  # [chain, draw]
    init_loss = dataset_loss(loss_fn, params, train_data, cfg.loss_chunk_size)
    llc = hyper.n_beta.astype(trace.dtype) * (trace.mean(1) - init_loss)  # [chain]
    finite = jnp.isfinite(trace).all(1)
    n_finite = finite.sum()
    mean = jnp.where(finite, llc, 0).sum() / n_finite
    var = jnp.where(finite, (llc - mean) ** 2, 0).sum() / (n_finite - 1)
    return {
        "llc_mean": mean, "llc_std": jnp.sqrt(var), "llc_per_chain": llc, "loss_trace": trace,
        "init_loss": init_loss, "n_finite_chains": n_finite,
    }


def checked_train_data(train_data: Any, cfg: LLCConfig) -> Any:
    n = n_examples(train_data)
    check(n >= cfg.batch_size, f"the training set has {n} examples, fewer than batch_size={cfg.batch_size}")
    return jax.tree.map(jnp.asarray, train_data)


def llc_measure(loss_fn: LossFn, train_data: Any, cfg: LLCConfig) -> Callable[[dict, Any], dict]:
    """A measure family for `analyze`: (params, data) -> `sample_llc`'s dict (the `data` argument
    is unused: the training set is bound here, leaves [example, ...])."""
    train_data = checked_train_data(train_data, cfg)
    return lambda params, _unused=None: sample_llc(loss_fn, train_data, params, cfg)


def calibrate(
    loss_fn: LossFn, train_data: Any, params: dict, cfg: LLCConfig, epsilons, gammas=None, n_betas=None,
    stacked: bool = False,
) -> dict:
    """`sample_llc` over the grid epsilons × gammas × n_betas (None: cfg's value), one compiled call
    with the settings vmapped. -> numpy {"epsilon", "gamma", "n_beta": [eps, gamma, n_beta] (the
    grid), and each of `sample_llc`'s results with [eps, gamma, n_beta] in front}. The chains use
    the same keys at every setting. `llc_diagnostics.calibration_report` reads it.
    stacked: params leaves [checkpoint, ...], mapped in the same call: results [checkpoint, eps, gamma, n_beta, ...]."""
    train_data = checked_train_data(train_data, cfg)
    axes = [np.atleast_1d(np.asarray(v, np.float64)) for v in (epsilons, (cfg.gamma,) if gammas is None else gammas,
                                                           (cfg.resolved_n_beta,) if n_betas is None else n_betas)]
    for name, values in zip(("epsilons", "gammas", "n_betas"), axes):
        check(values.size >= 1 and values.ndim == 1, f"{name} must be a non-empty list of numbers")
        lowest_ok = values >= 0 if name == "gammas" else values > 0
        check(bool(np.all(lowest_ok)), f"{name} must be {'>= 0' if name == 'gammas' else '> 0'}, got {values.tolist()}")
    grid = np.meshgrid(*axes, indexing="ij")
    flat = Hyper(*(jnp.asarray(g.ravel(), jnp.float32) for g in grid))
    run = jax.vmap(lambda h, p: sample_llc(loss_fn, train_data, p, cfg, h), in_axes=(0, None))
    if stacked:  # the settings vmapped inside, the checkpoints mapped outside (memory: one at a time)
        run_one = run
        run = lambda h, ps: jax.lax.map(lambda p: run_one(h, p), ps)  # noqa: E731
    lead = 1 if stacked else 0
    out = jax.tree.map(lambda x: np.asarray(x).reshape(*x.shape[:lead], *grid[0].shape, *x.shape[lead + 1:]),
                       jax.jit(run)(flat, params))
    return {"epsilon": grid[0], "gamma": grid[1], "n_beta": grid[2], **out}
