"""MLflow and W&B: Ray Tune's own logger callbacks, one tracker run per trial, continued after a resume.

`loggers: [mlflow]` attaches `MlflowTracker`, a subclass of Ray's `MLflowLoggerCallback`;
`loggers: [wandb]` attaches `WandbTracker`, a subclass of Ray's `WandbLoggerCallback`. What the
subclasses change, and why (docs/trackers.md):

- The x-axis is the training step raylab reports (`step`), and only raylab's `split/name` metrics are
  logged (what `curves.parquet` holds), not Tune's bookkeeping (`time_this_iter_s`, `pid`, ...).
- The parameters are the resolved trial (a searched trial's sampled values, not its base trial's),
  flattened (`optimizer.lr`); the seed and `config_hash` are tags (MLflow) or config (W&B).
- A trial continued by `raylab run` again or `raylab resume` (Tune restores the trial, same trial id)
  continues its tracker run: MLflow's is found by its `raylab.trial` tag, W&B's has a stable run id.
  The steps between its checkpoint and the interrupt are trained again with identical values
  (docs/resume.md); a report whose step the tracker already holds is not logged a second time.
- A trial that Ctrl-C stopped: its MLflow run is marked KILLED (RUNNING again when it continues), its
  W&B logging process finishes its file instead of Ray waiting for it (up to 30 minutes) at the end.

Tune pickles these callbacks into the run folder's tuner.pkl: a run continued later keeps the
loggers it started with, with the tracking URI and W&B settings it resolved then.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor

from raylab.planning.space import resolved_trial
from raylab.results.collect import flatten

TRIAL_TAG = "raylab.trial"  # MLflow tag `<run folder>/<Tune trial id>`: the key a continued trial finds its run by
MLFLOW_PARAMS_PER_BATCH = 100  # MLflow's limit of params in one log_batch
OFFLINE_FINISH_S = 60  # W&B offline: how long the end of a run waits for each logging process to close its file


def tracked_metrics(result: dict) -> dict[str, float]:
    """raylab's metrics of one report: the numeric `split/name` keys, as `curves.parquet` takes them."""
    return {key: float(value) for key, value in result.items() if "/" in key and isinstance(value, (int, float)) and not isinstance(value, bool)}


def trial_params(trial: Any) -> dict[str, str]:
    """The resolved trial of a Tune trial, flattened (`optimizer.lr`), every value as text (MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in resolved_trial(trial.config).items():
        if key != "config_hash":  # a tag
            flatten(key, value, flat)
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flat.items()}


def trial_key(trial: Any) -> str:
    """`<run folder>/<trial id>`: Tune keeps a trial's id when it restores the run."""
    return f"{trial.experiment_dir_name}/{trial.trial_id}"


