"""Phase diagram n=2 features, m=1 dimension: 20 feature densities (1 -> 0.01) x 20 relative importances (0.1 -> 10) = 400 instances in one program.

Feature 0 has importance 1, feature 1 the relative importance; each instance ends "not represented",
"dedicated" or "superposed" (antipodal) for feature 1 (Elhage et al. 2022, Fig. 'phase diagram').
Adam lr 5e-3, batch 1024, 10,000 steps (the sparse corners converge slowly at lr 1e-3).
"""

import dataclasses

from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig

PRESET = SuperpositionConfig(
    n_features=2, n_hidden=1, model="relu",
    n_probabilities=20, prob_max=1.0, prob_min=0.01, importance_decay=1.0,
    n_rel_importance=20, rel_importance_min=0.1, rel_importance_max=10.0,
    eval_batch=1024,
    train=dataclasses.replace(SUPERPOSITION_TRAIN, steps=10_000, lr=5e-3, eval_every=1_000, ckpt_every=1_000),
)
