"""Faults a cluster has, each reproduced on one machine with real Ray (ray.md §3).

1. a worker node removed mid-sweep; 2. the driver killed with SIGKILL; 3. a trial that raises, retried
then errored, then restarted by `raylab resume --errored restart`. (A diverging trial is covered in
test_end_to_end.py; token authentication in test_submit.py.)
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raylab.results.collect import state_trials

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS, EVAL_EVERY = 24, 2
# About 0.2 s per step on one core: long enough for a fault to land mid-trial.
SLOW_COPY = {"name": "copy", "delay": 300, "batch_size": 32, "eval_size": 20}


def write_sweep(tmp_path: Path, name: str, seeds: list[int], **changes) -> Path:
    sweep = {
        "name": name,
        "task": SLOW_COPY,
        "variants": [{"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [128],
        "seeds": seeds,
        "training": {"steps": STEPS, "eval_every": EVAL_EVERY},
        "max_failures": 3,
        "storage": str(tmp_path / "results"),
        **changes,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def raylab(*args: str, **kwargs) -> subprocess.Popen:
    """`raylab ...` as a separate driver process, as a user would run it."""
    return subprocess.Popen([sys.executable, "-m", "raylab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def result_rows(sweep_dir: Path) -> dict[str, list[dict]]:
    """Trial folder name -> rows of its result.json, for every run of the sweep."""
    rows = {}
    for path in sweep_dir.glob("run-*/*/result.json"):
        rows[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def newest_checkpoints(sweep_dir: Path) -> dict[str, int]:
    """Trial folder name -> index of its newest checkpoint folder. Trials write checkpoints straight to
    storage as they report; result.json comes from the driver, synced with the experiment state on
    Tune's period (at least 10 s), too late to time a fault within a trial of a few seconds."""
    newest = {}
    for path in sweep_dir.glob("run-*/*/checkpoint_*"):
        name = path.parent.name
        newest[name] = max(newest.get(name, -1), int(path.name.removeprefix("checkpoint_")))
    return newest


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"driver exited ({process.returncode}) before {what}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def assert_complete_curves(sweep_dir: Path, n_trials: int) -> pd.DataFrame:
    """Every trial finished, with each (trial, step, metric) exactly once and no missing step."""
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == n_trials and set(trials["status"]) == {"finished"}, trials[["trial_id", "status", "error"]]
    curves = pd.read_parquet(sweep_dir / "curves.parquet")
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    expected = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    for trial_id, steps in curves[curves["metric"] == "val/loss"].groupby("trial_id")["step"]:
        assert sorted(steps) == expected, trial_id
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    return trials


def assert_restored_exactly(sweep_file: Path, sweep_dir: Path) -> None:
    """Some trial continued from its checkpoint (its first report after the restore is past the first
    evaluation), and every trial's curve equals, value for value, the same trial run without
    interruption in this process (one thread, as the trainable sets for a 1-CPU trial)."""
    import torch

    from raylab.planning.sweep import load_sweep
    from raylab.training.loop import run_trial

    # (result.json may lack the rows just before the restore: a killed driver had not synced them, collect
    # fills them from the checkpoint; so the first row of a restored trial may be its first after the restore.)
    continued = [rows for rows in result_rows(sweep_dir).values() for r in rows if r["iterations_since_restore"] == 1 and r["step"] > EVAL_EVERY]
    assert continued, "no trial continued from a checkpoint"
    trials, curves = pd.read_parquet(sweep_dir / "trials.parquet"), pd.read_parquet(sweep_dir / "curves.parquet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for trial in load_sweep(sweep_file).trials:
            reports = []
            run_trial(trial, lambda metrics, checkpoint: reports.append(metrics), device=torch.device("cpu"))
            expected = {(int(m["step"]), k): v for m in reports for k, v in m.items() if "/" in k}
            trial_id = trials.loc[trials["config_hash"] == trial["config_hash"], "trial_id"].item()
            got = {(r.step, r.metric): r.value for r in curves[curves["trial_id"] == trial_id].itertuples()}
            assert got == expected, trial_id
    finally:
        torch.set_num_threads(threads)


@pytest.mark.cluster  # a three-node Ray (ray.cluster_utils), a minute: CI's cluster step
def test_worker_node_removed_mid_sweep(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,  # trials run on worker nodes only
            "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 5},
        },
    )
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        sweep_file = write_sweep(tmp_path, "node-loss", seeds=[0, 1, 2, 3])
        sweep_dir = tmp_path / "results" / "node-loss"
        driver = raylab("run", str(sweep_file), "--address", cluster.address)

        def trials_mid_flight() -> bool:  # two trials past their second checkpoint, far from their last
            last = STEPS // EVAL_EVERY - 1
            return sum(1 <= index <= last - 4 for index in newest_checkpoints(sweep_dir).values()) >= 2

        wait_for(trials_mid_flight, 180, "two trials to checkpoint", driver)
        cluster.remove_node(workers[0])  # kills the trial running there
        cluster.add_node(num_cpus=1)
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, output
    finally:
        cluster.shutdown()

    assert_complete_curves(sweep_dir, 4)
    # At least one trial was restored from its checkpoint, not restarted from step 0: its
    # iterations count continues past the restore point.
    restored = [rows for rows in result_rows(sweep_dir).values() if any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)]
    assert restored, output
    assert_restored_exactly(sweep_file, sweep_dir)


