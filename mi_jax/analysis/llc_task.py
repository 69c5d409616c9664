"""What `mi-jax llc` measures of a run's checkpoints: the LLC, top Hessian eigenvalues and Hessian trace
of the task's own loss, as measures of ONE model that `analyze` maps over [time, member].

The loss is the task's training loss `task.loss(params, batch)` on its fixed training set
`task.llc_data(n_examples)` (leaves [example, ...]): L_n(w*) and the Hessian on all of it, SGLD minibatches
drawn from it. Parameters the run kept frozen (`task.frozen(path)`, e.g. the grokking biases held at
zero) are not parameters of the model: they are held at the checkpoint's values, so d, the LLC's
d/2 bound and the Hessian are over the trained parameters only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from mi_jax import config as config_lib
from mi_jax.analysis import hessian, llc
from mi_jax.config import ConfigError, check


@dataclasses.dataclass(frozen=True)
class LLCSettings:
    """What `mi-jax llc` computes: the LLC sampler's settings (`--set llc.epsilon=...`) and the Hessian's."""

    llc: llc.LLCConfig = llc.LLCConfig()
    hessian_k: int = 3  # top eigenvalues kept
    lanczos_steps: int = 20
    trace_probes: int = 16  # Hutchinson probes
    every: int = 1  # every n-th checkpoint (the last always kept)
    member: int | None = None  # one member of an ensemble or sweep only (None: every member)
    n_examples: int = 1024  # training-set size of tasks that sample theirs (induction)

    def __post_init__(self):
        check(self.hessian_k >= 1, f"hessian_k must be >= 1, got {self.hessian_k}")
        check(self.lanczos_steps >= self.hessian_k,
              f"lanczos_steps={self.lanczos_steps} must be >= hessian_k={self.hessian_k}")
        check(self.trace_probes >= 1, f"trace_probes must be >= 1, got {self.trace_probes}")
        check(self.every >= 1, f"every must be >= 1, got {self.every}")
        check(self.n_examples >= 1, f"n_examples must be >= 1, got {self.n_examples}")
        check(self.member is None or self.member >= 0, f"member must be >= 0, got {self.member}")


def settings_for(task, sets: dict[str, str] | None = None) -> LLCSettings:
    """The settings for `task`'s kind (the task's LLC_SETTINGS over the defaults), then `--set` assignments
    (`{"llc.epsilon": "3e-4"}`)."""
    own = config_lib.override(LLCSettings(), getattr(task, "LLC_SETTINGS", {}))
    return config_lib.override(own, sets or {})


def training_set(task, settings: LLCSettings) -> Any:
    """The task's fixed LLC training set (leaves [example, ...]); one line for a kind without one."""
    if not hasattr(task, "llc_data"):
        raise ConfigError(f"no LLC for {type(task.cfg).kind} runs: the task has no fixed training set (llc_data)")
    return task.llc_data(settings.n_examples)


def check_series_fits(series_config, params_one: dict, task) -> None:
    """One line when the series (its config, one model's params) is not a model of `task`'s loss."""
    series_kind, task_kind = type(series_config).kind, type(task.cfg).kind
    check(series_kind == task_kind,
          f"the checkpoint series is a {series_kind} run; the loss given is a {task_kind} task's")
    want = jax.eval_shape(task.init_params, jax.random.key(0))
    have_paths = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(params_one)[0]}
    for path, leaf in jax.tree_util.tree_flatten_with_path(want)[0]:
        name = jax.tree_util.keystr(path)
        check(name in have_paths, f"the checkpoint series lacks {name}, which the loss's model has")
        check(have_paths[name] == tuple(leaf.shape),
              f"the checkpoint series' {name} has shape {have_paths[name]}, the loss's model {tuple(leaf.shape)}")


def split_frozen(task, params: dict) -> tuple[dict, Callable[[dict], dict]]:
    """(the trained params as a dict {path: leaf}, trained -> the full params with the frozen leaves put back)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    trained = {jax.tree_util.keystr(p): x for p, x in leaves if not task.frozen(p)}

    def full(trained_now: dict) -> dict:
        return jax.tree_util.tree_unflatten(
            treedef, [trained_now.get(jax.tree_util.keystr(p), x) for p, x in leaves])

    return trained, full


def n_trained(task, params_one: dict) -> int:
    """d, the number of trained parameters of one model."""
    return sum(int(np.size(x)) for x in split_frozen(task, params_one)[0].values())


def llc_measure(task, cfg: llc.LLCConfig, data: Any) -> Callable:
    """A measure family: params -> `llc.sample_llc`'s dict for ONE model, its frozen leaves held;
    `data` the training set (leaves [example, ...])."""
    data = llc.checked_train_data(data, cfg)

    def family(params, _unused=None):
        trained, full = split_frozen(task, params)
        return llc.sample_llc(lambda t, batch: task.loss(full(t), batch), data, trained, cfg)

    return family


def hessian_measure(task, settings: LLCSettings, data: Any) -> Callable:
    """A measure family: params -> {hessian_top [k], hessian_trace, hessian_trace_se} of the training
    loss over the trained params of ONE model."""
    cfg = settings.llc

    def family(params, _unused=None):
        trained, full = split_frozen(task, params)
        loss = lambda t, batch: task.loss(full(t), batch)  # noqa: E731
        top = hessian.hessian_top_eigenvalues_measure(loss, data, settings.hessian_k, settings.lanczos_steps,
                                                        cfg.seed, cfg.loss_chunk_size)(trained)
        trace = hessian.hessian_trace_measure(loss, data, settings.trace_probes, cfg.seed, cfg.loss_chunk_size)(trained)
        return {"hessian_top": top, **trace}

    return family


def measures(task, settings: LLCSettings, data: Any) -> dict[str, Callable]:
    """{"llc": `llc_measure`, "hessian": `hessian_measure`}: what `mi-jax llc` maps over a run."""
    data = llc.checked_train_data(data, settings.llc)
    return {"llc": llc_measure(task, settings.llc, data), "hessian": hessian_measure(task, settings, data)}


def calibration_loss(task, params_one: dict) -> tuple[Callable, dict]:
    """(loss of the trained params, the trained params) of one checkpoint, for `llc.calibrate`."""
    trained, full = split_frozen(task, params_one)
    return (lambda t, batch: task.loss(full(t), batch)), trained
