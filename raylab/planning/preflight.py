"""Pre-flight checks of where a sweep will write and what it will read, before any trial starts.

Each problem is one line naming `storage` or the task; nothing is written (docs/errors.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import torch

from raylab.planning import storage
from raylab.spec.registry import build
from raylab.spec.typecheck import ConfigError
from raylab.tasks import TASKS
from raylab.tasks.data import DataError

REACH_TIMEOUT_S = 10  # a bucket that has not answered by then is unreachable
BUCKET_SCHEMES = ("s3", "gs", "gcs")  # URIs whose first path component is a bucket


def scheme_of(location: str) -> str:
    return location.split("://", 1)[0].lower()


def check_storage(location: str) -> None:
    """The storage location can be written, checked without leaving anything behind.

    A local path: its missing folders and a file in it can be created (then removed again). A URI: a
    known scheme whose bucket answers. Each problem is one line naming `storage`.
    """
    if storage.is_uri(location):
        try:
            fs, path = answering_filesystem(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:
            scheme = scheme_of(location)
            raise ConfigError(f"storage: {location}: unknown or unsupported URI scheme {scheme!r} ({first_line(error)})") from None
        except OSError as error:
            raise ConfigError(f"storage: {location}: cannot reach it ({first_line(error)})") from None
        bucket = path.split("/", 1)[0]
        try:
            info = fs.get_file_info(path)
            # A key in a missing bucket is just "not found"; Tune would fail on its first write.
            bucket_missing = bucket and scheme_of(location) in BUCKET_SCHEMES and fs.get_file_info(bucket).type == pafs.FileType.NotFound
        except OSError as error:  # no credentials, no network, no permission
            raise ConfigError(f"storage: {location}: cannot reach it ({first_line(error)})") from None
        if bucket_missing:
            raise ConfigError(f"storage: {location}: bucket {bucket!r} does not exist (raylab creates folders in a bucket, not the bucket)")
        if info.type == pafs.FileType.File:
            raise ConfigError(f"storage: {location}: is a file, not a folder")
        return
    path = Path(location).expanduser()
    missing = storage.missing_folders(path)
    existing = missing[-1].parent if missing else path
    if not existing.is_dir():
        raise ConfigError(f"storage: {location}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"storage: {location}: {existing} is not writable")
    probe_local_folder(location, path, missing)


def probe_local_folder(location: str, path: Path, missing: list[Path]) -> None:
    """Create the missing folders and a file in the last one, then remove all of it: permission bits
    do not tell everything (root may "write" to /proc, where no folder can be made; a read-only mount;
    a full disk), and Tune would otherwise fail with a traceback after Ray started."""
    created: list[Path] = []
    try:
        for folder in reversed(missing):  # the outermost first
            folder.mkdir()
            created.append(folder)
        with tempfile.TemporaryFile(dir=path, prefix=".raylab-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"storage: {location}: cannot create a folder or file there ({first_line(error)})") from None
    finally:
        for folder in reversed(created):  # nothing stays behind: the run creates its folders itself
            with contextlib.suppress(OSError):
                folder.rmdir()


def answering_filesystem(location: str) -> tuple[Any, str]:
    """storage.filesystem, but a Google Cloud Storage client that gives up after REACH_TIMEOUT_S
    (its default retries for 15 minutes when there are no credentials or no network)."""
    scheme, _, path = location.partition("://")
    if scheme in ("gs", "gcs") and "?" not in path:
        return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=REACH_TIMEOUT_S)), path
    return storage.filesystem(location)


def first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_data(trials: list[dict], data_dir: str | None) -> None:
    """Load every distinct task's data once on the driver (a download happens here, once), so that a
    missing or corrupt file is one line before any trial starts, not a traceback from every trial."""
    seen = set()
    for trial in trials:
        key = json.dumps(trial["task"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        task = build(TASKS, trial["task"], "task")
        try:
            task.setup(torch.device("cpu"), data_dir)
        except DataError as error:
            raise ConfigError(f"task {trial['task']['name']!r}: {error}") from None
