"""The demo, as a function of the API: train grokking_small, analyse every checkpoint, write the plots.

    mj.demo()          # or `mi-jax demo`
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mi_jax import presets
from mi_jax.reports import analyze_run
from mi_jax.runs import run

PRESET = "grokking_small"


def summary(row: dict) -> str:
    """A metrics row as `name value` pairs; per-member lists shown as their mean and range."""
    import numpy as np

    parts = []
    for name, value in row.items():
        if name == "step":
            continue
        v = np.asarray(value, dtype=float)
        if v.ndim == 0:
            parts.append(f"{name} {float(v):.4g}")
        else:
            parts.append(f"{name} {v.mean():.4g} (mean of {v.size}, {v.min():.3g}..{v.max():.3g})")
    return ", ".join(parts)


def demo(out=None, *, wandb: str = "offline", progress: bool = True, say: Callable[[str], object] = print) -> Path:
    """Train grokking_small into `out` (default checkpoints/grokking_small, replaced if there), analyse
    its checkpoint series and draw the figures, telling `say` what happens -> the run dir."""
    run_dir = Path(out) if out else run.default_run_dir(PRESET)
    say(f"[demo] training {PRESET} into {run_dir} (a few minutes on 2 CPU cores)")
    final = run.train(presets.load(PRESET), run_dir, overwrite=True, wandb=wandb, progress=progress)
    say(f"[demo] final: {summary(final)}")
    say(f"[demo] analysing every checkpoint of {run_dir}")
    for line in analyze_run(run_dir, wandb=wandb, progress=progress):
        say(f"[demo] {line}")
    say(f"[demo] done. run dir {run_dir}: config.json, metrics.jsonl, snapshots/, state/, analysis/, wandb/")
    return run_dir
