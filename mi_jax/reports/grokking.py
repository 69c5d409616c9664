"""`mi-jax analyze RUN_DIR` for grokking runs: every progress measure for every checkpoint and member
in one compiled call, then the phases, the saved results, the logged series and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.analysis import grokking
from mi_jax.io.results import save_results, save_summary
from mi_jax.plots import grokking as plots

RESULTS_NAME = "grokking"
MAX_MEMBER_PANELS = 8  # figures with a panel or bar per member draw the first ones; results cover all


def report(traj, out_dir: Path, logger=None) -> list[str]:
    """Compute, save, log and plot the grokking progress measures of every member of a run."""
    out_dir = Path(out_dir)
    cfg, steps = traj.config, traj.steps
    results, key_freqs = grokking.progress_measures(traj)
    by_member = {k: np.swapaxes(v, 0, 1) for k, v in results.items()}  # [member, time, ...] for the figures
    labels = [traj.member_label(m) for m in range(traj.n_members)]
    no_phases = {"memorised": None, "cleanup": None, "generalised": None}
    phases = [
        grokking.phase_boundaries(steps, by_member["train_acc"][m], by_member["test_acc"][m], by_member["test_loss"][m])
        if "test_acc" in by_member else no_phases
        for m in range(traj.n_members)
    ]
    masks = np.stack([grokking.key_mask(cfg.p, k) for k in key_freqs])
    path = save_results(out_dir.parent, RESULTS_NAME, steps, {**results, "key_mask": masks})
    lines = [f"wrote {path} ({len(results)} measures x {len(steps)} checkpoints x {traj.n_members} members)"]

    summary = {"steps": [int(steps[0]), int(steps[-1])], "members": []}
    for m, label in enumerate(labels):
        final = {k: float(v[m, -1]) for k, v in by_member.items() if v.ndim == 2}
        summary["members"].append({**traj.members[m], "key_frequencies": [int(k) for k in key_freqs[m]],
                                   "phases": phases[m], "final": final})
        lines.append(f"{label}: key frequencies {', '.join(map(str, key_freqs[m]))}; phases {phases[m]}")
    lines.append(f"wrote {save_summary(out_dir.parent, RESULTS_NAME, summary)}")

    if logger is not None:
        logger.log_series(steps, {k: v for k, v in results.items() if v.ndim == 2})

    losses = {split: by_member[f"{split}_loss"] for split in ("train", "test") if f"{split}_loss" in by_member}
    few = slice(0, MAX_MEMBER_PANELS)
    written = [
        plots.losses_with_phases(steps, losses, phases, out_dir / "grokking_loss_phases.png", "loss, phases shaded"),
        plots.gini_and_weight_norm(steps, by_member["embed_gini"], by_member.get("logit_map_gini"),
                                   by_member["weight_norm"], phases, out_dir / "grokking_gini_weight_norm.png"),
        plots.freq_norm_heatmaps(steps, by_member["embed_freq_norms"][few], out_dir / "grokking_embed_fourier_heatmap.png",
                                 labels[few]),
        plots.final_spectra(by_member["embed_freq_norms"][few, -1], key_freqs[few], out_dir / "grokking_embed_spectrum.png",
                            labels[few]),
    ]
    if "excluded_loss" in by_member:
        names = {"train": "train_loss", "test": "test_loss", "restricted": "restricted_loss",
                 "restricted_abc": "restricted_loss_abc", "excluded": "excluded_loss"}
        series = {label: by_member[name] for label, name in names.items() if name in by_member}
        written.append(plots.losses_with_phases(steps, series, phases, out_dir / "grokking_restricted_excluded.png",
                                                "restricted and excluded loss (train set)"))
    if "neuron_best_freq" in by_member:
        written.append(plots.neuron_clusters(by_member["neuron_best_freq"][few, -1], by_member["neuron_best_frac"][few, -1],
                                             out_dir / "grokking_neuron_clusters.png", labels[few]))
    return lines + [f"wrote {p}" for p in written]
