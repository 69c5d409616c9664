"""Grokking progress measures over a checkpoint series: one compiled call against the loop a
TransformerLens user writes.

`analysis_p113`: every measure of `mi_jax.analysis.grokking` (losses, accuracies, restricted and
excluded loss, Fourier norms and Gini of W_E and W_L, neuron frequency fractions, weight norm) for
250 checkpoints of a grokking_p113-shaped model, as `mi-jax analyze` evaluates them (one family,
`grokking.family`). The params are random inits (one key per checkpoint): the cost of the measures
does not depend on the values. Paired rounds, each: `vmapped_s`, `analyze_params` over the stacked
series (one compiled call, compilation included); `vmapped_cached_s`, the same call again with its
program from JAX's on-disk compile cache (a second `mi-jax analyze`); then the TransformerLens peer
(`benchmarks/peers/tl_grok_analysis.py`: load_state_dict, run_with_cache and the measures in torch, per
checkpoint) on the same number of checkpoints, `tl_s`. The speedups are medians of the per-round
ratios. `loop_jit_s`: a loop over checkpoints calling one jitted function of all measures (compiled
once; see `checkpoint_loops`), timed once.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from checkpoint_loops import agree, first_and_cached, loop_seconds
from peer_runs import PEER_SCRIPTS, paired_figures, paired_rounds

from mi_jax import presets

N_CHECKPOINTS = 250
LOOP_MEASURED = 10
KEY_FREQS = (14, 35, 41, 42, 52)  # the peer's


def analysis_p113(rounds: int = 3) -> dict:
    from mi_jax.analysis import grokking
    from mi_jax.analysis.core import analyze_params
    from mi_jax.models import transformer as tfm

    cfg = presets.load("grokking_p113")
    keys = jax.random.split(jax.random.key(0), N_CHECKPOINTS)
    stacked = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k: tfm.init_params(cfg.transformer, k)))(keys))
    family = grokking.family(cfg)
    data = grokking.make_data(cfg, key_freqs=KEY_FREQS)
    results = {}

    def ours() -> dict:
        first, cached, results["vmapped"] = first_and_cached(
            lambda: analyze_params(stacked, {"progress": family}, data, member_axis=False))
        return {"first": first, "cached": cached}

    paired = paired_rounds(ours, PEER_SCRIPTS / "tl_grok_analysis.py",
                           ["--checkpoints", N_CHECKPOINTS, "--threads", os.cpu_count()], rounds)
    loop_jit_s, looped = loop_seconds(jax.jit(lambda p: family(p, data)), stacked, N_CHECKPOINTS, LOOP_MEASURED)
    row = paired_figures(paired, {"first": "vmapped_s", "cached": "vmapped_cached_s"})
    return {
        "n_checkpoints": N_CHECKPOINTS, "n_measures": len(results["vmapped"]), "params": "random init",
        **row, "loop_jit_s": round(loop_jit_s, 2), "loop_measured": LOOP_MEASURED,
        "speedup_vs_jit_loop": round(loop_jit_s / row["vmapped_s"], 2),
        "results_agree": agree(results["vmapped"], looped, skip=("neuron_best_freq",)),
    }


BENCHMARKS = {"analysis_p113": analysis_p113}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "analysis_p113": {"figure": "speedup_vs_transformer_lens", "at_least": 10, "mi_jax": "vmapped_s",
                      "peer": "tl_s", "peer_name": "TransformerLens"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"analysis_p113": "transformer_lens"}
