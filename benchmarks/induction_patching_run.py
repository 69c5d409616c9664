"""Patching over a training run: train `induction_2l` (or read a run), then evaluate, for every checkpoint
in one compiled call each, head patching [layer, head], path patching of every layer-0 head into every
layer-1 head's q / k / v [sender, receiver], attribution patching of the heads with its agreement, and
a linear probe of the layer-0 output for the previous token.

Pairs (--pairs): "alternate" (default): x A A with every other token of the first copy redrawn (A_0, A_2,
...); metric the log-prob of the answer A_{i+1} at the second copy's queries A_i whose earlier copy was
redrawn. The token the induction head must copy, A_{i+1}, is intact, only the key that points to it
(its previous token) is corrupted, so restoring the previous-token head's output into the induction
head's keys restores the answer: a K-path. "redraw": `patching_peer_check.patching_pairs` (the whole
first copy redrawn, logit difference against the corrupted copy's token); there the copied token is
corrupted too, so restoring keys alone points the induction head at the wrong token (negative values).

    python benchmarks/induction_patching_run.py --out /tmp/ind2l [--steps 1500] [--run DIR]
Prints a summary per checkpoint and the largest difference between the accelerator's values and the
CPU's on two checkpoints (when the default device is not the CPU); writes OUT/patching.npz.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patching_peer_check import patching_pairs  # noqa: E402

from mi_jax.analysis.core import analyze_params, evaluate_measures  # noqa: E402
from mi_jax.interventions import induction_probe_measure, path_patching_measure, patching_measure  # noqa: E402
from mi_jax.presets import load as load_preset  # noqa: E402
from mi_jax.io.trajectory import Trajectory  # noqa: E402


def alternate_pairs(task, n: int = 16, seed: int = 11) -> dict[str, np.ndarray]:
    """x A A with A_0, A_2, ... of the first copy redrawn; positions: the second copy's queries A_i, i even."""
    clean = patching_pairs(task, n, seed)["clean"]
    n_pos, span = task.seq_len, task.repeat_len
    first = np.arange(n_pos - 2 * span, n_pos - span)
    redrawn = first[0::2]
    corrupted = clean.copy()
    corrupted[:, redrawn] = np.random.default_rng(seed).integers(0, task.d_vocab, (n, len(redrawn)))
    positions = redrawn[redrawn + 1 < n_pos - span] + span  # queries whose earlier copy was redrawn
    return {"clean": clean, "corrupted": corrupted, "answer": clean[:, positions + 1], "wrong": None, "positions": positions}


def signed_extreme(x: np.ndarray) -> list:
    """[sender, receiver, value] of the largest |value|."""
    s, r = np.unravel_index(np.argmax(np.abs(x)), x.shape)
    return [int(s), int(r), round(float(x[s, r]), 3)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", help="an induction_2l run dir (default: train one into OUT/run)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=25, help="checkpoint interval of the training run")
    ap.add_argument("--pairs", choices=("alternate", "redraw"), default="alternate")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else out / "run"
    if not args.run:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mi_jax.cli", "train", "induction_2l", "--set", f"train.steps={args.steps}",
                        "--set", f"train.ckpt_every={args.every}", "--set", f"train.eval_every={args.every}",
                        "--wandb", "off", "--quiet", "--overwrite", "--out", str(run)], check=True)
        print(json.dumps({"trained_s": round(time.perf_counter() - t0, 1)}))
    traj = Trajectory.load(run)
    task = load_preset("induction_2l")
    cfg = task.transformer
    pairs = patching_pairs(task) if args.pairs == "redraw" else alternate_pairs(task)
    clean, corrupted, answer, wrong = (pairs[k] for k in ("clean", "corrupted", "answer", "wrong"))
    kw = {"positions": pairs["positions"], "metric": "logit_diff" if args.pairs == "redraw" else "logprob"}
    measures = {
        "patching": patching_measure(cfg, clean, corrupted, answer, wrong, sites=("head", "k"), attribution=True, **kw),
        "paths": path_patching_measure(cfg, clean, corrupted, answer, wrong, **kw),
        "probe": induction_probe_measure(cfg, clean, steps=50),
    }
    t0 = time.perf_counter()
    results = {k: v[:, 0] for k, v in analyze_params(traj.params, measures).items()}  # member 0 (seed 0)
    seconds = round(time.perf_counter() - t0, 2)
    print(json.dumps({"analysis_s": seconds, "checkpoints": len(traj), "device": str(jax.devices()[0])}))
    np.savez(out / "patching.npz", steps=traj.steps, **results)
    for i, step in enumerate(traj.steps):
        print(json.dumps({
            "step": int(step), "m_clean": round(float(results["clean_metric"][i]), 3),
            "m_corrupt": round(float(results["corrupted_metric"][i]), 3),
            "head_patching": [[round(float(x), 2) for x in row] for row in results["head_patching"][i]],
            **{f"{x}_path_extreme": signed_extreme(results[f"path_patching_{x}"][i]) for x in "qkv"},
            "attribution_corr": round(float(results["head_attribution_correlation"][i]), 3),
            "prev_token_probe": round(float(results["probe_prev_token_accuracy"][i]), 3),
        }))
    if jax.default_backend() != "cpu":
        cpu = jax.devices("cpu")[0]
        worst = 0.0
        for i in (len(traj) // 2, len(traj) - 1):
            params = jax.device_put(traj.at(i, 0), cpu)
            with jax.default_device(cpu):
                on_cpu = jax.jit(lambda p: evaluate_measures(measures, p, None))(params)
            for name, value in on_cpu.items():
                if "probe" not in name:
                    worst = max(worst, float(np.abs(np.asarray(value) - results[name][i]).max()))
        print(json.dumps({"max_abs_difference_vs_cpu": worst}))


if __name__ == "__main__":
    main()
