"""Peer baseline: TransformerLens per-checkpoint loop of the grokking progress measures of `grokking_p113`.

The peer of mi_jax's `analysis_p113` benchmark (benchmarks/bench_analysis.py), written as a
TransformerLens user would, after TransformerLens' demos/Grokking_Demo.ipynb and the progress-measures
paper's code: the checkpoint series held in memory as state dicts, and a Python loop that loads
each into one HookedTransformer (`load_state_dict`), runs `run_with_cache` once on all p*p inputs
(caching only blocks.0.mlp.hook_post), and computes every measure with torch from the logits, the
cached neuron activations and the weights (Fourier-basis matmuls, projections on the a+b waves).
Under torch.inference_mode; one warm-up checkpoint first, not timed.

Model: grokking_p113's (experiments/grokking_p113.py; ModularConfig.transformer fills n_ctx 3,
d_vocab p+1 = 114, d_vocab_out p = 113): 1 layer, d_model 128, 4 heads x 32, d_mlp 512, ReLU, no
layer norm, learned positions, causal attention scaled by sqrt(d_head), all biases. Checkpoints:
random inits drawn as mi_jax's `init_params` draws them (every W_* ~ N(0, 0.8 / sqrt(d_model)),
biases 0), one torch seed each. Key frequencies fixed at (14, 35, 41, 42, 52), as the benchmark's.
Train/test split: mi_jax's (GrokkingData: numpy default_rng(598).permutation of the a-major p*p
pairs, the first round(0.3 * p*p) = 3831 sorted as train), or the indices in --check's file.

Measures (mi_jax.analysis.grokking.measures, the same names and definitions; L the `=` logits
[pair, c], A the `=` neuron activations [pair, d_mlp], K the key frequencies):
    train_loss, test_loss     cross-entropy of L (float64 log-softmax) on the split
    train_acc, test_acc       argmax accuracy
    logit_freq_energy [56]    (<L,D_k^cos>^2/|D_k^cos|^2 + <L,D_k^sin>^2/|D_k^sin|^2) / |L - mean_c L|^2,
                              D_k = cos/sin(w_k(a+b-c)); the inner products by cos(w(s-c)) =
                              cos ws cos wc + sin ws sin wc: two [pair, p] @ [p, freq] matmuls
    restricted_loss           the demo's: (mean A + sum_K proj of A on the unit a+b waves) @ W_out @ W_U,
                              shifted to the mean logits; train loss
    restricted_loss_abc       train loss of mean_pairs L + sum_K proj of L on D_k^cos, D_k^sin
    excluded_loss             train loss of L minus its projection on the key unit a+b waves (per c)
    embed_freq_norms [56], embed_gini           |(F W_E[:p])_{cos k, sin k}|, its Gini
    logit_map_freq_norms [56], logit_map_gini   the same for W_L = (W_out W_U)^T [c, d_mlp]
    neuron_best_frac, neuron_best_freq [512]    max / argmax over k of the share of each neuron's
                              centred variance over the p*p pairs in the 3x3 Fourier block
                              {const, cos k, sin k}_a x {const, cos k, sin k}_b: the demo's fft2d by
                              the Fourier basis (F A F^T, --neuron-transform basis, default) or
                              torch.fft.fft2 (--neuron-transform fft: the same values, but slower)
    weight_norm               sum of every squared parameter
Skipped: none. The demo's excluded loss takes the key waves out of the neurons; this one (mi_jax's,
the paper's) takes them out of the logits. mi_jax forms the `=` logits and neurons from per-token
tables and projects residue sums; TransformerLens runs the full 3-position forward on all p*p
inputs (most of a checkpoint's time) and the measures on all pairs.

Run:   /tmp/peer-tl/bin/python benchmarks/peers/tl_grok_analysis.py --checkpoints 250 --threads 2
Check against mi_jax's own values (two steps, two venvs):
       .venv/bin/python benchmarks/peers/tl_grok_analysis.py --dump-mi-jax /tmp/tl_grok_check.npz
       /tmp/peer-tl/bin/python benchmarks/peers/tl_grok_analysis.py --check /tmp/tl_grok_check.npz --checkpoints 5
The dump holds a few mi_jax parameter sets (init_params, weights scaled to make the model's
outputs non-trivial, some with random biases), mi_jax's split and mi_jax's measure values (from
`analyze_params`, the benchmark's path, and from eager `evaluate_measures`); --check loads the
sets into the HookedTransformer, uses the file's split, prints the max differences as a JSON line
("check"), and then times the loop as usual.
Checked 2026-11-29 (4 sets, weight scales 1-2.5, one with biases std 0.2): every measure within
1.6e-5 of mi_jax's (relative to the measure's largest value; logit_freq_energy the worst, its values
~1e-7, the rest <= 1e-6); neuron_best_freq 99.0% equal, each of the 21 others a neuron active on
one pair only, whose 56 fractions tie exactly (8 / (p*p - 1) each).
Time it on idle cores: torch's thread pool stalls when another process holds one of the cores
(--threads 1 suffers less); "loadavg_1m_before" says how busy the machine was.
Prints one JSON line last: {"impl": "transformer_lens", "checkpoints": N, "s_total": ...,
"s_per_checkpoint": ..., "measures": [...], "skipped": [...], "threads": T, "loadavg_1m_before": ...}
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

try:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:  # --dump-mi-jax runs in mi_jax's venv, which has no torch
    torch = None

# grokking_p113 (experiments/grokking_p113.py) with ModularConfig.transformer's fill-ins
P, N_LAYERS, D_MODEL, N_HEADS, D_HEAD, D_MLP = 113, 1, 128, 4, 32, 512
N_CTX, D_VOCAB, D_VOCAB_OUT = 3, P + 1, P
TRAIN_FRAC, DATA_SEED = 0.3, 598
INIT_STD = 0.8 / math.sqrt(D_MODEL)  # TransformerConfig.init_std None
KEY_FREQS = (14, 35, 41, 42, 52)  # bench_analysis.py's
N_FREQS = P // 2  # 56

MEASURES = ["train_loss", "train_acc", "weight_norm", "embed_freq_norms", "embed_gini", "restricted_loss",
            "restricted_loss_abc", "excluded_loss", "logit_freq_energy", "test_loss", "test_acc",
            "logit_map_freq_norms", "logit_map_gini", "neuron_best_frac", "neuron_best_freq"]
SKIPPED: list[str] = []
HOOK = "blocks.0.mlp.hook_post"


def mi_jax_split(n: int = P * P) -> tuple[np.ndarray, np.ndarray]:
    """mi_jax.tasks.grokking.train_test_split(n, 0.3, 598): (train_idx, test_idx), each sorted."""
    order = np.random.default_rng(DATA_SEED).permutation(n)
    n_train = int(round(TRAIN_FRAC * n))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


# ----------------------------------------------------------------------------- TransformerLens side


def make_config() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=D_MODEL, n_heads=N_HEADS, d_head=D_HEAD, d_mlp=D_MLP, act_fn="relu",
        normalization_type=None, attn_only=False, positional_embedding_type="standard", n_ctx=N_CTX,
        d_vocab=D_VOCAB, d_vocab_out=D_VOCAB_OUT, device="cpu", seed=999,
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
            elif leaf.startswith("b_"):
                sd[key] = torch.zeros_like(value)
            else:  # attn.mask, attn.IGNORE buffers
                sd[key] = value.clone()
        series.append(sd)
    return series


def fourier_basis(p: int) -> torch.Tensor:
    """[p, p] rows const, cos 1, sin 1, ..., each of unit norm (the paper's and the demo's basis), float32."""
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    F = torch.stack(rows)
    return (F / F.norm(dim=1, keepdim=True)).float()


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The demo's: mean cross-entropy with the log-softmax in float64."""
    log_probs = logits.to(torch.float64).log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=labels[:, None])[:, 0].mean()


