"""`raylab best`: promote the winners of a search (or grid) to a sweep with fresh seeds.

For each slot (task spec x variant x hidden size), configurations are the distinct resolved cells,
optimizers and training specs among the slot's trials. Each is scored by its mean over its finished
seeds of one metric (final or best value per trial). A configuration that finished every one of its
seeds ranks above every configuration with a seed that diverged, errored, is unfinished or has no
value of the metric (RANKING, docs/research.md): a mean over survivors never beats a clean record.
The winner is written back as a variant with its own `hidden_sizes`. Task options are never chosen:
they define the problem, so a sweep over several task specs (a grid over `task.delay`) gives one
file per task spec, and winners trained with different training specs one file per training spec
(the training spec is the sweep's, not a variant's).

What is written is exactly what was scored: every file is resolved in memory with the code of
`raylab validate`, each winner's resolved trial is checked against the one it scored, and only
then are the files written (`write_sweeps`: all or none).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raylab.planning import storage
from raylab.planning.space import primary_metric
from raylab.planning.sweep import Sweep, load_sweep
from raylab.training.metrics import metric_mode
from raylab.results.collect import MANIFEST, ResultsError, run_locations
from raylab.spec.registry import lookup
from raylab.spec.rules import MAX_NAME_LENGTH, ONLY_FOR, SEED_LIMIT
from raylab.tasks import TASKS

CHOSEN_KEYS = ("cell", "optimizer", "training")  # what a configuration is, besides its slot and seed
RANKING = "a configuration with a diverged, errored or unfinished seed ranks below every one that finished all its seeds"
MAX_FRESH_SEEDS = 10_000  # far above any comparison's seeds; a typo such as --seeds 1000000000 is refused, not resolved
MAX_FILE_NAME = 255  # bytes of one file name on common file systems (ext4, APFS, NTFS)
WRITTEN_BY = "# Written by `raylab best "  # the header line that marks a file `raylab best` may overwrite
NOT_FINISHED = ("diverged", "errored", "unfinished", "pending")  # statuses of a seed that did not finish (in this order in notes)


@dataclass(frozen=True)
class Scored:
    trial: dict  # one resolved trial of this configuration (any seed)
    mean: float  # over the finished seeds with a finite value (nan when there is none)
    n: int  # finished seeds with a finite value
    seeds: int = 0  # every seed of this configuration in the experiment, however it ended (stopped ones aside)
    missing: dict[str, int] = field(default_factory=dict)  # seeds that did not count, by why: diverged, errored, ..., "no value"

    @property
    def complete(self) -> bool:
        return self.n == self.seeds

    def note(self) -> str:
        """`n=2` or `n=1, 1 of 2 seeds diverged`."""
        parts = [f"{count} of {self.seeds} seeds {why}" if i == 0 else f"{count} {why}" for i, (why, count) in enumerate(self.missing.items())]
        return ", ".join([f"n={self.n}", *parts])


@dataclass(frozen=True)
class Choice:
    task: dict
    variant: str
    hidden_size: int
    best: Scored
    runner_up: Scored | None
    stopped: int  # trials of this slot that the search's scheduler stopped early (never candidates)
    without_finished: int = 0  # configurations of this slot with no finished seed (never candidates)


@dataclass(frozen=True)
class Promoted:
    """One file to write: its path, its data, its text and the choices it holds."""

    path: Path
    data: dict
    text: str
    choices: list[Choice]


def applicable_options(optimizer: dict) -> dict:
    """The resolved optimizer without the options its algorithm ignores (`betas` of RMSprop, `alpha`
    of Adam): they hold defaults, and a sweep file that sets them is refused (raylab/spec/rules.py)."""

    return {k: v for k, v in optimizer.items() if ONLY_FOR.get(k, optimizer["name"]) == optimizer["name"]}


def what_runs(trial: dict) -> str:
    """The configuration a trial trains: its cell, optimizer and training spec."""
    return json.dumps({k: trial[k] for k in CHOSEN_KEYS}, sort_keys=True)


def configuration_key(trial: dict) -> str:
    """A scored configuration: what runs, and the search that drew it. Two searches may draw the same
    values on the same seed: their trials are distinct (docs/identity.md), and pooling them would count
    one seed twice in the mean."""
    return json.dumps({"runs": what_runs(trial), "search": trial.get("search")}, sort_keys=True)


def slot_key(trial: dict) -> str:
    return json.dumps([trial["task"], trial["variant"], trial["hidden_size"]], sort_keys=True)


def not_counted(status: str, value: float | None) -> str | None:
    """Why a seed does not count in its configuration's mean (a status, or "no value"), or None if it does."""
    if status != "finished":
        return status
    return None if value is not None and math.isfinite(value) else "no value"


