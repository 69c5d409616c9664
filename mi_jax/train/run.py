"""Starting and resuming runs: the run directory's life cycle (I/O at the edge)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from mi_jax import config as config_lib
from mi_jax.config import ConfigError, check
from mi_jax.tasks import make_task
from mi_jax.train import loop, store
from mi_jax.train.logger import WandbLogger
from mi_jax.train.trajectory import load_config


def prepare_run_dir(run_dir: Path, overwrite: bool) -> Path:
    """Create an empty run dir, or fail with one line before any compute."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        check(overwrite, f"run dir {run_dir} already exists (pass --overwrite to replace it, or --resume it)")
        check((run_dir / store.CONFIG).exists(), f"refusing to overwrite {run_dir}: it is not a mi_jax run dir")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output dir {run_dir} is not writable: {e.strerror or e}") from None
    return run_dir


def with_seeds(cfg, seeds: tuple[int, ...] | None):
    if seeds is None:
        return cfg
    train = dataclasses.replace(cfg.train, seeds=tuple(seeds) if len(seeds) > 1 else None, seed=seeds[0])
    return dataclasses.replace(cfg, train=train)


def start(cfg, run_dir: Path, *, overwrite: bool = False, wandb: str = "offline", progress: bool = True) -> dict:
    task = make_task(cfg)  # validates task-level settings before touching the disk
    if wandb not in ("offline", "online", "off"):
        raise ConfigError(f"--wandb must be offline, online or off, got {wandb!r}")
    run_dir = prepare_run_dir(run_dir, overwrite)
    (run_dir / store.CONFIG).write_text(config_lib.dumps(cfg))
    return _go(task, run_dir, resume=False, wandb=wandb, progress=progress)


def resume(run_dir: Path, *, wandb: str = "offline", progress: bool = True) -> dict:
    run_dir = Path(run_dir)
    check((run_dir / store.CONFIG).exists(), f"cannot resume {run_dir}: not a mi_jax run dir (no config.json)")
    task = make_task(load_config(run_dir / store.CONFIG))
    return _go(task, run_dir, resume=True, wandb=wandb, progress=progress)


def _go(task, run_dir: Path, *, resume: bool, wandb: str, progress: bool) -> dict:
    logger = WandbLogger(run_dir, task.cfg, wandb)
    try:
        return loop.train(task, run_dir, resume=resume, logger=logger, progress=progress)
    finally:
        logger.finish()


def default_run_dir(name: str) -> Path:
    root = Path(os.environ.get("MI_JAX_OUT", Path.cwd() / "checkpoints"))
    return root / name
