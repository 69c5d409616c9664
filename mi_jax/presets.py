"""Named experiment presets: each `experiments/NAME.py` that defines `PRESET` (a config object).

The folder is the repository's `experiments/` (or `$MI_JAX_EXPERIMENTS`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mi_jax.config import ConfigError


def experiments_dir() -> Path:
    env = os.environ.get("MI_JAX_EXPERIMENTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "experiments"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"mi_jax_preset_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preset_names() -> list[str]:
    return sorted(
        p.stem for p in experiments_dir().glob("*.py") if not p.stem.startswith("_") and "PRESET" in p.read_text()
    )


def describe() -> dict[str, str]:
    """name -> first line of the preset file's docstring."""
    out = {}
    for name in preset_names():
        doc = (_module(experiments_dir() / f"{name}.py").__doc__ or "").strip()
        out[name] = doc.splitlines()[0] if doc else ""
    return out


def load(name: str):
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(names) or 'none'}; see `mi-jax list`)")
    return _module(experiments_dir() / f"{name}.py").PRESET
