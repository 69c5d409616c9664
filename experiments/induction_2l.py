"""Induction heads on CPU in minutes: a 2-layer attention-only transformer on repeated random tokens.

Random tokens (vocab 32, 32 tokens) whose last 6-12 repeat an earlier span at a random place;
outside the repeat, half the tokens follow a fixed skip-bigram (token i = perm[token i - 2]),
which makes a previous-token head useful early, as natural text does. Model: 2 layers,
attention only, d_model 64, 2 heads of 32, learned positions, layer norm. AdamW lr 3e-3,
no weight decay, batch 32.
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.induction import InductionConfig
from mi_jax.train.config import TrainConfig

PRESET = InductionConfig(
    task="repeated",
    seq_len=32,
    d_vocab=32,
    repeat_len=12,
    min_repeat_len=6,
    skip_bigram=0.5,
    n_eval=128,
    model=TransformerConfig(n_layers=2, d_model=64, n_heads=2, d_head=32, d_mlp=None, layer_norm=True),
    train=TrainConfig(
        steps=3000, lr=3e-3, weight_decay=0.0, beta1=0.9, beta2=0.98, warmup_steps=50,
        batch_size=32, eval_every=25, ckpt_every=50, seed=0,
    ),
)
