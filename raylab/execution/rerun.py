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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raylab.planning import storage
from raylab.planning.trials import config_hash
from raylab.results.collect import DONE_STATUSES, MANIFEST, collect_run

if TYPE_CHECKING:
    from raylab.planning.sweep import Sweep

UNFINISHED = ("unfinished", "pending")
DONE = DONE_STATUSES  # finished, diverged, or stopped by a search's scheduler: an outcome each


@dataclass
class RerunPlan:
    new: list[dict] = field(default_factory=list)  # trials to start in a new run-* folder
    finished: list[dict] = field(default_factory=list)  # finished in an earlier run: skipped
    continued: dict[str, list[dict]] = field(default_factory=dict)  # earlier run -> its unfinished trials of this sweep
    errored: list[dict] = field(default_factory=list)  # errored earlier: in `new`, from step 0
    blocked: tuple[str, int] | None = None  # (run, its unfinished trials that this sweep does not list)
    searched_otherwise: list[tuple[dict, str]] = field(default_factory=list)  # (new trial, how its earlier search differed)


@dataclass
class EarlierRun:
    location: str  # the run folder (local path or URI), what `Tuner.restore` takes
    restorable: bool  # Tune saved its experiment state: `Tuner.restore` can continue it
    status: dict[str, str]  # config_hash -> status of the plain (unsearched) trial in this run
    code: dict[str, str] = field(default_factory=dict)  # config_hash -> code_version that computed it (docs/identity.md)
    # A search is one unit of a sweep file, its base trial's hash (`search_base`) the key: kept apart
    # from `status`, because a search run before raylab recorded the search's identity has the same
    # hash as the plain trial of its slot, and must never stand for it.
    searches: dict[str, str] = field(default_factory=dict)  # search_base -> status of the whole search in this run
    search_code: dict[str, str] = field(default_factory=dict)  # search_base -> code_version(s) of its samples
    searched_slots: dict[str, dict | None] = field(default_factory=dict)  # slot_hash -> the search identity run on it (None: not recorded)
    loggers: list[str] = field(default_factory=list)  # the loggers it started with, which Tune's restore keeps


def sweep_directory(sweep: Sweep) -> str:
    """`<storage>/<sweep name>` (a local path or a URI): every run of one sweep lives here, each in
    its own `run-*`."""
    return storage.join(storage.absolute(sweep.spec.storage), sweep.spec.name)


def slot_hash(trial: dict) -> str:
    """The hash of a trial without its search: what a search samples from, or the plain trial itself."""
    return config_hash({k: v for k, v in trial.items() if k != "search"})


def search_status(samples: list[dict]) -> str:
    """The status of one search in one run from its samples' rows: finished once `search_samples` (times `seeds_per_sample`) of
    them ended (finished, stopped or diverged); unfinished while Tune has a sample to run or the
    searcher has samples left to draw; errored when every sample ended and one of them errored."""
    wanted = max(int(row.get("search_samples") or 1) * seeds_per_sample(row) for row in samples)
    done = sum(row["status"] in DONE for row in samples)
    errored = sum(row["status"] == "errored" for row in samples)
    if done >= wanted:
        return "finished"
    if any(row["status"] in UNFINISHED for row in samples) or done + errored < wanted:
        return "unfinished"
    return "errored"


def seeds_per_sample(row: dict) -> int:
    """The trials of each sample of the search a row belongs to (`search.seeds_per_sample`, recorded in its identity)."""
    try:
        search = json.loads(row.get("trial_json") or "{}").get("search") or {}
    except ValueError:
        return 1
    return int(search.get("seeds_per_sample") or 1)


