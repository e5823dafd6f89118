"""Sweep file -> a `Sweep`: read, overridden, validated and resolved into trials (no Ray here;
`raylab.execution.runner` hands the trials to Tune). `--smoke` shrinks a sweep before it resolves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylab.planning.space import resolve_grid
from raylab.spec.config import ConfigError, SweepSpec, apply_override, parse_override, parse_sweep, read_sweep_file
from raylab.spec.rules import check_optimizer_options
from raylab.spec.yamlfile import check_plain_data
from raylab.tasks import TASKS

SMOKE_STEPS = 4  # --smoke: a few optimizer steps, evaluated twice
SMOKE_SUFFIX = "-smoke"  # --smoke runs go to <storage>/<name>-smoke
SMOKE_HIDDEN = 16  # --smoke: hidden units of every model (even, a power of two: valid for every cell)


@dataclass(frozen=True)
class Sweep:
    path: Path
    spec: SweepSpec
    trials: list[dict]
    raw: dict  # the file's data after overrides, stored with every experiment


def smoke_data(data: dict) -> dict:
    """The sweep shrunk for CI and for trying a file out: one seed, a few steps, small data, small models.

    Each task shrinks its data with its `smoke_options`; every model gets SMOKE_HIDDEN units (a budget
    is dropped), so that 1024-unit PTB models smoke-run in seconds. The real sizes are resolved and
    built whenever the file is loaded without --smoke (`raylab validate FILE`).
    """
    data = copy.deepcopy(data)
    if isinstance(data.get("name"), str):
        data["name"] = f"{data['name']}{SMOKE_SUFFIX}"  # its own folder: smoke rows never join the real sweep's tables
    data["seeds"] = list(data.get("seeds") or [0])[:1]
    data["training"] = {"steps": SMOKE_STEPS, "eval_every": SMOKE_STEPS // 2}
    if data.get("hidden_sizes") is not None or data.get("budget") is not None:
        data["hidden_sizes"] = [SMOKE_HIDDEN]
        data.pop("budget", None)
    for variant in data.get("variants") or []:
        if isinstance(variant, dict) and variant.get("hidden_sizes") is not None:
            variant["hidden_sizes"] = [SMOKE_HIDDEN]
    if "task" in data:
        data["task"] = smoke_task(data["task"])
    mlflow = data.get("mlflow")
    if isinstance(mlflow, dict) and isinstance(mlflow.get("experiment_name"), str):
        mlflow["experiment_name"] += SMOKE_SUFFIX  # a named experiment too: smoke runs never join the real sweep's
    return data


def smoke_task(spec: Any) -> Any:
    """A task spec (or list of them) with its task's `smoke_options` applied: smaller data sets."""
    if isinstance(spec, list):
        shrunk = [smoke_task(item) for item in spec]
        return [item for i, item in enumerate(shrunk) if item not in shrunk[:i]]  # e.g. two bptt made equal
    if isinstance(spec, dict) and spec.get("name") in TASKS:
        return {**spec, **getattr(TASKS[spec["name"]], "smoke_options", {})}
    return spec  # a bad spec fails validation later, with the usual message


def load_sweep(path: str | Path, overrides: list[str] = (), smoke: bool = False, text: str | None = None, loggers: list[str] = ()) -> Sweep:
    """Read, override, validate and resolve a sweep file. Every error names the file and the key.

    With `text`, the file's contents are that text (`raylab best` checks a file before writing it).
    `loggers` (`raylab run --logger NAME`) join the file's `loggers:`; one listed in both is kept once."""
    path = Path(path)
    try:
        data = read_sweep_file(path, text)
        for text in overrides:
            keys, value = parse_override(text)
            apply_override(data, keys, value, text)
        if loggers:
            listed = data.get("loggers") or []
            if isinstance(listed, list):  # anything else fails validation below with the usual message
                data["loggers"] = [*listed, *(name for name in dict.fromkeys(loggers) if name not in listed)]
        check_plain_data(data)  # again: an override may bring a NaN
        if smoke:
            data = smoke_data(data)
        spec = parse_sweep(data)
        check_optimizer_options(data)
        trials = resolve_grid(spec)  # resolve_trials, times the `grid:` axes; checks a `search:` space
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None
    return Sweep(path=path, spec=spec, trials=trials, raw=data)


def trial_name(trial: dict) -> str:
    """Short readable name for progress lines and trial directories: `lstm-h32-s0`, `lstm-bptt_300-h32-s0`."""
    label = "-".join(filter(None, (trial["variant"], trial.get("task_label"), trial.get("grid_label"), trial.get("search_label"))))
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return f"{label}-h{trial['hidden_size']}-s{trial['seed']}"
