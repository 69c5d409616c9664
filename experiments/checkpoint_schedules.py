"""Where each checkpoint schedule puts its snapshots on one grokking run: linear, log-spaced and
adaptive (watching the test accuracy), each with the same budget of about 12 snapshots plus extras.
The figure of experiments/results/checkpoint_schedules.md; prints one JSON line per schedule.

    python experiments/checkpoint_schedules.py checkpoints/schedules experiments/results/checkpoint_schedules.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import mi_jax as mj
from mi_jax.plots import plt, save

SCHEDULES = {
    "linear": {"train.ckpt_schedule": "linear"},
    "log": {"train.ckpt_schedule": "log"},
    "adaptive": {"train.ckpt_watch": "test_acc", "train.ckpt_delta": "0.05", "train.ckpt_extra": "20"},
}


def main(out_dir: Path, figure: Path) -> None:
    base = mj.override(mj.load_preset("grokking_small"), {"train.ckpt_every": "250", "train.eval_every": "10"})
    runs = {}
    for name, settings in SCHEDULES.items():
        run_dir = out_dir / name
        if not (run_dir / "snapshots" / "index.json").exists():
            mj.train(mj.override(base, settings), run_dir, wandb="off", progress=False, overwrite=True)
        runs[name] = mj.Trajectory.load(run_dir)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    traj = runs["linear"]
    ax.plot(traj.metrics["step"], traj.metrics["test_acc"][:, 0], color="black", lw=1, label="test accuracy")
    ax.plot(traj.metrics["step"], traj.metrics["train_acc"][:, 0], color="gray", lw=1, ls="--", label="train accuracy")
    for row, (name, run) in enumerate(runs.items()):
        y = -0.12 - 0.1 * row
        ax.scatter(run.steps, np.full(len(run.steps), y), marker="|", s=60, label=f"{name}: {len(run.steps)} snapshots")
        print(json.dumps({"schedule": name, "snapshots": len(run.steps), "steps": run.steps.tolist()}))
    ax.set(xlabel="step", ylabel="accuracy", title="grokking_small: where each schedule snapshots", ylim=(-0.45, 1.05))
    ax.legend(fontsize=7, loc="center right")
    save(fig, figure)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