@pytest.mark.faults  # about a minute: CI's second step (pyproject's markers)
def test_driver_killed_then_resume_finishes_without_rerunning(tmp_path):
    sweep_file = write_sweep(tmp_path, "driver-kill", seeds=[0, 1, 2])
    sweep_dir = tmp_path / "results" / "driver-kill"
    # Tune saves the experiment state (and syncs result.json with it) every 10 s or more by itself;
    # every second here, so that a state recording a finished trial exists while the next one runs.
    driver = raylab("run", str(sweep_file), "--num-cpus", "1", env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"})  # one trial at a time

    def one_finished_one_started() -> bool:
        """The saved state records a finished trial, and another trial has checkpointed since."""
        try:
            finished = {trial.dirname for trial in state_trials(next(sweep_dir.glob("run-*"))) if trial.status == "TERMINATED"}
        except (StopIteration, FileNotFoundError, ValueError):
            return False  # no run folder or state yet, or a state caught mid-write
        return bool(finished) and any(name not in finished for name in newest_checkpoints(sweep_dir))

    wait_for(one_finished_one_started, 240, "one finished and one running trial", driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    # What the killed driver recorded: its trials recorded as finished, with their result.json rows,
    # which Tune syncs together with the state.
    finished_before = {trial.dirname for trial in state_trials(next(sweep_dir.glob("run-*"))) if trial.status == "TERMINATED"}
    before = result_rows(sweep_dir)
    assert finished_before and all(len(before[name]) == STEPS // EVAL_EVERY for name in finished_before), before

    resume = raylab("resume", str(sweep_dir), "--num-cpus", "1")
    output, _ = resume.communicate(timeout=300)
    assert resume.returncode == 0, output

    assert_complete_curves(sweep_dir, 3)
    # One checkpoint per trial (keep_checkpoints: 1), in the folder its count of checkpoints names:
    # none left behind by the killed run, no index skipped by the resumed one.
    assert sorted(path.name for path in sweep_dir.glob("run-*/*/checkpoint_*")) == [f"checkpoint_{STEPS // EVAL_EVERY - 1:06d}"] * 3
    after = result_rows(sweep_dir)
    for name in finished_before:
        assert after[name] == before[name], f"{name} finished before the kill but ran again"
    assert_restored_exactly(sweep_file, sweep_dir)


# A user task (named by import path) whose training fails until its marker file exists: a real
# exception in a real trial, as on a node that lacks something (the driver's data check passes).
FAILING_TASK = """
from pathlib import Path

from raylab.tasks.copying import CopyTask


class NeedsMarker(CopyTask):
    def __init__(self, marker: str = "", delay: int = 5, batch_size: int = 4, eval_size: int = 8) -> None:
        super().__init__(delay=delay, batch_size=batch_size, eval_size=eval_size)
        self.marker = marker

    def train_batch(self, step, seed):
        if not Path(self.marker).exists():
            raise FileNotFoundError(f"{self.marker}: missing marker file")
        return super().train_batch(step, seed)
"""


@pytest.mark.faults  # about a minute: CI's second step (pyproject's markers)
def test_trial_that_raises_is_retried_then_errored_then_restarted(tmp_path):
    (tmp_path / "failing_task.py").write_text(FAILING_TASK)
    marker = tmp_path / "marker"
    sweep_file = write_sweep(
        tmp_path,
        "raises",
        seeds=[0],
        task={"name": "failing_task:NeedsMarker", "marker": str(marker)},
        variants=[{"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"}],
        hidden_sizes=[8],
        training={"steps": 4, "eval_every": 2},
        max_failures=1,
    )
    sweep_dir = tmp_path / "results" / "raises"
    first = raylab("run", str(sweep_file), "--num-cpus", "1", cwd=tmp_path)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 1, output  # the sweep ran, a trial errored

    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["status"].tolist() == ["errored"]
    assert "marker" in trials["error"].iloc[0] and "missing" in trials["error"].iloc[0]
    attempts = [line for line in output.splitlines() if "RNN-h8-s0" in line and "failed, " in line]
    assert len(attempts) == 2 and "retrying" in attempts[0] and "no retries left" in attempts[1], output  # max_failures: 1

    marker.touch()  # what was missing arrives
    resume = raylab("resume", str(sweep_dir), "--errored", "restart", "--num-cpus", "1", cwd=tmp_path)
    output, _ = resume.communicate(timeout=300)
    assert resume.returncode == 0, output
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["status"].tolist() == ["finished"] and trials["steps"].tolist() == [4]


def test_asking_for_gpus_that_do_not_exist_is_an_error_before_anything_starts(tmp_path):
    sweep_file = write_sweep(tmp_path, "no-gpu", seeds=[0], resources={"cpu": 1, "gpu": 1})
    process = raylab("run", str(sweep_file), "--num-cpus", "1")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "resources.gpu: 1 GPU per trial requested, but the Ray cluster has 0 GPUs" in output
    assert not (tmp_path / "results" / "no-gpu").exists()


def test_fractional_gpus_pack_four_trials_on_one_gpu(tmp_path):
    from ray.cluster_utils import Cluster

    # One node with one logical GPU (no CUDA device: trials fall back to the CPU).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 1})
    try:
        sweep_file = write_sweep(
            tmp_path,
            "packed",
            seeds=[0, 1, 2, 3],
            task={"name": "copy", "delay": 100, "batch_size": 16, "eval_size": 20},
            hidden_sizes=[64],
            training={"steps": 30, "eval_every": 10},
            resources={"cpu": 1, "gpu": 0.25},
        )
        driver = raylab("run", str(sweep_file), "--address", cluster.address)
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, output
    finally:
        cluster.shutdown()
    rows = result_rows(tmp_path / "results" / "packed")
    assert len(rows) == 4
    # All four trials were running at once on the one GPU: every trial started before any ended.
    starts = [r[0]["timestamp"] - r[0]["time_total_s"] for r in rows.values()]
    ends = [r[-1]["timestamp"] for r in rows.values()]
    assert max(starts) < min(ends), (starts, ends)
