"""Timing of the Trainer's compiled chunks (shared by the training bench files)."""

from __future__ import annotations

import time

import jax


def one_chunk(trainer, state):
    """One compiled chunk of the trainer's config: ckpt_every steps, evaluated every eval_every ->
    (state, metrics {name: [eval, member]} on the host)."""
    return trainer.train_steps(state, trainer.tc.ckpt_every, trainer.tc.eval_every)


def time_chunks(trainer, state, n_chunks: int, warm: bool = True) -> tuple[float, object]:
    """(seconds for `n_chunks` chunks (`one_chunk`), after one compile-and-warm-up chunk unless
    `warm=False`, the final state). Each chunk's metrics are fetched to the host, as a training run does."""
    if warm:
        state, _ = one_chunk(trainer, state)
        jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(n_chunks):
        state, metrics = one_chunk(trainer, state)
    jax.block_until_ready(state)
    return time.perf_counter() - t0, state
