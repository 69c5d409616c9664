"""A 1-layer GELU-MLP language model on the standard library's source, at a CPU scale (minutes).

TransformerLens's gelu-1l shape scaled down: d_model 128, 4 heads of 32, an MLP of 512 (GELU), layer
norm, learned positions, context 128, a byte-level BPE of 2,048 tokens trained on the corpus. AdamW
lr 1e-3 with 200 warm-up steps, batch 32 windows (4,096 tokens a step, split over the cores), 3,000
steps (12M tokens). The full size for an accelerator is the 2-layer `language_*_2l_full`.
"""

import dataclasses

from mi_jax.presets.language_attn_2l import PRESET as ATTN_2L

PRESET = dataclasses.replace(ATTN_2L, model=dataclasses.replace(ATTN_2L.model, n_layers=1, d_mlp=512, act_fn="gelu"))
