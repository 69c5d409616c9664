"""One writer per run dir: training, resuming and `mi-jax analyze` hold an exclusive lock on it.

The lock is `RUN_DIR/.lock`, taken with `filelock` (an OS file lock, `flock` on Linux), so the
kernel releases it when its holder dies, even by `kill -9`: a lock left by a killed process is
free to take over. `RUN_DIR/.lock.owner` names the holder (pid, host, what it does, since when) for
the error a second writer gets; a holder that exits normally removes it, so finding it while
taking the lock means the last holder was killed, which `run_dir_lock` reports.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import filelock

from mi_jax.config import ConfigError

LOCK, OWNER = ".lock", ".lock.owner"


class RunDirBusy(ConfigError):
    """Another process holds the run dir's lock (one line; `mi-jax` exits with code 2)."""


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, what: str):
    """Hold `run_dir`'s lock while the block runs, or raise `RunDirBusy` at once (no waiting).

    `what` says what the holder does ("training", "analysing"), for the message a second writer gets.
    The run dir must exist.
    """
    run_dir = Path(run_dir)
    lock = filelock.FileLock(str(run_dir / LOCK), thread_local=False)
    owner = run_dir / OWNER
    try:
        lock.acquire(timeout=0)
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
        lock.release()
