"""Mend a restored run's record of each trial's checkpoints before any trial restarts.

Tune keeps `CheckpointConfig(num_to_keep)` checkpoints per trial: registering a new one deletes the
oldest at once, while the experiment state that names the trial's checkpoints reaches storage later,
in a background sync (ray.md §3.3). A driver killed in between leaves a state that names a checkpoint
already deleted. Restored from that state, Tune fails the trial ("Could not recover from checkpoint
as it does not exist on storage anymore"), and a trial whose newest checkpoint survived but whose
older one did not fails its next checkpoint's bookkeeping ("Path not found" when Tune deletes the
older one again), which skips the checkpoint index update. Seen with an S3 bucket, where the sync
takes longest (tests/test_s3_storage.py); the same window exists on a local disk.

`MendCheckpointRecords` runs once, at the first step of a restored run, before Tune starts any trial:
for each trial that will run again it drops the checkpoints that are gone from the record, and when
the newest one is gone it restores from the oldest checkpoint newer than it that is on storage.
Tune deleted the recorded one only when it registered two newer ones, so that checkpoint is one Tune
registered, that is one uploaded whole; a newer folder may be a partial upload of a killed node.
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


class MendCheckpointRecords(tune.Callback):
    def __init__(self) -> None:
        self.mended = False

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.mended:
            return
        self.mended = True  # the first step of this driver: trials were loaded from the experiment state, none started yet
        for trial in trials:
            if trial.status != Trial.TERMINATED:
                mend_trial(trial)

    def __getstate__(self) -> dict:
        return {"mended": False}  # a run restored from tuner.pkl mends again


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def checkpoint_index(path: str) -> int | None:
    match = CHECKPOINT_DIR.search(path.rstrip("/"))
    return int(match.group(1)) if match else None


def mend_trial(trial: Trial) -> str | None:
    """Drop the trial's recorded checkpoints that are gone; if the newest is gone, point it at the one to
    restore from. Returns the new checkpoint's path when it moved the trial, else None."""
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is None:
        return None
    filesystem = latest.checkpoint.filesystem
    kept = [result for result in manager._checkpoint_results if exists(result.checkpoint.filesystem, result.checkpoint.path)]
    moved = None
    if not exists(filesystem, latest.checkpoint.path):
        replacement = surviving_successor(filesystem, trial.storage.trial_fs_path, checkpoint_index(latest.checkpoint.path))
        if replacement is None:
            return None  # nothing newer on storage either: Tune reports the missing checkpoint
        path, index, reports = replacement
        metrics = {**latest.metrics, **reports[-1], "training_iteration": len(reports), "checkpoint_dir_name": f"checkpoint_{index:06d}"}
        latest = _TrainingResult(checkpoint=tune.Checkpoint(path, filesystem=filesystem), metrics=metrics)
        kept = [latest]
        manager._latest_checkpoint_result = latest
        trial.storage.current_checkpoint_index = index + 1  # the next checkpoint goes after it, as Tune would number it
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
