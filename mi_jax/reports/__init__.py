"""Reports: what `mi-jax analyze RUN_DIR` computes, writes and draws, one module per experiment kind.

Each kind's module has `report(traj, out_dir, logger) -> list[str]` (lines telling what was
written): it runs the kind's measures (`mi_jax.analysis`) over every checkpoint and member, then
saves the results (npz, summary JSON), logs them to wandb and draws the figures. `mi_jax.kinds`
names each kind's report; `analyze_run` is the whole command. `landscape` is `mi-jax llc`'s report
(LLC and Hessian over the checkpoints), for every kind whose task has a fixed training set.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mi_jax.io import store
from mi_jax.io.lock import run_dir_lock
from mi_jax.io.wandb_logger import WandbLogger
from mi_jax.plots import training_curves


def analyze_run(run_dir, *, wandb: str = "offline") -> list[str]:
    """Analyse a run dir under its lock: training curves, then its kind's report -> lines to print.
    A sweep dir: each program's run dir so, then the sweep's summary against its grid."""
    # imported here, not above: mi_jax.kinds (which the trajectory loader uses) imports this package
    from mi_jax.io.trajectory import Trajectory
    from mi_jax.kinds import kind_of

    run_dir = Path(run_dir)
    from mi_jax.training.sweep import Sweep, is_sweep_dir

    if is_sweep_dir(run_dir):  # every program's report, then the measures against the swept values
        from mi_jax.reports import sweep as sweep_report

        return sweep_report.report(Sweep.load(run_dir), wandb=wandb)
    if not (run_dir / store.CONFIG).exists():
        raise store.CheckpointError(f"{run_dir} is not a mi_jax run dir (no {store.CONFIG})")
    with run_dir_lock(run_dir, "analysing"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traj = Trajectory.load(run_dir, on_corrupt="warn")
        lines = [f"warning: {w.message}" for w in caught]
        out_dir = run_dir / "analysis"
        out_dir.mkdir(parents=True, exist_ok=True)
        lines.append(f"loaded {len(traj)} checkpoints (steps {traj.steps[0]}..{traj.steps[-1]}) of "
                     f"{traj.n_members} member(s) from {run_dir}")
        lines.append(f"wrote {training_curves(traj, out_dir / 'training_curves.png')}")
        logger = WandbLogger(run_dir, traj.config, wandb, members=list(traj.members))
        try:
            lines += kind_of(traj.config).report(traj, out_dir, logger=logger)
        finally:
            logger.finish()
        return lines
