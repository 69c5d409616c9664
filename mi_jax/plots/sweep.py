"""Figures of a sweep: a summary measure of each member against the swept values."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.plots import save


def _axis_values(rows, key) -> list:
    return sorted({r[key] for r in rows})


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_scale(values) -> bool:
    v = np.asarray(values, float)
    return bool((v > 0).all() and v.max() / v.min() >= 10)


def measure_against_grid(rows: list[dict], keys: list[str], name: str, path: Path) -> Path:
    """One swept key: the measure against its values, a faint point per seed and their mean. Two or
    more: a heatmap over the first two keys, the mean over seeds (and any further keys), each cell
    labelled with its value; members that never reached the measure (None) are counted in the cell."""
    if len(keys) == 1:
        (key,) = keys
        xs = _axis_values(rows, key)
        at = {x: (x if _numeric(xs) else i) for i, x in enumerate(xs)}  # settings that are names sit at 0, 1, ...
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for i, x in enumerate(xs):
            ys = [r[name] for r in rows if r[key] == x and r[name] is not None]
            ax.scatter([at[x]] * len(ys), ys, color="tab:blue", alpha=0.4, s=14)
            never = sum(r[name] is None for r in rows if r[key] == x)
            if never:  # at the foot of the axes, whatever the measure's range; neighbours alternate rows
                ax.text(at[x], 0.03 + 0.05 * (i % 2), f"{never} never", transform=ax.get_xaxis_transform(),
                        fontsize=7, color="tab:red", ha="center")
        means = [np.mean([r[name] for r in rows if r[key] == x and r[name] is not None] or [np.nan]) for x in xs]
        ax.plot([at[x] for x in xs], means, color="tab:blue", label="mean over seeds")
        if _numeric(xs) and _log_scale(xs):
            ax.set_xscale("log")
        ax.set_xticks([at[x] for x in xs], [f"{x:g}" if isinstance(x, float) else str(x) for x in xs])
        ax.set(xlabel=key, ylabel=name.replace("_", " "), title=name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return save(fig, path)
    kx, ky = keys[:2]
    xs, ys = _axis_values(rows, kx), _axis_values(rows, ky)
    grid = np.full((len(ys), len(xs)), np.nan)
    labels = [["" for _ in xs] for _ in ys]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            cell = [r[name] for r in rows if r[kx] == x and r[ky] == y]
            done = [v for v in cell if v is not None]
            if done:
                grid[i, j] = np.mean(done)
            labels[i][j] = (f"{np.mean(done):.3g}" if done else "never") + (f"\n{len(cell) - len(done)} never"
                                                                            if done and len(done) < len(cell) else "")
    fig, ax = plt.subplots(figsize=(1.1 * len(xs) + 2.5, 0.8 * len(ys) + 1.8))
    im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
    lo, hi = np.nanmin(grid) if np.isfinite(grid).any() else 0, np.nanmax(grid) if np.isfinite(grid).any() else 1
    for i in range(len(ys)):
        for j in range(len(xs)):
            bright = np.isfinite(grid[i, j]) and (grid[i, j] - lo) > 0.6 * (hi - lo)  # viridis turns yellow
            color = "tab:red" if labels[i][j].startswith("never") else ("black" if bright else "white")
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(xs)), [f"{x:g}" if isinstance(x, float) else str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" if isinstance(y, float) else str(y) for y in ys])
    extra = f", mean over seeds and {', '.join(keys[2:])}" if len(keys) > 2 else ", mean over seeds"
    ax.set(xlabel=kx, ylabel=ky, title=name.replace("_", " ") + extra)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path)


PHASE_COLORS = {"comprehension": "tab:green", "grokking": "tab:orange", "memorisation": "tab:blue",
                "confusion": "tab:gray"}


def phase_diagram(rows: list[dict], keys: list[str], phases: tuple[str, ...], path: Path) -> Path:
    """Each cell of a two-key grid coloured by its members' most common `phase` (ties: the first in
    `phases`), labelled with the phase of each seed and the mean steps to generalise."""
    kx, ky = keys
    xs, ys = _axis_values(rows, kx), _axis_values(rows, ky)
    fig, ax = plt.subplots(figsize=(1.3 * len(xs) + 2.6, 0.85 * len(ys) + 1.8))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            cell = [r for r in rows if r[kx] == x and r[ky] == y]
            counts = [sum(r["phase"] == p for r in cell) for p in phases]
            common = phases[int(np.argmax(counts))]
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color=PHASE_COLORS.get(common, "white"), alpha=0.55))
            steps = [r["steps_to_generalise"] for r in cell if r.get("steps_to_generalise") is not None]
            label = "/".join(r["phase"][:4] for r in cell) + (f"\n{np.mean(steps):.0f}" if steps else "")
            ax.text(j, i, label, ha="center", va="center", fontsize=6.5)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(-0.5, len(ys) - 0.5)
    ax.set_xticks(range(len(xs)), [f"{x:g}" if isinstance(x, float) else str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" if isinstance(y, float) else str(y) for y in ys])
    handles = [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLORS[p], alpha=0.55) for p in phases]
    ax.legend(handles, phases, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set(xlabel=kx, ylabel=ky, title="phase of each seed (cell: the most common); mean steps to generalise")
    return save(fig, path)
