"""`raylab submit|status|logs` (raylab/execution/submit.py).

Fast tests check everything that happens before a request leaves this machine (sweep validation,
token lookup, address, storage) and the one-line errors for a missing server. The `ray` test is
fault test 5 of issue 5: a real Ray head with token authentication on loopback refuses
unauthenticated job requests (401), and `raylab submit` with the token runs a smoke sweep to the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raylab.execution import submit
from raylab.cli import main
from realparts import VENV_BIN, free_port, http_status, make_cluster_token, stop_process

ROOT = Path(__file__).resolve().parent.parent
SMOKE = "jobs/smoke.yaml"


@pytest.fixture
def no_token(tmp_path, monkeypatch):
    """A client environment with no token anywhere (empty HOME, no RAY_AUTH_* variables)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


# --- before anything is sent ---------------------------------------------------------------------


def test_token_sources_in_rays_order(no_token, monkeypatch):
    home = no_token / "home"
    assert submit.read_token() is None
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    assert submit.read_token() == "from-home"
    (no_token / "path").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_token / "path"))
    assert submit.read_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.read_token() == "from-env"
    (no_token / "option").write_text("from-option")
    assert submit.read_token(str(no_token / "option")) == "from-option"


def test_unreadable_or_empty_token_file_is_an_error(no_token):
    with pytest.raises(submit.ClusterError, match="--token-file: cannot read"):
        submit.read_token(str(no_token / "missing"))
    (no_token / "empty").write_text("\n")
    with pytest.raises(submit.ClusterError, match="is empty"):
        submit.read_token(str(no_token / "empty"))


def test_entrypoint_runs_this_checkouts_raylab_against_the_cluster():
    entrypoint = submit.job_entrypoint("jobs/smoke.yaml", ["training.steps=50", "variants.0.label=RNN orth"], smoke=True)
    assert entrypoint == "python -m raylab.cli run jobs/smoke.yaml training.steps=50 'variants.0.label=RNN orth' --address auto --smoke"


def test_sweep_file_must_travel_with_the_project(tmp_path):
    assert submit.project_relative(ROOT / SMOKE) == SMOKE
    outside = tmp_path / "x.yaml"
    outside.write_text((ROOT / SMOKE).read_text())
    with pytest.raises(submit.ClusterError, match="inside the project folder"):
        submit.project_relative(outside)


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["training.stepz=3"], "stepz"),  # a typo in the sweep
        ([], "storage: 'results' is relative"),  # results would vanish with the job's working_dir
    ],
)
def test_bad_input_exits_2_with_nothing_submitted(overrides, why, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("contacted the cluster despite bad input")

    monkeypatch.setattr(submit, "connect", refuse)
    assert main(["submit", SMOKE, *overrides, "--address", "http://127.0.0.1:8265"]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and len(err.splitlines()) == 1


def test_address_must_be_the_dashboard_url(monkeypatch, capsys):
    monkeypatch.setattr(submit, "connect", lambda *a: pytest.fail("contacted the cluster"))
    assert main(["submit", SMOKE, "storage=/tmp/raylab", "--smoke", "--address", "auto"]) == 2
    assert "--address: expected the dashboard address" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["submit", SMOKE, "storage=/tmp/raylab", "--smoke"], ["status", "raylab-x"], ["logs", "raylab-x"]])
def test_no_server_at_the_address_is_one_line_exit_2(command, no_token, capsys):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main([*command, "--address", address]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"raylab: error: {address}: no Ray dashboard answers") and len(err.splitlines()) == 1


# --- fault test 5: a token-protected head on loopback ---------------------------------------------


def request(url: str, method: str = "GET", token: str | None = None) -> int:
    return http_status(url, method, token, body={"entrypoint": "echo pwned"} if method == "POST" else None)


