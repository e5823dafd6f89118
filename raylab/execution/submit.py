"""Run a sweep on a remote Ray cluster as a Ray Job, and follow it: `raylab submit|status|logs`.

The job is the same `raylab run FILE --address auto` that runs on a laptop, started on the head node:
- code: the project folder is uploaded as the job's `working_dir` (without .venv, results, .git, ...),
  and the entrypoint is `python -m raylab.cli run ...`, so the driver and every trial import this
  checkout's `raylab`, whatever version the cluster has installed;
- dependencies (torch, Ray, pyarrow, ...): installed on every node by the cluster file's setup
  commands (`pip install -r cluster/node/requirements.txt`) or baked into the image
  (cluster/Dockerfile), never per job;
- results: the sweep's `storage` must outlive the job (an s3:// or gs:// URI, or an absolute path on
  a shared filesystem); a relative path would land in the job's temporary working directory.

Authentication: Ray clusters with `RAY_AUTH_MODE=token` answer 401 without a token. The token is
sent as `Authorization: Bearer <token>`, read from --token-file, $RAY_AUTH_TOKEN,
$RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (Ray's own order). Ray 2.60's JobSubmissionClient adds
this header by itself only when the client process also has RAY_AUTH_MODE=token, so raylab sends it
explicitly and the user need not export anything.

Address: the one given (--address, whose default is $RAY_API_SERVER_ADDRESS) is the one used and
the one errors name. Ray's client alone would prefer $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS,
over it, so a shell that still exports RAY_ADDRESS=auto would send the job elsewhere.

Exit codes: 2 for anything wrong on this side (bad sweep file, bad address, no server, missing or
rejected token, unknown job id), 1 when the cluster refused or failed the job.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # raylab/execution/submit.py -> the project
# Uploaded with every job: the code and the sweep files, nothing that is big or machine-specific.
WORKING_DIR_EXCLUDES = [".venv", ".git", "results", "build", "**/__pycache__", "*.egg-info", ".pytest_cache", "*.parquet", "*.png"]
REMOTE_STORAGE_PREFIXES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "file://")
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Ray's JobSubmissionClient replaces the address it is given with the first of these that is set
# (ray/dashboard/utils.py, get_address_for_submission_client), so `--address` would be ignored.
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class ClusterError(RuntimeError):
    """A Jobs-API action failed; the message is one line that names the address."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_token(token_file: str | None = None) -> str | None:
    """The cluster token: --token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token_file:
        return _read_token_file(Path(token_file).expanduser(), "--token-file")
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token_file(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser(), "RAY_AUTH_TOKEN_PATH")
    default = Path.home() / ".ray" / "auth_token"
    return _read_token_file(default, str(default)) if default.is_file() else None


def _read_token_file(path: Path, source: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise ClusterError(f"{source}: cannot read token file {path}: {error.strerror}") from None
    if not token:
        raise ClusterError(f"{source}: token file {path} is empty")
    return token


def check_address(address: str) -> str:
    """The dashboard's HTTP address; `auto` and `ray://` addresses belong to `raylab run`."""
    if not address.startswith(("http://", "https://")):
        raise ClusterError(f"--address: expected the dashboard address, e.g. http://127.0.0.1:8265, got {address!r}")
    return address.rstrip("/")


@contextmanager
def address_variables_hidden() -> Iterator[None]:
    """Hide $RAY_API_SERVER_ADDRESS and $RAY_ADDRESS from Ray while a client is built, then restore them."""
    saved = {name: os.environ.pop(name) for name in ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str, token: str | None) -> Any:
    """A JobSubmissionClient for exactly `address` that has checked the server answers and accepts the token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with address_variables_hidden():  # the address given wins over the environment
            return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as error:
        why = "token rejected (HTTP 403)" if str(error).startswith("Authentication failed") else "the cluster requires a token (HTTP 401)"
        hint = "check --token-file / RAY_AUTH_TOKEN" if token else "pass --token-file or set RAY_AUTH_TOKEN"
        raise ClusterError(f"{address}: {why} ({hint})") from None
    except ConnectionError:
        raise ClusterError(f"{address}: no Ray dashboard answers (is the cluster up and the port forwarded?)") from None
    except Exception as error:  # e.g. a proxy page instead of the Jobs API
        raise ClusterError(f"{address}: not a Ray Jobs API: {first_line(error)}") from None


def job_entrypoint(sweep_file: str, overrides: list[str], smoke: bool) -> str:
    """`python -m raylab.cli run <file> <overrides> --address auto`, run on the head in the working_dir."""
    # Overrides straight after the file: `run`'s parser takes no positional after an option.
    args = ["python", "-m", "raylab.cli", "run", sweep_file, *overrides, "--address", "auto"]
    return shlex.join(args + (["--smoke"] if smoke else []))


def project_relative(path: str | Path) -> str:
    """The sweep file's path inside the uploaded project folder (it travels with the job)."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        raise ClusterError(f"{path}: the sweep file must be inside the project folder {PROJECT_ROOT}, which is what the job uploads") from None


