"""mi_jax: the training dynamics of toy models for mechanistic interpretability, in JAX.

    import mi_jax as mj

    cfg = mj.override(mj.load_preset("grokking_small"), {"train.steps": "300"})
    mj.train(cfg, "checkpoints/my_run")            # jitted training, a checkpoint series on disk
    traj = mj.Trajectory.load("checkpoints/my_run")  # params [time, member, ...]
    results = mj.analyze(traj, {"norm": lambda params, data: (params["W_E"] ** 2).sum()})  # [time, member]

Names are imported on first use (a module-level `__getattr__`), so `import mi_jax` starts no JAX
backend and `mi-jax` can still set JAX's environment (CPU devices, compile cache) before JAX starts.
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
    "train": ("mi_jax.training.run", "start"),
    "resume": ("mi_jax.training.run", "resume"),
    "sweep": ("mi_jax.training.sweep", "sweep"),
    "Sweep": ("mi_jax.training.sweep", "Sweep"),
    # the checkpoint series and its analysis
    "Trajectory": ("mi_jax.io.trajectory", "Trajectory"),
    "CheckpointError": ("mi_jax.io.store", "CheckpointError"),
    "analyze": ("mi_jax.analysis.core", "analyze"),
    "analyze_run": ("mi_jax.reports", "analyze_run"),
    "llc_run": ("mi_jax.reports.landscape", "llc_run"),
    # the model
    "TransformerConfig": ("mi_jax.models.transformer", "TransformerConfig"),
    "HookedTransformer": ("mi_jax.models.transformer", "HookedTransformer"),
    "apply": ("mi_jax.models.transformer", "apply"),
    "init_params": ("mi_jax.models.transformer", "init_params"),
    "hook_names": ("mi_jax.models.transformer", "hook_names"),
}
_SUBMODULES = ("analysis", "interventions", "kinds", "models", "plots", "presets", "reports", "tasks", "training", "io")

__all__ = sorted([*_NAMES, *_SUBMODULES])


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
    from mi_jax import analysis, interventions, io, kinds, models, plots, presets, reports, tasks, training
    from mi_jax.analysis.core import analyze
    from mi_jax.config import ConfigError, override
    from mi_jax.io.store import CheckpointError
    from mi_jax.io.trajectory import Trajectory
    from mi_jax.models.transformer import HookedTransformer, TransformerConfig, apply, hook_names, init_params
    from mi_jax.presets import load as load_preset
    from mi_jax.reports import analyze_run
    from mi_jax.reports.landscape import llc_run
    from mi_jax.tasks.boolean_and import BooleanAndConfig
    from mi_jax.tasks.grokking import GrokkingConfig
    from mi_jax.tasks.induction import InductionConfig
    from mi_jax.tasks.superposition import SuperpositionConfig
    from mi_jax.training.config import TrainConfig
    from mi_jax.training.run import resume
    from mi_jax.training.run import start as train
    from mi_jax.training.sweep import Sweep, sweep
