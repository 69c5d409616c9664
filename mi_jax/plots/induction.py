"""Plots of an induction run: loss and phase change, head scores over time, attention, composition."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.analysis import induction as ind
from mi_jax.plots import save

LAYER_COLORS = ("Blues", "Reds", "Greens", "Purples")


def loss_with_phase_change(loss_steps, loss, icl_steps, icl, phase_steps, labels, path: Path) -> Path:
    """Test loss [member, n_evals] and ICL score [member, time] against step, one line per member,
    each member's phase change as a dashed line (None: no phase change to mark); a third panel shows
    each member's loss bump: its loss above its lower convex hull in log(step) (`analysis.induction.hull_excess`)."""
    fig, (ax_loss, ax_icl, ax_bump) = plt.subplots(1, 3, figsize=(15, 3.8))
    for k, (ls, ic, step, label) in enumerate(zip(loss, icl, phase_steps, labels)):
        color = f"C{k % 10}"
        ax_loss.plot(loss_steps, ls, color=color, lw=1, label=label)
        ax_icl.plot(icl_steps, ic, color=color, lw=1)
        ax_bump.plot(*ind.hull_excess(loss_steps, ls)[::2], color=color, lw=1)
        for ax in (ax_loss, ax_icl, ax_bump):
            if step is not None:  # None: no phase change to mark
                ax.axvline(step, color=color, ls="--", lw=0.8)
    ax_loss.set(xlabel="step", ylabel="test loss (nats)", title="loss (dashed: induction phase change)")
    ax_icl.set(xlabel="step", ylabel="loss(late) - loss(early)", title="in-context-learning score")
    ax_bump.set(xscale="log", xlabel="step", ylabel="nats",
                title="loss bump: loss above its convex hull in log(step)")
    ax_loss.legend(fontsize=7)
    for ax in (ax_loss, ax_icl, ax_bump):
        ax.grid(alpha=0.3)
    return save(fig, path)


def head_score_trajectories(steps, scores: dict, chance: dict, path: Path) -> Path:
    """One panel per score {name: [time, layer, head]} (one member); a line per head, coloured by layer."""
    fig, axes = plt.subplots(1, len(scores), figsize=(3.6 * len(scores), 3.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], scores.items()):
        n_layers, n_heads = values.shape[1:]
        for layer in range(n_layers):
            cmap = plt.get_cmap(LAYER_COLORS[layer % len(LAYER_COLORS)])
            for head in range(n_heads):
                ax.plot(steps, values[:, layer, head], color=cmap(0.5 + 0.5 * head / max(n_heads, 1)), lw=1.2,
                        label=f"L{layer}H{head}")
        if name in chance:
            ax.axhline(chance[name], color="grey", ls=":", lw=1, label="chance")
        ax.set(xlabel="step", title=name.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    return save(fig, path)


def attention_before_after(patterns: dict, path: Path) -> Path:
    """patterns {(head label, when): [pos, key_pos]} -> a grid of heatmaps (rows: heads, columns: when)."""
    labels = list(dict.fromkeys(k[0] for k in patterns))
    whens = list(dict.fromkeys(k[1] for k in patterns))
    fig, axes = plt.subplots(len(labels), len(whens), figsize=(3.5 * len(whens), 3.3 * len(labels)), squeeze=False,
                             layout="constrained")
    for row, label in enumerate(labels):
        for col, when in enumerate(whens):
            ax = axes[row][col]
            ax.imshow(patterns[(label, when)], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{label}\n{when}", fontsize=10)
            ax.set(xlabel="key position", ylabel="query position")
    return save(fig, path)


def k_composition_over_time(steps, k_comp: np.ndarray, path: Path, n_panels: int = 4, n_highlight: int = 3) -> Path:
    """k_comp [time, head0, head1] (one member): heatmaps at a few checkpoints (one colour scale) and
    every pair's line, the `n_highlight` pairs with the highest final score in colour."""
    idx = np.linspace(0, len(steps) - 1, n_panels).round().astype(int)
    fig, axes = plt.subplots(1, n_panels + 1, figsize=(3 * (n_panels + 1) + 1, 3.2), layout="constrained",
                             width_ratios=[1] * n_panels + [1.6])
    lo, hi = float(k_comp.min()), float(k_comp.max())
    for ax, i in zip(axes, idx):
        im = ax.imshow(k_comp[i], cmap="magma", vmin=lo, vmax=hi)
        ax.set(title=f"step {steps[i]}", xlabel="layer-1 head", ylabel="layer-0 head")
        ax.set_xticks(range(k_comp.shape[2]))
        ax.set_yticks(range(k_comp.shape[1]))
    fig.colorbar(im, ax=list(axes[:n_panels]), shrink=0.8, label="K-composition")
    ax = axes[-1]
    final = k_comp[-1].ravel()
    top = set(np.argsort(-final)[:n_highlight].tolist())
    for flat in range(final.size):
        h0, h1 = divmod(flat, k_comp.shape[2])
        style = dict(lw=1.5, label=f"L0H{h0} -> L1H{h1}") if flat in top else dict(lw=0.7, color="0.75")
        ax.plot(steps, k_comp[:, h0, h1], **style)
    ax.set(xlabel="step", title="K-composition of every head pair")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save(fig, path)


def per_position_loss(before: np.ndarray, after: np.ndarray, labels: tuple[str, str], path: Path) -> Path:
    """Loss at each token position [pos - 1], before and after the phase change."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    tokens = np.arange(1, len(before) + 1)
    ax.plot(tokens, before, label=labels[0])
    ax.plot(tokens, after, label=labels[1])
    ax.set(xlabel="token position", ylabel="loss (nats)", title="per-position loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)
