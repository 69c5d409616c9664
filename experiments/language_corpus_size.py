"""Does a larger vocabulary delay induction, or the repetition of a small corpus? `language_attn_2l_induction`
at lr 1e-2 to 40M tokens, with BPEs of 512 and 1,024 tokens on the default stdlib corpus (the 8 seeds of
language_induction_map.sh and language_induction_factors.sh) and on the whole stdlib, tests included
(experiments/language_corpus_size.sh). Writes experiments/results/language_corpus_size.png (every seed's
loss on the repeat minus the first copy, its validation minus training loss, and on the whole stdlib its
validation loss, against tokens) and
prints one JSON line a setting: onsets of copying, loss bumps within the budget (on the validation loss, as
the report finds it, and on the training loss), the previous-token head's layer, epochs, losses at the budget.

    python experiments/language_corpus_size.py [SMALL_LR_SWEEP SMALL_FACTORS LARGE_FACTORS...]
    # checkpoints/language/induction_map_lr checkpoints/language/induction_map_factors
    # checkpoints/language/corpus_size/induction_map_factors (more such folders: more seeds of a setting)
"""

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.analysis.induction import loss_bump
from mi_jax.io.results import load_results
from mi_jax.plots import plt, save

sys.path.insert(0, str(Path(__file__).parent))
from language_bump import load_run  # noqa: E402

BUDGET = 40e6  # tokens


def setting(*programs: tuple[Path, list[int] | None]) -> dict:
    """The members of one setting (None: all of a program's), from programs of the same shape, to the budget:
    tokens [time] (M), the repeat - first copy gap, the validation loss and the validation minus training
    loss [time, member], onsets (M tokens, None: never), the layer of each member's strongest previous-token
    head at the budget, and the corpus's size in tokens and epochs."""
    parts = [one_program(program, members) for program, members in programs]
    return {**parts[0], **{k: np.concatenate([p[k] for p in parts], axis=1) for k in ("gap", "val_loss", "val_minus_train")},
            **{k: sum((p[k] for p in parts), []) for k in ("seeds", "onsets_M", "bump", "train_bump", "previous_token_layer")}}


def one_program(program: Path, members: list[int] | None) -> dict:
    run = load_run(program)
    cfg, metrics, summary = run["cfg"], run["metrics"], run["summaries"]
    corpus = json.loads((program / "corpus.json").read_text())
    members = list(range(len(summary))) if members is None else members
    steps, r = load_results(program / "analysis" / "language.npz")
    per_step = cfg.train.batch_size * cfg.seq_len
    keep = steps * per_step <= BUDGET
    at = np.searchsorted(metrics["step"], steps[keep])  # the evaluations at the analysed checkpoints
    upto = metrics["step"] * per_step <= BUDGET  # every evaluation within the budget
    trained = upto & ~np.isnan(metrics["step_loss"][:, 0])  # no training loss at step 0
    previous = r["previous_token"][keep][-1]  # [member, layer, head] at the budget
    onsets = [summary[m]["tokens_to_induction"] for m in members]
    return {"tokens": steps[keep] * per_step / 1e6, "gap": r["repeat_loss_gap"][keep][:, members],
            "val_loss": metrics["test_loss"][at][:, members],
            "val_minus_train": (metrics["test_loss"][at] - metrics["step_loss"][at])[:, members],
            "seeds": [summary[m]["seed"] for m in members],
            "onsets_M": [None if o is None or o > BUDGET else round(o / 1e6, 1) for o in onsets],
            "bump": [round(loss_bump(metrics["step"][upto], metrics["test_loss"][upto, m])["bump"], 3) for m in members],
            "train_bump": [round(loss_bump(metrics["step"][trained], metrics["step_loss"][trained, m])["bump"], 3)
                           for m in members],
            "previous_token_layer": [int(np.unravel_index(np.argmax(previous[m]), previous.shape[1:])[0]) for m in members],
            "characters_per_token": round(corpus["characters"] / sum(corpus["tokens"].values()), 2),
            "train_tokens_M": round(corpus["tokens"]["train"] / 1e6, 2), "epochs": round(BUDGET / corpus["tokens"]["train"], 1)}


