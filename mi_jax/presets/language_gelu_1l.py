"""A 1-layer GELU-MLP language model on the standard library's source, at a CPU scale (minutes).

TransformerLens's gelu-1l shape scaled down: d_model 128, 4 heads of 32, an MLP of 512 (GELU), layer
norm, learned positions, context 128, a byte-level BPE of 2,048 tokens trained on the corpus. AdamW
lr 1e-3 with 200 warm-up steps, batch 32 windows (4,096 tokens a step, split over the cores), 3,000
steps (12M tokens). The full size for an accelerator is the 2-layer `language_*_2l_full`.
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.language import DataConfig, LanguageConfig
from mi_jax.training.config import TrainConfig

PRESET = LanguageConfig(
    data=DataConfig(source="stdlib", tokenizer="bpe", vocab_size=2048),
    seq_len=128,
    n_eval=64,
    model=TransformerConfig(n_layers=1, d_model=128, n_heads=4, d_mlp=512, act_fn="gelu", layer_norm=True),
    train=TrainConfig(steps=3000, lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99, warmup_steps=200,
                      batch_size=32, eval_every=50, ckpt_every=50, seed=0, data_parallel=True),
)