def score(runs: list[tuple[dict, str, float | None]]) -> Scored:
    """One configuration's seeds, as (trial, status, value), scored: the mean over finished seeds with a finite value."""
    values = [value for _, status, value in runs if not_counted(status, value) is None]
    reasons = [not_counted(status, value) for _, status, value in runs]
    missing = {why: reasons.count(why) for why in (*NOT_FINISHED, "no value") if why in reasons}
    mean = sum(values) / len(values) if values else math.nan
    return Scored(runs[0][0], mean, len(values), len(runs), missing)


def choose(trials: pd.DataFrame, metric: str, stat: str, mode: str) -> list[Choice]:
    """The best configuration of every slot: complete configurations first, then by mean over finished
    seeds (ties: the first seen). A slot where no configuration finished a seed has no choice."""
    column = f"{stat}/{metric}"
    if "trial_json" not in trials.columns:
        raise ResultsError("trials.parquet has no trial_json column; re-collect the experiment (raylab collect)")
    if column not in trials.columns:
        available = sorted(c.split("/", 1)[1] for c in trials.columns if c.startswith(f"{stat}/"))
        raise ResultsError(f"--metric: no {stat} values of {metric!r} (available: {', '.join(available) or 'none'})")
    slots: dict[str, dict[str, list[tuple[dict, str, float | None]]]] = {}
    stopped: dict[str, int] = {}
    for _, row in trials[trials["status"].isin(("finished", "stopped", *NOT_FINISHED))].iterrows():
        trial = json.loads(row["trial_json"])
        slot = slot_key(trial)
        if row["status"] == "stopped":  # a search's scheduler ended it: its values are from fewer steps
            stopped[slot] = stopped.get(slot, 0) + 1
            continue
        value = row[column]
        value = None if value is None or pd.isna(value) else float(value)
        slots.setdefault(slot, {}).setdefault(configuration_key(trial), []).append((trial, row["status"], value))
    choices = []
    for slot, configurations in slots.items():
        scored = [score(runs) for runs in configurations.values()]
        candidates = [s for s in scored if s.n]
        if not candidates:
            continue
        # Sorting is stable: among equals the first seen wins. Complete configurations come first (RANKING).
        candidates.sort(key=lambda s: (not s.complete, -s.mean if mode == "max" else s.mean))
        first = candidates[0].trial
        choices.append(Choice(first["task"], first["variant"], first["hidden_size"], candidates[0], candidates[1] if len(candidates) > 1 else None,
                              stopped.get(slot, 0), len(scored) - len(candidates)))
    if not choices:
        raise ResultsError(f"no finished trial has a finite {column}: nothing to promote")
    return choices


def slot_name(trial: dict) -> str:
    """`copy delay=5 RNN h=8`: the task, its options that vary in the sweep, the variant and the hidden size."""
    return " ".join(filter(None, (trial["task"]["name"], trial.get("task_label"), trial["variant"], f"h={trial['hidden_size']}")))


