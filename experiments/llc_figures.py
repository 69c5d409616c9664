"""Figures and numbers of experiments/results/llc.md from runs that `mi-jax analyze` and `mi-jax llc` have
analysed: the LLC next to the grokking progress measures, and next to the induction scores.

    python experiments/llc_figures.py grokking checkpoints/grokking_small experiments/results/llc_grokking_small.png
    python experiments/llc_figures.py induction checkpoints/induction_2l experiments/results/llc_induction_2l.png
    python experiments/llc_figures.py language checkpoints/language/attn_2l_induction_seeds \
        experiments/results/language_induction_llc.png
    python experiments/llc_figures.py language_seeds checkpoints/language/attn_2l_lr1e-2 \
        experiments/results/language_llc_seeds.png

Prints one JSON line of the numbers the note quotes. "Critical points" of the LLC curve (Hoogland et
al. 2024: stage boundaries) are the checkpoints where the slope of the LLC, smoothed over
`window` checkpoints, changes sign.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.analysis.induction import smooth
from mi_jax.io.results import load_results
from mi_jax.plots import plt, save


def critical_points(steps, values, window: int = 3) -> list[dict]:
    """Steps where the smoothed curve's slope changes sign, each named a peak or a trough."""
    s = smooth(values, window)
    slope = np.sign(np.diff(s))
    out = []
    for i in np.flatnonzero(slope[1:] * slope[:-1] < 0):
        out.append({"step": int(steps[i + 1]), "kind": "peak" if slope[i] > 0 else "trough", "llc": round(float(s[i + 1]), 2)})
    return out


def llc_panel(ax, steps, land, crit):
    mean, std, ok = land["llc_mean"][:, 0], land["llc_std"][:, 0], land["usable"][:, 0]
    ax.plot(steps, mean, color="k", label="LLC (mean over chains)")
    ax.fill_between(steps, mean - std, mean + std, color="k", alpha=0.2, label="± std over chains")
    if (~ok).any():
        ax.scatter(steps[~ok], np.where(np.isfinite(mean), mean, 0)[~ok], marker="x", color="red", label="flagged")
    for c in crit:
        ax.axvline(c["step"], color="tab:purple", lw=0.8, ls=":")
    ax.set(ylabel="LLC")


def hessian_panel(ax, steps, land, trace_label="Hessian trace"):
    ax.plot(steps, land["hessian_top"][:, 0, 0], label="top Hessian eigenvalue")
    ax.plot(steps, land["hessian_trace"][:, 0], label=trace_label)
    ax.set(xlabel="step")
    ax.set_yscale("symlog", linthresh=1e-3)


def llc_numbers(steps, land, crit) -> dict:
    """The LLC curve's and the Hessian's numbers that every note quotes (member 0 of llc.npz)."""
    llc, top = land["llc_mean"][:, 0], land["hessian_top"][:, 0, 0]
    return {"critical_points": crit, "llc_first": round(float(llc[0]), 2), "llc_max": round(float(np.nanmax(llc)), 2),
            "llc_max_step": int(steps[np.nanargmax(llc)]), "llc_last": round(float(llc[-1]), 2),
            "llc_std_median": round(float(np.nanmedian(land["llc_std"][:, 0])), 2),
            "hessian_top_max": round(float(top.max()), 1), "hessian_top_max_step": int(steps[np.argmax(top)]),
            "flagged": int((~land["usable"]).sum())}


def llc_at(steps, land, step) -> float | None:
    """The LLC (member 0) at the checkpoint nearest `step`: the LLC may be estimated at every k-th one."""
    return None if step is None else round(float(land["llc_mean"][int(np.argmin(np.abs(steps - step))), 0]), 2)


def head_index(label: str) -> tuple[int, int]:
    """"L1H0" -> (1, 0)."""
    layer, head = label[1:].split("H")
    return int(layer), int(head)


