"""Peer baseline: devinterp 2.0.1's own LLC estimator, run over a mi_jax grokking checkpoint series as a
devinterp user would (a Python loop over checkpoints: load the state dict into the torch model, call
`devinterp.slt.llc.llc`, read `llc_mean` / `llc_std`).

devinterp 2.0.1 has no `estimate_learning_coeff_with_summary` (the 1.x name): its entry point is
`devinterp.slt.llc.llc(model, dataset, observables, lr=, n_beta=, localization=, num_chains=,
num_draws=, batch_size=, loss_fn=, ...)` on a HuggingFace `Dataset` with an "input_ids" column, with
SGLD `SGMCMC.sgld`: w <- w - (lr/2)(n_beta grad L_m + localization (w - w*)) + sqrt(lr) N(0, 1), the
same update as mi_jax's `llc.sample_llc` (lr = epsilon, localization = gamma). Its loss is per token
(batch, seq - 1), averaged over tokens; grokking has one prediction per sequence, so a row of
input_ids is (a, b, =, c) and the loss is the cross-entropy of c at `=` (float64 log-softmax, as the
run trained) repeated over the 3 slots: the mean is the grokking loss. Parameters the run kept frozen
(the biases) are left out of `param_masks`, as mi_jax leaves them out of the LLC.
Differences that remain, both inside the chains' spread: devinterp's L_n(w*) is the mean over
`num_init_loss_batches` = n // B shuffled batches (n - n mod B examples; mi_jax: all n), and its
minibatches are one shuffled pass cycled (mi_jax: drawn uniformly with replacement); different RNGs.

Model: the grokking transformer in plain torch (`GrokkingTransformer`, TransformerLens' forward pass
and parameter names: embed.W_E, blocks.0.attn.W_Q, ...; no layer norm), loaded from the TL state dicts
mi_jax exports (`mi_jax.interop.transformer_lens.to_tl_state_dict`). Not TransformerLens itself: devinterp
2.0.1 needs zarr >= 3.1 and xarray >= 2025.7 (pandas >= 2.1), TransformerLens 2.18 pandas < 2.1, so
devinterp has a venv of its own, /tmp/peer-di (torch 2.13.0 CPU + devinterp 2.0.1 and its own
dependencies), built by `benchmarks/peer_runs.py:setup_devinterp`. --check first checks the torch
model's loss on the whole training set equals mi_jax's L_n(w*).

Run, in two venvs:
    PYTHONPATH=. .venv/bin/python benchmarks/peers/devinterp_llc.py --dump-mi-jax RUN_DIR /tmp/series.npz [--checkpoints 0,10,60]
    /tmp/peer-di/bin/python benchmarks/peers/devinterp_llc.py --series /tmp/series.npz --check
The dump holds the checkpoints as TL state dicts stacked [time, ...], the TL config, the training
set, the sampler settings and mi_jax's own estimates (from RUN_DIR/analysis/llc.npz, written by
`mi-jax llc`); --check prints one JSON line: per checkpoint both estimates, the difference and the
chains' spread. --serve: warm up on one checkpoint, print a line, then for each line N on stdin run
N more checkpoints (cycling) and print {"s_per_checkpoint": ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


# ----------------------------------------------------------------------------- the dump (mi_jax's venv)


def dump_series(steps, params, cfg, settings, out_path, mi_jax=None, frozen=None) -> str:
    """Write a series (params leaves [time, ...] of one member) as the peer reads it. mi_jax: its
    estimates {llc_mean, llc_std, llc_per_chain: [time, ...]}; frozen: mi_jax param path -> bool."""
    import jax

    from mi_jax.config import to_dict
    from mi_jax.interop.transformer_lens import tl_config_fields, tl_key, to_tl_state_dict
    from mi_jax.tasks import make_task
    from mi_jax.trees import flatten

    task = make_task(cfg)
    tokens, labels = task.llc_data()
    dicts = [to_tl_state_dict(jax.tree.map(lambda x, t=t: np.asarray(x[t]), params), cfg.transformer)
             for t in range(len(steps))]
    flat = flatten(jax.tree.map(lambda x: np.asarray(x[0]), params))
    frozen_names = sorted(tl_key(name) for name in flat if task.frozen(tuple(_Key(k) for k in name.split("."))))
    out = {f"sd/{k}": np.stack([d[k] for d in dicts]) for k in dicts[0]}
    extra = {} if mi_jax is None else {f"mi_jax/{k}": np.asarray(v) for k, v in mi_jax.items()}
    np.savez(out_path, steps=np.asarray(steps), tokens=np.asarray(tokens), labels=np.asarray(labels),
             tl_config=json.dumps(tl_config_fields(cfg.transformer)), settings=json.dumps(to_dict(settings.llc)),
             p=cfg.p, logsoftmax_f64=cfg.train.logsoftmax_f64, frozen=json.dumps(frozen_names), **out, **extra)
    return out_path


class _Key:
    """A stand-in for a jax DictKey/SequenceKey in `task.frozen(path)`, which reads `path[-1].key`."""

    def __init__(self, key):
        self.key = key


def dump_run(run_dir, out_path, checkpoints=None, member=0) -> str:
    """`dump_series` of a run's checkpoints (all, or the given indices) with mi_jax's estimates from
    RUN_DIR/analysis/llc.npz and its settings from llc_summary.json (`mi-jax llc` wrote both)."""
    import jax

    from mi_jax import config as config_lib
    from mi_jax.analysis.llc_task import LLCSettings
    from mi_jax.io.results import load_results
    from mi_jax.runs.trajectory import Trajectory

    traj = Trajectory.load(run_dir)
    steps, results = load_results(os.path.join(run_dir, "analysis", "llc.npz"))
    summary = json.load(open(os.path.join(run_dir, "analysis", "llc_summary.json")))
    settings = config_lib.from_dict(LLCSettings, summary["settings"])
    chosen = np.arange(len(steps)) if checkpoints is None else np.asarray(checkpoints)
    index = [int(np.flatnonzero(traj.steps == steps[t])[0]) for t in chosen]
    params = jax.tree.map(lambda x: np.asarray(x)[index, member], traj.params)
    mine = {k: results[k][chosen, member] for k in ("llc_mean", "llc_std", "llc_per_chain", "init_loss")}
    return dump_series(steps[chosen], params, traj.config, settings, out_path, mine)


# ----------------------------------------------------------------------------- the peer (torch venv)


def grokking_transformer(torch, tl_config: dict, state: dict):
    """The grokking model in plain torch with TL's parameter names, from one TL state dict (numpy)."""

    class GrokkingTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if tl_config.get("normalization_type") is not None:
                raise SystemExit("devinterp_llc.py: the torch model has no layer norm (the grokking presets have none)")
            for key, value in state.items():
                if key.endswith(("attn.mask", "attn.IGNORE")):  # TL's buffers: the causal mask is built below
                    continue
                *path, name = key.split(".")
                module = self
                for part in path:
                    if not hasattr(module, part):
                        module.add_module(part, torch.nn.Module())
                    module = getattr(module, part)
                module.register_parameter(name, torch.nn.Parameter(torch.as_tensor(np.array(value[0]))))

        def forward(self, tokens):  # [batch, pos] -> logits [batch, pos, vocab_out]
            n = tokens.shape[1]
            x = self.embed.W_E[tokens] + self.pos_embed.W_pos[:n]
            causal = torch.ones(n, n, dtype=torch.bool).tril()
            for layer in range(tl_config["n_layers"]):
                block = getattr(self.blocks, str(layer))
                a = block.attn
                q, k, v = (torch.einsum("bpd,hde->bphe", x, w) + b
                           for w, b in ((a.W_Q, a.b_Q), (a.W_K, a.b_K), (a.W_V, a.b_V)))
                scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / tl_config["d_head"] ** 0.5
                pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
                z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
                x = x + torch.einsum("bqhe,hed->bqd", z, a.W_O) + a.b_O
                if not tl_config["attn_only"]:
                    m = block.mlp
                    x = x + torch.relu(x @ m.W_in + m.b_in) @ m.W_out + m.b_out
            return x @ self.unembed.W_U + self.unembed.b_U

    return GrokkingTransformer()


