"""Where experiments live: a local folder (the default), or a URI that every node of a cluster can
reach (`s3://bucket/raylab`, `gs://bucket/raylab`, `file:///mnt/shared/raylab`), through pyarrow.fs,
the filesystem layer Ray Tune itself uses for `storage_path`.

Analysis code works on local folders: for a URI, `local_copy` mirrors the experiment files it needs
(everything but checkpoints) into a temporary folder, and `upload` puts results back.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from raylab.spec.config import check_storage_location
from raylab.training.reports import REPORTS_FILE

SKIPPED_WHEN_MIRRORING = ("checkpoint_",)  # model states: large, and not needed for tables (but their reports.json is)


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def join(location: str | Path, *parts: str) -> str:
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location, *parts))


def absolute(location: str | Path) -> str:
    """URIs as they are; local paths made absolute (Ray needs absolute storage paths)."""
    return str(location) if is_uri(location) else str(Path(location).expanduser().resolve())


def missing_folders(folder: str | Path) -> list[Path]:
    """A local folder and its ancestors that do not exist yet, deepest first (empty if it exists)."""
    missing = []
    path = Path(folder).expanduser()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it."""
    if is_uri(location):
        check_storage_location(str(location), "experiment")
        return pafs.FileSystem.from_uri(str(location))
    return pafs.LocalFileSystem(), absolute(location)


def exists(location: str | Path) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(location: str | Path) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def write_text(location: str | Path, text: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def read_text(location: str | Path) -> str:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


@contextlib.contextmanager
def local_copy(location: str | Path, wanted: set[str] | None = None) -> Iterator[Path]:
    """A local folder with the experiment's files: the folder itself, or a temporary mirror of a URI
    (of the files whose relative paths are in `wanted`, when given)."""
    if not is_uri(location):
        yield Path(location)
        return
    fs, root = filesystem(location)
    with tempfile.TemporaryDirectory(prefix="raylab-mirror-") as mirror:
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
            relative = PurePosixPath(info.path).relative_to(root)
            in_checkpoint = any(part.startswith(SKIPPED_WHEN_MIRRORING) for part in relative.parts)
            if info.type != pafs.FileType.File or (in_checkpoint and relative.name != REPORTS_FILE):
                continue
            if wanted is not None and relative.as_posix() not in wanted:
                continue
            target = Path(mirror, *relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(info.path, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield Path(mirror)


def upload(local_file: Path, location: str) -> None:
    """Copy a finished local file to a URI: to a temporary name first, then moved over the target."""
    fs, path = filesystem(location)
    temporary = f"{path}.tmp-upload"
    pafs.copy_files(str(local_file), temporary, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    fs.move(temporary, path)
