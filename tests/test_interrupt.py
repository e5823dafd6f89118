"""Real runs on the embedded Ray (tiny, 1-2 CPUs): Ctrl-C, --smoke's own folder, and collecting a
folder that changed or holds something unreadable. Each asserts the exit code, the line, and that
nothing already written is lost."""

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

from raylab.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def write_sweep(tmp_path: Path, steps: int, seeds: list[int], delay: int = 5) -> Path:
    sweep = {
        "name": "tiny",
        "task": {"name": "copy", "delay": delay, "batch_size": 32, "eval_size": 20},
        "variants": [{"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [64],
        "seeds": seeds,
        "training": {"steps": steps, "eval_every": 2},
        "storage": str(tmp_path / "results"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def raylab(*args: str) -> subprocess.Popen:
    """A driver in its own process group, so that a signal to the group is a terminal's Ctrl-C."""
    return subprocess.Popen(
        [sys.executable, "-m", "raylab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
        if time.monotonic() > deadline:
            break
    process.kill()
    pytest.fail(f"no {marker!r} in the output:\n{''.join(seen)}")


@pytest.mark.faults  # about a minute: CI's second step (pyproject's markers)
def test_ctrl_c_says_interrupted_exits_130_and_resume_finishes(tmp_path):
    path = write_sweep(tmp_path, steps=40, seeds=[0, 1], delay=50)  # long enough to be running at Ctrl-C
    sweep_dir = tmp_path / "results" / "tiny"
    driver = raylab("run", str(path), "--num-cpus", "1")
    before = read_until(driver, " step 2/40", timeout=180)  # a trial is running and has reported
    os.killpg(driver.pid, signal.SIGINT)
    after, _ = driver.communicate(timeout=120)
    output = before + after
    assert driver.returncode == 130, output
    assert "raylab: interrupted: 0 of 2 trials finished, 2 not finished; continue with:\n" in output
    assert f"\n  raylab resume {sweep_dir}\n" in output
    assert " done" not in output and "results:" not in output  # no tally of pending trials as done, no table

    # The interrupted state is what `raylab resume` continues from (here with the steps cut short).
    state = next(sweep_dir.glob("run-*"))
    assert (state / "raylab.json").is_file()
    resumed = subprocess.run([sys.executable, "-m", "raylab.cli", "resume", str(sweep_dir), "--num-cpus", "1"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert sorted(trials["status"]) == ["finished", "finished"] and set(trials["steps"]) == {40}


def test_smoke_run_folder_stale_parquet_and_an_unreadable_manifest(tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path, steps=4, seeds=[0, 1])
    done = subprocess.run([sys.executable, "-m", "raylab.cli", "run", str(path), "--smoke", "--num-cpus", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    smoke_dir = tmp_path / "results" / "tiny-smoke"
    assert f"raylab: --smoke: results go to {smoke_dir}, apart from the sweep's own folder" in done.stdout
    assert not (tmp_path / "results" / "tiny").exists()  # the real sweep's folder is untouched
    trials = pd.read_parquet(smoke_dir / "trials.parquet")
    assert list(trials["status"]) == ["finished"]
    monkeypatch.chdir(tmp_path)  # a relative sweep folder reads Tune's state too (it once listed every trial as pending)
    assert main(["collect", "results/tiny-smoke"]) == 0
    assert list(pd.read_parquet(smoke_dir / "trials.parquet")["status"]) == ["finished"]
    capsys.readouterr()

    # Right after the run the Parquet is fresh: no collect. A trial result written after it: the
    # table is collected again, and says so.
    assert main(["table", str(smoke_dir)]) == 0
    assert "collecting again" not in capsys.readouterr().err
    result = next(smoke_dir.glob("run-*/*/result.json"))
    earlier = result.stat().st_mtime - 5  # the Parquet files older than a result: as if it changed after them
    for collected in (smoke_dir / "trials.parquet", smoke_dir / "curves.parquet"):
        os.utime(collected, (earlier, earlier))
    assert main(["table", str(smoke_dir)]) == 0
    captured = capsys.readouterr()
    assert f"raylab: {result.parent.parent}" in captured.err and "changed after the last collect; collecting again" in captured.err
    assert main(["table", str(smoke_dir)]) == 0  # fresh now: no second collect
    assert "collecting again" not in capsys.readouterr().err

    # An unreadable manifest is one warning line; the trial Tune recorded is still collected.
    manifest = next(smoke_dir.glob("run-*/raylab.json"))
    manifest.write_text(manifest.read_text()[:50])
    assert main(["collect", str(smoke_dir)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raylab: warning:")]
    assert len(warning) == 1 and f"{manifest.parent.name}/raylab.json: skipped, unreadable (JSONDecodeError" in warning[0]
    again = pd.read_parquet(smoke_dir / "trials.parquet")
    assert list(again["trial_id"]) == list(trials["trial_id"]) and list(again["status"]) == ["finished"]
    assert json.loads(json.dumps(list(again["seed"]))) == [0]
