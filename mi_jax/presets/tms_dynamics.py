"""Training dynamics of feature dimensionality, 5 -> 2, equal importance, 1 - S = 0.025, 16 instances (inits): jumps between geometries.

Elhage et al. 2022 ("learning dynamics: energy level jumps"). Every instance has the same feature
density and importance 1, so instances differ only in their init and data stream; some settle
straight into the pentagon (D_i = 2/5), others first sit in a metastable configuration (two
antipodal pairs, D = 1/2, plus a barely used fifth feature) on a loss plateau and then jump.
Adam lr 1e-3 (weight decay 0), batch 1024, 8,000 steps, checkpoints every 20 steps.
"""

import dataclasses

from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig

PRESET = SuperpositionConfig(
    n_features=5, n_hidden=2, model="relu",
    feature_probability=(0.025,) * 16, importance_decay=1.0,
    eval_batch=4096,
    train=dataclasses.replace(SUPERPOSITION_TRAIN, steps=8_000, eval_every=20, ckpt_every=20),
)
