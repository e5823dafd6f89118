"""Ray layer of `search:`: the sampled space, Tune's search algorithm and its scheduler.

The param space stays `{"trial": grid_search(resolved trials), "runtime": ...}` with one more entry,
`"sample": {dotted key: Tune domain}`; Tune's BasicVariantGenerator (raylab's linear-time `TrialGridGenerator`) repeats the grid `num_samples`
times with fresh samples, so each task x variant x hidden size gets its own `num_samples` draws. The
trainable applies the draw (`raylab.planning.space.apply_sample`). ASHA's time is the reported training `step`.

ASHA runs once per slot (task x variant x hidden size: one base trial), not across the whole sweep:
samples compete only with samples of the same slot, so a variant that learns more slowly than another
still keeps its best samples to the end, and `raylab best` has a winner for every slot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from raylab.execution.trial_grid import TrialGridGenerator
from raylab.planning.space import budget_steps, parse_domain, primary_metric
from raylab.spec.config import SearchSpec
from raylab.training.metrics import metric_mode


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


class SlotASHA(FIFOScheduler):
    """One Tune ASHAScheduler per base trial (slot), created on the slot's first sample."""

    def __init__(self, metric: str, mode: str, **asha: Any) -> None:
        super().__init__()
        self._metric, self._mode, self.asha = metric, mode, asha
        self.slots: dict[str, ASHAScheduler] = {}

    @property
    def metric(self) -> None:
        """None to Tune: its strict check (`TuneController._validate_result_metrics`) fails a trial whose
        report lacks the scheduler's metric, and raylab's final-split and divergence reports lack it by
        design (ASHA skips them). The metric itself was checked against every task's metrics before Ray
        started (`raylab.planning.space.check_objective`), so the check is not needed to catch a typo."""
        return None

    def slot(self, trial: Any) -> ASHAScheduler:
        key = trial.config["trial"]["config_hash"]
        if key not in self.slots:
            self.slots[key] = ASHAScheduler(time_attr="step", metric=self._metric, mode=self._mode, **self.asha)
        return self.slots[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.slot(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.slot(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.slot(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.slot(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per slot: {sum(s._num_stopped for s in self.slots.values())} stopped in {len(self.slots)} slots"


def searched(search: SearchSpec, trials: list[dict], seed: int, tune_config: Any, param_space: dict) -> tuple[Any, dict]:
    """The TuneConfig and param space of a searched sweep, from those of a plain grid."""
    space = {key: tune_domain(domain, f"search.space.{key}") for key, domain in search.space.items()}
    scheduler = None
    if search.scheduler is not None:
        metric, mode = objective(search, trials)
        scheduler = SlotASHA(
            metric,
            mode,
            max_t=max(budget_steps(t) for t in trials),
            grace_period=search.scheduler.grace_period,
            reduction_factor=search.scheduler.reduction_factor,
            stop_last_trials=False,  # a trial at its budget still reports its test split (final_splits)
        )
    config = dataclasses.replace(
        tune_config,
        num_samples=search.num_samples,
        search_alg=TrialGridGenerator(random_state=seed),  # the same draws for the same sweep file
        scheduler=scheduler,
    )
    return config, {**param_space, "sample": space, "search_samples": search.num_samples}
