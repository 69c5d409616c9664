"""Figures of SAEs over training: each metric of the per-checkpoint SAEs (fraction of variance explained,
L0, dead latents, the loss recovered when spliced in, the recovery of a toy model's true features, a
grokking model's latents of one frequency, the drift of features between checkpoints) against
the step, one line per member, instance or grid value, beside the run's own test loss; and a crosscoder's
decoder norms per latent and checkpoint as a heat map, latents sorted by birth."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save

PANELS = (("fve", "fraction of variance explained"), ("l0", "L0 (active latents)"),
          ("dead", "dead latents"), ("recovered_zero", "loss recovered (vs zero ablation)"),
          ("recovered_mean", "loss recovered (vs mean ablation)"), ("mmcs", "MMCS to the true features"),
          ("mmcs_weighted", "MMCS, weighted by feature norm"),
          ("frequency_features", "latents of one frequency (>= 50% of variance)"),
          ("key_frequency_share", "latents' variance in the key frequencies (median)"),
          ("answer_features", "latents of the answer (>= 50% of variance)"),
          ("lineage_cosine", "feature drift: cosine with the match at the previous checkpoint (median)"))
MAX_LINES = 12  # lines per panel; beyond, every n-th


def sae_over_training(steps, metrics: dict[str, np.ndarray], labels: list[str], path: Path, *, title: str = "",
                      loss_steps=None, loss=None) -> Path:
    """metrics {name: [time, line]} (the names of PANELS that are present), labels [line];
    loss [eval step, member] at loss_steps: the run's test loss, drawn on the first panel's twin axis."""
    panels = [(k, t) for k, t in PANELS if k in metrics]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    n_lines = len(labels)
    shown = range(0, n_lines, max(1, -(-n_lines // MAX_LINES)))
    cmap = plt.get_cmap("viridis" if n_lines > 10 else "tab10")
    marker = {"marker": ".", "ms": 3} if len(steps) <= 60 else {}  # a long series: lines only (and a small file)
    for ax, (name, label) in zip(axes.flat, panels):
        values = np.asarray(metrics[name], float)
        for j in shown:
            color = cmap(j / max(1, n_lines - 1)) if n_lines > 10 else cmap(j % 10)
            ax.plot(steps, values[:, j], lw=1.0, color=color, label=labels[j], **marker)
        if name.startswith("recovered") or name in ("fve", "mmcs", "mmcs_weighted", "lineage_cosine", "key_frequency_share"):
            ax.axhline(1.0, color="grey", lw=0.6, ls="--")
        if name.startswith("recovered"):  # a ratio that explodes where ablating costs almost nothing: keep the view
            finite = values[np.isfinite(values)]
            if finite.size:
                ax.set_ylim(max(-0.5, finite.min() - 0.05), min(1.5, finite.max() + 0.05))
        ax.set(xlabel="step", title=label)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    if loss is not None and panels:
        twin = axes.flat[0].twinx()
        twin.plot(loss_steps, np.asarray(loss, float), color="tab:red", lw=0.8, alpha=0.6)
        twin.set_ylabel("test loss", color="tab:red", fontsize=8)
        twin.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if n_lines > 1:
        axes.flat[0].legend(fontsize=6, ncol=2 if len(shown) > 6 else 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def decoder_norms_by_birth(norms: np.ndarray, order: np.ndarray, steps, path: Path, title: str = "") -> Path:
    """A crosscoder's decoder norms [checkpoint, latent] as a heat map, latents (rows) in `order` (by birth)."""
    grid = np.asarray(norms, float)[:, order].T
    fig, ax = plt.subplots(figsize=(max(4.5, 0.35 * len(steps) + 2.5), 4.5))
    image = ax.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest", vmin=0.0)
    ax.set_xticks(range(len(steps)), [str(int(s)) for s in steps], fontsize=7, rotation=90)
    ax.set(xlabel="checkpoint (step)", ylabel="latent (sorted by birth)", title=title or "crosscoder decoder norms")
    ax.title.set_fontsize(9)
    fig.colorbar(image, ax=ax, label="decoder norm")
    return save(fig, path)
