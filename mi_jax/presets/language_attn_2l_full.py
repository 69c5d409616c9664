"""A 2-layer attention-only language model at TransformerLens's attn-only-2l size, for an accelerator.

d_model 512, 8 heads of 64, layer norm, learned positions, context 1,024 (TransformerLens's toy
models; theirs use shortformer positions and a 48k vocabulary), a byte-level BPE of 5,000 tokens as
Hoogland et al. 2024 used, on the standard library's source. AdamW lr 1e-3, 1,000 warm-up steps,
batch 32 windows (32k tokens a step), 50,000 steps (1.6B tokens).
"""

from mi_jax.models.transformer import TransformerConfig
from mi_jax.tasks.language import DataConfig, LanguageConfig
from mi_jax.training.config import TrainConfig

PRESET = LanguageConfig(
    data=DataConfig(source="stdlib", tokenizer="bpe", vocab_size=5000),
    seq_len=1024,
    n_eval=32,
    model=TransformerConfig(n_layers=2, d_model=512, n_heads=8, d_mlp=None, layer_norm=True),
    train=TrainConfig(steps=50_000, lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99, warmup_steps=1000,
                      batch_size=32, eval_every=500, ckpt_every=500, ckpt_schedule="log", seed=0,
                      data_parallel=True),
)
