"""`mi-jax analyze RUN_DIR` for toy models of superposition.

Every superposition measure for every instance of every checkpoint and member in one jitted call,
saved to analysis/superposition.npz ([time, member, instance, ...]); then, for each member, figures
of its final checkpoint (2-D geometry when m = 2, W^T W heatmaps, the phase diagram for a
relative-importance sweep, dimensionality vs sparsity), of the training dynamics of D_i for the
sparsest instance, and of the jumps between geometries.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from mi_jax.analysis import superposition as sp
from mi_jax.analysis.core import analyze
from mi_jax.analysis.superposition_dynamics import find_jumps
from mi_jax.io.results import save_results
from mi_jax.io.run_dir import member_key
from mi_jax.models import toy
from mi_jax.plots import superposition as plots
from mi_jax.tasks.superposition import SuperpositionTask

MAX_MEMBER_FIGURES = 8  # members beyond these are in the results, not drawn one by one


def phase_grid(W_final: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """W [instance, hidden, feat] of a probability x relative-importance sweep -> phases [n_prob, n_rel]."""
    return np.asarray(jax.vmap(sp.classify_two_feature)(W_final)).reshape(grid)


def report(traj, out_dir: Path, logger=None) -> list[str]:
    """Compute, save, log and plot the superposition measures of every member of a run."""
    out_dir = Path(out_dir)
    task = SuperpositionTask(traj.config)
    results = analyze(traj, sp.measures(task), task.eval_batch())  # {name: [time, member, instance, ...]}
    lines = [f"wrote {save_results(out_dir.parent, 'superposition', traj.steps, results)}"]
    if logger is not None:
        logger.log_series(traj.steps, {"total_loss": results["loss"].sum(-1),
                                       "mean_dimensionality": results["dimensionality"].mean(-1)})
    for m in range(traj.n_members):
        mine = {k: np.asarray(v)[:, m] for k, v in results.items()}
        lines += _member_report(traj, m, mine, out_dir, draw=m < MAX_MEMBER_FIGURES)
    return lines


def _member_report(traj, m: int, results: dict, out_dir: Path, draw: bool) -> list[str]:
    """Member m's final geometry, dimensionality and jumps; results {name: [time, instance, ...]}."""
    cfg, steps, label, suffix = traj.config, traj.steps, traj.member_label(m), member_key(traj.members[m])
    W = np.asarray(toy.features(traj.at(-1, m)))  # [instance, hidden, feat]
    p = cfg.instance_probability()
    D, dpf = results["dimensionality"][-1], results["dims_per_feature"][-1]
    n_prob, n_rel = cfg.grid
    rows = np.arange(n_prob) * n_rel + n_rel // 2  # one instance per probability level (the middle importance)
    pick = rows[np.linspace(0, n_prob - 1, min(n_prob, 8)).round().astype(int)]
    titles = [f"1-S={p[k]:.3g}" for k in pick]
    lines = []
    if n_rel > 1:
        phases = phase_grid(W, cfg.grid)
        counts = np.bincount(phases.ravel(), minlength=3)
        lines.append(f"{label}: not represented {counts[0]}, dedicated {counts[1]}, superposed {counts[2]}")
    else:
        lines.append(f"{label}: sum_i D_i per instance: " + " ".join(f"{s:.2f}" for s in D.sum(-1)))
    jumps = [find_jumps(steps, results["dimensionality"][:, k], results["loss"][:, k]) for k in range(D.shape[0])]
    lines.append(f"{label}: jumps between D_i plateaus: {sum(map(len, jumps))} in {sum(map(bool, jumps))} "
                 f"of {len(jumps)} instances")
    lines += [f"  instance {k} step {j.step_from}->{j.step_to}: D {np.round(j.D_before, 2)} -> "
              f"{np.round(j.D_after, 2)}, loss {j.loss_before:.4g} -> {j.loss_after:.4g}"
              for k, js in enumerate(jumps) for j in js]
    if not draw:
        return lines
    paths = []
    if cfg.n_hidden == 2:
        paths.append(plots.geometry_2d(W[pick], titles, out_dir / f"geometry_2d_{suffix}.png"))
    if cfg.n_features <= 64:
        G = np.einsum("ihf,ihg->ifg", W[pick], W[pick])
        paths.append(plots.gram_heatmaps(G, results["feature_norm"][-1][pick], titles, out_dir / f"gram_{suffix}.png"))
    if n_rel > 1:
        paths.append(plots.phase_diagram(phases, cfg.probabilities, cfg.rel_importances,
                                         out_dir / f"phase_diagram_{suffix}.png"))
    else:
        paths.append(plots.dimensionality_vs_sparsity(p, D, dpf, out_dir / f"dimensionality_{suffix}.png"))
    k = rows[-1]
    paths.append(plots.dimensionality_dynamics(steps, results["dimensionality"][:, k], results["loss"][:, k],
                                               f"{label}, instance {k}: 1-S={p[k]:.3g}",
                                               out_dir / f"dimensionality_dynamics_{suffix}.png"))
    # the instances whose last jump comes latest (the longest metastable plateaus)
    late = sorted((k for k in range(len(jumps)) if jumps[k]), key=lambda k: -jumps[k][-1].step_from)[:4]
    if late:
        paths.append(plots.dimensionality_jumps(steps, results["dimensionality"][:, late], results["loss"][:, late],
                                                [f"instance {k}: 1-S={p[k]:.3g}" for k in late],
                                                [jumps[k] for k in late], out_dir / f"dimensionality_jumps_{suffix}.png"))
    return lines + [f"wrote {path}" for path in paths]