class Peer:
    """The torch model, the training set as a HF Dataset, and devinterp's `llc` with the dump's settings."""

    def __init__(self, path: str, threads: int):
        import torch
        from datasets import Dataset

        torch.set_num_threads(threads)
        self.torch = torch
        f = np.load(path)
        self.steps = f["steps"]
        self.settings = json.loads(str(f["settings"]))
        self.p, self.f64 = int(f["p"]), bool(f["logsoftmax_f64"])
        self.frozen = set(json.loads(str(f["frozen"])))
        self.state = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
        self.mi_jax = {k[7:]: f[k] for k in f.files if k.startswith("mi_jax/")}
        self.model = grokking_transformer(torch, json.loads(str(f["tl_config"])), self.state)
        rows = np.concatenate([f["tokens"], f["labels"][:, None]], axis=1).astype(np.int64)
        self.dataset = Dataset.from_dict({"input_ids": rows}).with_format("torch")
        self.n = len(rows)

    def loss_fn(self, model, input_ids):
        """Per-"token" loss (batch, 3): the cross-entropy of c at `=`, repeated over the 3 slots."""
        logits = model(input_ids[:, :3])[:, -1, : self.p]
        logits = logits.double() if self.f64 else logits
        loss = -logits.log_softmax(-1).gather(-1, input_ids[:, 3:4])[:, 0]
        return loss.float()[:, None].expand(-1, 3)

    def load(self, t: int) -> None:
        names = dict(self.model.named_parameters())
        self.model.load_state_dict({k: self.torch.from_numpy(np.array(v[t])) for k, v in self.state.items() if k in names})

    def full_loss(self, t: int) -> float:
        """The model's mean loss on the whole training set at checkpoint t (mi_jax's L_n(w*))."""
        self.load(t)
        with self.torch.no_grad():
            return float(self.loss_fn(self.model, self.dataset[:]["input_ids"])[:, 0].double().mean())

    def estimate(self, t: int, seed: int = 100) -> dict:
        """devinterp's LLC of checkpoint t: {"llc_mean", "llc_std", "llc_per_chain"}."""
        from devinterp.slt.llc import llc

        torch, s = self.torch, self.settings
        self.load(t)
        n_beta = s["n_beta"] if s["n_beta"] is not None else s["batch_size"] / np.log(s["batch_size"])
        masks = {name: None for name, _ in self.model.named_parameters() if name not in self.frozen}
        with tempfile.TemporaryDirectory() as folder:  # devinterp writes its samples to zarr
            out = llc(self.model, self.dataset, {}, lr=s["epsilon"], n_beta=float(n_beta), localization=s["gamma"],
                      param_masks=masks, num_chains=s["n_chains"], num_draws=s["n_draws"],
                      num_burnin_steps=s["n_burnin"], num_steps_bw_draws=s["steps_between_draws"],
                      batch_size=s["batch_size"], num_init_loss_batches=self.n // s["batch_size"], init_seed=seed,
                      loss_fn=self.loss_fn, output_path=os.path.join(folder, "samples.zarr"))
            return {"llc_mean": float(out["llc_mean"]), "llc_std": float(out["llc_std"]),
                    "llc_per_chain": np.asarray(out["llc_per_chain"]).tolist(), "init_loss": float(out["init_loss"])}


