"""Toy model of superposition 20 -> 5, importance 0.7^i, 8 feature probabilities 1 -> 0.01: W^T W and feature norms as sparsity grows.

Elhage et al. 2022 Fig. 3 setting (ReLU output); Adam lr 1e-3, batch 1024, 10,000 steps.
"""

import dataclasses

from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig

PRESET = SuperpositionConfig(
    n_features=20, n_hidden=5, model="relu",
    n_probabilities=8, prob_max=1.0, prob_min=0.01, importance_decay=0.7,
    train=dataclasses.replace(SUPERPOSITION_TRAIN, eval_every=500, ckpt_every=500),
)
