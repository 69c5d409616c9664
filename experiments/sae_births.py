"""When do a crosscoder's features appear, against the induction phase change? For the crosscoders that
`experiments/sae_transformers.sh` trains over 16 checkpoints of the synthetic induction run and of the
text LM: each latent's decoder norm per checkpoint (rows sorted by birth, the first checkpoint with half
its peak norm), and the births per checkpoint beside the induction score. Writes
experiments/results/sae_induction_births.png.

    python experiments/sae_births.py [SYNTHETIC_RUN] [TEXT_RUN]
"""

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mi_jax.analysis import crosscoder
from mi_jax.analysis.induction import transition_window
from mi_jax.io.results import load_results
from mi_jax.reports.sae import BORN_AT

HOOK = "blocks.1.hook_attn_out"


def induction_curve(run: Path) -> tuple[np.ndarray, np.ndarray, tuple, str, str]:
    """(steps, the best last-layer induction score, its 10-90% window, what it is, what the run is) of an
    induction or language run."""
    if (run / "analysis" / "language.npz").exists():
        steps, r = load_results(run / "analysis" / "language.npz")
        window = json.loads((run / "analysis" / "language_summary.json").read_text())["members"][0]["text_induction"]["window"]
        return steps, r["text_induction"][:, 0, -1].max(-1), window, "induction on repeated text", "text LM"
    steps, r = load_results(run / "analysis" / "induction.npz")
    score = r["induction"][:, 0, -1].max(-1)
    return steps, score, transition_window(steps, score), "induction score", "synthetic induction task"


def main(runs: list[Path]) -> None:
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.6 * len(runs)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.3, 1]})
    for row, run in zip(axes, runs):
        ind_steps, score, window, what, name = induction_curve(run)
        steps, r = load_results(run / "analysis" / f"crosscoder_{HOOK}.npz")
        norms = r["decoder_norms"].T  # [latent, checkpoint]
        order = crosscoder.birth_order(norms, BORN_AT)
        image = row[0].imshow(norms[order], aspect="auto", cmap="magma", interpolation="nearest", vmin=0)
        row[0].set_xticks(range(len(steps)), [str(int(s)) for s in steps], rotation=90, fontsize=7)
        row[0].set(xlabel="checkpoint (step)", ylabel="latent (by birth)", title=f"{name}:\ncrosscoder decoder norms, {HOOK}")
        fig.colorbar(image, ax=row[0])
        born = crosscoder.births(norms, BORN_AT)
        counts = np.bincount(born[born >= 0], minlength=len(steps))
        width = np.diff(steps).min() * 0.8
        row[1].bar(steps[1:], counts[1:], width=width, color="tab:blue", alpha=0.7,
                   label=f"latents born (first checkpoint: {counts[0]})")
        row[1].set(xlabel="step", ylabel="latents born", title="births against the induction phase change")
        twin = row[1].twinx()
        twin.plot(ind_steps, score, color="tab:red", lw=1.2, label=what)
        twin.set_ylabel(what, color="tab:red")
        row[1].axvspan(*window, color="tab:red", alpha=0.1, label="10-90% of the induction rise")
        row[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(__file__).parent / "results" / "sae_induction_births.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]] or [Path("checkpoints/sae/induction_2l"),
                                           Path("checkpoints/language/attn_2l_induction")])
