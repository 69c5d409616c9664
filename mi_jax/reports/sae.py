"""`mi-jax sae RUN_DIR`: an SAE for every checkpoint and member (and instance, and grid value) of a run,
each trained on the activations its own checkpoint makes at one hook point, in one compiled call; saved to
RUN_DIR/analysis/sae_HOOK.npz ([time, member, *instance, *grid]) and sae_HOOK_summary.json, drawn in
sae_HOOK.png; each latent followed from one checkpoint's SAE to the next in sae_HOOK_lineages.npz (and the
features' drift in sae_HOOK.npz); on grokking runs, each latent's frequencies and how much of it the answer
explains. With `--set crosscoder_checkpoints=N`, also one crosscoder over N checkpoints of a member
(crosscoder_HOOK.npz, its decoder norms sorted by birth in crosscoder_HOOK.png). With `--export DIR`, only
the SAEs of one checkpoint, each a folder in SAELens's format.

A separate command, not part of `mi-jax analyze`: an SAE per checkpoint costs minutes and has settings of
its own (`mi_jax.analysis.sae_task.SAESettings`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import numpy as np

from mi_jax import config as config_lib
from mi_jax.analysis import crosscoder as crosscoder_lib
from mi_jax.analysis import grokking as grokking_lib
from mi_jax.analysis import sae_task
from mi_jax.analysis.core import analyze, showing_progress
from mi_jax.analysis.sae_task import SAESettings
from mi_jax.io.results import json_number, save_results, save_summary
from mi_jax.interop.saelens import save_saelens
from mi_jax.io.wandb_logger import WandbLogger
from mi_jax.plots import sae as plots
from mi_jax.reports import opened

RECOVERED_AT = 0.9  # a true feature counts as recovered once the SAE has a decoder row this close (cosine)
BORN_AT = 0.5  # a crosscoder latent is born at its first checkpoint with half its peak decoder norm
ONE_FREQUENCY = 0.5  # a grokking latent is a frequency feature once this share of its variance is in one frequency


def measure(traj, task, settings: SAESettings, hook: str) -> dict[str, np.ndarray]:
    """{name: [time, member, *instance, *grid]} (names without the "sae/" prefix) over the checkpoints of `traj`."""
    fn, data = sae_task.sae_measures(task, settings, hook)
    with traj.config.train.precision():
        results = analyze(traj, {"sae": fn}, data)
    return {k.removeprefix("sae/"): np.asarray(v) for k, v in results.items()}


# [time, member, *instance, *grid, feature]: saved, not drawn as lines
PER_FEATURE = ("feature_max_cosine", "firing", "feature_frequency_fractions", "feature_answer_fraction")


def frequency_summary(results: dict, key_freqs: list) -> dict:
    """A grokking run's SAEs against its frequencies: results' feature_frequency_fractions [time, member, *rest,
    d_sae, freq] and firing [..., d_sae]; key_freqs, one array per member -> {frequency_features: the latents
    that fire and have >= ONE_FREQUENCY of their variance in one frequency, key_frequency_share: the median
    over firing latents of their variance's share in the member's key frequencies, answer_features: the
    latents that fire and have >= ONE_FREQUENCY of their variance explained by the answer (results'
    feature_answer_fraction)} [time, member, *rest]."""
    fractions, fires = results["feature_frequency_fractions"], results["firing"] > 0
    key = np.zeros((len(key_freqs), fractions.shape[-1]), bool)  # [member, freq]
    for m, keys in enumerate(key_freqs):
        key[m, np.asarray(keys, int) - 1] = True
    key = key.reshape((1, len(key_freqs)) + (1,) * (fractions.ndim - 3) + key.shape[1:])  # [1, member, 1.., freq]
    share = np.where(fires, (fractions * key).sum(-1), np.nan)
    with warnings.catch_warnings():  # a checkpoint whose latents all stay silent: nan
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(share, axis=-1)
    return {"frequency_features": ((fractions.max(-1) >= ONE_FREQUENCY) & fires).sum(-1), "key_frequency_share": median,
            "answer_features": ((results["feature_answer_fraction"] >= ONE_FREQUENCY) & fires).sum(-1)}


def feature_lineages(decoder: np.ndarray, firing: np.ndarray) -> tuple[dict, np.ndarray]:
    """Features followed from each checkpoint's SAEs to the next: decoder [time, *lines, d_sae, d], firing
    [time, *lines, d_sae] -> ({index [time, line, d_sae], similarity [time - 1, line, d_sae]} of
    `crosscoder.lineages`, drift [time, *lines]: the median cosine between a latent and its Hungarian match
    at the next checkpoint, over the latents that fire at both, at the later checkpoint (nan at the first)).
    Latents that never fire keep their initial decoder, the same at every checkpoint (the SAEs share a
    key), so they are left out of the median."""
    T, d_sae = decoder.shape[0], decoder.shape[-2]
    lead = decoder.shape[1:-2]
    dec = decoder.reshape(T, -1, d_sae, decoder.shape[-1])
    index = np.empty((T, dec.shape[1], d_sae), np.int64)
    similarity = np.empty((T - 1, dec.shape[1], d_sae))
    for line in range(dec.shape[1]):
        index[:, line], similarity[:, line] = crosscoder_lib.lineages(dec[:, line])
    # each lineage's latent at every checkpoint fires (-1: a lineage left unmatched)
    fires = np.take_along_axis(firing.reshape(T, -1, d_sae) > 0, np.maximum(index, 0), -1) & (index >= 0)
    both = fires[:-1] & fires[1:]
    with warnings.catch_warnings():  # a step with no latent firing at both ends: nan
        warnings.simplefilter("ignore", RuntimeWarning)
        drift = np.concatenate([np.full((1, dec.shape[1]), np.nan),
                                np.nanmedian(np.where(both, similarity, np.nan), axis=-1)])
    return {"index": index, "similarity": similarity}, drift.reshape((T, *lead))


def _key_frequencies(traj) -> list[np.ndarray]:
    """A grokking run's key frequencies per member (from its final logits, as `mi-jax analyze` finds them)."""
    return grokking_lib.find_key_frequencies(traj, grokking_lib.make_data(traj.config))


