"""`loggers: [mlflow, wandb]`: one tracker run per trial whose history is curves.parquet's, also after
Ctrl-C and `raylab run` again (`raylab resume` restores through the same `runner.resume_run`); read back with MLflow's client from the SQLite store
and from W&B's offline run files (real MLflow, real W&B offline, real embedded Ray, the real CLI)."""

import contextlib
import io
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")  # CI installs both (the test extra); absent only on a hand-made venv
wandb = pytest.importorskip("wandb")

from mlflow.tracking import MlflowClient  # noqa: E402

from raylab.cli import main  # noqa: E402
from raylab.execution.trackers import TRIAL_TAG, MlflowTracker, WandbTracker, offline_run_files, wandb_history, wandb_run_id  # noqa: E402
from raylab.planning.sweep import load_sweep  # noqa: E402
from test_rerun import raylab, slow_sweep, wait_for_checkpoints  # noqa: E402

SEARCH = {"num_samples": 2, "space": {"optimizer.lr": {"loguniform": [1.0e-3, 1.0e-2]}}}


def quietly(*args: str) -> tuple[int, str]:
    """`raylab ARGS` in this process (no Ray: refusals and --dry-run), with its stdout and stderr."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A search of 2 samples, one CPU, `loggers: [mlflow, wandb]`: Ctrl-C, then `raylab run` again. Returns the sweep folder and what the refusals and dry runs said on the way."""
    tmp_path = tmp_path_factory.mktemp("trackers")
    sweep_dir, command = slow_sweep(tmp_path, "tracked", loggers=["mlflow", "wandb"], search=SEARCH)
    said = {}

    first = raylab(*command)
    wait_for_checkpoints(first, sweep_dir, 2, "the first sample has two checkpoints")
    first.send_signal(signal.SIGINT)
    said["first"] = first.communicate(timeout=120)[0]
    assert first.returncode == 130, said["first"]
    said["dry run, a logger added"] = quietly(*command, "--logger", "tensorboard", "--dry-run")
    said["run, a logger added"] = quietly(*command, "--logger", "tensorboard")

    again = raylab(*command, "--logger", "mlflow")  # listed in the file too: kept once, nothing added
    said["again"] = again.communicate(timeout=300)[0]
    assert again.returncode == 0 and "continuing 1 unfinished trial(s)" in said["again"], said["again"]
    said["dry run, finished"] = quietly(*command, "--logger", "tensorboard", "--dry-run")
    return sweep_dir, said


