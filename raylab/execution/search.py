"""Ray layer of `search:`: the sampled space, Tune's search algorithm and its scheduler.

Random search with one seed per sample keeps Tune's own generator: the param space stays
`{"trial": grid_search(resolved trials), "runtime": ...}` with one more entry, `"sample": {dotted key:
Tune domain}`; Tune's BasicVariantGenerator (raylab's linear-time `TrialGridGenerator`) repeats the
grid `num_samples` times with fresh samples, so each task x variant x hidden size gets its own
`num_samples` draws. The trainable applies the draw (`raylab.planning.space.apply_sample`). ASHA's
time is the reported training `step`.

`algorithm: optuna` and `seeds_per_sample` run through `SlotSearcher` instead: one Optuna study (or,
for random search, one seeded random draw) per slot, all inside one Tuner run so that slots share the
cluster. Its suggestions carry the base trial, the sampled values and, with several seeds per sample,
the seed (`sample_seed`); the trainable applies them the same way.

ASHA runs once per slot (task x variant x hidden size: one base trial), not across the whole sweep:
samples compete only with samples of the same slot, so a variant that learns more slowly than another
still keeps its best samples to the end, and `raylab best` has a winner for every slot.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from raylab.execution.trial_grid import TrialGridGenerator
from raylab.planning import samplers
from raylab.planning.space import budget_steps, parse_domain, primary_metric
from raylab.spec.config import SearchSpec
from raylab.training.ending import terminated_status
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


@dataclass
class Sample:
    """One sampled configuration of a slot: its draw, the seeds it still has to hand out, and how each seed ended."""

    number: int  # the study's trial number (random search: the draw's index)
    values: dict  # dotted key -> sampled value
    seeds_left: list[int]
    outcomes: dict = field(default_factory=dict)  # seed -> (status, final value of the metric or None)
    study_trial: Any = None  # optuna.trial.Trial (optuna only): intermediate values are reported to it
    reported_steps: set = field(default_factory=set)  # steps reported to study_trial (a report may reach the searcher twice)


@dataclass
class Slot:
    """One base trial (task x variant x hidden size) and its own study: what it drew and what is in flight."""

    base: dict
    study: Any  # optuna.Study, or a numpy RandomState for random search
    drawn: int = 0
    open: list[Sample] = field(default_factory=list)  # drawn, not yet told


class SlotSearcher(Searcher):
    """One searcher per slot inside one Tune run, seeds_per_sample trials per sample.

    Each slot draws `num_samples` samples, at most `max_concurrent` of them in flight (optuna: TPE
    learns only from samples that ended, so with everything pending it would draw at random). A sample
    hands out one trial per seed (seed, seed + 1, ...), one after another so that they run side by
    side; when its last seed ends, the slot's study is told the mean of the seeds' final values of the
    metric (each seed's value is kept in the study trial's user attributes). A sample with a seed that
    diverged, or that ASHA stopped, is told as pruned (TPE ranks it below every sample that completed,
    by its last reported value); one with a seed that errored is told as failed (not learned from).

    Tune saves the whole searcher with its experiment state (`save`, `restore`): an interrupted search
    resumes with each study's history, its samples in flight and its counts, so no sample is drawn twice.
    """

    def __init__(self, search: SearchSpec, trials: list[dict], sweep_seed: int, metric: str, mode: str) -> None:
        super().__init__()  # metric None to Tune: see SlotASHA.metric; this searcher reads its own
        self.objective, self.direction = metric, mode
        self.num_samples, self.seeds_per_sample = search.num_samples, search.seeds_per_sample
        self.algorithm = search.algorithm
        self.max_concurrent = search.concurrency() if search.algorithm == "optuna" else math.inf
        self.space = {key: parse_domain(domain, f"search.space.{key}") for key, domain in search.space.items()}
        self.sampler = samplers.resolve_sampler(search.sampler) if search.algorithm == "optuna" else None
        self.distributions = samplers.distributions(self.space) if search.algorithm == "optuna" else None  # once, for every draw
        self.first_seed = sweep_seed
        self.slots = [Slot(trial, self.new_study(trial, sweep_seed)) for trial in trials]
        self.cursor = 0  # the slot the next suggestion starts looking at: slots take turns
        self.running: dict[str, tuple[int, int, int]] = {}  # trial_id -> (slot index, sample number, seed)
        self.last_value: dict[str, float] = {}  # trial_id -> the last value of the metric it reported

    def new_study(self, trial: dict, sweep_seed: int) -> Any:
        seed = samplers.study_seed(sweep_seed, trial["config_hash"])
        if self.algorithm != "optuna":
            return np.random.RandomState(seed)
        optuna = samplers.optuna_module()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created
        direction = "maximize" if self.direction == "max" else "minimize"
        return optuna.create_study(direction=direction, sampler=samplers.make_sampler(self.sampler, seed), study_name=trial["config_hash"])

    def draw(self, slot: Slot) -> Sample:
        seeds = list(range(self.first_seed, self.first_seed + self.seeds_per_sample))
        if self.algorithm == "optuna":
            study_trial = slot.study.ask(self.distributions)
            sample = Sample(study_trial.number, dict(study_trial.params), seeds, study_trial=study_trial)
        else:
            values = {key: plain(tune_domain({kind: args}, key).sample(random_state=slot.study)) for key, (kind, args) in self.space.items()}
            sample = Sample(slot.drawn, values, seeds)
        slot.drawn += 1
        slot.open.append(sample)
        return sample

    def next_sample(self, slot: Slot) -> Sample | None:
        """A sample of this slot with a seed left to hand out (its other seeds run already), else a new
        draw if the slot has draws left and room in flight, else None."""
        for sample in slot.open:
            if sample.seeds_left:
                return sample
        if slot.drawn < self.num_samples and len(slot.open) < self.max_concurrent:
            return self.draw(slot)
        return None

    def suggest(self, trial_id: str) -> dict | str | None:
        for turn in range(len(self.slots)):
            index = (self.cursor + turn) % len(self.slots)
            slot = self.slots[index]
            sample = self.next_sample(slot)
            if sample is None:
                continue
            seed = sample.seeds_left.pop(0)
            self.running[trial_id] = (index, sample.number, seed)
            if not sample.seeds_left:
                self.cursor = index + 1  # this sample is handed out: the next slot's turn
            config = {"trial": slot.base, "sample": dict(sample.values), "sample_number": sample.number}  # the number: for names only
            if self.seeds_per_sample > 1:
                config["sample_seed"] = seed
            return config
        if all(slot.drawn >= self.num_samples and not any(s.seeds_left for s in slot.open) for slot in self.slots):
            return Searcher.FINISHED
        return None  # every slot's bound is reached: Tune asks again when a trial ends

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.objective)
        if trial_id not in self.running or not isinstance(value, (int, float)) or not math.isfinite(value):
            return  # the final split's and a divergence's reports lack a finite value of the metric
        self.last_value[trial_id] = float(value)
        sample = self.sample_of(trial_id)
        if sample is not None and sample.study_trial is not None and self.seeds_per_sample == 1 and "step" in result:
            step = int(result["step"])
            if step not in sample.reported_steps:
                sample.study_trial.report(float(value), step)  # what TPE ranks a pruned sample by
                sample.reported_steps.add(step)

    def sample_of(self, trial_id: str) -> Sample | None:
        index, number, _ = self.running[trial_id]
        return next((s for s in self.slots[index].open if s.number == number), None)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.running:
            return  # a trial restarted after its sample was told (`raylab resume --errored restart`): told once, as failed
        if result:
            self.on_trial_result(trial_id, result)  # Tune passes the report that ASHA stopped a trial on only here
        sample = self.sample_of(trial_id)
        index, _, seed = self.running.pop(trial_id)
        value = self.last_value.pop(trial_id, None)
        if sample is None:
            return
        training = self.slots[index].base["training"]
        status = "errored" if error else terminated_status([result] if result else [], True, training)
        sample.outcomes[seed] = (status, value)
        if len(sample.outcomes) == self.seeds_per_sample:
            self.tell(self.slots[index], sample)

    def tell(self, slot: Slot, sample: Sample) -> None:
        slot.open.remove(sample)
        if self.algorithm != "optuna":
            return  # random draws learn nothing
        from optuna.trial import TrialState  # optuna is imported once the studies exist (samplers.optuna_module)

        statuses = [status for status, _ in sample.outcomes.values()]
        values = [value for status, value in sample.outcomes.values() if status == "finished" and value is not None]
        study_trial = sample.study_trial
        study_trial.set_user_attr("seed_values", {str(seed): value for seed, (_, value) in sorted(sample.outcomes.items())})
        study_trial.set_user_attr("seed_statuses", {str(seed): status for seed, (status, _) in sorted(sample.outcomes.items())})
        if "errored" in statuses:
            slot.study.tell(study_trial, state=TrialState.FAIL)
        elif len(values) == len(statuses):
            slot.study.tell(study_trial, float(np.mean(values)))
        else:  # diverged, stopped by ASHA, or no finite value of the metric
            slot.study.tell(study_trial, state=TrialState.PRUNED)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))


def plain(value: Any) -> Any:
    """A drawn value as a Python number or string (numpy's are neither JSON nor hashed like them)."""
    return value.item() if isinstance(value, np.generic) else value


def uses_slot_searcher(search: SearchSpec) -> bool:
    """Optuna, or several seeds per sample: raylab's own searcher; random search on one seed keeps Tune's generator."""
    return search.algorithm == "optuna" or search.seeds_per_sample > 1


def searched(search: SearchSpec, trials: list[dict], seed: int, tune_config: Any, param_space: dict) -> tuple[Any, dict]:
    """The TuneConfig and param space of a searched sweep, from those of a plain grid."""
    metric, mode = objective(search, trials)
    scheduler = None
    if search.scheduler is not None:
        scheduler = SlotASHA(
            metric,
            mode,
            max_t=max(budget_steps(t) for t in trials),
            grace_period=search.scheduler.grace_period,
            reduction_factor=search.scheduler.reduction_factor,
            stop_last_trials=False,  # a trial at its budget still reports its test split (final_splits)
        )
    if uses_slot_searcher(search):
        config = dataclasses.replace(
            tune_config,
            num_samples=len(trials) * search.num_samples * search.seeds_per_sample,  # every trial the searcher hands out
            search_alg=SlotSearcher(search, trials, seed, metric, mode),
            scheduler=scheduler,
        )
        return config, {"runtime": param_space["runtime"], "search_samples": search.num_samples}
    space = {key: tune_domain(domain, f"search.space.{key}") for key, domain in search.space.items()}
    config = dataclasses.replace(
        tune_config,
        num_samples=search.num_samples,
        search_alg=TrialGridGenerator(random_state=seed),  # the same draws for the same sweep file
        scheduler=scheduler,
    )
    return config, {**param_space, "sample": space, "search_samples": search.num_samples}


def studies(run_dir: str | Path) -> dict[str, Any]:
    """slot (its base trial's config_hash) -> the slot's Optuna study (random search: its draws' RandomState),
    from the newest searcher state Tune saved in a local run folder; for a look at what a search learned
    (`study.trials_dataframe()`, `optuna.visualization`; docs/research.md)."""
    saved = sorted(Path(run_dir).glob("searcher-state-*.pkl"))
    if not saved:
        raise FileNotFoundError(f"{run_dir}: no searcher-state-*.pkl (not a run of algorithm: optuna or seeds_per_sample)")
    with open(saved[-1], "rb") as file:
        state = pickle.load(file)
    return {slot.base["config_hash"]: slot.study for slot in state["slots"]}
