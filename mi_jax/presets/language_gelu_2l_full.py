"""A 2-layer GELU-MLP language model at TransformerLens's gelu-2l size, for an accelerator.

d_model 512, 8 heads of 64, an MLP of 2,048 (GELU), layer norm, learned positions, context 1,024
(TransformerLens's toy models; theirs have a 48k vocabulary), a byte-level BPE of 5,000 tokens as
Hoogland et al. 2024 used, on the standard library's source. AdamW lr 1e-3, 1,000 warm-up steps,
batch 32 windows (32k tokens a step), 50,000 steps (1.6B tokens).
"""

import dataclasses

from mi_jax.presets.language_attn_2l_full import PRESET as ATTN_2L_FULL

PRESET = dataclasses.replace(ATTN_2L_FULL, model=dataclasses.replace(ATTN_2L_FULL.model, d_mlp=2048, act_fn="gelu"))
