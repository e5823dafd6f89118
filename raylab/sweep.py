"""Sweep file -> a validated list of resolved trials (no Ray here; `runner.py` hands them to Tune).

A resolved trial is a plain dict that carries everything the trainable needs, so the Parquet rows,
the dedup hash and the Tune config all come from one place:

    {"variant": "RNN-orth", "task": {...}, "cell": {...}, "optimizer": {...}, "training": {...},
     "hidden_size": 128, "seed": 0, "n_params": 19081, "config_hash": "3f2a..."}
"""

from __future__ import annotations

import copy
import hashlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylab.budget import model_counter, solve_hidden_size
from raylab.cells import CELLS, INJECTED_CELL_ARGS
from raylab.checks import (
    check_distinct_trials,
    check_hidden_size,
    check_model_size,
    check_optimizer_options,
    check_plain_data,
    check_variant_labels,
)
from raylab.config import (
    ConfigError,
    SweepSpec,
    VariantSpec,
    apply_override,
    dump,
    merged_optimizer,
    parse_override,
    parse_sweep,
    read_sweep_file,
)
from raylab.model import build_model, check_cell_spec, count_parameters, on_meta_device
from raylab.registry import build, check_options, with_defaults
from raylab.space import resolve_grid
from raylab.tasks import TASKS
from raylab.tasks.protocol import Task

SMOKE_STEPS = 4  # --smoke: a few optimizer steps, evaluated twice
SMOKE_SUFFIX = "-smoke"  # --smoke runs go to <storage>/<name>-smoke
SMOKE_HIDDEN = 16  # --smoke: hidden units of every model (even, a power of two: valid for every cell)


@dataclass(frozen=True)
class Sweep:
    path: Path
    spec: SweepSpec
    trials: list[dict]
    raw: dict  # the file's data after overrides, stored with every experiment


def config_hash(trial: dict) -> str:
    """Identity of a trial for dedup across runs: everything that changes what is computed.

    The task and cell specs of a resolved trial hold every constructor default (`with_defaults`), and
    optimizer and training are complete dataclasses, so the hash is over what is built, not over
    what was typed (docs/identity.md). The variant label is left out on purpose, so renaming a table
    row does not re-run anything.
    """
    keys = ("task", "cell", "optimizer", "training", "hidden_size", "seed")
    canonical = json.dumps({k: trial[k] for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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
    return data


def smoke_task(spec: Any) -> Any:
    """A task spec (or list of them) with its task's `smoke_options` applied: smaller data sets."""
    if isinstance(spec, list):
        shrunk = [smoke_task(item) for item in spec]
        return [item for i, item in enumerate(shrunk) if item not in shrunk[:i]]  # e.g. two bptt made equal
    if isinstance(spec, dict) and spec.get("name") in TASKS:
        return {**spec, **getattr(TASKS[spec["name"]], "smoke_options", {})}
    return spec  # a bad spec fails validation later, with the usual message


def load_sweep(path: str | Path, overrides: list[str] = (), smoke: bool = False) -> Sweep:
    """Read, override, validate and resolve a sweep file. Every error names the file and the key."""
    path = Path(path)
    try:
        data = read_sweep_file(path)
        for text in overrides:
            keys, value = parse_override(text)
            apply_override(data, keys, value, text)
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


def resolve_trials(spec: SweepSpec) -> list[dict]:
    """Check every cell, task and optimizer, build each model once, and expand the grid."""
    check_variant_labels(spec)
    wheres = ["task"] if isinstance(spec.task, dict) else [f"task[{i}]" for i in range(len(spec.task))]
    task_specs = [check_options(TASKS, raw, where) for raw, where in zip(spec.task_specs(), wheres)]
    trials = []
    for task_spec, where in zip(task_specs, wheres):
        trials += resolve_task_trials(spec, task_spec, where, task_label(task_spec, task_specs))
    check_distinct_trials(trials)
    return trials


def task_label(task_spec: dict, task_specs: list[dict]) -> str:
    """The options that tell this task spec from the sweep's others (`bptt=300`); "" for one task."""
    keys = sorted({k for s in task_specs for k in s if any(s.get(k) != other.get(k) for other in task_specs)})
    return ",".join(f"{k}={task_spec.get(k)}" for k in keys)


def resolve_task_trials(spec: SweepSpec, task_spec: dict, where: str, label: str) -> list[dict]:
    """The grid variants x hidden sizes x seeds of one task spec."""
    task = build(TASKS, task_spec, where)
    if task_spec["name"] not in TASKS and not isinstance(task, Task):
        missing = sorted(m for m in typing._get_protocol_attrs(Task) if not hasattr(task, m))
        raise ConfigError(f"{where}.name: {task_spec['name']} does not follow raylab.tasks.protocol.Task (missing: {', '.join(missing)})")
    if spec.training.epochs is not None and task.steps_per_epoch is None:
        raise ConfigError(f"training.epochs: task {task_spec['name']!r} has fresh data every step; use training.steps")
    trials = []
    for index, variant in enumerate(spec.variants):
        where = f"variants[{index}].cell"
        cell_spec = check_cell_spec(variant.cell, where)
        optimizer = merged_optimizer(spec, index)
        for hidden_size, budget in sized_grid(spec, variant, task, cell_spec, where):
            check_hidden_size(hidden_size, where)
            with on_meta_device():  # counted without allocating: a 40000-unit LSTM costs what a 16-unit one does
                n_params = count_parameters(build_model(task, cell_spec, hidden_size, where))
            check_model_size(n_params, hidden_size, where)
            for seed in spec.seeds:
                trial = {
                    "variant": spec.variant_label(index),
                    "task": dump(with_defaults(TASKS, task_spec)),
                    "cell": dump(with_defaults(CELLS, cell_spec, INJECTED_CELL_ARGS)),
                    "optimizer": dump(optimizer),
                    "training": dump(spec.training),
                    "hidden_size": hidden_size,
                    "seed": seed,
                    "n_params": n_params,
                    "budget": budget,  # the target n_params when the size was solved for, else None
                }
                if label:
                    trial["task_label"] = label  # display only, like the variant label
                trial["config_hash"] = config_hash(trial)
                trials.append(trial)
    return trials


def sized_grid(spec: SweepSpec, variant: VariantSpec, task: Any, cell_spec: dict, where: str) -> list[tuple[int, int | None]]:
    """(hidden size, budget) pairs of one variant: its own sizes, the sweep's, or one per budget."""
    if variant.hidden_sizes is not None:
        return [(size, None) for size in variant.hidden_sizes]
    if spec.budget is None:
        return [(size, None) for size in spec.hidden_sizes]
    count = model_counter(task, cell_spec, where)
    try:
        return [(solve_hidden_size(count, target, spec.budget.rounding), target) for target in spec.budget.targets()]
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def trial_name(trial: dict) -> str:
    """Short readable name for progress lines and trial directories: `lstm-h32-s0`, `lstm-bptt_300-h32-s0`."""
    label = "-".join(filter(None, (trial["variant"], trial.get("task_label"), trial.get("grid_label"), trial.get("search_label"))))
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return f"{label}-h{trial['hidden_size']}-s{trial['seed']}"
