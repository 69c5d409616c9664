"""Pairwise AND of 20 boolean inputs (at most 2 active, 190 ANDs) through 60 ReLU neurons: computation in superposition.

`python experiments/and_superposition.py` sweeps widths for n = 12 and 20 (3 seeds each, as one
vmapped program per width), compares with the random universal-AND construction, and writes
experiments/results/and_superposition.png plus a markdown table on stdout.
"""

from mi_jax.tasks.boolean_and import AND_TRAIN, ANDConfig

PRESET = ANDConfig(n_inputs=20, n_hidden=60, pos_weight=10.0, train=AND_TRAIN)


def sweep(ns=(12, 20), widths=(4, 8, 16, 32, 64, 128), seeds=(0, 1, 2)) -> list[dict]:
    import dataclasses

    import jax
    import numpy as np

    from mi_jax.tasks.boolean_and import ANDTask, best_random_construction
    from mi_jax.train.loop import Trainer

    rows = []
    for n in ns:
        for h in widths:
            tc = dataclasses.replace(AND_TRAIN, seeds=seeds, eval_every=AND_TRAIN.steps, ckpt_every=AND_TRAIN.steps)
            cfg = ANDConfig(n_inputs=n, n_hidden=h, train=tc)
            trainer = Trainer(ANDTask(cfg), tc)
            state, _ = trainer.run_chunk(trainer.init_state())
            m = jax.tree.map(np.asarray, trainer.evaluate(state["params"]))
            rand = best_random_construction(n, h)
            rows.append({"n": n, "pairs": cfg.n_pairs, "n_hidden": h, "acc": float(m["acc"].mean()),
                         "acc_min": float(m["acc"].min()), "tpr": float(m["tpr"].mean()), "fpr": float(m["fpr"].mean()),
                         "max_err": float(m["max_err"].mean()), "rand_max_err": rand["max_err"],
                         "rand_acc": rand["acc"], "rand_tpr": rand["tpr"], "rand_fpr": rand["fpr"], "rand_q": rand["q"]})
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    from pathlib import Path

    from mi_jax.plots.superposition import and_vs_width

    rows = sweep()
    out = Path(__file__).resolve().parent / "results" / "and_superposition.png"
    and_vs_width(rows, out)
    print("| n | pairs | neurons | acc (mean / min of 3 seeds) | TPR | FPR | max err | random: acc | TPR | FPR | max err | q |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['pairs']} | {r['n_hidden']} | {r['acc']:.3f} / {r['acc_min']:.3f} | {r['tpr']:.3f} | "
              f"{r['fpr']:.2e} | {r['max_err']:.2f} | {r['rand_acc']:.3f} | {r['rand_tpr']:.3f} | {r['rand_fpr']:.2e} | {r['rand_max_err']:.2f} | {r['rand_q']} |")
