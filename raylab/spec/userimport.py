"""Cells and tasks that live outside raylab, named by import path: `cell: {name: "mypkg.cells:GatedIndRNN"}`.

The module is imported from the directory raylab runs in and from PYTHONPATH, in the driver (for
validation) and in every Ray worker: the embedded Ray's workers inherit the driver's PYTHONPATH, to
which `worker_pythonpath()` adds the working directory; `raylab submit` ships the module with the job.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import sysconfig
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from raylab.spec.typecheck import ConfigError

RAYLAB_ROOT = Path(__file__).resolve().parents[1]  # raylab's own code: `code_version` covers it
INSTALLED = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}


def is_import_path(name: Any) -> bool:
    """`module.sub:Class`: a colon with a module path before it and a name after it."""
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    module, attribute = name.split(":")
    return bool(module) and bool(attribute) and all(part.isidentifier() for part in (*module.split("."), attribute))


def import_object(path: str, where: str) -> Any:
    """Import `module:Class`; one-line ConfigErrors for an unknown module or class."""
    module_name, attribute = path.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the `raylab` script, unlike `python -m`, leaves the cwd off sys.path
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise ConfigError(f"{where}: no module {error.name!r} (looked in the working directory {os.getcwd()} and PYTHONPATH)") from None
        raise ConfigError(f"{where}: importing {module_name!r} failed: {error}") from None
    except Exception as error:
        raise ConfigError(f"{where}: importing {module_name!r} failed: {type(error).__name__}: {error}") from None
    if not hasattr(module, attribute):
        public = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
        raise ConfigError(f"{where}: module {module_name!r} has no {attribute!r} (classes there: {', '.join(public) or 'none'})")
    return getattr(module, attribute)


def module_root(path: str) -> Path | None:
    """The file or top-level package folder that holds `module:Class`, for shipping it with a job."""
    top = path.split(":")[0].split(".")[0]
    module = sys.modules.get(top) or importlib.import_module(top)
    location = getattr(module, "__file__", None)
    if location is None:
        return None
    location = Path(location)
    return location.parent if location.name == "__init__.py" else location


def worker_pythonpath() -> str:
    """PYTHONPATH for the embedded Ray's workers: the working directory first, then the driver's own."""
    parts = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(parts))


def uses_user_code(trials: list[dict]) -> bool:
    """Whether any trial's cell or task is named by import path (user code, not raylab's)."""
    return any(is_import_path(trial[kind]["name"]) for trial in trials for kind in ("cell", "task"))


def user_modules(trials: list[dict], inside: Path) -> list[str]:
    """Files or package folders of the sweep's import-path cells and tasks that lie outside `inside`
    (the folder a job uploads anyway): `raylab submit` ships them as the job's py_modules."""
    names = {trial[kind]["name"] for trial in trials for kind in ("cell", "task") if is_import_path(trial[kind]["name"])}
    roots = {module_root(name) for name in names}
    return sorted(str(root) for root in roots if root is not None and not root.resolve().is_relative_to(inside.resolve()))


def user_code_version(names: Iterable[str]) -> str | None:
    """A short hash of the user code behind these cell and task names, or None when none is user code.

    For each import path, the source of the file or top-level package that holds it (every `.py` file
    of the package, so a helper module the cell imports counts too), unless it lies inside raylab
    (the git commit of `code_version` covers that). A package installed into the environment counts
    by its distribution and version instead of its files. Recorded with every trial and compared like
    `code_version`: not part of a trial's identity (docs/identity.md).
    """
    roots = {(root.resolve(), path) for path in names if is_import_path(path) and (root := source_root(path)) is not None}
    parts = sorted(fingerprint(root, path) for root, path in roots if not root.is_relative_to(RAYLAB_ROOT))
    if not parts:
        return None
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def source_root(path: str) -> Path | None:
    """`module_root`, or the named module's own file when its top level is a namespace package."""
    root = module_root(path)
    if root is not None:
        return root
    location = getattr(sys.modules.get(path.split(":")[0]), "__file__", None)
    return Path(location) if location else None


def fingerprint(root: Path, path: str) -> bytes:
    """The bytes that stand for one module root: its sources (relative name and content of each file),
    or `name==version` for an installed distribution."""
    if any(root.is_relative_to(site) for site in INSTALLED):
        top = path.split(":")[0].split(".")[0]
        dists = metadata.packages_distributions().get(top, [])
        versions = sorted(f"{dist}=={metadata.version(dist)}" for dist in dists) or [f"{top} (no distribution)"]
        return ";".join(versions).encode()
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*.py") if "__pycache__" not in f.parts)
    digest = hashlib.sha256()
    for file in files:
        name = file.name if file == root else file.relative_to(root).as_posix()
        try:
            content = file.read_bytes()
        except OSError as error:  # a broken link or an unreadable file the import did not need: hashed as such
            content = f"<unreadable: {error.strerror}>".encode()
        digest.update(name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest().encode()
