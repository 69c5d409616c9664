"""Peer baseline: TransformerLens per-checkpoint loop of the induction measures of `induction_2l`.

The peer of mi_jax's `induction_analysis` benchmark (benchmarks/bench_induction.py), written as a
TransformerLens user would: a checkpoint series held in memory as state dicts, and a Python loop
that loads each into one HookedTransformer (`load_state_dict`), runs `run_with_cache` on the probe
batch, runs the task batch for its per-token loss, and computes every measure with torch from the
cache and the weights (composition scores by `model.all_composition_scores`, OV eigenvalues by
`FactoredMatrix.eigenvalues`, as in the TransformerLens demos). Under torch.inference_mode; one
warm-up checkpoint first, not timed.

Model: induction_2l's (experiments/induction_2l.py, mi_jax.tasks.induction.InductionConfig.transformer):
2 layers, attention only, d_model 64, 4 heads of 16, learned positions (n_ctx = seq_len 48),
LayerNorm (eps 1e-5) before each attention and before the unembedding, vocab 64 in and out, all
biases. Checkpoints: random inits drawn as mi_jax's `init_params` draws them (every W_* ~
N(0, 0.8 / sqrt(d_model)), biases 0, LayerNorm w 1 / b 0), one torch seed each.

Measures (mi_jax.analysis.induction.make_measures, the same names and definitions):
    previous_token, duplicate_token, induction, prefix_matching, direct_logit   [layer, head]
        from one cached run on the probe (hook_pattern, hook_z)
    position_loss [seq_len - 1], icl_score []   from one run on the task batch
    q_composition, k_composition, v_composition [head0, head1]   from the weights
    ov_copying [layer, head]   sum(Re λ) / sum(|λ|), λ the eigenvalues of W_E W_V W_O W_U
Probe data (mi_jax.analysis.induction.probe_data: 64 sequences of each): "probe", 48 uniform
tokens whose last 24 repeat the 24 before (for this preset [A, A]); "task", the preset's training
distribution (uniform tokens, last L in 6..24 repeating an earlier span at a uniform start).
Drawn here with torch (same shapes and distribution, other values: the cost does not depend on
them), or read from --tokens-npz (arrays "probe", "task", e.g. dumped from mi_jax's probe_data).

Run:  /tmp/peer-tl/bin/python benchmarks/peers/tl_induction_analysis.py --checkpoints 200 --threads 2
Time it on idle cores: with --threads 2 and another process busy on one of 2 cores, every torch
op waits for the descheduled thread, many times slower (--threads 1 suffers far less).
"loadavg_1m_before" in the output says how busy the machine was.
Prints one JSON line last: {"impl": "transformer_lens", "checkpoints": N, "s_total": ...,
"s_per_checkpoint": ..., "measures": [...], "skipped": [...], "threads": T, ...}
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import time

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

# induction_2l (experiments/induction_2l.py) with InductionConfig's defaults filled in
N_LAYERS, D_MODEL, N_HEADS, D_HEAD = 2, 64, 4, 16
SEQ_LEN, D_VOCAB, REPEAT_LEN, MIN_REPEAT_LEN = 48, 64, 24, 6
ICL_EARLY, ICL_LATE = max(1, SEQ_LEN // 10), SEQ_LEN - 1  # icl_early / icl_late None: 4 and 47
N_PROBE = 64  # probe_data(cfg, n=64)
INIT_STD = 0.8 / math.sqrt(D_MODEL)  # TransformerConfig.init_std None

MEASURES = ["previous_token", "duplicate_token", "induction", "prefix_matching", "direct_logit",
            "position_loss", "icl_score", "ov_copying", "q_composition", "k_composition", "v_composition"]
SKIPPED: list[str] = []


def make_config() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=D_MODEL, n_heads=N_HEADS, d_head=D_HEAD, attn_only=True, act_fn=None,
        normalization_type="LN", eps=1e-5, positional_embedding_type="standard", n_ctx=SEQ_LEN,
        d_vocab=D_VOCAB, d_vocab_out=D_VOCAB, device="cpu", seed=0,
    )


def random_checkpoints(model: HookedTransformer, n: int, first_seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n state dicts of random inits (seed first_seed + i each), every entry its own tensor, as a
    series loaded from disk would be."""
    template = {k: v.detach().clone() for k, v in model.state_dict().items()}
    series = []
    for i in range(n):
        gen = torch.Generator().manual_seed(first_seed + i)
        sd = {}
        for key, value in template.items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                sd[key] = torch.randn(value.shape, generator=gen) * INIT_STD
            elif leaf.startswith("b_") or leaf == "b":  # biases, LayerNorm offsets
                sd[key] = torch.zeros_like(value)
            elif leaf == "w":  # LayerNorm scale
                sd[key] = torch.ones_like(value)
            else:  # attn.mask, attn.IGNORE buffers
                sd[key] = value.clone()
        series.append(sd)
    return series


