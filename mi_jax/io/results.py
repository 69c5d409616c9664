"""Analysis results on disk: RUN_DIR/analysis/NAME.npz (measures over the series, with the steps)
and RUN_DIR/analysis/NAME_summary.json (what a report reads off them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mi_jax.io.run_dir import ANALYSIS


def json_number(x) -> float | None:
    """A float for a JSON summary; None (null) for NaN or inf, which JSON has no word for."""
    x = float(x)
    return x if np.isfinite(x) else None


def save_results(run_dir: Path, name: str, steps: np.ndarray, results: dict[str, np.ndarray]) -> Path:
    """Write results {name: [time, member, ...]} to RUN_DIR/analysis/NAME.npz (with the steps)."""
    out = Path(run_dir) / ANALYSIS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.npz"
    np.savez(path, steps=np.asarray(steps), **{k: np.asarray(v) for k, v in results.items()})
    return path


def load_results(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """-> (steps [time], {name: [time, member, ...]}) from a file `save_results` wrote."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    return data.pop("steps"), data


def save_summary(run_dir: Path, name: str, summary: dict) -> Path:
    """Write a report's summary (plain JSON values) to RUN_DIR/analysis/NAME_summary.json."""
    path = Path(run_dir) / ANALYSIS / f"{name}_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return path
