"""Check plain YAML values against Python type hints, with errors that name the key.

Sweep files, cell options and task options are all validated by this one function before Ray
starts, so a typo is a one-line error naming the file and the key, never a traceback from a worker.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Union


YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A sweep file, override or option is invalid. The message is one line naming the key."""


def shorten(text: str, limit: int = 100) -> str:
    """A value echoed in a one-line error, cut to `limit` characters (a 500-seed list stays readable)."""
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def describe(annotation: Any) -> str:
    """Human-readable name of a type hint (`int`, `float or null`, `one of tanh|relu`)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, dict):
        return f"{origin.__name__} of " + ", ".join(describe(a) for a in typing.get_args(annotation) if a is not Ellipsis)
    if dataclasses.is_dataclass(annotation):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` converted to `annotation` (int → float, list → tuple) or raise ConfigError."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        if len(candidates) == 1:
            return coerce(value, candidates[0], where)  # `X | None`: report X's precise error
        for candidate in candidates:
            try:
                return coerce(value, candidate, where)
            except ConfigError:
                continue
        raise _type_error(value, annotation, where)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{where}: {shorten(repr(value))} is not {describe(annotation)}{grid_hint(value, where)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(value, annotation, where)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _type_error(value, annotation, where)
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and YAML12_FLOAT.fullmatch(value):
            return float(value)  # PyYAML (YAML 1.1) reads `1e-4` as a string; YAML 1.2 and users mean a number
        raise _type_error(value, annotation, where)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(value, annotation, where)
    if annotation in (str, bool):
        if isinstance(value, annotation):
            return value
        raise _type_error(value, annotation, where)
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")  # a bug in raylab, not in the file


def _type_error(value: Any, annotation: Any, where: str) -> ConfigError:
    shown = "null" if value is None else f"{shorten(repr(value))} ({type(value).__name__})"
    return ConfigError(f"{where}: expected {describe(annotation)}, got {shown}{grid_hint(value, where)}")


def grid_hint(value: Any, where: str) -> str:
    """For a list where one value belongs: point to the grid syntax that sweeps over several values."""
    if not isinstance(value, list):
        return ""
    hint = "; to sweep over several values, list them under grid: in the sweep file"
    return hint if not where or "[" in where else f"{hint}, e.g. `grid: {{{where}: {value}}}`"


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            values[name] = coerce(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        check(where)
    return instance


def check_positive(value: float | int | None, where: str, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless `value` is None or positive (or zero when `allow_zero`)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}: must be {'non-negative' if allow_zero else 'positive'}, got {value}")
