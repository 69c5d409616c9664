"""Toy model of superposition 5 -> 2, importance 0.9^i, 8 sparsity levels 20^-linspace(0, 1, 8): pentagons, digons, dedicated dims.

The ARENA/Elhage et al. 2022 setting: ReLU output, Adam lr 1e-3 (weight decay 0), batch 1024,
10,000 steps, checkpoints every 100 steps (the training-dynamics series).
"""

from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig

PRESET = SuperpositionConfig(
    n_features=5, n_hidden=2, model="relu",
    n_probabilities=8, prob_max=1.0, prob_min=0.05, importance_decay=0.9,
    train=SUPERPOSITION_TRAIN,
)
