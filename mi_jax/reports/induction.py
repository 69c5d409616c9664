"""`mi-jax analyze RUN_DIR` for an induction run: every measure over every checkpoint and member, the
phase change of each member, a summary JSON and the figures (numerics in `analysis.induction`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.analysis import induction as ind
from mi_jax.analysis.core import analyze
from mi_jax.io.results import save_results, save_summary
from mi_jax.io.run_dir import member_key
from mi_jax.plots import induction as plots

MAX_MEMBER_FIGURES = 8  # members beyond these are in the results and summary, not drawn one by one


def summarize_member(results: dict, steps, metrics: dict, m: int) -> dict:
    """Member m's induction head (highest final induction score in the last layer), previous-token
    head (highest final previous-token score in layer 0), their K-composition and the phase change.
    results {name: [time, member, ...]}, metrics {name: [n_evals, member]}."""
    r = {name: np.asarray(v)[:, m] for name, v in results.items()}
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
    loss, copy_loss = (np.asarray(metrics[n], float)[:, m] for n in ("test_loss", "probe_copy_loss"))
    pc = ind.phase_change(steps, induction, r["icl_score"], metrics["step"], copy_loss, loss)
    pc["induction_window"] = list(pc["induction_window"])
    out["phase_change"] = pc
    return out


def report(traj, out_dir: Path, logger=None) -> list[str]:
    """Compute, save, log and plot the induction measures of every member of a run."""
    cfg, out_dir = traj.config, Path(out_dir)
    data = ind.probe_data(cfg)
    results = ind.finish(analyze(traj, ind.make_measures(cfg), data))
    lines = [f"wrote {save_results(out_dir.parent, 'induction', traj.steps, results)}"]
    chance = ind.chance_scores(np.asarray(data["probe"]), cfg.repeat_len)
    members = [{**traj.members[m], **summarize_member(results, traj.steps, traj.metrics, m)}
               for m in range(traj.n_members)]
    lines.append(f"wrote {save_summary(out_dir.parent, 'induction', {'chance': chance, 'members': members})}")
    for m, s in enumerate(members):
        pc = s["phase_change"]
        lines.append(
            f"{traj.member_label(m)}: {s['induction_head']} induction {s['induction_score']['start']:.2f} -> "
            f"{s['induction_score']['final']:.2f} (10-90% in steps {pc['induction_window'][0]}-"
            f"{pc['induction_window'][1]}), {s['previous_token_head']} previous-token "
            f"{s['previous_token_score_final']:.2f}, ICL {s['icl_score']['start']:.2f} -> {s['icl_score']['final']:.2f}; "
            f"fastest change: induction {pc['induction_step']}, ICL {pc['icl_step']}, copy loss {pc['loss_step']}"
            f" -> coincide: {pc['coincide']}; loss bump {pc['bump']:.3f} nats at step {pc['bump_step']}"
        )
    if logger is not None:
        logger.log_series(traj.steps, {"icl_score": results["icl_score"],
                                       "max_induction": results["induction"].max((-2, -1))})
    labels = [traj.member_label(m) for m in range(traj.n_members)]
    paths = [plots.loss_with_phase_change(
        traj.metrics["step"], np.swapaxes(traj.metrics["test_loss"], 0, 1), traj.steps,
        np.swapaxes(results["icl_score"], 0, 1), [s["phase_change"]["induction_step"] for s in members], labels,
        out_dir / "induction_loss.png")]
    for m in range(min(traj.n_members, MAX_MEMBER_FIGURES)):
        paths += _member_figures(traj, m, results, members[m], chance, data, out_dir)
    return lines + [f"wrote {p}" for p in paths]


def _member_figures(traj, m: int, results: dict, summary: dict, chance: dict, data: dict, out_dir: Path) -> list[Path]:
    """Member m's head scores, attention before and after its phase change, K-composition and
    per-position loss: files induction_*_{member}.png."""
    steps, suffix = traj.steps, member_key(traj.members[m])
    mine = {k: np.asarray(v)[:, m] for k, v in results.items()}
    paths = [plots.head_score_trajectories(steps, {k: mine[k] for k in (*ind.HEAD_SCORES, "ov_copying")}, chance,
                                           out_dir / f"induction_head_scores_{suffix}.png")]
    # before / after the phase change: the checkpoints nearest the 10% and 90% points of its window
    lo, hi = summary["phase_change"]["induction_window"]
    before, after = int(np.argmin(np.abs(steps - lo))), int(np.argmin(np.abs(steps - hi)))
    if before == after:
        before, after = 0, len(steps) - 1
    tokens = data["probe"][:1]
    patterns = {}
    heads = {"induction": summary["induction_head"], "previous-token": summary["previous_token_head"]}
    for when, t in ((f"before (step {steps[before]})", before), (f"after (step {steps[after]})", after)):
        pattern = np.asarray(ind.patterns(traj.at(t, m), tokens, traj.config.transformer))[0]
        for role, label in heads.items():
            layer, head = int(label[1]), int(label[3:])
            patterns[(f"{label} ({role})", when)] = pattern[layer, head]
    paths.append(plots.attention_before_after(patterns, out_dir / f"induction_attention_{suffix}.png"))
    if "k_composition" in mine:
        paths.append(plots.k_composition_over_time(steps, mine["k_composition"],
                                                   out_dir / f"induction_k_composition_{suffix}.png"))
    paths.append(plots.per_position_loss(mine["position_loss"][before], mine["position_loss"][after],
                                         (f"step {steps[before]}", f"step {steps[after]}"),
                                         out_dir / f"induction_position_loss_{suffix}.png"))
    return paths
