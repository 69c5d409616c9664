"""Is the induction circuit kept when a code model is fine-tuned on prose? The lr 3e-3 members of the
tokens-to-induction sweep (experiments/language_induction_map.sh) at their last step, fine-tuned on
English prose, 8 seeds as one run (`--init-members`), after `mi-jax analyze` of the fine-tune: the prose
loss, the loss on a repeated prose text minus its first copy and the copying head's attention over the
fine-tune, the members that copied on code against those that did not; and each component's change,
by its role in the circuit. Writes experiments/results/language_finetune_induction.png and prints one
JSON line of the numbers the note quotes.

    python experiments/language_finetune_induction.py [RUN_DIR [PNG]]   # checkpoints/language/ft_prose_induction
"""

import json
import sys
from pathlib import Path

import numpy as np

from mi_jax.io.results import load_results
from mi_jax.plots import plt, save
from mi_jax.runs.trajectory import Trajectory

ROLES = ("copying head", "other layer-1 head", "previous-token head", "other layer-0 head")


def roles(r: dict, m: int) -> dict[str, tuple[int, int]]:
    """Each role's (layer, head) in member m, read at the base (the fine-tune's first checkpoint): the
    copying head is layer 1's best at attending to the copy's next token, the previous-token head layer
    0's best previous-token head; the other head of each layer is the preset's second (2 heads a layer)."""
    assert r["text_induction"].shape[-1] == 2, "the roles are for language_attn_2l_induction's 2 heads a layer"
    copy_head = int(r["text_induction"][0, m, 1].argmax())
    prev_head = int(r["previous_token"][0, m, 0].argmax())
    return {ROLES[0]: (1, copy_head), ROLES[1]: (1, 1 - copy_head), ROLES[2]: (0, prev_head), ROLES[3]: (0, 1 - prev_head)}


def main(run_dir: Path, out: Path = Path(__file__).parent / "results" / "language_finetune_induction.png") -> None:
    steps, r = load_results(run_dir / "analysis" / "language.npz")
    _, ft = load_results(run_dir / "analysis" / "finetune.npz")
    summaries = json.loads((run_dir / "analysis" / "language_summary.json").read_text())["members"]
    traj = Trajectory.load(run_dir)
    metrics = traj.metrics
    loss = np.asarray(metrics["test_loss"], float)  # [evaluation, member]
    copies = r["repeat_loss_gap"][0] <= -0.1  # [member]: copying on prose at the base
    seeds = [s["seed"] for s in summaries]
    where = [roles(r, m) for m in range(len(seeds))]
    fine_steps = steps - steps[0]
    copy_attention = np.stack([r["text_induction"][:, m, 1, where[m][ROLES[0]][1]] for m in range(len(seeds))], 1)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    panels = [(axes[0, 0], np.asarray(metrics["step"]) - steps[0], loss, "prose validation loss (nats)"),
              (axes[0, 1], fine_steps, r["repeat_loss_gap"], "loss on the repeat - first copy (nats)"),
              (axes[1, 0], fine_steps, copy_attention, "copying head: attention to the copy's next token")]
    for ax, x, y, label in panels:
        for m, seed in enumerate(seeds):
            ax.plot(x, y[:, m], color="tab:blue" if copies[m] else "tab:grey", lw=1, alpha=0.85,
                    label=("copied on code" if copies[m] else "did not") if m == int(np.argmax(copies == copies[m])) else None)
        ax.set(xlabel="fine-tuning step", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(top=float(loss[1:].max()))
    axes[0, 0].legend(fontsize=8)
    change = {role: {kind: [float(ft[f"change_W_{kind}"][-1, m][where[m][role]]) for m in np.flatnonzero(copies)]
                     for kind in ("QK", "OV")} for role in ROLES}
    ax = axes[1, 1]
    x = np.arange(len(ROLES))
    for k, kind in enumerate(("QK", "OV")):
        means = [np.mean(change[role][kind]) for role in ROLES]
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, label=f"W_{kind}")
        for i, role in enumerate(ROLES):
            ax.plot(np.full(len(change[role][kind]), x[i] + (k - 0.5) * 0.38), change[role][kind], "k.", ms=3)
    ax.set_xticks(x, [role.replace(" head", "\nhead") for role in ROLES], fontsize=8)
    ax.set(ylabel="relative change at the end (members that copied)")
    ax.legend(fontsize=8)
    fig.suptitle(f"code models (lr 3e-3, 197M tokens) fine-tuned on prose at lr {traj.config.train.lr:g}"
                 f" for {int(fine_steps[-1])} steps, {len(seeds)} seeds", fontsize=9)
    save(fig, out)
    rounded = lambda a: [round(float(v), 3) for v in a]  # noqa: E731
    print(json.dumps({"seeds": seeds, "copied_on_code": copies.tolist(),
                      "prose_loss_start_end": [rounded(loss[0]), rounded(loss[-1])],
                      "repeat_gap_start_end": [rounded(r["repeat_loss_gap"][0]), rounded(r["repeat_loss_gap"][-1])],
                      "copy_attention_start_end": [rounded(copy_attention[0]), rounded(copy_attention[-1])],
                      "change_by_role": {role: {k: round(float(np.mean(v)), 3) for k, v in change[role].items()}
                                         for role in ROLES},
                      "change_W_E_W_U": [round(float(ft["change_W_E"][-1].mean()), 3), round(float(ft["change_W_U"][-1].mean()), 3)],
                      "patch_all": rounded(ft["patch_all"][-1])}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("checkpoints/language/ft_prose_induction"),
         *map(Path, sys.argv[2:3]))