def repeat_tail(tokens: torch.Tensor, span: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """tokens [batch, pos] whose last span[i] tokens repeat the span starting at source[i]."""
    n = tokens.shape[1]
    pos = torch.arange(n)[None]
    start = n - span[:, None]
    index = torch.where(pos >= start, pos - start + source[:, None], pos)
    return tokens.gather(1, index)


def probe_tokens(seed: int = 7) -> dict[str, torch.Tensor]:
    """{"probe", "task"}: [N_PROBE, SEQ_LEN] int64 each, drawn as mi_jax's probe_data draws them."""
    gen = torch.Generator().manual_seed(seed)
    probe = torch.randint(0, D_VOCAB, (N_PROBE, SEQ_LEN), generator=gen)
    probe = repeat_tail(probe, torch.full((N_PROBE,), REPEAT_LEN), torch.full((N_PROBE,), SEQ_LEN - 2 * REPEAT_LEN))
    task = torch.randint(0, D_VOCAB, (N_PROBE, SEQ_LEN), generator=gen)
    span = torch.randint(MIN_REPEAT_LEN, REPEAT_LEN + 1, (N_PROBE,), generator=gen)
    source = (torch.rand(N_PROBE, generator=gen) * (SEQ_LEN - 2 * span + 1)).long()  # uniform in [0, n - 2L]
    task = repeat_tail(task, span, source)
    return {"probe": probe, "task": task}


class Measurer:
    """Every measure of the model's current weights; the index sets and masks of the fixed probe
    are built once (as mi_jax's are, at trace time)."""

    def __init__(self, probe: torch.Tensor, task: torch.Tensor):
        self.probe, self.task = probe, task
        n, span = probe.shape[1], REPEAT_LEN
        self.prev_q = torch.arange(1, n)
        self.second = torch.arange(n - span, n)  # queries of the repeated copy
        self.dla_q = torch.arange(n - span, n - 1)  # queries in the copy that predict a token
        previous = torch.cat([torch.full_like(probe[:, :1], -1), probe[:, :-1]], dim=1)  # [batch, key_pos]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        match = (previous[:, None, :] == probe[:, :, None]) & causal  # [batch, pos, key_pos]
        self.match = match.float()
        self.n_match = max(int(match.any(-1).sum()), 1)
        self.names = lambda name: name.endswith("attn.hook_pattern") or name.endswith("attn.hook_z")

    def __call__(self, model: HookedTransformer) -> dict[str, np.ndarray]:
        probe, span = self.probe, REPEAT_LEN
        _, cache = model.run_with_cache(probe, names_filter=self.names, return_type=None)
        direction = model.W_U - model.W_U.mean(-1, keepdim=True)  # [d_model, vocab]
        target = direction.T[probe[:, self.dla_q + 1]]  # [batch, q, d_model]: correct next token's direction
        rows = {k: [] for k in ("previous_token", "duplicate_token", "induction", "prefix_matching", "direct_logit")}
        for layer in range(model.cfg.n_layers):
            pattern = cache["pattern", layer]  # [batch, head, pos, key_pos]
            rows["previous_token"].append(pattern[:, :, self.prev_q, self.prev_q - 1].mean((0, -1)))
            rows["duplicate_token"].append(pattern[:, :, self.second, self.second - span].mean((0, -1)))
            rows["induction"].append(pattern[:, :, self.second, self.second - span + 1].mean((0, -1)))
            rows["prefix_matching"].append(torch.einsum("bhqk,bqk->h", pattern, self.match) / self.n_match)
            z = cache["z", layer][:, self.dla_q]  # [batch, q, head, d_head]
            read = torch.einsum("bqd,hed->bqhe", target, model.blocks[layer].attn.W_O)
            rows["direct_logit"].append((z * read).sum((0, 1, 3)) / (z.shape[0] * z.shape[1]))
        out = {k: torch.stack(v) for k, v in rows.items()}
        position_loss = model(self.task, return_type="loss", loss_per_token=True).mean(0)  # [pos - 1]
        out["position_loss"] = position_loss
        out["icl_score"] = position_loss[ICL_LATE - 1] - position_loss[ICL_EARLY - 1]
        eig = (model.W_E @ model.OV @ model.W_U).eigenvalues  # [layer, head, d_head]
        out["ov_copying"] = eig.real.sum(-1) / eig.abs().sum(-1)
        for mode in "QKV":  # [layer1, head1, layer2, head2]: layer-0 heads into layer-1 heads
            out[f"{mode.lower()}_composition"] = model.all_composition_scores(mode)[0, :, 1, :]
        return {k: v.numpy() for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokens-npz", help="read the probe and task tokens (arrays 'probe', 'task') from this file")
    ap.add_argument("--save", help="write every measure, stacked over checkpoints, to this .npz")
    args = ap.parse_args()
    assert args.checkpoints >= 1, args.checkpoints
    torch.set_num_threads(args.threads)

    if args.tokens_npz:
        with np.load(args.tokens_npz) as f:
            data = {k: torch.from_numpy(np.asarray(f[k], np.int64)) for k in ("probe", "task")}
    else:
        data = probe_tokens()
    assert data["probe"].shape == data["task"].shape == (N_PROBE, SEQ_LEN), {k: v.shape for k, v in data.items()}

    model = HookedTransformer(make_config())
    model.eval()
    series = random_checkpoints(model, args.checkpoints)
    measure = Measurer(data["probe"], data["task"])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.load_state_dict(random_checkpoints(model, 1, first_seed=10**6)[0])  # warm-up, not timed
        measure(model)
        warmup_s = time.perf_counter() - t0

        results = []
        load_before = os.getloadavg()[0]  # other work on the cores wrecks torch's threads: see the docstring
        t0 = time.perf_counter()
        for sd in series:
            model.load_state_dict(sd)
            results.append(measure(model))
        s_total = time.perf_counter() - t0

    assert sorted(results[0]) == sorted(MEASURES), sorted(results[0])
    if args.save:
        np.savez(args.save, **{k: np.stack([r[k] for r in results]) for k in MEASURES})
    print(json.dumps({
        "impl": "transformer_lens", "checkpoints": args.checkpoints, "s_total": round(s_total, 3),
        "s_per_checkpoint": round(s_total / args.checkpoints, 5), "measures": MEASURES, "skipped": SKIPPED,
        "threads": args.threads, "warmup_s": round(warmup_s, 3), "loadavg_1m_before": round(load_before, 2),
        "probe_tokens": args.tokens_npz or "torch draw (mi_jax's shapes and distribution)",
        "probe_shape": list(data["probe"].shape), "task_shape": list(data["task"].shape),
        "torch": torch.__version__, "transformer_lens": importlib.metadata.version("transformer-lens"),
    }))


if __name__ == "__main__":
    main()
