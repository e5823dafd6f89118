"""Keep each trial's newest checkpoints, and mend a restored run's record of them before trials restart.

A trial's older checkpoints are deleted as soon as a newer one is registered (`KeepNewestCheckpoints`;
Tune's `CheckpointConfig(num_to_keep)` did the same), while the experiment state that names the
trial's checkpoints reaches storage later, in a background sync (ray.md §3.3). A driver killed in
between leaves a state that names a checkpoint already deleted. Restored from that state, Tune failed
the trial ("Could not recover from checkpoint as it does not exist on storage anymore"), and a trial
whose newest checkpoint survived but whose older one did not failed its next checkpoint's bookkeeping
("Path not found" when Tune deleted the older one again), which skipped the checkpoint index update.
Seen with an S3 bucket, where the sync takes longest (tests/test_s3_storage.py); the same window
exists on a local disk.

The state also lags the other way: Tune saves it on a period (at least 10 s; raylab no longer forces
a save per checkpoint, see `KeepNewestCheckpoints`), so a trial may have checkpoints on storage that
the saved state does not record at all, and would start again from step 0.

`MendCheckpointRecords` mends each trial of a restored run before Tune restores or starts it (at the
first step, and again as each trial starts): it drops the checkpoints that are gone from the record,
and when the newest recorded one is gone, or none is recorded, it points the trial at the oldest
checkpoint after it that is on storage. Checkpoints are deleted only when a newer one is registered,
and Tune registers a checkpoint only once the trial uploaded it whole; so that oldest one is whole,
where a newer folder may be a partial upload of a node that died. (One exception: a trial's only
checkpoint, cut short by its node's death before Tune registered it. A folder without both files is
passed over; a truncated state file fails the trial's load, which counts as one of its failures.)
The trial continues from a later step than the record said, which is exact (a checkpoint holds the
whole training state) and loses no report (each checkpoint holds every report of its chain,
raylab/training/reports.py).

Tune's records are private attributes (`_CheckpointManager._checkpoint_results`,
`._latest_checkpoint_result`, `StorageContext.current_checkpoint_index`); pyproject pins Ray to the
2.60 series, and tests/test_checkpoint_records.py fails if they move.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow.fs as pafs
from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial

from raylab.execution.trainable import CHECKPOINT_FILE
from raylab.training.reports import REPORTS_FILE, parse_reports

CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6})$")


class KeepNewestCheckpoints(tune.Callback):
    """Each trial keeps its `keep` newest checkpoints: the older ones are deleted as a new one arrives.

    Tune's own retention (`CheckpointConfig(num_to_keep)`) does the same deletions, but also forces a
    save and sync of the whole experiment state every `num_to_keep` checkpoints of any trial. That
    state holds every trial (about 30 KB each with raylab's configs) and the searcher's grid, so a
    sweep of N trials wrote O(N) bytes per checkpoint: O(N^2) in all (docs/throughput.md). Without `num_to_keep`,
    Tune saves the state on its own period (at least 10 s, adapted to the save's cost). A state
    saved before a deletion names a deleted checkpoint, which `MendCheckpointRecords` mends on restore.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any) -> None:
        # Called before Tune records `checkpoint` (the new one, uploaded whole): keep `keep - 1` of the others.
        manager = trial.run_metadata.checkpoint_manager
        recorded = manager._checkpoint_results
        surplus = recorded[: max(0, len(recorded) - (self.keep - 1))]
        if not surplus:
            return
        manager._checkpoint_results = recorded[len(surplus):]
        for result in surplus:
            if result.checkpoint.path != checkpoint.path:
                delete_folder(result.checkpoint.filesystem, result.checkpoint.path)


def delete_folder(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass  # gone already (deleted by a driver before a restore): nothing to keep


class MendCheckpointRecords(tune.Callback):
    def __init__(self) -> None:
        self.first_step_seen = False
        self.restored = False

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.first_step_seen:
            return
        # The first step of this driver: a restored run's trials were loaded from the experiment state
        # and none started yet; a new run has no trial yet.
        self.first_step_seen, self.restored = True, bool(trials)
        for trial in trials:
            if trial.status != Trial.TERMINATED:
                mend_trial(trial)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Called just before Tune restores or starts the trial: a trial the searcher made again after
        # the restore (it was made after the state was saved) finds its checkpoints here.
        if self.restored:
            mend_trial(trial)

    def __getstate__(self) -> dict:
        return {"first_step_seen": False, "restored": False}  # a run restored from tuner.pkl mends again


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def checkpoint_index(path: str) -> int | None:
    match = CHECKPOINT_DIR.search(path.rstrip("/"))
    return int(match.group(1)) if match else None


def mend_trial(trial: Trial) -> str | None:
    """Drop the trial's recorded checkpoints that are gone; if the newest is gone, or none is recorded,
    point the trial at the oldest whole checkpoint after it on storage. Returns that checkpoint's path
    when it moved the trial, else None."""
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    filesystem = latest.checkpoint.filesystem if latest is not None else trial.storage.storage_filesystem
    kept = [result for result in manager._checkpoint_results if exists(result.checkpoint.filesystem, result.checkpoint.path)]
    moved = None
    if latest is None or not exists(filesystem, latest.checkpoint.path):
        after = checkpoint_index(latest.checkpoint.path) if latest is not None else -1
        replacement = surviving_successor(filesystem, trial.storage.trial_fs_path, after)
        if replacement is None:
            return None  # nothing on storage: a new trial starts, a lost checkpoint is Tune's error
        path, index, reports = replacement
        metrics = {**(latest.metrics if latest is not None else {}), **reports[-1],
                   "training_iteration": len(reports), "checkpoint_dir_name": f"checkpoint_{index:06d}"}
        latest = _TrainingResult(checkpoint=tune.Checkpoint(path, filesystem=filesystem), metrics=metrics)
        kept = [latest]
        manager._latest_checkpoint_result = latest
        # Tune keeps the index of the trial's newest checkpoint here and adds one before the next is written:
        # that one takes the folder after `path` (a leftover of the lost run there is overwritten, not orphaned).
        trial.storage.current_checkpoint_index = index
        moved = path
    if moved is None and len(kept) == len(manager._checkpoint_results):
        return None
    manager._checkpoint_results = kept
    trial.invalidate_json_state()
    trial.run_metadata.invalidate_cache()
    return moved


def surviving_successor(filesystem: pafs.FileSystem, trial_path: str, after: int | None) -> tuple[str, int, list[dict]] | None:
    """The oldest checkpoint folder of the trial numbered after `after` that holds its state and reports:
    (path, index, reports)."""
    if after is None:
        return None
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    except OSError:
        return None
    numbered = sorted(
        (index, entry.path)
        for entry in entries
        if entry.type == pafs.FileType.Directory and (index := checkpoint_index(entry.path)) is not None and index > after
    )
    for index, path in numbered:
        if not exists(filesystem, f"{path}/{CHECKPOINT_FILE}"):
            continue
        try:
            with filesystem.open_input_stream(f"{path}/{REPORTS_FILE}") as stream:
                _, reports = parse_reports(stream.read())
        except OSError:
            continue
        if reports:
            return path, index, reports
    return None
