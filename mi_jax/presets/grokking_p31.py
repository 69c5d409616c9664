"""A grokking model sized for sweeps on 2 CPU cores: a + b mod 31, 50% train, d_model 64, d_mlp 256.

grokking_p113's architecture and optimiser (1 layer, 4 heads, ReLU, no layer norm, AdamW with
betas (0.9, 0.98), frozen biases, float64 log-softmax) at about a tenth of grokking_small's cost a
step, so that a 5 x 5 x 2 learning-rate x weight-decay grid trains as one program in minutes. At the
default lr 3e-3 and weight decay 1 it memorises in ~100 steps and generalises after ~1,000-3,000.
"""

import dataclasses

from mi_jax import presets

PAPER = presets.load("grokking_p113")
PRESET = dataclasses.replace(
    PAPER,
    p=31,
    train_frac=0.5,
    model=dataclasses.replace(PAPER.model, d_model=64, d_head=16, d_mlp=256),
    train=dataclasses.replace(PAPER.train, steps=4_000, lr=3e-3, eval_every=100, ckpt_every=500, seed=0),
)
