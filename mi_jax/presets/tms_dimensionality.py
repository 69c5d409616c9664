"""Feature dimensionality vs sparsity, 100 -> 10, equal importance, 24 densities 0.5 -> 0.002: sticky fractions and sum_i D_i ~ m.

A CPU-sized version of Elhage et al. 2022's 400 -> 30 experiment (ReLU output, importance 1):
Adam lr 1e-3, batch 512, 6,000 steps, checkpoints every 250 steps.
"""

import dataclasses

from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig

PRESET = SuperpositionConfig(
    n_features=100, n_hidden=10, model="relu",
    n_probabilities=24, prob_max=0.5, prob_min=0.002, importance_decay=1.0,
    eval_batch=2048,
    train=dataclasses.replace(SUPERPOSITION_TRAIN, steps=6_000, batch_size=512, eval_every=250, ckpt_every=250),
)
