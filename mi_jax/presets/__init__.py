"""Named experiment presets: each `NAME.py` here (shipped with the package) defines `PRESET`, a config.

Users add their own preset files (any `NAME.py` defining `PRESET`) in folders named by
`$MI_JAX_PRESETS` (several joined with `:`) or `mi-jax --presets DIR`; those come first, so a user
file can replace a built-in preset of the same name. `mi-jax list` says where each preset comes from.

    cfg = mj.load_preset("grokking_small")
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from mi_jax.config import ConfigError

BUILT_IN = Path(__file__).resolve().parent
USER_DIRS: list[Path] = []  # folders added by `mi-jax --presets DIR` (after $MI_JAX_PRESETS)


def user_dirs() -> list[Path]:
    """The folders of user presets, in search order."""
    env = os.environ.get("MI_JAX_PRESETS", "")
    return [Path(p) for p in env.split(os.pathsep) if p] + USER_DIRS


def _names_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and "PRESET" in p.read_text())


def sources() -> dict[str, str]:
    """name -> where the preset is read from ("built-in" or a file path); the first folder wins."""
    found: dict[str, str] = {}
    for folder in user_dirs():
        for name in _names_in(folder):
            found.setdefault(name, str(folder / f"{name}.py"))
    for name in _names_in(BUILT_IN):
        found.setdefault(name, "built-in")
    return dict(sorted(found.items()))


def _module(name: str, source: str):
    if source == "built-in":
        return importlib.import_module(f"{__name__}.{name}")
    spec = importlib.util.spec_from_file_location(f"mi_jax_user_preset_{name}", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe() -> dict[str, tuple[str, str]]:
    """name -> (first line of the preset's docstring, where it comes from)."""
    out = {}
    for name, source in sources().items():
        doc = (_module(name, source).__doc__ or "").strip()
        out[name] = (doc.splitlines()[0] if doc else "", source)
    return out


def load(name: str):
    """The config object of preset `name` (see `mi-jax list`)."""
    found = sources()
    if name not in found:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(found) or 'none'}; see `mi-jax list`)")
    return _module(name, found[name]).PRESET
