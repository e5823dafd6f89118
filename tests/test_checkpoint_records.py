"""A restored run whose experiment state names checkpoints that Tune's retention already deleted.

Tune deletes a trial's oldest checkpoint as soon as it registers a newer one; the experiment state
that names the trial's checkpoints reaches storage later. A driver killed in between leaves a state
naming deleted checkpoints (seen in CI with an S3 bucket: raylab/execution/checkpoint_records.py).
Here the window is made wide and certain with real files: the run's state is saved aside early,
the driver is SIGKILLed later, the early state is put back (the one a slow upload would have left)
and the checkpoints it names are deleted (what Tune's retention did meanwhile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import raylab
from ray.tune import ExperimentAnalysis

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "jobs" / "smoke.yaml")
STEPS, EVAL_EVERY = 800, 100


def raylab_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raylab.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def state_checkpoints(state_file: Path) -> list[str]:
    """Each trial's latest checkpoint folder name as the state file's last results name it ('' for none)."""
    trials = json.loads(state_file.read_text())["trial_data"]
    metadata = [json.loads(entry) if isinstance(entry, str) else entry for _, entry in trials]
    return [entry["last_result"].get("checkpoint_dir_name", "") for entry in metadata]


def newest_checkpoints(run_dir: Path) -> list[int]:
    return [max((int(c.name.removeprefix("checkpoint_")) for c in trial.glob("checkpoint_*")), default=-1)
            for trial in run_dir.iterdir() if trial.is_dir()]


@pytest.mark.faults  # about a minute: CI's second step (pyproject's markers)
def test_a_state_naming_deleted_checkpoints_resumes_from_the_next_one_on_storage(tmp_path):
    common = (SMOKE, "seeds=[0]", "hidden_sizes=[64]", f"training.steps={STEPS}", f"training.eval_every={EVAL_EVERY}", "--num-cpus", "2")
    # Tune saves the experiment state every 10 s or more by itself; every second here, so that a
    # state naming early checkpoints exists while the short trials run.
    driver = subprocess.Popen([sys.executable, "-m", "raylab.cli", "run", common[0], "name=raced", f"storage={tmp_path / 'results'}", *common[1:]],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"})
    sweep = tmp_path / "results" / "raced"
    early = tmp_path / "early-state"
    deadline = time.monotonic() + 300
    run_dir = None
    while True:  # save the first state that names a later checkpoint of both trials
        assert driver.poll() is None, driver.communicate()[0]
        assert time.monotonic() < deadline, "no experiment state naming a checkpoint of each trial within 300 s"
        run_dir = next(sweep.glob("run-*"), None)
        states = sorted(run_dir.glob("experiment_state-*.json")) if run_dir else []
        try:
            named = state_checkpoints(states[-1]) if states else []
        except (ValueError, KeyError, OSError):
            named = []  # caught mid-write
        # Past each trial's first checkpoint: Tune records a checkpoint one event after the result that
        # names it, so a state saved in between records none yet; here an earlier one is recorded.
        if len(named) == 2 and all(named) and all(int(n.removeprefix("checkpoint_")) >= 1 for n in named):
            shutil.copytree(run_dir, early, ignore=shutil.ignore_patterns("*_0000*"))  # the run's own files, not the trials'
            break
        time.sleep(0.1)
    while min(newest_checkpoints(run_dir), default=-1) < max(int(n.removeprefix("checkpoint_")) for n in named) + 3:
        assert driver.poll() is None, driver.communicate()[0]
        assert time.monotonic() < deadline, f"no three newer checkpoints within 300 s: {newest_checkpoints(run_dir)}"
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its embedded Ray, as a lost machine
    driver.wait(timeout=30)

    for state in run_dir.glob("experiment_state-*.json"):
        state.unlink()
    for saved in early.iterdir():
        if saved.is_file():
            shutil.copy2(saved, run_dir / saved.name)
    for trial in ExperimentAnalysis(str(run_dir)).trials:  # Tune's own trials, with their checkpoint records
        for result in trial.run_metadata.checkpoint_manager._checkpoint_results:
            shutil.rmtree(result.checkpoint.path, ignore_errors=True)  # what Tune's retention deleted after that state was saved
        assert not Path(trial.checkpoint.path).exists()
        assert any(Path(trial.storage.trial_fs_path).glob("checkpoint_*")), "a newer checkpoint is left to resume from"

    resumed = raylab_cli("resume", str(sweep), cwd=tmp_path, timeout=400)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert "does not exist on storage" not in output and "Error handling checkpoint" not in output, output

    trials = raylab.load_trials(sweep)
    assert sorted(trials["variant"]) == ["LSTM", "RNN"] and set(trials["status"]) == {"finished"} and set(trials["steps"]) == {STEPS}
    for trial_dir in (d for d in run_dir.iterdir() if d.is_dir()):
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        restarts = [row for row in rows if row["iterations_since_restore"] == 1 and row["training_iteration"] > 1]
        assert restarts and restarts[-1]["step"] > EVAL_EVERY * 2, f"{trial_dir.name} did not continue from a later checkpoint"
        # Tune's iteration count continues from the checkpoint's; a trial that had finished before the
        # kill is restored from its last checkpoint and reports its end once more, one iteration later.
        for row in rows:
            iterations = {STEPS // EVAL_EVERY, STEPS // EVAL_EVERY + 1} if row.get("end") else {row["step"] // EVAL_EVERY}
            assert row["step"] % EVAL_EVERY == 0 and row["training_iteration"] in iterations, (trial_dir.name, row)
    # One checkpoint per trial, numbered as in an uninterrupted run: none of the killed run's left behind.
    assert sorted(path.name for path in run_dir.glob("*/checkpoint_*")) == [f"checkpoint_{STEPS // EVAL_EVERY - 1:06d}"] * 2
    curves = raylab.load_curves(sweep)
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()

    reference = raylab_cli("run", common[0], "name=reference", f"storage={tmp_path / 'results'}", *common[1:], cwd=tmp_path, timeout=400)
    assert reference.returncode == 0, reference.stderr
    expected = raylab.load_curves(tmp_path / "results" / "reference").merge(raylab.load_trials(tmp_path / "results" / "reference")[["trial_id", "variant"]])
    got = curves.merge(trials[["trial_id", "variant"]])
    key = ["variant", "step", "metric"]
    merged = got[[*key, "value"]].merge(expected[[*key, "value"]], on=key, suffixes=("", "_expected"), how="outer")
    assert merged["value"].notna().all() and merged["value_expected"].notna().all(), merged[merged.isna().any(axis=1)].to_string()
    assert (merged["value"] - merged["value_expected"]).abs().max() <= 1e-6 * merged["value_expected"].abs().max()


def test_keep_checkpoints_keeps_the_newest_of_each_trial(tmp_path):
    """`keep_checkpoints: 2`: of a trial's four checkpoints, the two newest stay (deleted by raylab, not by
    Tune's `num_to_keep`, which would force a save of the whole experiment state every two checkpoints)."""
    result = raylab_cli("run", SMOKE, "name=kept", f"storage={tmp_path / 'results'}", "seeds=[0]", "hidden_sizes=[8]",
                        "training.steps=40", "training.eval_every=10", "keep_checkpoints=2", "--num-cpus", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    trial_dirs = [d for d in (tmp_path / "results" / "kept").glob("run-*/*") if d.is_dir()]
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        assert sorted(c.name for c in trial_dir.glob("checkpoint_*")) == ["checkpoint_000002", "checkpoint_000003"], trial_dir
    bad = raylab_cli("validate", SMOKE, "keep_checkpoints=0", cwd=tmp_path)
    assert bad.returncode == 2 and "keep_checkpoints: must be positive, got 0" in bad.stderr
