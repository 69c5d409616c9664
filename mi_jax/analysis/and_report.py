"""`mi-jax analyze RUN_DIR` for boolean-AND runs ("and"): accuracy measures over the checkpoint
series (one jitted call), the random-construction baseline at the same width, and a plot."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from mi_jax.analysis.core import analyze, save_results
from mi_jax.models import toy
from mi_jax.plots import save
from mi_jax.tasks.boolean_and import ANDTask, best_random_construction, metrics


def measures() -> dict:
    def fn(name):
        return lambda params, data: metrics(toy.apply_mlp(params, data[0]), data[1], data[0])[name]

    return {name: fn(name) for name in ("acc", "tpr", "fpr", "max_err")}


def analyze_run(traj, out_dir: Path, logger=None, progress: bool = True) -> list[str]:
    cfg = traj.config
    task = ANDTask(cfg)
    data = (jnp.asarray(task.x), jnp.asarray(task.labels))
    results = analyze(traj, measures(), data)
    lines = [f"wrote {save_results(Path(out_dir).parent, 'and', traj.steps, results)}"]
    if logger is not None:
        logger.log_series(traj.steps, results)
    rand = best_random_construction(cfg.n_inputs, cfg.n_hidden)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, color in (("acc", "tab:blue"), ("tpr", "tab:green"), ("fpr", "tab:red")):
        values = results[name]
        ax.plot(traj.steps, values if values.ndim == 1 else values.mean(1), color=color, label=f"trained {name}")
        ax.axhline(rand[name], color=color, ls="--", lw=0.8, label=f"random construction {name}")
    ax.set(xlabel="step", ylim=(-0.02, 1.02),
           title=f"AND of {cfg.n_pairs} pairs of {cfg.n_inputs} inputs, {cfg.n_hidden} neurons")
    ax.legend(fontsize=6)
    lines.append(f"wrote {save(fig, Path(out_dir) / 'and_accuracy.png')}")
    final = {k: float(np.mean(v[-1])) for k, v in results.items()}
    lines.append("final: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items())
                 + f"; random construction (q={rand['q']}): acc {rand['acc']:.4g}, fpr {rand['fpr']:.4g}")
    return lines
