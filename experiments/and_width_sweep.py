"""Computation in superposition across widths: `python experiments/and_width_sweep.py`.

Trains the and_superposition preset's task for n = 12 and 20 inputs at several widths (3 seeds each,
as one vmapped program per width), compares with the random universal-AND construction, and writes
experiments/results/and_superposition.png plus a markdown table on stdout.
"""

import dataclasses
from pathlib import Path

import jax
import numpy as np

import mi_jax as mj
from mi_jax.plots.boolean_and import and_vs_width
from mi_jax.tasks.boolean_and import BOOLEAN_AND_TRAIN, BooleanAndTask, best_random_construction
from mi_jax.training.loop import Trainer


def sweep(ns=(12, 20), widths=(4, 8, 16, 32, 64, 128), seeds=(0, 1, 2)) -> list[dict]:
    rows = []
    for n in ns:
        for h in widths:
            tc = dataclasses.replace(BOOLEAN_AND_TRAIN, seeds=seeds, eval_every=BOOLEAN_AND_TRAIN.steps,
                                     ckpt_every=BOOLEAN_AND_TRAIN.steps)
            cfg = mj.BooleanAndConfig(n_inputs=n, n_hidden=h, train=tc)
            trainer = Trainer(BooleanAndTask(cfg), tc)
            state, _ = trainer.train_steps(trainer.init_state(), tc.steps)
            m = jax.tree.map(np.asarray, trainer.evaluate(state["params"]))
            rand = best_random_construction(n, h)
            rows.append({"n": n, "pairs": cfg.n_pairs, "n_hidden": h, "acc": float(m["acc"].mean()),
                         "acc_min": float(m["acc"].min()), "tpr": float(m["tpr"].mean()), "fpr": float(m["fpr"].mean()),
                         "max_err": float(m["max_err"].mean()), "rand_max_err": rand["max_err"],
                         "rand_acc": rand["acc"], "rand_tpr": rand["tpr"], "rand_fpr": rand["fpr"], "rand_q": rand["q"]})
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    rows = sweep()
    out = Path(__file__).resolve().parent / "results" / "and_superposition.png"
    and_vs_width(rows, out)
    print("| n | pairs | neurons | acc (mean / min of 3 seeds) | TPR | FPR | max err | random: acc | TPR | FPR | max err | q |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['pairs']} | {r['n_hidden']} | {r['acc']:.3f} / {r['acc_min']:.3f} | {r['tpr']:.3f} | "
              f"{r['fpr']:.2e} | {r['max_err']:.2f} | {r['rand_acc']:.3f} | {r['rand_tpr']:.3f} | {r['rand_fpr']:.2e} | {r['rand_max_err']:.2f} | {r['rand_q']} |")
