"""Bigrams, then context: the 1-layer model with an MLP (`language_gelu_1l`) against the attention-only one
(`language_attn_1l`), after `experiments/language_stages.sh`: the distance to the corpus's bigram table
and the gain from context beyond the previous token over training. Writes
experiments/results/language_one_layer.png.

    python experiments/language_one_layer.py [DIR]      # DIR=checkpoints/language
"""

import sys
from pathlib import Path

import matplotlib.pyplot as plt

from mi_jax.io.results import load_results


def main(folder: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for run, color in (("gelu_1l", "tab:blue"), ("attn_1l", "tab:orange")):
        steps, r = load_results(folder / run / "analysis" / "language.npz")
        label = {"gelu_1l": "1 layer, attention + MLP", "attn_1l": "1 layer, attention only"}[run]
        axes[0].plot(steps, r["bigram_kl"][:, 0], color=color, label=label)
        axes[1].plot(steps, r["context_gain"][:, 0], color=color, label=label)
    axes[0].set(xlabel="step", ylabel="KL (nats)", yscale="log", title="distance to the bigram table")
    axes[1].set(xlabel="step", ylabel="nats per token", title="gain from context beyond the previous token")
    for ax in axes:
        ax.axvline(600, color="grey", lw=0.6, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(__file__).parent / "results" / "language_one_layer.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("checkpoints/language"))
