"""Induction heads and Olsson et al.'s loss bump in minutes on 2 CPU cores: language_attn_2l_induction at lr 1e-2.

The learning rate and evaluation that experiments/results/language.md found for that preset's model: the
same model and corpus (a BPE of 512 tokens, d_model 64, 2 heads of 32, context 256, batch 32 windows) at
lr 1e-2, where the median onset of copying came at 13M tokens (1,600 steps) against 65M at that preset's
3e-3; 3,200 steps (26M tokens). The bump is a few hundredths of a nat, so the validation loss is
taken on 512 windows every 100 steps, with a snapshot at each. Run several seeds as one program:
`mi-jax train language_attn_2l_bump --seeds 0,1,2,3` (three of these four copy, from steps 1,200-2,600).
"""

import dataclasses

from mi_jax.presets.language_attn_2l_induction import PRESET as INDUCTION

PRESET = dataclasses.replace(
    INDUCTION,
    n_eval=512,
    train=dataclasses.replace(INDUCTION.train, steps=3_200, lr=1e-2, eval_every=100, ckpt_every=100),
)
