"""A 1-layer attention-only language model at TransformerLens's attn-only-1l size, for an accelerator.

`language_attn_2l_full` with one layer: d_model 512, 8 heads of 64, layer norm, learned positions,
context 1,024, a byte-level BPE of 5,000 tokens on the standard library's source; AdamW lr 1e-3, 1,000
warm-up steps, batch 32 windows (32k tokens a step), 50,000 steps (1.6B tokens).
"""

import dataclasses

from mi_jax.presets.language_attn_2l_full import PRESET as ATTN_2L_FULL

PRESET = dataclasses.replace(ATTN_2L_FULL, model=dataclasses.replace(ATTN_2L_FULL.model, n_layers=1))