def _frequency_text(results: dict, j: int, key_freqs) -> str:
    """The frequency features of line j at the last checkpoint, counted per frequency."""
    fractions = results["feature_frequency_fractions"][-1]
    fractions = fractions.reshape(-1, *fractions.shape[-2:])[j]  # [d_sae, freq]
    fires = results["firing"][-1].reshape(-1, fractions.shape[0])[j] > 0
    chosen = (fractions.max(-1) >= ONE_FREQUENCY) & fires
    freqs, counts = np.unique(fractions.argmax(-1)[chosen] + 1, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    text = ", ".join(f"{int(f)}: {int(c)}" for f, c in zip(freqs[order], counts[order]))
    share = float(results["key_frequency_share"][-1].reshape(-1)[j])
    answers = int(results["answer_features"][-1].reshape(-1)[j])
    return (f"; {int(chosen.sum())} of {int(fires.sum())} firing latents of one frequency (frequency: latents "
            f"{text or 'none'}), their variance in the logits' key frequencies ({', '.join(str(int(k)) for k in key_freqs)}): "
            f"median {share:.2f}; {answers} latents of the answer (a function of a +- b)")


def line_labels(traj, results: dict, settings: SAESettings) -> list[str]:
    """One label per line of [time, member, *instance, *grid] flattened after time."""
    shape = results["fve"].shape[1:]
    grid = settings.grid
    labels = []
    for index in np.ndindex(*shape):
        parts = [traj.member_label(index[0])] if shape[0] > 1 else []
        rest = list(index[1:])
        if grid is not None:
            value = grid[1][rest.pop()]
            parts.append(f"{'k' if grid[0] == 'k' else 'l1'}={value}")
        parts += [f"instance {i}" for i in rest]
        labels.append(", ".join(parts) or "SAE")
    return labels


def summary(traj, settings: SAESettings, hook: str, results: dict, labels: list[str]) -> dict:
    """The JSON summary: settings, the hook point, and per line the curves of every metric."""
    flat = {k: v.reshape(len(traj), -1) for k, v in results.items() if k not in PER_FEATURE}
    lines = [{"label": label, **{k: [json_number(x) for x in v[:, j]] for k, v in flat.items()}}
             for j, label in enumerate(labels)]
    return {"steps": [int(s) for s in traj.steps], "hook": hook, "settings": config_lib.to_dict(settings),
            "lines": lines}


def _described(steps, flat: dict, j: int) -> str:
    last = {k: float(v[-1, j]) for k, v in flat.items()}
    text = (f"FVE {last['fve']:.3f}, L0 {last['l0']:.2f}, dead {last['dead']:.0f}, loss recovered "
            f"{last['recovered_zero']:.3f} (zero abl.) / {last['recovered_mean']:.3f} (mean abl.)")
    if "mmcs" in flat:
        reached = np.flatnonzero(flat["mmcs"][:, j] >= RECOVERED_AT)
        when = f"first >= {RECOVERED_AT} at step {int(steps[reached[0]])}" if reached.size else f"never >= {RECOVERED_AT}"
        text += f", MMCS {last['mmcs']:.3f} (weighted {last['mmcs_weighted']:.3f}; {when})"
    return text


def report(traj, out_dir: Path, task, settings: SAESettings, hook: str, logger=None) -> list[str]:
    """Compute, save, log and draw the SAEs of every checkpoint of a run -> lines to print."""
    traj = traj.thinned(settings.every)
    results = measure(traj, task, settings, hook)
    name = f"sae_{hook}"
    labels = line_labels(traj, results, settings)
    lineages, results["lineage_cosine"] = feature_lineages(results.pop("decoder"), results["firing"])
    key_freqs = _key_frequencies(traj) if "feature_frequency_fractions" in results else None
    if key_freqs is not None:
        results.update(frequency_summary(results, key_freqs))
    where = f" at position {settings.position}" if settings.position is not None else ""
    lines = [f"wrote {save_results(out_dir.parent, name, traj.steps, results)} (an SAE of {hook}{where} for each of "
             f"{len(traj)} checkpoints x {len(labels)} member/instance/grid lines: d_sae {settings.sae.d_sae}, "
             f"{settings.sae.architecture}, {settings.sae.steps} steps)"]
    lines.append(f"wrote {save_results(out_dir.parent, f'{name}_lineages', traj.steps, lineages)} (each latent "
                 f"followed from one checkpoint's SAE to the next by Hungarian matching of decoder rows)")
    lines.append(f"wrote {save_summary(out_dir.parent, name, summary(traj, settings, hook, results, labels))}")
    if logger is not None:
        logger.log_series(traj.steps, {f"sae/{k}": v for k, v in results.items() if k not in PER_FEATURE})
    flat = {k: v.reshape(len(traj), -1) for k, v in results.items() if k not in PER_FEATURE}
    lines += [f"  {label}, at step {int(traj.steps[-1])}: {_described(traj.steps, flat, j)}"
              + ("" if key_freqs is None else _frequency_text(results, j, key_freqs[j // (len(labels) // traj.n_members)]))
              for j, label in enumerate(labels[:24])]
    if len(labels) > 24:
        lines.append(f"  ... and {len(labels) - 24} more lines in the summary")
    loss = traj.metrics.get("test_loss")
    figure = plots.sae_over_training(
        traj.steps, flat, labels, out_dir / f"{name}.png", title=f"SAEs of {hook} over training",
        loss_steps=np.asarray(traj.metrics["step"]) if loss is not None else None,
        loss=None if loss is None else np.asarray(loss, float).reshape(len(traj.metrics["step"]), -1).mean(-1))
    lines.append(f"wrote {figure}")
    if settings.crosscoder_checkpoints:
        lines += crosscoder_report(traj, out_dir, task, settings, hook)
    return lines


def crosscoder_report(traj, out_dir: Path, task, settings: SAESettings, hook: str) -> list[str]:
    """One crosscoder over `settings.crosscoder_checkpoints` evenly spaced checkpoints: decoder norms, births."""
    config_lib.check(0 <= settings.crosscoder_member < traj.n_members,
                     f"crosscoder_member={settings.crosscoder_member} is out of range: the run has {traj.n_members} members")
    n = min(settings.crosscoder_checkpoints, len(traj))
    chosen = np.unique(np.linspace(0, len(traj) - 1, n).round().astype(int))
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *[traj.at(int(t), settings.crosscoder_member) for t in chosen])
    params, metrics = sae_task.train_crosscoder_over(task, stacked, settings.crosscoder, hook, settings.crosscoder_instance,
                                                     settings.position)
    norms = np.asarray(crosscoder_lib.decoder_norms(params))  # [d_sae, T]
    born = crosscoder_lib.births(norms, BORN_AT)
    steps = traj.steps[chosen]
    path = save_results(out_dir.parent, f"crosscoder_{hook}", steps,
                        {"decoder_norms": norms.T, "births": born, **{k: np.asarray(v) for k, v in metrics.items()}})
    figure = plots.decoder_norms_by_birth(norms.T, crosscoder_lib.birth_order(norms, BORN_AT), steps, out_dir / f"crosscoder_{hook}.png",
                                          title=f"crosscoder of {hook} over {len(chosen)} checkpoints")
    counts = [int((born == t).sum()) for t in range(len(chosen))]
    return [f"wrote {path} (a crosscoder over steps {', '.join(str(int(s)) for s in steps)}: FVE "
            f"{float(metrics['fve']):.3f}, L0 {float(metrics['l0']):.2f}; latents born at each: {counts}, "
            f"never: {int((born < 0).sum())})", f"wrote {figure}"]


def export(traj, task, settings: SAESettings, hook: str, out: Path, step: int | None = None, member: int = 0) -> list[str]:
    """The SAEs of one checkpoint (default the last) in SAELens's format, a folder each under `out` -> lines.
    They are the SAEs `mi-jax sae` trains for that checkpoint (the same key), trained again here."""
    steps = [int(s) for s in traj.steps]
    step = steps[-1] if step is None else step
    config_lib.check(step in steps, f"step {step} is not a checkpoint of this run; the nearest is "
                                    f"{min(steps, key=lambda s: abs(s - step))}")
    config_lib.check(0 <= member < traj.n_members, f"member {member} is out of range: the run has {traj.n_members}")
    shared = sae_task.task_shared(task)
    params = traj.at(steps.index(step), member)
    saes, _ = jax.jit(lambda p: sae_task.train_saes(task, settings, hook, p, shared))(params)
    grid = settings.grid
    lead = saes["W_enc"].shape[:-2]  # [instance, *grid]
    lines = []
    for index in np.ndindex(*lead):
        one = jax.tree.map(lambda x: np.asarray(x[index]), saes)
        parts = [f"step{step}", f"member{member}"] + ([f"instance{index[0]}"] if lead[0] > 1 else [])
        k = settings.sae.k
        if grid is not None:
            value = grid[1][index[-1]]
            k = value if grid[0] == "k" else k
            parts.append(f"{'k' if grid[0] == 'k' else 'l1'}{value}")
        folder = save_saelens(Path(out) / "_".join(parts), one, settings.sae.architecture, hook_name=hook,
                              model_name=f"mi_jax:{Path(traj.run_dir).name}", k=k,
                              metadata={"step": step, "member": member, "instance": int(index[0]),
                                        "kind": type(traj.config).kind})
        lines.append(f"wrote {folder} (load it with sae_lens.SAE.load_from_disk)")
    return lines


def sae_run(run_dir, sets: dict[str, str] | None = None, *, wandb: str = "offline", progress: bool = False,
            export_to=None, step: int | None = None, member: int = 0) -> list[str]:
    """The whole `mi-jax sae` command: load, compute, save, log, draw -> lines to print. With `export_to`:
    only the SAEs of one checkpoint (`step`, default the last; `member`), in SAELens's format."""
    with opened(run_dir) as (traj, out_dir, lines), showing_progress(progress):
        settings = config_lib.override(SAESettings(), sets or {})
        task = sae_task.task_for(traj.config, settings)
        hook = sae_task.hook_point(task, settings)
        if export_to is not None:
            return lines + export(traj, task, settings, hook, export_to, step, member)
        logger = WandbLogger(traj.run_dir, traj.config, wandb, members=list(traj.members))
        try:
            return lines + report(traj, out_dir, task, settings, hook, logger=logger)
        finally:
            logger.finish()
