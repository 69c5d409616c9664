"""mi_jax's side of the TransformerLens head-patching comparison (benchmarks/peers/tl_patching.py).

    --dump F.npz   write a checkpoint series of induction_2l's model (random inits, or the first
                   --checkpoints of a run's trajectory with --run), the patching pairs and mi_jax's
                   head patching [time, layer, head]; then run  /tmp/peer-tl/bin/python
                   benchmarks/peers/tl_patching.py --check F.npz
    --check F.npz  recompute the head patching of a series the peer wrote (`tl_patching.py --dump F.npz`)
                   with mi_jax (`head_patching_measure` through `analyze_params`) and compare.

The file holds the series as TransformerLens state-dict entries ("sd/blocks.0.attn.W_Q" [time, ...]),
the pairs ("clean", "corrupted" [batch, pos], "answer", "wrong" [batch, n_positions], "positions")
and "head_patching". Prints one JSON line; exit 1 when the values differ by more than --tolerance.
"""
from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.analysis.core import analyze_params
from mi_jax.interventions import head_patching_measure
from mi_jax.interop.transformer_lens import tl_key
from mi_jax.trees import flatten, unflatten
from mi_jax.models import transformer as tfm
from mi_jax.presets import load as load_preset


def to_state_dicts(params: dict, cfg) -> dict[str, np.ndarray]:
    """Stacked params (leaves [time, ...]) -> {"sd/<TransformerLens key>": [time, ...]}, weights only."""
    return {f"sd/{tl_key(name)}": np.asarray(value) for name, value in flatten(params).items()}


def from_state_dicts(files, cfg) -> dict:
    """The inverse of `to_state_dicts`: stacked params as `init_params` lays them out."""
    names = flatten(jax.eval_shape(lambda: tfm.init_params(cfg, jax.random.key(0))))
    return unflatten({name: jnp.asarray(files[f"sd/{tl_key(name)}"], jnp.float32) for name in names})


def patching_pairs(cfg, n: int = 16, seed: int = 11) -> dict[str, np.ndarray]:
    """The peer's pairs (same construction, a jax draw): clean x A A, corrupted with the first copy redrawn."""
    k_clean, k_corrupt = jax.random.split(jax.random.key(seed))
    n_pos, span = cfg.seq_len, cfg.repeat_len
    first = np.arange(n_pos - 2 * span, n_pos - span)
    clean = np.array(jax.random.randint(k_clean, (n, n_pos), 0, cfg.d_vocab))
    clean[:, n_pos - span:] = clean[:, first]
    corrupted = clean.copy()
    corrupted[:, first] = np.asarray(jax.random.randint(k_corrupt, (n, span), 0, cfg.d_vocab))
    positions = np.arange(n_pos - span, n_pos - 1)
    return {"clean": clean, "corrupted": corrupted, "answer": clean[:, positions + 1],
            "wrong": corrupted[:, positions - span + 1], "positions": positions}


def head_patching(series: dict, cfg, pairs) -> np.ndarray:
    clean, corrupted, answer, wrong = (pairs[k] for k in ("clean", "corrupted", "answer", "wrong"))
    measure = head_patching_measure(cfg, clean, corrupted, answer, wrong, positions=pairs["positions"])
    return analyze_params(series, {"patching": measure}, member_axis=False)["head_patching"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump")
    ap.add_argument("--check")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--run", help="take the checkpoints from this run's trajectory (an induction_2l run)")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    task_cfg = load_preset("induction_2l")
    cfg = task_cfg.transformer
    if args.check:
        with np.load(args.check) as f:
            files = {k: f[k] for k in f.files}
        pairs = {k: files[k] for k in ("clean", "corrupted", "answer", "wrong", "positions")}
        ours = head_patching(from_state_dicts(files, cfg), cfg, pairs)
        error = float(np.abs(ours - files["head_patching"]).max())
        agree = error <= args.tolerance
        print(json.dumps({"checked": args.check, "checkpoints": len(ours), "max_abs_error": error, "agree": agree}))
        sys.exit(0 if agree else 1)
    if args.run:
        from mi_jax.runs.trajectory import Trajectory

        traj = Trajectory.load(args.run)
        pick = np.linspace(0, len(traj) - 1, args.checkpoints).round().astype(int)
        series = jax.tree.map(lambda x: x[pick, 0], traj.params)  # member 0
    else:
        per = [tfm.init_params(cfg, k) for k in jax.random.split(jax.random.key(0), args.checkpoints)]
        series = jax.tree.map(lambda *xs: jnp.stack(xs), *per)
    pairs = patching_pairs(task_cfg)
    values = head_patching(series, cfg, pairs)
    np.savez(args.dump, head_patching=values, **to_state_dicts(series, cfg), **pairs)
    print(json.dumps({"dumped": args.dump, "checkpoints": len(values)}))


if __name__ == "__main__":
    main()