def skipped_slots(trials: pd.DataFrame, choices: list[Choice]) -> list[str]:
    """`copy RNN h=8`: slots of the experiment that have no choice (no configuration finished a seed)."""
    chosen = {json.dumps([c.task, c.variant, c.hidden_size], sort_keys=True) for c in choices}
    names = {}
    for text in trials["trial_json"].dropna():
        trial = json.loads(text)
        if slot_key(trial) not in chosen:
            names.setdefault(slot_key(trial), slot_name(trial))
    return list(names.values())


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
    """One line: what was chosen, its score and seeds, the runner-up and the margin."""
    head = f"{slot_name(choice.best.trial)}: {stat} {metric} {choice.best.mean:.4g} ({choice.best.note()})"
    if choice.stopped:
        head += f" [{choice.stopped} other trial(s) stopped early by the scheduler]"
    if choice.without_finished:
        head += f" [{choice.without_finished} other configuration(s) finished no seed]"
    if choice.runner_up is None:
        return f"{head}, the only configuration with a finished seed"
    margin = abs(choice.best.mean - choice.runner_up.mean)
    ranked = "" if choice.runner_up.complete or not choice.best.complete else " (ranked below: not every seed finished)"
    # A tie is said as one: the data did not choose, the sweep's order did.
    tied = "; a TIE, the first in the sweep's order is chosen" if margin == 0 and choice.best.complete == choice.runner_up.complete else ""
    return (f"{head}; runner-up {choice.runner_up.mean:.4g} ({choice.runner_up.note()}){ranked}, margin {margin:.3g}{tied}; "
            f"chosen {difference(choice.best.trial, choice.runner_up.trial)}")


def sweep_name(base: str, index: int, count: int) -> str:
    """`<base>-best`, `<base>-best-2`: the suffix kept whole, the base name cut to fit MAX_NAME_LENGTH bytes."""
    suffix = "-best" + (f"-{index + 1}" if count > 1 else "")
    room = MAX_NAME_LENGTH - len(suffix.encode())
    return base.encode()[:room].decode("utf-8", errors="ignore") + suffix  # never half a multi-byte character


def promoted_sweeps(choices: list[Choice], base: dict, seeds: list[int]) -> list[dict]:
    """Sweep data per task spec and training spec: the chosen configurations as variants, `seeds`
    fresh seeds, no search. Each file's training spec is its winners' own."""
    groups: dict[str, list[Choice]] = {}
    for choice in choices:
        key = json.dumps([choice.task, choice.best.trial["training"]], sort_keys=True)
        groups.setdefault(key, []).append(choice)
    sweeps = []
    for index, group in enumerate(groups.values()):
        group.sort(key=lambda c: (c.variant, c.hidden_size))
        data = {k: v for k, v in base.items() if k not in ("search", "grid", "budget", "task", "variants", "seeds", "hidden_sizes")}
        data["name"] = sweep_name(str(base["name"]), index, len(groups))
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
        report = data.get("report")
        if report and report.get("vs") is not None and report["vs"] not in {c.variant for c in group}:
            # `report.vs` names a variant this file does not run (another task's winners): no Δ column
            data["report"] = {k: v for k, v in report.items() if k != "vs"}
        sweeps.append(data)
    return sweeps


def fresh_seeds(trials: pd.DataFrame, count: int) -> list[int]:
    """The `count` smallest seeds none of the experiment's trials used (the tuning seeds stay out of the
    comparison), all below the seed rule's limit of 2**32."""
    if count > MAX_FRESH_SEEDS:
        raise ResultsError(f"--seeds: {count} fresh seeds asked, at most {MAX_FRESH_SEEDS}")
    used = {int(seed) for seed in trials["seed"].dropna()} if "seed" in trials.columns else set()
    if count > SEED_LIMIT - len(used):
        raise ResultsError(f"--seeds: only {SEED_LIMIT - len(used)} seeds below 2**32 are left unused by the experiment, {count} asked")
    seeds, seed = [], 0
    while len(seeds) < count:
        if seed not in used:
            seeds.append(seed)
        seed += 1
    return seeds


def output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]


def sweep_text(path: Path, data: dict, source: str, lines: list[str]) -> str:
    header = [f"# {data['description']}.", f"{WRITTEN_BY}{source}`; run it with: raylab run {path}", "# Chosen:"]
    header += [f"#   {line}" for line in lines]
    return "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False)


def check_output(path: Path, experiment: str) -> None:
    """Refuse to overwrite what `raylab best` did not write, and anything inside the experiment."""
    if not storage.is_uri(experiment):
        inside = Path(experiment).resolve()
        if path.resolve() == inside or inside in path.resolve().parents:
            raise ResultsError(f"--out: {path} is inside the experiment {experiment}; write the sweep file elsewhere")
    extra = len(temporary_path(path).name.encode()) - len(path.name.encode())  # written under a temporary name first
    if len(path.name.encode()) + extra > MAX_FILE_NAME:
        raise ResultsError(f"--out: the file name {path.name[:40]}... is {len(path.name.encode())} bytes long, at most {MAX_FILE_NAME - extra}")
    if path.is_dir():
        raise ResultsError(f"--out: {path} is a directory")
    if path.exists() or path.is_symlink():
        try:
            head = path.read_text(errors="replace").splitlines()[:2]
        except OSError as error:
            raise ResultsError(f"--out: {path}: cannot read the existing file ({error.strerror})") from None
        if not any(line.startswith(WRITTEN_BY) for line in head):
            raise ResultsError(f"--out: {path} exists and was not written by raylab best; choose another path or remove it")


