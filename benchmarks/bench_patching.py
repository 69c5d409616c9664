"""Activation patching over training: every head of every checkpoint in one compiled call, against
the TransformerLens loop a researcher writes (`benchmarks/peers/tl_patching.py`).

`patching_heads_over_training`: head patching (clean -> corrupted, each head's `hook_z`, logit
difference normalised 0 = corrupted, 1 = clean) for all 2 x 4 heads at 200 checkpoints of
induction_2l's model. The checkpoints are random inits on both sides (the cost does not depend on the values);
the pairs are the peer's construction (`patching_peer_check.patching_pairs`).
`vmapped_s` is one `analyze_params` call, compilation included (the in-memory caches cleared before
each round); `tl_s` the peer's loop (load_state_dict, run_with_cache, a run_with_hooks per head).
Paired: the two alternate for a few rounds and `speedup_vs_transformer_lens` is the median of the
per-round ratios. Where the peer cannot run (an accelerator machine without TransformerLens) the row
says so in `peer_error` and keeps mi_jax's figures.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from patching_peer_check import patching_pairs
from peer_runs import PEER_SCRIPTS, run_peer

from mi_jax.analysis.core import analyze_params
from mi_jax.interventions import head_patching_measure
from mi_jax.models import transformer as tfm
from mi_jax.presets import load


def patching_heads_over_training(n_checkpoints: int = 200, rounds: int = 3) -> dict:
    cfg = load("induction_2l")
    model = cfg.transformer
    keys = jax.random.split(jax.random.key(0), n_checkpoints)
    series = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k: tfm.init_params(model, k)))(keys))
    pairs = patching_pairs(cfg)
    measure = head_patching_measure(model, pairs["clean"], pairs["corrupted"], pairs["answer"], pairs["wrong"],
                                    positions=pairs["positions"])
    ours, theirs, peer = [], [], {}
    for _ in range(rounds):
        jax.clear_caches()  # each round compiles anew, as a first `mi-jax` call does
        t0 = time.perf_counter()
        values = analyze_params(series, {"patching": measure}, member_axis=False)["head_patching"]
        ours.append(time.perf_counter() - t0)
        peer = run_peer(PEER_SCRIPTS / "tl_patching.py", ["--checkpoints", n_checkpoints, "--threads", os.cpu_count()])
        if "peer_error" in peer:
            break
        theirs.append(peer["s_total"])
    row = {"n_checkpoints": n_checkpoints, "heads": model.n_layers * model.n_heads, "device": jax.devices()[0].device_kind,
           "vmapped_s": round(float(np.median(ours)), 2), "rounds": len(ours),
           "results_finite": bool(np.isfinite(values).all()), "shape": list(values.shape)}
    if "peer_error" in peer:
        return {**row, "peer_error": peer["peer_error"]}
    ratios = np.array(theirs) / np.array(ours[:len(theirs)])
    return {**row, "tl_s": round(float(np.median(theirs)), 2),
            "speedup_vs_transformer_lens": round(float(np.median(ratios)), 2),
            "round_ratios": [round(float(r), 2) for r in ratios]}


BENCHMARKS = {"patching_heads_over_training": patching_heads_over_training}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "patching_heads_over_training": {"figure": "speedup_vs_transformer_lens", "at_least": 3, "mi_jax": "vmapped_s",
                                     "peer": "tl_s", "peer_name": "TransformerLens"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"patching_heads_over_training": "transformer_lens"}
