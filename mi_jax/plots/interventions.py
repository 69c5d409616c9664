"""Plots of interventions and probes: patching heatmaps (one model, or a strip of small multiples over
training on one colour scale) and values over training (probe accuracy / R², ablated losses) with the
run's phase boundaries marked.

Patching values are normalised (0 = corrupted, 1 = clean), so the colour scale is diverging and
centred on 0: a component whose patch moves the metric the wrong way shows blue, not pale red.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save

MAX_ANNOTATED_CELLS = 64  # heatmaps up to this size print each value in its cell


def symmetric_limit(values) -> float:
    """max |value| over the finite entries (1 when there are none): the half-range of a centred colour scale."""
    finite = np.abs(np.asarray(values, float))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _draw(ax, grid: np.ndarray, limit: float, row_label: str, col_label: str, col_ticks, annotate: bool):
    """One heatmap [row, col] on ax, colours RdBu_r in [-limit, limit]; returns the image."""
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    n_rows, n_cols = grid.shape
    ax.set_yticks(range(n_rows))
    ax.set_ylabel(row_label)
    ax.set_xlabel(col_label)
    if col_ticks is not None:
        ax.set_xticks(range(n_cols), [str(t) for t in col_ticks], fontsize=7, rotation=90 if n_cols > 12 else 0)
    elif n_cols <= 16:
        ax.set_xticks(range(n_cols))
    if annotate and grid.size <= MAX_ANNOTATED_CELLS:
        for (r, c), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * limit else "black")
    return image


def patching_heatmap(
    values, path: Path, *, row_label: str = "layer", col_label: str = "head", col_ticks=None, title: str = "",
    limit: float | None = None, annotate: bool = True,
) -> Path:
    """Patching result of one model, values [row, col] (layer x head, or layer x position), on a colour
    scale centred on 0 (half-range `limit`, default max |value|). col_ticks: labels of the columns."""
    grid = np.asarray(values, float)
    if grid.ndim != 2:
        raise ValueError(f"a patching heatmap takes values [row, col], got shape {grid.shape}")
    limit = symmetric_limit(grid) if limit is None else limit
    fig, ax = plt.subplots(figsize=(max(3.2, 0.35 * grid.shape[1] + 1.6), max(2.2, 0.45 * grid.shape[0] + 1.2)))
    image = _draw(ax, grid, limit, row_label, col_label, col_ticks, annotate)
    fig.colorbar(image, ax=ax, label="patched metric (0 corrupted, 1 clean)", shrink=0.9)
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def evenly_spaced(n_time: int, n_panels: int) -> np.ndarray:
    """n_panels checkpoint indices spread over 0..n_time-1, first and last included (fewer if n_time is small)."""
    return np.unique(np.round(np.linspace(0, n_time - 1, min(n_panels, n_time))).astype(int))


def patching_strip(
    values, steps, path: Path, *, at=None, row_label: str = "layer", col_label: str = "head", col_ticks=None,
    title: str = "", panel_notes=None, limit: float | None = None, annotate: bool = False,
) -> Path:
    """Patching over training, values [time, row, col] at checkpoints `steps` [time]: one small heatmap
    per chosen checkpoint (`at`: indices into time, default 6 evenly spaced) side by side, all on ONE
    colour scale centred on 0 (half-range `limit`, default max |value| over the panels shown) so
    panels compare by colour. panel_notes: a line of text under each panel's step (len(at) strings)."""
    values = np.asarray(values, float)
    if values.ndim != 3:
        raise ValueError(f"a patching strip takes values [time, row, col], got shape {values.shape}")
    if len(steps) != values.shape[0]:
        raise ValueError(f"{len(steps)} steps for {values.shape[0]} checkpoints")
    at = evenly_spaced(values.shape[0], 6) if at is None else np.asarray(at, int)
    if panel_notes is not None and len(panel_notes) != len(at):
        raise ValueError(f"{len(panel_notes)} panel notes for {len(at)} panels")
    limit = symmetric_limit(values[at]) if limit is None else limit
    n_rows, n_cols = values.shape[1:]
    width = max(1.6, min(0.22 * n_cols, 4.5) + 0.9)  # long position axes get narrow cells, not a metre of figure
    fig, axes = plt.subplots(1, len(at), figsize=(width * len(at) + 1.2, max(2.2, 0.4 * n_rows + 1.4)),
                             squeeze=False, sharey=True, layout="constrained")
    for k, (ax, i) in enumerate(zip(axes[0], at)):
        image = _draw(ax, values[i], limit, row_label if k == 0 else "", col_label, col_ticks, annotate)
        note = f"\n{panel_notes[k]}" if panel_notes is not None else ""
        ax.set_title(f"step {int(steps[i])}{note}", fontsize=8)
    beyond = np.nanmax(np.abs(values[at])) > limit if np.isfinite(values[at]).any() else False
    fig.colorbar(image, ax=axes[0].tolist(), label="patched (0 corr., 1 clean)", shrink=0.9,
                 extend="both" if beyond else "neither")
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path)


