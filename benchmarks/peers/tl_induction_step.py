"""Peer baseline: TransformerLens HookedTransformer (attn_only) train step on induction_2l's config.

Attention only, LayerNorm, learned positions; sizes, batch and learning rate come from the
arguments (`bench_induction.induction_2l_step` passes the preset's). AdamW betas (0.9, 0.98), no
weight decay, next-token cross-entropy over every position; uniform random tokens drawn each step
(mi_jax's step also builds the repeated spans, in-graph). Every `--eval-every` steps it evaluates
as mi_jax's training chunk does: per-position loss on `--n-eval` task and `--n-eval` probe
sequences, without gradients.
Run:  /tmp/peer-tl/bin/python benchmarks/peers/tl_induction_step.py --steps 200 --threads 2
Prints one JSON line: {"impl": "transformer_lens", "ms_per_step": ...}
With --serve it warms up, prints {"ready": true}, then for every line N on stdin runs N more steps
and prints {"ms_per_step": ...} (the bench alternates these with its own timings).
"""
import argparse
import json
import os
import sys
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--d-model", type=int, default=64)
ap.add_argument("--heads", type=int, default=2)
ap.add_argument("--d-head", type=int, default=32)
ap.add_argument("--vocab", type=int, default=64)
ap.add_argument("--seq", type=int, default=48)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--eval-every", type=int, default=25)
ap.add_argument("--n-eval", type=int, default=128)
ap.add_argument("--serve", action="store_true")
args = ap.parse_args()
torch.set_num_threads(args.threads)

cfg = HookedTransformerConfig(
    n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_head=args.d_head, attn_only=True,
    normalization_type="LN", d_vocab=args.vocab, n_ctx=args.seq, act_fn=None, init_weights=True,
    device="cpu", seed=0,
)
model = HookedTransformer(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))
gen = torch.Generator().manual_seed(0)
eval_tokens = [torch.randint(0, args.vocab, (args.n_eval, args.seq), generator=gen) for _ in range(2)]


@torch.no_grad()
def evaluate():
    return [model(tokens, return_type="loss", loss_per_token=True).mean(0) for tokens in eval_tokens]


def step():
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
    loss = model(tokens, return_type="loss")
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def timed(n_steps: int, done: int) -> tuple[float, torch.Tensor]:
    """(seconds for n_steps more steps, with the evaluations due among them, last loss)."""
    t0 = time.perf_counter()
    for i in range(done, done + n_steps):
        loss = step()
        if (i + 1) % args.eval_every == 0:
            evaluate()
    return time.perf_counter() - t0, loss


for _ in range(args.warmup):
    step()
if args.serve:
    print(json.dumps({"ready": True}), flush=True)
    done = 0
    for line in sys.stdin:
        n = int(line)
        dt, _ = timed(n, done)
        done += n
        print(json.dumps({"ms_per_step": round(1e3 * dt / n, 3)}), flush=True)
    sys.exit(0)
dt, loss = timed(args.steps, 0)
print(json.dumps({"impl": "transformer_lens", "ms_per_step": round(1e3 * dt / args.steps, 3), "steps": args.steps,
                  "threads": args.threads, "eval_every": args.eval_every, "final_loss": round(loss.item(), 4), "torch": torch.__version__}))
