"""`build(table, spec)`: the one indirection from a name in a sweep file to a class.

A spec is a mapping `{name: <registered name>, <option>: <value>, ...}`; the name may also be an
import path, `"mypkg.cells:GatedIndRNN"`, for a class that lives outside raylab (`raylab.spec.userimport`).
Options are constructor arguments: they are bound against the constructor's signature and type-checked against its hints
before anything is built, so a bad option fails with one line that lists the valid choices.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from raylab.spec.typecheck import ConfigError, coerce
from raylab.spec.userimport import import_object, is_import_path


def split_spec(table: Mapping[str, Callable], spec: Any, where: str) -> tuple[str, dict]:
    """Return (name, options) of a spec, checking that the name is registered."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {type(spec).__name__}")
    options = dict(spec)
    name = options.pop("name", None)
    if name is None:
        raise ConfigError(f"{where}.name: required key is missing (valid names: {', '.join(table)})")
    if name not in table and not is_import_path(name):
        raise ConfigError(f"{where}.name: unknown name {name!r} (valid names: {', '.join(table)}, or an import path module:Class)")
    return name, options


def lookup(table: Mapping[str, Callable], name: str, where: str) -> Callable:
    """The registered class, or the class an import path names (imported on first use)."""
    return table[name] if name in table else import_object(name, f"{where}.name")


def check_options(table: Mapping[str, Callable], spec: Any, where: str, injected: tuple[str, ...] = ()) -> dict:
    """Validate a spec against the constructor; return the options coerced to their types.

    `injected` names constructor arguments that raylab supplies itself (e.g. `input_size`), which a
    sweep file may not set.
    """
    name, options = split_spec(table, spec, where)
    factory = lookup(table, name, where)
    signature = inspect.signature(factory)
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception as error:  # a user class whose hints do not resolve
        raise ConfigError(f"{where}.name: {name}: type hints of its constructor do not resolve ({error})") from None
    settable = [p for p in signature.parameters if p not in injected and p != "self"]
    coerced = {}
    for key, value in options.items():
        if key not in settable:
            raise ConfigError(f"{where}.{key}: unknown option for {name!r} (valid options: {', '.join(settable) or 'none'})")
        coerced[key] = coerce(value, hints.get(key, Any), f"{where}.{key}")
    required = [p.name for p in signature.parameters.values() if p.name in settable and p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in coerced]
    if required:
        raise ConfigError(f"{where}.{required[0]}: required option of {name!r} is missing")
    return {"name": name, **coerced}


def with_defaults(table: Mapping[str, Callable], checked: dict, injected: tuple[str, ...] = ()) -> dict:
    """A checked spec with every constructor default written out: what is built, not what was typed.

    Trial identity (`planning.trials.config_hash`) and the Parquet config columns use this form, so a default
    that changes in raylab changes the identity, and writing a default out explicitly does not.
    """
    name = checked["name"]
    parameters = inspect.signature(lookup(table, name, "spec")).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.name not in injected and p.name != "self" and p.default is not inspect.Parameter.empty}
    return {"name": name, **defaults, **{k: v for k, v in checked.items() if k != "name"}}


def build(table: Mapping[str, Callable], spec: Any, where: str = "spec", **injected: Any) -> Any:
    """Construct `table[spec.name](**injected, **options)`; constructor ValueErrors become ConfigErrors."""
    checked = check_options(table, spec, where, tuple(injected))
    name = checked.pop("name")
    try:
        return lookup(table, name, where)(**injected, **checked)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {name}: {error}") from None


def describe_entries(table: Mapping[str, Callable], injected: tuple[str, ...] = ()) -> list[tuple[str, str, list[str]]]:
    """(name, one-line description, one `option: allowed values = default` per option) for `raylab ls`."""
    rows = []
    for name, factory in table.items():
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
        options = [
            describe_option(p.name, hints.get(p.name, Any), p.default)
            for p in inspect.signature(factory).parameters.values()
            if p.name not in injected and p.name != "self"
        ]
        rows.append((name, doc[0] if doc else "", options))
    return rows


def allowed_values(annotation: Any) -> str:
    """`code|paper` for a Literal, `true|false`, `float|null`, or the type's name."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return "|".join("null" if a is type(None) else allowed_values(a) for a in typing.get_args(annotation))
    if annotation is bool:
        return "true|false"
    if origin in (list, tuple):
        return "list of " + "|".join(allowed_values(a) for a in dict.fromkeys(typing.get_args(annotation)) if a is not Ellipsis)
    return getattr(annotation, "__name__", str(annotation))


def describe_option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> str:
    """`t_mask: code|paper = code`, written as a sweep file writes values (`true`, `null`)."""
    if default is inspect.Parameter.empty:
        return f"{name}: {allowed_values(annotation)} (required)"
    shown = {True: "true", False: "false", None: "null"}.get(default, default) if isinstance(default, (bool, type(None))) else default
    return f"{name}: {allowed_values(annotation)} = {list(shown) if isinstance(shown, tuple) else shown}"