def checked(path: Path, text: str, group: list[Choice]) -> Sweep:
    """The file as `raylab validate` would resolve it, from memory; each winner's resolved trials must be
    the configuration it scored (cell, optimizer, training, task, hidden size)."""
    sweep = load_sweep(path, text=text)
    for choice in group:
        # The promoted file has no search: compare what runs, not the search that drew it.
        wanted = (what_runs(choice.best.trial), json.dumps(choice.task, sort_keys=True))
        resolved = [t for t in sweep.trials if t["variant"] == choice.variant and t["hidden_size"] == choice.hidden_size]
        if not resolved or any((what_runs(t), json.dumps(t["task"], sort_keys=True)) != wanted for t in resolved):
            raise ResultsError(f"{path}: {choice.variant} h={choice.hidden_size} would not run the configuration that was scored; nothing written")
    return sweep


def prepare(choices: list[Choice], base: dict, seeds: list[int], out: Path, experiment: str, lines: list[str]) -> list[tuple[Promoted, Sweep]]:
    """Every file's path, text and resolved sweep, all checked before anything is written."""
    sweeps = promoted_sweeps(choices, base, seeds)
    prepared = []
    for path, data in zip(output_paths(out, len(sweeps)), sweeps):
        check_output(path, experiment)
        group = [c for c in choices if json.dumps([c.task, c.best.trial["training"]], sort_keys=True)
                 == json.dumps([data["task"], data["training"]], sort_keys=True)]
        text = sweep_text(path, data, experiment, lines)
        prepared.append((Promoted(path, data, text, group), checked(path, text, group)))
    return prepared


def temporary_path(path: Path) -> Path:
    """Where a file is written before it is renamed into place: beside it, hidden."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_sweeps(files: list[Promoted]) -> None:
    """All files or none: each goes to a temporary file beside it, then all are renamed into place;
    on a failure, the temporary files and the files already renamed are removed."""
    temporaries = [temporary_path(file.path) for file in files]
    placed: list[Path] = []
    try:
        for temporary, file in zip(temporaries, files):
            temporary.write_text(file.text)
        for temporary, file in zip(temporaries, files):
            os.replace(temporary, file.path)
            placed.append(file.path)
    except OSError as error:
        for path in placed:
            path.unlink(missing_ok=True)
        raise ResultsError(f"--out: cannot write {file.path} ({error.strerror or error}); nothing written") from None
    finally:
        for temporary in temporaries:
            with contextlib.suppress(OSError):  # never written, or renamed into place
                temporary.unlink(missing_ok=True)


def check_selection_metric(metric: str, trials: list[dict]) -> None:
    """Refuse to choose on a final split (test): that would tune on the data that reports the result."""
    split = metric.split("/", 1)[0]
    for trial in trials:
        task = lookup(TASKS, trial["task"]["name"], "task")
        if split in getattr(task, "final_splits", ()):
            raise ResultsError(f"--metric {metric}: {split} is a final split of task {trial['task']['name']!r}, evaluated once on the "
                               f"best-validation model; choosing on it would tune on the test data (choose on {', '.join(task.eval_splits)})")


def latest_manifest(location: str) -> dict:
    return json.loads(storage.read_text(storage.join(run_locations(location)[-1], MANIFEST)))


def default_metric(manifest: dict, choices_trial: dict) -> tuple[str, str]:
    """The search's metric and mode if it named one, else the task's primary metric."""
    search = manifest.get("sweep", {}).get("search") or {}
    if search.get("metric"):
        return search["metric"], search.get("mode") or metric_mode(search["metric"])
    metric = primary_metric(choices_trial)
    return metric, metric_mode(metric)
