"""Figures of a fine-tune against its base: each component's change over the fine-tuning steps (a heat
map, component x checkpoint) and the fraction of the loss change that patching each component from
the base undoes (lines over steps). Both take series already named per component, {label: [time]}."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save

MAX_STEP_TICKS = 12  # heat map columns labelled at most this many times


def component_change(steps, changes: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Heat map of relative change from the base, changes {component: [time]} as rows in their order,
    one column per checkpoint (labelled with its step)."""
    steps = np.asarray(steps)
    grid = np.stack([np.asarray(v, float) for v in changes.values()]) if changes else np.zeros((0, len(steps)))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(steps) + 3.0), max(2.4, 0.22 * len(changes) + 1.4)))
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=float(finite.max()) if finite.size and finite.max() > 0 else 1.0,
                      aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(changes)), list(changes), fontsize=7)
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_STEP_TICKS)).round().astype(int))
    ax.set_xticks(ticks, [str(int(steps[i])) for i in ticks], fontsize=7, rotation=90 if len(ticks) > 8 else 0)
    ax.set_xlabel("step")
    fig.colorbar(image, ax=ax, label="||X - X_base|| / ||X_base||", shrink=0.9)
    ax.set_title(title or "change of each component from the base", fontsize=9)
    return save(fig, path)


def patching_fractions(steps, fractions: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Lines over steps: the fraction of the fine-tune's loss change undone by patching each component
    from the base (1: all of it, 0: none), fractions {component: [time]}; the first checkpoint, with no
    change to undo, is nan and not drawn."""
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    cmap = plt.get_cmap("tab20")
    for i, (label, values) in enumerate(fractions.items()):
        style = {"color": "black", "lw": 1.8} if label == "all" else {"color": cmap(i % 20), "lw": 1.0}
        ax.plot(steps, np.asarray(values, float), marker=".", ms=3, label=label, **style)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.axhline(1.0, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="step", ylabel="fraction of the loss change undone",
           title=title or "patching from the base into the fine-tuned model")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    if fractions:
        ax.legend(fontsize=6, ncol=2 if len(fractions) > 10 else 1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, path)
