"""mi_jax: the training dynamics of toy models for mechanistic interpretability, in JAX.

    import mi_jax as mj

    cfg = mj.override(mj.load_preset("grokking_small"), {"train.steps": "300"})
    mj.train(cfg, "checkpoints/my_run")            # jitted training, a checkpoint series on disk
    traj = mj.Trajectory.load("checkpoints/my_run")  # params [time, member, ...]
    results = mj.analyze(traj, {"norm": lambda params, data: (params["W_E"] ** 2).sum()})  # [time, member]

Names are imported on first use (a module-level `__getattr__`), so `import mi_jax` starts no JAX
backend and imports nothing it does not need: loading a series imports no reports or plots.

The package is layered; a module imports only from the layers below its own (checked by `lint-imports`,
the contract in pyproject.toml):

    cli, demo                    the command line; the demo as a function of the API
    reports                      what `mi-jax analyze` / `mi-jax llc` compute, write and draw, per kind
    plots                        figures
    analysis | interventions     pure measures of one model, mapped over the checkpoint series
    runs | interop | presets     run dirs (train, resume, sweep, load); TransformerLens in and out; presets
    tasks                        each kind's data and objective, and the registry of kinds
    training                     the engine: the compiled loop, devices, schedules, several processes
    models                       the hooked transformer, the toy models, hook-dict edits
    io                           storage: the series, the run dir, the train state, results, wandb
    config | trees | runtime     typed configs, parameter names, JAX's runtime settings
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> (module, attribute)
_NAMES = {
    # presets and configs
    "load_preset": ("mi_jax.presets", "load"),
    "override": ("mi_jax.config", "override"),
    "ConfigError": ("mi_jax.config", "ConfigError"),
    "TrainConfig": ("mi_jax.training.config", "TrainConfig"),
    "GrokkingConfig": ("mi_jax.tasks.grokking", "GrokkingConfig"),
    "InductionConfig": ("mi_jax.tasks.induction", "InductionConfig"),
    "SuperpositionConfig": ("mi_jax.tasks.superposition", "SuperpositionConfig"),
    "BooleanAndConfig": ("mi_jax.tasks.boolean_and", "BooleanAndConfig"),
    # training
    "train": ("mi_jax.runs.run", "train"),
    "resume": ("mi_jax.runs.run", "resume"),
    "sweep": ("mi_jax.runs.sweep", "sweep"),
    "resume_sweep": ("mi_jax.runs.sweep", "resume_sweep"),
    "Sweep": ("mi_jax.runs.sweep", "Sweep"),
    "demo": ("mi_jax.demo", "demo"),
    # the checkpoint series and its analysis
    "Trajectory": ("mi_jax.runs.trajectory", "Trajectory"),
    "CheckpointError": ("mi_jax.io", "CheckpointError"),
    "TrainingDiverged": ("mi_jax.training.loop", "TrainingDiverged"),
    "RunStopped": ("mi_jax.training.failures", "RunStopped"),
    "DiskFull": ("mi_jax.training.failures", "DiskFull"),
    "PeerLost": ("mi_jax.training.failures", "PeerLost"),
    "analyze": ("mi_jax.analysis.core", "analyze"),
    "analyze_run": ("mi_jax.reports", "analyze_run"),
    "llc_run": ("mi_jax.reports.llc", "llc_run"),
    # the model
    "TransformerConfig": ("mi_jax.models.transformer", "TransformerConfig"),
    "HookedTransformer": ("mi_jax.models.transformer", "HookedTransformer"),
    "apply": ("mi_jax.models.transformer", "apply"),
    "label_loss": ("mi_jax.models.transformer", "label_loss"),
    "init_params": ("mi_jax.models.transformer", "init_params"),
    "hook_names": ("mi_jax.models.transformer", "hook_names"),
}
_SUBMODULES = ("analysis", "interop", "interventions", "io", "models", "plots", "presets", "reports", "runs", "tasks",
               "training")

__all__ = sorted([*_NAMES, *_SUBMODULES, "register_kind"])


def register_kind(config: type, task: type, report=None):
    """Make a kind of your own: `config` a frozen dataclass with a class variable `kind` (its name) and a
    field `train: TrainConfig`, `task` a class made from a config with `init_params`, `batch`, `loss` and
    `evaluate` (see `mi_jax.tasks.registry`), `report(traj, out_dir, logger=None) -> lines` what
    `mi-jax analyze` runs for it. It then trains, sweeps, resumes, loads and analyses like a built-in
    kind; call this in the module that defines it, which a run of the kind records to find it again."""
    from mi_jax import tasks

    kind = tasks.register(config, task)
    if report is not None:
        from mi_jax import reports

        reports.register(kind.name, report)
    return kind


def __getattr__(name: str):
    if name in _NAMES:
        module, attribute = _NAMES[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'mi_jax' has no attribute {name!r}")
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what the names are, for editors and type checkers
    from mi_jax import analysis, interop, interventions, io, models, plots, presets, reports, runs, tasks, training
    from mi_jax.analysis.core import analyze
    from mi_jax.config import ConfigError, override
    from mi_jax.demo import demo
    from mi_jax.io import CheckpointError
    from mi_jax.models.transformer import (HookedTransformer, TransformerConfig, apply, hook_names, init_params,
                                          label_loss)
    from mi_jax.presets import load as load_preset
    from mi_jax.reports import analyze_run
    from mi_jax.reports.llc import llc_run
    from mi_jax.runs.run import resume, train
    from mi_jax.runs.sweep import Sweep, resume_sweep, sweep
    from mi_jax.runs.trajectory import Trajectory
    from mi_jax.tasks.boolean_and import BooleanAndConfig
    from mi_jax.tasks.grokking import GrokkingConfig
    from mi_jax.tasks.induction import InductionConfig
    from mi_jax.tasks.superposition import SuperpositionConfig
    from mi_jax.training.config import TrainConfig
    from mi_jax.training.failures import DiskFull, PeerLost, RunStopped
    from mi_jax.training.loop import TrainingDiverged
