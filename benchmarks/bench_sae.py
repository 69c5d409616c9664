"""SAEs over training: `saes_over_training`, a TopK SAE for each of 100 checkpoints of a TMS run (20 features
in 5 dimensions, feature probability 0.05), each on its own checkpoint's hidden activations, in one `analyze`
call (compilation included, as `mi-jax sae` runs it), against SAELens training the same SAEs one checkpoint
after another (`benchmarks/peers/saelens_saes.py`, in /tmp/peer-sae), in alternating rounds.

    python benchmarks/bench.py --only saes_over_training        # records the row (see bench.py)
    MI_JAX_BENCH_QUICK=1 python benchmarks/bench_sae.py          # a smoke run: small sizes, one round
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run alone: the shared bench helpers

from checkpoint_loops import first_and_cached  # noqa: E402
from peer_runs import PEER_SCRIPTS, SAELENS_PY, paired_figures, paired_rounds  # noqa: E402

from mi_jax import runtime  # noqa: E402

FEATURE_PROBABILITY = 0.05
SAE = {"d_sae": 40, "k": 2, "steps": 500, "batch_size": 256, "lr": 1e-3}


def quick() -> bool:
    return os.environ.get("MI_JAX_BENCH_QUICK", "") not in ("", "0")


def saes_over_training(n_checkpoints: int = 100, rounds: int = 2) -> dict:
    """`mi_jax_s`: one `analyze` call training a TopK SAE (d_sae 40, k 2, 500 Adam steps of 256 activations,
    lr 1e-3) for each of `n_checkpoints` checkpoints, compilation included (`mi_jax_cached_s`: the same from
    the on-disk compile cache); `saelens_s`: SAELens's SAETrainer on the same checkpoints' W, one after
    another; each side's SAE steps per second, and the median MSE (per element) and L0 both reach."""
    import dataclasses

    import mi_jax as mj
    from mi_jax.analysis.sae import SAEConfig
    from mi_jax.analysis.sae_task import SAESettings, sae_measures, task_for
    from mi_jax.analysis.core import analyze
    from mi_jax.runs.trajectory import Trajectory
    from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig

    if quick():
        n_checkpoints, rounds = 6, 1
    sae = dict(SAE, steps=50) if quick() else SAE
    train = dataclasses.replace(SUPERPOSITION_TRAIN, steps=50 * (n_checkpoints - 1), ckpt_every=50, eval_every=500)
    cfg = SuperpositionConfig(n_features=20, n_hidden=5, feature_probability=(FEATURE_PROBABILITY,), train=train)
    settings = SAESettings(sae=SAEConfig(architecture="topk", **sae), inputs_per_step=sae["batch_size"])
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        mj.train(cfg, folder / "run", wandb="off", progress=False)
        traj = Trajectory.load(folder / "run")
        assert len(traj) == n_checkpoints, traj.steps
        np.save(folder / "W.npy", np.asarray(traj.params["W"][:, 0, 0]))  # [time, hidden, feat] of the one instance
        with runtime.quiet():
            task = task_for(traj.config, settings)
        measure, data = sae_measures(task, settings, "hidden")
        results = {}

        def ours() -> dict:
            first, cached, results["out"] = first_and_cached(lambda: analyze(traj, {"sae": measure}, data))
            return {"first": first, "cached": cached}

        args = ["--series", folder / "W.npy", "--p", FEATURE_PROBABILITY, "--d-sae", sae["d_sae"], "--k", sae["k"],
                "--steps", sae["steps"], "--batch", sae["batch_size"], "--lr", sae["lr"], "--threads", os.cpu_count()]
        paired = paired_rounds(ours, PEER_SCRIPTS / "saelens_saes.py", args, rounds, python=SAELENS_PY)
    row = paired_figures(paired, {"first": "mi_jax_s", "cached": "mi_jax_cached_s"})
    row = {k.replace("transformer_lens", "saelens").replace("tl_s", "saelens_s"): v for k, v in row.items()}
    out = results["out"]
    n_steps = n_checkpoints * sae["steps"]
    row.update(n_checkpoints=n_checkpoints, sae=f"topk d_sae {sae['d_sae']} k {sae['k']}, {sae['steps']} steps of "
               f"{sae['batch_size']}", mi_jax_sae_steps_per_s=round(n_steps / row["mi_jax_s"]),
               mi_jax_mse_median=float(f"{np.median(out['sae/mse']):.3g}"),
               mi_jax_l0_median=float(f"{np.median(out['sae/l0']):.3g}"))
    if paired.get("peer_rows"):
        last = paired["peer_rows"][-1]
        row.update(saelens_sae_steps_per_s=round(n_steps / row["saelens_s"]),
                   saelens_mse_median=float(f"{last['mse_median']:.3g}"), saelens_l0_median=float(f"{last['l0_median']:.3g}"))
    return row


BENCHMARKS = {"saes_over_training": saes_over_training}
# the target and the figures the results page shows beside it; a literal, read by benchmarks/render.py
TARGETS = {
    "saes_over_training": {"figure": "speedup_vs_saelens", "at_least": 5, "mi_jax": "mi_jax_s",
                           "peer": "saelens_s", "peer_name": "SAELens"},
}
PEERS = {"saes_over_training": "sae_lens"}


if __name__ == "__main__":
    import json

    runtime.configure(compile_cache=False)  # as bench.py runs them
    for name in sys.argv[1:] or BENCHMARKS:
        print(json.dumps({"name": name, **BENCHMARKS[name]()}))
