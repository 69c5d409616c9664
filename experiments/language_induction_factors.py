"""Tokens to induction against width, context, vocabulary and batch, from experiments/language_induction_factors.sh:
every seed's onset of copying at each value of each key, beside the preset's own shape at the same learning
rate (lr 1e-2 of language_induction_map.sh's sweep, counted to the same token budget). Writes
experiments/results/language_induction_factors.png and prints one JSON line of the numbers the note quotes
(onsets in millions of tokens).

    python experiments/language_induction_factors.py [FACTORS_DIR] [LR_SWEEP_DIR]
    # checkpoints/language/induction_map_factors checkpoints/language/induction_map_lr
"""

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.io.results import load_results
from mi_jax.plots import plt, save
from mi_jax.runs.trajectory import load_config

sys.path.insert(0, str(Path(__file__).parent))
from language_induction_map import median_onset  # noqa: E402

BASE = {"model.d_model": 64, "seq_len": 256, "train.batch_size": 32, "data.vocab_size": 512}
LABEL = {"model.d_model": "width d_model (2 heads)", "seq_len": "context n_ctx (tokens)",
         "train.batch_size": "batch (windows a step)", "data.vocab_size": "vocabulary (BPE tokens)"}


def point(program: Path, budget: float | None = None, lr: float | None = None) -> dict:
    """One program's members (those at `lr`, if given), to `budget` M tokens (the whole run if None): the
    onsets of copying (M tokens), their median over all seeds, and at the budget's last checkpoint the
    mean repeat - first copy gap and how many seeds have their strongest previous-token head in layer 0."""
    members = json.loads((program / "analysis" / "language_summary.json").read_text())["members"]
    mine = [i for i, m in enumerate(members) if lr is None or m["train.lr"] == lr]
    cfg = load_config(program)
    steps, r = load_results(program / "analysis" / "language.npz")
    tokens = steps * cfg.train.batch_size * cfg.seq_len / 1e6  # [time]
    budget = float(tokens[-1]) if budget is None else min(budget, float(tokens[-1]))
    at = int(np.searchsorted(tokens, budget, side="right")) - 1  # the budget's last checkpoint
    onsets = sorted(members[i]["tokens_to_induction"] / 1e6 for i in mine
                    if members[i]["tokens_to_induction"] is not None and members[i]["tokens_to_induction"] / 1e6 <= budget)
    best_layer = [np.unravel_index(np.argmax(r["previous_token"][at, i]), r["previous_token"].shape[2:])[0] for i in mine]
    return {"onsets_M_tokens": [round(o, 1) for o in onsets], "seeds": len(mine), "budget_M_tokens": round(budget, 1),
            "median_M_tokens": median_onset(onsets, len(mine)),
            "prev_token_head_in_layer_0": int(sum(layer == 0 for layer in best_layer)),
            "repeat_gap_at_budget": round(float(r["repeat_loss_gap"][at, mine].mean()), 2)}


def main(factors_dir: Path, lr_sweep: Path) -> None:
    points: dict[str, dict[float, dict]] = {key: {} for key in BASE}
    for program in sorted(factors_dir.glob("*=*/program_0")):
        if (program / "analysis" / "language_summary.json").exists():
            key, value = program.parent.name.split("=")
            points[key][float(value)] = point(program)
    budget = max((p["budget_M_tokens"] for by_value in points.values() for p in by_value.values()), default=None)
    if (lr_sweep / "program_0" / "analysis").exists():  # the preset's shape at lr 1e-2, to the same budget
        base = point(lr_sweep / "program_0", budget, lr=1e-2)
        for key, value in BASE.items():
            points[key][float(value)] = base
    if budget is None:
        sys.exit(f"no analysed factor programs under {factors_dir} (run language_induction_factors.sh first)")
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (key, by_value) in zip(axes, points.items()):
        values = sorted(by_value)
        if not values:  # a key this map did not vary
            ax.set_visible(False)
            continue
        for v in values:
            p = by_value[v]
            never = p["seeds"] - len(p["onsets_M_tokens"])
            ax.scatter([v] * len(p["onsets_M_tokens"]), p["onsets_M_tokens"], s=14, color="tab:blue", alpha=0.7)
            if never:
                ax.scatter([v], [p["budget_M_tokens"]], marker="^", s=40, color="tab:red")
                ax.annotate(f"{never} never", (v, p["budget_M_tokens"]), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=7)
        medians = [by_value[v]["median_M_tokens"] for v in values]
        ax.plot([v for v, m in zip(values, medians) if m is not None], [m for m in medians if m is not None],
                color="k", lw=1, marker="_", ms=14, label="median over the seeds")
        ax.axvline(BASE[key], color="grey", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set(xlabel=LABEL[key], xticks=values, xticklabels=[f"{v:g}" for v in values], ylim=(0, budget * 1.15),
               xlim=(values[0] / 1.4, values[-1] * 1.4))
    axes[0].set(ylabel="tokens to the onset of copying (M)")
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle("language_attn_2l_induction at lr 1e-2, one key changed at a time (dotted: the preset; red: seeds "
                 "that never copy within the budget)", fontsize=9)
    save(fig, Path(__file__).parent / "results" / "language_induction_factors.png")
    print(json.dumps({key: {f"{v:g}": p for v, p in sorted(by_value.items())} for key, by_value in points.items()}))


if __name__ == "__main__":
    args = sys.argv[1:] + [None, None]
    main(Path(args[0] or "checkpoints/language/induction_map_factors"), Path(args[1] or "checkpoints/language/induction_map_lr"))
