"""JAX's runtime settings, in one place for every entry point: `mi-jax`, `mj.train`, `mj.resume`, `mj.sweep`
and `mj.analyze` call `configure()` before they compute. What the user (or the environment) has set
already is left as it is, and so is what JAX has already started with.

    CPU devices    one JAX CPU device per core, at most 4, for `train.data_parallel` and the split of
                   checkpoints in `analyze`. Each device's ops still use every core through XLA's shared
                   thread pool; the split lets the small ops of different devices run side by side, and
                   many devices would leave each a sliver of the batch. Only before JAX starts its backend.
    compile cache  compiled programs kept on disk, so a second run or analysis of a config already
                   compiled skips compiling: $MI_JAX_COMPILE_CACHE (`off`: none), by default
                   ~/.cache/mi_jax/xla/<cpu> ($XDG_CACHE_HOME), one folder per CPU kind since a shared
                   home may serve machines that cannot run each other's code; capped at 2 GiB, the least
                   recently used programs dropped first; programs that compile in under 0.2 s not kept.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import platform
from pathlib import Path

MAX_CPU_DEVICES = 4
CACHE_MAX_BYTES = 2 << 30
CACHE_MIN_COMPILE_S = 0.2
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("quiet", default=False)


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """While this block runs, work that shows a progress bar of its own (tokenizing a corpus) shows none:
    what `--quiet` and `progress=False` ask for."""
    token = _QUIET.set(enabled or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    return _QUIET.get()


def cpu_tag() -> str:
    """A short name for this machine's CPU (model and feature flags), for the compile cache's path."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text = "".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text = platform.processor()
    return f"{platform.machine()}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def compile_cache_dir() -> str | None:
    """Where compiled programs are kept (None: $MI_JAX_COMPILE_CACHE is `off`)."""
    path = os.environ.get("MI_JAX_COMPILE_CACHE")
    if path == "off":
        return None
    if path:
        return path
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(home / "mi_jax" / "xla" / cpu_tag())


def configure(compile_cache: bool = True) -> None:
    """Set the CPU device count and (unless `compile_cache` is False) the compile cache (see the module
    doc); idempotent."""
    import jax

    if jax.config.jax_num_cpu_devices < 0:  # not set by the user or $JAX_NUM_CPU_DEVICES
        try:
            jax.config.update("jax_num_cpu_devices", min(os.cpu_count() or 1, MAX_CPU_DEVICES))
        except RuntimeError:  # JAX has started its backend: its devices are what they are
            pass
    path = compile_cache_dir() if compile_cache else None
    if path and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
