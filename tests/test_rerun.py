"""Running a sweep file again after Ctrl-C continues its unfinished trials from their checkpoints,
and the user sees raylab's lines, not Ray's routine warnings (real CLI, real embedded Ray)."""

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import raylab as raylab_module

from raylab.cli import main
from raylab.execution import lease
from raylab.execution.rerun import EarlierRun, blocked_message, plan_rerun
from raylab.planning import storage

STEPS, EVAL_EVERY = 20, 2
# Ray's routine lines that must not reach the user (raylab/execution/quiet.py).
RAY_NOISE = ("Token authentication is enabled", "Could not fetch metrics", "Tuner.restore", "Stop signal received")


def trial(config_hash: str) -> dict:
    return {"config_hash": config_hash}


def test_plan_sorts_trials_by_what_earlier_runs_did():
    runs = [
        EarlierRun("results/s/run-1", True, {"a": "finished", "b": "unfinished", "c": "errored"}),
        EarlierRun("results/s/run-2", True, {"d": "pending"}),
        EarlierRun("results/s/run-3", False, {"e": "unfinished"}),  # no Tune state: nothing to restore
    ]
    plan = plan_rerun([trial(h) for h in "abcdef"], runs)
    assert [t["config_hash"] for t in plan.finished] == ["a"]
    assert {run: [t["config_hash"] for t in ts] for run, ts in plan.continued.items()} == {"results/s/run-1": ["b"], "results/s/run-2": ["d"]}
    assert [t["config_hash"] for t in plan.new] == ["c", "e", "f"]
    assert [t["config_hash"] for t in plan.errored] == ["c"]
    assert plan.blocked is None


def test_a_run_holding_trials_the_sweep_no_longer_lists_is_not_restored():
    runs = [EarlierRun("results/s/run-1", True, {"b": "unfinished", "x": "unfinished", "y": "finished"})]
    plan = plan_rerun([trial("b")], runs)  # the sweep file lost trial x (and y, which finished)
    assert plan.blocked == ("results/s/run-1", 1)
    assert "raylab resume results/s/run-1" in blocked_message(plan)


