"""Figures of the grokking progress measures (Nanda et al. 2023), one file each.

Every function takes arrays with a leading member axis (`[member, time, ...]`; a solo run is one
member) and a path, and returns the path. `phases` is a list (one per member) of the dicts
`grokking.phase_boundaries` returns; `labels` name the members (`seed 3`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.plots import plt, save

PHASE_COLORS = {"memorisation": "tab:orange", "circuit formation": "tab:green", "cleanup": "tab:purple"}


def _spans(phase: dict, first: int) -> list[tuple[str, int, int]]:
    bounds = [("memorisation", first, phase["memorised"]), ("circuit formation", phase["memorised"], phase["cleanup"]),
              ("cleanup", phase["cleanup"], phase["generalised"])]
    return [(name, lo, hi) for name, lo, hi in bounds if lo is not None and hi is not None and hi > lo]


def shade_phases(ax, phases: list[dict], first: int) -> None:
    """Shade each member's phases (fainter the more members); label them once."""
    alpha = 0.15 / max(1, len(phases)) ** 0.5
    labelled = set()
    for phase in phases:
        for name, lo, hi in _spans(phase, first):
            ax.axvspan(lo, hi, color=PHASE_COLORS[name], alpha=alpha, lw=0,
                       label=None if name in labelled else name)
            labelled.add(name)


def _lines(ax, steps, values, label, color, log: bool = False, **kw):
    """values [member, time]: one faint line per member and their mean (geometric with `log`)."""
    values = np.asarray(values, float)
    if len(values) > 1:
        for v in values:
            ax.plot(steps, v, color=color, alpha=0.25, lw=0.8)
        label += " (geometric mean)" if log else " (mean)"
    mean = np.exp(np.log(np.maximum(values, 1e-30)).mean(0)) if log else values.mean(0)
    ax.plot(steps, mean, color=color, label=label, **kw)


def losses_with_phases(steps, series: dict, phases: list[dict], path: Path, title: str = "") -> Path:
    """Log-scale losses against step ({label: [member, time]}), phases shaded."""
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = {"train": "tab:blue", "test": "tab:red", "restricted": "tab:green", "restricted_abc": "tab:olive",
              "excluded": "tab:brown"}
    for label, values in series.items():
        name = "restricted loss (a+b-c waves only)" if label == "restricted_abc" else f"{label} loss"
        _lines(ax, steps, values, name, colors.get(label, None), log=True, ls="--" if label == "restricted_abc" else "-")
    shade_phases(ax, phases, int(steps[0]))
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss (cross-entropy)", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: the curves fill the axes
    ax.grid(alpha=0.3)
    return save(fig, path)


def gini_and_weight_norm(steps, embed_gini, logit_map_gini, weight_norm, phases, path: Path) -> Path:
    """Gini of the Fourier norms of W_E and W_L, and the sum of squared weights, [member, time] each."""
    fig, (ax_g, ax_w) = plt.subplots(1, 2, figsize=(11, 3.8))
    _lines(ax_g, steps, embed_gini, "Gini of W_E Fourier norms", "tab:blue")
    if logit_map_gini is not None:
        _lines(ax_g, steps, logit_map_gini, "Gini of W_L Fourier norms", "tab:red")
    _lines(ax_w, steps, weight_norm, "sum of squared weights", "k")
    for ax in (ax_g, ax_w):
        shade_phases(ax, phases, int(steps[0]))
        ax.set(xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_g.set(ylabel="Gini coefficient", title="Fourier sparsity")
    ax_w.set(ylabel="Σ w²", title="weight norm")
    return save(fig, path)


def freq_norm_heatmaps(steps, norms, path: Path, labels) -> Path:
    """Embedding Fourier norm per frequency against step, one panel per member: norms [member, time, freq]."""
    norms = np.asarray(norms, float)
    n = len(norms)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 1, 3.8), squeeze=False, layout="constrained")
    for i, (ax, label, nm) in enumerate(zip(axes[0], labels, norms)):
        im = ax.imshow(nm.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(steps[0], steps[-1], 0.5, nm.shape[1] + 0.5))
        ax.set(xlabel="step", ylabel="frequency k" if i == 0 else None, title=f"W_E Fourier norms ({label})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path)


def final_spectra(norms, key_freqs, path: Path, labels, what: str = "W_E") -> Path:
    """Fourier norm per frequency at the last checkpoint, key frequencies highlighted: norms [member, freq]."""
    norms = np.asarray(norms, float)
    n = len(norms)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n + 0.6), squeeze=False, sharex=True)
    for ax, label, nm, keys in zip(axes[:, 0], labels, norms, key_freqs):
        k = np.arange(1, len(nm) + 1)
        is_key = np.isin(k, keys)
        ax.bar(k, nm, color=np.where(is_key, "tab:red", "tab:gray"))
        ax.set(ylabel="norm", title=f"{what} Fourier norms, final checkpoint, {label}; "
                                    f"key frequencies {', '.join(map(str, keys))}")
        ax.title.set_fontsize(9)
    axes[-1, 0].set(xlabel="frequency k")
    return save(fig, path)


def neuron_clusters(best_freq, best_frac, path: Path, labels, threshold: float = 0.5) -> Path:
    """Neurons per best frequency (those with > `threshold` of their variance there) and the
    distribution of the explained fraction, final checkpoint: best_freq, best_frac [member, d_mlp]."""
    best_freq, best_frac = np.asarray(best_freq), np.asarray(best_frac, float)
    n_freq = int(best_freq.max())
    fig, (ax_c, ax_h) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(best_freq)
    for i, (label, bf, fr) in enumerate(zip(labels, best_freq, best_frac)):
        counts = np.bincount(bf[fr > threshold], minlength=n_freq + 1)[1:]
        ax_c.bar(np.arange(1, n_freq + 1) + (i - (len(best_freq) - 1) / 2) * width, counts, width=width, label=label)
        ax_h.hist(fr, bins=30, range=(0, 1), histtype="step", label=label)
    ax_c.set(xlabel="frequency k", ylabel="neurons", title=f"neuron clusters (> {threshold:.0%} variance in one frequency)")
    ax_h.set(xlabel="fraction of a neuron's variance in its best frequency", ylabel="neurons", title="how well one frequency explains a neuron")
    for ax in (ax_c, ax_h):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)
