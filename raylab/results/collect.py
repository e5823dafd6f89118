"""Experiment directories -> `trials.parquet` and `curves.parquet` (schema in docs/results.md).

`collect(location)` reads every run of a sweep (`<storage>/<sweep>/run-*`) or one run directory, on
local disk or at a URI (`s3://`, `gs://`; see storage.py), and writes, into it:

- `trials.parquet`: one row per trial. When several runs hold the same resolved trial (same
  `config_hash`), the row kept is the most complete one (finished or diverged, then errored, then
  unfinished), the newest among equals, so each trial appears once.
- `curves.parquet`: tidy (`trial_id`, `step`, `metric`, `value`) rows, one per reported metric point,
  de-duplicated on (trial_id, step, metric) keeping the last report: Tune re-reports the steps between
  the last checkpoint and a failure after a restore.

A collect reads only the runs and trials whose files changed since the last one (`.collect-cache.json`,
raylab/results/incremental.py) and writes what a collect from scratch writes.

Both files are written atomically (a temporary file, then a rename): a reader never sees half a file.
They are a pair: both carry the id of the collect that wrote them in their Parquet metadata, and
curves.parquet is replaced first, trials.parquet last, so a trials file never stands beside older
curves unnoticed. Every reader goes through `fresh_results` (docs/results.md, "Freshness").
Analysis never parses directory names; everything comes from the stored configs and results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylab.planning import storage
from raylab.training.ending import terminated_status
from raylab.training.metrics import metric_mode
from raylab.training.reports import LINEAGE_KEY, REPORTS_FILE, read_reports
from raylab.results import incremental as cache
from raylab.results.provenance import code_version
from raylab.results.rowtable import PreviousRow, assembled_table

TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
MANIFEST = "raylab.json"
RESULT_FILE = "result.json"
# `stopped`: ended from outside the training loop, by a search's scheduler (ASHA): a result of the
# search, not a failure. `finished`: the loop ended it at its budget or by `lr_stop_below`.
STATUS_RANK = {"finished": 3, "diverged": 3, "stopped": 3, "errored": 2, "unfinished": 1, "pending": 0}
DONE_STATUSES = ("finished", "diverged", "stopped")
TRACKER_FOLDERS = ("wandb", "mlartifacts")  # beside the runs: W&B's offline files, MLflow's artifacts (docs/trackers.md)
ENDED_TUNE_STATUSES = ("TERMINATED", "ERROR")
TUNE_STATUS = {"TERMINATED": "finished", "ERROR": "errored", "RUNNING": "unfinished", "PAUSED": "unfinished", "PENDING": "pending"}


class ResultsError(ValueError):
    """No experiment where one was expected; the message names the path."""


def run_locations(location: str | Path) -> list[str]:
    """The runs of a sweep directory (local or URI), oldest first, or `[location]` if it is a run."""
    if storage.exists(storage.join(location, MANIFEST)):
        return [str(location)]
    fs, root = storage.filesystem(location)
    folders = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(PurePosixPath(f.path).name for f in folders if f.type == pafs.FileType.Directory)
    runs = [storage.join(location, name) for name in names if storage.exists(storage.join(location, name, MANIFEST))]
    if not runs:
        raise not_an_experiment(location)
    return runs


def not_an_experiment(location: str | Path) -> ResultsError:
    return ResultsError(f"{location}: no raylab experiment here (expected {MANIFEST} in it or in its run-* folders)")


COLLECT_ID = b"raylab.collect_id"  # Parquet metadata key: which collect wrote the file


def read_table(location: str | Path) -> pd.DataFrame:
    """A Parquet file from a local path or a URI, as a DataFrame."""
    return read_arrow(location).to_pandas()


def read_arrow(location: str | Path) -> pa.Table:
    """A Parquet file from a local path or a URI, as an Arrow table (its metadata kept)."""
    fs, path = storage.filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        if not str(location).endswith(".parquet"):  # neither a folder (that would have been looked into) nor a file
            raise ResultsError(f"{location}: no such experiment folder or Parquet file")
        raise ResultsError(f"{location}: no such file (run `raylab collect` on the experiment first)")
    try:
        return pq.read_table(path, filesystem=fs)
    except (pa.ArrowException, OSError) as error:
        experiment = str(location).rstrip("/").rsplit("/", 1)[0]
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResultsError(f"{location}: not a readable Parquet file, garbage or truncated ({reason}); `raylab collect {experiment}` rebuilds it") from None


def collect_id(table: pa.Table) -> str | None:
    """The id of the collect that wrote a Parquet table, or None (written before ids, or by hand)."""
    value = (table.schema.metadata or {}).get(COLLECT_ID)
    return value.decode() if value else None


def file_collect_id(location: str) -> str | None:
    """`collect_id` of a Parquet file read from its footer only, or None when it is unreadable."""
    fs, path = storage.filesystem(location)
    try:
        value = (pq.read_schema(path, filesystem=fs).metadata or {}).get(COLLECT_ID)
    except (pa.ArrowException, OSError):
        return None  # a garbage file: stale, so it is rebuilt
    return value.decode() if value else None


def is_experiment(location: str | Path) -> bool:
    """A folder that holds a raylab run (its `raylab.json`) or runs of a sweep, so it can be collected."""
    try:
        run_locations(location)
    except (ResultsError, OSError):
        return False
    return True


def stale_reason(location: str | Path) -> str | None:
    """Why the Parquet pair of an experiment folder cannot be served as it is, or None when fresh:
    a file missing, the two from different collects, or a result newer than trials.parquet."""
    trials, curves = storage.join(location, TRIALS_FILE), storage.join(location, CURVES_FILE)
    if not storage.exists(trials):
        return f"{location}: not collected yet"
    if not storage.exists(curves):
        return f"{curves} is missing"
    trials_id = file_collect_id(trials)
    if trials_id is None or trials_id != file_collect_id(curves):
        return f"{trials} and {CURVES_FILE} are not from one collect"
    changed = newer_than_trials_file(location)
    return None if changed is None else f"{changed} changed after the last collect"


def fresh_results(location: str | Path) -> None:
    """The freshness rule of every reader (table, plot, best, --vs, --layout paper, the Python loaders):
    an experiment folder whose Parquet pair is missing or stale (`stale_reason`) is collected again,
    saying so on stderr. Where that cannot be written (a read-only folder or bucket), one line refuses
    rather than serve stale numbers. A folder that holds no experiment (Parquet files copied on their
    own) has nothing to be fresher than: its files are read as they are."""
    if not storage.is_dir(location) or not is_experiment(location):
        return
    reason = stale_reason(location)
    if reason is None:
        return
    print(f"raylab: {reason}; collecting again", file=sys.stderr, flush=True)
    try:
        collect(location)
    except OSError as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResultsError(f"{location}: results are stale ({reason}) and collecting again failed ({text}); collect a writable copy (`raylab collect COPY`)") from None


def experiment_of(location: str | Path) -> str | None:
    """The experiment folder whose Parquet file `location` names (`DIR/trials.parquet`), or None."""
    text = str(location).rstrip("/")
    folder, _, name = text.rpartition("/")
    if name in (TRIALS_FILE, CURVES_FILE) and folder:
        return folder
    return None


def read_results(trial_dir: Path | None) -> list[dict]:
    """The rows of the trial's last attempt (JSON lines), skipping a torn last line from a killed writer,
    with the reports its result.json lost filled in from its newest checkpoint (`with_checkpoint_reports`)."""
    if trial_dir is None or not (trial_dir / RESULT_FILE).is_file():
        return []
    rows = []
    for line in (trial_dir / RESULT_FILE).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return with_checkpoint_reports(last_attempt(rows), trial_dir)


def last_attempt(rows: list[dict]) -> list[dict]:
    """The rows of the last chain of attempts: the last start afresh and the restores that continued it.

    Tune appends every attempt to one result.json. An attempt restored from a checkpoint continues
    the one before it (Tune carries `training_iteration` on; its re-reported steps replace the old
    ones in `curve_points`), but an attempt started without a checkpoint (a trial whose checkpoint
    was not recorded when its driver died, a restart) shares nothing with the earlier attempt. A curve
    holds one chain: an earlier chain's later steps would otherwise stay in the curve and in `final/*`
    when the new one ends sooner. Reports name their chain (`lineage`, raylab/training/reports.py);
    older ones are cut at the last `training_iteration` 1, where a fresh start counts from.
    """
    lineage = rows[-1].get(LINEAGE_KEY) if rows else None
    if lineage is not None:
        return [row for row in rows if row.get(LINEAGE_KEY) == lineage]
    starts = [i for i, row in enumerate(rows) if row.get("training_iteration") == 1]
    return rows[starts[-1]:] if starts else rows


def with_checkpoint_reports(rows: list[dict], trial_dir: Path) -> list[dict]:
    """`rows` and the reports of the same chain that only the trial's newest checkpoint holds.

    A driver killed while it uploaded the experiment state can leave a result.json older than the
    checkpoint the trial was restored from (raylab/training/reports.py); the checkpoint's own copy of
    the reports fills the gap. A report counts as lost when it has a metric at a step that no row has:
    a trial restored from its last checkpoint may report that step again with fewer metrics (a
    final-split report) while the lost report held the training metrics too. A checkpoint of
    another chain, or written before the copy, adds nothing.
    """
    if not rows or rows[-1].get(LINEAGE_KEY) is None:
        return rows
    checkpoints = sorted(path for path in trial_dir.glob("checkpoint_*") if (path / REPORTS_FILE).is_file())
    if not checkpoints:
        return rows
    lineage, reports = read_reports(checkpoints[-1])
    if lineage != rows[-1][LINEAGE_KEY]:
        return rows
    have = {(row.get("step"), key) for row in rows for key in row if "/" in key}
    lost = [report for report in reports if report.get("step") is not None and any((report["step"], key) not in have for key in report if "/" in key)]
    if not lost:
        return rows
    # Stable, lost reports first: at a step both hold, the rows result.json kept are the later reports and win.
    return sorted(lost + rows, key=lambda row: row["step"])


def curve_points(trial_id: str, results: list[dict]) -> dict[tuple[str, int, str], float]:
    """(trial, step, metric) -> value, the last report winning. Metrics are the `split/name` keys."""
    points = {}
    for row in results:
        step = row.get("step")
        if step is None:
            continue
        for key, value in row.items():
            if "/" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                points[(trial_id, int(step), key)] = float(value)
    return points


def summarize_curve(points: dict[tuple[str, int, str], float]) -> dict[str, float]:
    """final/<metric> (value at the last step that reported it) and best/<metric> (min or max)."""
    by_metric: dict[str, list[tuple[int, float]]] = {}
    for (_, step, metric), value in points.items():
        by_metric.setdefault(metric, []).append((step, value))
    summary = {}
    for metric, series in sorted(by_metric.items()):
        series.sort()
        summary[f"final/{metric}"] = series[-1][1]
        finite = [v for _, v in series if math.isfinite(v)]
        if finite:
            summary[f"best/{metric}"] = max(finite) if metric_mode(metric) == "max" else min(finite)
    return summary


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Nested config -> `config.cell.nonlinearity` columns; lists become JSON text."""
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}", item, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(list(value))
    else:
        out[prefix] = value


