"""Training speed: grokking_p113 step time against the matmul peak (and TransformerLens), checkpoint
overhead, ensemble throughput."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from chunk_timing import time_chunks
from peer_runs import PEER_SCRIPTS, run_peer

from mi_jax import presets
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.series import read_index
from mi_jax.tasks.grokking import GrokkingTask
from mi_jax.training import loop
from mi_jax.training.chunk import draw
from mi_jax.training.optimizer import make_optimizer


def _with_train(cfg, **changes):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = min(_timed(lambda: dot(a, a).block_until_ready()) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_flops(task) -> float:
    """XLA's count of floating-point operations in one training step (forward, backward, AdamW)."""
    tx = make_optimizer(task.cfg.train, task.init_params(jax.random.key(0)), task.frozen,
                             warm_up=task.cfg.train.warmup_steps > 0)

    def step(params, opt_state, batch):
        grads = jax.grad(task.loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state

    params = task.init_params(jax.random.key(0))
    batch = draw(task, getattr(task, "shared_data", None), jax.random.key(0), jnp.int32(0))
    cost = jax.jit(step).lower(params, tx.init(params), batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def transformer_lens_ms_per_step(steps: int = 20) -> float | None:
    """TransformerLens HookedTransformer on the same config, in its own venv (None if unavailable)."""
    out = run_peer(PEER_SCRIPTS / "tl_grok_step.py", ["--steps", steps, "--warmup", 3, "--threads", os.cpu_count()])
    return out.get("ms_per_step")


def grokking_p113_step() -> dict:
    cfg = _with_train(presets.load("grokking_p113"), eval_every=50, ckpt_every=50)
    task = GrokkingTask(cfg)
    with jax.enable_x64(True):
        trainer = loop.Trainer(task, cfg.train)
        elapsed, _ = time_chunks(trainer, trainer.init_state(), n_chunks=4)
        flops = step_flops(task)
    ms = 1e3 * elapsed / (4 * 50)
    peak = matmul_peak_gflops()
    row = {
        "ms_per_step": round(ms, 2),
        "gflop_per_step": round(flops / 1e9, 2),
        "achieved_gflops": round(flops / 1e9 / (ms / 1e3), 1),
        "matmul_peak_gflops": round(peak, 1),
        "backend": jax.default_backend(),
    }
    tl = transformer_lens_ms_per_step()
    if tl is not None:
        row.update(transformer_lens_ms_per_step=tl, speedup_vs_transformer_lens=round(tl / ms, 2))
    return row


def checkpoint_overhead() -> dict:
    """Wall time of 1,000 grokking_p113 steps with a snapshot + train state every 100, against the
    same compiled chunks with no checkpointing at all."""
    cfg = _with_train(presets.load("grokking_p113"), steps=1000, eval_every=100, ckpt_every=100)
    task = GrokkingTask(cfg)
    with jax.enable_x64(True):
        trainer = loop.Trainer(task, cfg.train)
        bare, _ = time_chunks(trainer, trainer.init_state(), n_chunks=10)
        with tempfile.TemporaryDirectory() as tmp:
            loop.train_task(task, Path(tmp) / "warm", progress=False, stop_after_chunks=1)  # compile
            t0 = time.perf_counter()
            loop.train_task(task, Path(tmp) / "run", progress=False)
            with_ckpt = time.perf_counter() - t0
            n_snapshots = len(read_index(Path(tmp) / "run" / run_dir_lib.SNAPSHOTS)["steps"])
    return {
        "with_ckpt_s": round(with_ckpt, 2),
        "without_ckpt_s": round(bare, 2),
        "overhead_pct": round(100 * (with_ckpt - bare) / bare, 1),
        "snapshots": n_snapshots,
        "steps": 1000,
    }


def ensemble() -> dict:
    """grokking_small: steps/s of one seed against 8 seeds trained as one vmapped program, on one
    device and with the seeds split over the local devices (`data_parallel`)."""
    out = {"devices": jax.local_device_count()}
    for n, split in ((1, False), (8, False), (8, True)):
        cfg = _with_train(presets.load("grokking_small"), seeds=tuple(range(n)) if n > 1 else None,
                          eval_every=50, ckpt_every=50, data_parallel=split)
        with jax.enable_x64(True):
            trainer = loop.Trainer(GrokkingTask(cfg), cfg.train)
            elapsed, _ = time_chunks(trainer, trainer.init_state(), n_chunks=4)
        name = f"{n}_seeds_split" if split else f"{n}_seeds"
        out[f"steps_per_s_{name}"] = round(200 / elapsed, 1)
        out[f"seed_steps_per_s_{name}"] = round(n * 200 / elapsed, 1)
    out["throughput_gain_8_vs_1"] = round(out["seed_steps_per_s_8_seeds"] / out["seed_steps_per_s_1_seeds"], 2)
    out["throughput_gain_8_split_vs_1"] = round(out["seed_steps_per_s_8_seeds_split"] / out["seed_steps_per_s_1_seeds"], 2)
    return out


BENCHMARKS = {
    "grokking_p113_step": grokking_p113_step,
    "checkpoint_overhead": checkpoint_overhead,
    "ensemble": ensemble,
}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "grokking_p113_step": {"figure": "speedup_vs_transformer_lens", "at_least": 3, "mi_jax": "ms_per_step",
                           "peer": "transformer_lens_ms_per_step", "peer_name": "TransformerLens"},
    "checkpoint_overhead": {"figure": "overhead_pct", "at_most": 5, "mi_jax": "with_ckpt_s",
                            "peer": "without_ckpt_s", "peer_name": "no checkpointing"},
    "ensemble": {"figure": "throughput_gain_8_split_vs_1", "mi_jax": "seed_steps_per_s_8_seeds_split",
                 "peer": "seed_steps_per_s_1_seeds", "peer_name": "one seed"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"grokking_p113_step": "transformer_lens"}