def check(peer: Peer) -> dict:
    """Both estimates per checkpoint: the difference against the chains' spread sqrt(sd_mi² + sd_di²)."""
    rows = []
    for t, step in enumerate(peer.steps):
        di = peer.estimate(t)
        mi_mean, mi_sd = float(peer.mi_jax["llc_mean"][t]), float(peer.mi_jax["llc_std"][t])
        spread = float(np.hypot(mi_sd, di["llc_std"]))
        rows.append({"step": int(step), "mi_jax": [round(mi_mean, 3), round(mi_sd, 3)],
                     "devinterp": [round(di["llc_mean"], 3), round(di["llc_std"], 3)],
                     "init_loss": [float(peer.mi_jax["init_loss"][t]), di["init_loss"]],
                     "torch_full_loss": peer.full_loss(t),
                     "difference": round(di["llc_mean"] - mi_mean, 3), "spread": round(spread, 3),
                     "within_spread": abs(di["llc_mean"] - mi_mean) <= spread})
    return {"check": rows, "all_within_spread": all(r["within_spread"] for r in rows)}


def serve(peer: Peer) -> None:
    peer.estimate(0)  # warm-up, not timed
    print(json.dumps({"ready": True}), flush=True)
    t = 0
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        for _ in range(n):
            t = (t + 1) % len(peer.steps)
            peer.estimate(t)
        print(json.dumps({"s_per_checkpoint": (time.perf_counter() - t0) / n}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump-mi-jax", nargs=2, metavar=("RUN_DIR", "OUT_NPZ"))
    parser.add_argument("--checkpoints", help="indices into llc.npz's checkpoints for --dump-mi-jax")
    parser.add_argument("--series", help="a dump to run devinterp on")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.dump_mi_jax:
        chosen = None if args.checkpoints is None else [int(c) for c in args.checkpoints.split(",")]
        print(dump_run(*args.dump_mi_jax, checkpoints=chosen))
        return
    import warnings

    warnings.filterwarnings("ignore")  # devinterp warns per call about temp output and progress bars
    os.environ.setdefault("TQDM_DISABLE", "1")
    peer = Peer(args.series, args.threads)
    if args.serve:
        serve(peer)
        return
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = check(peer) if args.check else {"estimates": [peer.estimate(t)["llc_mean"] for t in range(len(peer.steps))]}
    print(json.dumps({"impl": "devinterp 2.0.1", "checkpoints": len(peer.steps), "s_total": round(time.perf_counter() - t0, 2),
                      "threads": args.threads, "loadavg_1m_before": load, **out}))


if __name__ == "__main__":
    main()
