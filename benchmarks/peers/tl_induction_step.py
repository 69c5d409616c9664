"""Peer baseline: TransformerLens HookedTransformer (attn_only) train step on induction_2l's config.

2 layers, attention only, d_model 64, 2 heads of 32, LayerNorm, learned positions, vocab 32,
32 tokens, batch 32 (uniform random tokens drawn each step), AdamW lr 3e-3 betas (0.9, 0.98),
no weight decay, next-token cross-entropy over every position.
Run:  /tmp/peer-tl/bin/python benchmarks/peers/tl_induction_step.py --steps 200 --threads 2
Prints one JSON line: {"impl": "transformer_lens", "ms_per_step": ...}
"""
import argparse
import json
import os
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--threads", type=int, default=os.cpu_count())
args = ap.parse_args()
torch.set_num_threads(args.threads)

cfg = HookedTransformerConfig(
    n_layers=2, d_model=64, n_heads=2, d_head=32, attn_only=True, normalization_type="LN",
    d_vocab=32, n_ctx=32, act_fn=None, init_weights=True, device="cpu", seed=0,
)
model = HookedTransformer(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0, betas=(0.9, 0.98))
gen = torch.Generator().manual_seed(0)


def step():
    tokens = torch.randint(0, 32, (32, 32), generator=gen)
    loss = model(tokens, return_type="loss")
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


for _ in range(args.warmup):
    step()
t0 = time.perf_counter()
for _ in range(args.steps):
    loss = step()
dt = time.perf_counter() - t0
print(json.dumps({"impl": "transformer_lens", "ms_per_step": round(1e3 * dt / args.steps, 3), "steps": args.steps,
                  "threads": args.threads, "final_loss": round(loss.item(), 4), "torch": torch.__version__}))
