"""The cluster path end to end: a real two-node Ray cluster on this machine, results in an S3 bucket.

The head is `ray start --head` with token authentication and no CPUs (as in cluster/*.yaml: trials
only run on workers); a worker node is a second `ray start --address=...` with two CPUs and its own
temp dir, as a second machine would have its own disk. The bucket is moto's S3 server, reached
through AWS_ENDPOINT_URL. The worker nodes are started without any AWS setting: trials reach the
bucket through what the driver hands them (Tune pickles the driver's storage filesystem, endpoint
included, into each trial and propagates its AWS keys), which docs/cluster.md relies on.

- `raylab submit`, `status`, `logs --follow`, then `table` from the bucket;
- node loss: the worker node is killed (its raylet and trial workers, SIGKILL) mid-sweep, a new one
  joins, and every trial continues from its checkpoint in the bucket;
- driver loss: the job's driver is killed mid-sweep; the same `raylab submit` again continues the
  run from the bucket.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import raylab
from raylab.execution import submit
from realparts import VENV_BIN, RayNode, S3Server, free_port, http_status, make_cluster_token, processes_mentioning, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
STEPS, EVAL_EVERY = 800, 100
# Fast node-death detection, as Ray's own tune/tests/test_cluster.py sets it (default: about 30 s).
HEALTH_CHECKS = '{"health_check_initial_delay_ms":0,"health_check_period_ms":1000,"health_check_failure_threshold":5}'


class TwoNodeCluster:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.s3 = S3Server(scratch)
        self.token_file = make_cluster_token(scratch / "home" / ".ray" / "cluster-token")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
        base.update(HOME=str(scratch / "home"), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file),
                    PATH=f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}")
        self.worker_env = base  # no AWS settings on worker nodes
        self.env = {**base, **self.s3.env}  # the head (where a submitted job's driver runs) and this client
        self.gcs_port, dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{dashboard_port}"
        self.head = RayNode(
            [
                "--head", "--num-cpus=0", "--num-gpus=0", "--object-store-memory=200000000", f"--temp-dir={scratch / 'head'}",
                f"--port={self.gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--system-config={HEALTH_CHECKS}",
            ],
            self.env, scratch / "head.log", str(scratch),
        )
        self.workers: list[RayNode] = []
        token = self.token_file.read_text()
        wait_until(lambda: http_status(f"{self.address}/api/jobs/", token=token) == 200, "Ray head", 180, self.head.process, scratch / "head.log")

    def add_worker(self) -> RayNode:
        index = len(self.workers) + 1
        worker = RayNode(
            [
                f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=2", "--num-gpus=0", "--object-store-memory=200000000",
                # Its own temp dir, as on a machine of its own: nodes sharing one would share the
                # runtime-env cache, and a new node's cleanup would delete the driver's working_dir.
                f"--temp-dir={self.scratch / f'worker{index}'}",
                f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
            ],
            self.worker_env, self.scratch / f"worker{index}.log", str(self.scratch),
        )
        self.workers.append(worker)
        return worker

    def raylab(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raylab.cli", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, *overrides: str) -> str:
        submitted = self.raylab("submit", "jobs/smoke.yaml", *overrides, "--address", self.address, "--token-file", str(self.token_file))
        assert submitted.returncode == 0, submitted.stderr
        return submitted.stdout.strip()

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop()
        self.s3.stop()
        for pid in processes_mentioning(str(self.scratch)):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster():
    scratch = Path(tempfile.mkdtemp(prefix="rl2n-"))  # short: Ray's socket paths live under it
    cluster = TwoNodeCluster(scratch)
    saved = {name: os.environ.get(name) for name in cluster.s3.env}
    os.environ.update(cluster.s3.env)  # this process reads the bucket as the user's shell does (raylab.load_trials)
    try:
        yield cluster
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def sweep_overrides(cluster: TwoNodeCluster, name: str) -> tuple[str, ...]:
    return (f"name={name}", f"storage={cluster.s3.uri('cluster')}", "seeds=[0,1]", f"training.steps={STEPS}",
            f"training.eval_every={EVAL_EVERY}", "max_failures=3")


def wait_for_checkpoints(s3: S3Server, sweep: str, trials: int, index: int, timeout_s: float = 300) -> None:
    """Until `trials` trials have stored checkpoint `index` (or a later one) in the bucket."""
    deadline = time.monotonic() + timeout_s
    while True:
        newest: dict[str, int] = {}
        for key in s3.keys(sweep):
            parts = key[len(sweep):].split("/")
            if len(parts) == 4 and parts[2].startswith("checkpoint_"):
                newest[parts[1]] = max(newest.get(parts[1], -1), int(parts[2].removeprefix("checkpoint_")))
        if sum(value >= index for value in newest.values()) >= trials:
            return
        assert time.monotonic() < deadline, f"{trials} trials did not store checkpoint {index} within {timeout_s} s: {newest}"
        time.sleep(0.3)


def check_results_in_bucket(cluster: TwoNodeCluster, name: str) -> dict[str, list[tuple[int, int, int]]]:
    """The sweep's objects, table and trials as the bucket holds them; returns each trial's reports
    as (step, training_iteration, iterations_since_restore)."""
    s3, sweep = cluster.s3, f"cluster/{name}/"
    keys = s3.keys(sweep)
    runs = {key[len(sweep):].split("/")[0] for key in keys if key[len(sweep):].startswith("run-")}
    assert len(runs) == 1, runs  # one run: continued, never started anew
    assert {f"{sweep}trials.parquet", f"{sweep}curves.parquet"} <= set(keys)
    assert f"{sweep}raylab-lease.json" not in keys

    table = cluster.raylab("table", s3.uri(f"cluster/{name}"), "--metric", "val/loss", "--format", "csv")
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert sorted((row["variant"], row["val/loss.n"]) for row in rows) == [("LSTM", "2"), ("RNN", "2")], table.stdout

    trials = raylab.load_trials(s3.uri(f"cluster/{name}"))
    assert sorted(zip(trials["variant"], trials["seed"])) == [("LSTM", 0), ("LSTM", 1), ("RNN", 0), ("RNN", 1)]
    assert set(trials["status"]) == {"finished"} and set(trials["steps"]) == {STEPS}
    curves = raylab.load_curves(s3.uri(f"cluster/{name}"))
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    val_steps = curves[curves["metric"] == "val/loss"].groupby("trial_id")["step"].apply(sorted)
    assert all(steps == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)) for steps in val_steps), val_steps

    reports = {}
    for key in keys:
        if key.endswith("/result.json"):
            rows = [json.loads(line) for line in s3.read(key).decode().splitlines() if line.strip()]
            reports[key.split("/")[-2]] = sorted((r["step"], r["training_iteration"], r["iterations_since_restore"]) for r in rows)
    assert len(reports) == 4
    for trial, rows in reports.items():
        # Each attempt continued one evaluation after a stored checkpoint, never from step 0 (result.json
        # itself may lack a report that the curves have: docs/resume.md, "Reports a killed driver lost").
        assert all(step == iteration * EVAL_EVERY for step, iteration, _ in rows) and rows[-1][0] == STEPS, (trial, rows)
    return reports


def continued(rows: list[tuple[int, int, int]]) -> bool:
    """A report that followed a restore from a checkpoint: its attempt's first, not the trial's first."""
    return any(since == 1 and iteration > 1 for _, iteration, since in rows)


def test_submit_survives_the_loss_of_the_worker_node(cluster):
    cluster.add_worker()
    job = cluster.submit(*sweep_overrides(cluster, "node-loss"))
    # Both trials that run first (two CPUs on the one worker) have stored their second checkpoint.
    wait_for_checkpoints(cluster.s3, "cluster/node-loss/", trials=2, index=1)
    lost = cluster.workers[-1]
    lost.kill()  # the machine is gone: raylet, agents and trial workers, all at once
    status = cluster.raylab("status", job, "--address", cluster.address, "--token-file", str(cluster.token_file))
    assert status.returncode == 0 and status.stdout.startswith(f"{job}: RUNNING"), status.stdout + status.stderr
    cluster.add_worker()  # a replacement joins (what the autoscaler does for a preempted spot worker)

    follow = cluster.raylab("logs", job, "--follow", "--address", cluster.address, "--token-file", str(cluster.token_file), timeout=400)
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr
    assert "trials: 4 total, 4 done" in follow.stdout
    status = cluster.raylab("status", job, "--address", cluster.address, "--token-file", str(cluster.token_file))
    assert status.stdout.startswith(f"{job}: SUCCEEDED"), status.stdout

    reports = check_results_in_bucket(cluster, "node-loss")
    assert sum(continued(rows) for rows in reports.values()) >= 2, reports  # the two trials on the lost node


def test_a_killed_driver_is_continued_by_submitting_the_sweep_again(cluster):
    if not cluster.workers or cluster.workers[-1].process.poll() is not None:
        cluster.add_worker()
    first = cluster.submit(*sweep_overrides(cluster, "driver-loss"))
    wait_for_checkpoints(cluster.s3, "cluster/driver-loss/", trials=2, index=1)
    client = submit.connect(cluster.address, cluster.token_file.read_text())
    os.kill(int(client.get_job_info(first).driver_info.pid), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while str(client.get_job_status(first)) not in submit.TERMINAL:
        assert time.monotonic() < deadline, "the job did not end after its driver was killed"
        time.sleep(1)
    assert str(client.get_job_status(first)) == "FAILED"

    second = cluster.submit(*sweep_overrides(cluster, "driver-loss"))  # the same submission again
    follow = cluster.raylab("logs", second, "--follow", "--address", cluster.address, "--token-file", str(cluster.token_file), timeout=400)
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr
    assert "continuing" in follow.stdout and "trials: 4 total, 4 done" in follow.stdout, follow.stdout[-3000:]

    reports = check_results_in_bucket(cluster, "driver-loss")
    assert sum(continued(rows) for rows in reports.values()) >= 2, reports


def test_both_interrupted_sweeps_computed_what_an_uninterrupted_one_computes(cluster):
    """The two sweeps above are the same trials, interrupted differently: an exact resume gives both
    the same numbers, and those of the same sweep run without interruption."""
    cluster.raylab("run", "jobs/smoke.yaml", *sweep_overrides(cluster, "reference"), "--num-cpus", "2", timeout=400)
    finals = {}
    for name in ("node-loss", "driver-loss", "reference"):
        trials = raylab.load_trials(cluster.s3.uri(f"cluster/{name}"))
        finals[name] = trials.set_index(["variant", "seed"])["final/val/loss"].sort_index()
    assert finals["node-loss"].equals(finals["reference"]) and finals["driver-loss"].equals(finals["reference"]), finals


def test_a_stopped_job_is_resumed_with_the_documented_ray_job_submit(cluster):
    """docs/cluster.md section 4, word for word: a job stopped mid-sweep (`ray job stop`, here through
    the Jobs API) is continued by `ray job submit ... python -m raylab.cli resume s3://... --address auto`."""
    if not cluster.workers or cluster.workers[-1].process.poll() is not None:
        cluster.add_worker()
    first = cluster.submit(*sweep_overrides(cluster, "stopped"))
    wait_for_checkpoints(cluster.s3, "cluster/stopped/", trials=2, index=1)
    client = submit.connect(cluster.address, cluster.token_file.read_text())
    client.stop_job(first)
    deadline = time.monotonic() + 120
    while str(client.get_job_status(first)) not in submit.TERMINAL:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(1)
    assert str(client.get_job_status(first)) == "STOPPED"

    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    resumed = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.address, "--working-dir", ".", "--",
         "python", "-m", "raylab.cli", "resume", cluster.s3.uri("cluster/stopped"), "--address", "auto", "--errored", "resume"],
        cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_file)},
        capture_output=True, text=True, timeout=400,
    )
    assert resumed.returncode == 0 and "succeeded" in resumed.stdout, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    reports = check_results_in_bucket(cluster, "stopped")
    assert sum(continued(rows) for rows in reports.values()) >= 2, reports