def gini(x: torch.Tensor) -> torch.Tensor:
    """sum_i (2i - n - 1) x_(i) / (n sum x), x_(i) ascending; 0 for all zeros."""
    x = x.sort().values
    n = x.shape[-1]
    i = torch.arange(1, n + 1, dtype=x.dtype)
    total = x.sum()
    return ((2 * i - n - 1) * x).sum() / (n * total) if total > 0 else torch.zeros(())


class Measurer:
    """Every measure of the model's current weights; the inputs, split and Fourier tables are built
    once (as mi_jax's `make_data` builds them once)."""

    def __init__(self, train_idx: np.ndarray, test_idx: np.ndarray, neuron_transform: str = "basis"):
        p = P
        a = torch.arange(p).repeat_interleave(p)  # a-major: pair index a*p + b
        b = torch.arange(p).repeat(p)
        self.tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # [p*p, 3]
        self.labels = (a + b) % p
        self.train_idx = torch.as_tensor(np.asarray(train_idx, np.int64))
        self.test_idx = torch.as_tensor(np.asarray(test_idx, np.int64))
        self.neuron_transform = neuron_transform
        self.F = fourier_basis(p)  # [comp, x]
        w = 2 * math.pi / p * torch.arange(1, N_FREQS + 1, dtype=torch.float64)  # [freq]
        s = ((a + b) % p).double()
        c = torch.arange(p, dtype=torch.float64)
        # a+b-c directions, factored: cos(w(s-c)) = cos ws cos wc + sin ws sin wc
        self.cos_s, self.sin_s = torch.cos(s[:, None] * w).float(), torch.sin(s[:, None] * w).float()  # [pair, freq]
        self.cos_c, self.sin_c = torch.cos(c[:, None] * w).float(), torch.sin(c[:, None] * w).float()  # [c, freq]
        # |D_k|^2 = sum over pairs and c of cos^2(w_k(s - c)): c - s runs over Z_p for each pair
        self.norm_cos = (p * p * torch.cos(c[:, None] * w).pow(2).sum(0)).float()
        self.norm_sin = (p * p * torch.sin(c[:, None] * w).pow(2).sum(0)).float()
        key = torch.tensor(KEY_FREQS) - 1
        self.key = key
        # unit a+b waves of the key frequencies over the p*p pairs, [pair, 2 * len(K)] (orthonormal columns)
        waves = torch.cat([torch.cos(s[:, None] * w[key]), torch.sin(s[:, None] * w[key])], dim=1)
        self.waves = (waves / waves.norm(dim=0, keepdim=True)).float()
        k = torch.arange(1, N_FREQS + 1)
        # the 3x3 block of frequency k: basis rows {0, 2k-1, 2k} (const, cos k, sin k), or DFT indices {0, k, p-k}
        self.block_rows = torch.stack([torch.zeros_like(k), 2 * k - 1, 2 * k], dim=1)  # [freq, 3]
        self.block_dft = torch.stack([torch.zeros_like(k), k, p - k], dim=1)

    def freq_norms(self, M: torch.Tensor) -> torch.Tensor:
        """M [x, d] -> [freq]: sqrt(|cos k part|^2 + |sin k part|^2) of F M (the constant left out)."""
        sq = (self.F @ M).pow(2).sum(1)  # [comp]
        return (sq[1::2] + sq[2::2]).sqrt()

    def neuron_fracs(self, acts: torch.Tensor) -> torch.Tensor:
        """acts [p*p, d_mlp] -> [freq, d_mlp]: share of each neuron's centred variance in block k."""
        grid = acts.reshape(P, P, -1)
        grid = grid - grid.mean((0, 1))
        if self.neuron_transform == "basis":  # the demo's fft2d: F A F^T per neuron, over a then over b
            # (as two contractions: torch.einsum has no opt_einsum here and would take F x F first)
            over_a = torch.einsum("abn,ia->ibn", grid, self.F)
            energy = torch.einsum("ibn,jb->ijn", over_a, self.F).pow(2)  # [comp_a, comp_b, neuron]
            idx = self.block_rows
        else:
            energy = torch.fft.fft2(grid, dim=(0, 1)).abs().pow(2)  # [u, v, neuron]
            idx = self.block_dft
        block = energy[idx[:, :, None], idx[:, None, :]].sum((1, 2))  # [freq, neuron]
        total = energy.sum((0, 1))
        return block / torch.where(total > 0, total, 1.0)  # a dead neuron: 0 everywhere (as mi_jax)

    def __call__(self, model: HookedTransformer) -> dict[str, np.ndarray]:
        logits, cache = model.run_with_cache(self.tokens, names_filter=HOOK)
        logits = logits[:, -1]  # [pair, c]
        acts = cache[HOOK][:, -1]  # [pair, d_mlp]
        tr, te, labels = self.train_idx, self.test_idx, self.labels
        out = {}
        for split, idx in (("train", tr), ("test", te)):
            out[f"{split}_loss"] = loss_fn(logits[idx], labels[idx])
            out[f"{split}_acc"] = (logits[idx].argmax(-1) == labels[idx]).float().mean()

        # logits on the a+b-c directions of every frequency
        LC, LS = logits @ self.cos_c, logits @ self.sin_c  # [pair, freq]
        dot_cos = (self.cos_s * LC + self.sin_s * LS).sum(0)  # <L, D_k^cos>
        dot_sin = (self.sin_s * LC - self.cos_s * LS).sum(0)  # <L, D_k^sin>
        centred = logits - logits.mean(1, keepdim=True)
        out["logit_freq_energy"] = (dot_cos.pow(2) / self.norm_cos + dot_sin.pow(2) / self.norm_sin) / centred.pow(2).sum()
        # restricted_loss_abc: mean logits + the key frequencies' a+b-c components
        key = self.key
        alpha, beta = dot_cos[key] / self.norm_cos[key], dot_sin[key] / self.norm_sin[key]
        cos_s, sin_s, cos_c, sin_c = self.cos_s[:, key], self.sin_s[:, key], self.cos_c[:, key], self.sin_c[:, key]
        # a cos(w(s-c)) + b sin(w(s-c)) = cos ws (a cos wc - b sin wc) + sin ws (a sin wc + b cos wc)
        abc = cos_s @ (alpha * cos_c - beta * sin_c).T + sin_s @ (alpha * sin_c + beta * cos_c).T
        out["restricted_loss_abc"] = loss_fn((logits.mean(0, keepdim=True) + abc)[tr], labels[tr])
        # excluded_loss: every output's logits minus their part on the key unit a+b waves
        excluded = logits - self.waves @ (self.waves.T @ logits)
        out["excluded_loss"] = loss_fn(excluded[tr], labels[tr])
        # restricted_loss (the demo's): key a+b waves of the neurons, read out through W_out W_U
        W_out, W_U = model.blocks[0].mlp.W_out, model.W_U
        approx_acts = acts.mean(0) + self.waves @ (self.waves.T @ acts)
        restricted = approx_acts @ W_out @ W_U
        restricted += logits.mean(0, keepdim=True) - restricted.mean(0, keepdim=True)
        out["restricted_loss"] = loss_fn(restricted[tr], labels[tr])

        out["embed_freq_norms"] = self.freq_norms(model.W_E[:P])
        out["embed_gini"] = gini(out["embed_freq_norms"])
        out["logit_map_freq_norms"] = self.freq_norms((W_out @ W_U).T)  # W_L [c, d_mlp]
        out["logit_map_gini"] = gini(out["logit_map_freq_norms"])
        fracs = self.neuron_fracs(acts)
        out["neuron_best_frac"], best = fracs.max(0)
        out["neuron_best_freq"] = best + 1
        out["weight_norm"] = sum(param.pow(2).sum() for param in model.parameters())
        return {k: v.numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------- check against mi_jax


def tl_name(path: tuple) -> str:
    """mi_jax param path -> TransformerLens state-dict key."""
    top = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U", "b_U": "unembed.b_U"}
    if len(path) == 1:
        return top[path[0]]
    _, layer, part, leaf = path  # ("blocks", 0, "attn" | "mlp", name)
    return f"blocks.{layer}.{part}.{leaf}"


def dump_mi_jax(path: str) -> None:
    """(mi_jax's venv) Parameter sets, mi_jax's split and mi_jax's measure values -> path (.npz)."""
    import jax
    from mi_jax import presets
    from mi_jax.analysis import grokking
    from mi_jax.analysis.core import analyze_params, evaluate_measures
    from mi_jax.models import transformer as tfm
    from mi_jax.tasks.grokking import GrokkingData

    cfg = presets.load("grokking_p113")
    t = cfg.transformer
    ours = (N_LAYERS, D_MODEL, N_HEADS, D_HEAD, D_MLP, "relu", False, N_CTX, D_VOCAB, D_VOCAB_OUT, "learned", INIT_STD)
    theirs = (t.n_layers, t.d_model, t.n_heads, t.d_head, t.d_mlp, t.act_fn, t.layer_norm, t.n_ctx, t.d_vocab,
              t.d_vocab_out, t.positional_embedding, t.std)
    assert ours == theirs and (cfg.p, cfg.train_frac, cfg.data_seed) == (P, TRAIN_FRAC, DATA_SEED), (ours, theirs)
    variants = [(1.0, 0.0), (1.7, 0.0), (2.0, 0.2), (2.5, 0.0)]  # (weight scale, bias std)
    sets = []
    for i, (scale, bias_std) in enumerate(variants):
        key = jax.random.key(100 + i)
        flat, tree = jax.tree_util.tree_flatten_with_path(tfm.init_params(t, key))
        noise = jax.random.split(jax.random.fold_in(key, 1), len(flat))
        leaves = [bias_std * jax.random.normal(k, x.shape, x.dtype) if tfm.is_bias(leaf_path) else scale * x
                  for (leaf_path, x), k in zip(flat, noise)]
        sets.append(jax.tree_util.tree_unflatten(tree, leaves))
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *sets)
    measures = grokking.measures(cfg)
    data = grokking.make_data(cfg, key_freqs=KEY_FREQS)
    with jax.enable_x64(cfg.train.logsoftmax_f64):  # as bench_analysis.py runs them
        vmapped = analyze_params(stacked, measures, data)
        eager = [jax.tree.map(np.asarray, evaluate_measures(measures, params, data)) for params in sets]
    d = GrokkingData.from_config(cfg)
    out = {"train_idx": d.train_idx, "test_idx": d.test_idx, "key_freqs": np.asarray(KEY_FREQS),
           "variants": np.asarray(variants), "measure_names": np.asarray(sorted(vmapped))}
    for leaf_path, x in jax.tree_util.tree_flatten_with_path(stacked)[0]:
        keys = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in leaf_path)
        out["param/" + tl_name(keys)] = np.asarray(x, np.float32)
    for name in vmapped:
        out["mi/" + name] = np.asarray(vmapped[name])
        out["mi_eager/" + name] = np.stack([e[name] for e in eager])
    np.savez(path, **out)
    print(json.dumps({"dumped": path, "sets": len(sets), "variants": variants, "measures": sorted(vmapped),
                      "train_loss": np.asarray(vmapped["train_loss"]).round(4).tolist(),
                      "train_acc": np.asarray(vmapped["train_acc"]).round(4).tolist()}))