def earlier_runs(sweep_location: str) -> list[EarlierRun]:
    """The runs of a sweep folder, oldest first, with each trial's status (empty if no folder)."""
    if not storage.is_dir(sweep_location):
        return []
    runs = []
    with storage.local_copy(sweep_location) as local:
        for run_dir in sorted(p for p in local.glob("*/") if (p / MANIFEST).is_file()):
            rows = [trial.row for trial in collect_run(run_dir)]
            run = EarlierRun(storage.join(sweep_location, run_dir.name), restorable(run_dir), {})
            samples: dict[str, list[dict]] = {}
            manifest = manifest_of(run_dir)
            bases = searched_bases(manifest)
            for row in rows:
                if row.get("search_base"):
                    samples.setdefault(row["search_base"], []).append(row)
                elif row["config_hash"] in bases:
                    run.searches[row["config_hash"]] = row["status"]  # a search none of whose samples Tune recorded yet
                else:
                    run.status[row["config_hash"]] = row["status"]
                    run.code[row["config_hash"]] = row["code_version"]
            for base, rows_of_search in samples.items():
                run.searches[base] = search_status(rows_of_search)
                run.search_code[base] = "; ".join(sorted({str(row["code_version"]) for row in rows_of_search}))
            run.searched_slots = searched_slots(manifest)
            run.loggers = manifest_loggers(manifest)
            runs.append(run)
    return runs


def restorable(run_dir: Path) -> bool:
    """Tune saved its experiment state: `Tuner.restore` can continue the run."""
    return any(run_dir.glob("experiment_state-*.json")) and (run_dir / "tuner.pkl").is_file()


def manifest_of(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}  # unreadable: collect_run has said so; such a run holds no search we can name


def manifest_loggers(manifest: dict) -> list[str]:
    """The loggers a run started with (its sweep file's, with `--logger`'s), which its restore keeps."""
    loggers = (manifest.get("sweep") or {}).get("loggers") or []
    return [name for name in loggers if isinstance(name, str)] if isinstance(loggers, list) else []


def added_loggers_message(plan: RerunPlan, runs: list[EarlierRun], loggers: list[str]) -> str | None:
    """One line when a run this re-run would continue started without a logger the sweep asks for now.

    Tune's restore brings back the callbacks a run started with (pickled in its tuner.pkl), so a
    logger added since would be silently missing from the continued trials; None when nothing is."""
    started = {run.location: run.loggers for run in runs}
    for location in plan.continued:
        added = [name for name in loggers if name not in started.get(location, [])]
        if added:
            name = Path(str(location).rstrip("/")).name
            return (
                f"loggers: {', '.join(added)} would be missing from the {len(plan.continued[location])} trial(s) continued in {name}, "
                f"which started with loggers [{', '.join(started.get(location, []))}] (a continued run keeps its loggers); "
                f"finish it without {', '.join(added)} first (or `raylab resume {location}`), then run with them: the new trials get them"
            )
    return None


def searched_bases(manifest: dict) -> set[str]:
    """Hashes of the base trials a run searched from (its manifest lists them, with their search)."""
    searched = bool((manifest.get("sweep") or {}).get("search"))
    return {t["config_hash"] for t in manifest.get("trials", []) if isinstance(t, dict) and searched and "config_hash" in t}


def searched_slots(manifest: dict) -> dict[str, dict | None]:
    """slot_hash -> the search identity a run ran on that slot; None for a run written before raylab
    recorded the identity (its base trials have no `search` key)."""
    if not (manifest.get("sweep") or {}).get("search"):
        return {}
    slots = {}
    for trial in manifest.get("trials", []):
        try:
            slots[slot_hash(trial)] = trial.get("search")
        except (KeyError, TypeError, AttributeError):
            continue
    return slots


def trial_key(trial: dict) -> tuple[str, str]:
    """A search (its base trial) and a plain trial are looked up in different tables of a run."""
    return ("search" if trial.get("search") is not None else "trial", trial["config_hash"])


def run_states(run: EarlierRun) -> dict[tuple[str, str], str]:
    return {**{("trial", h): s for h, s in run.status.items()}, **{("search", h): s for h, s in run.searches.items()}}


