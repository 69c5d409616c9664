"""Peer baseline: TransformerLens per-checkpoint loop of head activation patching on `induction_2l`'s model.

The peer of mi_jax's `head_patching_measure` over a checkpoint series (mi_jax.interventions), written
as a TransformerLens user would: a checkpoint series held in memory as state dicts, and a Python loop
that loads each into one HookedTransformer (`load_state_dict`), runs the clean batch with
`run_with_cache` (every layer's `hook_z`), runs the corrupted batch for its metric, then for every
layer and head runs the corrupted batch again with `run_with_hooks`, a hook on `blocks.{l}.attn.hook_z`
overwriting that head's z by the clean run's (clean -> corrupted; what `transformer_lens.patching`'s
`get_act_patch_attn_head_out_all_pos` does, head by head). Under torch.inference_mode; one warm-up
checkpoint first, not timed.

Metric (mi_jax.interventions.metrics, "logit_diff"): mean over sequences and the query positions P of
L[answer] - L[wrong], normalised (m - m_corrupted) / (m_clean - m_corrupted) -> [layer, head].
Pairs: clean = the repeated probe (48 uniform tokens whose last 24 repeat the 24 before); corrupted =
the same with the first copy redrawn; P = the second copy's queries n-24 .. n-2, answer = the clean
next token, wrong = the corrupted first copy's token in the answer's place.

Model: induction_2l's (experiments/induction_2l.py): 2 layers, attention only, d_model 64, 4 heads of
16, learned positions (n_ctx 48), LayerNorm (eps 1e-5) before each attention and the unembedding,
vocab 64, all biases. Checkpoints: random inits as mi_jax's `init_params` draws them (W_* ~ N(0,
0.8 / sqrt(d_model)), biases 0, LayerNorm w 1, b 0), one torch seed each; or, with --check, read
from a file.

Run:       /tmp/peer-tl/bin/python benchmarks/peers/tl_patching.py --checkpoints 50 --threads 2
Compare:   mi_jax writes checkpoints, pairs and its values (benchmarks/patching_peer_check.py --dump
           F.npz); `--check F.npz` recomputes them here and reports the largest difference (exit 1
           above --tolerance). `--dump F.npz` writes this script's own series, pairs and values in
           the same layout, for `patching_peer_check.py --check F.npz`.
Prints one JSON line last: {"impl": "transformer_lens", "checkpoints": N, "s_total": ...,
"s_per_checkpoint": ..., "forward_passes_per_checkpoint": ..., ...}
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import sys
import time

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

N_LAYERS, D_MODEL, N_HEADS, D_HEAD = 2, 64, 4, 16
SEQ_LEN, D_VOCAB, REPEAT_LEN = 48, 64, 24
N_PAIRS = 16
INIT_STD = 0.8 / math.sqrt(D_MODEL)


def make_config() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=D_MODEL, n_heads=N_HEADS, d_head=D_HEAD, attn_only=True, act_fn=None,
        normalization_type="LN", eps=1e-5, positional_embedding_type="standard", n_ctx=SEQ_LEN,
        d_vocab=D_VOCAB, d_vocab_out=D_VOCAB, device="cpu", seed=0,
    )


def random_checkpoints(model: HookedTransformer, n: int, first_seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n state dicts of random inits (seed first_seed + i each), as a series loaded from disk would be."""
    template = {k: v.detach().clone() for k, v in model.state_dict().items()}
    series = []
    for i in range(n):
        gen = torch.Generator().manual_seed(first_seed + i)
        sd = {}
        for key, value in template.items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                sd[key] = torch.randn(value.shape, generator=gen) * INIT_STD
            elif leaf.startswith("b_") or leaf == "b":
                sd[key] = torch.zeros_like(value)
            elif leaf == "w":
                sd[key] = torch.ones_like(value)
            else:  # attn.mask, attn.IGNORE buffers
                sd[key] = value.clone()
        series.append(sd)
    return series


def patching_pairs(seed: int = 11) -> dict[str, torch.Tensor]:
    """{"clean", "corrupted": [N_PAIRS, SEQ_LEN], "answer", "wrong": [N_PAIRS, n_positions], "positions": [n_positions]}."""
    gen = torch.Generator().manual_seed(seed)
    n, span = SEQ_LEN, REPEAT_LEN
    first = torch.arange(n - 2 * span, n - span)
    clean = torch.randint(0, D_VOCAB, (N_PAIRS, n), generator=gen)
    clean[:, n - span:] = clean[:, first]
    corrupted = clean.clone()
    corrupted[:, first] = torch.randint(0, D_VOCAB, (N_PAIRS, span), generator=gen)
    positions = torch.arange(n - span, n - 1)
    return {"clean": clean, "corrupted": corrupted, "answer": clean[:, positions + 1],
            "wrong": corrupted[:, positions - span + 1], "positions": positions}


