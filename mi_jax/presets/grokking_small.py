"""A small grokking run for 2 CPU cores: a + b mod 53, 50% train, groks (test accuracy > 0.99) in about a minute.

The model and optimiser of grokking_p113 (1 layer, d_model 128, 4 heads, d_mlp 512, AdamW lr 1e-3,
weight decay 1.0, betas (0.9, 0.98), frozen biases, float64 log-softmax); a smaller prime and a
larger train fraction make it generalise after ~1,500 steps.
"""

import dataclasses

from mi_jax import presets

PAPER = presets.load("grokking_p113")
PRESET = dataclasses.replace(
    PAPER,
    p=53,
    train_frac=0.5,
    train=dataclasses.replace(PAPER.train, steps=3_000, eval_every=50, ckpt_every=50, seed=0),
)
