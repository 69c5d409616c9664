"""Peer baseline: TransformerLens per-checkpoint loop of the language measures of `language_attn_2l`.

The peer of mi_jax's `lm_analysis` benchmark (benchmarks/bench_language.py), written as a
TransformerLens user would: a folder of checkpoints as TransformerLens state dicts (what
`mi-jax export RUN_DIR --out DIR` writes: DIR/{step}.safetensors, the HookedTransformerConfig fields
as JSON in each file's metadata), and a Python loop that reads each file (`safetensors.torch.load_file`),
loads it into one HookedTransformer (`load_state_dict`, strict), runs the model on the fixed data and
computes every measure with torch. Under torch.inference_mode; one warm-up checkpoint first, not timed.

Measures (mi_jax.analysis.language.make_measures, the same names and definitions; mi_jax's OV
circuits become copying scores on the host, `analysis.induction.finish`, as here):
    position_loss [seq_len], icl_score [], inductable_loss [], other_loss []
        from one run on the validation windows ("validation" [n, seq_len + 1]: the model reads the
        first seq_len tokens, predicts the last seq_len; "inductable" [n, seq_len] splits the tokens)
    previous_token, duplicate_token, induction, prefix_matching   [layer, head]
        from one `run_with_cache` on the repeated-token probe ("probe" [n, seq_len], its last
        seq_len / 2 tokens repeating the seq_len / 2 before)
    bigram_kl [], unigram_kl []   from one run on every vocabulary token alone at position 0 (the
        model's bigram table q(b | a)) against the training stream's "unigram" p(a) [vocab] and
        "bigram" p(b | a) [vocab, vocab]: sum_a p(a) KL(p(. | a) || q(. | a)), sum_a p(a) KL(p || q(. | a))
    context_gain []   -log q(x_t | x_{t-1}) from that table minus the validation windows' loss, per token
    ov_copying [layer, head]   sum(Re λ) / sum(|λ|), λ the eigenvalues of W_E W_V W_O W_U
        (`FactoredMatrix.eigenvalues`, as in the TransformerLens demos)
    q_composition, k_composition, v_composition [head0, head1]   `model.all_composition_scores`
    text_induction [layer, head], repeat_loss_gap []   from one `run_with_cache` on "repeated_text"
        [n, seq_len] (the first seq_len / 2 tokens of validation windows, twice): the attention from the
        repeat to the token after the earlier copy, and the repeat's loss minus the first copy's
--data NPZ holds the fixed data above (the bench writes mi_jax's `analysis.language.probe_data`)
and the scalars "early", "late" (the ICL score's tokens).

Run:  /tmp/peer-tl/bin/python benchmarks/peers/tl_lm_analysis.py --series DIR --data DATA.npz --threads 2
Time it on idle cores: a torch thread pool sharing its cores with another process runs many times
slower. "loadavg_1m_before" in the output says how busy the machine was. --save OUT.npz writes every
measure stacked over the timed checkpoints (and "steps"), for the bench's comparison with mi_jax.
Prints one JSON line last: {"impl": "transformer_lens", "checkpoints": N, "s_total": ...,
"s_per_checkpoint": ..., "load_s": ..., "measures": [...], "threads": T, ...}
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

MEASURES = ["position_loss", "icl_score", "inductable_loss", "other_loss", "previous_token", "duplicate_token",
            "induction", "prefix_matching", "bigram_kl", "unigram_kl", "ov_copying", "q_composition",
            "k_composition", "v_composition", "text_induction", "repeat_loss_gap", "context_gain"]


def checkpoint_files(folder: Path) -> list[Path]:
    """DIR/{step}.safetensors, in step order."""
    files = sorted(folder.glob("*.safetensors"), key=lambda p: int(p.stem))
    assert files, f"no .safetensors files in {folder}"
    return files


def kl_rows(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) along the last axis, with 0 log 0 = 0."""
    return torch.where(p > 0, p * (torch.log(torch.where(p > 0, p, 1.0)) - log_q), 0.0).sum(-1)


