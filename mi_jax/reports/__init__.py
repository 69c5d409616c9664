"""Reports: what `mi-jax analyze RUN_DIR` computes, writes and draws for each experiment kind, and the
registry of them (kind name -> report), which the built-in kinds join here as every other kind does.

A report is `report(traj, out_dir, logger=None) -> list[str]` (lines telling what was written): it
runs the kind's measures (`mi_jax.analysis`) over every checkpoint and member, then saves the results
(npz, summary JSON), logs them to wandb and draws the figures. `analyze_run` is the whole command: the
training curves of any run, then its kind's report, then for a fine-tuned run (`init_from` in its
config) the fine-tune's report (`finetune`: change from the base, patching from it). `llc` is
`mi-jax llc`'s report (LLC and Hessian over the checkpoints) and `sweep` that of a sweep dir.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Callable

from mi_jax.analysis.core import showing_progress
from mi_jax.config import check
from mi_jax.io import CheckpointError
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.wandb_logger import WandbLogger
from mi_jax.plots import training_curves
from mi_jax.reports import boolean_and, finetune, grokking, induction, language, superposition
from mi_jax.reports import sweep as sweep_report
from mi_jax.runs import sweep as sweep_lib
from mi_jax.runs.trajectory import Trajectory

Report = Callable[..., list[str]]

REPORTS: dict[str, Report] = {
    "grokking": grokking.report,
    "induction": induction.report,
    "superposition": superposition.report,
    "boolean_and": boolean_and.report,
    "language": language.report,
}


def register(kind: str, report: Report) -> None:
    """Register `report(traj, out_dir, logger=None) -> lines` as what `mi-jax analyze` runs for `kind`."""
    check(callable(report), f"the report of kind {kind!r} must be a function (traj, out_dir, logger=None) -> lines")
    REPORTS[kind] = report


@contextlib.contextmanager
def opened(run_dir, what: str = "analysing"):
    """A run dir loaded under its lock for analysis -> (traj, out_dir RUN_DIR/analysis, lines to print:
    the load's warnings and what was loaded)."""
    run_dir = Path(run_dir)
    if not run_dir_lib.is_run_dir(run_dir):
        raise CheckpointError(f"{run_dir} is not a mi_jax run dir (no {run_dir_lib.CONFIG})")
    with run_dir_lib.lock(run_dir, what):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traj = Trajectory.load(run_dir, on_corrupt="warn")
        lines = [f"warning: {w.message}" for w in caught]
        out_dir = run_dir / run_dir_lib.ANALYSIS
        out_dir.mkdir(parents=True, exist_ok=True)
        lines.append(f"loaded {len(traj)} checkpoints (steps {traj.steps[0]}..{traj.steps[-1]}) of "
                     f"{traj.n_members} member(s) from {run_dir}")
        yield traj, out_dir, lines


def analyze_run(run_dir, *, wandb: str = "offline", progress: bool = False) -> list[str]:
    """Analyse a run dir under its lock: training curves, then its kind's report, then (a fine-tuned run)
    the fine-tune's report -> lines to print. A sweep dir: each program's run dir so, then the sweep's
    summary against its grid. `progress`: a progress bar over long series."""
    if sweep_lib.is_sweep_dir(run_dir):
        sweep = sweep_lib.Sweep.load(run_dir)
        lines = [line for traj in sweep.trajectories for line in analyze_run(traj.run_dir, wandb=wandb, progress=progress)]
        return lines + sweep_report.report(sweep)
    with opened(run_dir) as (traj, out_dir, lines), showing_progress(progress):
        lines.append(f"wrote {training_curves(traj, out_dir / 'training_curves.png')}")
        kind = type(traj.config).kind
        report = REPORTS.get(kind)
        if report is None:
            lines.append(f"no report registered for kind {kind!r}: training curves only "
                         "(register one with mj.register_kind(..., report=fn))")
            if traj.init_from is None:
                return lines
        logger = WandbLogger(run_dir, traj.config, wandb, members=list(traj.members))
        try:
            if report is not None:
                lines += report(traj, out_dir, logger=logger)
            if traj.init_from is not None:
                lines += finetune.report(traj, out_dir, logger=logger)
        finally:
            logger.finish()
        return lines
