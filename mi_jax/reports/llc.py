"""`mi-jax llc RUN_DIR`: the LLC (with chain diagnostics), top Hessian eigenvalues and Hessian trace of
every checkpoint and member in one compiled call, saved to RUN_DIR/analysis/llc.npz ([time, member, ...])
and llc_summary.json, drawn in llc.png; with `--calibrate`, first a grid of sampler settings on a few
checkpoints (llc_calibration.json and .png).

A separate command, not part of `mi-jax analyze`: sampling costs minutes and has settings of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from mi_jax import config as config_lib
from mi_jax.analysis import llc, llc_task
from mi_jax.analysis import llc_diagnostics as diag
from mi_jax.analysis.core import analyze, showing_progress
from mi_jax.analysis.llc_task import LLCSettings
from mi_jax.io.results import json_number, save_results, save_summary
from mi_jax.io.wandb_logger import WandbLogger
from mi_jax.plots import llc as plots
from mi_jax.reports import opened
from mi_jax.tasks import make_task

RESULTS_NAME = "llc"

def measure(traj, settings: LLCSettings, task=None) -> tuple[dict, diag.LLCDiagnostics, int]:
    """(results {name: [time, member, ...]}, the chains' diagnostics, d) over the checkpoints of `traj`.
    task: whose loss (default: the run's own)."""
    task = make_task(traj.config) if task is None else task
    llc_task.check_series_fits(traj.config, traj.at(0), task)
    data = llc_task.training_set(task, settings)
    n_params = llc_task.n_trained(task, traj.at(0))
    with traj.config.train.precision():
        # on CPU the members one at a time: vmapped, their chains and Hessian probes outgrow host memory
        results = analyze(traj, llc_task.measures(task, settings, data),
                          members_in_turn=jax.default_backend() == "cpu")
    results = {k: np.asarray(v) for k, v in results.items()}
    checks = diag.diagnose(results, settings.llc.resolved_n_beta, n_params, steps=traj.steps, warn=False)  # the report prints them
    return results, checks, n_params


def summary(traj, settings, results, checks, n_params) -> dict:
    """The JSON summary: settings, d, and per member the LLC curve (null where no chain was ok), the
    Hessian curves, and each flagged checkpoint with its flagged chains named."""
    members = []
    for m in range(traj.n_members):
        flagged = []
        for t in np.flatnonzero(~checks.usable[:, m]):
            bad = {str(c): diag.STATUS[s] for c, s in enumerate(checks.status[t, m]) if s != diag.OK}
            flagged.append({"step": int(traj.steps[t]), "checkpoint": int(t), "chains": bad})
        members.append({
            **traj.members[m],
            "llc_mean": [json_number(x) for x in checks.llc_mean[:, m]],
            "llc_std": [json_number(x) for x in checks.llc_std[:, m]],
            "r_hat": [json_number(x) for x in checks.r_hat[:, m]],
            "hessian_top": [json_number(x) for x in results["hessian_top"][:, m, 0]],
            "hessian_trace": [json_number(x) for x in results["hessian_trace"][:, m]],
            "flagged": flagged,
        })
    return {"steps": [int(s) for s in traj.steps], "n_params": n_params,
            "n_beta": settings.llc.resolved_n_beta, "settings": config_lib.to_dict(settings),
            "n_flagged_checkpoints": int((~checks.usable).sum()), "warnings": list(checks.messages),
            "members": members}


def report(traj, out_dir: Path, settings: LLCSettings, logger=None) -> list[str]:
    """Compute, save, log and draw the LLC and Hessian of every member of a run -> lines to print."""
    out_dir = Path(out_dir)
    traj = traj.thinned(settings.every)
    results, checks, n_params = measure(traj, settings)
    saved = {**results, "chain_status": checks.status, "llc_mean": checks.llc_mean, "llc_std": checks.llc_std,
             "llc_mean_finite_chains": results["llc_mean"], "r_hat": checks.r_hat, "ess": checks.ess,
             "usable": checks.usable}
    path = save_results(out_dir.parent, RESULTS_NAME, traj.steps, saved)
    lines = [f"wrote {path} (LLC, Hessian top-{settings.hessian_k}, trace x {len(traj)} checkpoints x "
             f"{traj.n_members} members; d = {n_params} trained params, n_beta = {settings.llc.resolved_n_beta:.4g})"]
    lines += [f"warning: {line}" for line in checks.messages]
    lines.append(f"wrote {save_summary(out_dir.parent, RESULTS_NAME, summary(traj, settings, results, checks, n_params))}")
    if logger is not None:
        logger.log_series(traj.steps, {"llc": checks.llc_mean, "hessian_top": results["hessian_top"][..., 0],
                                       "hessian_trace": results["hessian_trace"]})
    metrics = {k: np.asarray(v, float) for k, v in traj.metrics.items() if k in ("train_loss", "test_loss")}
    labels = [traj.member_label(m) for m in range(traj.n_members)]
    figure = plots.llc_over_training(
        traj.steps, checks.llc_mean.T, checks.llc_std.T, results["llc_mean"].T, checks.usable.T,
        np.asarray(traj.metrics["step"]), {k: v.T for k, v in metrics.items()},
        results["hessian_top"][..., 0].T, results["hessian_trace"].T, labels, out_dir / f"{RESULTS_NAME}.png")
    return lines + [f"wrote {figure}"]


def calibration(traj, settings: LLCSettings, epsilons, gammas=None, n_betas=None, checkpoints=None,
                task=None) -> dict:
    """`llc.calibrate` on a few checkpoints of member 0 (default: first, middle, last), one compiled call.
    -> {"checkpoints": [steps], "grid": {epsilon, gamma, n_beta: [eps, gamma, n_beta]}, "rows": one list of
    `calibration_report` rows per checkpoint, "stable": [eps, gamma, n_beta] stable at every checkpoint}."""
    task = make_task(traj.config) if task is None else task
    llc_task.check_series_fits(traj.config, traj.at(0), task)
    data = llc.checked_train_data(llc_task.training_set(task, settings), settings.llc)
    chosen = np.unique([0, len(traj) // 2, len(traj) - 1] if checkpoints is None else checkpoints)
    loss, _ = llc_task.calibration_loss(task, traj.at(0))  # frozen leaves stay as initialised: checkpoint 0's
    trained = [llc_task.split_frozen(task, traj.at(int(t)))[0] for t in chosen]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *trained)
    n_params = llc_task.n_trained(task, traj.at(0))
    with traj.config.train.precision():
        grid = llc.calibrate(loss, data, stacked, settings.llc, epsilons, gammas, n_betas, stacked=True)
    axes = ("epsilon", "gamma", "n_beta")
    rows = [diag.calibration_report({k: (v if k in axes else v[i]) for k, v in grid.items()}, n_params)
            for i in range(len(chosen))]
    stable = np.array([[r["stable"] for r in per] for per in rows]).all(0).reshape(grid["epsilon"].shape)
    return {"checkpoints": [int(traj.steps[t]) for t in chosen], "n_params": n_params,
            "grid": {k: grid[k] for k in axes}, "rows": rows, "stable": stable}


def calibration_report(traj, out_dir: Path, settings: LLCSettings, epsilons=None, gammas=None,
                       n_betas=None) -> list[str]:
    """Run `calibration`, save its rows (JSON) and draw the stable/unstable heatmap -> lines to print.
    epsilons, gammas: the grid (default: llc.epsilon x 0.1, 0.3, 1, 3, 10 and llc.gamma x 0.1, 1, 10)."""
    epsilons = epsilons or [settings.llc.epsilon * f for f in (0.1, 0.3, 1.0, 3.0, 10.0)]
    gammas = gammas or [settings.llc.gamma * f for f in (0.1, 1.0, 10.0)]
    out = calibration(traj, settings, epsilons, gammas, n_betas)
    grid, stable = out["grid"], out["stable"]
    doc = {"checkpoints": out["checkpoints"], "n_params": out["n_params"], "settings": config_lib.to_dict(settings),
           "stable_settings": [{k: float(grid[k][idx]) for k in grid} for idx in zip(*np.nonzero(stable))],
           "rows": [{"step": s, "rows": [{k: json_number(v) if isinstance(v, float) else v for k, v in r.items()}
                                         for r in rows]} for s, rows in zip(out["checkpoints"], out["rows"])]}
    path = out_dir / f"{RESULTS_NAME}_calibration.json"
    path.write_text(json.dumps(doc, indent=1))
    llc_last = np.array([r["llc_mean"] for r in out["rows"][-1]]).reshape(stable.shape)
    figure = plots.calibration_heatmap(grid, stable, llc_last, out["checkpoints"], out_dir / f"{RESULTS_NAME}_calibration.png")
    n_stable = len(doc["stable_settings"])
    return [f"calibration at steps {out['checkpoints']}: {n_stable} of {stable.size} settings stable at all of them",
            *[f"  stable: {s}" for s in doc["stable_settings"]], f"wrote {path}", f"wrote {figure}"]


def parse_grid(text: str | None, name: str) -> list[float] | None:
    """`1e-4,3e-4,1e-3` -> [1e-4, 3e-4, 1e-3]; one line for anything else."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise config_lib.ConfigError(f"--{name} expects comma-separated numbers, got {text!r}") from None
    config_lib.check(bool(values), f"--{name} expects comma-separated numbers, got {text!r}")
    return values


def llc_run(run_dir, sets: dict[str, str] | None = None, calibrate: bool = False, epsilons=None, gammas=None,
            n_betas=None, *, wandb: str = "offline", progress: bool = False) -> list[str]:
    """The whole `mi-jax llc` command: load, (calibrate,) compute, save, log, draw -> lines to print."""
    with opened(run_dir) as (traj, out_dir, lines), showing_progress(progress):
        settings = llc_task.settings_for(make_task(traj.config), sets)
        if settings.member is not None:  # before the calibration, which samples the run's first member
            config_lib.check(settings.member < traj.n_members,
                             f"member={settings.member} is out of range: the run has {traj.n_members} member"
                             + "s" * (traj.n_members > 1))
            traj = traj.select_members([settings.member])
        if calibrate:
            lines += calibration_report(traj, out_dir, settings, epsilons, gammas, n_betas)
        logger = WandbLogger(traj.run_dir, traj.config, wandb, members=list(traj.members))
        try:
            return lines + report(traj, out_dir, settings, logger=logger)
        finally:
            logger.finish()
