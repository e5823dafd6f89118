"""Where a result came from: git commit and package versions, stored with every trial row."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

RAYLAB_VERSION = "0.1.0"  # pyproject.toml's version; raylab.__version__
# Set by `raylab submit` for the job's driver, whose uploaded working_dir has no .git.
GIT_COMMIT_VARIABLE = "RAYLAB_GIT_COMMIT"
PACKAGES = ("raylab", "torch", "ray", "numpy", "torchvision", "pyarrow", "pandas")


def git_commit(directory: str | Path = ".") -> str | None:
    """The checked-out commit, with `+dirty` when the work tree has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get(GIT_COMMIT_VARIABLE) or None
    return f"{commit}+dirty" if dirty else commit


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["raylab"] is None:  # a job's uploaded working_dir, not an installed package
        versions["raylab"] = RAYLAB_VERSION
    return versions


def code_version(provenance: dict, user_code: str | None = None) -> str:
    """The code that computed a trial, in one short string: `<commit[:12]>[+dirty] torch <version>`,
    and ` user <hash>` when its cell or task is user code (the trial's `user_code`, a hash of the
    user modules' source: raylab/spec/userimport.py).

    Not part of a trial's identity (`config_hash`): a finished trial is not re-run because the code
    moved on, but `raylab run` and `raylab table` say when results of several code versions meet
    (docs/identity.md).
    """
    commit = provenance.get("git_commit") or "unknown"
    commit = commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")
    version = f"{commit} torch {provenance.get('versions', {}).get('torch') or 'unknown'}"
    return f"{version} user {user_code}" if user_code else version


def provenance() -> dict:
    """Recorded by the driver when a sweep is submitted (workers may lack the git tree)."""
    source = Path(__file__).resolve().parents[2]  # raylab/results/provenance.py -> the project
    return {"git_commit": git_commit(source), "versions": package_versions()}
