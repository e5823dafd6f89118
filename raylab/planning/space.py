"""`grid:` and `search:` over dotted keys of the resolved trial (no Ray here; `raylab.execution.search` has the Tune side).

    grid:                                   search:
      optimizer.lr: [1.0e-3, 3.0e-4]          num_samples: 16
      task.delay: [100, 200]                  space:
      cell.nonlinearity: [tanh, modrelu]        optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}

A key is `task.<option>` (every task spec), `optimizer.<field>` (every variant, over its own
override) or `cell.<option>` (every variant whose cell has that option; an error if none has it).
Grid values are validated by resolving the sweep with them, exactly like values written in the file.
A search space is validated the same way at its bounds (or at each choice) before anything runs; each
trial then applies its sampled values with `apply_sample`, which re-checks and re-hashes the trial.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import json
import sys
from typing import Any

import torch

from raylab.cells import CELLS, INJECTED_CELL_ARGS
from raylab.networks.model import build_model, check_cell_spec
from raylab.networks.model import count_parameters as count
from raylab.planning import samplers
from raylab.planning.trials import config_hash, resolve_trials
from raylab.spec.config import OptimizerSpec, SweepSpec, dump
from raylab.spec.registry import build, lookup, split_spec
from raylab.tasks import TASKS
from raylab.training.metrics import metric_mode
from raylab.spec.typecheck import ConfigError, coerce, from_mapping

GRID_PREFIXES = ("task", "cell", "optimizer")
SEARCH_PREFIXES = ("cell", "optimizer")  # task options define the problem: grid over them instead
DOMAINS = ("uniform", "loguniform", "randint", "choice")


def options_of(table: dict, spec: Any, injected: tuple[str, ...] = ()) -> set[str]:
    """Constructor options of a spec's class (a registered name or an import path)."""
    name, _ = split_spec(table, spec, "spec")
    factory = lookup(table, name, "spec")
    return {p for p in inspect.signature(factory).parameters if p not in injected and p != "self"}


def cell_accepts(cell_spec: Any, option: str) -> bool:
    return option in options_of(CELLS, cell_spec, INJECTED_CELL_ARGS)