def raylab(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raylab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for path in sweep_dir.glob("run-*/*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def checkpoints_written(sweep_dir: Path) -> int:
    """Checkpoints the sweep's trials have written so far (one per report here): each trial's newest
    checkpoint index + 1. Trials write checkpoints straight to storage; result.json comes from the
    driver, which syncs it with the experiment state, on Tune's period (at least 10 s)."""
    newest = {}
    for path in sweep_dir.glob("run-*/*/checkpoint_*"):
        newest[path.parent] = max(newest.get(path.parent, -1), int(path.name.removeprefix("checkpoint_")))
    return sum(index + 1 for index in newest.values())


def wait_for_checkpoints(driver: subprocess.Popen, sweep_dir: Path, count: int, what: str) -> None:
    """Until the sweep's trials have written `count` checkpoints (within 240 s, while the driver lives)."""
    deadline = time.monotonic() + 240
    while checkpoints_written(sweep_dir) < count:
        assert driver.poll() is None, driver.stdout.read()
        assert time.monotonic() < deadline, f"not reached within 240 s: {what}"
        time.sleep(0.2)


def slow_sweep(tmp_path: Path, name: str, **changes) -> tuple[Path, tuple[str, ...]]:
    """A one-LSTM copy sweep of about 0.2 s a step on one core (a Ctrl-C or a second driver lands
    mid-trial): its sweep folder and the `raylab run` arguments that run it on one CPU."""
    sweep = {
        "name": name,
        "task": {"name": "copy", "delay": 300, "batch_size": 32, "eval_size": 20},
        "variants": [{"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [128],
        "seeds": [0],
        "training": {"steps": STEPS, "eval_every": EVAL_EVERY},
        "storage": str(tmp_path / "results"),
        **changes,
    }
    sweep_file = tmp_path / f"{name}.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    return tmp_path / "results" / name, ("run", str(sweep_file), "--num-cpus", "1")



@pytest.mark.ray
@pytest.mark.slow
def test_running_the_same_command_after_ctrl_c_continues_from_the_checkpoint(tmp_path, capsys):
    sweep_dir, command = slow_sweep(tmp_path, "rerun", loggers=["tensorboard"])

    first = raylab(*command)
    wait_for_checkpoints(first, sweep_dir, 2, "two checkpoints written")
    first.send_signal(signal.SIGINT)  # Ctrl-C
    interrupted, _ = first.communicate(timeout=120)
    stopped_at = max(row["step"] for row in result_rows(sweep_dir))
    assert stopped_at < STEPS, interrupted
    for noise in RAY_NOISE:
        assert noise not in interrupted, interrupted
    assert first.returncode == 130 and "raylab: interrupted: 0 of 1 trials finished" in interrupted, interrupted

    assert main([*command, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "continue in run-" in listing and "nothing started, nothing written" in listing

    again = raylab(*command)  # up-arrow, Enter
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert "continuing 1 unfinished trial(s) from their checkpoints" in output, output
    for noise in RAY_NOISE:
        assert noise not in output, output

    assert len(list(sweep_dir.glob("run-*"))) == 1  # no new run folder, no second copy of the trial
    rows = sorted(result_rows(sweep_dir), key=lambda row: row["training_iteration"])
    restored = [row for row in rows if row["iterations_since_restore"] < row["training_iteration"]]
    assert restored and min(row["step"] for row in restored) > EVAL_EVERY  # continued, not from step 0
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["status"].tolist() == ["finished"] and trials["steps"].tolist() == [STEPS]
    curves = pd.read_parquet(sweep_dir / "curves.parquet")
    val_steps = curves[curves["metric"] == "val/loss"]["step"].tolist()
    assert sorted(val_steps) == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    # TensorBoard's x-axis: Tune's event-file logger takes `timesteps_total`, which is the training step.
    assert all(row["timesteps_total"] == row["step"] for row in rows)
    # `loggers: [tensorboard]` (tensorboardX comes with ray[tune]): read the event files themselves.
    steps = event_steps(sweep_dir, "ray/tune/val/loss")
    # Training steps (up to 20), not report indices (up to 10); a point just before the Ctrl-C may be missing.
    assert steps[-1] == STEPS and set(steps) <= set(val_steps) and len(steps) >= len(val_steps) - 2, steps
    assert raylab_module.load_curves(sweep_dir).equals(curves)  # the public loader (docs/python.md)


def event_steps(sweep_dir: Path, tag: str) -> list[int]:
    """Steps of `tag` in the trials' TensorBoard event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    steps = set()
    for path in sweep_dir.glob("run-*/*/events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            steps.update(event.step for value in event.summary.value if value.tag == tag)
    return sorted(steps)


def lease_file(sweep_dir: Path) -> Path:
    return sweep_dir / lease.LEASE_FILE


def test_a_live_drivers_lease_is_refused_in_one_line_and_a_dead_ones_taken_over(tmp_path, capsys, monkeypatch):
    """The refusals and take-overs that need no Ray: the lease on a local folder and on a file:// URI."""
    monkeypatch.setattr(lease, "SETTLE_S", 0.2)
    for sweep_dir in (str(tmp_path / "local" / "s"), f"file://{tmp_path}/uri/s"):
        held = lease.acquire(sweep_dir, "raylab run a.yaml")
        with pytest.raises(lease.LeaseHeld) as refused:
            lease.acquire(sweep_dir, "raylab run b.yaml")
        message = str(refused.value)
        assert message == message.splitlines()[0] and "`raylab run a.yaml`, pid" in message and "--take-over" in message
        forced = lease.acquire(sweep_dir, "raylab run c.yaml", take_over=True)  # the user says the owner is dead
        assert "taking over" in capsys.readouterr().err
        held.release()  # the overtaken driver's release leaves the new owner's lease alone
        assert json.loads(storage.read_text(lease.lease_location(sweep_dir)))["command"] == "raylab run c.yaml"
        forced.release()
        assert not storage.exists(lease.lease_location(sweep_dir))

    sweep_dir = tmp_path / "results" / "s"
    sweep_dir.mkdir(parents=True)
    now = time.time()
    elsewhere = {"token": "t", "host": "another-host", "pid": 1, "command": "raylab run s.yaml", "since": now - 600}
    lease_file(sweep_dir).write_text(json.dumps({**elsewhere, "heartbeat": now - 5}))  # alive, on another machine
    with pytest.raises(lease.LeaseHeld, match="pid 1 on host another-host, since .*, last heartbeat 5 s ago"):
        lease.acquire(str(sweep_dir), "raylab run s.yaml")
    lease_file(sweep_dir).write_text(json.dumps({**elsewhere, "heartbeat": now - lease.STALE_AFTER_S - 1}))  # silent too long
    lease.acquire(str(sweep_dir), "raylab run s.yaml").release()
    assert "its last heartbeat is" in capsys.readouterr().err
    lease_file(sweep_dir).write_text('{"tok')  # torn by a writer that died
    lease.acquire(str(sweep_dir), "raylab run s.yaml").release()

    # The owner renews its heartbeat; a lease taken over under it stops it as Ctrl-C would, also
    # when it was started with SIGINT ignored (`raylab run ... &` in a script).
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        held = lease.acquire(str(sweep_dir), "raylab run s.yaml")
        first = json.loads(lease_file(sweep_dir).read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads(lease_file(sweep_dir).read_text())["heartbeat"] > first
        with pytest.raises(KeyboardInterrupt):
            lease.acquire(str(sweep_dir), "raylab run s.yaml", take_over=True)
            time.sleep(2)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert "was taken over by" in capsys.readouterr().err
    held.release()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.faults  # about a minute: CI's second step (pyproject's markers)
def test_a_second_driver_refuses_while_the_first_trains_then_takes_over_a_killed_one(tmp_path, capsys):
    sweep_dir, command = slow_sweep(tmp_path, "two", seeds=[0, 1])

    first = raylab(*command)
    wait_for_checkpoints(first, sweep_dir, 2, "the first driver is training")
    assert main(list(command)) == 2  # a second driver of the same file, before it reads or restores anything
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is being driven by `raylab run" in err and f"pid {first.pid} on host" in err, err
    assert main([*command, "--dry-run"]) == 0 and "`raylab run` would stop: " in capsys.readouterr().out
    output, _ = first.communicate(timeout=600)  # the first is unharmed and finishes
    assert first.returncode == 0, output
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["status"].tolist() == ["finished", "finished"] and trials["steps"].tolist() == [STEPS, STEPS]
    assert not lease_file(sweep_dir).exists()  # given back at the end

    # A driver killed mid-run leaves its lease; the next one on this host sees its pid is gone and takes over.
    written = checkpoints_written(sweep_dir)
    grown = raylab(*command, "seeds=[0,1,2]")
    wait_for_checkpoints(grown, sweep_dir, written + 2, "the third seed has a checkpoint")
    assert lease_file(sweep_dir).exists()
    # Not at the instant of a report: Tune then writes its searcher state, which a SIGKILL can leave
    # empty, and Tune's restore fails on it (a limit of Tune's restore, not of the lease).
    time.sleep(0.5)
    grown.send_signal(signal.SIGKILL)
    grown.wait(timeout=30)
    again = raylab(*command, "seeds=[0,1,2]")
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and f"raylab: taking over {sweep_dir} from" in output and "is gone" in output, output
    assert "continuing 1 unfinished trial(s)" in output, output
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["status"].tolist() == ["finished"] * 3 and trials["steps"].tolist() == [STEPS] * 3


@pytest.mark.ray
@pytest.mark.slow
def test_running_a_search_again_after_ctrl_c_continues_it_in_its_run(tmp_path):
    sweep_dir, command = slow_sweep(tmp_path, "search", search={"num_samples": 2, "space": {"optimizer.lr": {"loguniform": [1.0e-3, 1.0e-2]}}})

    first = raylab(*command)
    wait_for_checkpoints(first, sweep_dir, 2, "the first sample has two checkpoints")
    first.send_signal(signal.SIGINT)
    interrupted, _ = first.communicate(timeout=120)
    assert first.returncode == 130, interrupted

    again = raylab(*command)  # what the interrupt message says to do; it once started both samples anew in a new run
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert "continuing 1 unfinished trial(s) from their checkpoints" in output, output
    assert len(list(sweep_dir.glob("run-*"))) == 1
    rows = result_rows(sweep_dir)
    restored = [row for row in rows if row["iterations_since_restore"] < row["training_iteration"]]
    assert restored and min(row["step"] for row in restored) > EVAL_EVERY  # continued, not from step 0
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["status"].tolist() == ["finished", "finished"] and trials["search_base"].nunique() == 1
    assert trials["config.optimizer.lr"].nunique() == 2 and trials["steps"].tolist() == [STEPS, STEPS]
