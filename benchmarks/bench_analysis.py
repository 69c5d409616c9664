"""Grokking progress measures over a checkpoint series: one vmapped call against a per-checkpoint loop.

`analysis_p113`: every measure of `mi_jax.analysis.grokking` (losses, accuracies, restricted and
excluded loss, Fourier norms and Gini of W_E and W_L, neuron frequency fractions, weight norm) for
250 checkpoints of a grokking_p113-shaped model. The params are random inits (one key per
checkpoint): the cost of the measures does not depend on the values. `vmapped_s` is
`analyze_params` over the stacked series (one compiled call, compilation included); `loop_s` is
the plain loop a notebook would write: per checkpoint, take its arrays out of the stacked series
and evaluate the same measures op by op (no jit); `loop_jit_s` the same loop calling one jitted
function of all measures (compiled once). See `checkpoint_loops` for how the loops are timed.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from checkpoint_loops import agree, loop_seconds

from mi_jax import presets

N_CHECKPOINTS = 250
LOOP_MEASURED = 10


def analysis_p113() -> dict:
    from mi_jax.analysis import grokking
    from mi_jax.analysis.core import analyze_params, evaluate_measures
    from mi_jax.models import transformer as tfm

    cfg = presets.load("grokking_p113")
    keys = jax.random.split(jax.random.key(0), N_CHECKPOINTS)
    stacked = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k: tfm.init_params(cfg.transformer, k)))(keys))
    measures = grokking.measures(cfg)
    data = grokking.make_data(cfg, key_freqs=(14, 35, 41, 42, 52))
    with jax.enable_x64(cfg.train.logsoftmax_f64):
        t0 = time.perf_counter()
        vmapped = analyze_params(stacked, measures, data, member_axis=False)
        vmapped_s = time.perf_counter() - t0
        evaluate = lambda p: evaluate_measures(measures, p, data)  # noqa: E731
        loop_s, eager = loop_seconds(evaluate, stacked, N_CHECKPOINTS, LOOP_MEASURED)
        loop_jit_s, _ = loop_seconds(jax.jit(evaluate), stacked, N_CHECKPOINTS, LOOP_MEASURED)
    return {
        "n_checkpoints": N_CHECKPOINTS, "n_measures": len(vmapped), "params": "random init",
        "vmapped_s": round(vmapped_s, 2), "loop_s": round(loop_s, 2), "loop_jit_s": round(loop_jit_s, 2),
        "loop_measured": LOOP_MEASURED, "speedup": round(loop_s / vmapped_s, 2),
        "speedup_vs_jit_loop": round(loop_jit_s / vmapped_s, 2),
        "results_agree": agree(vmapped, eager, skip=("neuron_best_freq",)),
    }


BENCHMARKS = {"analysis_p113": analysis_p113}
