"""Control for induction_2l: the same task and training with a 1-layer attention-only model (no induction head can form).

Everything as in induction_2l (repeated random tokens, vocab 64, 48 tokens, d_model 64, 4 heads
of 16, layer norm, AdamW lr 2e-3), but one layer: an induction head needs a previous-token head
in an earlier layer to compose with.
"""

import dataclasses

from mi_jax import presets

TWO_LAYER = presets.load("induction_2l")
PRESET = dataclasses.replace(TWO_LAYER, model=dataclasses.replace(TWO_LAYER.model, n_layers=1))
