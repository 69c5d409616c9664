"""The optimiser: AdamW with a linear warm-up, leaving a task's frozen parameters alone."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from mi_jax.training.config import TrainConfig

# the TrainConfig fields in which the members of one compiled program may differ (as [member] arrays)
HYPERPARAMETERS = ("lr", "weight_decay", "beta1", "beta2", "warmup_steps")
TRAIN_KEYS = tuple(f"train.{name}" for name in HYPERPARAMETERS)


def make_optimizer(h, params, frozen: Callable[[tuple], bool] | None, warm_up: bool) -> optax.GradientTransformation:
    """AdamW with linear warm-up (lr at step s: lr * min(s / warmup_steps, 1)); parameters for which
    `frozen(path)` holds are never updated. h: the HYPERPARAMETERS by name (a TrainConfig, or one
    member's traced values); `warm_up`: whether any member warms up (the state then counts steps)."""
    h = {name: getattr(h, name) for name in HYPERPARAMETERS} if isinstance(h, TrainConfig) else h
    if warm_up:
        lr, warmup = h["lr"], h["warmup_steps"]
        schedule = lambda count: lr * jnp.where(warmup > 0, jnp.minimum(count / jnp.maximum(warmup, 1), 1.0), 1.0)  # noqa: E731
    else:
        schedule = h["lr"]
    adamw = optax.adamw(schedule, b1=h["beta1"], b2=h["beta2"], weight_decay=h["weight_decay"])
    labels = jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if frozen and frozen(p) else "train", params)
    if "frozen" not in jax.tree.leaves(labels):
        return adamw
    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)