def main(small_lr: Path, small_factors: Path, *large_factors: Path) -> None:
    lr_members = json.loads((small_lr / "program_0" / "analysis" / "language_summary.json").read_text())["members"]
    at_1e2 = [i for i, m in enumerate(lr_members) if m["train.lr"] == 1e-2]
    large = {v: [(f / f"data.vocab_size={v}" / "program_0", None) for f in large_factors
                 if (f / f"data.vocab_size={v}" / "program_0" / "analysis").exists()] for v in (512, 1024)}
    settings = {"stdlib without tests, BPE 512": setting((small_lr / "program_0", at_1e2)),
                "stdlib without tests, BPE 1,024": setting((small_factors / "data.vocab_size=1024" / "program_0", None)),
                "whole stdlib, BPE 512": setting(*large[512]), "whole stdlib, BPE 1,024": setting(*large[1024])}
    fig, (gap_ax, fit_ax, loss_ax) = plt.subplots(1, 3, figsize=(16, 4), sharex=True)
    styles = dict(zip(settings, (("tab:blue", ":"), ("tab:red", ":"), ("tab:blue", "-"), ("tab:red", "-"))))
    for name, s in settings.items():
        color, ls = styles[name]
        n = len(s["seeds"])
        for j in range(n):
            label = f"{name} ({n} seeds)" if j == 0 else None
            gap_ax.plot(s["tokens"], s["gap"][:, j], color=color, ls=ls, lw=0.8, label=label)
            fit_ax.plot(s["tokens"], s["val_minus_train"][:, j], color=color, ls=ls, lw=0.8, label=label)
            if name.startswith("whole"):  # the loss bump, where copying is worth the most
                copies = s["onsets_M"][j] is not None
                loss_ax.plot(s["tokens"], s["val_loss"][:, j], color=color, lw=1.2 if copies else 0.6,
                             alpha=1.0 if copies else 0.5, label=label)
        print(json.dumps({"setting": name, "seeds": s["seeds"], "onsets_M_tokens": s["onsets_M"],
                          "loss_bump_validation": s["bump"], "loss_bump_training": s["train_bump"],
                          "previous_token_layer_at_budget": s["previous_token_layer"], "epochs_at_40M": s["epochs"],
                          "train_tokens_M": s["train_tokens_M"], "characters_per_token": s["characters_per_token"],
                          "gap_at_budget": np.round(s["gap"][-1], 2).tolist(),
                          "val_minus_train_at_budget": np.round(s["val_minus_train"][-1], 2).tolist(),
                          "val_loss_at_budget": np.round(s["val_loss"][-1], 2).tolist()}))
    gap_ax.axhline(-0.1, color="grey", lw=0.6, ls="--")
    gap_ax.set(xlabel="tokens (M)", ylabel="loss on the repeat - first copy (nats)",
               title="copying (below the dashed line: the onset)")
    fit_ax.axhline(0, color="grey", lw=0.6)
    fit_ax.set(xlabel="tokens (M)", ylabel="validation - training loss (nats)", title="validation against training loss")
    loss_ax.set(xlabel="tokens (M)", ylabel="validation loss (nats)", ylim=(2.3, 3.6),
                title="the whole stdlib: validation loss (thick: seeds that copy)")
    gap_ax.legend(fontsize=7)
    fig.suptitle("language_attn_2l_induction at lr 1e-2: the vocabulary on the default corpus and on the whole "
                 "stdlib (2.6x larger)", fontsize=9)
    save(fig, Path(__file__).parent / "results" / "language_corpus_size.png")


if __name__ == "__main__":
    args = sys.argv[1:] or ["checkpoints/language/induction_map_lr", "checkpoints/language/induction_map_factors",
                            "checkpoints/language/corpus_size/induction_map_factors"]
    main(*map(Path, args))
