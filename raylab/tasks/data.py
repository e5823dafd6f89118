"""Where data sets live, and checks that the files are the ones the papers used.

A data root holds the layout of `shared/data` (see its README):

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    ptb-char/{train,valid,test}.txt     ptb-word/{train,valid,test}.txt

The root is, in order: a task's own `data_dir` option, the runtime's (`raylab run --data-dir`),
`$RAYLAB_DATA`, then `~/.cache/raylab/data` (where MNIST is downloaded when it is missing).
Nothing here writes next to the data: MNIST's IDX files are decoded from the `.gz` in memory, so a
read-only root works.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path("~/.cache/raylab/data")

# sha256 of every known file, from shared/data/SHA256SUMS (checked there against published MD5s and
# git blob ids of independent copies; see shared/data/README.md for the provenance).
SHA256 = {
    "MNIST/raw/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "MNIST/raw/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "MNIST/raw/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "ptb-char/train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb-char/valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb-char/test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
    "ptb-word/train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb-word/valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb-word/test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}


class DataError(RuntimeError):
    """A data file is missing or is not the expected file; the message says which and what to do."""


def data_root(option: str | None, runtime: str | None) -> Path:
    """The task's `data_dir` option, else the runtime's, else $RAYLAB_DATA, else the default cache."""
    chosen = option or runtime or os.environ.get("RAYLAB_DATA") or str(DEFAULT_ROOT)
    return Path(chosen).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checked_file(root: Path, relative: str, hint: str = "") -> Path:
    """`root/relative`, after checking that it exists and (when known) that its sha256 matches."""
    path = root / relative
    if not path.is_file():
        raise DataError(f"{path}: missing data file{f' ({hint})' if hint else ''}")
    _verify(*file_version(path), relative)
    return path


@lru_cache(maxsize=64)
def _verify(path: str, size: int, mtime_ns: int, relative: str) -> None:
    """Hash once per process and file version (size and mtime are part of the cache key)."""
    expected = SHA256.get(relative)
    if expected is None:
        return
    actual = sha256_of(Path(path))
    if actual != expected:
        raise DataError(
            f"{path}: sha256 {actual[:16]}... does not match the expected {expected[:16]}... "
            f"(corrupt, truncated or a different version of {relative}); replace it with a fresh copy"
        )


def file_version(path: str | Path) -> tuple[str, int, int]:
    """(path, size, modification time): a cache of what was read from a file is keyed by this, so a
    file replaced since is read again (and, when its checksum is known, verified again)."""
    stat = Path(path).stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def read_idx_gz(path: str) -> np.ndarray:
    """Decode a gzip'd big-endian IDX file (MNIST) into a uint8 array: (N, 28, 28) or (N,).

    Decoded once per process and file version: trials that reuse a worker process share it.
    """
    return _decode_idx_gz(*file_version(path))


@lru_cache(maxsize=8)
def _decode_idx_gz(path: str, size: int, mtime_ns: int) -> np.ndarray:
    raw = gzip.decompress(Path(path).read_bytes())
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (2049, 2051):
        raise DataError(f"{path}: not an IDX file of uint8 (magic {magic}, expected 2049 or 2051)")
    n_dims = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: IDX header says {shape} but holds {data.size} values")
    data = data.reshape(shape)
    data.flags.writeable = False  # shared by every caller through the cache
    return data