@pytest.fixture(scope="module")
def token_head():
    """A one-CPU Ray head with RAY_AUTH_MODE=token, dashboard on 127.0.0.1 and free ports only.

    Yields (address, token file, scratch dir). The token is made and read as on the launcher
    clusters (docs/cluster.md): Ray's generator, a private directory, RAY_AUTH_TOKEN_PATH for `ray
    start`; its own HOME has no ~/.ray/auth_token, so the job's driver can only find the token
    through the variable it inherits. A short private temp dir keeps Ray's socket paths short and
    marks its processes.
    """
    scratch = Path(tempfile.mkdtemp(prefix="rlsub-"))
    home = scratch / "home"
    token_file = make_cluster_token(home / ".ray" / "cluster-token")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER"))}
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    ray_cli = str(VENV_BIN / "ray")
    dashboard_port = free_port()
    log = open(scratch / "ray-start.log", "w")
    head = subprocess.Popen(
        [
            ray_cli, "start", "--head", "--block", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
            f"--temp-dir={scratch / 'ray'}", f"--port={free_port()}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 180  # the dashboard comes up late on a loaded 2-core machine
        while request(f"{address}/api/jobs/", token=token_file.read_text().strip()) != 200:
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not come up: {(scratch / 'ray-start.log').read_text()[-2000:]}")
            time.sleep(1)
        yield address, token_file, scratch
    finally:
        stop_process(head, str(scratch))
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def wait_for_job(job_id: str, address: str, token_file: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _ = submit.job_status(job_id, address, str(token_file))
        if status in submit.TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(2)


@pytest.mark.ray
@pytest.mark.slow
def test_token_head_refuses_requests_without_a_valid_token(token_head):
    address, _, _ = token_head
    assert request(f"{address}/api/jobs/") == 401
    assert request(f"{address}/api/jobs/", method="POST") == 401
    assert request(f"{address}/api/jobs/", method="POST", token="not-the-token") == 403


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`raylab ...` in a fresh process: after an in-process `ray.init` (other test modules), Ray's
    client caches that cluster's token and would send it, which a user's shell never does."""
    return subprocess.run([sys.executable, "-m", "raylab.cli", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())


@pytest.mark.ray
@pytest.mark.slow
def test_submit_without_or_with_a_wrong_token_is_refused_in_one_line(token_head, no_token):
    address, _, scratch = token_head
    refused = run_cli("submit", SMOKE, f"storage={scratch / 'results'}", "--smoke", "--address", address)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == f"raylab: error: {address}: the cluster requires a token (HTTP 401) (pass --token-file or set RAY_AUTH_TOKEN)"
    wrong = no_token / "wrong-token"
    wrong.write_text("not-the-token")
    rejected = run_cli("status", "raylab-x", "--address", address, "--token-file", str(wrong))
    assert rejected.returncode == 2, rejected.stderr
    assert rejected.stderr.strip() == f"raylab: error: {address}: token rejected (HTTP 403) (check --token-file / RAY_AUTH_TOKEN)"


@pytest.mark.ray
@pytest.mark.slow
def test_submit_with_the_token_runs_the_sweep_to_the_end(token_head, no_token, capsys):
    address, token_file, scratch = token_head
    storage = scratch / "results"
    assert main(["submit", SMOKE, f"storage={storage}", "--smoke", "--address", address, "--token-file", str(token_file)]) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.startswith("raylab-smoke-")

    status = wait_for_job(job_id, address, token_file, timeout_s=150)
    logs = submit.job_logs(job_id, address, str(token_file))
    assert status == "SUCCEEDED", logs[-3000:]
    assert "trials of sweep 'smoke-smoke'" in logs  # --smoke runs land in <name>-smoke
    assert list(storage.glob("smoke-smoke/trials.parquet")), "the job wrote no results into the sweep's storage"

    assert main(["status", job_id, "--address", address, "--token-file", str(token_file)]) == 0
    assert capsys.readouterr().out.startswith(f"{job_id}: SUCCEEDED")
    assert main(["logs", job_id, "--follow", "--address", address, "--token-file", str(token_file)]) == 0
    assert "trials of sweep 'smoke-smoke'" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("variables", [["RAY_ADDRESS"], ["RAY_API_SERVER_ADDRESS"], ["RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"]])
def test_the_address_given_wins_over_the_environment(variables, token_head, no_token, monkeypatch, capsys):
    """Ray's client alone would take $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS over the address it is given."""
    address, token_file, _ = token_head
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    token = ["--token-file", str(token_file)]

    for name in variables:
        monkeypatch.setenv(name, dead)
    assert main(["status", "raylab-nothing", "--address", address, *token]) == 2
    err = capsys.readouterr().err.strip()  # the live head answered: its 404, not a dead port
    assert err == f"raylab: error: {address}: job raylab-nothing: Request failed with status code 404: Job raylab-nothing does not exist."
    assert all(os.environ[name] == dead for name in variables), "the user's environment must be left as it was"

    for name in variables:
        monkeypatch.setenv(name, address)
    assert main(["logs", "raylab-nothing", "--address", dead, *token]) == 2
    err = capsys.readouterr().err.strip()  # the dead address given is the one tried and named
    assert err.startswith(f"raylab: error: {dead}: no Ray dashboard answers"), err
