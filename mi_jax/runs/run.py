"""Training and resuming runs: the run directory's life cycle (I/O at the edge).

    mj.train(cfg, "checkpoints/my_run")     # -> the final metrics row
    mj.resume("checkpoints/my_run")         # continue a killed run where its last state left off

Both hold the run dir's lock (`mi_jax.io.run_dir.lock`) from before the first write to the end, so
a second writer stops with one line before any compute and writes nothing. In a run of several
processes (`training.distributed`) process 0 holds the lock and writes; the others wait for it.
A full disk or a lost process stops a run with one line (`training.failures.RunStopped`) that names the
last step the run dir holds and the command that continues it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from pathlib import Path

from mi_jax import runtime
from mi_jax.config import ConfigError, check
from mi_jax.io import atomic_write
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.run_dir import LOCK, OWNER
from mi_jax.io.state import saved_step
from mi_jax.io.wandb_logger import MODES, WandbLogger
from mi_jax.runs.trajectory import load_config
from mi_jax.tasks import config_dict, make_task
from mi_jax.training import devices, distributed, failures, loop


def _writable_dir(run_dir: Path) -> Path:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output dir {run_dir} is not writable: {e.strerror or e}") from None
    return run_dir


def _check_replaceable(run_dir: Path, overwrite: bool) -> None:
    """An existing, non-empty run dir is replaced only with `overwrite`, and only if it is a run dir."""
    if run_dir.exists() and any(p.name not in (LOCK, OWNER) for p in run_dir.iterdir()):
        check(overwrite, f"run dir {run_dir} already exists (pass --overwrite to replace it, or --resume it)")
        check(run_dir_lib.is_run_dir(run_dir), f"refusing to overwrite {run_dir}: it is not a mi_jax run dir")


def empty(run_dir: Path) -> None:
    """Remove a run dir's contents except its lock files (the caller holds the lock)."""
    for path in run_dir.iterdir():
        if path.name in (LOCK, OWNER):
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def with_seeds(cfg, seeds: tuple[int, ...] | None):
    """The config trained as an ensemble of `seeds` (one seed: a solo run with that seed)."""
    if seeds is None:
        return cfg
    train = dataclasses.replace(cfg.train, seeds=tuple(seeds) if len(seeds) > 1 else None, seed=seeds[0])
    return dataclasses.replace(cfg, train=train)


def train(cfg, run_dir, *, overwrite: bool = False, wandb: str = "offline", progress: bool = True,
          members: list[dict] | None = None, group: str | None = None) -> dict:
    """Train `cfg` into a new run dir (`overwrite` replaces an existing one) -> the final metrics row.

    `wandb`: "offline" (default: logs in RUN_DIR/wandb, no account or network), "online" or "off".
    `members`, `group`: a sweep program's members (see `training.loop.Trainer`) and wandb group.
    """
    runtime.configure()
    with runtime.quiet(not progress):
        task = make_task(cfg)  # validates task-level settings before touching the disk
    check(wandb in MODES, f"--wandb must be one of {', '.join(MODES)}, got {wandb!r}")
    plan = devices.plan(task, cfg.train, members)  # the devices, once, before anything is written
    run_dir = Path(run_dir)
    _check_replaceable(run_dir, overwrite)
    with distributed.writer_lock(run_dir, "training", before=lambda: _writable_dir(run_dir)) as writer:
        if writer:
            empty(run_dir)
            run_dir_lib.write_config(run_dir, config_dict(cfg))
            for name, text in getattr(task, "run_files", dict)().items():  # e.g. a language run's tokenizer
                atomic_write(run_dir / name, text)
            if members is not None:
                run_dir_lib.write_members(run_dir, members)
        distributed.sync(f"mi_jax: made {run_dir}")
        return _go(task, run_dir, plan, resume=False, wandb=wandb, progress=progress, members=members, group=group)


def resume(run_dir, *, wandb: str = "offline", progress: bool = True) -> dict:
    """Continue a killed run from its newest good train state -> the final metrics row. The result
    is bit-identical to an uninterrupted run on the same device layout."""
    runtime.configure()
    run_dir = Path(run_dir)
    check(run_dir_lib.is_run_dir(run_dir), f"cannot resume {run_dir}: not a mi_jax run dir (no config.json)")
    check(wandb in MODES, f"--wandb must be one of {', '.join(MODES)}, got {wandb!r}")
    with distributed.writer_lock(run_dir, "training"):
        with runtime.quiet(not progress):
            task, members = make_task(load_config(run_dir)), run_dir_lib.read_members(run_dir)
        plan = devices.plan(task, task.cfg.train, members)
        return _go(task, run_dir, plan, resume=True, wandb=wandb, progress=progress, members=members)


def _go(task, run_dir: Path, plan, *, resume: bool, wandb: str, progress: bool, members=None, group=None) -> dict:
    try:
        logger = WandbLogger(run_dir, task.cfg, wandb if distributed.is_writer() else "off", members=members,
                             group=group)
        try:
            final = loop.train_task(task, run_dir, resume=resume, logger=logger, progress=progress,
                                    members=members, plan=plan)
        except BaseException:
            _finish_quietly(logger)
            raise
        logger.finish()
        distributed.sync(f"mi_jax: wrote {run_dir}")  # no process reads the run dir before process 0 has written it
    except Exception as e:  # a full disk or a lost process, here or in the loop: one line (`failures.RunStopped`)
        stopped = failures.stopped_by(e, run_dir)
        if stopped is None or stopped is e:
            raise
        raise stopped from None
    return final


def _finish_quietly(logger: WandbLogger) -> None:
    """End wandb's run while an error stops training: what the error left it (a full disk: its own log
    unwritable) is not to bury that error under its complaints."""
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        with contextlib.suppress(Exception):
            logger.finish()
    finally:
        logging.raiseExceptions = raising


def resumable(run_dir) -> bool:
    """Whether `run_dir` holds a train state to resume from."""
    return saved_step(run_dir) is not None


def default_run_dir(name: str) -> Path:
    """checkpoints/NAME under the working directory, or under $MI_JAX_OUT."""
    root = Path(os.environ.get("MI_JAX_OUT", Path.cwd() / "checkpoints"))
    return root / name