class MlflowTracker(MLflowLoggerCallback):
    """Ray's MLflow logger with one MLflow run per raylab trial, found again when the trial continues."""

    def __init__(self, tracking_uri: str, experiment_name: str, sweep_name: str, artifact_location: str | None) -> None:
        super().__init__(tracking_uri, experiment_name=experiment_name, tags={"sweep": sweep_name})
        self.artifact_location = artifact_location

    def setup(self, *args: Any, **kwargs: Any) -> None:
        # Ray's setup leaves the artifact location to MLflow, ./mlruns in the driver's working folder.
        self.mlflow_util.setup_mlflow(tracking_uri=self.tracking_uri, experiment_name=self.experiment_name, artifact_location=self.artifact_location)
        from mlflow.tracking import MlflowClient  # mlflow: an optional dependency, loaded with the callback

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._trial_runs: dict[Any, str] = {}
        self._last_step: dict[Any, int] = {}  # trial -> the last step its run holds (-1: none)

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_runs:
            return  # retried after a failure (max_failures): the same run goes on
        experiment = self.mlflow_util.experiment_id
        found = self.client.search_runs([experiment], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_key(trial)}'", max_results=1)
        if found:  # a continued trial: its run from before the interrupt
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self._last_step[trial] = self.last_step(run_id, found[0].data.metrics)
        else:
            config = resolved_trial(trial.config)
            tags = {**self.tags, TRIAL_TAG: trial_key(trial), "trial_name": str(trial), "config_hash": config["config_hash"],
                    "seed": str(config["seed"]), "variant": config["variant"]}
            if config.get("search_base"):
                tags["search_base"] = config["search_base"]
            run_id = self.client.create_run(experiment, run_name=str(trial), tags=tags).info.run_id
            self.log_params(run_id, trial_params(trial))
            self._last_step[trial] = -1
        self._trial_runs[trial] = run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param  # mlflow: an optional dependency, loaded with the callback

        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), MLFLOW_PARAMS_PER_BATCH):  # one transaction per batch, not one per param
            self.client.log_batch(run_id, params=items[start : start + MLFLOW_PARAMS_PER_BATCH])

    def last_step(self, run_id: str, metrics: dict[str, float]) -> int:
        """The last step the run holds a metric at (-1: none)."""
        return max((point.step for key in metrics for point in self.client.get_metric_history(run_id, key)), default=-1)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        from mlflow.entities import Metric  # mlflow: an optional dependency, loaded with the callback

        step = result.get("step")
        if step is None or step <= self._last_step[trial]:
            return  # replayed after a restore from an earlier checkpoint: the run has these values
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, int(step)) for key, value in tracked_metrics(result).items()]
        self.client.log_batch(self._trial_runs[trial], metrics=metrics)  # one transaction per report
        self._last_step[trial] = int(step)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        super().log_trial_end(trial, failed)
        self._last_step.pop(trial, None)  # ended: on_experiment_end leaves its run's status alone

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Runs of trials that did not end (Ctrl-C, a lost driver's successor finishes them) are KILLED, not RUNNING forever."""
        for trial in list(self._last_step):
            self.client.set_terminated(self._trial_runs[trial], status="KILLED")


class StepLoggingActor(_WandbLoggingActor):
    """Ray's W&B logging process, with raylab's training step as W&B's step (Ray's takes Tune's iteration)."""

    def run(self) -> None:
        os.environ["WANDB_START_METHOD"] = "thread"  # as Ray's: already a process of its own
        run = self._wandb.init(*self.args, **self.kwargs)
        while True:
            item_type, item = self.queue.get()
            if item_type == _QueueItem.END:
                break
            if item_type == _QueueItem.RESULT:
                log, _ = self._handle_result(item)
                step = log.pop("step")
                run.log(log, step=int(step))
        run.finish()


class WandbTracker(WandbLoggerCallback):
    """Ray's W&B logger: one W&B run per trial (run id `<run folder>-<trial id>`), grouped by the sweep's name."""

    _logger_actor_cls = StepLoggingActor

    def __init__(self, mode: str, project: str, entity: str | None, group: str, directory: str | None) -> None:
        super().__init__(project=project, group=group, upload_timeout=OFFLINE_FINISH_S if mode == "offline" else 1800)
        self.mode, self.entity, self.directory = mode, entity, directory

    def setup(self, *args: Any, **kwargs: Any) -> None:
        # Ray asks for an API key unless $WANDB_MODE says offline; the sweep file's mode decides here.
        before = os.environ.get("WANDB_MODE")
        os.environ["WANDB_MODE"] = self.mode
        try:
            super().setup(*args, **kwargs)
        finally:
            os.environ.pop("WANDB_MODE") if before is None else os.environ.__setitem__("WANDB_MODE", before)
        self._last_step: dict[Any, int] = {}

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_logging_futures:
            return  # retried after a failure (max_failures): Ray keeps its logging process
        run_id = wandb_run_id(trial)
        self._last_step[trial] = last_offline_step(self.directory, run_id) if self.mode == "offline" and self.directory else -1
        init = dict(id=run_id, name=str(trial), group=self.group, project=self.project, entity=self.entity, mode=self.mode,
                    dir=self.directory, resume="allow", allow_val_change=True, config=resolved_trial(trial.config))
        self._start_logging_actor(trial, [*self._exclude_results, "config"], **init)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = result.get("step")
        if trial not in self._last_step:
            self.log_trial_start(trial)
        if step is None or step <= self._last_step[trial]:
            return  # replayed after a restore from an earlier checkpoint: the run has these values
        self._last_step[trial] = int(step)
        super().log_trial_result(iteration, trial, {**tracked_metrics(result), "step": int(step)})

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self._last_step.pop(trial, None)
        super().log_trial_end(trial, failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Ray waits for the logging processes of trials that ended; those of trials Ctrl-C stopped never get
        their end and would hold the driver for `upload_timeout`: end them too, so their files are closed."""
        for trial in list(self._trial_queues):
            if trial in self._last_step:
                self._signal_logging_actor_stop(trial=trial)
        self._last_step.clear()
        super().on_experiment_end(trials, **info)


def wandb_run_id(trial: Any) -> str:
    """A W&B run id stable across restores (W&B allows letters, digits, `-` and `_`)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{trial.experiment_dir_name}-{trial.trial_id}")


# W&B's offline run file (`run-<id>.wandb`): LevelDB's log format, 32 KiB blocks of chunks, each chunk
# a header (CRC-32C, length, type) and data; a record (wandb.proto.wandb_internal_pb2.Record) is one
# FULL chunk or FIRST, MIDDLE..., LAST. wandb 0.31 reads it only in its Go core, hence this reader.
WANDB_FILE_HEADER = b":W&B\xe1\xbe\x00"  # ident, magic 0xBEE1 (little-endian), version 0
BLOCK, CHUNK_HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class UnreadableWandbFile(ValueError):
    """Not a W&B offline run file this reader knows (another format version, or torn)."""


def wandb_records(path: str | Path) -> Iterator[Any]:
    """The records of one W&B offline run file, in order; a torn end (a killed writer) ends them."""
    from google.protobuf.message import DecodeError  # protobuf and wandb: optional dependencies, loaded with the callback
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(WANDB_FILE_HEADER):
        raise UnreadableWandbFile(f"{path}: starts with {data[:7]!r}, not a W&B run file of format version 0")
    offset, pending = len(WANDB_FILE_HEADER), b""
    while offset + CHUNK_HEADER <= len(data):
        room = BLOCK - offset % BLOCK
        if room < CHUNK_HEADER:  # a block's tail too short for a header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        chunk = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or len(chunk) < length:
            return  # zeros after the last record, or torn
        offset += CHUNK_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError as error:
                raise UnreadableWandbFile(f"{path}: a record at byte {offset} does not parse ({error})") from None
            yield record


def wandb_history(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(step, {key: value}) of each history row (`wandb.log`) of one offline run file."""
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            yield int(items.get("_step", record.history.step.num)), items


def offline_run_files(directory: str | Path, run_id: str) -> list[Path]:
    """The offline run files of one W&B run id under `directory` (`<directory>/wandb/offline-run-<time>-<id>/`), oldest first."""
    return sorted(path for path in Path(directory, "wandb").glob(f"offline-run-*/run-{run_id}.wandb") if path.parent.name.endswith(f"-{run_id}"))


def last_offline_step(directory: str | Path, run_id: str) -> int:
    """The last step the earlier offline files of this run hold (-1: none). An unreadable file is said
    once and counts as none: the trial's steps are then logged again rather than lost."""
    last = -1
    for path in offline_run_files(directory, run_id):
        try:
            last = max([last, *(step for step, _ in wandb_history(path))])
        except (UnreadableWandbFile, OSError) as error:
            print(f"raylab: warning: wandb: {error}; its steps may be logged again", file=sys.stderr, flush=True)
    return last
