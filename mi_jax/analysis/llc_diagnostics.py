"""Host-side checks of LLC chains (numpy, after the compiled call): are the loss traces usable?

Input: `llc.sample_llc`'s results with any leading axes (`analyze` gives [time, member, ...],
`llc.calibrate` gives [eps, gamma, n_beta, ...]); traces X [..., chain, draw], m chains of N draws.

    split R-hat     each chain cut in two halves (2m chains of N' = N//2 draws): with W the mean of
                    the halves' variances and B/N' the variance of their means,
                    R = sqrt(((N'-1)/N' W + B/N') / W)  (Gelman et al., BDA3 §11.4; ≈ 1 when mixed)
    ESS             m N / τ, τ = -1 + 2 Σ_k (ρ_2k + ρ_2k+1) summed while the pair sums stay positive
                    (Geyer's initial positive sequence), ρ_t = 1 - (W - mean_c γ_c(t)) / var⁺ the
                    multi-chain autocorrelation from each chain's autocovariance γ_c (Vehtari et al. 2021)
    status          per chain, the first that applies:
                    diverged       a draw is NaN or inf
                    exploding      n_β (mean of the last half of the draws - L_n(w*)) > explode_factor · d/2:
                                   the chain's estimate is far above the largest LLC any d-param model
                                   has (λ ≤ d/2; a regular model's chains scatter around d/2 itself, so
                                   the factor, 2 by default, leaves room for that), so it has left w*'s basin
                    not levelled   over the last half of the draws the least-squares line changes by
                                   more than `level_frac` of the rise (mean of the last half - L_n(w*))
                                   and by more than `z` standard errors (the slope's iid error inflated
                                   by √τ of the residuals): the trace still trends at the end
                    ok
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

STATUS = ("ok", "diverged", "exploding", "not levelled")
OK, DIVERGED, EXPLODING, NOT_LEVELLED = range(4)


def split_r_hat(traces: np.ndarray) -> np.ndarray:
    """Split R-hat of traces [..., chain, draw] -> [...] (NaN where a trace is not finite)."""
    x = np.asarray(traces, np.float64)
    half = x.shape[-1] // 2
    halves = np.concatenate([x[..., :half], x[..., half : 2 * half]], axis=-2)  # [..., 2 chain, half]
    within = halves.var(-1, ddof=1).mean(-1)
    between_over_n = halves.mean(-1).var(-1, ddof=1)
    var_plus = (half - 1) / half * within + between_over_n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(var_plus / within)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each trace along the last axis, by FFT: [..., draw] -> [..., lag]."""
    n = x.shape[-1]
    centred = x - x.mean(-1, keepdims=True)
    f = np.fft.rfft(centred, n=2 * n, axis=-1)
    return np.fft.irfft(f * np.conj(f), axis=-1)[..., :n] / n


