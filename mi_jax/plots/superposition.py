"""Plots of toy models of superposition: feature geometry, W^T W, phase diagram, dimensionality."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save

STICKY = (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8)


def geometry_2d(W: np.ndarray, titles: list[str], path: Path, colors: np.ndarray | None = None) -> Path:
    """Feature vectors W_i in the 2-D hidden plane, one panel per instance. W [instance, 2, feat]."""
    n_inst, _, n_feat = W.shape
    colors = plt.cm.viridis(np.linspace(0, 0.9, n_feat)) if colors is None else colors
    fig, axes = plt.subplots(1, n_inst, figsize=(1.9 * n_inst, 2.2), squeeze=False)
    lim = max(1.2, float(np.abs(W).max()) * 1.1)
    for ax, w, title in zip(axes[0], W, titles):
        for i in range(n_feat):
            ax.plot([0, w[0, i]], [0, w[1, i]], color=colors[i], lw=1.5)
            ax.scatter(w[0, i], w[1, i], color=colors[i], s=12, zorder=3)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        ax.set_title(title, fontsize=8)
    return save(fig, path)


def gram_heatmaps(G: np.ndarray, norms: np.ndarray, titles: list[str], path: Path) -> Path:
    """W^T W [instance, feat, feat] heatmaps (red +, blue -) above bars of ||W_i|| [instance, feat]."""
    n_inst = len(G)
    fig, axes = plt.subplots(2, n_inst, figsize=(1.8 * n_inst, 3.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.2]})
    for k in range(n_inst):
        axes[0, k].imshow(G[k], cmap="RdBu_r", vmin=-1, vmax=1)
        axes[0, k].set(xticks=[], yticks=[])
        axes[0, k].set_title(titles[k], fontsize=8)
        axes[1, k].barh(np.arange(norms.shape[1]), norms[k], color="k")
        axes[1, k].set(xlim=(0, max(1.2, norms.max())), yticks=[], ylim=(norms.shape[1], -1))
        axes[1, k].tick_params(labelsize=6)
    axes[0, 0].set_ylabel("W^T W")
    axes[1, 0].set_ylabel("||W_i||")
    return save(fig, path)


def phase_diagram(phases: np.ndarray, densities: np.ndarray, rel_importance: np.ndarray, path: Path) -> Path:
    """phases [density, rel_importance] in {0 not represented, 1 dedicated, 2 superposed}."""
    from matplotlib.colors import ListedColormap

    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    cmap = ListedColormap(["#d9d9d9", "#4c72b0", "#dd8452"])
    ax.pcolormesh(densities, rel_importance, phases.T, cmap=cmap, vmin=-0.5, vmax=2.5, shading="nearest")
    ax.set(xscale="log", yscale="log", xlabel="feature density 1 - S", ylabel="relative importance of feature 2",
           title="n=2, m=1: feature 2 is ...")
    for c, label in zip(cmap.colors, ("not represented", "dedicated", "superposed")):
        ax.scatter([], [], color=c, marker="s", label=label)
    ax.legend(fontsize=7, loc="lower left")
    return save(fig, path)


def dimensionality_vs_sparsity(density: np.ndarray, D: np.ndarray, dims_per_feature: np.ndarray, path: Path) -> Path:
    """density [instance]; D [instance, feat]; dims_per_feature [instance]. x axis 1/(1-S), log."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = 1 / density
    ax.plot(x, dims_per_feature, color="k", lw=1.5, label="m / ||W||_F^2")
    jitter = np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, D.shape))
    shown = D > 0.05
    ax.scatter((x[:, None] * jitter)[shown], D[shown], s=4, alpha=0.4, color="tab:blue", label="D_i")
    for f in STICKY:
        ax.axhline(f, color="tab:red", lw=0.5, ls="--")
        ax.text(x.max() * 1.05, f, str(Fraction(f).limit_denominator(8)), fontsize=7, va="center")
    ax.set(xscale="log", xlabel="1 / (1 - S)", ylabel="dimensions per feature", ylim=(0, 1.1))
    ax.legend(fontsize=8, loc="upper right")
    return save(fig, path)


def dimensionality_dynamics(steps: np.ndarray, D: np.ndarray, loss: np.ndarray, title: str, path: Path) -> Path:
    """D_i over training [time, feat] with the instance's loss [time] below."""
    fig, (ax, ax_loss) = plt.subplots(2, 1, figsize=(6, 4.2), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax.plot(steps, D, lw=1)
    for f in STICKY:
        ax.axhline(f, color="gray", lw=0.4, ls="--")
    ax.set(ylabel="D_i", ylim=(-0.02, 1.05), title=title)
    ax_loss.plot(steps, loss, color="k")
    ax_loss.set(yscale="log", xlabel="step", ylabel="loss")
    return save(fig, path)


def dimensionality_jumps(steps: np.ndarray, D: np.ndarray, loss: np.ndarray, titles: list[str],
                         jumps: list[list], path: Path) -> Path:
    """D_i over training (top) and loss (bottom, log) for a few instances, jumps shaded.

    D [time, instance, feat]; loss [time, instance]; jumps[k]: the `tms_dynamics.Jump`s of instance k."""
    n_inst = D.shape[1]
    fig, axes = plt.subplots(2, n_inst, figsize=(2.5 * n_inst, 3.6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]})
    for k in range(n_inst):
        ax, ax_loss = axes[0, k], axes[1, k]
        ax.plot(steps, D[:, k], lw=0.9)
        for f in STICKY:
            ax.axhline(f, color="gray", lw=0.4, ls="--")
        for j in jumps[k]:
            for a in (ax, ax_loss):
                a.axvspan(j.step_from, j.step_to, color="tab:orange", alpha=0.25, lw=0)
        ax.set(ylim=(-0.02, 1.02))
        ax.set_title(titles[k], fontsize=8)
        ax_loss.plot(steps, loss[:, k], color="k", lw=0.9)
        ax_loss.set(yscale="log", xlabel="step")
        ax_loss.yaxis.set_minor_formatter(plt.NullFormatter())
        for a in (ax, ax_loss):
            a.tick_params(which="both", labelsize=7)
    for f in STICKY:
        axes[0, -1].text(steps[-1] * 1.03, f, str(Fraction(f).limit_denominator(8)), fontsize=6, va="center")
    axes[0, 0].set_ylabel("D_i")
    axes[1, 0].set_ylabel("loss")
    return save(fig, path)
