"""Ray layer of `search:`: the sampled space, Tune's search algorithm and its scheduler.

The param space stays `{"trial": grid_search(resolved trials), "runtime": ...}` with one more entry,
`"sample": {dotted key: Tune domain}`; Tune's BasicVariantGenerator repeats the grid `num_samples`
times with fresh samples, so each task x variant x hidden size gets its own `num_samples` draws. The
trainable applies the draw (`raylab.space.apply_sample`). ASHA's time is the reported training `step`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from raylab.config import SearchSpec
from raylab.metrics import metric_mode
from raylab.space import parse_domain, primary_metric


def tune_domain(domain: dict, where: str) -> Any:
    kind, args = parse_domain(domain, where)
    if kind == "choice":
        return tune.choice(args)
    if kind == "randint":
        return tune.randint(args[0], args[1] + 1)  # both bounds included, as written in the file
    return tune.loguniform(*args) if kind == "loguniform" else tune.uniform(*args)


def objective(search: SearchSpec, trials: list[dict]) -> tuple[str, str]:
    """(metric, mode): the search's own, else the task's primary metric and the mode its name implies."""
    metric = search.metric or primary_metric(trials[0])
    return metric, search.mode or metric_mode(metric)


def total_steps(trial: dict) -> int:
    """A trial's budget in optimizer steps (ASHA's max_t)."""
    training = trial["training"]
    if training.get("steps") is not None:
        return int(training["steps"])
    from raylab.registry import build
    from raylab.tasks import TASKS

    return int(training["epochs"]) * build(TASKS, trial["task"], "task").steps_per_epoch


def searched(search: SearchSpec, trials: list[dict], seed: int, tune_config: Any, param_space: dict) -> tuple[Any, dict]:
    """The TuneConfig and param space of a searched sweep, from those of a plain grid."""
    space = {key: tune_domain(domain, f"search.space.{key}") for key, domain in search.space.items()}
    scheduler = None
    if search.scheduler is not None:
        metric, mode = objective(search, trials)
        scheduler = ASHAScheduler(
            time_attr="step",
            metric=metric,
            mode=mode,
            max_t=max(total_steps(t) for t in trials),
            grace_period=search.scheduler.grace_period,
            reduction_factor=search.scheduler.reduction_factor,
        )
    config = dataclasses.replace(
        tune_config,
        num_samples=search.num_samples,
        search_alg=BasicVariantGenerator(random_state=seed),  # the same draws for the same sweep file
        scheduler=scheduler,
    )
    return config, {**param_space, "sample": space, "search_samples": search.num_samples}
