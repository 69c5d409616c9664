"""A small grokking run for 2 CPU cores: a + b mod 53, 50% train, groks (test accuracy > 0.99) in about a minute.

Same architecture and optimiser as grokking_p113 (1 layer, d_model 128, 4 heads, d_mlp 512,
AdamW lr 1e-3, weight decay 1.0, betas (0.9, 0.98), frozen biases, float64 log-softmax); a
smaller prime and a larger train fraction make it generalise after ~1,500 steps.
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.modular import ModularConfig
from mi_jax.train.config import TrainConfig

PRESET = ModularConfig(
    p=53,
    op="+",
    train_frac=0.5,
    data_seed=598,
    model=TransformerConfig(n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", layer_norm=False),
    train=TrainConfig(
        steps=3_000, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
        batch_size=None, eval_every=50, ckpt_every=50, seed=0,
        freeze_biases=True, logsoftmax_f64=True,
    ),
)
