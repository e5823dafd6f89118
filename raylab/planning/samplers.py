"""`search.algorithm: optuna`: the Optuna sampler a sweep file names, and `search.space` as Optuna
distributions (no Ray here; `raylab.execution.search` runs one study per slot).

    search:
      algorithm: optuna
      sampler: {name: tpe, n_startup_trials: 4}   # null: TPE with Optuna's defaults
      max_concurrent: 4                           # samples of one slot in flight at once

A sampler option is any constructor argument of the sampler class that takes a plain value (a
number, a boolean, a string); `seed` is raylab's (each slot's study is seeded from the sweep's seed
and the slot, so one sweep file draws the same samples), and arguments that take Python objects
(TPE's `gamma`, `weights`, `constraints_func`) cannot be written in YAML. Options are checked by
building the sampler before Ray starts.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

from raylab.spec.typecheck import ConfigError

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler"}  # `sampler.name` -> optuna.samplers class
DEFAULT_SAMPLER = "tpe"
NOT_FROM_YAML = ("Callable", "Sampler", "ndarray")  # annotations of arguments that take Python objects
SCALARS = (bool, int, float, str)


def optuna_module() -> Any:
    """Optuna, an optional dependency: imported only for a search that names it."""
    try:
        return importlib.import_module("optuna")
    except ImportError:
        raise ConfigError("search.algorithm: optuna needs the optuna package: pip install -e '.[optuna]'") from None


def settable_options(name: str) -> dict[str, tuple[Any, str]]:
    """The options of a sampler a sweep file may set: name -> (the installed Optuna's default, its annotation)."""
    factory = getattr(optuna_module().samplers, SAMPLERS[name])
    options = {}
    for parameter in inspect.signature(factory).parameters.values():
        annotation = str(parameter.annotation)
        if parameter.name == "seed" or any(word in annotation for word in NOT_FROM_YAML) or parameter.kind is parameter.VAR_KEYWORD:
            continue
        options[parameter.name] = (parameter.default, annotation)
    return options


def expected_type(value: Any, annotation: str) -> str | None:
    """What the annotation (`int`, `bool | None`, `float | None`, `str`) asks for, when `value` is not that; else None."""
    if value is None:
        return None if "None" in annotation else annotation
    if isinstance(value, bool):
        return None if "bool" in annotation else annotation
    if isinstance(value, int):
        return None if "int" in annotation or "float" in annotation else annotation
    if isinstance(value, float):
        return None if "float" in annotation else annotation
    return None if "str" in annotation else annotation


def resolve_sampler(sampler: dict | None, where: str = "search.sampler") -> dict:
    """`{name: tpe, n_startup_trials: 4}` -> the sampler with every settable default written out, so
    that leaving an option out and writing its default are one search (docs/identity.md). The sampler
    is built once with these options: a value Optuna refuses is one line here, before Ray starts."""
    sampler = dict(sampler or {})
    name = sampler.pop("name", DEFAULT_SAMPLER)
    if name not in SAMPLERS:
        raise ConfigError(f"{where}.name: {name!r} is not one of {', '.join(SAMPLERS)}")
    options = settable_options(name)
    for key, value in sampler.items():
        if key == "seed":
            raise ConfigError(f"{where}.seed: raylab seeds each slot's study from the sweep's seeds: and the slot; leave it out")
        if key not in options:
            raise ConfigError(f"{where}.{key}: not an option of the {name} sampler (options: {', '.join(options) or 'none'})")
        default, annotation = options[key]
        if not isinstance(value, SCALARS) and value is not None or expected_type(value, annotation):
            raise ConfigError(f"{where}.{key}: expected {annotation} (default {default!r}), got {value!r}")
    resolved = {"name": name, **{key: default for key, (default, _) in options.items()}, **sampler}
    try:
        make_sampler(resolved, seed=0)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: the {name} sampler refuses these options: {error}") from None
    return resolved


def make_sampler(sampler: dict, seed: int) -> Any:
    options = {key: value for key, value in sampler.items() if key != "name"}
    return getattr(optuna_module().samplers, SAMPLERS[sampler["name"]])(seed=seed, **options)


def distributions(parsed: dict[str, tuple[str, list]]) -> dict[str, Any]:
    """`search.space`, parsed (`raylab.planning.space.parse_domain`), as Optuna distributions:
    loguniform is a log-scaled float, randint includes both bounds as written."""
    optuna = optuna_module()
    result = {}
    for key, (kind, args) in parsed.items():
        if kind == "choice":
            bad = [value for value in args if value is not None and not isinstance(value, SCALARS)]
            if bad:
                raise ConfigError(f"search.space.{key}.choice: Optuna draws numbers, strings, booleans or null, got {bad[0]!r}")
            result[key] = optuna.distributions.CategoricalDistribution(args)
        elif kind == "randint":
            result[key] = optuna.distributions.IntDistribution(args[0], args[1])
        else:
            result[key] = optuna.distributions.FloatDistribution(args[0], args[1], log=kind == "loguniform")
    return result


def study_seed(sweep_seed: int, slot: str) -> int:
    """The seed of one slot's study: the sweep's seed and the slot's hash, so slots draw independently
    and the same sweep file draws the same first samples."""
    return int.from_bytes(hashlib.sha256(f"{sweep_seed}:{slot}".encode()).digest()[:4], "big")