def trial_row(run: str, trial_id: str, status: str, config: dict, trial_dir: Path | None, error: str | None) -> tuple[dict, dict]:
    """One trials.parquet row and the trial's curve points."""
    return row_of_results(run, trial_id, status, config, read_results(trial_dir), error)


def row_of_results(run: str, trial_id: str, status: str, config: dict, results: list[dict], error: str | None) -> tuple[dict, dict]:
    """`trial_row` of the reports `read_results` gave."""
    trial, runtime = config["trial"], config.get("runtime", {})
    if config.get("sample"):  # a searched trial: the base trial with its sampled values (raylab.planning.space)
        from raylab.planning.space import resolved_trial  # torch: only for searched trials

        trial = resolved_trial(config)
    points = curve_points(trial_id, results)
    if status == "finished":  # Tune terminated it: why, the loop recorded (raylab.training.ending)
        status = terminated_status(results, bool(config.get("sample")), trial["training"])
    if status == "pending" and results:
        status = "unfinished"  # Tune files an interrupted trial as PENDING again; it did train

    provenance = runtime.get("provenance", {})
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "run": run,
        "config_hash": trial["config_hash"],
        "status": status,
        "variant": trial["variant"],
        "task": trial["task"]["name"],
        "cell": trial["cell"]["name"],
        "task_label": trial.get("task_label", ""),  # the task options that differ within the sweep, e.g. bptt=300
        "budget": trial.get("budget"),  # the parameter budget the hidden size was solved for, if any
        "hidden_size": trial["hidden_size"],
        "seed": trial["seed"],
        "n_params": trial["n_params"],
        "steps": max((int(r["step"]) for r in results if "step" in r), default=0),
        "wall_time_s": max((float(r.get("time_total_s", 0.0)) for r in results), default=0.0),
        "error": error,
        "git_commit": provenance.get("git_commit"),
        "search_base": trial.get("search_base"),  # a searched trial: config_hash of the trial it was sampled from
        "search_samples": config.get("search_samples"),
        "trial_json": json.dumps(trial, sort_keys=True),  # the exact resolved trial, for `raylab best`
        "user_code": trial.get("user_code"),  # hash of the user modules' source (import-path cells and tasks), else None
        "code_version": code_version(provenance, trial.get("user_code")),  # not identity: see raylab/results/identity.py
    }
    for package, version in provenance.get("versions", {}).items():
        row[f"version.{package}"] = version
    for key in ("task", "cell", "optimizer", "training"):
        flatten(f"config.{key}", trial[key], row)
    if trial.get("search") is not None:  # a search's identity is configuration: two searches never share a row
        flatten("config.search", trial["search"], row)
    row.update(summarize_curve(points))
    return row, points