class Measurer:
    """Every measure of the model's current weights; the index sets and masks of the fixed data are
    built once."""

    def __init__(self, data: dict, n_layers: int):
        self.validation, self.probe, self.text = data["validation"], data["probe"], data["repeated_text"]
        self.inductable = data["inductable"].bool()
        self.unigram, self.bigram = data["unigram"], data["bigram"]
        self.early, self.late = int(data["early"]), int(data["late"])
        self.n_layers = n_layers
        n = self.probe.shape[1]
        self.span = span = n // 2
        self.prev_q = torch.arange(1, n)
        self.second = torch.arange(n - span, n)  # queries of the repeated copy
        previous = torch.cat([torch.full_like(self.probe[:, :1], -1), self.probe[:, :-1]], dim=1)  # [batch, key]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        match = (previous[:, None, :] == self.probe[:, :, None]) & causal  # [batch, pos, key_pos]
        self.match = match.float()
        self.n_match = max(int(match.any(-1).sum()), 1)
        self.vocab_tokens = torch.arange(self.unigram.shape[0])[:, None]  # every token alone at position 0
        self.names = lambda name: name.endswith("attn.hook_pattern")

    def __call__(self, model: HookedTransformer) -> dict[str, np.ndarray]:
        out = {}
        # losses on the validation windows
        logits = model(self.validation[:, :-1])  # [n, seq_len, vocab]
        loss = F.cross_entropy(logits.transpose(1, 2), self.validation[:, 1:], reduction="none")  # [n, seq_len]
        validation_loss = loss  # [n, seq_len], again below (context_gain)
        position_loss = loss.mean(0)
        mask = self.inductable
        out["position_loss"] = position_loss
        out["icl_score"] = position_loss[self.late - 1] - position_loss[self.early - 1]
        out["inductable_loss"] = (loss * mask).sum() / max(int(mask.sum()), 1)
        out["other_loss"] = (loss * ~mask).sum() / max(int((~mask).sum()), 1)
        # attention scores on the repeated-token probe
        _, cache = model.run_with_cache(self.probe, names_filter=self.names, return_type=None)
        rows = {k: [] for k in ("previous_token", "duplicate_token", "induction", "prefix_matching")}
        for layer in range(self.n_layers):
            pattern = cache["pattern", layer]  # [batch, head, pos, key_pos]
            rows["previous_token"].append(pattern[:, :, self.prev_q, self.prev_q - 1].mean((0, -1)))
            rows["duplicate_token"].append(pattern[:, :, self.second, self.second - self.span].mean((0, -1)))
            rows["induction"].append(pattern[:, :, self.second, self.second - self.span + 1].mean((0, -1)))
            rows["prefix_matching"].append(torch.einsum("bhqk,bqk->h", pattern, self.match) / self.n_match)
        out.update({k: torch.stack(v) for k, v in rows.items()})
        # repeated text: the induction attention from the repeat and its loss against the first copy's
        logits, cache = model.run_with_cache(self.text, names_filter=self.names)
        half = self.text.shape[1] // 2
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), self.text[:, 1:], reduction="none")
        out["repeat_loss_gap"] = loss[:, half:].mean() - loss[:, : half - 1].mean()
        q = torch.arange(half, 2 * half)
        out["text_induction"] = torch.stack([cache["pattern", layer][:, :, q, q - half + 1].mean((0, -1))
                                             for layer in range(self.n_layers)])
        # the model's bigram table against the training stream's n-gram statistics
        log_q = torch.log_softmax(model(self.vocab_tokens)[:, 0].float(), dim=-1)  # [a, b]
        out["bigram_kl"] = (self.unigram * kl_rows(self.bigram, log_q)).sum()
        out["unigram_kl"] = (self.unigram * kl_rows(self.unigram[None], log_q)).sum()
        # what the validation windows gain from anything but the previous token
        own_bigram_loss = -log_q[self.validation[:, :-1], self.validation[:, 1:]]
        out["context_gain"] = (own_bigram_loss - validation_loss).mean()
        # weight-based scores
        eig = (model.W_E @ model.OV @ model.W_U).eigenvalues  # [layer, head, d_head]
        out["ov_copying"] = eig.real.sum(-1) / eig.abs().sum(-1)
        if self.n_layers >= 2:
            for mode in "QKV":  # [layer1, head1, layer2, head2]: layer-0 heads into layer-1 heads
                out[f"{mode.lower()}_composition"] = model.all_composition_scores(mode)[0, :, 1, :]
        return {k: v.numpy() for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", required=True, help="a folder of {step}.safetensors (`mi-jax export`)")
    ap.add_argument("--data", required=True, help="the fixed data (.npz, see the module doc)")
    ap.add_argument("--checkpoints", type=int, help="only the first N checkpoints (default all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--save", help="write every measure, stacked over the timed checkpoints, to this .npz")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    files = checkpoint_files(Path(args.series))[: args.checkpoints]
    with np.load(args.data) as f:
        data = {k: torch.from_numpy(np.asarray(f[k])) for k in f.files}
    for k in ("validation", "probe", "repeated_text"):
        data[k] = data[k].long()
    with safe_open(str(files[0]), "pt") as f:
        tl_config = json.loads(f.metadata()["tl_config"])
    model = HookedTransformer(HookedTransformerConfig(**tl_config, device="cpu"))
    model.eval()
    measure = Measurer(data, model.cfg.n_layers)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.load_state_dict(load_file(str(files[-1])), strict=True)  # warm-up, not timed
        measure(model)
        warmup_s = time.perf_counter() - t0

        results, load_s = [], 0.0
        load_before = os.getloadavg()[0]  # other work on the cores wrecks torch's threads: see the docstring
        t0 = time.perf_counter()
        for path in files:
            t1 = time.perf_counter()
            model.load_state_dict(load_file(str(path)), strict=True)
            load_s += time.perf_counter() - t1
            results.append(measure(model))
        s_total = time.perf_counter() - t0
        load_after = os.getloadavg()[0]

    names = [m for m in MEASURES if m in results[0]]
    assert sorted(results[0]) == sorted(names), sorted(results[0])
    if args.save:
        np.savez(args.save, steps=np.asarray([int(p.stem) for p in files]),
                 **{k: np.stack([r[k] for r in results]) for k in names})
    print(json.dumps({
        "impl": "transformer_lens", "checkpoints": len(files), "s_total": round(s_total, 3),
        "s_per_checkpoint": round(s_total / len(files), 5), "load_s": round(load_s, 3), "measures": names,
        "threads": args.threads, "warmup_s": round(warmup_s, 3), "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2), "tl_config": tl_config,
        "validation_shape": list(data["validation"].shape), "probe_shape": list(data["probe"].shape),
        "torch": torch.__version__, "transformer_lens": importlib.metadata.version("transformer-lens"),
    }))


if __name__ == "__main__":
    main()