def grokking(run_dir: Path, out: Path) -> dict:
    steps, land = load_results(run_dir / "analysis" / "llc.npz")
    g_steps, g = load_results(run_dir / "analysis" / "grokking.npz")
    phases = json.loads((run_dir / "analysis" / "grokking_summary.json").read_text())["members"][0]["phases"]
    crit = critical_points(steps, land["llc_mean"][:, 0])
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    llc_panel(axes[0], steps, land, crit)
    for name in ("train_loss", "test_loss", "restricted_loss", "excluded_loss"):
        if name in g:
            axes[1].plot(g_steps, g[name][:, 0], label=name)
    axes[1].set(yscale="log", ylabel="loss")
    axes[2].plot(g_steps, g["embed_gini"][:, 0], label="W_E Fourier Gini")
    axes[2].plot(g_steps, g["weight_norm"][:, 0] / g["weight_norm"][0, 0], label="weight norm / initial")
    hessian_panel(axes[3], steps, land, "Hessian trace (Hutchinson)")
    for ax in axes:
        for name, color in (("memorised", "tab:blue"), ("cleanup", "tab:orange"), ("generalised", "tab:green")):
            if phases.get(name) is not None:
                ax.axvline(phases[name], color=color, lw=1, alpha=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title(f"{run_dir.name}: LLC (dotted: its critical points) and progress measures; "
                      "phase lines: memorised, cleanup, generalised", fontsize=8)
    save(fig, out)
    return {"phases": phases, "llc_at_phases": {k: llc_at(steps, land, v) for k, v in phases.items()},
            **llc_numbers(steps, land, crit),
            "hessian_top_last": round(float(land["hessian_top"][-1, 0, 0]), 2)}


def induction(run_dir: Path, out: Path) -> dict:
    steps, land = load_results(run_dir / "analysis" / "llc.npz")
    i_steps, ind = load_results(run_dir / "analysis" / "induction.npz")
    summary = json.loads((run_dir / "analysis" / "induction_summary.json").read_text())["members"][0]
    head = summary["induction_head"]
    layer, h = head_index(head)
    pc = summary["phase_change"]
    crit = critical_points(steps, land["llc_mean"][:, 0])
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    llc_panel(axes[0], steps, land, crit)
    axes[1].plot(i_steps, ind["induction"][:, 0, layer, h], label=f"induction score {head}")
    axes[1].plot(i_steps, -ind["icl_score"][:, 0] / np.abs(ind["icl_score"][:, 0]).max(), label="-ICL score (scaled)")
    axes[2].plot(steps, land["init_loss"][:, 0], label="training loss L_n(w*) (the LLC's training set)")
    axes[2].set(ylabel="loss")
    hessian_panel(axes[3], steps, land)
    for ax in axes:
        ax.axvspan(*pc["induction_window"], color="tab:orange", alpha=0.15)
        ax.axvline(pc["induction_step"], color="tab:orange", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("induction_2l: LLC (dotted: its critical points); shaded: the induction score's 10-90% window",
                      fontsize=8)
    save(fig, out)
    return {"phase_change": {k: pc[k] for k in ("induction_step", "induction_window", "icl_step", "loss_step")},
            **llc_numbers(steps, land, crit)}


def language(run_dir: Path, out: Path) -> dict:
    """The LLC of one member (`mi-jax llc --set member=M`, or the first) beside its n-gram and induction stages."""
    steps, land = load_results(run_dir / "analysis" / "llc.npz")
    seed = json.loads((run_dir / "analysis" / "llc_summary.json").read_text())["members"][0]["seed"]
    stages = json.loads((run_dir / "analysis" / "language_summary.json").read_text())["members"]
    m = [s["seed"] for s in stages].index(seed)
    s_steps, lang = load_results(run_dir / "analysis" / "language.npz")
    stage = stages[m]
    text = stage["text_induction"]
    layer, h = head_index(text["head"])
    crit = critical_points(steps, land["llc_mean"][:, 0])
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    llc_panel(axes[0], steps, land, crit)
    axes[1].plot(s_steps, lang["bigram_kl"][:, m], label="bigram KL")
    axes[1].plot(s_steps, lang["unigram_kl"][:, m], label="unigram KL")
    axes[1].plot(s_steps, lang["context_gain"][:, m], label="gain from context (nats)")
    axes[1].set(ylabel="nats")
    axes[2].plot(s_steps, 10 * lang["text_induction"][:, m, layer, h], label=f"10 x {text['head']} attention to the copy's next token")
    axes[2].plot(s_steps, -lang["repeat_loss_gap"][:, m], label="loss on the first copy minus on the repeat")
    axes[2].plot(s_steps, lang["previous_token"][:, m, 0].max(-1), label="best layer-0 previous-token score")
    hessian_panel(axes[3], steps, land)
    for ax in axes:
        ax.axvspan(*text["window"], color="tab:orange", alpha=0.15)
        ax.axvline(stage["bigram_step"], color="tab:blue", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title(f"{run_dir.name}, seed {seed}: LLC (dotted: its critical points); blue: the bigram KL's fastest "
                      "fall; shaded: the induction attention's 10-90% window", fontsize=8)
    save(fig, out)
    return {"seed": seed, "bigram_step": stage["bigram_step"], "context_step": stage["context_step"],
            "text_induction_window": text["window"], "icl_step": stage["icl_step"],
            "llc_at_bigram_step": llc_at(steps, land, stage["bigram_step"]),
            "llc_at_window": [llc_at(steps, land, s) for s in text["window"]],
            **llc_numbers(steps, land, crit)}


def language_seeds(run_dir: Path, out: Path) -> dict:
    """The LLC of every member of an ensemble (`mi-jax llc` without `member`) against step, each member's
    onset of copying dashed, beside its copying (the loss on a text's repeat minus its first copy) and its
    Hessian trace."""
    steps, land = load_results(run_dir / "analysis" / "llc.npz")
    stages = json.loads((run_dir / "analysis" / "language_summary.json").read_text())["members"]
    s_steps, lang = load_results(run_dir / "analysis" / "language.npz")
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    members = []
    for m, stage in enumerate(stages):
        color, onset = f"C{m}", stage["steps_to_induction"]
        mean, std, ok = land["llc_mean"][:, m], land["llc_std"][:, m], land["usable"][:, m]
        label = f"seed {stage['seed']}: " + (f"copies from step {onset}" if onset is not None else "never copies")
        axes[0].plot(steps, mean, color=color, marker="o", ms=3, label=label)
        axes[0].fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
        axes[0].scatter(steps[~ok], np.where(np.isfinite(mean), mean, 0)[~ok], marker="x", color="red")
        axes[1].plot(s_steps, lang["repeat_loss_gap"][:, m], color=color)
        axes[2].plot(steps, land["hessian_trace"][:, m], color=color)
        for ax in axes:
            if onset is not None:
                ax.axvline(onset, color=color, ls="--", lw=0.8)
        members.append({"seed": stage["seed"], "onset": onset, "llc": [round(float(v), 1) for v in mean],
                        "critical_points": critical_points(steps, mean), "flagged": int((~ok).sum()),
                        "hessian_trace": [round(float(v), 1) for v in land["hessian_trace"][:, m]]})
    axes[0].set(ylabel="LLC (mean over chains; x: flagged)")
    axes[1].set(ylabel="repeat - first copy (nats)")
    axes[2].set(ylabel="Hessian trace", xlabel="step")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{run_dir.name}: the LLC of every seed (dashed: its onset of copying)", fontsize=9)
    save(fig, out)
    return {"steps": [int(s) for s in steps], "members": members}


if __name__ == "__main__":
    kind, run_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps({"grokking": grokking, "induction": induction, "language": language,
                      "language_seeds": language_seeds}[kind](run_dir, out)))