def over_training(
    steps, series: dict, path: Path, *, ylabel: str, marks: dict | None = None, title: str = "",
    logy: bool = False, reference: dict | None = None, ylim=None,
) -> Path:
    """Values over training, series {label: [time]} against steps [time] (or {label: (steps, values)} for
    series on their own steps); marks {name: step} drawn as labelled vertical lines (phase boundaries,
    a phase change); reference {label: value} as dotted horizontal lines (chance, the uniform loss)."""
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for k, (label, values) in enumerate(series.items()):
        x, y = values if isinstance(values, tuple) else (steps, values)
        ax.plot(np.asarray(x), np.asarray(y, float), color=f"C{k % 10}", lw=1.3, label=label)
    for k, (name, step) in enumerate((marks or {}).items()):
        if step is None:
            continue
        ax.axvline(step, color="grey", ls="--", lw=0.9)
        ax.annotate(name, (step, 1), xycoords=("data", "axes fraction"), xytext=(2, -2 - 9 * (k % 3)),
                    textcoords="offset points", fontsize=7, color="dimgrey", va="top")
    for label, value in (reference or {}).items():
        ax.axhline(value, color="black", ls=":", lw=0.9, label=label)
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(xlabel="step", ylabel=ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def probe_over_training(steps, scores: dict, path: Path, *, metric: str = "held-out accuracy", marks=None,
                        chance: float | None = None, title: str = "") -> Path:
    """Probe accuracy or R² over training, scores {label: [time]}; `marks` {name: step} as in `over_training`,
    `chance` a dotted line. The y range covers [0, 1] and any negative R² down to -0.25 (below is clipped)."""
    lowest = [float(np.nanmin(v[1] if isinstance(v, tuple) else v)) for v in scores.values()]
    low = max(-0.25, min([0.0] + lowest))
    return over_training(steps, scores, path, ylabel=metric, marks=marks, title=title,
                         reference=None if chance is None else {"chance": chance}, ylim=(low - 0.03, 1.03))


def runs_side_by_side(panels: dict, path: Path, *, marks: dict | None = None, logy=()) -> Path:
    """A row of panels comparing runs over training: panels {title: {label: (steps [n], values [n])}}, the
    same label drawn in the same colour in every panel; marks {name: step} as dashed lines in each;
    logy: titles of the panels drawn on a log y axis."""
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 3.4), squeeze=False, layout="constrained")
    for ax, (title, series) in zip(axes[0], panels.items()):
        for label, (x, y) in series.items():
            ax.plot(np.asarray(x), np.asarray(y, float), color=f"C{labels.index(label) % 10}", lw=1.2, label=label)
        for name, step in (marks or {}).items():
            if step is not None:
                ax.axvline(step, color="grey", ls="--", lw=0.8)
        if title in logy:
            ax.set_yscale("log")
        ax.set(xlabel="step")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    if marks:
        fig.suptitle("dashed: " + ", ".join(f"{n} (step {s})" for n, s in marks.items() if s is not None), fontsize=8)
    return save(fig, path)
