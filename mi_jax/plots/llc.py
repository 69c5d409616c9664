"""Figures of `mi-jax llc`: the LLC over training with flagged checkpoints marked, next to the loss and
the Hessian; the calibration grid as a map of stable and unstable settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.plots import plt, save


def llc_over_training(steps, llc_mean, llc_std, llc_finite, usable, metric_steps, losses: dict, hessian_top,
                      hessian_trace, labels, path: Path) -> Path:
    """Three panels over step: LLC ± std over the ok chains (a red x where a chain was flagged, at the
    mean over the finite chains), the losses (log), the top Hessian eigenvalue and trace (log).
    llc_mean, llc_std, llc_finite, usable, hessian_top, hessian_trace: [member, time]; losses {name: [member, n_evals]}."""
    fig, (ax_llc, ax_loss, ax_h) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for m, label in enumerate(labels):
        c = colors[m % len(colors)]
        ax_llc.plot(steps, llc_mean[m], color=c, label=f"LLC ({label})")
        ax_llc.fill_between(steps, llc_mean[m] - llc_std[m], llc_mean[m] + llc_std[m], color=c, alpha=0.25)
        bad = ~usable[m]
        if bad.any():
            at = np.where(np.isfinite(llc_mean[m]), llc_mean[m], llc_finite[m])
            at = np.where(np.isfinite(at), at, np.nanmin(llc_mean[m]) if np.isfinite(llc_mean[m]).any() else 0.0)
            ax_llc.scatter(np.asarray(steps)[bad], at[bad], marker="x", color="red", zorder=3,
                           label="flagged chain(s)" if m == 0 else None)
        for (name, values), style in zip(losses.items(), ("--", "-")):
            ax_loss.plot(metric_steps, values[m], style, color=c, label=f"{name} ({label})")
        ax_h.plot(steps, hessian_top[m], color=c, label=f"top eigenvalue ({label})")
        ax_h.plot(steps, hessian_trace[m], ":", color=c, label=f"trace ({label})")
    ax_llc.set(ylabel="LLC (mean ± std over chains)", title="local learning coefficient")
    ax_loss.set(ylabel="loss", yscale="log", title="loss")
    ax_h.set(xlabel="step", ylabel="Hessian", title="Hessian of the training loss")
    ax_h.set_yscale("symlog", linthresh=1e-3)  # the trace may dip below 0 where the loss is flat
    for ax in (ax_llc, ax_loss, ax_h):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save(fig, path)


def calibration_heatmap(grid: dict, stable, llc_last, steps, path: Path) -> Path:
    """One map per n_beta over (epsilon, gamma): green where every checkpoint's chains were stable,
    red where not; each cell labelled with the LLC at the last calibrated checkpoint.
    grid {epsilon, gamma, n_beta: [eps, gamma, n_beta]}, stable and llc_last [eps, gamma, n_beta]."""
    n_nb = stable.shape[2]
    fig, axes = plt.subplots(1, n_nb, figsize=(4.5 * n_nb, 3.8), squeeze=False)
    for j, ax in enumerate(axes[0]):
        ax.imshow(stable[:, :, j].T, cmap="RdYlGn", vmin=0, vmax=1, origin="lower", aspect="auto")
        for i in range(stable.shape[0]):
            for k in range(stable.shape[1]):
                value = llc_last[i, k, j]
                ax.text(i, k, f"{value:.3g}" if np.isfinite(value) else "nan", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(stable.shape[0]), [f"{e:.2g}" for e in grid["epsilon"][:, 0, j]])
        ax.set_yticks(range(stable.shape[1]), [f"{g:.3g}" for g in grid["gamma"][0, :, j]])
        ax.set(xlabel="epsilon", ylabel="gamma", title=f"n_beta = {grid['n_beta'][0, 0, j]:.3g}")
    fig.suptitle(f"stable (green) at steps {steps}; cells: LLC at step {steps[-1]}", fontsize=9)
    return save(fig, path)