def check_storage(sweep: Any) -> None:
    """Refuse storage that would vanish with the job's temporary working directory."""
    storage = sweep.spec.storage
    if storage.startswith(REMOTE_STORAGE_PREFIXES) or Path(storage).expanduser().is_absolute():
        return
    raise ClusterError(
        f"{sweep.path}: storage: {storage!r} is relative, so on the cluster the results would land in the job's temporary "
        "working directory; use a bucket or a shared absolute path, e.g. storage=s3://BUCKET/raylab or storage=/mnt/shared/raylab"
    )


def shipped_modules(sweep: Any) -> dict:
    """`py_modules` for cells and tasks named by import path outside the project: they travel with the job."""
    from raylab.spec.userimport import user_modules  # only when submitting: `raylab status` and `logs` stay light

    modules = user_modules(sweep.trials, PROJECT_ROOT)
    return {"py_modules": modules} if modules else {}


def submission_id(sweep_name: str) -> str:
    """Readable and unique: `raylab-smoke-20261125-142501-3fa2`."""
    return f"raylab-{sweep_name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def submit_sweep(sweep_file: str, overrides: list[str], smoke: bool, address: str, token_file: str | None = None) -> str:
    """Validate the sweep here, then submit it as a Ray Job; return the job's submission id."""
    # torch (the sweep is validated here): only when submitting, so `raylab status` and `logs` stay light.
    from raylab.planning.sweep import load_sweep
    from raylab.results.provenance import GIT_COMMIT_VARIABLE, git_commit
    from raylab.results.report import check_report_section

    sweep = load_sweep(sweep_file, overrides, smoke=smoke)  # ConfigError: nothing is submitted
    check_report_section(sweep)
    check_storage(sweep)
    entrypoint = job_entrypoint(project_relative(sweep_file), overrides, smoke)
    address = check_address(address)
    client = connect(address, read_token(token_file))
    try:
        return client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id(sweep.spec.name),
            runtime_env={
                "working_dir": str(PROJECT_ROOT),
                "excludes": WORKING_DIR_EXCLUDES,
                # The uploaded working_dir has no .git: the driver on the cluster records this commit.
                "env_vars": {GIT_COMMIT_VARIABLE: git_commit(PROJECT_ROOT) or ""},
                **shipped_modules(sweep),  # cells and tasks named by import path outside the project
            },
            metadata={"raylab_sweep": sweep.spec.name, "raylab_file": project_relative(sweep_file)},
        )
    except Exception as error:
        raise ClusterError(f"{address}: the cluster refused the job: {first_line(error)}", EXIT_JOB_FAILED) from None


def job_status(job_id: str, address: str, token_file: str | None = None) -> tuple[str, str]:
    """(status, message) of a job, e.g. ("RUNNING", "Job is currently running.")."""
    address = check_address(address)
    client = connect(address, read_token(token_file))
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as error:
        raise ClusterError(f"{address}: job {job_id}: {first_line(error)}") from None
    return str(info.status), info.message or ""


def job_logs(job_id: str, address: str, token_file: str | None = None) -> str:
    """Everything the job's driver has printed so far."""
    address = check_address(address)
    client = connect(address, read_token(token_file))
    try:
        return client.get_job_logs(job_id)
    except RuntimeError as error:
        raise ClusterError(f"{address}: job {job_id}: {first_line(error)}") from None


def follow_logs(job_id: str, address: str, token_file: str | None = None) -> str:
    """Print the job's logs as they come until it ends; return its final status."""
    address = check_address(address)
    client = connect(address, read_token(token_file))
    try:
        client.get_job_info(job_id)  # an unknown id fails here, not as a closed websocket
    except RuntimeError as error:
        raise ClusterError(f"{address}: job {job_id}: {first_line(error)}") from None

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    try:
        asyncio.run(tail())
    except RuntimeError as error:
        raise ClusterError(f"{address}: job {job_id}: log stream broke: {first_line(error)}") from None
    return str(client.get_job_status(job_id))


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def exit_code_for(status: str) -> int:
    """0 when the job succeeded or is still going, 1 when it failed or was stopped."""
    return EXIT_JOB_FAILED if status in ("FAILED", "STOPPED") else 0


def report(error: ClusterError) -> int:
    print(f"raylab: error: {error}", file=sys.stderr)
    return error.exit_code
