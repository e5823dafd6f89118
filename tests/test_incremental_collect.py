"""Collecting again reads only the runs and trials whose files changed (raylab/results/incremental.py),
and writes the pair a collect from scratch writes: after a trial reports again, after a re-run adds
trials in a new run, after a run is removed, with a stale cache, and on a bucket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raylab.results.collect import CURVES_FILE, TRIALS_FILE, collect, file_collect_id
from raylab.results.incremental import CACHE_FILE

from realparts import S3Server

pytestmark = [pytest.mark.ray]

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "jobs" / "smoke.yaml")
TINY = ("training.steps=4", "training.eval_every=2", "hidden_sizes=[8]", "--num-cpus", "2")


def raylab_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raylab.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A real sweep (2 variants x 2 seeds), collected; tests change copies of it."""
    base = tmp_path_factory.mktemp("incremental")
    result = raylab_cli("run", SMOKE, "name=inc", f"storage={base / 'results'}", "seeds=[0, 1]", *TINY, cwd=base)
    assert result.returncode == 0, result.stderr
    return base / "results" / "inc"


def pair(location: str | Path) -> tuple:
    """The Parquet pair's contents, without the collect id."""
    fs, root = pafs.LocalFileSystem(), str(location)
    if "://" in str(location):
        fs, root = pafs.FileSystem.from_uri(str(location))
    return tuple(pq.read_table(f"{root}/{name}", filesystem=fs).replace_schema_metadata(None) for name in (TRIALS_FILE, CURVES_FILE))


def assert_as_from_scratch(location: str | Path) -> tuple:
    """The pair an incremental collect left equals, value for value and column for column, a collect from scratch."""
    incremental = pair(location)
    collect(location, incremental=False)
    scratch = pair(location)
    assert incremental[0].equals(scratch[0]), (incremental[0].to_pandas().compare(scratch[0].to_pandas()) if incremental[0].schema == scratch[0].schema else (incremental[0].schema, scratch[0].schema))
    assert incremental[1].equals(scratch[1])
    return scratch


def one_trial_folder(sweep: Path) -> Path:
    return sorted(path.parent for path in sweep.glob("run-*/*/result.json"))[0]


