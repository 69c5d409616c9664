"""Induction benchmarks: training ms/step of the induction_2l preset, and all induction measures
over 200 checkpoints, vmapped (`analyze_params`, one compiled call) vs a per-checkpoint loop."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.analysis import induction as ind
from mi_jax.analysis.core import analyze_params
from mi_jax.presets import load
from mi_jax.tasks import make_task
from mi_jax.train.loop import Trainer


def induction_2l_step(n_chunks: int = 3) -> dict:
    """ms per optimiser step of induction_2l (one seed, evaluation every 25 steps included)."""
    cfg = load("induction_2l")
    trainer = Trainer(make_task(cfg), cfg.train)
    state = trainer.init_state()
    state, _ = trainer.run_chunk(state)  # compile
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(n_chunks):
        state, _ = trainer.run_chunk(state)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    steps = n_chunks * cfg.train.ckpt_every
    return {"ms_per_step": round(1e3 * dt / steps, 3), "steps": steps, "batch_size": cfg.train.batch_size,
            "seq_len": cfg.seq_len, "d_model": cfg.model.d_model}


def induction_analysis(n_checkpoints: int = 200) -> dict:
    """Every induction measure on 200 checkpoints (random inits of induction_2l's model):
    vmapped/lax.map in one jitted call vs a Python loop calling each measure (jitted) per checkpoint;
    both include the host-side OV eigenvalues (`induction.finish`)."""
    cfg = load("induction_2l")
    measures, data = ind.make_measures(cfg), ind.probe_data(cfg)
    keys = jax.random.split(jax.random.key(0), n_checkpoints)
    stacked = jax.vmap(lambda k: make_task(cfg).init_params(k))(keys)
    analyze_params(jax.tree.map(lambda x: x[:2], stacked), measures, data)  # compile (another shape: warm caches)
    run = jax.jit(lambda ps: jax.lax.map(lambda p: {n: f(p, data) for n, f in measures.items()}, ps, batch_size=16))
    jax.block_until_ready(run(stacked))
    t0 = time.perf_counter()
    ind.finish(jax.tree.map(np.asarray, run(stacked)))  # OV eigenvalues on the host, as `mi-jax analyze` does
    vmapped = time.perf_counter() - t0
    jitted = {name: jax.jit(lambda p, f=f: f(p, data)) for name, f in measures.items()}
    host = jax.tree.map(np.asarray, stacked)
    one = lambda t: jax.tree.map(lambda x: x[t], host)  # noqa: E731
    for f in jitted.values():
        jax.block_until_ready(f(one(0)))
    t0 = time.perf_counter()
    for t in range(n_checkpoints):
        p = one(t)
        ind.finish({name: np.asarray(f(p)) for name, f in jitted.items()})
    loop = time.perf_counter() - t0
    return {"n_checkpoints": n_checkpoints, "n_measures": len(measures), "vmapped_s": round(vmapped, 3),
            "loop_s": round(loop, 3), "speedup": round(loop / vmapped, 2)}


BENCHMARKS = {"induction_2l_step": induction_2l_step, "induction_analysis": induction_analysis}
