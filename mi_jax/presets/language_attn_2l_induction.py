"""A 2-layer attention-only language model on the standard library's source that forms induction heads on
2 CPU cores in about an hour: the induction budget found by experiments/results/language.md.

Smaller than `language_attn_2l` where it costs and longer where it counts: a byte-level BPE of 512 tokens,
d_model 64, 2 heads of 32, layer norm, learned positions, context 256; AdamW lr 3e-3 with 200 warm-up
steps, batch 32 windows (8,192 tokens a step, split over the cores), 24,000 steps (197M tokens), a
snapshot and an evaluation every 200 steps.
"""

import dataclasses

from mi_jax.presets.language_attn_2l import PRESET as ATTN_2L

PRESET = dataclasses.replace(
    ATTN_2L,
    data=dataclasses.replace(ATTN_2L.data, vocab_size=512),
    seq_len=256,
    model=dataclasses.replace(ATTN_2L.model, d_model=64, n_heads=2),
    train=dataclasses.replace(ATTN_2L.train, steps=24_000, lr=3e-3, eval_every=200, ckpt_every=200),
)
