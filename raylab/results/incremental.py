"""What a collect takes from the one before it: the rows of trials whose files did not change.

Beside the Parquet pair, `collect` writes `.collect-cache.json` (`CACHE_FILE`), with the pair's
collect id. For each run it holds:

- `fingerprint`: the name, size and modification time of the run's newest experiment state and of
  its manifest;
- `sources`: for each trial folder, the size and modification time of the files a trial's row is
  made from (result.json, error.txt, and the reports.json of its newest checkpoint);
- `entries`: each trial as collected, in order: Tune's status, its folder, its config hash and
  status, and, when its row was kept, which keys the row had (an index into the cache's `keysets`)
  and the values of its mixed-type columns (raylab/results/rowtable.py). The row itself is in
  trials.parquet and its curve points in curves.parquet, where the next collect takes them from.

A run is `settled` when every trial in its state ended (TERMINATED or ERROR) and each trial's row
holds the last result the state records for it (and its error line, if it errored): nothing
appends to an ended trial's files, so its trial folders need not be listed again.

The next collect lists the experiment's files once (also on a bucket), a settled run without its
trial folders' contents while its state and manifest are unchanged, and
- takes a run whose fingerprint and sources are all unchanged from the cache, without reading its
  state or any of its files;
- reads the state of any other run, and builds again only the rows of its trials whose Tune status
  or folder changed (the others come from the cache);
- downloads, from a bucket, only what it reads.

The result is the same pair a collect from scratch writes (tests/test_incremental_collect.py). The
cache is used only when it is the pair's (same collect id in all three files) and was written by the
same row-making code (`CODE_FILES`, hashed): anything else, a missing or unreadable cache included,
means a collect from scratch. A file rewritten with the same size within the filesystem's time
resolution (a second on S3) would go unnoticed, and so would any file of a settled run edited by
hand; raylab never rewrites a result file that way, and `raylab collect --from-scratch` reads all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pyarrow.fs as pafs

from raylab.planning import storage
from raylab.training.reports import REPORTS_FILE

CACHE_FILE = ".collect-cache.json"
PREVIOUS_KEY = "_previous"  # in a row of collect's: the row is the previous collect's (its cache entry)
CACHE_FORMAT = 2
MANIFEST = "raylab.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
# The modules that make a row from a trial's files: a change to any of them makes cached rows stale.
CODE_FILES = ("results/collect.py", "results/incremental.py", "results/rowtable.py", "results/provenance.py", "results/identity.py",
              "training/ending.py", "training/metrics.py", "training/reports.py", "planning/space.py")

Listing = dict[str, pafs.FileInfo]  # path relative to the experiment folder -> what the filesystem says of it


def code_hash() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in CODE_FILES:
        path = package / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()[:16]


def list_experiment(location: str | Path, settled: dict[str, list] | None = None) -> tuple[Listing, set[str]]:
    """Every file and folder under an experiment folder (local or URI), and the runs left settled.

    A run that `settled` names (run -> its fingerprint when the last collect found it settled) and
    whose state and manifest are unchanged is listed without its trial folders' contents: nothing
    changes in them any more. Every other run is listed whole."""
    settled = settled or {}
    fs, root = storage.filesystem(location)
    root = root.rstrip("/")

    def entries(folder: str, prefix: str, recursive: bool) -> Listing:
        start = len(folder) + 1  # the listing's paths are `folder/...` (pathlib per entry took half the time)
        return {prefix + info.path[start:]: info for info in fs.get_file_info(pafs.FileSelector(folder, recursive=recursive, allow_not_found=True))}

    top = entries(root, "", False)
    if MANIFEST in top:  # the folder is a run
        folders = {"": top}
        listing: Listing = {}
    else:
        folders = {path: entries(f"{root}/{path}", f"{path}/", False) for path, info in top.items() if info.type == pafs.FileType.Directory}
        listing = dict(top)
    left_settled = set()
    for run, shallow in folders.items():
        if run in settled and (run == "" or f"{run}/{MANIFEST}" in shallow) and run_fingerprint(shallow, run) == settled[run]:
            listing.update(shallow)
            left_settled.add(run)
        elif run == "" or f"{run}/{MANIFEST}" in shallow:
            listing.update(entries(f"{root}/{run}" if run else root, f"{run}/" if run else "", True))
        else:
            listing.update(shallow)  # not a run: its folders are not looked into
    return listing, left_settled


def run_names(listing: Listing) -> list[str] | None:
    """The runs of the experiment, oldest first: `[""]` when the folder is itself a run, else its
    folders holding a manifest. None when there is neither."""
    if MANIFEST in listing:
        return [""]
    runs = sorted(path.split("/")[0] for path in listing if path.count("/") == 1 and path.endswith(f"/{MANIFEST}"))
    return runs or None


def stamp(info: pafs.FileInfo | None) -> list[int] | None:
    if info is None or info.type != pafs.FileType.File:
        return None
    return [info.size, info.mtime_ns]


def run_fingerprint(listing: Listing, run: str) -> list:
    """The run's newest experiment state (Tune's choice: the greatest name) and manifest, stamped."""
    prefix = f"{run}/" if run else ""
    states = sorted(path for path in listing if path.startswith(prefix) and "/" not in path[len(prefix):]
                    and path[len(prefix):].startswith("experiment_state-") and path.endswith(".json"))
    newest = states[-1] if states else None
    return [newest, stamp(listing.get(newest)) if newest else None, stamp(listing.get(f"{prefix}{MANIFEST}"))]


def trial_sources(listing: Listing, runs: list[str]) -> dict[str, dict[str, list]]:
    """run -> trial folder name -> the stamps of the files its row is made from."""
    sources: dict[str, dict[str, list]] = {run: {} for run in runs}
    sweep = runs != [""]
    for path, info in listing.items():
        parts = path.split("/")
        if sweep:
            if parts[0] not in sources:
                continue
            run, parts = parts[0], parts[1:]
        else:
            run = ""
        if len(parts) == 1 and info.type == pafs.FileType.Directory:
            sources[run].setdefault(parts[0], [None, None, None])
        elif len(parts) == 2 and parts[1] in (RESULT_FILE, ERROR_FILE):
            sources[run].setdefault(parts[0], [None, None, None])[0 if parts[1] == RESULT_FILE else 1] = stamp(info)
        elif len(parts) == 3 and parts[1].startswith("checkpoint_") and parts[2] == REPORTS_FILE:
            source = sources[run].setdefault(parts[0], [None, None, None])
            if source[2] is None or parts[1] > source[2][0]:
                source[2] = [parts[1], *(stamp(info) or [])]
    return sources


@dataclasses.dataclass
class CachedRun:
    fingerprint: list
    sources: dict[str, list]
    entries: list[dict]  # {"trial_id", "config_hash", "status", "tune_status", "dirname", "kept", "keys", "mixed", "settled"}
    warnings: list[str]  # what collect said of the run (unreadable trials), said again when the run is reused
    # Every trial settled (collect.Collected.settled): the next collect checks only the fingerprint.
    settled: bool = False


def read_cache(location: str | Path, pair_id: str | None) -> tuple[dict[str, CachedRun], list[frozenset[str]]]:
    """The previous collect's runs and the key sets its rows had, or ({}, []) when its cache is
    missing, unreadable, not the pair's, or written by other row-making code."""
    if pair_id is None:
        return {}, []
    try:
        cache = json.loads(storage.read_text(storage.join(location, CACHE_FILE)))
        if cache["format"] != CACHE_FORMAT or cache["collect_id"] != pair_id or cache["code"] != code_hash():
            return {}, []
        return {name: CachedRun(**run) for name, run in cache["runs"].items()}, [frozenset(keys) for keys in cache["keysets"]]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, []


def cache_text(pair_id: str, runs: dict[str, CachedRun], keysets: list[frozenset[str]]) -> str:
    return json.dumps({"format": CACHE_FORMAT, "collect_id": pair_id, "code": code_hash(), "keysets": [sorted(keys) for keys in keysets],
                       "runs": {name: vars(run) for name, run in runs.items()}})


def wanted_files(listing: Listing, changed: dict[str, set[str] | None]) -> set[str]:
    """The files to download from a bucket: of each changed run, its own files and the trial folders
    named in `changed[run]` (None: all of them)."""
    wanted = set()
    for path, info in listing.items():
        if info.type != pafs.FileType.File:
            continue
        parts = path.split("/")
        run = parts[0] if len(parts) > 1 and parts[0] in changed else ("" if "" in changed else None)
        if run is None:
            continue
        inner = parts[1:] if run else parts
        folders = changed[run]
        if len(inner) == 1 or folders is None or inner[0] in folders:
            wanted.add(path)
    return wanted
