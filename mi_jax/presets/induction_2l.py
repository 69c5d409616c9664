"""Induction heads on CPU in minutes: a 2-layer attention-only transformer on repeated random tokens.

Uniform random tokens (vocab 64, 48 tokens) whose last L = 6..24 tokens repeat an earlier span
that starts at a random place, so only matching the current token against earlier tokens (an
induction head) predicts the repeat; no position, offset or bigram does. Model: 2 layers,
attention only, d_model 64, 4 heads of 16, learned positions, layer norm (with 2 heads of 32, 1 of
4 seeds found a shifted two-back circuit instead of an induction head; with 4 heads 8 of 8 seeds
form the standard one, see experiments/results/induction.md). AdamW lr 2e-3 with
100 warm-up steps, no weight decay, batch 64, loss on every position. Each batch (an ensemble:
its seeds) is split over the local devices (`data_parallel`; the CPU cores under `mi-jax`).
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.induction import InductionConfig
from mi_jax.training.config import TrainConfig

PRESET = InductionConfig(
    task="repeated",
    seq_len=48,
    d_vocab=64,
    repeat_len=24,
    min_repeat_len=6,
    n_eval=128,
    model=TransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=None, layer_norm=True),
    train=TrainConfig(
        steps=1500, lr=2e-3, weight_decay=0.0, beta1=0.9, beta2=0.98, warmup_steps=100,
        batch_size=64, eval_every=25, ckpt_every=25, seed=0, data_parallel=True,
    ),
)
