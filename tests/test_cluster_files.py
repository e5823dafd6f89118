"""Every file in cluster/ is checked offline: launcher YAMLs against the schema in the installed Ray
wheel (and Ray's own config preparation), the KubeRay manifest for its GPU group and token auth, and
all of them for an opening comment with their commands, token auth, a loopback-only dashboard and no
secrets. No cloud calls: nothing here needs credentials or a network.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
ALL_FILES = sorted(p for p in CLUSTER.iterdir() if p.is_file())
YAML_FILES = [p for p in ALL_FILES if p.suffix in (".yaml", ".yml")]
LAUNCHER_FILES = [p for p in YAML_FILES if "provider" in yaml.safe_load(p.read_text())]
KUBE_FILES = [p for p in YAML_FILES if "apiVersion" in yaml.safe_load(p.read_text())]

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
    return [p.name for p in paths]


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


def test_the_expected_files_are_there():
    names = {p.name for p in ALL_FILES}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml", "kuberay.yaml"} <= names
    assert {p.name for p in LAUNCHER_FILES} == {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"}
    assert [p.name for p in KUBE_FILES] == ["kuberay.yaml"]


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_every_file_opens_with_a_comment_naming_its_commands(path: Path):
    comment = opening_comment(path)
    assert comment.count("\n") >= 2, f"{path.name}: no opening comment saying what it is for"
    relative = f"cluster/{path.name}"
    if path in LAUNCHER_FILES:
        for command in (f"ray up {relative}", f"ray dashboard {relative}", "raylab submit", "raylab status", "raylab logs", f"ray down {relative}"):
            assert command in comment, f"{path.name}: opening comment does not name `{command}`"
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
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    token_mount = config["file_mounts"].get("~/.ray/auth_token")
    assert token_mount and not Path(token_mount).expanduser().resolve().is_relative_to(CLUSTER.parent), "token must come from outside the repo"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=ids(LAUNCHER_FILES))
def test_launcher_file_installs_the_project_with_the_pinned_ray(path: Path):
    import ray

    setup = " ".join(load(path)["setup_commands"])
    assert "[cluster]" in setup, "setup must install the project with its cluster extra"
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
    assert head["rayStartParams"].get("dashboard-host", "127.0.0.1") == "127.0.0.1"
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
