"""Tokens to induction against the learning rate, from the sweep of experiments/language_induction_map.sh:
the share of seeds that copy on repeated text by each token count, per learning rate, and every member's
loss on the repeat minus the first copy over training. Writes experiments/results/language_induction_map.png
and prints one JSON line of the numbers the note quotes (onsets in millions of tokens, per learning rate).

    python experiments/language_induction_map.py [SWEEP_DIR]   # checkpoints/language/induction_map_lr
"""

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.io.results import load_results
from mi_jax.plots import plt, save
from mi_jax.runs.trajectory import load_config


def median_onset(onsets: list[float], n_seeds: int) -> float | None:
    """The median over all seeds, those that never copy counted as later than any onset (None: most never do)."""
    median = float(np.median(onsets + [np.inf] * (n_seeds - len(onsets))))
    return round(median, 1) if np.isfinite(median) else None


def main(sweep: Path) -> None:
    program = sweep / "program_0"
    members = json.loads((program / "analysis" / "language_summary.json").read_text())["members"]
    steps, r = load_results(program / "analysis" / "language.npz")
    cfg = load_config(program)
    per_step = cfg.train.batch_size * cfg.seq_len
    tokens = steps * per_step / 1e6  # [time] millions
    lrs = sorted({m["train.lr"] for m in members})
    colors = dict(zip(lrs, ("tab:grey", "tab:blue", "tab:red", "tab:green", "tab:purple")))
    fig, (share, gap) = plt.subplots(1, 2, figsize=(11, 4))
    numbers = {}
    for lr in lrs:
        mine = [m for m in members if m["train.lr"] == lr]
        onsets = sorted(m["tokens_to_induction"] / 1e6 for m in mine if m["tokens_to_induction"] is not None)
        copied = np.array([sum(o <= t for o in onsets) / len(mine) for t in tokens])
        share.step(tokens, copied, where="post", color=colors[lr], label=f"lr {lr:g} ({len(onsets)} of {len(mine)})")
        # the layer of each member's strongest previous-token head at the end, beside whether it copies
        layer0 = [m["previous_token_best"]["head"].startswith("L0") for m in mine]
        copies = [m["tokens_to_induction"] is not None for m in mine]
        numbers[f"{lr:g}"] = {"onsets_M_tokens": [round(o, 1) for o in onsets], "seeds": len(mine),
                              "median_M_tokens": median_onset(onsets, len(mine)),
                              "prev_token_head_in_layer_0": int(sum(layer0)),
                              "layer_0_and_copies": int(sum(a and b for a, b in zip(layer0, copies))),
                              "final_repeat_gap": round(float(np.mean([m["repeat_loss_gap"]["final"] for m in mine])), 2)}
    for i, m in enumerate(members):
        gap.plot(tokens, r["repeat_loss_gap"][:, i], color=colors[m["train.lr"]], lw=0.8, alpha=0.8)
    gap.axhline(-0.1, color="k", lw=0.6, ls=":")
    share.set(xlabel="training tokens (M)", ylabel="share of seeds copying", ylim=(-0.02, 1.02),
              title="onset of copying (repeat >= 0.1 nats easier)")
    gap.set(xlabel="training tokens (M)", ylabel="loss on the repeat - first copy (nats)",
            title="every member (colour: learning rate)")
    share.legend(loc="upper left", fontsize=8)
    save(fig, Path(__file__).parent / "results" / "language_induction_map.png")
    print(json.dumps({"budget_M_tokens": round(float(tokens[-1]), 1), "per_lr": numbers}))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/language/induction_map_lr"))
