"""Induction (issue 14): patching maps over training, the previous-token probe, and a run trained with
the previous-token head ablated from step 0 ("artificial optogenetics", Singh et al. 2024).

1. The plain run (induction_2l, its seed, --steps): the induction measures (`analysis.induction`) give its
   previous-token head L0H and its phase change.
2. The same seed retrained with `train.interventions=("ablate_head:0.H",)` (zero ablation of that head's
   `hook_z` at every step and evaluation), both for --steps; measured with the ablation in place.
   With --cascade K (K >= 2): runs 2..K of a cascade, each the seed retrained (for --cascade-steps)
   with every head ablated so far AND the previous run's own previous-token head ablated (its best
   unablated layer-0 head), until no layer-0 head is left: which head takes the role next, and does
   induction still form when none can?
3. Every run: induction score of the best layer-1 head, ICL score, test loss, and a multinomial probe of
   `blocks.0.hook_attn_out` for the previous token (held-out accuracy; chance 1 / d_vocab).
4. The plain run: head patching (layer x head) and residual-stream patching (layer x position) over
   training, pairs as in `benchmarks/induction_patching_run.py` ("alternate": every other token of the
   first copy redrawn, metric the answer's log-prob), drawn as strips of small multiples.

    python experiments/interventions_induction.py [--base RUN] [--ablated RUN] [--out experiments/results]
    (runs not given are trained into checkpoints/induction_interventions/{base,ablated_prev}, the cascade's
    into CASCADE_DIR/ablated_{n}heads)

Writes OUT/interventions_induction_*.png and prints a JSON summary (the numbers of the notes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

import mi_jax as mj
from mi_jax.analysis import induction as ind
from mi_jax.analysis.core import analyze
from mi_jax.interventions import induction_probe_measure, patching_measure
from mi_jax.plots import interventions as plots
from mi_jax.reports.induction import summarize_member
from mi_jax.tasks import training_hooks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from induction_patching_run import alternate_pairs  # noqa: E402

INDUCTION_LEVEL = 0.5  # an induction head "has formed" once its score passes this (chance ~0.04)
ICL_LEVEL = -1.0  # nats: in-context learning is under way once late tokens are this much easier


def measure_run(traj, probe_steps: int) -> dict:
    """Induction measures and the previous-token probe for every checkpoint of member 0, with the run's
    training interventions in place: {name: [time, ...]}."""
    cfg = traj.config
    data = ind.probe_data(cfg)
    measures = {**ind.make_measures(cfg),
                "probe": induction_probe_measure(cfg.transformer, np.asarray(data["task"]), steps=probe_steps,
                                                 hooks=training_hooks(cfg))}
    return {k: v[:, 0] for k, v in ind.finish(analyze(traj, measures, data)).items()}


def first_step(steps, values, level, below=False) -> int | None:
    """First step where values [time] reach `level` (from above when `below`), None if never."""
    values = np.asarray(values)
    hit = np.flatnonzero(values <= level if below else values >= level)
    return int(np.asarray(steps)[hit[0]]) if len(hit) else None


def unablated(traj) -> list[int]:
    """The layer-0 heads a run did not train with ablated."""
    gone = {int(spec.split(":")[1].split(".")[1]) for spec in traj.config.train.interventions
            if spec.startswith("ablate_head:0.")}
    return [h for h in range(traj.config.transformer.n_heads) if h not in gone]


def train_if_missing(cfg, run: Path):
    if not (run / "config.json").exists():
        mj.train(cfg, run, wandb="off")
    return mj.Trajectory.load(run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="checkpoints/induction_interventions/base")
    ap.add_argument("--ablated", default="checkpoints/induction_interventions/ablated_prev")
    ap.add_argument("--steps", type=int, default=3000, help="steps of the plain run and the single ablation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cascade", type=int, default=1, help="ablation runs in the cascade (1: only the previous-token head)")
    ap.add_argument("--cascade-steps", type=int, default=1500)
    ap.add_argument("--cascade-dir", default="checkpoints/induction_interventions/cascade")
    ap.add_argument("--probe-steps", type=int, default=100, help="L-BFGS steps of the previous-token probe")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()

    preset = mj.load_preset("induction_2l")
    plain_cfg = dataclasses.replace(preset, train=dataclasses.replace(preset.train, steps=args.steps, seed=args.seed))
    base = train_if_missing(plain_cfg, Path(args.base))
    cfg = base.config
    res_b = measure_run(base, args.probe_steps)
    sum_b = summarize_member({k: v[:, None] for k, v in res_b.items()}, base.steps, base.metrics, 0)
    prev = int(sum_b["previous_token_head"].removeprefix("L0H"))
    ablated_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, interventions=(f"ablate_head:0.{prev}",), steps=args.steps))
    ablated = train_if_missing(ablated_cfg, Path(args.ablated))
    assert ablated.config.train.interventions == (f"ablate_head:0.{prev}",), ablated.config.train.interventions
    res_a = measure_run(ablated, args.probe_steps)
    sum_a = summarize_member({k: v[:, None] for k, v in res_a.items()}, ablated.steps, ablated.metrics, 0)

    last = cfg.transformer.n_layers - 1
    runs = {"plain": (base, res_b), f"L0H{prev} ablated": (ablated, res_a)}
    cascade = [(ablated, res_a, sum_a)]
    heads = [prev]
    while len(cascade) < args.cascade and len(heads) < cfg.transformer.n_heads:
        traj, res, _ = cascade[-1]
        left = unablated(traj)
        heads = heads + [left[int(np.argmax(res["previous_token"][-1, 0, left]))]]  # its previous-token head
        run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, interventions=tuple(f"ablate_head:0.{h}" for h in heads), steps=args.cascade_steps))
        traj = train_if_missing(run_cfg, Path(args.cascade_dir) / f"ablated_{len(heads)}heads")
        assert traj.config.train.interventions == run_cfg.train.interventions, traj.config.train.interventions
        res = measure_run(traj, args.probe_steps)
        cascade.append((traj, res, summarize_member({k: v[:, None] for k, v in res.items()}, traj.steps, traj.metrics, 0)))
        runs["+".join(f"L0H{h}" for h in heads) + " ablated"] = (traj, res)
    phase = sum_b["phase_change"]["induction_step"]
    marks = {"plain run's phase change": phase}
    curves = {
        "test loss (nats)": {k: (t.metrics["step"], t.metrics["test_loss"][:, 0]) for k, (t, r) in runs.items()},
        "best layer-1 induction score": {k: (t.steps, r["induction"][:, last].max(-1)) for k, (t, r) in runs.items()},
        "ICL score (loss late - early)": {k: (t.steps, r["icl_score"]) for k, (t, r) in runs.items()},
        "best previous-token score, layer 0 (unablated heads)": {
            k: (t.steps, r["previous_token"][:, 0, unablated(t)].max(-1)) for k, (t, r) in runs.items() if unablated(t)},
    }
    figures = [plots.runs_side_by_side(curves, out / "interventions_induction_ablated_prev.png", marks=marks)]
    chance = 1 / cfg.d_vocab
    figures.append(plots.probe_over_training(
        None, {k: (t.steps, r["probe_prev_token_accuracy"]) for k, (t, r) in runs.items()},
        out / "interventions_induction_probe.png", metric="held-out accuracy", marks=marks, chance=chance,
        title="logistic probe of blocks.0.hook_attn_out for the previous token"))

    # patching maps of the plain run over training
    pairs = alternate_pairs(cfg)
    patching = patching_measure(cfg.transformer, pairs["clean"], pairs["corrupted"], pairs["answer"], None,
                                metric="logprob", positions=pairs["positions"], sites=("head", "resid_pre"))
    pat = {k: v[:, 0] for k, v in analyze(base, {"patching": patching}).items()}
    shown_pos = np.arange(min(cfg.seq_len, cfg.seq_len - cfg.repeat_len + 2))  # up to the first copy, 2 more: later is ~0
    gap = pat["clean_metric"] - pat["corrupted_metric"]
    shown = np.unique(np.searchsorted(base.steps, [0, phase - 150, phase - 50, phase, phase + 50, phase + 300, base.steps[-1]]))
    shown = shown[shown < len(base.steps)]
    notes = [f"gap {gap[i]:.2f}" for i in shown]
    figures.append(plots.patching_strip(
        pat["head_patching"], base.steps, out / "interventions_induction_head_patching.png", at=shown,
        col_label="head", panel_notes=notes, limit=1.0,
        title="head patching over training (clean -> corrupted; gap = clean - corrupted log-prob)"))
    figures.append(plots.patching_strip(
        pat["resid_pre_patching"][:, :, shown_pos], base.steps, out / "interventions_induction_resid_patching.png",
        at=shown[-4:], col_label="position", panel_notes=notes[-4:],  # own scale: a position restores one answer of many
        col_ticks=[p if p % 4 == 0 else "" for p in shown_pos],
        title="residual stream (hook_resid_pre) patching, layer x position"))
    figures.append(plots.patching_heatmap(
        pat["head_patching"][-1], out / "interventions_induction_head_patching_final.png",
        title=f"head patching, step {int(base.steps[-1])}", limit=1.0))

    def run_summary(traj, res, s):
        best = res["induction"][:, last].max(-1)
        return {
            "steps": int(traj.steps[-1]), "induction_head": s["induction_head"], "induction_score": s["induction_score"],
            "icl_score": s["icl_score"], "phase_change": s["phase_change"],
            "final_test_loss": float(traj.metrics["test_loss"][-1, 0]),
            "first_step_induction_ge": {str(INDUCTION_LEVEL): first_step(traj.steps, best, INDUCTION_LEVEL)},
            "first_step_icl_le": {str(ICL_LEVEL): first_step(traj.steps, res["icl_score"], ICL_LEVEL, below=True)},
            "final_induction_by_head": res["induction"][-1, last].astype(float).round(3).tolist(),
            "final_previous_token_layer0": res["previous_token"][-1, 0].astype(float).round(3).tolist(),
            "k_composition_final": res["k_composition"][-1].astype(float).round(3).tolist(),
            "probe_prev_token_accuracy": {int(st): round(float(a), 3) for st, a in
                                          zip(traj.steps, res["probe_prev_token_accuracy"]) if st % 250 == 0 or st == phase},
            "first_step_probe_ge": {str(lv): first_step(traj.steps, res["probe_prev_token_accuracy"], lv)
                                    for lv in (0.2, 0.5, 0.8)},
        }

    summary = {
        "previous_token_head": f"L0H{prev}", "ablation": ablated.config.train.interventions,
        "plain": run_summary(base, res_b, sum_b), "ablated": run_summary(ablated, res_a, sum_a),
        "cascade": [{"ablation": t.config.train.interventions, **run_summary(t, r, s_)} for t, r, s_ in cascade[1:]],
        "patching": {int(base.steps[i]): {"gap": round(float(gap[i]), 3),
                                          "heads": pat["head_patching"][i].astype(float).round(2).tolist()} for i in shown},
        "seconds": round(time.perf_counter() - t0, 1), "figures": [str(f) for f in figures],
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
