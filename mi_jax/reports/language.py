"""`mi-jax analyze RUN_DIR` for a language run: every measure over every checkpoint and member (numerics
in `analysis.language`), each member's stages (n-gram distances, previous-token and induction heads,
the ICL score's fall and the loss bump before it), a summary JSON and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mi_jax.analysis import induction as ind
from mi_jax.analysis import language as lm
from mi_jax.analysis.core import analyze
from mi_jax.io.results import save_results, save_summary
from mi_jax.io.run_dir import member_key
from mi_jax.plots import induction as induction_plots
from mi_jax.plots import language as plots
from mi_jax.tasks import make_task

MAX_MEMBER_FIGURES = 8


def corpus_warning(traj, task) -> list[str]:
    """A line when the corpus read now is not the one the run trained on (another Python's stdlib, an
    edited folder): the measures then use today's text."""
    recorded = traj.run_dir / "corpus.json"
    if not recorded.exists():
        return []
    then, now = json.loads(recorded.read_text())["sha256"], task.streams.corpus.content_hash
    return [] if then == now else [f"warning: the corpus {task.cfg.data.source} has changed since this run trained "
                                   f"(sha256 {then[:12]} then, {now[:12]} now); measuring on today's text"]


def _onset(stages: dict) -> str:
    if stages["steps_to_induction"] is None:
        return f"never {lm.COPYING} nats below"
    return (f"{lm.COPYING} nats below from step {stages['steps_to_induction']}, "
            f"{stages['tokens_to_induction'] / 1e6:.3g}M tokens")


def report(traj, out_dir: Path, logger=None) -> list[str]:
    """Compute, save, log and plot the language measures of every member of a run."""
    out_dir = Path(out_dir)
    task = make_task(traj.config)
    lines = corpus_warning(traj, task)
    data = lm.probe_data(task)
    results = ind.finish(analyze(traj, lm.make_measures(task), data))
    lines.append(f"wrote {save_results(out_dir.parent, 'language', traj.steps, results)}")
    loss_steps = np.asarray(traj.metrics["step"])
    members = []
    for m in range(traj.n_members):
        mine = {k: np.asarray(v)[:, m] for k, v in results.items()}
        loss = np.asarray(traj.metrics["test_loss"], float)[:, m]
        stages = lm.stages(traj.steps, mine, loss_steps, loss)
        onset, cfg = stages["steps_to_induction"], traj.member_config(m)
        stages["tokens_to_induction"] = None if onset is None else onset * cfg.train.batch_size * cfg.seq_len
        members.append({**traj.members[m], **stages})
    summary = {"chance": ind.chance_scores(np.asarray(data["probe"]), task.cfg.seq_len // 2), "members": members}
    lines.append(f"wrote {save_summary(out_dir.parent, 'language', summary)}")
    for m, s in enumerate(members):
        lines.append(
            f"{traj.member_label(m)}: bigram KL {s['bigram_kl']['start']:.2f} -> {s['bigram_kl']['final']:.2f} "
            f"(fastest at step {s['bigram_step']}), context gain {s['context_gain']['start']:.2f} -> "
            f"{s['context_gain']['final']:.2f} nats (fastest at {s['context_step']}), "
            f"{s['previous_token_head']} previous-token fastest at "
            f"{s['previous_token_step']} (best of any layer {s['previous_token_best']['head']} "
            f"{s['previous_token_best']['final']:.2f}), {s['induction_head']} induction {s['induction_score']['start']:.2f} -> "
            f"{s['induction_score']['final']:.2f} ({'formed, fastest at ' + str(s['induction_step']) if s['induction_formed'] else 'none formed'}), ICL "
            f"{s['icl_score']['start']:.2f} -> {s['icl_score']['final']:.2f} (falls fastest at {s['icl_step']}); "
            f"on repeated text {s['text_induction']['head']} induction {s['text_induction']['start']:.2f} -> "
            f"{s['text_induction']['final']:.2f} (fastest at {s['text_induction']['step']}), the repeat's loss minus "
            f"the first copy's {s['repeat_loss_gap']['start']:.2f} -> {s['repeat_loss_gap']['final']:.2f} "
            f"({_onset(s)}); "
            f"loss bump {s['bump']:.3f} nats at step {s['bump_step']} (slow stretch {s['plateau_start']}-"
            f"{s['plateau_end']}, rise {s['rise']:.3f})")
    if logger is not None:
        logger.log_series(traj.steps, {name: results[name] for name in ("icl_score", "bigram_kl", "unigram_kl",
                                                                        "context_gain")})
    labels = [traj.member_label(m) for m in range(traj.n_members)]
    per_member = lambda name: np.swapaxes(np.asarray(results[name]), 0, 1)  # noqa: E731 - [member, time, ...]
    # the best head of any layer: a model may put its previous-token heads in layer 1 (shortformer positions do)
    best = {name: per_member(name).max((-2, -1)) for name in ("induction", "previous_token", "text_induction")}
    formed = [s["induction_step"] if s["induction_formed"] else None for s in members]  # marked where one formed
    paths = [
        induction_plots.loss_with_phase_change(loss_steps, np.swapaxes(traj.metrics["test_loss"], 0, 1), traj.steps,
                                               per_member("icl_score"), [s["steps_to_induction"] for s in members],
                                               labels, out_dir / "language_loss.png"),
        plots.stages(traj.steps, {**{k: per_member(k) for k in ("bigram_kl", "unigram_kl", "inductable_loss",
                                                                 "other_loss", "context_gain")}, **best}, labels,
                     {"induction heads": formed,
                      "ICL score falls": [s["icl_step"] for s in members]}, out_dir / "language_stages.png"),
    ]
    for m in range(min(traj.n_members, MAX_MEMBER_FIGURES)):
        suffix, mine = member_key(traj.members[m]), {k: np.asarray(v)[:, m] for k, v in results.items()}
        paths.append(induction_plots.head_score_trajectories(
            traj.steps, {k: mine[k] for k in ind.HEAD_SCORES}, summary["chance"],
            out_dir / f"language_head_scores_{suffix}.png"))
        paths.append(induction_plots.per_position_loss(
            mine["position_loss"][0], mine["position_loss"][-1], (f"step {traj.steps[0]}", f"step {traj.steps[-1]}"),
            out_dir / f"language_position_loss_{suffix}.png"))
    return lines + [f"wrote {p}" for p in paths]
