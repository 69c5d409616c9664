"""`mi-jax analyze RUN_DIR` for computation in superposition (boolean_and): accuracy measures of every
member over the checkpoint series (one jitted call), the random-construction baseline at the same
width, and a figure."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from mi_jax.analysis import boolean_and
from mi_jax.analysis.core import analyze
from mi_jax.io.results import save_results
from mi_jax.plots.boolean_and import accuracy_over_training
from mi_jax.tasks.boolean_and import all_inputs, best_random_construction


def report(traj, out_dir: Path, logger=None) -> list[str]:
    """Compute, save, log and plot the AND accuracy measures of every member of a run."""
    cfg, out_dir = traj.config, Path(out_dir)
    x, labels = all_inputs(cfg.n_inputs)
    results = analyze(traj, boolean_and.measures(), (jnp.asarray(x), jnp.asarray(labels)))  # [time, member]
    lines = [f"wrote {save_results(out_dir.parent, 'boolean_and', traj.steps, results)}"]
    if logger is not None:
        logger.log_series(traj.steps, results)
    rand = best_random_construction(cfg.n_inputs, cfg.n_hidden)
    title = f"AND of {cfg.n_pairs} pairs of {cfg.n_inputs} inputs, {cfg.n_hidden} neurons"
    lines.append(f"wrote {accuracy_over_training(traj.steps, results, rand, title, out_dir / 'and_accuracy.png')}")
    for m in range(traj.n_members):
        final = ", ".join(f"{k} {v[-1, m]:.4g}" for k, v in results.items())
        lines.append(f"{traj.member_label(m)}: final {final}")
    lines.append(f"random construction (q={rand['q']}): acc {rand['acc']:.4g}, fpr {rand['fpr']:.4g}")
    return lines