def check_key(spec: SweepSpec, key: str, where: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    """Split `prefix.option` and check that the option exists where it would be applied."""
    prefix, _, option = key.partition(".")
    if prefix not in prefixes or not option.isidentifier():
        raise ConfigError(f"{where}: key must be {' | '.join(p + '.<option>' for p in prefixes)}, got {key!r}")
    if prefix == "optimizer":
        fields = [f.name for f in dataclasses.fields(OptimizerSpec)]
        if option not in fields:
            raise ConfigError(f"{where}: unknown optimizer field {option!r} (valid: {', '.join(fields)})")
    elif prefix == "cell":
        if not any(cell_accepts(variant.cell, option) for variant in spec.variants):
            cells = ", ".join(sorted({str(v.cell.get("name")) for v in spec.variants}))
            raise ConfigError(f"{where}: no variant's cell has option {option!r} (cells: {cells})")
    else:
        for task_spec in spec.task_specs():
            if option not in options_of(TASKS, task_spec):
                raise ConfigError(f"{where}: task {task_spec.get('name')!r} has no option {option!r} (valid: {', '.join(sorted(options_of(TASKS, task_spec)))})")
    return prefix, option


def with_values(spec: SweepSpec, values: dict[str, Any]) -> SweepSpec:
    """The sweep with `values` (dotted key -> value) written into its task specs and variants."""
    tasks = [dict(task) for task in spec.task_specs()]
    variants = list(spec.variants)
    for key, value in values.items():
        prefix, _, option = key.partition(".")
        if prefix == "task":
            for task in tasks:
                task[option] = value
        elif prefix == "optimizer":  # over the variant's own override: the grid is the experiment
            variants = [dataclasses.replace(v, optimizer={**v.optimizer, option: value}) for v in variants]
        else:
            variants = [dataclasses.replace(v, cell={**v.cell, option: value}) if cell_accepts(v.cell, option) else v for v in variants]
    return dataclasses.replace(spec, task=tasks if isinstance(spec.task, list) else tasks[0], variants=variants)


def values_label(values: dict[str, Any]) -> str:
    """`lr=0.001,delay=100`: the grid or sampled values of a trial, for names and progress lines."""
    return ",".join(f"{key.partition('.')[2]}={value:.3g}" if isinstance(value, float) else f"{key.partition('.')[2]}={value}" for key, value in values.items())


def check_grid(spec: SweepSpec) -> dict[str, list]:
    """Validate `grid:` keys and values one key at a time, so an error names the key and the value."""
    for key, values in spec.grid.items():
        where = f"grid.{key}"
        check_key(spec, key, where, GRID_PREFIXES)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: expected a non-empty list of values, got {values!r}")
        for value in values:
            try:
                resolve_trials(with_values(spec, {key: value}))
            except ConfigError as error:
                raise ConfigError(f"{where}: value {value!r}: {error}") from None
    return spec.grid


def resolve_grid(spec: SweepSpec) -> list[dict]:
    """The sweep's trials, times every combination of the `grid:` values (duplicates dropped)."""
    if not spec.grid:
        trials = resolve_trials(spec)
    else:
        grid = check_grid(spec)
        trials = []
        for combination in itertools.product(*grid.values()):
            values = dict(zip(grid, combination))
            for trial in resolve_trials(with_values(spec, values)):
                applied = {k: v for k, v in values.items() if not k.startswith("cell.") or k.partition(".")[2] in trial["cell"]}
                trial["grid_label"] = values_label(applied)  # display only, like the variant label
                trials.append(trial)
    unique = {}
    for trial in trials:
        unique.setdefault(trial["config_hash"], trial)  # a cell option that does not apply repeats a trial
    if spec.search is not None:
        check_space(spec, list(unique.values()))
        identity = search_identity(spec.search, list(unique.values()))
        for trial in unique.values():
            trial["search"] = identity  # part of the base's hash, and so of every sample's (config_hash)
            trial["config_hash"] = config_hash(trial)
    return list(unique.values())


def search_identity(search: Any, trials: list[dict]) -> dict:
    """What identifies a search besides the trial it samples from (docs/identity.md): the space as
    parsed (bounds as numbers), `num_samples`, the algorithm, and, with a scheduler, the scheduler
    with every default written out and the metric and mode it stops by (resolved: leaving them out
    or writing their defaults is the same search). Without a scheduler the metric and mode decide
    nothing that is computed, so they are left out. Optuna's searches add the sampler with every
    default written out, the concurrency bound (what is in flight changes what TPE draws) and the
    metric and mode the studies learn from; `seeds_per_sample` is added when it is not 1, so that a
    search recorded before it existed keeps its identity."""
    identity: dict[str, Any] = {
        "space": {key: dict([parse_domain(domain, f"search.space.{key}")]) for key, domain in sorted(search.space.items())},
        "num_samples": search.num_samples,
        "algorithm": search.algorithm,
        "scheduler": None,
    }
    metric = search.metric or primary_metric(trials[0])
    if search.scheduler is not None:
        identity.update(scheduler=dump(search.scheduler), metric=metric, mode=search.mode or metric_mode(metric))
    if search.algorithm == "optuna":
        identity.update(sampler=samplers.resolve_sampler(search.sampler), max_concurrent=search.concurrency(),
                        metric=metric, mode=search.mode or metric_mode(metric))
    if search.seeds_per_sample != 1:
        identity.update(seeds_per_sample=search.seeds_per_sample)
    return identity


def parse_domain(domain: Any, where: str) -> tuple[str, list]:
    """`{loguniform: [1e-4, 1e-2]}` -> ("loguniform", [0.0001, 0.01]), with bounds and types checked."""
    if not isinstance(domain, dict) or len(domain) != 1 or next(iter(domain)) not in DOMAINS:
        raise ConfigError(f"{where}: expected one of {{{': [...]}, {'.join(DOMAINS)}: [...]}}, got {domain!r}")
    kind, args = next(iter(domain.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.choice: expected a non-empty list, got {args!r}")
        return kind, args
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(f"{where}.{kind}: expected [low, high], got {args!r}")
    low, high = (coerce(a, int if kind == "randint" else float, f"{where}.{kind}") for a in args)
    if not low < high:
        raise ConfigError(f"{where}.{kind}: low must be below high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.loguniform: bounds must be positive, got [{low}, {high}]")
    return kind, [low, high]


def check_space(spec: SweepSpec, trials: list[dict]) -> None:
    """Every key exists, every domain is well formed, and its bounds (or choices) pass validation."""
    search = spec.search
    for key, domain in search.space.items():
        where = f"search.space.{key}"
        check_key(spec, key, where, SEARCH_PREFIXES)
        if key in spec.grid:  # each sample would overwrite every grid value: grid rows that differ in nothing
            raise ConfigError(f"{where}: also a grid: key; a sampled value would replace every grid value (keep it in one of the two)")
        kind, args = parse_domain(domain, where)
        for value in args:
            for trial in trials:
                try:
                    apply_sample(trial, {key: value}, count_parameters=False)
                except ConfigError as error:
                    raise ConfigError(f"{where}: value {value!r}: {error}") from None
    if search.scheduler is not None:
        # In steps, whether the budget is steps or epochs: a grace period past every budget turns ASHA off silently.
        budget = min(budget_steps(trial) for trial in trials)
        if search.scheduler.grace_period >= budget:
            written = f"training.steps={spec.training.steps}" if spec.training.steps is not None else f"training.epochs={spec.training.epochs} ({budget} steps)"
            raise ConfigError(f"search.scheduler.grace_period: {search.scheduler.grace_period} steps leaves nothing to stop within {written}")
    learns = search.scheduler is not None or search.algorithm == "optuna"  # what decides on the metric
    if learns and search.metric is None and len({primary_metric(t) for t in trials}) > 1:
        raise ConfigError("search.metric: the sweep's tasks have different primary metrics; name the one to optimize")
    check_objective(search, trials)
    if search.algorithm == "optuna":
        check_optuna(search)
    warn_unsearched_variants(spec)
    warn_repeated_draws(search)


def warn_repeated_draws(search: Any) -> None:
    """A space of choices and integers with fewer combinations than `num_samples` must draw some twice:
    identical trials, trained twice and kept once in the results (one row, its seeds counted once)."""
    combinations = 1
    for key, domain in search.space.items():
        kind, args = parse_domain(domain, f"search.space.{key}")
        if kind in ("uniform", "loguniform"):
            return
        combinations *= len(args) if kind == "choice" else args[1] - args[0] + 1
    if combinations < search.num_samples:
        print(f"raylab: warning: search.num_samples: {search.num_samples} samples of a space with {combinations} combination(s): "
              "some draws repeat an earlier one (identical trials, trained again, one table row); a grid: covers such a space once",
              file=sys.stderr, flush=True)


def check_optuna(search: Any) -> None:
    """The sampler's options and the space as Optuna distributions, before Ray starts; one line when
    TPE's random start-up covers every sample (it would never model anything)."""
    sampler = samplers.resolve_sampler(search.sampler)
    samplers.distributions({key: parse_domain(domain, f"search.space.{key}") for key, domain in search.space.items()})
    startup = sampler.get("n_startup_trials")
    if sampler["name"] == "tpe" and isinstance(startup, int) and startup >= search.num_samples:
        print(f"raylab: warning: search.sampler.n_startup_trials: TPE draws its first {startup} samples at random and num_samples is "
              f"{search.num_samples}, so this search is random search; lower n_startup_trials (e.g. {max(1, search.num_samples // 3)}) "
              "or raise num_samples", file=sys.stderr, flush=True)


def warn_unsearched_variants(spec: SweepSpec) -> None:
    """A variant that no key of the space applies to (an LSTM beside `cell.nonlinearity`) trains one
    configuration num_samples times: legal (a baseline beside a search), but said, once it is valid."""
    search = spec.search
    for index, variant in enumerate(spec.variants):
        if not any(not key.startswith("cell.") or cell_accepts(variant.cell, key.partition(".")[2]) for key in search.space):
            print(f"raylab: warning: variants[{index}] ({spec.variant_label(index)}): no key of search.space applies to its cell, "
                  f"so its {search.num_samples} samples are one configuration, trained {search.num_samples} times (one table row)",
                  file=sys.stderr, flush=True)


def check_objective(search: Any, trials: list[dict]) -> None:
    """`search.metric` names a metric every task of the sweep reports at each evaluation, and
    `search.mode` agrees with the direction raylab ranks that metric by everywhere else.

    ASHA skips a result that lacks its metric: a typo (`val/los`) would silently turn the scheduler
    off, and a mode against the metric's direction would keep the worst samples while `raylab best`
    and the tables rank the other way.
    """
    if search.metric is not None:
        tasks = {json.dumps(t["task"], sort_keys=True): t["task"] for t in trials}
        for task_spec in tasks.values():
            task = build(TASKS, task_spec, "task")
            valid = [f"{split}/{name}" for split in ("train", *task.eval_splits) for name in task.metric_names()]
            if search.metric in valid:
                continue
            final = [f"{split}/{name}" for split in task.final_splits for name in task.metric_names()]
            reason = (" is evaluated once, after training, on the final split: a search may not tune on it" if search.metric in final
                      else f" is not a metric of task {task_spec['name']!r}")
            raise ConfigError(f"search.metric: {search.metric!r}{reason} (valid: {', '.join(valid)})")
    metric = search.metric or primary_metric(trials[0])
    if search.mode is not None and search.mode != metric_mode(metric):
        raise ConfigError(
            f"search.mode: {search.mode} contradicts {metric}, which raylab ranks by {metric_mode(metric)} "
            "(accuracies by max, every other metric by min) in checkpoints, tables and `raylab best`; leave mode out or set it to "
            f"{metric_mode(metric)}"
        )


def budget_steps(trial: dict) -> int:
    """A trial's budget in optimizer steps (ASHA's time unit): its steps, or its epochs times the task's steps per epoch."""
    training = trial["training"]
    if training.get("steps") is not None:
        return int(training["steps"])
    return int(training["epochs"]) * build(TASKS, trial["task"], "task").steps_per_epoch


def primary_metric(trial: dict) -> str:
    return build(TASKS, trial["task"], "task").primary_metric


def apply_sample(trial: dict, values: dict[str, Any], count_parameters: bool = True, seed: int | None = None) -> dict:
    """A resolved trial with sampled values applied, re-validated, re-counted and re-hashed; with
    `seed`, trained on that seed (`search.seeds_per_sample`: one sample on several seeds).

    The base trial's hash is kept as `search_base`: a re-run skips a search whose samples all finished.
    """
    resolved = copy.deepcopy(trial)
    if seed is not None:
        resolved["seed"] = seed
    applied = {}
    for key, value in values.items():
        prefix, _, option = key.partition(".")
        if prefix == "cell" and not cell_accepts(resolved["cell"], option):
            continue  # another variant's option
        resolved[prefix][option] = value
        applied[key] = value
    resolved["cell"] = check_cell_spec(resolved["cell"], "cell")
    resolved["optimizer"] = dump(from_mapping(OptimizerSpec, resolved["optimizer"], "optimizer"))
    if count_parameters and any(key.startswith("cell.") for key in applied):
        with torch.device("cpu"):
            task = build(TASKS, resolved["task"], "task")
            resolved["n_params"] = count(build_model(task, resolved["cell"], resolved["hidden_size"]))
    resolved["search_base"] = trial["config_hash"]
    resolved["search_label"] = values_label(applied)
    resolved["config_hash"] = config_hash(resolved)
    return resolved


def resolved_trial(config: dict) -> dict:
    """The trial a Tune config stands for: `config["trial"]`, with its sampled values if it was searched."""
    if config.get("sample"):
        return apply_sample(config["trial"], config["sample"], seed=config.get("sample_seed"))
    return config["trial"]
