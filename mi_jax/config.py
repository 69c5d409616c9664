"""Typed, validated experiment configs.

Every experiment kind has one frozen dataclass (e.g. `GrokkingConfig`), checked in
`__post_init__` so a bad value fails at construction with one clear line
(`ConfigError`). Configs nest (`cfg.model.d_model`, `cfg.train.lr`); overrides
from the command line use dotted keys (`--set train.lr=3e-4`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A config value is invalid; the message is one line a user can act on."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_name(name: str, names, what: str, where: str = "") -> str:
    """`name` if it is one of `names`, else one ConfigError line naming the nearest:
    "unknown {what} 'name'{where} (did you mean 'nearest'?)"."""
    names = list(names)
    if name in names:
        return name
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.0)
    raise ConfigError(f"unknown {what} {name!r}{where}" + (f" (did you mean {near[0]!r}?)" if near else ""))


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (a parsed JSON value or a raw string) to type `tp`, or fail clearly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be None")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a comma-separated list, got {value!r}")
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, key) for v in value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section of settings, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a (possibly nested) dict, rejecting unknown keys."""
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names - {"kind", "kind_source"})  # what config.json adds about the kind
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} (known: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items() if k in names}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    kind = getattr(type(cfg), "kind", None)
    if kind is not None:
        out = {"kind": kind, **out}
    return out


def override(cfg, assignments: dict[str, str]):
    """Return `cfg` with dotted-key string assignments applied (`{"train.lr": "3e-4"}`)."""
    data = to_dict(cfg)
    for dotted, raw in assignments.items():
        parts = dotted.split(".")
        node, cls = data, type(cfg)
        for i, part in enumerate(parts):
            types_ = _field_types(cls)
            if part not in types_ or part == "kind":
                where = ".".join(parts[:i]) or "the config"
                known = ", ".join(sorted(k for k in types_ if k != "kind"))
                raise ConfigError(f"unknown config key {dotted!r} ({where} has: {known})")
            tp = types_[part]
            if i == len(parts) - 1:
                node[part] = _coerce(raw, tp, dotted)
            else:
                sub = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
                cls = sub[0] if sub else tp
                if not dataclasses.is_dataclass(cls):
                    raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} has no sub-keys")
                node = node[part]
    return from_dict(type(cfg), data)


def dumps(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2)
