"""Induction benchmarks: training ms/step of the induction_2l preset, and all induction measures
over 200 checkpoints in one compiled call (`analyze_params`) against the TransformerLens loop."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from checkpoint_loops import agree, first_and_cached, loop_seconds
from chunk_timing import time_chunks
from peer_runs import PEER_SCRIPTS, ServedPeer, paired_figures, paired_rounds

from mi_jax.analysis import induction as ind
from mi_jax.analysis.core import analyze_params, evaluate_measures
from mi_jax.presets import load
from mi_jax.tasks import make_task
from mi_jax.training.loop import Trainer


def induction_2l_step(rounds: int = 8) -> dict:
    """ms per optimiser step of induction_2l (one seed, its evaluation every 25 steps included):
    `ms_per_step` as the preset trains (each batch split over the local devices, `data_parallel`),
    `one_device_ms_per_step` without the split, and TransformerLens doing the same steps and
    evaluations. Paired: each round times one 25-step chunk of each, one after the other, and the
    speedups are medians of the per-round ratios (this machine's speed drifts between rounds)."""
    cfg = load("induction_2l")
    one_device = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data_parallel=False))
    chunk = cfg.train.ckpt_every
    trainers, states = {}, {}
    for name, c in (("split", cfg), ("one", one_device)):
        trainers[name] = Trainer(make_task(c), c.train)
        _, states[name] = time_chunks(trainers[name], trainers[name].init_state(), 1)  # compiled and warm
    m = cfg.transformer
    peer = ServedPeer(PEER_SCRIPTS / "tl_induction_step.py", [
        "--threads", os.cpu_count(), "--layers", m.n_layers, "--d-model", m.d_model, "--heads", m.n_heads,
        "--d-head", m.d_head, "--vocab", cfg.d_vocab, "--seq", cfg.seq_len, "--batch", cfg.train.batch_size,
        "--lr", cfg.train.lr, "--eval-every", cfg.train.eval_every, "--n-eval", cfg.n_eval])
    ms = {"split": [], "one": [], "peer": []}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            dt, states[name] = time_chunks(trainer, states[name], 1, warm=False)
            ms[name].append(1e3 * dt / chunk)
        ms["peer"].append(peer.ms_per_step(chunk))
    peer.close()
    median = lambda xs: round(float(np.median(xs)), 3)  # noqa: E731
    row = {"ms_per_step": median(ms["split"]), "one_device_ms_per_step": median(ms["one"]),
           "devices": jax.local_device_count(), "rounds": rounds, "steps_per_round": chunk,
           "batch_size": cfg.train.batch_size, "seq_len": cfg.seq_len, "d_model": cfg.model.d_model}
    if peer.error:
        return {**row, "peer_error": peer.error}
    ratios = {name: np.array(ms["peer"]) / np.array(ms[name]) for name in trainers}  # per round
    return {**row, "transformer_lens_ms_per_step": median(ms["peer"]),
            "speedup_vs_transformer_lens": round(float(np.median(ratios["split"])), 2),
            "one_device_speedup_vs_transformer_lens": round(float(np.median(ratios["one"])), 2),
            "speedup_range": [round(float(ratios["split"].min()), 2), round(float(ratios["split"].max()), 2)]}


def induction_analysis(n_checkpoints: int = 200, loop_measured: int = 10, rounds: int = 5) -> dict:
    """Every induction measure on 200 checkpoints (random inits of induction_2l's model), the
    protocol of `analysis_p113`: paired rounds of `vmapped_s` (one `analyze_params` call, compilation
    included), `vmapped_cached_s` (a second call, whose program comes from the on-disk compile cache
    as a second `mi-jax analyze` finds it) and the TransformerLens peer
    (`benchmarks/peers/tl_induction_analysis.py`) on as many checkpoints, `tl_s`; speedups are
    medians of the per-round ratios. `loop_jit_s`: a loop calling one jitted function of all
    measures. All include the host-side OV eigenvalues (`induction.finish`), as `mi-jax analyze` does."""
    cfg = load("induction_2l")
    measures, data = ind.make_measures(cfg), ind.probe_data(cfg)
    keys = jax.random.split(jax.random.key(0), n_checkpoints)
    task = make_task(cfg)
    stacked = jax.tree.map(np.asarray, jax.jit(jax.vmap(task.init_params))(keys))
    results = {}

    def ours() -> dict:
        first, cached, results["vmapped"] = first_and_cached(
            lambda: ind.finish(analyze_params(stacked, measures, data, member_axis=False)))
        return {"first": first, "cached": cached}

    paired = paired_rounds(ours, PEER_SCRIPTS / "tl_induction_analysis.py",
                           ["--checkpoints", n_checkpoints, "--threads", os.cpu_count()], rounds)
    jitted = jax.jit(lambda p: evaluate_measures(measures, p, data))
    loop_jit_s, looped = loop_seconds(lambda p: ind.finish(jitted(p)), stacked, n_checkpoints, loop_measured)
    row = paired_figures(paired, {"first": "vmapped_s", "cached": "vmapped_cached_s"})
    return {"n_checkpoints": n_checkpoints, "n_measures": len(results["vmapped"]), **row,
            "loop_jit_s": round(loop_jit_s, 2), "loop_measured": loop_measured,
            "speedup_vs_jit_loop": round(loop_jit_s / row["vmapped_s"], 2),
            "results_agree": agree(results["vmapped"], looped, rtol=2e-3, atol=2e-4)}


BENCHMARKS = {"induction_2l_step": induction_2l_step, "induction_analysis": induction_analysis}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "induction_2l_step": {"figure": "speedup_vs_transformer_lens", "at_least": 2, "mi_jax": "ms_per_step",
                          "peer": "transformer_lens_ms_per_step", "peer_name": "TransformerLens"},
    "induction_analysis": {"figure": "speedup_vs_transformer_lens", "at_least": 5, "mi_jax": "vmapped_s",
                           "peer": "tl_s", "peer_name": "TransformerLens"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"induction_2l_step": "transformer_lens", "induction_analysis": "transformer_lens"}
