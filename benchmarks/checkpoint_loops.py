"""The per-checkpoint loops the vmapped analysis is measured against, and the compile-cache protocol
(shared by the analysis bench files).

A loop "loads" one checkpoint at a time (takes its arrays out of the stacked host series) and
evaluates every measure on it. Only the first `n_measured` checkpoints are run: the first call
(which compiles, for a jitted evaluator) is counted once as measured, the rest are timed and
scaled to `n_total` checkpoints.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from typing import Callable

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache as compile_cache


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


@contextlib.contextmanager
def fresh_compile_cache():
    """JAX's on-disk compile cache in an empty temporary folder (every program kept), then the
    cache settings as they were."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    with tempfile.TemporaryDirectory() as folder:
        compile_cache.reset_cache()
        jax.config.update(names[0], folder)
        jax.config.update(names[1], 0.0)
        try:
            yield
        finally:
            compile_cache.reset_cache()
            for name, value in before.items():
                jax.config.update(name, value)


def first_and_cached(analyze: Callable[[], dict]) -> tuple[float, float, dict]:
    """(seconds of a first `analyze()`, compilation included, seconds of a second one whose compiled
    program comes from JAX's on-disk compile cache, as a second `mi-jax analyze` finds it, its result).
    Each call traces and lowers anew (the in-memory caches are cleared first)."""
    timed = []
    with fresh_compile_cache():
        for _ in range(2):
            jax.clear_caches()
            t0 = time.perf_counter()
            out = analyze()
            timed.append(time.perf_counter() - t0)
    return timed[0], timed[1], out
