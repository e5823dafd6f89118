"""`raylab run FILE --dry-run`: the resolved trials, what a run would do with each, and where its
trackers write, as text.

Pure: it reads the resolved sweep and the plan of `rerun.plan_rerun`, starts nothing, writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylab.execution.rerun import RerunPlan
from raylab.planning import storage
from raylab.results.collect import flatten
from raylab.spec.config import SweepSpec

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


def local_folder(location: str) -> str | None:
    """The local path of a sweep folder (a path or a file:// URI); None in a bucket."""
    if location.startswith("file://"):
        return location.removeprefix("file://")
    return None if storage.is_uri(location) else location


def mlflow_destination(spec: SweepSpec, sweep_dir: str) -> tuple[str, str]:
    """(tracking URI, experiment name) of `loggers: [mlflow]`: the file's, else $MLFLOW_TRACKING_URI,
    else a SQLite file in the sweep folder; the experiment is the sweep's name unless the file names one."""
    uri = spec.mlflow_tracking_uri() or f"sqlite:///{local_folder(sweep_dir)}/mlflow.db"
    return uri, (spec.mlflow and spec.mlflow.experiment_name) or spec.name


def tracker_lines(spec: SweepSpec, sweep_dir: str) -> list[str]:
    """Where the trackers of new trials write (continued ones keep what their run started with)."""
    lines = []
    if "mlflow" in spec.loggers:
        uri, experiment = mlflow_destination(spec, sweep_dir)
        lines.append(f"raylab: mlflow: experiment {experiment!r} at {uri} (browse: mlflow ui --backend-store-uri {uri})")
    if "wandb" in spec.loggers:
        wandb, folder = spec.wandb_spec(), local_folder(sweep_dir)
        where = f", files in {folder}/wandb (upload: wandb sync {folder}/wandb/offline-run-*)" if wandb.mode == "offline" else ""
        lines.append(f"raylab: wandb: {wandb.mode}, project {wandb.project!r}, group {spec.name!r}{where}")
    return lines
