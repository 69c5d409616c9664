"""Peer baseline: TransformerLens full-batch train step, grokking config of Nanda et al. 2023.

Mirrors TransformerLens demos/Grokking_Demo.ipynb: p=113 modular addition, inputs (a, b, '=')
with '=' = token p, 30% of all p*p pairs (3830) as one full batch, biases frozen, AdamW
(lr 1e-3, wd 1.0, betas (0.9, 0.98)), cross-entropy (float64 log-softmax) on the last position.
Run:  /tmp/peer-tl/bin/python benchmarks/peers/tl_grok_step.py --steps 50 --warmup 5 --threads 2
Prints one JSON line: {"impl": "transformer_lens", "ms_per_step": ..., "steps": ...}
"""
import argparse, json, os, time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--threads", type=int, default=os.cpu_count())
args = ap.parse_args()
torch.set_num_threads(args.threads)

p, frac_train = 113, 0.3
a = torch.arange(p).repeat_interleave(p)
b = torch.arange(p).repeat(p)
data = torch.stack([a, b, torch.full_like(a, p)], dim=1)
labels = (a + b) % p
torch.manual_seed(598)
train_idx = torch.randperm(p * p)[: int(p * p * frac_train)]
x, y = data[train_idx], labels[train_idx]
assert x.shape == (3830, 3)

cfg = HookedTransformerConfig(
    n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, act_fn="relu",
    normalization_type=None, d_vocab=p + 1, d_vocab_out=p, n_ctx=3,
    init_weights=True, device="cpu", seed=999,
)
model = HookedTransformer(cfg)
for name, param in model.named_parameters():
    if "b_" in name:
        param.requires_grad = False
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))


def step():
    logits = model(x)[:, -1].to(torch.float64)
    loss = -logits.log_softmax(-1).gather(-1, y[:, None]).mean()
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
print(json.dumps({"impl": "transformer_lens", "ms_per_step": round(1e3 * dt / args.steps, 3),
                  "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                  "final_loss": round(loss.item(), 4), "torch": torch.__version__}))
