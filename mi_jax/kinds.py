"""The experiment kinds: one table from a kind's name to its config class, task and report.

A run's config.json names its kind (`"kind": "grokking"`), and every folder uses that one name:
`tasks/grokking.py` (data and objective), `analysis/grokking.py` (pure measures),
`reports/grokking.py` (what `mi-jax analyze` computes and writes), `plots/grokking.py`, and the
presets `grokking_*`. The same holds for `induction`, `superposition` and `boolean_and`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from mi_jax.config import ConfigError
from mi_jax.reports import boolean_and, grokking, induction, superposition
from mi_jax.tasks.boolean_and import BooleanAndConfig, BooleanAndTask
from mi_jax.tasks.grokking import GrokkingConfig, GrokkingTask
from mi_jax.tasks.induction import InductionConfig, InductionTask
from mi_jax.tasks.superposition import SuperpositionConfig, SuperpositionTask


@dataclasses.dataclass(frozen=True)
class Kind:
    """An experiment kind: its config dataclass, its task (pure training functions) and its report,
    `report(traj, out_dir, logger) -> lines`: what `mi-jax analyze` computes, writes and draws."""

    name: str
    config: type
    task: type
    report: Callable[..., list[str]]


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("grokking", GrokkingConfig, GrokkingTask, grokking.report),
        Kind("induction", InductionConfig, InductionTask, induction.report),
        Kind("superposition", SuperpositionConfig, SuperpositionTask, superposition.report),
        Kind("boolean_and", BooleanAndConfig, BooleanAndTask, boolean_and.report),
    )
}

# the names run dirs written before the kinds had one name everywhere still carry
OLD_NAMES = {"modular": "grokking", "tms": "superposition", "and": "boolean_and"}


def kind(name: str) -> Kind:
    """The kind called `name` (an older name of it too)."""
    name = OLD_NAMES.get(name, name)
    if name not in KINDS:
        raise ConfigError(f"unknown experiment kind {name!r} (known: {', '.join(KINDS)})")
    return KINDS[name]


def kind_of(cfg) -> Kind:
    """The kind of a config object."""
    return kind(type(cfg).kind)


def config_class(name: str) -> type:
    return kind(name).config


def make_task(cfg):
    """The task (pure training functions) of a config; validates task-level settings."""
    return kind_of(cfg).task(cfg)