def _tau(rho: np.ndarray) -> float:
    """Integrated autocorrelation time from autocorrelations rho [lag] (Geyer's initial positive sequence)."""
    pairs = rho[: 2 * (len(rho) // 2)].reshape(-1, 2).sum(1)
    positive = np.cumprod(pairs > 0).astype(bool)
    # floored as Stan does (ESS <= m N log10 N): anticorrelated traces can sum to τ < 1
    return max(-1 + 2 * pairs[positive].sum(), 1 / np.log10(max(len(rho), 10)))


def effective_sample_size(traces: np.ndarray) -> np.ndarray:
    """Multi-chain ESS of traces [..., chain, draw] -> [...] (NaN where a trace is not finite)."""
    x = np.asarray(traces, np.float64)
    m, n = x.shape[-2:]
    out = np.full(x.shape[:-2], np.nan)
    for idx in np.ndindex(*x.shape[:-2]):
        chains = x[idx]
        if not np.isfinite(chains).all() or n < 4:
            continue
        acov = _autocovariance(chains)  # [chain, lag]
        within = acov[:, 0].mean() * n / (n - 1)
        var_plus = within * (n - 1) / n + (chains.mean(1).var(ddof=1) if m > 1 else 0.0)
        if var_plus <= 0:
            out[idx] = m * n  # a constant trace: every draw is the same number
            continue
        rho = 1 - (within - acov.mean(0)) / var_plus
        out[idx] = m * n / _tau(rho)
    return out


def chain_status(loss_trace, init_loss, n_beta, n_params: int, level_frac: float = 0.2, z: float = 3.0,
                 explode_factor: float = 2.0) -> np.ndarray:
    """Status code per chain (see STATUS): loss_trace [..., chain, draw], init_loss [...], n_beta
    broadcastable to [...] -> [..., chain] int."""
    x = np.asarray(loss_trace, np.float64)
    n = x.shape[-1]
    start = np.asarray(init_loss, np.float64)[..., None]
    nb = np.asarray(n_beta, np.float64)[..., None]
    finite = np.isfinite(x).all(-1)
    safe = np.where(np.isfinite(x), x, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        last = safe[..., n // 2 :]
        exploding = nb * (last.mean(-1) - start) > explode_factor * n_params / 2
        t = np.arange(last.shape[-1]) - (last.shape[-1] - 1) / 2
        sxx = max((t**2).sum(), 1e-12)
        slope = (last * t).sum(-1) / sxx
        residual = last - last.mean(-1, keepdims=True) - slope[..., None] * t
        dof = max(last.shape[-1] - 2, 1)
        tau = np.ones(slope.shape)
        for idx in np.ndindex(*slope.shape):
            acov = _autocovariance(residual[idx])
            tau[idx] = _tau(acov / acov[0]) if acov[0] > 0 else 1.0
        slope_se = np.sqrt((residual**2).sum(-1) / dof / sxx * np.maximum(tau, 1.0))
        drift = slope * last.shape[-1]
        rise = last.mean(-1) - start
        trending = (np.abs(drift) > level_frac * np.abs(rise)) & (np.abs(slope) > z * slope_se)
    status = np.full(x.shape[:-1], OK)
    status[trending & (n >= 8)] = NOT_LEVELLED
    status[exploding] = EXPLODING
    status[~finite] = DIVERGED
    return status


@dataclasses.dataclass(frozen=True)
class LLCDiagnostics:
    """status [..., chain] (codes into STATUS); r_hat, ess [...]; llc_mean, llc_std [...] over the ok
    chains only (NaN where fewer than one / two are ok, and then `usable` is False); usable [...]:
    every chain ok; messages: one line per bad chain."""

    status: np.ndarray
    r_hat: np.ndarray
    ess: np.ndarray
    llc_mean: np.ndarray
    llc_std: np.ndarray
    usable: np.ndarray
    messages: tuple[str, ...]


def _place(idx: tuple, steps, axis_names: tuple[str, ...]) -> str:
    parts = []
    for name, i in zip(axis_names, idx):
        named_step = name == "checkpoint" and steps is not None
        parts.append(f"step {int(steps[i])} (checkpoint {i})" if named_step else f"{name} {i}")
    return ", ".join(parts)


def diagnose(results: dict, n_beta, n_params: int, steps=None, axis_names: tuple[str, ...] | None = None,
             level_frac: float = 0.2, z: float = 3.0, explode_factor: float = 2.0, warn: bool = True) -> LLCDiagnostics:
    """Check `sample_llc`'s results (leading axes [...]); warn once per bad chain, naming where it is.

    axis_names name the leading axes (default: ("checkpoint",) or ("checkpoint", "member") by rank);
    `steps` [time] turns a checkpoint index into its training step.
    """
    trace = np.asarray(results["loss_trace"])
    lead = trace.ndim - 2
    axis_names = axis_names or ("checkpoint", "member")[:lead]
    status = chain_status(trace, results["init_loss"], n_beta, n_params, level_frac, z, explode_factor)
    ok = status == OK
    llc = np.where(ok, np.asarray(results["llc_per_chain"], np.float64), 0.0)
    n_ok = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_ok >= 1, llc.sum(-1) / n_ok, np.nan)
        std = np.where(n_ok >= 2, np.sqrt((np.where(ok, llc - mean[..., None], 0) ** 2).sum(-1) / (n_ok - 1)), np.nan)
    messages = []
    for idx in zip(*np.nonzero(status != OK)):
        where = _place(idx[:-1], steps, axis_names)
        messages.append(f"LLC {where}, chain {idx[-1]}: {STATUS[status[idx]]}")
    if warn:
        for line in messages:
            warnings.warn(line, stacklevel=2)
    usable = n_ok == status.shape[-1]
    return LLCDiagnostics(status, split_r_hat(trace), effective_sample_size(trace), mean, std, usable, tuple(messages))


def calibration_report(calibration: dict, n_params: int, max_r_hat: float = 1.1) -> list[dict]:
    """One row per grid setting of `llc.calibrate`'s output: the setting, the estimate, R-hat, ESS,
    how many chains were ok, and `stable` (every chain ok and R-hat <= max_r_hat)."""
    diag = diagnose(calibration, calibration["n_beta"], n_params,
                    axis_names=("epsilon", "gamma", "n_beta"), warn=False)
    rows = []
    for idx in np.ndindex(*calibration["epsilon"].shape):
        counts = np.bincount(diag.status[idx], minlength=len(STATUS))
        rows.append({
            "epsilon": float(calibration["epsilon"][idx]), "gamma": float(calibration["gamma"][idx]),
            "n_beta": float(calibration["n_beta"][idx]), "llc_mean": float(diag.llc_mean[idx]),
            "llc_std": float(diag.llc_std[idx]), "r_hat": float(diag.r_hat[idx]), "ess": float(diag.ess[idx]),
            **{f"chains_{name.replace(' ', '_')}": int(c) for name, c in zip(STATUS, counts)},
            "stable": bool(diag.usable[idx] and diag.r_hat[idx] <= max_r_hat),
        })
    return rows
