"""`mi-jax sae RUN_DIR`: an SAE for every checkpoint and member (and instance, and grid value) of a run,
each trained on the activations its own checkpoint makes at one hook point, in one compiled call; saved to
RUN_DIR/analysis/sae_HOOK.npz ([time, member, *instance, *grid]) and sae_HOOK_summary.json, drawn in
sae_HOOK.png. With `--set crosscoder_checkpoints=N`, also one crosscoder over N checkpoints of a member
(crosscoder_HOOK.npz, its decoder norms sorted by birth in crosscoder_HOOK.png). With `--export DIR`, only
the SAEs of one checkpoint, each a folder in SAELens's format.

A separate command, not part of `mi-jax analyze`: an SAE per checkpoint costs minutes and has settings of
its own (`mi_jax.analysis.sae_task.SAESettings`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from mi_jax import config as config_lib
from mi_jax.analysis import crosscoder as crosscoder_lib
from mi_jax.analysis import sae_task
from mi_jax.analysis.core import analyze, showing_progress
from mi_jax.analysis.sae_task import SAESettings
from mi_jax.io.results import json_number, save_results, save_summary
from mi_jax.interop.saelens import save_saelens
from mi_jax.io.wandb_logger import WandbLogger
from mi_jax.plots import sae as plots
from mi_jax.reports import opened

RECOVERED_AT = 0.9  # a true feature counts as recovered once the SAE has a decoder row this close (cosine)


def measure(traj, task, settings: SAESettings, hook: str) -> dict[str, np.ndarray]:
    """{name: [time, member, *instance, *grid]} (names without the "sae/" prefix) over the checkpoints of `traj`."""
    fn, data = sae_task.sae_measures(task, settings, hook)
    with traj.config.train.precision():
        results = analyze(traj, {"sae": fn}, data)
    return {k.removeprefix("sae/"): np.asarray(v) for k, v in results.items()}


PER_FEATURE = ("feature_max_cosine",)  # [time, member, *instance, *grid, feature]: saved, not drawn as lines


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
    lines = [f"wrote {save_results(out_dir.parent, name, traj.steps, results)} (an SAE of {hook} for each of "
             f"{len(traj)} checkpoints x {len(labels)} member/instance/grid lines: d_sae {settings.sae.d_sae}, "
             f"{settings.sae.architecture}, {settings.sae.steps} steps)"]
    lines.append(f"wrote {save_summary(out_dir.parent, name, summary(traj, settings, hook, results, labels))}")
    if logger is not None:
        logger.log_series(traj.steps, {f"sae/{k}": v for k, v in results.items()})
    flat = {k: v.reshape(len(traj), -1) for k, v in results.items() if k not in PER_FEATURE}
    lines += [f"  {label}, at step {int(traj.steps[-1])}: {_described(traj.steps, flat, j)}"
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
    params, metrics = sae_task.train_crosscoder_over(task, stacked, settings.crosscoder, hook, settings.crosscoder_instance)
    norms = np.asarray(crosscoder_lib.decoder_norms(params))  # [d_sae, T]
    born = crosscoder_lib.births(norms)
    steps = traj.steps[chosen]
    path = save_results(out_dir.parent, f"crosscoder_{hook}", steps,
                        {"decoder_norms": norms.T, "births": born, **{k: np.asarray(v) for k, v in metrics.items()}})
    figure = plots.decoder_norms_by_birth(norms.T, crosscoder_lib.birth_order(norms), steps, out_dir / f"crosscoder_{hook}.png",
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
    shared = getattr(task, "shared_data", None)
    shared = jax.tree.map(jax.numpy.asarray, shared) if shared else None
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
