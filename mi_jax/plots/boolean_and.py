"""Figures of computation in superposition (the boolean_and kind): accuracy over training, and
accuracy against width beside the random universal-AND construction."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save


def accuracy_over_training(steps, results: dict, random_construction: dict, title: str, path: Path) -> Path:
    """acc, tpr, fpr {name: [time, member]} against step (one faint line per member, their mean), the
    random construction's values at the same width dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, color in (("acc", "tab:blue"), ("tpr", "tab:green"), ("fpr", "tab:red")):
        values = np.asarray(results[name], float)
        ax.plot(steps, values, color=color, alpha=0.3, lw=0.8)
        ax.plot(steps, values.mean(1), color=color, label=f"trained {name}")
        ax.axhline(random_construction[name], color=color, ls="--", lw=0.8, label=f"random construction {name}")
    ax.set(xlabel="step", ylim=(-0.02, 1.02), title=title)
    ax.legend(fontsize=6)
    return save(fig, path)


def and_vs_width(rows: list[dict], path: Path) -> Path:
    """rows: {"n": , "n_hidden": , "acc": , "fpr": , "rand_acc": , "rand_fpr": } -> accuracy and FPR vs neurons."""
    fig, (ax_acc, ax_fpr) = plt.subplots(1, 2, figsize=(9, 3.6))
    for n in sorted({r["n"] for r in rows}):
        rs = sorted((r for r in rows if r["n"] == n), key=lambda r: r["n_hidden"])
        h = [r["n_hidden"] for r in rs]
        line, = ax_acc.plot(h, [r["acc"] for r in rs], "o-", label=f"trained, n={n} ({n * (n - 1) // 2} pairs)")
        ax_acc.plot(h, [r["rand_acc"] for r in rs], "x--", color=line.get_color(), label=f"random construction, n={n}")
        ax_fpr.plot(h, [r["fpr"] for r in rs], "o-", color=line.get_color())
        ax_fpr.plot(h, [r["rand_fpr"] for r in rs], "x--", color=line.get_color())
    ax_acc.set(xscale="log", xlabel="hidden neurons", ylabel="accuracy (all outputs right)", ylim=(-0.02, 1.02))
    ax_fpr.set(xscale="log", yscale="symlog", xlabel="hidden neurons", ylabel="false-positive rate")
    ax_fpr.set_yscale("symlog", linthresh=1e-4)
    ax_acc.legend(fontsize=6)
    return save(fig, path)
