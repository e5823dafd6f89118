"""`raylab best`: promote the winners of a search (or grid) to a sweep file with fresh seeds.

For each slot (task spec x variant x hidden size), configurations are the distinct resolved cells,
optimizers and training specs among the slot's finished trials; each is scored by its mean over seeds
of one metric (final or best value per trial), and the best one is written back as a variant with its
own `hidden_sizes`. Task options are never chosen: they define the problem, so a sweep over several
task specs (a grid over `task.delay`) gives one file per task spec.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raylab.planning import storage
from raylab.planning.space import primary_metric
from raylab.training.metrics import metric_mode
from raylab.results.collect import MANIFEST, ResultsError, run_locations
from raylab.spec.rules import ONLY_FOR

CHOSEN_KEYS = ("cell", "optimizer", "training")  # what a configuration is, besides its slot and seed


@dataclass(frozen=True)
class Scored:
    trial: dict  # one resolved trial of this configuration (any seed)
    mean: float
    n: int


@dataclass(frozen=True)
class Choice:
    task: dict
    variant: str
    hidden_size: int
    best: Scored
    runner_up: Scored | None
    stopped: int  # trials of this slot that the search's scheduler stopped early (never candidates)


def applicable_options(optimizer: dict) -> dict:
    """The resolved optimizer without the options its algorithm ignores (`betas` of RMSprop, `alpha`
    of Adam): they hold defaults, and a sweep file that sets them is refused (raylab/spec/rules.py)."""

    return {k: v for k, v in optimizer.items() if ONLY_FOR.get(k, optimizer["name"]) == optimizer["name"]}


def configuration_key(trial: dict) -> str:
    # Two searches may draw the same values on the same seed: their trials are distinct (docs/identity.md),
    # and pooling them would count one seed twice in the mean.
    return json.dumps({**{k: trial[k] for k in CHOSEN_KEYS}, "search": trial.get("search")}, sort_keys=True)


def choose(trials: pd.DataFrame, metric: str, stat: str, mode: str) -> list[Choice]:
    """The best configuration of every slot, by mean over finished seeds (ties: the first seen)."""
    column = f"{stat}/{metric}"
    if "trial_json" not in trials.columns:
        raise ResultsError("trials.parquet has no trial_json column; re-collect the experiment (raylab collect)")
    if column not in trials.columns:
        available = sorted(c.split("/", 1)[1] for c in trials.columns if c.startswith(f"{stat}/"))
        raise ResultsError(f"--metric: no {stat} values of {metric!r} (available: {', '.join(available) or 'none'})")
    slots: dict[str, dict[str, list[tuple[dict, float]]]] = {}
    stopped: dict[str, int] = {}
    for _, row in trials[trials["status"].isin(("finished", "stopped"))].iterrows():
        trial = json.loads(row["trial_json"])
        slot = json.dumps([trial["task"], trial["variant"], trial["hidden_size"]], sort_keys=True)
        if row["status"] == "stopped":
            stopped[slot] = stopped.get(slot, 0) + 1
            continue
        value = row[column]
        if value is not None and math.isfinite(value):
            slots.setdefault(slot, {}).setdefault(configuration_key(trial), []).append((trial, float(value)))
    choices = []
    for slot, configurations in slots.items():
        scored = [Scored(runs[0][0], sum(v for _, v in runs) / len(runs), len(runs)) for runs in configurations.values()]
        scored.sort(key=lambda s: -s.mean if mode == "max" else s.mean)
        first = scored[0].trial
        choices.append(Choice(first["task"], first["variant"], first["hidden_size"], scored[0], scored[1] if len(scored) > 1 else None, stopped.get(slot, 0)))
    if not choices:
        raise ResultsError(f"no finished trial has a finite {column}: nothing to promote")
    return choices


def difference(best: dict, other: dict) -> str:
    """`lr=0.0031 (vs 0.0004)`: the options in which two configurations differ."""
    parts = []
    for key in CHOSEN_KEYS:
        for option in sorted(set(best[key]) | set(other[key])):
            a, b = best[key].get(option), other[key].get(option)
            if a != b:
                parts.append(f"{key}.{option}={short(a)} (vs {short(b)})")
    return ", ".join(parts) or "same options"


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def explain(choice: Choice, metric: str, stat: str) -> str:
    """One line: what was chosen, its score, the runner-up and the margin."""
    head = f"{choice.task['name']} {choice.variant} h={choice.hidden_size}: {stat} {metric} {choice.best.mean:.4g} (n={choice.best.n})"
    if choice.stopped:
        head += f" [{choice.stopped} other trial(s) stopped early by the scheduler]"
    if choice.runner_up is None:
        return f"{head}, the only finished configuration"
    margin = abs(choice.best.mean - choice.runner_up.mean)
    return (f"{head}; runner-up {choice.runner_up.mean:.4g} (n={choice.runner_up.n}), margin {margin:.3g}; "
            f"chosen {difference(choice.best.trial, choice.runner_up.trial)}")


def latest_manifest(location: str) -> dict:
    return json.loads(storage.read_text(storage.join(run_locations(location)[-1], MANIFEST)))


def promoted_sweeps(choices: list[Choice], base: dict, seeds: list[int]) -> list[dict]:
    """Sweep data per task spec: the chosen configurations as variants, `seeds` fresh seeds, no search."""
    by_task: dict[str, list[Choice]] = {}
    for choice in choices:
        by_task.setdefault(json.dumps(choice.task, sort_keys=True), []).append(choice)
    sweeps = []
    for index, group in enumerate(by_task.values()):
        group.sort(key=lambda c: (c.variant, c.hidden_size))
        data = {k: v for k, v in base.items() if k not in ("search", "grid", "budget", "task", "variants", "seeds", "hidden_sizes")}
        data["name"] = f"{base['name']}-best" + (f"-{index + 1}" if len(by_task) > 1 else "")
        data["description"] = f"Best configurations of {base['name']} (raylab best), {len(seeds)} fresh seeds"
        data["task"] = group[0].task
        data["variants"] = [
            {
                "label": c.variant,
                "cell": c.best.trial["cell"],
                "optimizer": applicable_options(c.best.trial["optimizer"]),
                "hidden_sizes": [c.hidden_size],
            }
            for c in group
        ]
        data["hidden_sizes"] = sorted({c.hidden_size for c in group})  # required; every variant sets its own
        data["training"] = group[0].best.trial["training"]
        data["seeds"] = seeds
        sweeps.append(data)
    return sweeps


def fresh_seeds(trials: pd.DataFrame, count: int) -> list[int]:
    """`count` seeds none of the experiment's trials used: the tuning seeds stay out of the comparison."""
    start = int(trials["seed"].max()) + 1 if len(trials) else 0
    return list(range(start, start + count))


def output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]


def write_sweep(path: Path, data: dict, source: str, lines: list[str]) -> None:
    header = [f"# {data['description']}.", f"# Written by `raylab best {source}`; run it with: raylab run {path}", "# Chosen:"]
    header += [f"#   {line}" for line in lines]
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False))


def default_metric(manifest: dict, choices_trial: dict) -> tuple[str, str]:
    """The search's metric and mode if it named one, else the task's primary metric."""
    search = manifest.get("sweep", {}).get("search") or {}
    if search.get("metric"):
        return search["metric"], search.get("mode") or metric_mode(search["metric"])
    metric = primary_metric(choices_trial)
    return metric, metric_mode(metric)