def last_line(path: str | Path | None) -> str | None:
    """The last non-blank line of a file (the exception line of Tune's error.txt), or None."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        return None
    return lines[-1] if lines else None


@dataclasses.dataclass(frozen=True)
class StateTrial:
    """What raylab reads of one trial in Tune's experiment state."""

    trial_id: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    config: dict
    dirname: str | None  # the trial's folder in the run folder
    metadata: Any = None  # Tune's run metadata of the trial (JSON text), read only by `last_iteration`

    def last_iteration(self) -> int | None:
        """`training_iteration` of the last result Tune recorded for the trial, or None."""
        try:
            metadata = json.loads(self.metadata) if isinstance(self.metadata, str) else self.metadata
            return (metadata.get("last_result") or {}).get("training_iteration")
        except (ValueError, AttributeError):
            return None


def state_trials(run_dir: str | Path) -> list[StateTrial]:
    """The trials of a run's newest experiment state (local folder or URI), read as plain JSON.

    Tune's own reader (`ExperimentAnalysis`) unpickles every trial's storage context,
    resources and name creators, and the creators import raylab's Ray layer and torch: 4 of the 6 s
    of collecting 1,000 trials, for four fields that are plain JSON in the file. The newest state is
    Tune's choice: the greatest file name (`experiment_state-<timestamp>.json`).
    Raises FileNotFoundError without a state, ValueError on one that cannot be read."""
    fs, root = storage.filesystem(run_dir)
    names = [PurePosixPath(info.path).name for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))]
    states = sorted(name for name in names if name.startswith("experiment_state-") and name.endswith(".json"))
    if not states:
        raise FileNotFoundError(f"{run_dir}: no experiment state")
    with fs.open_input_stream(f"{root.rstrip('/')}/{states[-1]}") as stream:
        state = json.loads(stream.read())
    trials = []
    try:
        for json_state, metadata in state["trial_data"]:
            trial = json.loads(json_state) if isinstance(json_state, str) else json_state
            trials.append(StateTrial(str(trial["trial_id"]), str(trial["status"]), trial["config"], trial.get("relative_logdir"), metadata))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{run_dir}/{states[-1]}: not a Tune experiment state ({type(error).__name__}: {error})") from None
    return trials


