"""Toy models of superposition: training speed against eager PyTorch, and instance throughput.

tms_train          8 instances, 5 -> 2, batch 1024, 10,000 steps, Adam lr 1e-3 (weight decay 0),
                   feature probability 20**-linspace(0, 1, 8), importance 0.9**i. `s_total`: wall
                   seconds of the 10,000 steps after compilation (the Trainer's compiled chunks,
                   no checkpoint I/O); `torch_s`: the peer `benchmarks/peers/torch_tms.py`
                   (ARENA-style eager PyTorch, same model and data law) run in /tmp/peer-tl right
                   after, same steps; `speedup` = torch_s / s_total. Peer threads: $TMS_PEER_THREADS
                   (default 1: on a shared, oversubscribed CPU torch's 2-thread pool spins and runs
                   10-20x slower).
tms_phase_diagram  the n=2, m=1 phase diagram, 20 x 20 = 400 instances, end to end (compile + train
                   into a run dir + classify), and instance-steps/s at 1, 64 and 1024 instances of 5 -> 2.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from chunk_timing import one_chunk
from peer_runs import PEER_SCRIPTS, run_peer

from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig, SuperpositionTask
from mi_jax.training.loop import Trainer


def _timed_steps(cfg: SuperpositionConfig, chunks: int) -> float:
    """Seconds for `chunks` compiled chunks after a compile-and-warm-up chunk on a throwaway state."""
    trainer = Trainer(SuperpositionTask(cfg), cfg.train)
    state, _ = one_chunk(trainer, trainer.init_state())
    jax.block_until_ready(state)
    state = jax.block_until_ready(trainer.init_state())
    t0 = time.perf_counter()
    for _ in range(chunks):
        state, metrics = one_chunk(trainer, state)
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t0


def _peer(steps: int) -> dict:
    threads = os.environ.get("TMS_PEER_THREADS", "1")
    return run_peer(PEER_SCRIPTS / "torch_tms.py", ["--steps", steps, "--threads", threads])


def tms_train() -> dict:
    steps, chunk = 10_000, 1_000
    tc = dataclasses.replace(SUPERPOSITION_TRAIN, steps=steps, eval_every=chunk, ckpt_every=chunk, batch_size=1024)
    cfg = SuperpositionConfig(n_features=5, n_hidden=2, n_probabilities=8, prob_max=1.0, prob_min=0.05,
                    importance_decay=0.9, train=tc)
    s_total = _timed_steps(cfg, steps // chunk)
    row = {"s_total": round(s_total, 3), "ms_per_step": round(1e3 * s_total / steps, 4)}
    peer = _peer(steps)
    if "s_total" in peer:
        row.update(torch_s=peer["s_total"], torch_threads=peer["threads"], speedup=round(peer["s_total"] / s_total, 2))
    else:
        row.update(peer)
    return row


def instance_steps_per_s(n_instances: int, steps: int = 500) -> float:
    tc = dataclasses.replace(SUPERPOSITION_TRAIN, steps=steps, eval_every=steps, ckpt_every=steps, batch_size=1024)
    cfg = SuperpositionConfig(n_features=5, n_hidden=2, n_probabilities=n_instances, importance_decay=0.9,
                    eval_batch=256, train=tc)
    return n_instances * steps / _timed_steps(cfg, 1)


def tms_phase_diagram() -> dict:
    import mi_jax as mj
    from mi_jax.analysis.superposition import classify_two_feature

    cfg = mj.load_preset("tms_phase_diagram")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        mj.train(cfg, Path(tmp) / "run", wandb="off", progress=False)
        traj = mj.Trajectory.load(Path(tmp) / "run")
        phases = np.asarray(jax.vmap(classify_two_feature)(traj.at(-1)["W"]))
        wall = time.perf_counter() - t0
    counts = np.bincount(phases, minlength=3)
    row = {
        "instances": cfg.n_instances, "steps": cfg.train.steps, "batch": cfg.train.batch_size,
        "end_to_end_s": round(wall, 2),
        "not_represented": int(counts[0]), "dedicated": int(counts[1]), "superposed": int(counts[2]),
    }
    for n, steps in ((1, 2000), (64, 500), (1024, 100)):
        row[f"instance_steps_per_s_{n}"] = round(instance_steps_per_s(n, steps))
    return row


BENCHMARKS = {"tms_train": tms_train, "tms_phase_diagram": tms_phase_diagram}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "tms_train": {"figure": "speedup", "at_least": 2, "mi_jax": "s_total", "peer": "torch_s",
                  "peer_name": "eager PyTorch"},
    "tms_phase_diagram": {"mi_jax": "end_to_end_s"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"tms_train": "torch"}
