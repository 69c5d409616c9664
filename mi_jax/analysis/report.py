"""`mi-jax analyze RUN_DIR`: load the run, compute its kind's measures, write results and plots.

Each experiment kind has a module `mi_jax.analysis.<kind>_report` with
`analyze_run(traj, out_dir, logger, progress) -> list[str]` (lines telling what was written).
A kind without one gets the training curves only.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

from mi_jax.train.logger import WandbLogger
from mi_jax.train.trajectory import Trajectory


def analyze_run(run_dir: Path, *, wandb: str = "offline", progress: bool = True) -> list[str]:
    from mi_jax.plots import training_curves

    run_dir = Path(run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = Trajectory.load(run_dir, on_corrupt="warn")
    lines = [f"warning: {w.message}" for w in caught]
    out_dir = run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines.append(f"loaded {len(traj)} checkpoints (steps {traj.steps[0]}..{traj.steps[-1]}) from {run_dir}")
    lines.append(f"wrote {training_curves(traj, out_dir / 'training_curves.png')}")
    kind = type(traj.config).kind
    try:
        module = importlib.import_module(f"mi_jax.analysis.{kind}_report")
    except ModuleNotFoundError as e:
        if e.name != f"mi_jax.analysis.{kind}_report":
            raise
        return lines
    logger = WandbLogger(run_dir, traj.config, wandb)
    try:
        lines += module.analyze_run(traj, out_dir, logger=logger, progress=progress)
    finally:
        logger.finish()
    return lines
