"""Timing of the Trainer's compiled chunks (shared by the training bench files)."""

from __future__ import annotations

import time

import jax


def time_chunks(trainer, state, n_chunks: int, warm: bool = True) -> tuple[float, object]:
    """(seconds for `n_chunks` chunks, after one compile-and-warm-up chunk unless `warm=False`,
    the final state). Each chunk's metrics are fetched to the host, as a training run does."""
    if warm:
        state, _, _ = trainer.run_chunk(state)
        jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(n_chunks):
        state, metrics, _ = trainer.run_chunk(state)
        jax.device_get(metrics)
    jax.block_until_ready(state)
    return time.perf_counter() - t0, state