def curves_of(sweep_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """trial id -> metric -> [(step, value)], from curves.parquet."""
    curves = pd.read_parquet(sweep_dir / "curves.parquet").sort_values(["trial_id", "metric", "step"])
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in curves.itertuples():
        out.setdefault(row.trial_id, {}).setdefault(row.metric, []).append((int(row.step), float(row.value)))
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.faults  # the module's interrupted search (70 s) runs in CI's second step with the other interrupt tests
def test_one_mlflow_run_per_trial_with_the_sampled_params_and_curves_parquet_history(tracked):
    sweep_dir, _ = tracked
    trials = pd.read_parquet(sweep_dir / "trials.parquet").set_index("trial_id")
    assert trials["status"].tolist() == ["finished", "finished"] and trials["config.optimizer.lr"].nunique() == 2
    client = MlflowClient(f"sqlite:///{sweep_dir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    by_trial = {run.data.tags[TRIAL_TAG].split("/")[1]: run for run in runs}
    assert len(runs) == 2 and set(by_trial) == set(trials.index)  # one run per trial, the interrupted one's continued
    curves = curves_of(sweep_dir)
    for trial_id, run in by_trial.items():
        trial = trials.loc[trial_id]
        assert run.info.status == "FINISHED" and run.info.run_name.startswith("LSTM-")
        assert run.data.tags["config_hash"] == trial["config_hash"] and run.data.tags["seed"] == "0"
        assert run.data.tags["search_base"] == trial["search_base"] and run.data.tags["sweep"] == "tracked"
        assert float(run.data.params["optimizer.lr"]) == trial["config.optimizer.lr"]  # the sampled value
        assert run.data.params["cell.name"] == "lstm" and run.data.params["hidden_size"] == "128"
        history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics}
        assert {key: sorted(points) for key, points in history.items()} == curves[trial_id]  # each step once, as collected


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.faults  # the interrupted search fixture: CI's second step
def test_one_wandb_run_per_trial_grouped_by_sweep_no_step_logged_twice(tracked):
    sweep_dir, _ = tracked
    trials = pd.read_parquet(sweep_dir / "trials.parquet").set_index("trial_id")
    run_name = trials["run"].iloc[0]
    curves = curves_of(sweep_dir)
    files, files_per_trial = sorted((sweep_dir / "wandb").glob("offline-run-*/run-*.wandb")), []
    assert {path.parent.name.split("-", 3)[-1] for path in files} == {f"{run_name}-{t}" for t in trials.index}  # one run id per trial
    for trial_id, trial in trials.iterrows():
        parts = offline_run_files(sweep_dir, f"{run_name}-{trial_id}")
        assert parts  # a trial continued later has one file per driver that logged it; `wandb sync` joins them
        steps: list[int] = []
        history: dict[str, list[tuple[int, float]]] = {}
        for path in parts:
            for step, row in wandb_history(path):
                steps.append(step)
                for key, value in row.items():
                    if "/" in key:
                        history.setdefault(key, []).append((step, value))
        assert len(steps) == len(set(steps)), steps  # no step in two files
        files_per_trial.append(len(parts))
        assert {key: sorted(points) for key, points in history.items()} == curves[trial_id]
        config, group = run_config(parts[0])
        assert group == "tracked" and config["optimizer"]["lr"] == trial["config.optimizer.lr"] and config["config_hash"] == trial["config_hash"]
    assert sorted(files_per_trial) == [1, 2]  # the sample Ctrl-C stopped went on in the same run id; the other started later


def run_config(path: Path) -> tuple[dict, str]:
    """The config and group of a W&B offline run file's run record."""
    from raylab.execution.trackers import wandb_records

    run = next(record.run for record in wandb_records(path) if record.WhichOneof("record_type") == "run")
    return {item.key: json.loads(item.value_json) for item in run.config.update}, run.run_group


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.faults  # the interrupted search fixture: CI's second step
def test_a_logger_added_to_an_interrupted_sweep_is_refused_and_a_finished_one_is_skipped(tracked):
    sweep_dir, said = tracked
    code, dry = said["dry run, a logger added"]
    assert code == 0 and "raylab: `raylab run` would stop: loggers: tensorboard would be missing from the 1 trial(s) continued in run-" in dry, dry
    code, refused = said["run, a logger added"]
    assert code == 2 and refused.count("\n") == 1 and "a continued run keeps its loggers" in refused, refused
    assert "Creating initial MLflow database tables" not in said["first"], said["first"]  # MLflow's routine line is dropped
    code, finished = said["dry run, finished"]  # a logger changes no trial's identity: the finished trials are skipped
    assert code == 0 and "skip (finished)" in finished and "would stop" not in finished, finished
    assert "raylab: mlflow: experiment 'tracked' at sqlite:///" in said["first"] and "wandb sync" in said["first"], said["first"]


def test_loggers_are_not_identity_and_the_command_line_joins_the_file(tmp_path):
    sweep_dir, command = slow_sweep(tmp_path, "plain")
    plain = load_sweep(command[1])
    logged = load_sweep(command[1], ["loggers=[mlflow]"], loggers=["wandb", "mlflow", "wandb"])
    assert logged.spec.loggers == ["mlflow", "wandb"]  # the file's first, each once
    assert [t["config_hash"] for t in logged.trials] == [t["config_hash"] for t in plain.trials]
    code, dry = quietly(*command, "--smoke", "--dry-run", "--logger", "mlflow", "--logger", "wandb", "mlflow={experiment_name: mine}")
    smoke = tmp_path / "results" / "plain-smoke"
    assert code == 0 and f"experiment 'mine-smoke' at sqlite:///{smoke}/mlflow.db" in dry and f"group 'plain-smoke', files in {smoke}/wandb" in dry, dry
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


class FakeTrial(SimpleNamespace):
    """What the callbacks read of a Tune trial: its config, id, run folder name and name."""

    def __hash__(self) -> int:
        return hash(self.trial_id)

    def __str__(self) -> str:
        return "LSTM-h8-s0"


def fake_trial(tmp_path: Path) -> FakeTrial:
    sweep = load_sweep(slow_sweep(tmp_path, "fake")[1][1])
    return FakeTrial(config={"trial": sweep.trials[0]}, trial_id="abcde_00000", experiment_dir_name="run-1", local_path=str(tmp_path))


def report(step: int) -> dict:
    return {"step": step, "val/loss": 1.0 / step, "train/loss": 2.0 / step, "training_iteration": step // 2, "time_this_iter_s": 0.1}


def test_a_restored_trial_continues_its_mlflow_run_without_logging_a_step_twice(tmp_path):
    """Tune's restore replays the steps after the checkpoint it restored from: the run keeps each step once."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trial = fake_trial(tmp_path)
    first = MlflowTracker(uri, "fake", "fake", None)
    first.setup()
    first.log_trial_start(trial)
    for step in (2, 4, 6):
        first.log_trial_result(step // 2, trial, report(step))
    first.on_experiment_end([trial])  # Ctrl-C: the trial did not end
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fake").experiment_id])
    assert run.info.status == "KILLED"

    restored = MlflowTracker(uri, "fake", "fake", None)  # a new driver, the callback from tuner.pkl
    restored.setup()
    restored.log_trial_start(trial)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    for step in (4, 6, 8):  # restored from the checkpoint at step 2
        restored.log_trial_result(step // 2, trial, report(step))
    restored.log_trial_end(trial)
    (run,) = client.search_runs([client.get_experiment_by_name("fake").experiment_id])
    assert run.info.status == "FINISHED" and set(run.data.metrics) == {"val/loss", "train/loss"}  # raylab's metrics only
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/loss")] == [(s, 1.0 / s) for s in (2, 4, 6, 8)]


@pytest.mark.faults  # about a minute: CI's second step (pyproject's markers)
@pytest.mark.ray
@pytest.mark.slow
def test_a_restored_trial_continues_its_wandb_run_id_without_logging_a_step_twice(tmp_path):
    """Real Ray (Ray's W&B logger logs from an actor): Ctrl-C closes the offline file of a trial that
    did not end (Ray would wait up to 30 minutes for it), and a restore skips the steps the file has."""
    import ray

    trial = fake_trial(tmp_path)
    ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        for index, steps in enumerate(((2, 4, 6), (4, 6, 8))):  # the first driver, then the restored run's
            tracker = WandbTracker("offline", "raylab", None, group="fake", directory=str(tmp_path))
            tracker.setup()
            tracker.log_trial_start(trial)
            for step in steps:
                tracker.log_trial_result(step // 2, trial, report(step))
            tracker.on_experiment_end([trial])  # Ctrl-C: the trial did not end
            # A later driver reads closed files; here both drivers are one process, so wait until
            # wandb's core process has written this driver's new steps (the restored one skips 4 and 6).
            written_rows(offline_run_files(tmp_path, wandb_run_id(trial))[index], (3, 1)[index])
    finally:
        ray.shutdown()
    files = offline_run_files(tmp_path, wandb_run_id(trial))
    assert len(files) == 2 and wandb_run_id(trial) == "run-1-abcde_00000"
    rows = [(step, row["val/loss"]) for path in files for step, row in wandb_history(path)]
    assert rows == [(s, 1.0 / s) for s in (2, 4, 6, 8)]
    assert all("training_iteration" not in row and "time_this_iter_s" not in row for path in files for _, row in wandb_history(path))


def written_rows(path: Path, count: int, timeout: float = 30) -> list:
    """The history rows of a W&B offline file once it holds `count` of them (or after `timeout` s):
    wandb's core process may still be writing it when `finish()` returns (seen on a loaded machine),
    and a file being written reads as torn, its whole records so far."""
    deadline = time.monotonic() + timeout
    while len(rows := list(wandb_history(path))) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return rows


def test_the_wandb_reader_reads_what_wandb_writes(tmp_path, monkeypatch):
    """The offline-file reader against wandb itself, with a record longer than a 32 KiB block."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(id="reader", project="p", mode="offline", dir=str(tmp_path), config={"a": 1})
    for step in (1, 5, 9):
        run.log({"val/loss": step / 10, "note": "x" * (40000 if step == 5 else 1)}, step=step)
    run.finish()
    (path,) = offline_run_files(tmp_path, "reader")
    rows = written_rows(path, 3)
    assert [(step, row["val/loss"]) for step, row in rows] == [(1, 0.1), (5, 0.5), (9, 0.9)] and len(rows[1][1]["note"]) == 40000
