"""A sweep whose storage is an S3 bucket, end to end, against a real S3 API (moto's server on 127.0.0.1).

raylab reaches the server only through the standard AWS settings (AWS_ENDPOINT_URL and keys), as it
would reach MinIO or Ceph (docs/cluster.md). Every command runs as a user runs it, in its own
process with an embedded Ray; what lands in the bucket is checked by listing it through boto3, not
only through raylab. The two-node cluster with the same bucket is tests/test_two_node_cluster.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import raylab
from realparts import S3Server

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "jobs" / "smoke.yaml")


@pytest.fixture(scope="module")
def s3():
    scratch = Path(tempfile.mkdtemp(prefix="rls3-"))
    server = S3Server(scratch)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process and the commands it starts see the server through the standard AWS variables."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3


def raylab_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raylab.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def parquet_from_bucket(s3: S3Server, key: str) -> tuple[pd.DataFrame, bytes | None]:
    """A Parquet object read through the S3 API (boto3), and its raylab collect id."""
    table = pq.read_table(io.BytesIO(s3.read(key)))
    return table.to_pandas(), (table.schema.metadata or {}).get(b"raylab.collect_id")


def run_folders(keys: list[str], sweep: str) -> set[str]:
    return {key[len(sweep):].split("/")[0] for key in keys if key[len(sweep):].startswith("run-")}


def test_a_sweep_in_a_bucket_and_every_command_that_reads_it(s3_env, tmp_path):
    s3 = s3_env
    uri = s3.uri("embedded/smoke")
    sweep = "embedded/smoke/"
    command = ("run", SMOKE, f"storage={s3.uri('embedded')}", "training.steps=40", "training.eval_every=20", "--num-cpus", "2")

    first = raylab_cli(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"results: {uri}/trials.parquet" in first.stdout
    assert not any(tmp_path.iterdir()), "a bucket sweep wrote into the working directory"

    keys = s3.keys(sweep)
    runs = run_folders(keys, sweep)
    assert len(runs) == 1, keys
    run = f"{sweep}{runs.pop()}/"
    for name in ("tuner.pkl", "raylab.json"):
        assert f"{run}{name}" in keys
    assert any(key.startswith(f"{run}experiment_state-") for key in keys)
    trial_folders = {key[len(run):].split("/")[0] for key in keys if key.startswith(run) and key.endswith("/result.json")}
    assert len(trial_folders) == 4, keys  # RNN and LSTM x seeds 0, 1
    for folder in trial_folders:
        assert f"{run}{folder}/params.json" in keys
        assert any(key.startswith(f"{run}{folder}/checkpoint_") and key.endswith("/state.pt") for key in keys), folder
    assert f"{sweep}raylab-lease.json" not in keys  # the driver gave its lease back

    trials, trials_id = parquet_from_bucket(s3, f"{sweep}trials.parquet")
    curves, curves_id = parquet_from_bucket(s3, f"{sweep}curves.parquet")
    assert trials_id is not None and trials_id == curves_id
    assert sorted(zip(trials["variant"], trials["seed"])) == [("LSTM", 0), ("LSTM", 1), ("RNN", 0), ("RNN", 1)]
    assert set(trials["status"]) == {"finished"} and set(trials["steps"]) == {40}
    assert trials["git_commit"].notna().all() and trials["version.ray"].notna().all()
    assert sorted(curves[curves["metric"] == "val/loss"]["step"].unique()) == [20, 40]

    # The Python loaders read the same objects.
    assert raylab.load_trials(uri).sort_values("trial_id").reset_index(drop=True).equals(trials.sort_values("trial_id").reset_index(drop=True))
    assert len(raylab.load_curves(uri)) == len(curves)

    table = raylab_cli("table", uri, "--metric", "val/loss", "--format", "csv", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert sorted(row["variant"] for row in rows) == ["LSTM", "RNN"] and {row["val/loss.n"] for row in rows} == {"2"}, table.stdout

    plot = raylab_cli("plot", uri, "--metric", "val/loss", cwd=tmp_path)  # a bucket experiment: the figure lands here
    assert plot.returncode == 0 and (tmp_path / "val_loss.png").stat().st_size > 0, plot.stderr

    best = raylab_cli("best", uri, "--seeds", "2", "--out", str(tmp_path / "best.yaml"), cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert f"storage: {s3.uri('embedded')}" in (tmp_path / "best.yaml").read_text()
    assert raylab_cli("validate", str(tmp_path / "best.yaml"), cwd=tmp_path).returncode == 0

    # Freshness through the bucket: a missing trials.parquet is collected again by the next reader.
    s3.client().delete_object(Bucket=s3.bucket, Key=f"{sweep}trials.parquet")
    again = raylab_cli("table", uri, "--metric", "val/loss", cwd=tmp_path)
    assert again.returncode == 0 and "collecting again" in again.stderr, again.stderr
    assert f"{sweep}trials.parquet" in s3.keys(sweep)
    collected = raylab_cli("collect", uri, cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    _, new_id = parquet_from_bucket(s3, f"{sweep}trials.parquet")
    assert new_id not in (None, trials_id) and new_id == parquet_from_bucket(s3, f"{sweep}curves.parquet")[1]

    # The same command again, and a resume, start nothing: every trial finished in the bucket.
    rerun = raylab_cli(*command, cwd=tmp_path)
    assert rerun.returncode == 0 and "4 of 4 trials already finished" in rerun.stdout + rerun.stderr, rerun.stdout + rerun.stderr
    resume = raylab_cli("resume", uri, cwd=tmp_path)
    assert resume.returncode == 0 and "nothing to resume" in resume.stdout + resume.stderr, resume.stdout + resume.stderr
    assert run_folders(s3.keys(sweep), sweep) == {run[len(sweep):-1]}
    assert set(raylab.load_trials(uri)["trial_id"]) == set(trials["trial_id"])


def test_bucket_problems_are_one_line_before_ray_starts(s3_env, tmp_path):
    missing = raylab_cli("run", SMOKE, "storage=s3://no-such-bucket/raylab", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"raylab: error: {SMOKE}: storage: s3://no-such-bucket/raylab: bucket 'no-such-bucket' does not exist "
        "(raylab creates folders in a bucket, not the bucket)"
    )
    query = raylab_cli("run", SMOKE, f"storage={s3_env.uri('x')}?endpoint_override=127.0.0.1:1", cwd=tmp_path)
    assert query.returncode == 2 and "options in a storage URI" in query.stderr and len(query.stderr.strip().splitlines()) == 1
    nothing = raylab_cli("table", s3_env.uri("nothing-here"), cwd=tmp_path)
    assert nothing.returncode == 2 and nothing.stderr.strip() == f"raylab: error: {s3_env.uri('nothing-here')}: no such experiment folder or Parquet file"
    assert s3_env.keys("x") == [] and s3_env.keys("nothing-here") == []  # refused, and nothing written


# --- a driver killed mid-sweep ---------------------------------------------------------------------

STEPS, EVAL_EVERY = 1200, 100


def checkpoint_indices(s3: S3Server, sweep: str) -> dict[str, int]:
    """trial folder -> the highest checkpoint index stored in the bucket for it."""
    newest: dict[str, int] = {}
    for key in s3.keys(sweep):
        parts = key[len(sweep):].split("/")
        if len(parts) == 4 and parts[0].startswith("run-") and parts[2].startswith("checkpoint_"):
            newest[parts[1]] = max(newest.get(parts[1], -1), int(parts[2].removeprefix("checkpoint_")))
    return newest


def kill_when_checkpointed(driver: subprocess.Popen, s3: S3Server, sweep: str, trials: int, index: int) -> None:
    """SIGKILL the driver and its embedded Ray (a lost machine) once every trial has stored
    checkpoint `index` or later in the bucket."""
    deadline = time.monotonic() + 300
    while True:
        newest = checkpoint_indices(s3, sweep)
        if len(newest) == trials and min(newest.values()) >= index:
            break
        assert driver.poll() is None, driver.communicate()[0]
        assert time.monotonic() < deadline, f"no checkpoint {index} of {trials} trials within 300 s: {newest}"
        time.sleep(0.3)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)


def result_rows(s3: S3Server, sweep: str) -> dict[str, list[dict]]:
    rows = {}
    for key in s3.keys(sweep):
        if key.endswith("/result.json"):
            rows[key.split("/")[-2]] = [json.loads(line) for line in s3.read(key).decode().splitlines() if line.strip()]
    return rows


def test_a_killed_driver_continues_from_its_checkpoints_in_the_bucket(s3_env, tmp_path):
    """Killed twice (the driver and its embedded Ray, SIGKILL): the same `raylab run` again continues
    the run, `raylab resume` finishes it; each trial continued from its last checkpoint in the bucket,
    nothing ran twice, and every number equals an uninterrupted run of the same sweep."""
    s3 = s3_env
    sweep = "killed/interrupted/"
    common = (SMOKE, "seeds=[0]", "hidden_sizes=[64]", f"training.steps={STEPS}", f"training.eval_every={EVAL_EVERY}", "--num-cpus", "2")
    command = ("run", *common[:1], "name=interrupted", f"storage={s3.uri('killed')}", *common[1:])

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "raylab.cli", *command], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    kill_when_checkpointed(start(), s3, sweep, trials=2, index=1)
    assert f"{sweep}raylab-lease.json" in s3.keys(sweep)  # a killed driver cannot give its lease back

    again = start()  # the same command: the lease's owner is dead (same host, pid gone), so it is taken over
    kill_when_checkpointed(again, s3, sweep, trials=2, index=max(checkpoint_indices(s3, sweep).values()) + 2)

    resumed = raylab_cli("resume", s3.uri("killed/interrupted"), cwd=tmp_path, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(run_folders(s3.keys(sweep), sweep)) == 1  # continued in its run, never started anew

    rows = result_rows(s3, sweep)
    assert len(rows) == 2
    for trial, reports in rows.items():
        reports.sort(key=lambda row: row["training_iteration"])
        restarts = [row for row in reports if row["iterations_since_restore"] == 1 and row["training_iteration"] > 1]
        assert restarts, f"{trial} started over instead of continuing: {[r['step'] for r in reports]}"
        # Each attempt continued one evaluation after a stored checkpoint, never from step 0.
        assert all(row["step"] == row["training_iteration"] * EVAL_EVERY for row in reports), trial
        assert reports[-1]["step"] == STEPS
    # result.json itself may lack a report (a driver killed while uploading it: docs/resume.md);
    # the collected curves may not: every evaluation is there once.
    trials = raylab.load_trials(s3.uri("killed/interrupted"))
    assert sorted(trials["variant"]) == ["LSTM", "RNN"] and set(trials["status"]) == {"finished"} and set(trials["steps"]) == {STEPS}
    curves = raylab.load_curves(s3.uri("killed/interrupted"))
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    val_steps = curves[curves["metric"] == "val/loss"].groupby("trial_id")["step"].apply(sorted)
    assert all(steps == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)) for steps in val_steps), val_steps

    reference = raylab_cli("run", *common[:1], "name=reference", f"storage={s3.uri('killed')}", *common[1:], cwd=tmp_path, timeout=400)
    assert reference.returncode == 0, reference.stderr
    expected = raylab.load_curves(s3.uri("killed/reference")).merge(raylab.load_trials(s3.uri("killed/reference"))[["trial_id", "variant"]])
    got = curves.merge(trials[["trial_id", "variant"]])
    key = ["variant", "step", "metric"]
    merged = got[[*key, "value"]].merge(expected[[*key, "value"]], on=key, suffixes=("", "_expected"), how="outer")
    assert merged["value"].notna().all() and merged["value_expected"].notna().all(), merged[merged.isna().any(axis=1)].to_string()
    assert (merged["value"] - merged["value_expected"]).abs().max() <= 1e-6 * merged["value_expected"].abs().max()
