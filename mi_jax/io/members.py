"""The member table of a run: one small dict of settings per model trained in it.

A solo run has one member, a seed ensemble one per seed (`{"seed": 3}`), a sweep program one per
point of its grid and seed (`{"train.lr": 0.001, "seed": 0}`: dotted config keys, and the seed);
every series a run writes has a [member] axis in this order.
"""

from __future__ import annotations

import dataclasses

from mi_jax.config import override


def members_of(cfg) -> tuple[dict, ...]:
    """The member table of a run's config without a member table of its own: one {"seed": s} per seed."""
    return tuple({"seed": seed} for seed in cfg.train.seed_list)


def member_config(cfg, member: dict):
    """The config of one member: the run's config with that member's settings, trained alone."""
    settings = {key: value for key, value in member.items() if key != "seed"}
    cfg = override(cfg, settings) if settings else cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=member["seed"], seeds=None))


def member_label(member: dict) -> str:
    """`seed 3`: how figures and summaries name a member."""
    return ", ".join(f"{key} {value}" for key, value in member.items())


def member_key(member: dict) -> str:
    """`seed3`: a member's name in file names and wandb keys."""
    return "_".join(f"{key.split('.')[-1]}{value}" for key, value in member.items())
