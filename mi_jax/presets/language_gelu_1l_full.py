"""A 1-layer GELU-MLP language model at TransformerLens's gelu-1l size, for an accelerator.

`language_gelu_2l_full` with one layer: d_model 512, 8 heads of 64, an MLP of 2,048 (GELU), layer norm,
learned positions, context 1,024, a byte-level BPE of 5,000 tokens on the standard library's source;
AdamW lr 1e-3, 1,000 warm-up steps, batch 32 windows (32k tokens a step), 50,000 steps (1.6B tokens).
"""

import dataclasses

from mi_jax.presets.language_gelu_2l_full import PRESET as GELU_2L_FULL

PRESET = dataclasses.replace(GELU_2L_FULL, model=dataclasses.replace(GELU_2L_FULL.model, n_layers=1))
