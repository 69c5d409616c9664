"""Training and resuming runs: the run directory's life cycle (I/O at the edge).

    mj.train(cfg, "checkpoints/my_run")     # -> the final metrics row
    mj.resume("checkpoints/my_run")         # continue a killed run where its last state left off

    mj.train(cfg, "checkpoints/ft", init_from="checkpoints/my_run:500")   # fine-tune from a snapshot

Both hold the run dir's lock (`mi_jax.io.run_dir.lock`) from before the first write to the end, so
a second writer stops with one line before any compute and writes nothing. In a run of several
processes (`training.distributed`) process 0 holds the lock and writes; the others wait for it.
A full disk or a lost process stops a run with one line (`training.failures.RunStopped`) that names the
last step the run dir holds and the command that continues it.

A fine-tune starts every member from a snapshot of another run (of the same kind and params' shapes)
with a fresh optimiser state; its config.json records the lineage (`trajectory.lineage`), and its
series reads as the base's steps continued (`Trajectory.load` adds the base's step). Its own files
count its steps from 0, so that it resumes (from its own saved state) exactly as any run does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from pathlib import Path

import jax

from mi_jax import runtime
from mi_jax.config import ConfigError, check
from mi_jax.io import atomic_write
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.run_dir import LOCK, OWNER
from mi_jax.io.state import saved_step
from mi_jax.io.wandb_logger import MODES, WandbLogger
from mi_jax.runs.trajectory import INIT_FROM, Trajectory, lineage, load_config, step_offset
from mi_jax.tasks import config_dict, make_task
from mi_jax.training import devices, distributed, failures, loop
from mi_jax.trees import flatten


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
          members: list[dict] | None = None, group: str | None = None, init_from: str | Path | None = None,
          init_members: list[int] | None = None) -> dict:
    """Train `cfg` into a new run dir (`overwrite` replaces an existing one) -> the final metrics row.

    `wandb`: "offline" (default: logs in RUN_DIR/wandb, no account or network), "online" or "off".
    `members`, `group`: a sweep program's members (see `training.loop.Trainer`) and wandb group.
    `init_from`: "BASE_RUN_DIR[:STEP]", fine-tune from that run's snapshot at STEP (default its last):
    see `start_from`; the final row's step is then the base's step plus the steps trained here.
    `init_members`: which of the base's members start this run's (one for all, or one per member).
    """
    runtime.configure()
    with runtime.quiet(not progress):
        task = make_task(cfg)  # validates task-level settings before touching the disk
    check(wandb in MODES, f"--wandb must be one of {', '.join(MODES)}, got {wandb!r}")
    plan = devices.plan(task, cfg.train, members)  # the devices, once, before anything is written
    run_dir = Path(run_dir)
    _check_replaceable(run_dir, overwrite)
    n_members = len(members) if members is not None else len(cfg.train.seed_list)
    # the base's params are read (and checked) before the run dir is touched: it may be the one replaced
    check(init_members is None or init_from is not None, "--init-members needs --init-from")
    init_params, origin = (start_from(init_from, task, n_members, run_dir, init_members) if init_from is not None
                           else (None, None))
    with distributed.writer_lock(run_dir, "training", before=lambda: _writable_dir(run_dir)) as writer:
        if writer:
            empty(run_dir)
            run_dir_lib.write_config(run_dir, {**config_dict(cfg), **({INIT_FROM: origin} if origin else {})})
            for name, text in getattr(task, "run_files", dict)().items():  # e.g. a language run's tokenizer
                atomic_write(run_dir / name, text)
            if members is not None:
                run_dir_lib.write_members(run_dir, members)
        distributed.sync(f"mi_jax: made {run_dir}")
        return _go(task, run_dir, plan, resume=False, wandb=wandb, progress=progress, members=members, group=group,
                   init_params=init_params, offset=step_offset(origin))


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
        return _go(task, run_dir, plan, resume=True, wandb=wandb, progress=progress, members=members,
                   offset=step_offset(lineage(run_dir)))


def _go(task, run_dir: Path, plan, *, resume: bool, wandb: str, progress: bool, members=None, group=None,
        init_params=None, offset: int = 0) -> dict:
    try:
        logger = WandbLogger(run_dir, task.cfg, wandb if distributed.is_writer() else "off", members=members,
                             group=group)
        try:
            final = loop.train_task(task, run_dir, resume=resume, logger=logger, progress=progress,
                                    members=members, plan=plan, init_params=init_params)
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
    return {**final, "step": final["step"] + offset} if offset and "step" in final else final


def _finish_quietly(logger: WandbLogger) -> None:
    """End wandb's run while an error stops training: what the error left it (a full disk: its own log
    unwritable) is not to bury that error under its complaints."""
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        with contextlib.suppress(Exception):
            logger.finish()
    finally:
        logging.raiseExceptions = raising


def parse_init_from(text) -> tuple[Path, int | None]:
    """"RUN_DIR[:STEP]" -> (RUN_DIR, STEP or None for its last snapshot); a Path is a run dir alone."""
    if isinstance(text, Path):
        return text, None
    head, sep, tail = str(text).rpartition(":")
    if sep and head and tail.strip().isdigit():
        return Path(head), int(tail)
    return Path(str(text)), None


def start_from(init_from, task, n_members: int, run_dir: Path | None = None,
               init_members: list[int] | None = None) -> tuple[dict, dict]:
    """The params a fine-tune of `task` with `n_members` members starts from, and its lineage ->
    (params {leaf: [member, ...]} on the host, {"run", "step", "member"} as config.json records it).

    init_from: "BASE_RUN_DIR[:STEP]" (STEP one of the base's snapshot steps, default its last). A base of
    one member starts every member; a base of `n_members` starts member i from its member i.
    `init_members` chooses the base members instead: one for every member, or one for each (e.g. the
    members of one learning rate of a sweep). The base's kind and params' shapes must be this run's;
    anything else stops with one ConfigError line.
    """
    base_dir, step = parse_init_from(init_from)
    what = f"--init-from {base_dir}"
    check(run_dir_lib.is_run_dir(base_dir), f"{what}: not a mi_jax run dir (no {run_dir_lib.CONFIG})")
    check(run_dir is None or base_dir.resolve() != Path(run_dir).resolve(),
          f"{what}: a run cannot be fine-tuned from itself (give another --out)")
    base = Trajectory.load(base_dir, on_corrupt="raise", verify=False)  # the one snapshot read is checked
    kind, base_kind = type(task.cfg).kind, type(base.config).kind
    check(kind == base_kind, f"{what}: that run is of kind {base_kind}, this one of kind {kind}")
    if hasattr(task, "check_base"):  # what else the kind needs to match (a language run: the tokenizer)
        task.check_base(base_dir, what)
    check(len(base) > 0, f"{what}: the run holds no snapshot")
    steps = [int(s) for s in base.steps]
    step = steps[-1] if step is None else step
    check(step in steps, f"{what}: no snapshot at step {step} (its snapshots: {_few(steps)})")
    if init_members is not None:
        check(len(init_members) in (1, n_members), f"--init-members: {len(init_members)} members cannot start "
                                                   f"{n_members}: give one, or one per member")
        bad = next((i for i in init_members if not 0 <= i < base.n_members), None)
        check(bad is None, f"--init-members: the base has members 0-{base.n_members - 1}, not {bad}")
        source = list(init_members) * (n_members if len(init_members) == 1 else 1)
    elif base.n_members == 1:
        source = [0] * n_members
    else:
        check(base.n_members == n_members, f"{what}: {base.n_members} members cannot start {n_members}: "
                                           f"fine-tune from a run of one member or of {n_members}")
        source = list(range(n_members))
    own = flatten(jax.eval_shape(task.init_params, jax.random.key(0)))
    theirs = {name: x.shape[2:] for name, x in flatten(base.params).items()}
    for name in sorted(set(own) | set(theirs)):
        mine = tuple(own[name].shape) if name in own else None
        check(mine == (tuple(theirs[name]) if name in theirs else None),
              f"{what}: its params do not fit this config's: {name} is {_shape(theirs.get(name))} there, "
              f"{_shape(mine)} here")
    origin = {"run": str(base_dir.resolve()), "step": step, "member": source}
    return base.members_at(steps.index(step), source), origin


def _shape(shape) -> str:
    return "absent" if shape is None else f"[{', '.join(map(str, shape))}]"


def _few(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{', '.join(map(str, steps[:4]))}, ..., {steps[-1]}"


def resumable(run_dir) -> bool:
    """Whether `run_dir` holds a train state to resume from."""
    return saved_step(run_dir) is not None


def default_run_dir(name: str) -> Path:
    """checkpoints/NAME under the working directory, or under $MI_JAX_OUT."""
    root = Path(os.environ.get("MI_JAX_OUT", Path.cwd() / "checkpoints"))
    return root / name
