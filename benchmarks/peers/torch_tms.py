"""Peer baseline: toy model of superposition (Elhage et al. 2022), ARENA-style eager PyTorch.

n_instances independent models, each out = relu(W^T W x + b_final) with W: (inst, hidden, feat)
xavier-normal init, b_final zeros; feature_probability = 20 ** -linspace(0, 1, inst),
importance = 0.9 ** arange(feat); x = where(rand < prob, rand, 0);
loss = sum over instances of mean over batch of sum_i importance_i * (x_i - out_i)^2; Adam lr 1e-3.
Run:  /tmp/peer-tl/bin/python benchmarks/peers/torch_tms.py --steps 2000
Prints one JSON line: {"impl": "torch_eager", "s_total": ..., "steps": ...}
"""
import argparse, json, os, time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--n-instances", type=int, default=8)
ap.add_argument("--n-features", type=int, default=5)
ap.add_argument("--n-hidden", type=int, default=2)
ap.add_argument("--batch", type=int, default=1024)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
I, F, H, B = args.n_instances, args.n_features, args.n_hidden, args.batch

W = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(I, H, F)))
b_final = torch.nn.Parameter(torch.zeros(I, F))
prob = (20 ** -torch.linspace(0, 1, I))[:, None]  # (inst, 1)
importance = 0.9 ** torch.arange(F)  # (feat,)
opt = torch.optim.Adam([W, b_final], lr=1e-3)


def step():
    x = torch.rand(B, I, F)
    x = torch.where(torch.rand(B, I, F) < prob, x, 0.0)
    h = torch.einsum("bif,ihf->bih", x, W)
    out = torch.relu(torch.einsum("bih,ihf->bif", h, W) + b_final)
    loss = (importance * (x - out) ** 2).sum(-1).mean(0).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


t0 = time.perf_counter()
for _ in range(args.steps):
    loss = step()
dt = time.perf_counter() - t0
print(json.dumps({"impl": "torch_eager", "s_total": round(dt, 3), "steps": args.steps,
                  "ms_per_step": round(1e3 * dt / args.steps, 4), "n_instances": I,
                  "threads": args.threads, "final_loss": round(loss.item(), 5),
                  "torch": torch.__version__}))