def test_a_trial_that_reports_again_is_read_again_and_the_others_are_not(experiment, tmp_path):
    sweep = tmp_path / "inc"
    shutil.copytree(experiment, sweep)
    collect(sweep, incremental=False)
    assert (sweep / CACHE_FILE).is_file()
    written = file_collect_id(str(sweep / TRIALS_FILE))
    collect(sweep)  # nothing changed: the same pair, written again (so that it is newer than every result)
    assert file_collect_id(str(sweep / TRIALS_FILE)) != written
    assert_as_from_scratch(sweep)

    # A trial reports again (as in a live sweep, where Tune saves its state too): its row and curve
    # are read again.
    trial = one_trial_folder(sweep)
    rows = (trial / "result.json").read_text().splitlines()
    again = {**json.loads(rows[-1]), "val/loss": 123.0}
    with open(trial / "result.json", "a") as stream:
        stream.write(json.dumps(again) + "\n")
    touch_state(trial.parent)
    collect(sweep)
    trials, curves = pair(sweep)
    assert 123.0 in curves.column("value").to_pylist()
    assert 123.0 in trials.column("final/val/loss").to_pylist()
    assert_as_from_scratch(sweep)

    # An unchanged trial is not read: a file changed behind the listing's back (same size, same
    # modification time) is not seen; a collect from scratch sees it. (docs/results.md says so.)
    other = sorted(path.parent for path in sweep.glob("run-*/*/result.json"))[1]
    result_file = other / "result.json"
    text, stat = result_file.read_text(), result_file.stat()
    changed = text.replace('"val/loss": ', '"val/loss": 9', 1).replace('"step": ', '"step":', 1)  # same length
    assert len(changed) == len(text) and changed != text
    result_file.write_text(changed)
    os.utime(result_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    collect(sweep)
    assert pair(sweep)[1].equals(curves)
    collect(sweep, incremental=False)
    assert not pair(sweep)[1].equals(curves), "a collect from scratch reads every trial"


def touch_state(run: Path) -> None:
    """The run's experiment state saved again (a newer modification time)."""
    for state in run.glob("experiment_state-*.json"):
        stat = state.stat()
        os.utime(state, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_settled_run_is_not_listed_again_until_its_state_changes(experiment, tmp_path):
    """A run whose trials all ended, each row holding the last result Tune's state records, is
    settled: the next collects check its state and manifest only. A run whose state is ahead of a
    trial's result.json (a bucket sync caught half way) is not, and is read again when the file
    catches up."""
    sweep = tmp_path / "inc"
    shutil.copytree(experiment, sweep)
    trial = one_trial_folder(sweep)
    result_file = trial / "result.json"
    whole = result_file.read_text()
    result_file.write_text("\n".join(whole.splitlines()[:-1]) + "\n")  # the state records one more result
    collect(sweep, incremental=False)
    result_file.write_text(whole)  # the upload completes; the state does not change
    collect(sweep)
    assert_as_from_scratch(sweep)

    # Now settled: a trial file edited by hand (another size) is not seen until the state changes.
    settled = pair(sweep)
    edited = {**json.loads(whole.splitlines()[-1]), "val/loss": 456.0}
    with open(result_file, "a") as stream:
        stream.write(json.dumps(edited) + "\n")
    collect(sweep)
    assert pair(sweep)[1].equals(settled[1])
    touch_state(trial.parent)
    collect(sweep)
    assert 456.0 in pair(sweep)[1].column("value").to_pylist()
    assert_as_from_scratch(sweep)


def test_a_rerun_with_more_seeds_adds_a_run_and_the_first_is_taken_from_the_cache(experiment, tmp_path):
    base = tmp_path
    shutil.copytree(experiment, base / "results" / "inc")
    sweep = base / "results" / "inc"
    collect(sweep, incremental=False)
    result = raylab_cli("run", SMOKE, "name=inc", f"storage={base / 'results'}", "seeds=[0, 1, 2]", *TINY, cwd=base)
    assert result.returncode == 0, result.stderr
    assert len(list(sweep.glob("run-*"))) == 2
    collect(sweep)
    trials, _ = assert_as_from_scratch(sweep)
    assert sorted(trials.column("seed").to_pylist()) == [0, 0, 1, 1, 2, 2]

    # A later run of the same trials (a copy of the first): its rows win, so the cache keeps no row of
    # the first run's. Removed again, the first run's rows win; the cache has none: they are read.
    first = sorted(sweep.glob("run-*"))[0]
    shutil.copytree(first, sweep / "run-99991231-235959")
    collect(sweep)
    trials, _ = assert_as_from_scratch(sweep)
    assert trials.num_rows == 6 and "run-99991231-235959" in trials.column("run").to_pylist()
    shutil.rmtree(sweep / "run-99991231-235959")
    collect(sweep)
    trials, _ = assert_as_from_scratch(sweep)
    assert first.name in trials.column("run").to_pylist() and "run-99991231-235959" not in trials.column("run").to_pylist()


def test_a_run_folder_is_collected_incrementally_too(experiment, tmp_path):
    run = tmp_path / sorted(experiment.glob("run-*"))[0].name
    shutil.copytree(sorted(experiment.glob("run-*"))[0], run)
    collect(run)
    trial = one_trial_folder(tmp_path)
    with open(trial / "result.json", "a") as stream:
        stream.write((trial / "result.json").read_text().splitlines()[-1] + "\n")
    touch_state(run)
    collect(run)
    trials, _ = assert_as_from_scratch(run)
    assert set(trials.column("run").to_pylist()) == {run.name}


def test_a_cache_of_another_collect_is_not_used(experiment, tmp_path):
    sweep = tmp_path / "inc"
    shutil.copytree(experiment, sweep)
    collect(sweep, incremental=False)
    old_cache = (sweep / CACHE_FILE).read_text()
    trial = one_trial_folder(sweep)
    rows = (trial / "result.json").read_text().splitlines()
    (trial / "result.json").write_text("\n".join(rows[:-1]) + "\n")  # a report fewer
    collect(sweep, incremental=False)
    (sweep / CACHE_FILE).write_text(old_cache)  # the cache of the collect before: its id is not the pair's
    collect(sweep)
    assert_as_from_scratch(sweep)
    (sweep / CACHE_FILE).write_text("{not json")
    collect(sweep)
    assert_as_from_scratch(sweep)


@pytest.mark.cluster  # a local S3 server, like tests/test_s3_storage.py: CI's cluster step
def test_on_a_bucket_only_what_changed_is_downloaded(experiment, tmp_path, monkeypatch):
    server = S3Server(Path(tempfile.mkdtemp(prefix="rls3-")))
    try:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        uri = server.uri("inc")
        fs, root = pafs.FileSystem.from_uri(uri)
        pafs.copy_files(str(experiment), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        collect(uri, incremental=False)
        assert f"inc/{CACHE_FILE}" in server.keys("inc/")
        key = next(k for k in server.keys("inc/") if k.endswith("/result.json"))
        rows = server.read(key).decode().splitlines()
        again = {**json.loads(rows[-1]), "val/loss": 321.0}
        server.client().put_object(Bucket=server.bucket, Key=key, Body=("\n".join(rows + [json.dumps(again)]) + "\n").encode())
        time.sleep(1.1)  # S3's modification times are whole seconds
        state = next(k for k in server.keys("inc/") if k.rsplit("/", 1)[-1].startswith("experiment_state-") and k.split("/")[-2] == key.split("/")[-3])
        server.client().put_object(Bucket=server.bucket, Key=state, Body=server.read(state))  # Tune saved its state again

        downloaded = []
        real_copy = pafs.copy_files

        def counting_copy(source, destination, **kwargs):
            if kwargs.get("destination_filesystem") is not None and isinstance(kwargs["destination_filesystem"], pafs.LocalFileSystem):
                downloaded.append(source)
            return real_copy(source, destination, **kwargs)

        monkeypatch.setattr(pafs, "copy_files", counting_copy)
        collect(uri)
        monkeypatch.setattr(pafs, "copy_files", real_copy)
        changed_trial = key.rsplit("/", 2)[-2]
        trial_files = [path for path in downloaded if path.count("/") > 3]
        assert trial_files and all(f"/{changed_trial}/" in path for path in trial_files), downloaded
        assert 321.0 in pair(uri)[1].column("value").to_pylist()
        assert_as_from_scratch(uri)
    finally:
        server.stop()
