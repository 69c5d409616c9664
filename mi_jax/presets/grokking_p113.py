"""Nanda et al. 2023 exactly: a + b mod 113, 1 layer, 30% train, AdamW wd 1.0, 25k full-batch steps.

Settings of the paper and of the TransformerLens grokking demo that reproduces it: d_model 128,
4 heads x 32, d_mlp 512, ReLU, no layer norm, learned positions, AdamW lr 1e-3, weight decay 1.0,
betas (0.9, 0.98), 10-step linear warm-up, a snapshot every 100 steps, biases frozen at zero and
the log-softmax in float64 (float32 shows loss spikes once the train loss is ~1e-7). The paper's
data split seed (598) and model seed (999) are kept as config values; mi_jax draws with numpy/jax
generators, so the split and init are not the same numbers as the PyTorch run's.
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.grokking import GrokkingConfig
from mi_jax.training.config import TrainConfig

PRESET = GrokkingConfig(
    p=113,
    op="+",
    train_frac=0.3,
    data_seed=598,
    model=TransformerConfig(n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", layer_norm=False),
    train=TrainConfig(
        steps=25_000, lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=10,
        batch_size=None, eval_every=100, ckpt_every=100, seed=999,
        freeze_biases=True, logsoftmax_f64=True,
    ),
)
