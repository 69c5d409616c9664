"""The run directory: its layout, config.json, the metrics, the member table and the lock.

    RUN_DIR/config.json        the experiment config (kind + fields; `mi_jax.tasks` turns it into the
                               config object)
    RUN_DIR/metrics.jsonl      one JSON row per evaluation: {"step": s, "train_loss": x or [x per member], ...}
    RUN_DIR/snapshots/         the parameter series, [time, member, ...] (`mi_jax.io.series`)
    RUN_DIR/state/             the latest resumable train state (`mi_jax.io.state`)
    RUN_DIR/members.json       the members of a sweep program: one dict of settings each (a solo run or a
                               seed ensemble has none: its config's seeds are its members)
    RUN_DIR/analysis/          what `mi-jax analyze` and `mi-jax llc` write (`mi_jax.io.results`)
    RUN_DIR/.lock              held by the one process that writes the run dir (`lock`), and
    RUN_DIR/.lock.owner        who holds it

The member table: one small dict of settings per model trained in the run. A solo run has one
member, a seed ensemble one per seed (`{"seed": 3}`), a sweep program one per point of its grid and
seed (`{"train.lr": 0.001, "seed": 0}`: dotted config keys, and the seed); every series a run writes
has a [member] axis in this order.

The lock is taken with `filelock` (an OS file lock, `flock` on Linux), so the kernel releases it when
its holder dies, even by `kill -9`: a lock left by a killed process is free to take over. A holder that
exits normally removes `.lock.owner`, so finding it while taking the lock means the last holder was
killed, which `lock` reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

import filelock
import numpy as np

from mi_jax.config import ConfigError, override
from mi_jax.io import CheckpointError, atomic_write

CONFIG, METRICS, MEMBERS, SNAPSHOTS, STATE, ANALYSIS = (
    "config.json", "metrics.jsonl", "members.json", "snapshots", "state", "analysis")
LOCK, OWNER = ".lock", ".lock.owner"


def is_run_dir(path) -> bool:
    return (Path(path) / CONFIG).exists()


def read_config(run_dir: Path) -> dict:
    """config.json as a dict (one CheckpointError line when missing or unreadable)."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a mi_jax run dir (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read config {path}: {e}") from None


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write(Path(run_dir) / CONFIG, json.dumps(config, indent=2))


# ----------------------------------------------------------------------------- metrics


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()


def read_metrics(run_dir: Path, upto_step: int | None = None) -> list[dict]:
    """The metric rows in step order, one per step: where a step appears twice the last row wins
    (a file written before runs had one writer may repeat steps). A line cut by a crash ends the file."""
    path = Path(run_dir) / METRICS
    by_step: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if upto_step is None or row["step"] <= upto_step:
                by_step[row["step"]] = row
    return [by_step[step] for step in sorted(by_step)]


def truncate_metrics(run_dir: Path, upto_step: int) -> None:
    rows = read_metrics(run_dir, upto_step)
    atomic_write(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def metrics_arrays(rows: list[dict], solo: bool) -> dict[str, np.ndarray]:
    """Rows -> {"step": [n], name: [n, member, ...]}. A solo run's rows hold one model's values
    (no member axis in the file); `solo` gives them a member axis of 1. A name missing from some rows
    (the training loss, which the evaluation at step 0 has none of) is NaN there."""
    if not rows:
        return {"step": np.zeros((0,), np.int64)}

    def column(name):
        if all(name in r for r in rows):
            return np.asarray([r[name] for r in rows])
        missing = np.full(np.shape(next(r[name] for r in rows if name in r)), np.nan)
        return np.asarray([r.get(name, missing) for r in rows], float)

    out = {k: column(k) for k in dict.fromkeys(k for r in rows for k in r)}
    if solo:
        out = {k: v if k == "step" else v[:, None] for k, v in out.items()}
    return out


# ----------------------------------------------------------------------------- members


def write_members(run_dir: Path, members: list[dict]) -> None:
    atomic_write(Path(run_dir) / MEMBERS, json.dumps(members, indent=1))


def read_members(run_dir: Path) -> list[dict] | None:
    """The members a sweep program's run dir lists, or None for a run without members.json."""
    path = Path(run_dir) / MEMBERS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt member table {path}: {e}") from None


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


def is_solo(member_table, cfg) -> bool:
    """Whether a run dir holds one model trained alone: its metric rows carry no member axis, nor do its
    snapshot files if written before runs had one."""
    return member_table is None and not cfg.train.ensemble


# ----------------------------------------------------------------------------- the lock


class RunDirBusy(ConfigError):
    """Another process holds the run dir's lock (one line; `mi-jax` exits with code 2)."""


@contextlib.contextmanager
def lock(run_dir: Path, what: str):
    """Hold `run_dir`'s lock while the block runs, or raise `RunDirBusy` at once (no waiting).

    `what` says what the holder does ("training", "analysing"), for the message a second writer gets.
    The run dir must exist.
    """
    run_dir = Path(run_dir)
    held = filelock.FileLock(str(run_dir / LOCK), thread_local=False)
    owner = run_dir / OWNER
    try:
        held.acquire(timeout=0)
    except filelock.Timeout:
        holder = owner.read_text().strip() if owner.exists() else "another process"
        raise RunDirBusy(f"run dir {run_dir} is in use ({holder}); wait for it to finish or stop it") from None
    try:
        if owner.exists():
            print(f"mi-jax: taking over the lock of {run_dir} left by a process that was killed "
                  f"({owner.read_text().strip()})", file=sys.stderr)
        owner.write_text(f"{what} by pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        held.release()