def compare(model: HookedTransformer, measure: Measurer, path: str) -> dict:
    """Load the dumped mi_jax parameter sets, evaluate ours, and hold them against mi_jax's values."""
    with np.load(path) as f:
        dump = {k: f[k] for k in f.files}
    names = [str(n) for n in dump["measure_names"]]
    assert sorted(names) == sorted(MEASURES), (sorted(names), sorted(MEASURES))
    assert tuple(dump["key_freqs"]) == KEY_FREQS, dump["key_freqs"]
    template = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k[len("param/"):]: v for k, v in dump.items() if k.startswith("param/")}
    assert sorted(params) == sorted(n for n, _ in model.named_parameters()), sorted(params)
    n_sets = len(dump["variants"])
    ours = []
    for i in range(n_sets):
        sd = dict(template)
        sd.update({k: torch.from_numpy(np.ascontiguousarray(v[i])) for k, v in params.items()})
        model.load_state_dict(sd)
        ours.append(measure(model))
    report = {}
    for name in names:
        row = {}
        mine = np.stack([o[name] for o in ours]).astype(np.float64)
        for ref in ("mi", "mi_eager"):
            theirs = dump[f"{ref}/{name}"].astype(np.float64)
            if name == "neuron_best_freq":  # an argmax: near-ties may flip
                row[f"agree_frac_{ref}"] = round(float((mine == theirs).mean()), 5)
                best_mine = np.stack([o["neuron_best_frac"] for o in ours])
                best_theirs = dump[f"{ref}/neuron_best_frac"]
                flips = mine != theirs
                row[f"flips_{ref}"] = int(flips.sum())
                row[f"flips_best_frac_max_rel_gap_{ref}"] = float(f"{(np.abs(best_mine - best_theirs) / np.maximum(best_theirs, 1e-30))[flips].max(initial=0):.3g}")
                continue
            diff = np.abs(mine - theirs)
            row[f"max_abs_{ref}"] = float(f"{diff.max():.3g}")
            row[f"max_rel_{ref}"] = float(f"{diff.max() / max(np.abs(theirs).max(), 1e-30):.3g}")
        row["range_mi"] = [float(f"{dump['mi/' + name].min():.4g}"), float(f"{dump['mi/' + name].max():.4g}")]
        report[name] = row
    worst = max((r["max_rel_mi"], n) for n, r in report.items() if "max_rel_mi" in r)
    return {"check": path, "sets": n_sets, "variants": dump["variants"].tolist(), "per_measure": report,
            "worst_rel_vs_mi": {"measure": worst[1], "max_rel": worst[0]},
            "neuron_best_freq_agree_frac": report["neuron_best_freq"]["agree_frac_mi"],
            "split_from": "check file (mi_jax GrokkingData)",
            "split_equals_this_scripts_numpy_split": bool(
                all(np.array_equal(x, y) for x, y in zip(mi_jax_split(), (dump["train_idx"], dump["test_idx"]))))}


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=250)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--neuron-transform", choices=("basis", "fft"), default="basis",
                    help="2D Fourier transform of the neuron activations: the demo's basis matmuls, or torch.fft")
    ap.add_argument("--check", help="an .npz from --dump-mi-jax: compare with mi_jax, use its split, then time")
    ap.add_argument("--dump-mi-jax", metavar="NPZ", help="(run in mi_jax's venv) write the check file and exit")
    ap.add_argument("--save", help="write every measure, stacked over the timed checkpoints, to this .npz")
    args = ap.parse_args()
    if args.dump_mi_jax:
        dump_mi_jax(args.dump_mi_jax)
        return
    assert torch is not None, "torch and transformer_lens are needed (run in /tmp/peer-tl)"
    assert args.checkpoints >= 1, args.checkpoints
    torch.set_num_threads(args.threads)

    if args.check:
        with np.load(args.check) as f:
            train_idx, test_idx = f["train_idx"], f["test_idx"]
    else:
        train_idx, test_idx = mi_jax_split()
    model = HookedTransformer(make_config())
    model.eval()
    series = random_checkpoints(model, args.checkpoints)
    measure = Measurer(train_idx, test_idx, args.neuron_transform)
    check = None
    with torch.inference_mode():
        if args.check:
            check = compare(model, measure, args.check)
            print(json.dumps(check))
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
        load_after = os.getloadavg()[0]

    assert sorted(results[0]) == sorted(MEASURES), sorted(results[0])
    if args.save:
        np.savez(args.save, **{k: np.stack([r[k] for r in results]) for k in MEASURES})
    import importlib.metadata
    row = {
        "impl": "transformer_lens", "checkpoints": args.checkpoints, "s_total": round(s_total, 3),
        "s_per_checkpoint": round(s_total / args.checkpoints, 5), "measures": MEASURES, "skipped": SKIPPED,
        "threads": args.threads, "loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(load_after, 2),
        "warmup_s": round(warmup_s, 3), "neuron_transform": args.neuron_transform, "key_freqs": list(KEY_FREQS),
        "n_train": len(train_idx), "split": "check file (mi_jax's)" if args.check else "mi_jax's, recomputed with numpy",
        "torch": torch.__version__, "transformer_lens": importlib.metadata.version("transformer-lens"),
    }
    if check:
        row["check_worst_rel_vs_mi"] = check["worst_rel_vs_mi"]
        row["check_neuron_best_freq_agree_frac"] = check["neuron_best_freq_agree_frac"]
    print(json.dumps(row))


if __name__ == "__main__":
    main()
