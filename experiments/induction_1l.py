"""Control for induction_2l: the same task and training with a 1-layer attention-only model (no induction head can form).

Uniform random tokens (vocab 64, 48 tokens) whose last L = 6..24 tokens repeat an earlier span
that starts at a random place. Model: 1 layer, attention only, d_model 64, 2 heads of 32,
learned positions, layer norm. AdamW lr 2e-3 with 100 warm-up steps, no weight decay, batch 64.
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.induction import InductionConfig
from mi_jax.train.config import TrainConfig

PRESET = InductionConfig(
    task="repeated",
    seq_len=48,
    d_vocab=64,
    repeat_len=24,
    min_repeat_len=6,
    n_eval=128,
    model=TransformerConfig(n_layers=1, d_model=64, n_heads=2, d_head=32, d_mlp=None, layer_norm=True),
    train=TrainConfig(
        steps=1500, lr=2e-3, weight_decay=0.0, beta1=0.9, beta2=0.98, warmup_steps=100,
        batch_size=64, eval_every=25, ckpt_every=25, seed=0,
    ),
)
