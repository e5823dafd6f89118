"""`raylab run FILE --dry-run`: the resolved trials and what a run would do with each, as text.

Pure: it reads the resolved sweep and the plan of `rerun.plan_rerun`, starts nothing, writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylab.execution.rerun import RerunPlan
from raylab.results.collect import flatten

CONFIG_PARTS = ("task", "cell", "optimizer", "training")


def varying_options(trials: list[dict]) -> list[str]:
    """Dotted keys (`optimizer.lr`, `cell.nonlinearity`) whose value differs between trials."""
    flat = [options_of(trial) for trial in trials]
    keys = dict.fromkeys(key for options in flat for key in options)  # first-seen order
    return [key for key in keys if len({repr(options.get(key)) for options in flat}) > 1]


def options_of(trial: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in CONFIG_PARTS:
        flatten(part, trial[part], out)
    return out


def trial_states(plan: RerunPlan) -> dict[str, str]:
    """config_hash -> what the run would do with the trial."""
    states = {trial["config_hash"]: "new" for trial in plan.new}
    states.update({trial["config_hash"]: "restart from step 0 (errored before)" for trial in plan.errored})
    states.update({trial["config_hash"]: "skip (finished)" for trial in plan.finished})
    for run, trials in plan.continued.items():
        name = Path(str(run).rstrip("/")).name
        states.update({trial["config_hash"]: f"continue in {name}" for trial in trials})
    return states


def dry_run_lines(trials: list[dict], plan: RerunPlan) -> list[str]:
    """An aligned table, one row per resolved trial, in the sweep file's order."""
    varying = [key for key in varying_options(trials) if not key.startswith("task.")]  # the task column shows those
    states = trial_states(plan)
    header = ["variant", "task", "hidden_size", "seed", "n_params", *varying, "state"]
    rows = []
    for trial in trials:
        options = options_of(trial)
        task = "-".join(filter(None, (trial["task"]["name"], trial.get("task_label"))))
        rows.append([trial["variant"], task, trial["hidden_size"], trial["seed"], f"{trial['n_params']:,}", *(options.get(k, "-") for k in varying), states[trial["config_hash"]]])
    table = [header, *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in table]
