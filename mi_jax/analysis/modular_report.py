"""`mi-jax analyze RUN_DIR` for modular-arithmetic runs: every progress measure, every checkpoint
and seed, in one compiled call; then the phases, the saved results, the logged series and the plots.

    results, keys = progress_measures(traj)    # {name: [time, (seed,) ...]}, key frequencies per seed
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import jax
import numpy as np

from mi_jax.analysis import grokking
from mi_jax.analysis.core import analyze_params, save_results
from mi_jax.config import ConfigError

RESULTS_NAME = "grokking"


def _x64(cfg):
    return jax.enable_x64(True) if cfg.train.logsoftmax_f64 else contextlib.nullcontext()


def find_key_frequencies(traj, data: dict) -> list[np.ndarray]:
    """Key frequencies of each seed, from its final checkpoint's logits (or its W_E spectrum for ops
    other than +): a list with one ascending array of frequencies per seed (one entry for a single run)."""
    cfg = traj.config
    name = "logit_freq_energy" if cfg.op == "+" else "embed_freq_norms"
    with _x64(cfg):
        final = analyze_params(jax.tree.map(lambda x: x[-1:], traj.params), grokking.measures(cfg, [name]),
                               data, seed_axis=traj.ensemble)[name][0]  # [(seed,) freq]
    if name == "embed_freq_norms":
        final = final**2 / np.maximum((final**2).sum(-1, keepdims=True), 1e-30)
    return [grokking.key_frequencies(e) for e in np.atleast_2d(final)]


def progress_measures(traj, names=None, key_freqs=None, chunk_size: int | None = None):
    """All (or the `names`d) grokking measures for every checkpoint and seed of `traj`, one call.

    key_freqs: one sequence of frequencies per seed (a single run: a list of one), or None to find
    them from the final checkpoint. chunk_size: checkpoints per vmapped batch of the `lax.map` over
    time (`core.default_chunk_size` if None). -> ({name: [time, (seed,) ...]}, key_freqs).
    Each model's key frequencies enter its measures as data (`key_mask`), so an ensemble's seeds
    each use their own.
    """
    cfg = traj.config
    if type(cfg).kind != "modular":
        raise ConfigError(f"{traj.run_dir} is a {type(cfg).kind!r} run, not a modular-arithmetic one")
    measures = grokking.measures(cfg, names)
    data = grokking.make_data(cfg)
    if key_freqs is None:
        key_freqs = find_key_frequencies(traj, data)
    n_models = len(traj.seeds) if traj.ensemble else 1
    if len(key_freqs) != n_models:
        raise ConfigError(f"got key frequencies for {len(key_freqs)} models, the run has {n_models}")
    masks = np.stack([grokking.key_mask(cfg.p, k) for k in key_freqs])  # [model, freq]
    masks = masks if traj.ensemble else masks[0]
    bundle = {"params": traj.params, "key_mask": np.broadcast_to(masks, (len(traj), *masks.shape)).copy()}

    def with_own_keys(fn):
        return lambda model, shared: fn(model["params"], {**shared, "key_mask": model["key_mask"]})

    wrapped = {name: with_own_keys(fn) for name, fn in measures.items()}
    with _x64(cfg):
        results = analyze_params(bundle, wrapped, data, seed_axis=traj.ensemble, chunk_size=chunk_size)
    return results, [np.asarray(k) for k in key_freqs]


def per_seed(x: np.ndarray, ensemble: bool) -> np.ndarray:
    """[time, (seed,) ...] -> [seed, time, ...] (a single run gets a seed axis of 1)."""
    x = np.asarray(x)
    return np.moveaxis(x, 1, 0) if ensemble else x[None]


def analyze_run(traj, out_dir: Path, logger=None, progress: bool = True) -> list[str]:
    """Compute, save, log and plot the grokking progress measures of a modular run."""
    from mi_jax.plots import grokking as plots

    out_dir = Path(out_dir)
    cfg = traj.config
    results, key_freqs = progress_measures(traj)
    steps, ens = traj.steps, traj.ensemble
    seeds = traj.seeds if ens else (None,)
    S = {k: per_seed(v, ens) for k, v in results.items()}  # [seed, time, ...]
    phases = [
        grokking.phase_boundaries(steps, S["train_acc"][i], S["test_acc"][i], S["test_loss"][i])
        if "test_acc" in S else {"memorised": None, "cleanup": None, "generalised": None}
        for i in range(len(seeds))
    ]
    masks = np.stack([grokking.key_mask(cfg.p, k) for k in key_freqs])
    path = save_results(out_dir.parent, RESULTS_NAME, steps, {**results, "key_mask": masks})
    lines = [f"wrote {path} ({len(results)} measures x {len(steps)} checkpoints" + (f" x {len(seeds)} seeds)" if ens else ")")]

    summary = {"steps": [int(steps[0]), int(steps[-1])], "models": []}
    for i, seed in enumerate(seeds):
        final = {k: float(v[i, -1]) for k, v in S.items() if v.ndim == 2}
        summary["models"].append({"seed": seed, "key_frequencies": [int(k) for k in key_freqs[i]],
                                  "phases": phases[i], "final": final})
        who = f"seed {seed}: " if seed is not None else ""
        lines.append(f"{who}key frequencies {', '.join(map(str, key_freqs[i]))}; phases {phases[i]}")
    summary_path = out_dir / f"{RESULTS_NAME}_summary.json"
    summary_path.write_text(json.dumps(summary, indent=1))
    lines.append(f"wrote {summary_path}")

    if logger is not None:
        logger.log_series(steps, {k: v for k, v in results.items() if v.ndim == (2 if ens else 1)})

    written = [
        plots.losses_with_phases(steps, {s: S[f"{s}_loss"] for s in ("train", "test") if f"{s}_loss" in S},
                                 phases, out_dir / "grokking_loss_phases.png", "loss, phases shaded"),
        plots.gini_and_weight_norm(steps, S["embed_gini"], S.get("logit_map_gini"), S["weight_norm"], phases,
                                   out_dir / "grokking_gini_weight_norm.png"),
        plots.freq_norm_heatmaps(steps, S["embed_freq_norms"], out_dir / "grokking_embed_fourier_heatmap.png", seeds),
        plots.final_spectra(S["embed_freq_norms"][:, -1], key_freqs, out_dir / "grokking_embed_spectrum.png", seeds),
    ]
    if "excluded_loss" in S:
        names = {"train": "train_loss", "test": "test_loss", "restricted": "restricted_loss",
                 "restricted_abc": "restricted_loss_abc", "excluded": "excluded_loss"}
        series = {label: S[name] for label, name in names.items() if name in S}
        written.append(plots.losses_with_phases(steps, series, phases, out_dir / "grokking_restricted_excluded.png",
                                                "restricted and excluded loss (train set)"))
    if "neuron_best_freq" in S:
        written.append(plots.neuron_clusters(S["neuron_best_freq"][:, -1], S["neuron_best_frac"][:, -1], key_freqs,
                                             out_dir / "grokking_neuron_clusters.png", seeds))
    return lines + [f"wrote {p}" for p in written]
