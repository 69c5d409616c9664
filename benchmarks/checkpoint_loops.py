"""The per-checkpoint loops the vmapped analysis is measured against (shared by the analysis bench files).

A loop "loads" one checkpoint at a time (takes its arrays out of the stacked host series) and
evaluates every measure on it. Only the first `n_measured` checkpoints are run: the first call
(which compiles, for a jitted evaluator) is counted once as measured, the rest are timed and
scaled to `n_total` checkpoints.
"""

from __future__ import annotations

import time

import jax
import numpy as np


def loop_seconds(evaluate, stacked: dict, n_total: int, n_measured: int) -> tuple[float, list[dict]]:
    """(seconds for a loop over n_total checkpoints, outputs of the first n_measured)."""
    host = jax.tree.map(np.asarray, stacked)
    outputs, times = [], []
    for t in range(n_measured):
        t0 = time.perf_counter()
        params = jax.tree.map(lambda x: np.array(x[t]), host)  # load one checkpoint
        outputs.append(jax.tree.map(np.asarray, evaluate(params)))
        times.append(time.perf_counter() - t0)
    return times[0] + (n_total - 1) * float(np.mean(times[1:])), outputs


def agree(vmapped: dict, looped: list[dict], skip=(), rtol=1e-3, atol=1e-4) -> bool:
    """The vmapped results equal the loop's on the checkpoints the loop ran."""
    return all(np.allclose(vmapped[k][t], out[k], rtol=rtol, atol=atol)
               for t, out in enumerate(looped) for k in out if k not in skip)
