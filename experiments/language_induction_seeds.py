"""The induction phase change on code in every seed, against the 1-layer control: the validation loss, the
ICL score, the best last-layer head's attention to the token after the current token's earlier copy (on
repeated text) and the loss on the repeat minus the first copy, over training; the induction window of
each 2-layer seed that copies shaded. After `mi-jax analyze` of both runs (experiments/language_stages.sh). Writes
experiments/results/language_induction_seeds.png and prints one JSON line of the numbers the note quotes.

    python experiments/language_induction_seeds.py [DIR]      # DIR=checkpoints/language
"""

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.io.results import load_results
from mi_jax.plots import plt, save
from mi_jax.runs.trajectory import Trajectory

RUNS = {"attn_2l_induction_seeds": "2 layers", "attn_1l_induction": "1 layer"}


def series(run_dir: Path) -> dict:
    """{steps, loss_steps, loss [n_evals, member], icl, copy_attention, repeat_gap [time, member], seeds,
    summaries}: what the figure draws, the copying head being each member's best last-layer head."""
    steps, r = load_results(run_dir / "analysis" / "language.npz")
    members = json.loads((run_dir / "analysis" / "language_summary.json").read_text())["members"]
    metrics = Trajectory.load(run_dir).metrics
    last = r["text_induction"][:, :, -1]  # [time, member, head]
    best = last[-1].argmax(-1)  # [member]
    return {"steps": steps, "loss_steps": np.asarray(metrics["step"]), "loss": np.asarray(metrics["test_loss"], float),
            "icl": r["icl_score"], "copy_attention": last[:, np.arange(last.shape[1]), best],
            "repeat_gap": r["repeat_loss_gap"], "seeds": [m["seed"] for m in members], "summaries": members}


def main(folder: Path) -> None:
    runs = {name: series(folder / name) for name in RUNS}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [("loss", "validation loss (nats)", "loss_steps"), ("icl", "ICL score (nats)", "steps"),
              ("copy_attention", "attention to the copy's next token", "steps"),
              ("repeat_gap", "loss on the repeat - first copy (nats)", "steps")]
    for (key, label, x), ax in zip(panels, axes.flat):
        for name, color in zip(RUNS, ("tab:blue", "tab:grey")):
            s = runs[name]
            for m, seed in enumerate(s["seeds"]):
                ax.plot(s[x], s[key][:, m], color=color, alpha=0.8, lw=1,
                        label=f"{RUNS[name]}, seed{'s' * (len(s['seeds']) > 1)} {', '.join(map(str, s['seeds']))}"
                        if m == 0 else None)
        for summary in runs["attn_2l_induction_seeds"]["summaries"]:
            if summary["steps_to_induction"] is not None:  # the seeds that copy; the others' windows are noise
                ax.axvspan(*summary["text_induction"]["window"], color="tab:orange", alpha=0.1)
        ax.set(ylabel=label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(top=runs["attn_1l_induction"]["loss"][5:].max())
    axes[0, 0].legend(fontsize=8)
    for ax in axes[1]:
        ax.set(xlabel="step")
    fig.suptitle("attention-only LMs on the stdlib source (BPE 512, d_model 64, context 256); shaded: the "
                 "induction window (10-90% of the copying head's rise) of each 2-layer seed that copies", fontsize=9)
    out = Path(__file__).parent / "results" / "language_induction_seeds.png"
    save(fig, out)
    numbers = {}
    for name, s in runs.items():
        final = lambda key: [round(float(v), 3) for v in s[key][-1]]  # noqa: E731
        numbers[name] = {"seeds": s["seeds"], "final_loss": final("loss"), "final_icl": final("icl"),
                         "final_copy_attention": final("copy_attention"), "final_repeat_gap": final("repeat_gap"),
                         "stages": [{k: m[k] for k in ("seed", "icl_step", "plateau_start", "plateau_end", "bump")}
                                    | {"text_induction": m["text_induction"], "previous_token_best": m["previous_token_best"]}
                                    for m in s["summaries"]]}
    print(json.dumps(numbers))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("checkpoints/language"))
