"""`mi-jax analyze RUN_DIR` for a fine-tuned run (one with `init_from`), after its kind's own report: each
component's change from the base and patching from the base into the fine-tuned model over the whole
fine-tuning series (`analysis.finetune`), saved as finetune.npz and finetune_summary.json, with two
figures per member (change heat map, patching fractions over steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.analysis import finetune as ft
from mi_jax.analysis.core import analyze
from mi_jax.io import CheckpointError
from mi_jax.io.results import save_results, save_summary
from mi_jax.io.run_dir import member_key
from mi_jax.plots import finetune as plots
from mi_jax.runs.trajectory import base_params
from mi_jax.tasks import make_task

RESULTS_NAME = "finetune"
MAX_MEMBER_FIGURES = 8  # figures of the first members; the results cover all


def change_rows(results: dict, member: int) -> dict[str, np.ndarray]:
    """The component changes of one member as named rows {label: [time]} in the model's order: W_E, W_pos,
    then each layer's heads' W_QK / W_OV (`L0H1 QK`) and MLP (`L0 W_in`), then W_U; a toy model's leaves
    by name."""
    mine = {k[len("change_"):]: np.asarray(v)[:, member] for k, v in results.items() if k.startswith("change_")}
    if "W_QK" not in mine:
        return mine
    rows = {name: mine[name] for name in ("W_E", "W_pos") if name in mine}
    n_layers, n_heads = mine["W_QK"].shape[1:]
    for layer in range(n_layers):
        for name in ("W_QK", "W_OV"):
            rows.update({f"L{layer}H{head} {name[2:]}": mine[name][:, layer, head] for head in range(n_heads)})
        rows.update({f"L{layer} {name}": mine[name][:, layer] for name in ("W_in", "W_out") if name in mine})
    if "W_U" in mine:
        rows["W_U"] = mine["W_U"]
    return rows


def patching_rows(results: dict, member: int) -> dict[str, np.ndarray]:
    """The patching fractions of one member as named rows {label: [time]}: each head (`L0H1`), each
    attention layer (`L0 attn`), each MLP (`L0 mlp`), the embeddings and everything at once (`all`)."""
    if "patch_head" not in results:
        return {}
    mine = {k: np.asarray(v)[:, member] for k, v in results.items() if k.startswith("patch_")}
    rows = {f"L{l}H{h}": mine["patch_head"][:, l, h] for l in range(mine["patch_head"].shape[1])
            for h in range(mine["patch_head"].shape[2])}
    for site in ("attn", "mlp"):
        if f"patch_{site}" in mine:
            rows.update({f"L{l} {site}": mine[f"patch_{site}"][:, l] for l in range(mine[f"patch_{site}"].shape[1])})
    return {**rows, "embed": mine["patch_embed"], "all": mine["patch_all"]}


def _final(rows: dict[str, np.ndarray]) -> dict[str, float]:
    return {label: float(v[-1]) for label, v in rows.items()}


def _top(rows: dict[str, np.ndarray], n: int = 3, exclude=("all",)) -> list[str]:
    """The `n` labels with the largest final value (nan last)."""
    finals = [(label, v[-1]) for label, v in rows.items() if label not in exclude]
    return [label for label, _ in sorted(finals, key=lambda lv: -lv[1] if np.isfinite(lv[1]) else np.inf)[:n]]


def report(traj, out_dir: Path, logger=None) -> list[str]:
    """Compute, save, log and plot the fine-tune measures of every member of a run with `init_from`."""
    out_dir = Path(out_dir)
    origin = traj.init_from
    if not origin:
        return ["no fine-tune report: this run was trained from scratch (no init_from in its config)"]
    try:
        base = base_params(origin)  # [member, ...], each member's own starting point
    except CheckpointError as e:  # the kind's report stands; this one needs the base
        return [f"warning: no fine-tune report: {e}"]
    task = make_task(traj.config)
    # one layer's heads patched at a time: the memory of a forward pass per head, not per head of every layer
    measures = ft.measures(task, batch_size=getattr(getattr(traj.config, "transformer", None), "n_heads", None))
    results = analyze(traj, measures, {}, per_member={"base": base})
    path = save_results(out_dir.parent, RESULTS_NAME, traj.steps, results)
    lines = [f"fine-tuned from {origin['run']} at step {origin['step']}: wrote {path} ({len(results)} measures x "
             f"{len(traj)} checkpoints x {traj.n_members} members)"]
    summary = {"init_from": origin, "steps": [int(traj.steps[0]), int(traj.steps[-1])], "members": []}
    for m in range(traj.n_members):
        changes, patches = change_rows(results, m), patching_rows(results, m)
        entry = {**traj.members[m], "base_member": origin["member"][m], "final_change": _final(changes),
                 "most_changed": _top(changes)}
        text = f"{traj.member_label(m)}: most changed {', '.join(entry['most_changed'])}"
        if patches:
            loss = {k: float(np.asarray(results[k])[-1, m]) for k in ("loss_base", "loss_finetuned", "loss_all_patched")}
            entry.update(final_patching=_final(patches), most_undoing=_top(patches), final_loss=loss)
            text += (f"; loss {loss['loss_base']:.4g} (base) -> {loss['loss_finetuned']:.4g}, patching undoes most at "
                     f"{', '.join(entry['most_undoing'])} (all blocks: {entry['final_patching']['all']:.2f})")
        summary["members"].append(entry)
        lines.append(text)
    lines.append(f"wrote {save_summary(out_dir.parent, RESULTS_NAME, summary)}")
    if logger is not None:
        logger.log_series(traj.steps, {f"finetune/{k}": v for k, v in results.items()
                                       if k.startswith(("loss_", "patch_all", "change_W_E", "change_W_U"))})
    written = []
    for m in range(min(traj.n_members, MAX_MEMBER_FIGURES)):
        suffix = "" if traj.n_members == 1 else f"_{member_key(traj.members[m])}"
        label = f" ({traj.member_label(m)})" if traj.n_members > 1 else ""
        written.append(plots.component_change(traj.steps, change_rows(results, m), out_dir / f"finetune_change{suffix}.png",
                                              f"change of each component from the base{label}"))
        patches = patching_rows(results, m)
        if patches:
            written.append(plots.patching_fractions(traj.steps, patches, out_dir / f"finetune_patching{suffix}.png",
                                                    f"patching from the base into the fine-tuned model{label}"))
    return lines + [f"wrote {p}" for p in written]
