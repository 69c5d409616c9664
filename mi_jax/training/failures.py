"""A run stopped by a failure outside it, said in one line: a full disk, a process of a multi-process
run lost. What the run dir holds is kept; the line names what failed, the last step the run dir holds
(its newest train state's) and the command that continues it, and `mi-jax` exits with code 2.

The training loop wraps each of its writes in `writing(path)`, which turns "no space left on device",
however the writer says it (an OSError, or tensorstore's and orbax's RESOURCE_EXHAUSTED texts), into a
`DiskFull` naming that path and what is left on its filesystem; `stopped_by` turns an error raised
anywhere in a run (a lost process: `distributed.lost_processes`) into its `RunStopped`, or None for
errors of other kinds. A full disk echoes through orbax's threads (absl tracebacks, asyncio's unretrieved
exceptions, writes finishing after orbax closed its event loop): `quiet_orbax` and `stopped_by` drop
those echoes, which say nothing the one line does not.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import sys
import traceback
from pathlib import Path

from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.series import read_index
from mi_jax.io.state import saved_step
from mi_jax.training import distributed


class RunStopped(RuntimeError):
    """Training stopped by a failure outside it, with what it had saved kept: one line naming the failure,
    the last step the run dir holds (`step`, the newest train state's; None: none saved) and the command
    that continues it (`mi-jax` exits with code 2). `resume`: that command (default `mi-jax train --resume
    RUN_DIR`, or none when no train state was saved: the run starts again)."""

    then = "continue with"
    again = "train it again (--overwrite)"

    def __init__(self, what: str, run_dir, step: int | None, resume: str | None = None):
        self.what, self.run_dir, self.step = what, Path(run_dir), step
        if resume is None and step is not None:
            resume = f"mi-jax train --resume {self.run_dir}"
        self.resume = resume
        if step is not None:
            held = f"{self.run_dir} holds the run up to step {step}"
        else:
            shown = _snapshot_step(self.run_dir)
            held = (f"{self.run_dir} holds no train state yet" if shown is None else
                    f"{self.run_dir} holds snapshots up to step {shown} but no train state yet")
        todo = f"{self.then} {distributed.on_every_process(resume)}" if resume else self.again
        super().__init__(f"{what}; {held}: {todo}")

    def resumed_with(self, command: str) -> "RunStopped":
        """The same stop, continued by `command` (a sweep's `mi-jax sweep --resume SWEEP_DIR`)."""
        return type(self)(self.what, self.run_dir, self.step, command)


class DiskFull(RunStopped):
    """A write found no space left on its filesystem (or the user's quota spent)."""

    then = "free some space, then continue with"
    again = "free some space, then train it again (--overwrite)"


class PeerLost(RunStopped):
    """A process of a multi-process run stopped answering (killed, its host gone)."""


def stopped_by(error: BaseException, run_dir) -> RunStopped | None:
    """The `RunStopped` that `error` means for the run in `run_dir` (a full disk, a lost process; a
    RunStopped itself), or None: an error of another kind, raised as it is."""
    if isinstance(error, RunStopped):
        return error
    if isinstance(error, _NoSpace) or _no_space(error):
        path = error.path if isinstance(error, _NoSpace) else _named_path(error) or run_dir
        _drop_echoes()
        return DiskFull(f"no space left on device writing {path} ({_filesystem(path)})", run_dir,
                        saved_step(run_dir))
    lost = distributed.lost_processes(error)
    return peer_lost(lost, run_dir) if lost else None


def peer_lost(lost: list[int], run_dir) -> PeerLost:
    """The stop of the run in `run_dir` when the processes `lost` stopped answering."""
    return PeerLost(distributed.lost_text(lost), run_dir, saved_step(run_dir))


# ENOSPC as OSError, or in the text of what tensorstore and orbax raise (ValueError: RESOURCE_EXHAUSTED ...)
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded",
                   *(f"os_error_code='{code}'" for code in _NO_SPACE_ERRNOS))


class _NoSpace(Exception):
    """A write to `path` found no space left (`writing`); `stopped_by` makes it a `DiskFull`."""

    def __init__(self, path):
        super().__init__(str(path))
        self.path = Path(path)


def _no_space(error: BaseException) -> bool:
    for e in (error, error.__cause__):
        if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
            return True
        if e is not None and any(text in str(e) for text in _NO_SPACE_TEXTS):
            return True
    return False


@contextlib.contextmanager
def writing(path):
    """A write to `path`: no space left on its filesystem (however the writer says it) is `_NoSpace(path)`."""
    try:
        yield
    except Exception as e:
        if not _no_space(e):
            raise
        raise _NoSpace(path) from None


def _named_path(error: BaseException) -> str | None:
    """The file an error names: an OSError's, or the first quoted absolute path in its text (tensorstore)."""
    if isinstance(error, OSError) and error.filename:
        return str(error.filename)
    found = re.search(r'"(/[^"]+)"', str(error))
    return found.group(1) if found else None


def _filesystem(path) -> str:
    """`filesystem /mnt: 12 KiB of 6.0 MiB free`: where `path` lives and what is left there."""
    mount = Path(os.path.abspath(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        usage = shutil.disk_usage(mount)
    except OSError:
        return f"filesystem {mount}"
    return f"filesystem {mount}: {_size(usage.free)} of {_size(usage.total)} free"


def _size(n: float) -> str:
    """`44 KiB`, `6.0 MiB`."""
    unit = 0
    while n >= 1024 and unit < 4:
        n, unit = n / 1024, unit + 1
    return f"{n:.0f} {('B', 'KiB')[unit]}" if unit < 2 else f"{n:.1f} {('MiB', 'GiB', 'TiB')[unit - 2]}"


def _snapshot_step(run_dir: Path) -> int | None:
    """The last step the snapshot index lists (None: none)."""
    try:
        return int(read_index(run_dir / run_dir_lib.SNAPSHOTS)["steps"][-1])
    except Exception:  # noqa: BLE001 - no index, an empty or unreadable one
        return None


# what orbax notes (through absl) of the partial save a failed one left, when the next save removes it
_ORBAX_NOTES = ("since it is not finalized",)


class _Quiet(logging.Filter):
    """Drops log records that echo a full disk (which `DiskFull` says in one line) and, with `notes`,
    orbax's note on removing the partial save a failure left and what its threads log of a collective
    that failed (gloo's, a process gone: the error the loop raises says it, or `PeerLost`)."""

    def __init__(self, notes: bool = False):
        super().__init__()
        self.notes = notes

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        if self.notes and (any(note in text for note in _ORBAX_NOTES) or ("Gloo" in text and "failed" in text)):
            return False
        return not any(t in text for t in _NO_SPACE_TEXTS)


@contextlib.contextmanager
def quiet_orbax():
    """While orbax saves or reads: what it logs (through absl) of a full disk and its notes (`_ORBAX_NOTES`)
    are dropped, and so are the echoes of the writes it abandons when one fails (`_abandoned_write`)."""
    logger, quiet, hook = logging.getLogger("absl"), _Quiet(notes=True), sys.unraisablehook
    logger.addFilter(quiet)
    if not getattr(hook, "drops_abandoned_writes", False):
        sys.unraisablehook = _dropping_abandoned_writes(hook)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
        if not _ECHOES_DROPPED:
            sys.unraisablehook = hook


def _abandoned_write(unraisable) -> bool:
    """Whether an unraisable error is a write orbax abandoned (one of its writes failed) finishing after
    orbax closed its event loop: tensorstore's callback then finds the loop closed."""
    return (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
            and any(frame.f_code.co_name == "call_soon_threadsafe"
                    for frame, _ in traceback.walk_tb(unraisable.exc_traceback)))


def _dropping_abandoned_writes(hook):
    def dropping(unraisable):
        if not _abandoned_write(unraisable):
            hook(unraisable)

    dropping.drops_abandoned_writes = True
    return dropping


_ECHOES_DROPPED = False


def _drop_echoes() -> None:
    """Once a `DiskFull` is raised, for good: the echoes of the full disk that come later (orbax's
    abandoned writes finishing; asyncio's "exception was never retrieved" when they are collected)."""
    global _ECHOES_DROPPED
    for name in ("asyncio", "absl"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Quiet) and not f.notes for f in logger.filters):
            logger.addFilter(_Quiet())
    if not getattr(sys.unraisablehook, "drops_abandoned_writes", False):
        sys.unraisablehook = _dropping_abandoned_writes(sys.unraisablehook)
    _ECHOES_DROPPED = True