class HeadPatcher:
    """Normalised head patching [layer, head] of the model's current weights on fixed pairs."""

    def __init__(self, pairs: dict[str, torch.Tensor]):
        self.pairs = pairs
        self.z_names = lambda name: name.endswith("attn.hook_z")

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        at = logits[:, self.pairs["positions"]]  # [batch, n_positions, vocab]
        right = at.gather(-1, self.pairs["answer"][..., None])[..., 0]
        wrong = at.gather(-1, self.pairs["wrong"][..., None])[..., 0]
        return (right - wrong).mean()

    def __call__(self, model: HookedTransformer) -> np.ndarray:
        clean_logits, cache = model.run_with_cache(self.pairs["clean"], names_filter=self.z_names)
        m_clean = self.metric(clean_logits)
        m_corrupt = self.metric(model(self.pairs["corrupted"]))
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_z"
            for head in range(model.cfg.n_heads):
                def patch_head(z, hook, head=head):  # z [batch, pos, head, d_head]
                    z[:, :, head] = cache[hook.name][:, :, head]
                    return z

                logits = model.run_with_hooks(self.pairs["corrupted"], fwd_hooks=[(name, patch_head)])
                out[layer, head] = (self.metric(logits) - m_corrupt) / (m_clean - m_corrupt)
        return out.numpy()


def read_series(path: str, model: HookedTransformer) -> tuple[list[dict], dict, np.ndarray]:
    """A file of {"sd/<state-dict key>": [time, ...], pair arrays, "head_patching": [time, layer, head]}."""
    template = model.state_dict()
    with np.load(path) as f:
        n = f["head_patching"].shape[0]
        series = [{k: torch.from_numpy(np.asarray(f[f"sd/{k}"][i], np.float32)) if f"sd/{k}" in f else v.clone()
                   for k, v in template.items()} for i in range(n)]
        pairs = {k: torch.from_numpy(np.asarray(f[k], np.int64)) for k in ("clean", "corrupted", "answer", "wrong", "positions")}
        return series, pairs, np.asarray(f["head_patching"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=50)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dump", help="write this script's checkpoints, pairs and head patching to this .npz")
    ap.add_argument("--check", help="recompute the head patching of a series written by mi_jax and compare")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = HookedTransformer(make_config())
    model.eval()
    expected = None
    if args.check:
        series, pairs, expected = read_series(args.check, model)
    else:
        series, pairs = random_checkpoints(model, args.checkpoints), patching_pairs()
    patcher = HeadPatcher(pairs)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.load_state_dict(random_checkpoints(model, 1, first_seed=10**6)[0])  # warm-up, not timed
        patcher(model)
        warmup_s = time.perf_counter() - t0
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        results = []
        for sd in series:
            model.load_state_dict(sd)
            results.append(patcher(model))
        s_total = time.perf_counter() - t0
    results = np.stack(results)  # [time, layer, head]

    report = {
        "impl": "transformer_lens", "checkpoints": len(series), "s_total": round(s_total, 3),
        "s_per_checkpoint": round(s_total / len(series), 5), "forward_passes_per_checkpoint": 2 + N_LAYERS * N_HEADS,
        "pairs_shape": list(pairs["clean"].shape), "threads": args.threads, "warmup_s": round(warmup_s, 3),
        "loadavg_1m_before": round(load_before, 2), "torch": torch.__version__,
        "transformer_lens": importlib.metadata.version("transformer-lens"),
    }
    if args.dump:
        state = {f"sd/{k}": np.stack([sd[k].numpy() for sd in series]) for k in series[0] if not k.endswith(("mask", "IGNORE"))}
        np.savez(args.dump, head_patching=results, **state, **{k: v.numpy() for k, v in pairs.items()})
        report["dumped"] = args.dump
    if expected is not None:
        error = float(np.abs(results - expected).max())
        report.update(checked=args.check, max_abs_error=error, agree=error <= args.tolerance)
    print(json.dumps(report))
    if expected is not None and not report["agree"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
