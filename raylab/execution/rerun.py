"""What running a sweep file again does with the runs already in its sweep folder.

Pressing up-arrow after an interrupt must not throw work away. Each trial of the sweep (identified
by its `config_hash`, the same configuration) is, depending on its newest state in earlier runs:

- finished or diverged: skipped;
- unfinished (interrupted, or never started) in a run Tune can restore: continued there from its
  last checkpoint, by restoring that run (`raylab resume` does the same);
- errored: started again from step 0 in the new run (said in one line; `raylab resume --errored
  resume FOLDER` continues it from its checkpoint instead);
- absent: started in the new run.

A run is only restored when every unfinished trial in it belongs to this sweep: restoring it would
otherwise also run trials that the sweep file no longer lists. Then the plan is `blocked`, and the
command stops with one line pointing to `raylab resume <run>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raylab.planning import storage
from raylab.results.collect import MANIFEST, collect_run, finished_searches

if TYPE_CHECKING:
    from raylab.planning.sweep import Sweep

UNFINISHED = ("unfinished", "pending")
DONE = ("finished", "diverged", "stopped")  # stopped: by a search's scheduler, an outcome too


@dataclass
class RerunPlan:
    new: list[dict] = field(default_factory=list)  # trials to start in a new run-* folder
    finished: list[dict] = field(default_factory=list)  # finished in an earlier run: skipped
    continued: dict[str, list[dict]] = field(default_factory=dict)  # earlier run -> its unfinished trials of this sweep
    errored: list[dict] = field(default_factory=list)  # errored earlier: in `new`, from step 0
    blocked: tuple[str, int] | None = None  # (run, its unfinished trials that this sweep does not list)


@dataclass
class EarlierRun:
    location: str  # the run folder (local path or URI), what `Tuner.restore` takes
    restorable: bool  # Tune saved its experiment state: `Tuner.restore` can continue it
    status: dict[str, str]  # config_hash -> status of the trial in this run
    code: dict[str, str] = field(default_factory=dict)  # config_hash -> code_version that computed it (docs/identity.md)


def sweep_directory(sweep: Sweep) -> str:
    """`<storage>/<sweep name>` (a local path or a URI): every run of one sweep lives here, each in
    its own `run-*`."""
    return storage.join(storage.absolute(sweep.spec.storage), sweep.spec.name)


def earlier_runs(sweep_location: str) -> list[EarlierRun]:
    """The runs of a sweep folder, oldest first, with each trial's status (empty if no folder)."""
    if not storage.is_dir(sweep_location):
        return []
    runs = []
    with storage.local_copy(sweep_location) as local:
        for run_dir in sorted(p for p in local.glob("*/") if (p / MANIFEST).is_file()):
            rows = [row for row, _ in collect_run(run_dir)]
            status = {row["config_hash"]: row["status"] for row in rows}
            code = {row["config_hash"]: row["code_version"] for row in rows}
            # A searched trial of the sweep file is its search's base: done once all its samples ended.
            status.update({base: "finished" for base in finished_searches(rows)})
            restorable = any(run_dir.glob("experiment_state-*.json")) and (run_dir / "tuner.pkl").is_file()
            runs.append(EarlierRun(storage.join(sweep_location, run_dir.name), restorable, status, code))
    return runs


def plan_rerun(trials: list[dict], runs: list[EarlierRun]) -> RerunPlan:
    """Sort the sweep's resolved `trials` by what earlier `runs` (oldest first) did with them."""
    done = {h for run in runs for h, status in run.status.items() if status in DONE}
    newest: dict[str, str] = {}  # config_hash -> its status in the newest run that holds it
    owner: dict[str, EarlierRun] = {}  # unfinished config_hash -> the newest restorable run holding it
    for run in runs:
        for config_hash, status in run.status.items():
            newest[config_hash] = status
            if status in UNFINISHED and run.restorable:
                owner[config_hash] = run
    plan = RerunPlan()
    wanted = {trial["config_hash"] for trial in trials}
    for trial in trials:
        config_hash = trial["config_hash"]
        if config_hash in done:
            plan.finished.append(trial)
        elif config_hash in owner:
            plan.continued.setdefault(owner[config_hash].location, []).append(trial)
        else:
            plan.new.append(trial)
            if newest.get(config_hash) == "errored":
                plan.errored.append(trial)
    for run in runs:
        if run.location not in plan.continued:
            continue
        # Trials that a restore of this run would also train: not in this sweep, or owned by a newer run.
        others = [h for h, s in run.status.items() if s in UNFINISHED and h not in done and (h not in wanted or owner.get(h) is not run)]
        if others:
            plan.blocked = (run.location, len(others))
            break
    return plan


def finished_code_versions(runs: list[EarlierRun]) -> dict[str, str]:
    """config_hash -> code_version of the trials that finished (or diverged) in earlier runs."""
    return {h: run.code.get(h, "unknown") for run in runs for h, status in run.status.items() if status in DONE}


def describe(plan: RerunPlan, total: int, sweep_dir: str) -> list[str]:
    """The lines `raylab run` (and `--dry-run`) prints about earlier runs, empty for a fresh sweep."""
    lines = []
    if plan.finished:
        lines.append(f"raylab: {len(plan.finished)} of {total} trials already finished in {sweep_dir}; skipping them")
    for run, continued in plan.continued.items():
        lines.append(f"raylab: continuing {len(continued)} unfinished trial(s) from their checkpoints in {run}")
    if plan.errored:
        lines.append(
            f"raylab: {len(plan.errored)} trial(s) errored in an earlier run and start again from step 0; "
            f"to continue them from their checkpoints instead: raylab resume --errored resume {sweep_dir}"
        )
    return lines


def blocked_message(plan: RerunPlan) -> str:
    run, count = plan.blocked
    name = Path(str(run).rstrip("/")).name
    return (
        f"{name} has unfinished trials of this sweep and {count} that this sweep file no longer lists; "
        f"continue them all with `raylab resume {run}`, then run the sweep file again"
    )
