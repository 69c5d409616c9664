"""Figures (matplotlib, Agg backend): files out, nothing shown. One module per experiment kind
(`grokking`, `induction`, `superposition`, `boolean_and`), `interventions`, `llc` and `sweep`; `training_curves` for any run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(traj, path: Path) -> Path:
    """Loss (log scale) and accuracy against step, train and test: one faint line per member and their mean."""
    m = traj.metrics
    steps = m["step"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, color in (("train", "tab:blue"), ("test", "tab:red")):
        for ax, key in ((ax_loss, f"{split}_loss"), (ax_acc, f"{split}_acc")):
            if key not in m:
                continue
            values = np.asarray(m[key], dtype=float)  # [n_evals, member]
            ax.plot(steps, values, color=color, alpha=0.3, lw=0.8)
            ax.plot(steps, values.mean(1), color=color, label=split)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(-0.02, 1.02))
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(Path(traj.run_dir).name if traj.run_dir else "")
    return save(fig, path)
