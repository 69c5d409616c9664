"""Grokking (issue 14): the key-frequency subspace of the embedding ablated over training, and probes for
the key frequencies' waves, against the run's phases.

For each checkpoint, inside the compiled measure, B [2K, d_model] is the orthonormal span of that
checkpoint's embedding directions Σ_a cos(w_k a) W_E[a], Σ_a sin(w_k a) W_E[a] for the final model's
key frequencies K (`mi_jax.models.ablation.fourier_directions`, here in jnp). At `hook_embed` of the two
number positions (the `=` token is left alone) the embedding is

    keep key      x P + mean(x)(I - P)     only the key-frequency part kept (project_onto, mean ablation)
    remove key    x - x P + mean(x) P      the key-frequency part replaced by its mean (project_off)

with P = BᵀB and the mean over all p² inputs (so the constant Fourier component survives both). The
controls do the same with as many other frequencies (a fixed random draw of non-key ones). Losses are
cross-entropies at `=` on the test and train pairs. Probes: `grokking_probe_measure` (ridge, held-out
R² of cos/sin(w_k x) for x = a, b, a + b, from the last residual stream at `=`).

    python experiments/interventions_grokking.py --run checkpoints/grok14b [--out experiments/results]
    (without --run it trains grokking_small into checkpoints/grokking_interventions first)

Writes OUT/interventions_grokking_{ablation,probe}.png and prints a JSON summary (the numbers of the notes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mi_jax as mj
from mi_jax.analysis import grokking as gk
from mi_jax.analysis.core import analyze
from mi_jax.interventions import grokking_probe_measure, project_off, project_onto
from mi_jax.models import transformer as tfm
from mi_jax.plots import interventions as plots
from mi_jax.tasks.grokking import GrokkingData, cross_entropy

NUMBER_POSITIONS = 2  # tokens a, b; position 2 is `=`


def fourier_basis(W_E_numbers: jax.Array, freqs) -> jax.Array:
    """Orthonormal rows [2 K, d_model] spanning Σ_a cos(w_k a) W_E[a], Σ_a sin(w_k a) W_E[a] (jnp: traced per checkpoint)."""
    p = W_E_numbers.shape[0]
    w = 2 * jnp.pi * jnp.asarray(freqs, jnp.float32) / p
    phase = jnp.outer(w, jnp.arange(p))  # [K, a]
    waves = jnp.concatenate([jnp.cos(phase), jnp.sin(phase)])  # [2K, a]
    q, _ = jnp.linalg.qr((waves @ W_E_numbers).T)  # [d_model, 2K]
    return q.T


def on_numbers(hook_dict: dict) -> dict:
    """The hook dict with its function applied to the number positions only ([batch, pos, d] -> same)."""
    (name, fn), = hook_dict.items()
    return {name: lambda x: jnp.concatenate([fn(x[:, :NUMBER_POSITIONS]), x[:, NUMBER_POSITIONS:]], 1)}


def subspace_loss_measure(mcfg, key_freqs, control_freqs):
    """fn(params, data) -> {"{split}_loss_{variant}": []} for split train / test and variant full, keep_key,
    remove_key, keep_control, remove_control (see the module docstring)."""
    cfg, p = mcfg.transformer, mcfg.p
    d = GrokkingData.from_config(mcfg)
    tokens, labels = jnp.asarray(d.tokens, jnp.int32), jnp.asarray(d.labels, jnp.int32)
    split = {"train": jnp.asarray(d.train_idx), "test": jnp.asarray(d.test_idx)}
    f64 = mcfg.train.logsoftmax_f64

    def measure(params, data=None):
        bases = {"key": fourier_basis(params["W_E"][:p], key_freqs), "control": fourier_basis(params["W_E"][:p], control_freqs)}
        variants = {"full": {}}
        for which, B in bases.items():
            variants[f"keep_{which}"] = on_numbers(project_onto("hook_embed", B, "mean"))
            variants[f"remove_{which}"] = on_numbers(project_off("hook_embed", B, "mean"))
        out = {}
        for variant, hooks in variants.items():
            logits = tfm.apply(params, tokens, cfg, hooks=hooks)[0][:, -1]  # [pair, vocab_out] at `=`
            for name, idx in split.items():
                out[f"{name}_loss_{variant}"] = cross_entropy(logits[idx], labels[idx], f64)
        return out

    return measure


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a grokking_small run dir (default: train one)")
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--control-seed", type=int, default=0)
    ap.add_argument("--row-every", type=int, default=150, help="steps between the printed rows")
    args = ap.parse_args()
    run = Path(args.run or "checkpoints/grokking_interventions")
    if not args.run:
        mj.train(mj.load_preset("grokking_small"), run, wandb="off")
    traj = mj.Trajectory.load(run)
    mcfg, m = traj.config, traj.metrics
    data = gk.make_data(mcfg)
    key_freqs = [int(k) for k in gk.find_key_frequencies(traj, data)[0]]
    others = np.setdiff1d(np.arange(1, mcfg.p // 2 + 1), key_freqs)
    control_freqs = sorted(int(k) for k in np.random.default_rng(args.control_seed).choice(others, len(key_freqs), replace=False))
    phases = gk.phase_boundaries(m["step"], m["train_acc"][:, 0], m["test_acc"][:, 0], m["test_loss"][:, 0])

    measures = {"subspace": subspace_loss_measure(mcfg, key_freqs, control_freqs),
                "probe": grokking_probe_measure(mcfg, key_freqs)}
    t0 = time.perf_counter()
    with jax.enable_x64(mcfg.train.logsoftmax_f64):
        results = {k: v[:, 0] for k, v in analyze(traj, measures).items()}  # member 0
        progress, _ = gk.progress_measures(traj, ["restricted_loss", "excluded_loss"], key_freqs=[key_freqs])
    seconds = time.perf_counter() - t0
    steps = traj.steps

    out = Path(args.out)
    marks = {"memorised": phases["memorised"], "cleanup": phases["cleanup"], "generalised": phases["generalised"]}
    label = {"full": "full model", "keep_key": "only key freqs kept", "remove_key": "key freqs removed",
             "keep_control": f"only {len(key_freqs)} other freqs kept", "remove_control": f"{len(key_freqs)} other freqs removed"}
    ablation_png = plots.over_training(
        steps, {label[v]: results[f"test_loss_{v}"] for v in label}, out / "interventions_grokking_ablation.png",
        ylabel="test loss (nats)", logy=True, marks=marks, reference={"uniform": float(np.log(mcfg.p))},
        title=f"grokking_small seed {mcfg.train.seed}: embedding (a, b) restricted to key freqs {key_freqs} or not",
    )
    probe_r2 = {x: results[f"probe_{x}_r2"] for x in ("a", "b", "sum")}  # [time, K, 2]
    probe_png = plots.probe_over_training(
        steps, {f"cos/sin(w_k {'(a+b)' if x == 'sum' else x}), mean over k": r2.mean((1, 2)) for x, r2 in probe_r2.items()},
        out / "interventions_grokking_probe.png", metric="held-out R²", marks=marks,
        title=f"ridge probes of the residual stream at '=' for the key frequencies {key_freqs}",
    )

    def at(i):
        row = {"step": int(steps[i])}
        row.update({f"test_{v}": float(results[f"test_loss_{v}"][i]) for v in label})
        row.update({f"train_{v}": float(results[f"train_loss_{v}"][i]) for v in ("full", "keep_key", "remove_key")})
        row.update({f"probe_{x}_r2": float(r2[i].mean()) for x, r2 in probe_r2.items()})
        row.update({k: float(v[i, 0]) for k, v in progress.items()})
        return row

    def first_step(values, level):
        hit = np.flatnonzero(np.asarray(values) >= level)
        return int(steps[hit[0]]) if len(hit) else None

    summary = {
        "run": str(run), "key_freqs": key_freqs, "control_freqs": control_freqs, "phases": phases,
        "analysis_s": round(seconds, 1), "checkpoints": len(steps),
        "keep_key_below_full": [int(s) for s in steps[results["test_loss_keep_key"] < results["test_loss_full"]]],
        "probe_sum_r2_first_step": {str(lv): first_step(probe_r2["sum"].mean((1, 2)), lv) for lv in (0.5, 0.9)},
        "probe_a_r2_first_step": {str(lv): first_step(probe_r2["a"].mean((1, 2)), lv) for lv in (0.5, 0.9)},
        "probe_sum_r2_per_freq_final": {str(k): probe_r2["sum"][-1, j].astype(float).round(3).tolist()
                                        for j, k in enumerate(key_freqs)},
        "rows": [at(i) for i in range(len(steps)) if steps[i] % args.row_every == 0 or i == len(steps) - 1],
        "figures": [str(ablation_png), str(probe_png)],
    }
    for name in ("memorised", "cleanup", "generalised"):
        if phases[name] is not None:
            summary[f"at_{name}"] = at(int(np.searchsorted(steps, phases[name])))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