def plan_rerun(trials: list[dict], runs: list[EarlierRun]) -> RerunPlan:
    """Sort the sweep's resolved `trials` by what earlier `runs` (oldest first) did with them.

    A trial of a `search:` is its whole search: skipped once all its samples ended, continued (the
    run restored, its searcher's state with it) while Tune or the searcher has samples left."""
    states = {run.location: run_states(run) for run in runs}
    done = {key for run in runs for key, status in states[run.location].items() if status in DONE}
    newest: dict[tuple[str, str], str] = {}  # key -> its status in the newest run that holds it
    owner: dict[tuple[str, str], EarlierRun] = {}  # unfinished key -> the newest restorable run holding it
    for run in runs:
        for key, status in states[run.location].items():
            newest[key] = status
            if status in UNFINISHED and run.restorable:
                owner[key] = run
    plan = RerunPlan()
    wanted = {trial_key(trial) for trial in trials}
    for trial in trials:
        key = trial_key(trial)
        if key in done:
            plan.finished.append(trial)
        elif key in owner:
            plan.continued.setdefault(owner[key].location, []).append(trial)
        else:
            plan.new.append(trial)
            if newest.get(key) == "errored":
                plan.errored.append(trial)
            elif key[0] == "trial" or key not in newest:
                difference = earlier_search_difference(trial, runs)
                if difference:
                    plan.searched_otherwise.append((trial, difference))
    for run in runs:
        if run.location not in plan.continued:
            continue
        # Trials that a restore of this run would also train: not in this sweep, or owned by a newer run.
        others = [k for k, s in states[run.location].items() if s in UNFINISHED and k not in done and (k not in wanted or owner.get(k) is not run)]
        if others:
            plan.blocked = (run.location, len(others))
            break
    return plan


def earlier_search_difference(trial: dict, runs: list[EarlierRun]) -> str:
    """How the newest earlier search on this trial's slot differs from what the sweep asks now
    (`num_samples 3 -> 6`), or "" if none was run on it."""
    if not any(run.searched_slots for run in runs):
        return ""  # no search ever ran in this sweep folder
    slot = slot_hash(trial)
    earlier = [run.searched_slots[slot] for run in runs if slot in run.searched_slots]
    if not earlier:
        return ""
    before, now = earlier[-1], trial.get("search")
    if now is None:
        return "the search: section is gone"
    if before is None:
        return "searched by an older raylab, which did not record the search: section"
    changed = [key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if changed == ["num_samples"]:
        return f"num_samples {before['num_samples']} -> {now['num_samples']}"
    return ", ".join(changed) + " changed" if changed else ""


def finished_code_versions(runs: list[EarlierRun], trials: list[dict]) -> dict[str, str]:
    """config_hash -> code_version of those `trials` that finished (or diverged) in earlier runs; for
    a search, the code versions of its samples ("; "-joined where they differ)."""
    versions: dict[str, str] = {}
    for run in runs:
        for trial in trials:
            kind, config_hash = trial_key(trial)
            status = (run.searches if kind == "search" else run.status).get(config_hash)
            code = (run.search_code if kind == "search" else run.code).get(config_hash)
            if status in DONE and code is not None:
                versions[config_hash] = code
    return versions


def describe(plan: RerunPlan, total: int, sweep_dir: str) -> list[str]:
    """The lines `raylab run` (and `--dry-run`) prints about earlier runs, empty for a fresh sweep."""
    lines = []
    if plan.finished:
        lines.append(f"raylab: {len(plan.finished)} of {total} trials already finished in {sweep_dir}; skipping them")
    for run, continued in plan.continued.items():
        lines.append(f"raylab: continuing {len(continued)} unfinished trial(s) from their checkpoints in {run}")
    if plan.searched_otherwise:
        count, reasons = len(plan.searched_otherwise), "; ".join(sorted({reason for _, reason in plan.searched_otherwise}))
        if plan.searched_otherwise[0][0].get("search") is None:
            lines.append(f"raylab: {count} trial(s) of this sweep were searched before in {sweep_dir}; without a search: section "
                         "they are plain trials, new ones (the earlier search's trials are kept as rows of their own)")
        else:
            lines.append(f"raylab: {count} configuration(s) were searched before in {sweep_dir} with another search: section "
                         f"({reasons}): a new search starts for each, from step 0 (the earlier search's trials are kept as rows of their own)")
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
