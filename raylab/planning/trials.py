"""Resolved trials: every cell, task and optimizer checked, each model built once on the meta device,
and the grid variants x hidden sizes x seeds expanded, each trial with its identity (`config_hash`).

A resolved trial is a plain dict that carries everything the trainable needs, so the Parquet rows,
the dedup hash and the Tune config all come from one place:

    {"variant": "RNN-orth", "task": {...}, "cell": {...}, "optimizer": {...}, "training": {...},
     "hidden_size": 128, "seed": 0, "n_params": 19081, "config_hash": "3f2a..."}

and, for a cell or task named by import path, "user_code": a hash of that module's source.
"""

from __future__ import annotations

import functools
import hashlib
import json
import typing
from typing import Any

from raylab.cells import CELLS, INJECTED_CELL_ARGS
from raylab.networks.budget import MAX_HIDDEN, model_counter, solve_hidden_size
from raylab.networks.model import build_model, check_cell_spec, check_forward, count_parameters, on_meta_device
from raylab.spec.config import SweepSpec, VariantSpec, dump, merged_optimizer
from raylab.spec.registry import build, check_options, with_defaults
from raylab.spec.typecheck import ConfigError
from raylab.spec.userimport import user_code_version
from raylab.tasks import TASKS
from raylab.tasks.protocol import Task

MAX_PARAMETERS = 2**33  # 16 bytes each (weights, gradients, two optimizer moments) exceed any single accelerator


def config_hash(trial: dict) -> str:
    """Identity of a trial for dedup across runs: everything that changes what is computed.

    The task and cell specs of a resolved trial hold every constructor default (`with_defaults`), and
    optimizer and training are complete dataclasses, so the hash is over what is built, not over
    what was typed (docs/identity.md). The variant label is left out on purpose, so renaming a table
    row does not re-run anything.

    A trial of a `search:` carries its search's identity (`raylab.planning.space.search_identity`):
    what a sample becomes depends on the search it ran in (its scheduler may stop it), so a changed
    search, or a sweep without its `search:` section, is a new trial. A plain trial has no such key,
    and its hash is what it always was.
    """
    keys = ("task", "cell", "optimizer", "training", "hidden_size", "seed")
    identity = {k: trial[k] for k in keys}
    if trial.get("search") is not None:
        identity["search"] = trial["search"]
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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
    task_where = where
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
        user_code = user_code_version((task_spec["name"], cell_spec["name"]))
        grid = sized_grid(spec, variant, task, cell_spec, where)
        for hidden_size, _ in grid:
            check_hidden_size(hidden_size, where)
        if user_code is not None:  # raylab's own cells and tasks run forward in tests/test_cells.py
            check_forward_once(json.dumps(task_spec, sort_keys=True), json.dumps(cell_spec, sort_keys=True), min(size for size, _ in grid), where, task_where, user_code,
                               spec.resources.gpu > 0)
        for hidden_size, budget in grid:
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
                if user_code is not None:
                    trial["user_code"] = user_code  # the user modules' source, like code_version: not identity
                trial["config_hash"] = config_hash(trial)
                trials.append(trial)
    return trials


@functools.lru_cache(maxsize=256)
def check_forward_once(task_json: str, cell_json: str, hidden_size: int, cell_where: str, task_where: str, user_code: str, on_gpu: bool) -> None:
    """`check_forward` once per (task spec, cell spec, user code) in this process: a `grid:` resolves the
    sweep once per grid point, and hidden sizes and seeds do not change what the check shows. Run at
    the variant's smallest hidden size, the cheapest to build. `user_code` is in the key so that an
    edited module is checked again."""
    task_spec, cell_spec = json.loads(task_json), json.loads(cell_json)
    check_forward(build(TASKS, task_spec, task_where), task_spec["name"], cell_spec, hidden_size, cell_where, task_where, on_gpu)


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


def check_variant_labels(spec: Any) -> None:
    """One label, one configuration: two variants under one label (e.g. `rnn` and `lstm` both labelled
    X, or two unlabelled `lstm` with different learning rates) would be averaged into one table row.

    Variants that share a label but have explicitly disjoint `hidden_sizes` make distinct rows and
    are allowed (e.g. a learning rate per size). Labels are compared within the `variants` list only.
    """
    seen: dict[str, int] = {}
    for index in range(len(spec.variants)):
        label = spec.variant_label(index)
        first = seen.setdefault(label, index)
        if first == index:
            continue
        a, b = spec.variants[first], spec.variants[index]
        if a.hidden_sizes is not None and b.hidden_sizes is not None and not set(a.hidden_sizes) & set(b.hidden_sizes):
            continue
        differing = [
            name
            for name, left, right in (
                ("cell", check_cell_spec(a.cell, f"variants[{first}].cell"), check_cell_spec(b.cell, f"variants[{index}].cell")),
                ("optimizer", dump(merged_optimizer(spec, first)), dump(merged_optimizer(spec, index))),
                ("hidden_sizes", a.hidden_sizes, b.hidden_sizes),
            )
            if left != right
        ]
        if differing:
            raise ConfigError(
                f"variants[{index}].label: {label!r} is also variants[{first}]'s label, with a different "
                f"{' and '.join(differing)}; one table row would average both: give each variant its own label"
            )
        raise ConfigError(f"variants[{index}]: repeats variants[{first}] (same label, cell, optimizer and sizes): its trials would run twice")


def check_distinct_trials(trials: list[dict]) -> None:
    """No trial computed twice: identical variants under different labels, two budgets that solve to
    the same hidden size, a size in a variant's own list and the sweep's."""
    seen: dict[str, dict] = {}
    for trial in trials:
        first = seen.setdefault(trial["config_hash"], trial)
        if first is not trial:
            twice = f"{first['variant']!r} and {trial['variant']!r}" if first["variant"] != trial["variant"] else repr(trial["variant"])
            raise ConfigError(
                f"variants: identical trials ({twice}, hidden size {trial['hidden_size']}, seed {trial['seed']}) "
                "would run twice; remove the repeated variant, size or budget"
            )


def check_hidden_size(hidden_size: int, where: str) -> None:
    """Above budget.MAX_HIDDEN units even building a model on the meta device is not cheap (the
    orthogonal cells keep N x N index tensors on the CPU), and no experiment of the seeds comes near."""
    if hidden_size > MAX_HIDDEN:
        raise ConfigError(f"{where}: hidden size {hidden_size} is above raylab's limit of {MAX_HIDDEN}")


def check_model_size(n_params: int, hidden_size: int, where: str) -> None:
    if n_params > MAX_PARAMETERS:
        raise ConfigError(
            f"{where}: hidden size {hidden_size} gives {n_params:,} parameters, more than {MAX_PARAMETERS:,} "
            "(with gradients and optimizer state, more memory than any single device has)"
        )
