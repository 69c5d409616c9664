"""Pairwise AND of 20 boolean inputs (at most 2 active, 190 ANDs) through 60 ReLU neurons: computation in superposition.

`experiments/and_width_sweep.py` sweeps widths for n = 12 and 20 (3 seeds each, one vmapped program
per width) against the random universal-AND construction (experiments/results/and_superposition.md).
"""

from mi_jax.tasks.boolean_and import BOOLEAN_AND_TRAIN, BooleanAndConfig

PRESET = BooleanAndConfig(n_inputs=20, n_hidden=60, pos_weight=10.0, train=BOOLEAN_AND_TRAIN)
