"""`mi-jax analyze RUN_DIR` for toy models of superposition ("tms" runs).

Every superposition measure for every instance of every checkpoint in one jitted call, saved to
analysis/superposition.npz ([time, instance, ...]); then plots of the final checkpoint (2-D
geometry when m = 2, W^T W heatmaps, the phase diagram for a relative-importance sweep,
dimensionality vs sparsity) and of the training dynamics of D_i for the sparsest instance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.analysis import superposition as sp
from mi_jax.analysis.core import analyze, save_results
from mi_jax.analysis.tms_dynamics import find_jumps
from mi_jax.models import toy
from mi_jax.plots import superposition as plots
from mi_jax.tasks.superposition import TMSTask


def _seed0(traj):
    """Results and params without the seed axis (member 0 of an ensemble)."""
    return traj if not traj.ensemble else type(traj)(
        traj.steps, {k: v[:, 0] for k, v in traj.params.items()}, traj.config, traj.metrics, traj.run_dir)


def phase_grid(W_final: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """W [instance, hidden, feat] of a probability x relative-importance sweep -> phases [n_prob, n_rel]."""
    import jax

    return np.asarray(jax.vmap(sp.classify_two_feature)(W_final)).reshape(grid)


def analyze_run(traj, out_dir: Path, logger=None, progress: bool = True) -> list[str]:
    out_dir = Path(out_dir)
    cfg = traj.config
    task = TMSTask(cfg)
    traj = _seed0(traj)
    results = analyze(traj, sp.measures(task), task.eval_batch())
    lines = [f"wrote {save_results(out_dir.parent, 'superposition', traj.steps, results)}"]
    if logger is not None:
        logger.log_series(traj.steps, {"total_loss": results["loss"].sum(-1),
                                       "mean_dimensionality": results["dimensionality"].mean(-1)})
    final = traj.at(-1)
    W = np.asarray(toy.features(final))  # [instance, hidden, feat]
    p = cfg.instance_probability()
    D, dpf = results["dimensionality"][-1], results["dims_per_feature"][-1]
    n_prob, n_rel = cfg.grid
    # one instance per probability level (the middle relative importance)
    rows = np.arange(n_prob) * n_rel + n_rel // 2
    pick = rows[np.linspace(0, n_prob - 1, min(n_prob, 8)).round().astype(int)]
    titles = [f"1-S={p[k]:.3g}" for k in pick]
    if cfg.n_hidden == 2:
        lines.append(f"wrote {plots.geometry_2d(W[pick], titles, out_dir / 'geometry_2d.png')}")
    if cfg.n_features <= 64:
        G = np.einsum("ihf,ihg->ifg", W[pick], W[pick])
        norms = results["feature_norm"][-1][pick]
        lines.append(f"wrote {plots.gram_heatmaps(G, norms, titles, out_dir / 'gram.png')}")
    if n_rel > 1:
        phases = phase_grid(W, cfg.grid)
        path = plots.phase_diagram(phases, cfg.probabilities, cfg.rel_importances, out_dir / "phase_diagram.png")
        counts = np.bincount(phases.ravel(), minlength=3)
        lines.append(f"wrote {path} (not represented {counts[0]}, dedicated {counts[1]}, superposed {counts[2]})")
    else:
        path = plots.dimensionality_vs_sparsity(p, D, dpf, out_dir / "dimensionality.png")
        lines.append(f"wrote {path}")
        lines.append("sum_i D_i per instance: " + " ".join(f"{s:.2f}" for s in D.sum(-1)))
    k = rows[-1]
    path = plots.dimensionality_dynamics(traj.steps, results["dimensionality"][:, k], results["loss"][:, k],
                                         f"instance {k}: 1-S={p[k]:.3g}", out_dir / "dimensionality_dynamics.png")
    lines.append(f"wrote {path}")
    lines += _jumps(traj.steps, results["dimensionality"], results["loss"], p, out_dir)
    return lines


def _jumps(steps, D, loss, p, out_dir: Path) -> list[str]:
    """Jumps between geometries per instance (D [time, instance, feat]); plot up to 4 instances that jump."""
    jumps = [find_jumps(steps, D[:, k], loss[:, k]) for k in range(D.shape[1])]
    lines = [f"jumps between D_i plateaus: {sum(map(len, jumps))} in {sum(map(bool, jumps))} of {len(jumps)} instances"]
    lines += [f"  instance {k} step {j.step_from}->{j.step_to}: D {np.round(j.D_before, 2)} -> {np.round(j.D_after, 2)}, "
              f"loss {j.loss_before:.4g} -> {j.loss_after:.4g}" for k, js in enumerate(jumps) for j in js]
    # the instances whose last jump comes latest (the longest metastable plateaus)
    pick = sorted((k for k in range(len(jumps)) if jumps[k]), key=lambda k: -jumps[k][-1].step_from)[:4]
    if pick:
        path = plots.dimensionality_jumps(steps, D[:, pick], loss[:, pick],
                                          [f"instance {k}: 1-S={p[k]:.3g}" for k in pick],
                                          [jumps[k] for k in pick], out_dir / "dimensionality_jumps.png")
        lines.append(f"wrote {path}")
    return lines
