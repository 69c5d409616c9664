"""Olsson et al.'s loss bump on code: where the loss curve stops being convex in log training time
(`mi_jax.analysis.induction.loss_bump`), set beside each member's onset of copying and its ICL score.
Reads three analysed runs of experiments/language_bump.sh: the learning-rate map (24 two-layer members,
an evaluation every 200 steps on 64 validation windows), a 2-layer run at lr 1e-2 evaluated every 100
steps on 512 windows, and its 1-layer control. The bump is found on the validation loss and, apart from
it, on the training loss (the mean over the steps since the last evaluation). Writes
experiments/results/language_bump.png and prints one JSON line of the numbers the note quotes.

    python experiments/language_bump.py [DIR]     # DIR=checkpoints/language
"""

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.analysis.induction import hull_excess, loss_bump
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.results import load_results
from mi_jax.plots import plt, save
from mi_jax.runs.trajectory import load_config

RUNS = {"induction_map_lr": "map", "attn_2l_lr1e-2": "2 layers, lr 1e-2", "attn_1l_lr1e-2": "1 layer"}
LATE = 2_000  # onsets after this step come well after the loss's first fall
GROUPS = {f"copies after step {LATE:,}": "tab:red", f"copies by step {LATE:,}": "tab:orange",
          "never copies": "tab:grey", "1 layer": "k"}


def load_run(run_dir: Path) -> dict:
    """{program, cfg, metrics, summaries} of one analysed run (a sweep's first program): its metrics read
    from metrics.jsonl alone (every run here has a member axis), not its snapshots."""
    program = run_dir / "program_0" if (run_dir / "program_0").exists() else run_dir
    return {"program": program, "cfg": load_config(program),
            "metrics": run_dir_lib.metrics_arrays(run_dir_lib.read_metrics(program), solo=False),
            "summaries": json.loads((program / "analysis" / "language_summary.json").read_text())["members"]}


def members(run: dict, label: str) -> list[dict]:
    """Each member's bump on the validation and on the training loss, its onset of copying and its group."""
    metrics = run["metrics"]
    steps = np.asarray(metrics["step"])
    out = []
    for m, s in enumerate(run["summaries"]):
        trained = ~np.isnan(metrics["step_loss"][:, m])  # no training loss at step 0
        onset = s["steps_to_induction"]
        group = ("1 layer" if label == "1 layer" else "never copies" if onset is None else list(GROUPS)[onset <= LATE])
        out.append({"run": label, "lr": s.get("train.lr", run["cfg"].train.lr), "seed": s["seed"], "onset": onset,
                    "group": group, "validation": loss_bump(steps, metrics["test_loss"][:, m]),
                    "training": loss_bump(steps[trained], metrics["step_loss"][trained, m])})
    return out


def run_panels(ax_bump, ax_icl, run: dict) -> None:
    """One run, member by member: the validation loss above its convex hull, and the ICL score, each
    member's onset of copying dashed."""
    metrics, cfg = run["metrics"], run["cfg"]
    steps, r = load_results(run["program"] / "analysis" / "language.npz")
    for m, s in enumerate(run["summaries"]):
        color = f"C{m}"
        label = f"seed {s['seed']}: " + (f"copies from step {s['steps_to_induction']}" if s["steps_to_induction"]
                                         else "never copies")
        ax_bump.plot(*hull_excess(metrics["step"], metrics["test_loss"][:, m])[::2], color=color, lw=1.2, label=label)
        ax_icl.plot(steps, r["icl_score"][:, m], color=color, lw=1.2)
        for ax in (ax_bump, ax_icl):
            if s["steps_to_induction"] is not None:
                ax.axvline(s["steps_to_induction"], color=color, ls="--", lw=0.8)
    ax_bump.set(xscale="log", xlabel="step", ylabel="nats",
                title=f"validation loss above its convex hull ({cfg.n_eval} windows)")
    ax_icl.set(xscale="log", xlabel="step", ylabel="nats",
               title=f"ICL score, token {cfg.late} - token {cfg.early} (dashed: onset of copying)")
    ax_bump.legend(fontsize=7)


def main(folder: Path) -> None:
    runs = {name: load_run(folder / name) for name in RUNS}
    rows = [row for name, label in RUNS.items() for row in members(runs[name], label)]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), layout="constrained")
    run_panels(axes[0, 0], axes[0, 1], runs["attn_2l_lr1e-2"])
    ax_size, ax_where = axes[1]
    for k, (group, color) in enumerate(GROUPS.items()):
        mine = [r for r in rows if r["group"] == group]
        jitter = np.linspace(-0.2, 0.2, len(mine))
        ax_size.scatter(k + jitter, [r["validation"]["bump"] for r in mine], color=color, s=18)
        ax_size.scatter(k + jitter, [r["training"]["bump"] for r in mine], color=color, s=18, marker="x")
        copies = [r for r in mine if r["onset"] is not None]
        bars = np.array([[r["validation"]["bump_step"] - r["validation"]["plateau_start"],
                          r["validation"]["plateau_end"] - r["validation"]["bump_step"]] for r in copies]).reshape(-1, 2)
        if copies:
            ax_where.errorbar([r["onset"] for r in copies], [r["validation"]["bump_step"] for r in copies],
                              yerr=bars.T, fmt="o", color=color, ms=4, lw=0.8, label=group)
    ax_size.set_xticks(range(len(GROUPS)), [f"{g}\n({sum(r['group'] == g for r in rows)})" for g in GROUPS],
                       fontsize=8)
    ax_size.set(ylabel="largest excess over the convex hull (nats)",
                title="bump size (o: validation loss, x: training loss)")
    top = max(r["onset"] for r in rows if r["onset"] is not None) * 1.3
    ax_where.plot([700, top], [700, top], color="grey", lw=0.8, ls=":")
    ax_where.set(xscale="log", yscale="log", xlabel="onset of copying (step)",
                 ylabel="bump's peak (step; bars: its slow stretch)", title="where the bump is, in members that copy")
    ax_where.legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle("attention-only LMs on the stdlib source (BPE 512, d_model 64, context 256): top, 4 seeds at lr 1e-2; "
                 "bottom, those, the 24 members of the learning-rate map and 4 one-layer seeds", fontsize=9)
    save(fig, Path(__file__).parent / "results" / "language_bump.png")
    keep = lambda r: {"run": r["run"], "lr": r["lr"], "seed": r["seed"], "onset": r["onset"],  # noqa: E731
                      **{f"{key}_bump": round(r[key]["bump"], 3) for key in ("validation", "training")},
                      "bump_step": r["validation"]["bump_step"], "training_bump_step": r["training"]["bump_step"],
                      "stretch": [r["validation"]["plateau_start"], r["validation"]["plateau_end"]],
                      "rise": round(r["validation"]["rise"], 4)}
    print(json.dumps({group: [keep(r) for r in rows if r["group"] == group] for group in GROUPS}))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/language"))
