"""Plots of a language run: its stages over training (n-gram distances, copyable against other tokens)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save


def stages(steps, results: dict, labels, marks: dict, path: Path) -> Path:
    """Four panels over steps, a line per member: the bigram and unigram distances (results {name:
    [member, time]}), the loss on inductable tokens against the rest, the gain from context beyond the
    previous token ("context_gain"), and the best induction and previous-token scores of any head (on
    random tokens; "text_induction": induction on repeated text); marks {label: [step or None per member]}
    as dashed lines."""
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
    for m, label in enumerate(labels):
        color = f"C{m % 10}"
        axes[0].plot(steps, results["bigram_kl"][m], color=color, lw=1.2, label=f"{label} bigram")
        axes[0].plot(steps, results["unigram_kl"][m], color=color, lw=1, ls=":", label=f"{label} unigram")
        axes[1].plot(steps, results["inductable_loss"][m], color=color, lw=1.2, label=f"{label} inductable")
        axes[1].plot(steps, results["other_loss"][m], color=color, lw=1, ls=":", label=f"{label} other")
        axes[2].plot(steps, results["context_gain"][m], color=color, lw=1.2, label=label)
        axes[3].plot(steps, results["induction"][m], color=color, lw=1.2, label=f"{label} induction")
        axes[3].plot(steps, results["previous_token"][m], color=color, lw=1, ls=":", label=f"{label} previous-token")
        if "text_induction" in results:
            axes[3].plot(steps, results["text_induction"][m], color=color, lw=1.2, ls="--",
                         label=f"{label} induction on repeated text")
        for k, (name, at) in enumerate(marks.items()):
            for ax in axes:
                if at[m] is not None:
                    ax.axvline(at[m], color=color, ls=("--", "-.")[k % 2], lw=0.7)
    axes[0].set(xlabel="step", ylabel="KL (nats)", title="distance to the n-gram tables", yscale="log")
    axes[1].set(xlabel="step", ylabel="loss (nats)", title="loss: repeated bigrams (solid) vs the rest")
    axes[2].set(xlabel="step", ylabel="nats per token", title="gain from context beyond the previous token")
    axes[3].set(xlabel="step", ylabel="attention", title="best induction / previous-token head, any layer")
    names = " and ".join(f"{'--' if k % 2 == 0 else '-.'} {name}" for k, name in enumerate(marks))
    fig.suptitle(f"stages of training ({names})", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return save(fig, path)
