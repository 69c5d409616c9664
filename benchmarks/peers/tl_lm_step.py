"""Peer baseline: TransformerLens HookedTransformer (attn_only) language-model training step on
language_attn_2l's config.

The peer of mi_jax's `lm_2l_step` (benchmarks/bench_language.py), written as a TransformerLens user
would: a HookedTransformer, torch's AdamW with a linear warm-up (LambdaLR), and each step a batch of
`--batch` windows of seq + 1 tokens gathered at uniform random starts from the training token
stream (the model reads the first seq tokens and predicts the last seq: next-token cross-entropy
over every position). Every `--eval-every` steps it evaluates as mi_jax's training chunk does,
without gradients: the per-position loss on the fixed validation windows, its mean (test_loss) and
the ICL score (loss at token `--icl-late` minus loss at token `--icl-early`), fetched as Python floats.

Model: 2 layers, attention only, d_model 128, 4 heads of 32, LayerNorm (eps 1e-5), learned
positions (n_ctx = seq 128), vocab 2048 in and out (sizes from the arguments; the bench passes the
preset's). AdamW lr 1e-3, betas (0.9, 0.99), no weight decay, 200 warm-up steps.

Tokens: --data NPZ holds "train" (the training stream [n], uint16, as mi_jax's LanguageTask has it)
and "eval" (the fixed validation windows [n_eval, seq + 1]); the bench writes it from the preset's
task. Without --data, a uniform random stream of 1M tokens and random evaluation windows stand in
(the cost does not depend on the values).

Run:  /tmp/peer-tl/bin/python benchmarks/peers/tl_lm_step.py --steps 100 --threads 2
Prints one JSON line: {"impl": "transformer_lens", "ms_per_step": ..., "tokens_per_s": ...}
With --serve it warms up, prints {"ready": true}, then for every line N on stdin runs N more steps
and prints {"ms_per_step": ...} (the bench alternates these with its own timings).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--d-model", type=int, default=128)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--d-head", type=int, default=32)
ap.add_argument("--vocab", type=int, default=2048)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--beta1", type=float, default=0.9)
ap.add_argument("--beta2", type=float, default=0.99)
ap.add_argument("--weight-decay", type=float, default=0.0)
ap.add_argument("--lr-warmup", type=int, default=200, help="linear learning-rate warm-up steps")
ap.add_argument("--eval-every", type=int, default=50)
ap.add_argument("--n-eval", type=int, default=64)
ap.add_argument("--icl-early", type=int, default=6)
ap.add_argument("--icl-late", type=int, default=62)
ap.add_argument("--data", help="an .npz with 'train' (token stream) and 'eval' (validation windows)")
ap.add_argument("--serve", action="store_true")
args = ap.parse_args()
torch.set_num_threads(args.threads)

cfg = HookedTransformerConfig(
    n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_head=args.d_head, attn_only=True,
    normalization_type="LN", eps=1e-5, d_vocab=args.vocab, d_vocab_out=args.vocab, n_ctx=args.seq, act_fn=None,
    positional_embedding_type="standard", init_weights=True, device="cpu", seed=0,
)
model = HookedTransformer(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(args.beta1, args.beta2))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / args.lr_warmup, 1.0) if args.lr_warmup else 1.0)
gen = torch.Generator().manual_seed(0)
window = args.seq + 1
if args.data:
    with np.load(args.data) as f:
        stream = torch.from_numpy(f["train"].astype(np.int64))
        eval_windows = torch.from_numpy(f["eval"].astype(np.int64))
    assert eval_windows.shape[1] == window, (eval_windows.shape, window)
else:
    stream = torch.randint(0, args.vocab, (1_000_000,), generator=gen)
    eval_windows = torch.randint(0, args.vocab, (args.n_eval, window), generator=gen)
offsets = torch.arange(window)


def next_token_loss(windows: torch.Tensor) -> torch.Tensor:
    """windows [batch, seq + 1] -> loss at each position [batch, seq]."""
    logits = model(windows[:, :-1])  # [batch, seq, vocab]
    return F.cross_entropy(logits.transpose(1, 2), windows[:, 1:], reduction="none")


@torch.no_grad()
def evaluate() -> dict:
    position_loss = next_token_loss(eval_windows).mean(0)
    icl = position_loss[args.icl_late - 1] - position_loss[args.icl_early - 1]
    return {"test_loss": position_loss.mean().item(), "icl_score": icl.item()}


def step() -> torch.Tensor:
    starts = torch.randint(0, len(stream) - window + 1, (args.batch,), generator=gen)
    tokens = stream[starts[:, None] + offsets]  # [batch, seq + 1]
    loss = next_token_loss(tokens).mean()
    loss.backward()
    opt.step()
    sched.step()
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
evaluate()
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
ms = 1e3 * dt / args.steps
print(json.dumps({"impl": "transformer_lens", "ms_per_step": round(ms, 3),
                  "tokens_per_s": round(args.batch * args.seq / (ms / 1e3)), "steps": args.steps,
                  "threads": args.threads, "eval_every": args.eval_every, "final_loss": round(loss.item(), 4),
                  "data": args.data or "uniform random tokens", "torch": torch.__version__}))
