"""`mi-jax analyze RUN_DIR` for an induction run: every measure over every checkpoint, the phase
change per seed, a summary JSON and the plots (I/O at the edge; numerics in `analysis.induction`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mi_jax.analysis import induction as ind
from mi_jax.analysis.core import analyze, save_results
from mi_jax.plots import induction as plots


def _seed_series(values: np.ndarray, ensemble: bool, k: int) -> np.ndarray:
    return np.asarray(values)[:, k] if ensemble else np.asarray(values)


def summarize_seed(results: dict, steps, metrics: dict, ensemble: bool, k: int) -> dict:
    """The induction head (highest final induction score in the last layer), the previous-token head
    (highest final previous-token score in layer 0), their K-composition and the phase change."""
    r = {name: _seed_series(v, ensemble, k) for name, v in results.items()}
    last = r["induction"].shape[1] - 1
    ind_head = int(np.argmax(r["induction"][-1, last]))
    prev_head = int(np.argmax(r["previous_token"][-1, 0]))
    induction = r["induction"][:, last, ind_head]
    out = {
        "induction_head": f"L{last}H{ind_head}",
        "previous_token_head": f"L0H{prev_head}",
        "induction_score": {"start": float(induction[0]), "final": float(induction[-1]), "max": float(induction.max())},
        "previous_token_score_final": float(r["previous_token"][-1, 0, prev_head]),
        "ov_copying_final": float(r["ov_copying"][-1, last, ind_head]),
        "direct_logit_final": float(r["direct_logit"][-1, last, ind_head]),
        "icl_score": {"start": float(r["icl_score"][0]), "final": float(r["icl_score"][-1])},
    }
    if "k_composition" in r:
        k_comp = r["k_composition"][:, prev_head, ind_head]
        out["k_composition"] = {"start": float(k_comp[0]), "final": float(k_comp[-1])}
    loss, copy_loss = (_seed_series(metrics[n], ensemble, k) for n in ("test_loss", "probe_copy_loss"))
    pc = ind.phase_change(steps, induction, r["icl_score"], metrics["step"], copy_loss, loss)
    pc["induction_window"] = list(pc["induction_window"])
    out["phase_change"] = pc
    return out


def analyze_run(traj, out_dir: Path, *, logger=None, progress: bool = True) -> list[str]:
    cfg = traj.config
    out_dir = Path(out_dir)
    data = ind.probe_data(cfg)
    results = ind.finish(analyze(traj, ind.make_measures(cfg), data))
    lines = [f"wrote {save_results(traj.run_dir or out_dir.parent, 'induction', traj.steps, results)}"]
    chance = ind.chance_scores(np.asarray(data["probe"]), cfg.repeat_len)
    metrics = {k: np.asarray(v, float) for k, v in traj.metrics.items()}
    seeds = traj.seeds
    summary = {
        "chance": chance,
        "seeds": {
            str(seed): summarize_seed(results, traj.steps, metrics, traj.ensemble, k)
            for k, seed in enumerate(seeds)
        },
    }
    path = out_dir / "induction_summary.json"
    path.write_text(json.dumps(summary, indent=2))
    lines.append(f"wrote {path}")
    for seed, s in summary["seeds"].items():
        pc = s["phase_change"]
        lines.append(
            f"seed {seed}: {s['induction_head']} induction {s['induction_score']['start']:.2f} -> "
            f"{s['induction_score']['final']:.2f} (10-90% in steps {pc['induction_window'][0]}-"
            f"{pc['induction_window'][1]}), {s['previous_token_head']} previous-token "
            f"{s['previous_token_score_final']:.2f}, ICL {s['icl_score']['start']:.2f} -> {s['icl_score']['final']:.2f}; "
            f"fastest change: induction {pc['induction_step']}, ICL {pc['icl_step']}, copy loss {pc['loss_step']}"
            f" -> coincide: {pc['coincide']}"
        )
    if logger is not None:
        logger.log_series(traj.steps, {"icl_score": results["icl_score"],
                                       "max_induction": results["induction"].max((-2, -1))})
    lines += [f"wrote {p}" for p in _plots(traj, results, summary, chance, data, out_dir)]
    return lines


def _plots(traj, results, summary, chance, data, out_dir: Path) -> list[Path]:
    cfg, steps, ens = traj.config, traj.steps, traj.ensemble
    seed0 = summary["seeds"][str(traj.seeds[0])]
    phase_steps = [s["phase_change"]["induction_step"] for s in summary["seeds"].values()]
    paths = [
        plots.loss_with_phase_change(traj.metrics["step"], traj.metrics["test_loss"], steps, results["icl_score"],
                                     phase_steps, out_dir / "induction_loss.png", ens),
        plots.head_score_trajectories(steps, {k: results[k] for k in (*ind.HEAD_SCORES, "ov_copying")}, chance,
                                      out_dir / "induction_head_scores.png", 0, ens),
    ]
    # before / after the phase change: the checkpoints nearest the 10% and 90% points of seed 0's window
    lo, hi = seed0["phase_change"]["induction_window"]
    before, after = int(np.argmin(np.abs(steps - lo))), int(np.argmin(np.abs(steps - hi)))
    if before == after:
        before, after = 0, len(steps) - 1
    seed_index = 0 if ens else None
    tokens = data["probe"][:1]
    patterns = {}
    heads = {"induction": seed0["induction_head"], "previous-token": seed0["previous_token_head"]}
    for when, t in ((f"before (step {steps[before]})", before), (f"after (step {steps[after]})", after)):
        pat = np.asarray(ind.patterns(traj.at(t, seed_index), tokens, cfg.transformer))[0]
        for role, label in heads.items():
            layer, head = int(label[1]), int(label[3:])
            patterns[(f"{label} ({role})", when)] = pat[layer, head]
    paths.append(plots.attention_before_after(patterns, out_dir / "induction_attention.png"))
    if "k_composition" in results:
        k_comp = results["k_composition"][:, 0] if ens else results["k_composition"]
        paths.append(plots.k_composition_over_time(steps, k_comp, out_dir / "induction_k_composition.png"))
    pos_loss = results["position_loss"][:, 0] if ens else results["position_loss"]
    paths.append(plots.per_position_loss(pos_loss[before], pos_loss[after], (f"step {steps[before]}", f"step {steps[after]}"),
                                         out_dir / "induction_position_loss.png"))
    return paths

