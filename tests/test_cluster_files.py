"""Every file in cluster/ is checked offline: launcher YAMLs against the schema in the installed Ray
wheel (and Ray's own config preparation), the KubeRay manifest for its GPU group and token auth, and
all of them for an opening comment with their commands, token auth, a loopback-only dashboard and no
secrets. What would only fail on a real cloud is checked from the launcher's known behaviour (Ray
2.60): an identity on every GPU worker type (the launcher gives one to the head only), GPU workers
that wait for the NVIDIA driver before Docker starts, and file mounts that carry only what the nodes
need, as directories. No cloud calls: nothing here needs credentials or a network.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
ALL_FILES = sorted(p for p in CLUSTER.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
YAML_FILES = [p for p in ALL_FILES if p.suffix in (".yaml", ".yml")]
LAUNCHER_FILES = [p for p in YAML_FILES if "provider" in yaml.safe_load(p.read_text())]
CLOUD_FILES = [p for p in LAUNCHER_FILES if yaml.safe_load(p.read_text())["provider"]["type"] in ("aws", "gcp")]
KUBE_FILES = [p for p in YAML_FILES if "apiVersion" in yaml.safe_load(p.read_text())]
NODE_REQUIREMENTS = CLUSTER / "node" / "requirements.txt"
TOKEN_DIR = "~/.ray/cluster-token"  # on your machine and on the nodes (docs/cluster.md)
TOKEN_PATH_ON_NODES = "$HOME/.ray/cluster-token/auth_token"  # as `ray start` reads it there

SECRET_PATTERNS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS secret key": r"aws_secret_access_key|AWS_SECRET_ACCESS_KEY",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "GCP service-account key": r'"private_key"|"type":\s*"service_account"',
    "inline Ray token": r"RAY_AUTH_TOKEN\s*[=:]\s*['\"]?[A-Za-z0-9+/_-]{16,}",
    "bearer token": r"Bearer\s+[A-Za-z0-9._-]{16,}",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{30,}",
}


def ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(CLUSTER).as_posix() for p in paths]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def opening_comment(path: Path) -> str:
    lines = path.read_text().splitlines()
    block = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(line)
    return "\n".join(block)


def start_commands(config: dict) -> list[str]:
    return [*config.get("head_start_ray_commands", []), *config.get("worker_start_ray_commands", [])]


def gpu_worker_types(config: dict) -> dict[str, dict]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"] and node_type["resources"].get("GPU", 0) >= 1
    }


def test_the_expected_files_are_there():
    names = set(ids(ALL_FILES))
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml", "kuberay.yaml", "node/requirements.txt"} <= names
    assert {p.name for p in LAUNCHER_FILES} == {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"}
    assert [p.name for p in KUBE_FILES] == ["kuberay.yaml"]


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_every_file_opens_with_a_comment_naming_its_commands(path: Path):
    comment = opening_comment(path)
    assert comment.count("\n") >= 2, f"{path.name}: no opening comment saying what it is for"
    relative = path.relative_to(REPO).as_posix()
    if path in LAUNCHER_FILES:
        for command in (f"ray up {relative}", f"ray up --no-restart {relative}", f"ray dashboard {relative}", "raylab submit", "raylab status", "raylab logs", f"ray down {relative}"):
            assert command in comment, f"{path.name}: opening comment does not name `{command}`"
        assert "repository root" in comment, f"{path.name}: opening comment must say to run `ray up` from the repository root"
    elif path in KUBE_FILES:
        for command in (f"kubectl apply -f {relative}", "kubectl port-forward", "raylab submit", f"kubectl delete -f {relative}"):
            assert command in comment, f"{path.name}: opening comment does not name `{command}`"
    else:
        assert relative in comment, f"{path.name}: opening comment does not show the command that uses it"


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_no_secrets(path: Path):
    text = path.read_text()
    for what, pattern in SECRET_PATTERNS.items():
        assert not re.search(pattern, text), f"{path.name}: looks like it contains a {what}"


@pytest.mark.parametrize("path", YAML_FILES, ids=ids(YAML_FILES))
def test_dashboard_is_never_opened_to_the_network(path: Path):
    documents = list(yaml.safe_load_all(path.read_text()))
    settings = json.dumps(documents)  # the values only: comments may explain what not to do
    assert "0.0.0.0" not in settings, f"{path.name}: binds something to 0.0.0.0; forward the dashboard port instead"
    for document in documents:
        assert document.get("kind") not in ("Service", "Ingress"), f"{path.name}: exposes the head"
        head = document.get("spec", {}).get("headGroupSpec", {})
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{path.name}: head service must stay ClusterIP"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_matches_the_schema_in_the_ray_wheel(path: Path):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load(path)
    jsonschema.validate(config, schema)
    if "available_node_types" in config:  # the local provider builds its own single node type
        assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_passes_rays_own_preparation(path: Path):
    """`ray up`'s offline steps: defaults filled in per provider, then Ray's validation (private API of the pinned Ray)."""
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(load(path)))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_keeps_trials_off_the_head_and_offers_gpus(path: Path):
    config = load(path)
    if config["provider"]["type"] == "local":
        assert any("--num-cpus=0" in c for c in config["head_start_ray_commands"]), "on-prem head must advertise no CPUs"
        return
    node_types = config["available_node_types"]
    assert node_types[config["head_node_type"]]["resources"].get("CPU") == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in node_types.values()), "no GPU worker type"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_starts_ray_with_token_auth_on_loopback(path: Path):
    config = load(path)
    starts = [c for c in start_commands(config) if "ray start" in c]
    assert len(starts) == 2
    assert all("RAY_AUTH_MODE=token" in c for c in starts), "every `ray start` needs RAY_AUTH_MODE=token"
    assert all(f"RAY_AUTH_TOKEN_PATH={TOKEN_PATH_ON_NODES}" in c for c in starts), f"every `ray start` must read the token mounted at {TOKEN_DIR}"
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    token_mount = config["file_mounts"].get(TOKEN_DIR)
    assert token_mount, f"{path.name}: file_mounts must carry the token directory to {TOKEN_DIR}"
    assert not Path(token_mount).expanduser().resolve().is_relative_to(REPO), "token must come from outside the repo"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_mounts_only_what_nodes_need_as_directories(path: Path):
    """`ray up` hashes every file under each mount source (rsync excludes do not apply) and updates the
    nodes when that hash changes; Docker bind-mounts each mount, and a file mount keeps the old inode
    after `ray up` replaces the file (a rotated token would never arrive)."""
    for remote, source in load(path)["file_mounts"].items():
        where = f"{path.name}: file_mounts {remote!r}: {source!r}"
        local = Path(source).expanduser()
        if local.is_absolute():  # from your home directory: the token
            assert not local.resolve().is_relative_to(REPO), f"{where}: point into the repository with a relative path"
            assert local.name != "auth_token", f"{where}: mount the token's directory, not the file"
            continue
        inside = (REPO / local).resolve()
        assert inside.is_relative_to(CLUSTER), f"{where}: nodes get only folders of cluster/, not the checkout (.git, .venv, results)"
        assert inside.is_dir(), f"{where}: mount a directory (run `ray up` from the repository root)"


def test_node_requirements_are_pyprojects_dependencies():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["cluster"]
    listed = [line.strip() for line in NODE_REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert listed == expected, "cluster/node/requirements.txt must list pyproject.toml's dependencies, then its cluster extra:\n" + "\n".join(expected)


def worker_identity(provider: dict, node_config: dict) -> str | None:
    """The instance profile (AWS) or service account (GCP) a node type runs as, by name; None if none."""
    if provider["type"] == "aws":
        profile = node_config.get("IamInstanceProfile") or {}
        return profile.get("Name") or (profile["Arn"].rsplit("/", 1)[-1] if profile.get("Arn") else None)
    accounts = node_config.get("serviceAccounts") or []
    if not accounts:
        return None
    account, _, domain = accounts[0]["email"].partition("@")
    assert domain == f"{provider['project_id']}.iam.gserviceaccount.com", f"service account {accounts[0]['email']} is not in provider.project_id"
    assert accounts[0].get("scopes"), f"service account {account} without scopes gets no API access"
    return account


@pytest.mark.parametrize("path", CLOUD_FILES, ids=ids(CLOUD_FILES))
def test_every_gpu_worker_type_has_a_cloud_identity(path: Path):
    """Trials write checkpoints to the bucket from the workers; the launcher gives an identity to the head only."""
    config = load(path)
    workers = gpu_worker_types(config)
    assert workers, f"{path.name}: no GPU worker type"
    docs = (REPO / "docs" / "cluster.md").read_text()
    for name, node_type in workers.items():
        identity = worker_identity(config["provider"], node_type["node_config"])
        assert identity, f"{path.name}: {name}: no IamInstanceProfile / serviceAccounts, so its trials cannot write to the bucket"
        assert identity in docs, f"docs/cluster.md does not say how to create {identity!r} ({path.name}: {name})"
    if config["provider"]["type"] == "aws":
        assert "iam:PassRole" in docs, "docs/cluster.md must say that the head's role needs iam:PassRole on the workers' role"


@pytest.mark.parametrize("path", CLOUD_FILES, ids=ids(CLOUD_FILES))
def test_gpu_workers_wait_for_the_driver_before_docker_starts(path: Path, tmp_path: Path):
    """The launcher adds --runtime=nvidia only if nvidia-smi works when the container starts; a GCP
    driver is installed at boot. Only GPU workers wait: the CPU head would wait for nothing."""
    config = load(path)
    assert not any("nvidia-smi" in c for c in config.get("initialization_commands", [])), f"{path.name}: the CPU head would wait for a GPU driver it never gets"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    nvidia_smi = fake_bin / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\nexit 0\n")  # a driver that is up
    nvidia_smi.chmod(nvidia_smi.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    for name, node_type in gpu_worker_types(config).items():
        waits = [c for c in node_type.get("initialization_commands", []) if "nvidia-smi" in c]
        assert waits, f"{path.name}: {name}: initialization_commands do not wait for nvidia-smi"
        assert all(c.startswith("timeout ") for c in waits), f"{path.name}: {name}: the wait must give up (timeout) rather than hang the node"
        for command in waits:
            assert subprocess.run(["bash", "-c", command], env=env, timeout=30).returncode == 0


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_installs_the_dependencies_with_the_pinned_ray(path: Path):
    import ray

    config = load(path)
    setup = " ".join(config["setup_commands"])
    assert config["file_mounts"].get("~/raylab-node") == "cluster/node", "the dependency list must reach the nodes"
    assert "-r ~/raylab-node/requirements.txt" in setup, "setup must install cluster/node/requirements.txt (the cluster extra included)"
    assert f"ray[default,tune]=={ray.__version__}" in setup, f"setup must pin Ray to the installed {ray.__version__}"


@pytest.mark.parametrize("path", KUBE_FILES, ids=ids(KUBE_FILES))
def test_kuberay_manifest(path: Path):
    import ray

    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] in ("RayCluster", "RayJob")
    spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec.get("authOptions", {}).get("mode") == "token"
    head = spec["headGroupSpec"]
    assert str(head["rayStartParams"].get("num-cpus")) == "0"
    assert head["rayStartParams"].get("dashboard-host") == "127.0.0.1", "set dashboard-host: KubeRay's default is 0.0.0.0"
    gpu_limits = [
        container["resources"]["limits"].get("nvidia.com/gpu", 0)
        for group in spec["workerGroupSpecs"]
        for container in group["template"]["spec"]["containers"]
    ]
    assert any(int(n) >= 1 for n in gpu_limits), "no worker group with an nvidia.com/gpu limit"


def test_dockerfile_pins_the_installed_ray():
    import ray

    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-", text, re.M)
    assert f"ray[default,tune]=={ray.__version__}" in text and "[cluster]" in text