@dataclasses.dataclass
class Collected:
    """One trial of a run as collect read it."""

    row: dict
    points: dict | None  # None: taken from the previous collect, with its points in that collect's curves.parquet
    tune_status: str | None  # None: a trial of the manifest that Tune never made
    dirname: str | None
    # Ended for good: Tune's state says the trial ended, and its row holds the last result the state
    # records (and its error line, if it errored): nothing will change its files (incremental.py).
    settled: bool = False


Reuse = Callable[[StateTrial], "dict | None"]  # the previous collect's row of an unchanged trial, or None


def collect_run(run_dir: Path, run_name: str | None = None, reuse: Reuse | None = None, said: list[str] | None = None) -> list[Collected]:
    """The trials of one run, in the manifest's order. Trials that never started come from the manifest,
    as `pending`. `reuse` offers rows of the previous collect (raylab/results/incremental.py); what is
    skipped as unreadable is also appended to `said`."""
    run_name = run_name or run_dir.name
    collected: list[Collected] = []
    seen_hashes = set()
    try:
        trials = state_trials(run_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        trials = []  # killed before Tune saved any experiment state: the manifest lists the trials as pending
        if any(run_dir.glob("experiment_state-*.json")):  # a state that exists but cannot be read is not "pending"
            raise ResultsError(f"{run_dir}: Tune's experiment state is unreadable ({type(error).__name__}: {(str(error).splitlines() or [''])[0]})") from None
    ended = bool(trials) and all(trial.status in ENDED_TUNE_STATUSES for trial in trials)  # the run may be settled
    for trial in trials:
        previous = reuse(trial) if reuse is not None else None
        if previous is not None:
            collected.append(Collected(previous, None, trial.status, trial.dirname, settled=ended and previous[cache.PREVIOUS_KEY]["settled"]))
            seen_hashes.add(previous["config_hash"])
            continue
        # The trial's folder in storage, found by name inside this run folder, which may be a local
        # mirror of a bucket (`local_path` is a node's staging copy, gone after a restore).
        trial_dir = run_dir / trial.dirname if trial.dirname else None
        trial_dir = trial_dir if trial_dir is not None and trial_dir.is_dir() else None
        status = TUNE_STATUS.get(trial.status, "unfinished")
        error = last_line(trial_dir / "error.txt") if status == "errored" and trial_dir else None
        with skipped_if_unreadable(f"{run_name}/{trial_dir.name if trial_dir else trial.trial_id}", said):
            results = read_results(trial_dir)
            row, points = row_of_results(run_name, trial.trial_id, status, trial.config, results, error)
            settled = ended and (status != "errored" or error is not None) and trial.last_iteration() == max(
                (r["training_iteration"] for r in results if isinstance(r.get("training_iteration"), int)), default=None)
            collected.append(Collected(row, points, trial.status, trial.dirname, settled=settled))
            seen_hashes.add(trial.config["trial"]["config_hash"])
    with skipped_if_unreadable(f"{run_name}/{MANIFEST}", said):
        manifest = json.loads((run_dir / MANIFEST).read_text())
        for index, trial in enumerate(manifest["trials"]):
            if trial["config_hash"] not in seen_hashes:
                config = {"trial": trial, "runtime": manifest.get("runtime", {})}
                with skipped_if_unreadable(f"{run_name}/{MANIFEST} trial {index}", said):
                    row, points = trial_row(run_name, f"{run_name}-{index}", "pending", config, None, None)
                    collected.append(Collected(row, points, None, None))
        order = {trial["config_hash"]: index for index, trial in enumerate(manifest["trials"])}
        collected.sort(key=lambda item: order.get(item.row["config_hash"], len(order)))  # the sweep file's order, which tables keep
    return collected


@contextlib.contextmanager
def skipped_if_unreadable(what: str, said: list[str] | None = None) -> Iterator[None]:
    """One unreadable trial (or manifest) is skipped with one line on stderr; the others are collected."""
    try:
        yield
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        line = f"raylab: warning: {what}: skipped, unreadable ({type(error).__name__}: {reason})"
        print(line, file=sys.stderr, flush=True)
        if said is not None:
            said.append(line)


def newer_than_trials_file(location: str | Path) -> str | None:
    """A file or run folder of the experiment changed after its trials.parquet was written (so the
    Parquet is stale), or None. Checkpoint folders are not looked into: they never change a table."""
    fs, root = storage.filesystem(location)
    collected = fs.get_file_info(f"{root.rstrip('/')}/{TRIALS_FILE}")
    if collected.type != pafs.FileType.File:
        return None
    written = collected.mtime_ns
    # The sweep folder's own mtime is left out: writing the Parquet files changes it.
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        relative = PurePosixPath(info.path).relative_to(root)
        if relative.name in (TRIALS_FILE, CURVES_FILE) or any(part.startswith("checkpoint_") for part in relative.parts):
            continue
        if relative.parts[0] in TRACKER_FOLDERS:
            continue  # a tracker's own files (`wandb sync` marks them later) are not results
        if len(relative.parts) == 1 and info.type == pafs.FileType.File:
            continue  # a file beside the runs (a figure of the `plot:` section) is not a result
        if info.mtime_ns is not None and written is not None and info.mtime_ns > written:
            return storage.join(location, *relative.parts)
    return None


def keep_one_per_config(rows: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Each resolved trial once: the most complete status wins, then the newest run."""
    best: dict[str, tuple[dict, dict]] = {}
    for row, points in rows:  # runs are in chronological order, so later rows win ties
        current = best.get(row["config_hash"])
        if current is None or STATUS_RANK[row["status"]] >= STATUS_RANK[current[0]["status"]]:
            best[row["config_hash"]] = (row, points)
    return list(best.values())


def write_parquet_atomic(table: pa.Table, path: Path, collect_id: str | None = None) -> None:
    """Write to a temporary file beside `path`, then rename over it; `collect_id` goes into its metadata."""
    if collect_id is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), COLLECT_ID: collect_id.encode()})
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


CURVES_SCHEMA = pa.schema([("trial_id", pa.string()), ("step", pa.int64()), ("metric", pa.string()), ("value", pa.float64())])


def curves_table(points: dict[tuple[str, int, str], float]) -> pa.Table:
    keys = sorted(points)
    return pa.table(
        {
            "trial_id": [k[0] for k in keys],
            "step": [k[1] for k in keys],
            "metric": [k[2] for k in keys],
            "value": [points[k] for k in keys],
        },
        schema=CURVES_SCHEMA,
    )


def previous_pair_id(location: str | Path) -> str | None:
    """The collect id of the experiment's Parquet pair, when both files carry the same one."""
    trials_id = file_collect_id(storage.join(location, TRIALS_FILE))  # None for a missing file too
    return trials_id if trials_id is not None and file_collect_id(storage.join(location, CURVES_FILE)) == trials_id else None


STUB_KEY = "_not_loaded"  # a trial of the cache with no row (another run's row won): its status and hash only
PREVIOUS_KEY = cache.PREVIOUS_KEY


def cached_candidate(entry: dict, run_name: str) -> Collected:
    row = {"trial_id": entry["trial_id"], "run": run_name, "config_hash": entry["config_hash"], "status": entry["status"]}
    row[PREVIOUS_KEY if entry["kept"] else STUB_KEY] = entry
    return Collected(row, None, entry["tune_status"], entry["dirname"], settled=entry["settled"])


def reuse_from(previous: cache.CachedRun | None, sources: dict[str, list], run_name: str) -> Reuse | None:
    """The rows of the previous collect that a changed run can take: trials with the same Tune status
    and folder, whose files did not change, and whose row was kept."""
    if previous is None:
        return None
    entries = {entry["trial_id"]: entry for entry in previous.entries if entry["kept"] and entry["tune_status"] is not None}

    def reuse(trial: StateTrial) -> dict | None:
        entry = entries.get(trial.trial_id)
        if entry is None or entry["tune_status"] != trial.status or entry["dirname"] != trial.dirname:
            return None
        if trial.dirname is not None and previous.sources.get(trial.dirname) != sources.get(trial.dirname):
            return None
        return cached_candidate(entry, run_name).row

    return reuse


def collect(location: str | Path, incremental: bool = True) -> tuple[str, str]:
    """Write trials.parquet and curves.parquet into a sweep or run directory (local or URI).

    With `incremental`, the rows of trials whose files did not change since the last collect come
    from it (raylab/results/incremental.py); the files written are those of a collect from scratch."""
    if not storage.is_dir(location):
        raise ResultsError(f"{location}: no such experiment directory")
    previous, keysets = cache.read_cache(location, previous_pair_id(location)) if incremental else ({}, [])
    listing, left_settled = cache.list_experiment(location, {run: cached.fingerprint for run, cached in previous.items() if cached.settled})
    runs = cache.run_names(listing)
    if runs is None:
        raise not_an_experiment(location)
    sources = cache.trial_sources(listing, runs)
    for run in left_settled:  # its trial folders were not listed: their files are as the cache has them
        sources[run] = previous[run].sources
    fingerprints = {run: cache.run_fingerprint(listing, run) for run in runs}
    unchanged = {run for run in runs if run in previous and previous[run].fingerprint == fingerprints[run] and previous[run].sources == sources[run]}
    wanted = None
    if storage.is_uri(location):
        # Of a changed run, the trial folders to download: those whose files changed, and those the
        # cache holds no row of (a trial another run's row won over may win now).
        changed: dict[str, set[str] | None] = {}
        for run in (run for run in runs if run not in unchanged):
            rows = {entry["dirname"] for entry in previous[run].entries if entry["kept"]} if run in previous else None
            changed[run] = None if rows is None else {folder for folder, source in sources[run].items() if folder not in rows or previous[run].sources.get(folder) != source}
        wanted = cache.wanted_files(listing, changed) | ({CURVES_FILE, TRIALS_FILE} if previous else set())

    names = {run: run or PurePosixPath(storage.filesystem(location)[1].rstrip("/")).name for run in runs}  # the `run` column
    with storage.local_copy(location, wanted) as local:
        candidates: list[tuple[str, Collected]] = []
        said: dict[str, list[str]] = {run: [] for run in runs}
        for run in runs:
            if run in unchanged:
                for line in previous[run].warnings:
                    print(line, file=sys.stderr, flush=True)
                said[run] = list(previous[run].warnings)
                candidates.extend((run, cached_candidate(entry, names[run])) for entry in previous[run].entries)
                continue
            with skipped_if_unreadable(names[run], said[run]):  # one unreadable run never breaks the others
                collected = collect_run(local / run if run else local, names[run], reuse_from(previous.get(run), sources[run], names[run]), said[run])
                candidates.extend((run, item) for item in collected)
        kept = [item for _, item in keep_one_per_config([(item.row, item) for _, item in candidates])]
        if any(STUB_KEY in item.row for item in kept):
            return collect(location, incremental=False)  # a trial the cache holds no row of won: read it
        rows: list[dict | PreviousRow] = [item.row for item in kept]
        earlier_trials = None
        if any(PREVIOUS_KEY in item.row for item in kept):  # their rows, from the previous trials.parquet
            try:
                earlier_trials = pq.read_table(local / TRIALS_FILE if storage.is_uri(location) else storage.join(location, TRIALS_FILE))
                positions = {key: i for i, key in enumerate(zip(earlier_trials.column("run").to_pylist(), earlier_trials.column("trial_id").to_pylist()))}
                rows = [PreviousRow(positions[(row["run"], row["trial_id"])], keysets[row[PREVIOUS_KEY]["keys"]], row[PREVIOUS_KEY]["mixed"])
                        if PREVIOUS_KEY in row else row for row in rows]
            except (pa.ArrowException, OSError, KeyError, IndexError):  # not the table the cache describes
                return collect(location, incremental=False)
        assembled = assembled_table(rows, earlier_trials)
        points: dict[tuple[str, int, str], float] = {}
        for item in kept:
            if item.points is not None:
                points.update(item.points)
        curves = curves_table(points)
        reused = [item.row["trial_id"] for item in kept if item.points is None]
        if reused:  # their points, from the previous curves.parquet
            earlier = pq.read_table(local / CURVES_FILE if storage.is_uri(location) else storage.join(location, CURVES_FILE), schema=CURVES_SCHEMA)
            earlier = earlier.filter(pc.is_in(earlier["trial_id"], value_set=pa.array(reused, pa.string())))
            curves = pa.concat_tables([earlier.replace_schema_metadata(None), curves]).sort_by(
                [("trial_id", "ascending"), ("step", "ascending"), ("metric", "ascending")])
        # One id in both files, curves replaced first and trials last: a reader that finds a trials
        # file finds its curves beside it, or sees the ids differ (fresh_results collects again).
        # The cache comes last: one with an older id is not used.
        pair_id = uuid.uuid4().hex
        for name, table in ((CURVES_FILE, curves), (TRIALS_FILE, assembled.table)):
            write_parquet_atomic(table, local / name, pair_id)
            if storage.is_uri(location):
                storage.upload(local / name, storage.join(location, name))
        kept_at = {id(item): index for index, item in enumerate(kept)}
        keysets_now: dict[frozenset[str], int] = {}
        # Settled: every trial of the run settled, none of them (nor its manifest) unreadable.
        with_trials = {run for run, _ in candidates}
        runs_now = {run: cache.CachedRun(fingerprints[run], sources[run], [], said[run], settled=run in with_trials and not said[run]) for run in runs}
        for run, item in candidates:
            runs_now[run].settled = runs_now[run].settled and item.settled
            index = kept_at.get(id(item))
            if index is None:
                runs_now[run].entries.append(cache_entry(item, None, None))
                continue
            row = rows[index]
            keys = row.keys if isinstance(row, PreviousRow) else frozenset(row)
            runs_now[run].entries.append(cache_entry(item, keysets_now.setdefault(keys, len(keysets_now)), assembled.mixed[index]))
        write_text_atomic(local / cache.CACHE_FILE, cache.cache_text(pair_id, runs_now, list(keysets_now)))
        if storage.is_uri(location):
            storage.upload(local / cache.CACHE_FILE, storage.join(location, cache.CACHE_FILE))
    return storage.join(location, TRIALS_FILE), storage.join(location, CURVES_FILE)


def cache_entry(item: Collected, keys: int | None, mixed: dict | None) -> dict:
    """`keys` and `mixed` of a kept row (raylab/results/incremental.py); None for a row another run's won over."""
    return {"trial_id": item.row.get("trial_id"), "config_hash": item.row["config_hash"], "status": item.row["status"],
            "tune_status": item.tune_status, "dirname": item.dirname, "kept": keys is not None, "keys": keys, "mixed": mixed,
            "settled": item.settled}


def write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
