"""A 2-layer attention-only language model on the standard library's source that forms induction heads on
2 CPU cores in about an hour: the induction budget found by experiments/results/language.md.

Smaller than `language_attn_2l` where it costs and longer where it counts: a byte-level BPE of 512 tokens,
d_model 64, 2 heads of 32, layer norm, learned positions, context 256; AdamW lr 3e-3 with 200 warm-up
steps, batch 32 windows (8,192 tokens a step, split over the cores), 24,000 steps (197M tokens), a
snapshot and an evaluation every 200 steps.
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.language import DataConfig, LanguageConfig
from mi_jax.training.config import TrainConfig

PRESET = LanguageConfig(
    data=DataConfig(source="stdlib", tokenizer="bpe", vocab_size=512),
    seq_len=256,
    n_eval=64,
    model=TransformerConfig(n_layers=2, d_model=64, n_heads=2, d_mlp=None, layer_norm=True),
    train=TrainConfig(steps=24_000, lr=3e-3, weight_decay=0.0, beta1=0.9, beta2=0.99, warmup_steps=200,
                      batch_size=32, eval_every=200, ckpt_every=200, seed=0, data_parallel=True),
)
