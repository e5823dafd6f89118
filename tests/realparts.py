"""Real parts for tests: a local S3 server (moto's server mode) and Ray nodes started with `ray start`.

Nothing here is a mock of raylab or Ray. The S3 server speaks the S3 API over HTTP on 127.0.0.1, the
way Ray's own tests reach S3; the Ray nodes are separate `ray start --block` processes with their
own raylets, so a "lost node" is a real raylet killed with its workers. Every process started here is
stopped by pid (its process tree), never with `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (psutil is not a dependency)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def processes_mentioning(marker: str) -> list[int]:
    """Processes whose command line names `marker` (Ray daemons that lost their parent)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in pids if pid != os.getpid()]


def kill_all(pids: list[int]) -> None:
    for pid in set(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_process(process: subprocess.Popen, marker: str | None = None) -> None:
    """SIGTERM (`ray start --block` and moto stop their own children on it), then SIGKILL whatever
    is left below it or names `marker`."""
    started = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    kill_all(started + (processes_mentioning(marker) if marker else []))


def http_status(url: str, method: str = "GET", token: str | None = None, body: dict | None = None) -> int:
    """The HTTP status of one request; 0 when nothing listens (yet)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    # An opener of its own without proxies: urlopen's global one keeps the proxy settings of its first
    # use in this process (another test's refusing proxy would make a server look down forever).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=data, method=method, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def wait_until(ready, what: str, timeout_s: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} did not come up in {timeout_s:.0f} s\n{tail}")
        time.sleep(0.5)


def make_cluster_token(directory: Path) -> Path:
    """What docs/cluster.md has users run: Ray's own generator (secrets.token_hex(32)), mode 600 in a 700 directory."""
    directory.mkdir(mode=0o700, parents=True)
    token_file = directory / "auth_token"
    token_file.touch(mode=0o600)
    token_file.write_text(secrets.token_hex(32))
    return token_file


# --- a local S3 server ------------------------------------------------------------------------------


class S3Server:
    """moto's S3 server on 127.0.0.1 and a free port, with one bucket.

    `env` holds what a client needs, through the standard AWS settings that pyarrow, boto3 and the
    AWS CLI all read (AWS_ENDPOINT_URL since pyarrow 15 / boto3 1.28): no raylab option is involved,
    which is how a user points raylab at MinIO or Ceph too (docs/cluster.md).
    """

    def __init__(self, scratch: Path, bucket: str = "raylab-test"):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any keys
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance-metadata service
        }
        self.log_path = scratch / "moto.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_until(lambda: http_status(f"{self.endpoint}/moto-api/") == 200, "moto S3 server", 60, self.process, self.log_path)
        self.client().create_bucket(Bucket=bucket)

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix`, listed through the S3 API (not through raylab)."""
        keys = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


# --- Ray nodes --------------------------------------------------------------------------------------


class RayNode:
    """One `ray start --block` node in its own process session.

    `kill()` is a lost machine: the node's whole process tree (raylet, agents, the trial workers the
    raylet started) is killed with SIGKILL at once, so nothing on it gets to clean up.
    """

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, marker: str):
        self.log_path = log_path
        self.marker = marker
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def processes(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def kill(self) -> None:
        kill_all(self.processes())
        self.process.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)
        self.log.close()
