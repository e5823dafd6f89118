"""Bad input is one line naming the file or argument, exit 2, before Ray starts, nothing written.

Real files on disk and the real CLI entry point (`raylab.cli.main`); the Ray-backed cases (a real
run, Ctrl-C, collecting a damaged folder) are in test_interrupt.py.
"""

import importlib.util
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raylab.cli import main

BASE = {
    "name": "tiny",
    "task": {"name": "copy", "delay": 5},
    "variants": [{"cell": {"name": "rnn"}}, {"cell": {"name": "lstm"}}],
    "hidden_sizes": [8],
    "seeds": [0, 1],
    "training": {"steps": 4, "eval_every": 2},
}


def sweep_text(**changes) -> str:
    return yaml.safe_dump({**BASE, **changes})


def one_error_line(capsys) -> str:
    """The whole of stderr, which must be exactly one `raylab: error:` line."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raylab: error: "), captured.err
    return lines[0]


def assert_refused_before_anything(tmp_path: Path, capsys, text: str | bytes, expected: str, command: str = "run", args: tuple = ()) -> None:
    """`raylab <command> FILE` exits 2 with one line containing `expected`; no folder, no Ray."""
    import ray

    path = tmp_path / "sweep.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([command, str(path), *args]) == 2
    line = one_error_line(capsys)
    assert f"{path}: " in line and expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not ray.is_initialized()


FILE_PROBLEMS = {
    "not utf-8": (b"name: caf\xe9\n" + sweep_text().encode(), "not UTF-8 text (byte 9 is 0xe9)"),
    "duplicate key": ("name: first\n" + sweep_text(), ": key 'name' given twice (first on line 1)"),
    "deep nesting": (sweep_text() + "description: " + "[" * 40 + "]" * 40 + "\n", "nested too deeply"),
    "absurd nesting": (sweep_text() + "description: " + "[" * 1000 + "]" * 1000 + "\n", "nested too deeply"),
    "aliases expanding without bound": (
        sweep_text() + "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]\n" for p, k in zip("abcde", "bcdef")),
        "more than 100000 values (YAML aliases expanding without bound?)",
    ),
    "nan": (sweep_text(optimizer={"lr": float("nan")}), "optimizer.lr: must be a finite number, got nan"),
    "infinity": (sweep_text(training={"steps": 4, "eval_every": 2}, max_failures=0, optimizer={"clip_grad_norm": float("inf")}), "optimizer.clip_grad_norm: must be a finite number, got inf"),
    "alpha with adam": (sweep_text(optimizer={"name": "adam", "alpha": 0.9}), "optimizer.alpha: only applies to rmsprop, but the optimizer is adam"),
    "betas with a variant's rmsprop": (
        sweep_text(optimizer={"name": "adam"}, variants=[{"cell": {"name": "lstm"}, "optimizer": {"name": "rmsprop", "betas": [0.9, 0.99]}}]),
        "variants[0].optimizer.betas: only applies to adam, but the optimizer is rmsprop",
    ),
    "name with a newline": (sweep_text(name="two\nlines"), "cannot be a folder name (it contains '\\n')"),
    "name too long": (sweep_text(name="x" * 300), "name: 300 bytes long, at most 100"),
    "name a path": (sweep_text(name="a/b"), "cannot be a folder name (it contains '/')"),
    "seed 2**32": (sweep_text(seeds=[0, 2**32]), "seeds[1]: 4294967296 is outside 0 <= seed < 2**32"),
    "negative seed": (sweep_text(seeds=[-1]), "seeds[0]: -1 is outside 0 <= seed < 2**32"),
    "seed beyond 64 bits": (sweep_text(seeds=[2**70]), "seeds[0]: 1180591620717411303424 is outside"),
    "seed listed twice": (sweep_text(seeds=[0, 1, 0]), "seeds[2]: 0 is listed twice (the same trials would run twice)"),
    "seed range empty": (sweep_text(seeds={"range": [5, 5]}), "seeds.range: [5, 5] must satisfy 0 <= start < stop <= 2**32"),
    "seed range beyond the rule": (sweep_text(seeds={"range": [0, 2**32 + 1]}), "seeds.range: [0, 4294967297] must satisfy"),
    "seed range not two integers": (sweep_text(seeds={"range": [0, 1.5]}), "seeds.range: expected [start, stop], two integers, got [0, 1.5]"),
    "seeds count form": (sweep_text(seeds={"count": 5}), "seeds: a mapping must be {range: [start, stop]}, got the keys ['count']"),
    "a long bad seed list": (sweep_text(seeds=[*range(499), "x"]), "seeds[499]: expected int, got 'x' (str)"),
    "one label, two configs": (
        sweep_text(variants=[{"cell": {"name": "rnn"}, "label": "X"}, {"cell": {"name": "lstm"}, "label": "X"}]),
        "variants[1].label: 'X' is also variants[0]'s label, with a different cell; one table row would average both",
    ),
    "default labels collide": (
        sweep_text(variants=[{"cell": {"name": "lstm"}}, {"cell": {"name": "lstm"}, "optimizer": {"lr": 0.01}}]),
        "variants[1].label: 'lstm' is also variants[0]'s label, with a different optimizer",
    ),
    "repeated variant": (
        sweep_text(variants=[{"cell": {"name": "lstm"}}, {"cell": {"name": "lstm"}}]),
        "variants[1]: repeats variants[0] (same label, cell, optimizer and sizes): its trials would run twice",
    ),
    "identical variants, two labels": (
        sweep_text(variants=[{"cell": {"name": "lstm"}, "label": "A"}, {"cell": {"name": "lstm"}, "label": "B"}]),
        "variants: identical trials ('A' and 'B', hidden size 8, seed 0) would run twice",
    ),
    "two budgets, one size": (
        sweep_text(variants=[{"cell": {"name": "lstm"}}], hidden_sizes=None, budget={"n_params": [1000, 1001]}),
        "variants: identical trials ('lstm', hidden size",
    ),
    "hidden size twice": (sweep_text(hidden_sizes=[8, 16, 8]), "hidden_sizes[2]: 8 is listed twice"),
    "variant hidden size twice": (
        sweep_text(variants=[{"cell": {"name": "lstm"}, "hidden_sizes": [4, 4]}]),
        "variants[0].hidden_sizes[1]: 4 is listed twice",
    ),
    "model too large for any device": (
        sweep_text(variants=[{"cell": {"name": "lstm"}}], hidden_sizes=[60000]),
        "variants[0].cell: hidden size 60000 gives 14,403,180,009 parameters, more than 8,589,934,592",
    ),
    "hidden size above the limit": (sweep_text(hidden_sizes=[200000]), "variants[0].cell: hidden size 200000 is above raylab's limit of 65536"),
    "unknown logger": (sweep_text(loggers=["tensorbord"]), "loggers[0]: 'tensorbord' is not one of tensorboard|mlflow|wandb"),
    "logger twice": (sweep_text(loggers=["tensorboard", "tensorboard"]), "loggers[1]: tensorboard is listed twice"),
    "tracker twice": (sweep_text(loggers=["mlflow", "wandb", "mlflow"]), "loggers[2]: mlflow is listed twice"),
    "mlflow section without the logger": (sweep_text(mlflow={"experiment_name": "x"}), "mlflow: set, but loggers does not list mlflow (add it, or run with --logger mlflow)"),
    "wandb section without the logger": (sweep_text(loggers=["mlflow"], wandb={"mode": "online"}), "wandb: set, but loggers does not list wandb"),
    "mlflow section key": (sweep_text(loggers=["mlflow"], mlflow={"uri": "sqlite:///x.db"}), "mlflow: unknown key 'uri' (valid keys: tracking_uri, experiment_name)"),
    "mlflow file store": (sweep_text(loggers=["mlflow"], mlflow={"tracking_uri": "./mlruns"}), "mlflow.tracking_uri: './mlruns' is a folder (MLflow's deprecated file store)"),
    "mlflow empty experiment": (sweep_text(loggers=["mlflow"], mlflow={"experiment_name": " "}), "mlflow.experiment_name: must not be empty"),
    "wandb mode": (sweep_text(loggers=["wandb"], wandb={"mode": "cloud"}), "wandb.mode: 'cloud' is not one of offline|online"),
    "wandb project": (sweep_text(loggers=["wandb"], wandb={"project": "a/b"}), "wandb.project: 'a/b' is not a W&B project name"),
}


@pytest.mark.parametrize("case", FILE_PROBLEMS, ids=list(FILE_PROBLEMS))
def test_bad_sweep_files_are_one_line_before_anything_runs(tmp_path, capsys, case):
    text, expected = FILE_PROBLEMS[case]
    text = text if isinstance(text, bytes) else text + f"storage: {tmp_path / 'results'}\n"
    assert_refused_before_anything(tmp_path, capsys, text, expected)


def test_validate_reports_the_same_line(tmp_path, capsys):
    assert_refused_before_anything(tmp_path, capsys, "name: first\n" + sweep_text(), "key 'name' given twice", command="validate")


def test_a_nan_override_is_refused(tmp_path, capsys):
    text = sweep_text(storage=str(tmp_path / "results"))
    assert_refused_before_anything(tmp_path, capsys, text, "optimizer.lr: must be a finite number, got nan", args=("optimizer.lr=.nan",))


def test_one_label_over_disjoint_sizes_is_one_configuration_per_row(tmp_path):
    path = tmp_path / "sweep.yaml"
    variants = [{"cell": {"name": "lstm"}, "label": "LSTM", "hidden_sizes": [8]}, {"cell": {"name": "lstm"}, "label": "LSTM", "hidden_sizes": [16], "optimizer": {"lr": 0.01}}]
    path.write_text(sweep_text(variants=variants))
    assert main(["validate", str(path)]) == 0


def test_a_sweep_level_alpha_stays_valid_beside_an_adam_variant(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(optimizer={"alpha": 0.9}, variants=[{"cell": {"name": "rnn"}}, {"cell": {"name": "lstm"}, "optimizer": {"name": "adam"}}]))
    assert main(["validate", str(path)]) == 0


def test_validating_a_huge_model_allocates_nothing(tmp_path, capsys):
    """A 40000-unit LSTM (6.4e9 parameters, 25 GB in fp32) is counted on the meta device."""
    import resource

    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(variants=[{"cell": {"name": "lstm"}}], hidden_sizes=[40000], seeds=[0]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["validate", str(path)]) == 0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 500_000, f"validation grew the process by {grown_kib} KiB"
    assert "ok (1 trials)" in capsys.readouterr().out


STORAGE_PROBLEMS = {
    "unknown scheme": (lambda tmp: "foo://bucket/results", "storage: foo://bucket/results: unknown or unsupported URI scheme 'foo'"),
    "a file": (lambda tmp: str(tmp / "afile" / "results"), "is a file, not a folder"),
    "unreachable bucket": (lambda tmp: "s3://raylab-no-such-bucket-for-tests/results", "storage: s3://raylab-no-such-bucket-for-tests/results: cannot reach it"),
}


@pytest.mark.parametrize("case", STORAGE_PROBLEMS, ids=list(STORAGE_PROBLEMS))
def test_bad_storage_is_one_line_before_ray_starts(tmp_path, capsys, case, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 1-second probe of an instance metadata service
    (tmp_path / "afile").write_text("not a folder")
    location, expected = STORAGE_PROBLEMS[case]
    assert_refused_before_anything(tmp_path, capsys, sweep_text(storage=location(tmp_path)), expected)


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write: a read-only one of its own, or (root writes anywhere) a
    read-only mount such as /proc/sys."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked
    if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("running as root with no read-only folder to test with")


def test_unwritable_storage_is_one_line(tmp_path, capsys):
    folder = unwritable_folder(tmp_path)
    assert_refused_before_anything(tmp_path, capsys, sweep_text(storage=str(folder / "results")), f"storage: {folder}/results: {folder} is not writable")
    assert not (folder / "results").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a /proc file system")
def test_storage_that_cannot_be_created_is_one_line_before_ray_starts(tmp_path, capsys):
    # /proc is a folder that permission bits call writable for root, yet no folder can be made in it.
    assert_refused_before_anything(tmp_path, capsys, sweep_text(storage="/proc/raylab-x/results"), "storage: /proc/raylab-x/results: ")
    assert not Path("/proc/raylab-x").exists()


def test_storage_check_leaves_no_folder_behind(tmp_path, capsys):
    from raylab.planning.preflight import check_storage

    check_storage(str(tmp_path / "new" / "deeper" / "results"))
    assert list(tmp_path.iterdir()) == []  # created to be sure it can be, then removed: the run makes its own


def test_validate_takes_an_override_longer_than_a_file_name_as_an_override(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text())
    long_override = "variants=[" + ", ".join(["{cell: {name: lstm}, label: L%d, optimizer: {lr: %d.0e-4}}" % (i, i + 1) for i in range(20)]) + "]"
    assert len(long_override) > 255
    assert main(["validate", str(path), long_override]) == 0
    assert "ok (40 trials)" in capsys.readouterr().out
    assert main(["validate", "x" * 300]) == 2  # a file argument too long to exist: one line, no traceback
    assert "no such sweep file (File name too long)" in one_error_line(capsys)


def test_missing_data_with_downloads_off_is_found_on_the_driver(tmp_path, capsys):
    empty = tmp_path / "no-data"
    text = sweep_text(task={"name": "mnist", "download": False, "data_dir": str(empty)}, storage=str(tmp_path / "results"))
    assert_refused_before_anything(tmp_path, capsys, text, f"task 'mnist': {empty}/MNIST/raw/train-images-idx3-ubyte.gz: missing data file")


def test_missing_data_on_an_attached_clusters_driver_is_a_warning(tmp_path, capsys):
    """The trials run on other nodes, which may have the data that the driver's machine lacks."""
    from raylab.cli.run import check_storage_and_data
    from raylab.planning.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(task={"name": "mnist", "download": False, "data_dir": str(tmp_path / "no-data")}, storage=str(tmp_path / "results")))
    check_storage_and_data(load_sweep(path), None, attached=True)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"raylab: warning: {path}: task 'mnist': ") and warning.endswith("on this machine; the cluster's nodes must have it")


def test_corrupt_data_file_is_found_on_the_driver(tmp_path, capsys, shared_data):
    data = tmp_path / "data" / "ptb-char"
    data.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_bytes((shared_data / "ptb-char" / f"{split}.txt").read_bytes())
    with (data / "valid.txt").open("ab") as handle:
        handle.write(b"a corrupted tail\n")
    text = sweep_text(task={"name": "ptb", "level": "char", "data_dir": str(tmp_path / "data")}, storage=str(tmp_path / "results"))
    assert_refused_before_anything(tmp_path, capsys, text, f"{data}/valid.txt: sha256 ")


def test_failed_download_names_the_folder_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    """No network here: a proxy that refuses connections makes every mirror fail at once."""
    from raylab.tasks.data import DataError
    from raylab.tasks.mnist import load_mnist

    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    root = tmp_path / "cache" / "data"
    with pytest.raises(DataError, match=rf"^{root}: MNIST download failed \(.*\); put MNIST/raw/\*.gz there"):
        load_mnist(str(root), download=True)
    assert not root.exists(), "an empty data folder was left behind"
    assert (tmp_path / "cache").is_dir()  # a folder that existed before stays


def test_smoke_runs_get_their_own_folder(tmp_path):
    from raylab.execution.runner import sweep_directory
    from raylab.planning.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(storage=str(tmp_path / "results")))
    assert sweep_directory(load_sweep(path, smoke=True)) == str(tmp_path / "results" / "tiny-smoke")
    assert sweep_directory(load_sweep(path)) == str(tmp_path / "results" / "tiny")


# ---- results tools -------------------------------------------------------------------------------


def write_results(folder: Path) -> None:
    """A collected experiment (the two Parquet files) without a run: enough for table and plot."""
    folder.mkdir(parents=True, exist_ok=True)
    trials = pd.DataFrame({"trial_id": ["a", "b"], "task": "copy", "variant": "LSTM", "hidden_size": 8, "status": "finished", "final/val/loss": [0.5, 0.6]})
    trials.to_parquet(folder / "trials.parquet")
    curves = pd.DataFrame({"trial_id": ["a", "b"], "step": [2, 2], "metric": "val/loss", "value": [0.5, 0.6]})
    curves.to_parquet(folder / "curves.parquet")


def test_garbage_or_truncated_parquet_says_what_it_is_and_how_to_rebuild(tmp_path, capsys):
    experiment = tmp_path / "exp"
    write_results(experiment)
    whole = (experiment / "trials.parquet").read_bytes()
    for damaged in (b"this is not parquet", whole[: len(whole) // 2]):
        (experiment / "trials.parquet").write_bytes(damaged)
        assert main(["table", str(experiment)]) == 2
        line = one_error_line(capsys)
        assert f"{experiment}/trials.parquet: not a readable Parquet file, garbage or truncated" in line
        assert line.endswith(f"`raylab collect {experiment}` rebuilds it")
        assert (experiment / "trials.parquet").read_bytes() == damaged  # nothing overwritten


def test_results_tool_arguments(tmp_path, capsys):
    experiment = tmp_path / "exp"
    write_results(experiment)
    assert main(["table", str(experiment)]) == 0
    capsys.readouterr()

    assert main(["plot", str(experiment), "--by", "nope"]) == 2
    assert "--by: no column 'nope'" in one_error_line(capsys)
    assert main(["plot", str(experiment), "--out", str(tmp_path / "missing" / "x.png")]) == 2
    assert f"--out {tmp_path}/missing/x.png: folder {tmp_path}/missing does not exist" in one_error_line(capsys)
    assert main(["resume", str(experiment / "trials.parquet")]) == 2
    assert "trials.parquet: not a folder; give a sweep folder" in one_error_line(capsys)
    assert sorted(p.name for p in experiment.iterdir()) == ["curves.parquet", "trials.parquet"]  # no plot written

    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(experiment), "--decimals", "-1"])
    assert exit_info.value.code == 2
    assert "argument --decimals: must be 0 or more, got -1" in capsys.readouterr().err


def test_an_integer_beyond_64_bits_is_stored_as_text_not_a_crash():
    """Folders written before the seed rule may hold such seeds; collecting them must still work."""
    from raylab.results.rowtable import arrow_table

    table = arrow_table([{"seed": 2**70, "x": 1}, {"seed": 3, "x": 2}])
    assert table.column("seed").to_pylist() == [str(2**70), "3"]
    assert table.column("x").to_pylist() == [1, 2]


TRACKERS_IN_A_BUCKET = {
    "mlflow": ("loggers[1]: mlflow's default store is a SQLite file in the sweep folder, which cannot live in s3://bucket/results; "
               "set mlflow.tracking_uri (a server, or sqlite:///a/local/path.db) or MLFLOW_TRACKING_URI"),
    "wandb": "loggers[1]: wandb offline writes its files into the sweep folder, which cannot be s3://bucket/results; set wandb.mode: online",
}


@pytest.mark.parametrize("logger", TRACKERS_IN_A_BUCKET, ids=list(TRACKERS_IN_A_BUCKET))
def test_a_tracker_that_needs_a_local_sweep_folder_is_refused_in_a_bucket(tmp_path, capsys, monkeypatch, logger):
    pytest.importorskip(logger)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    text = sweep_text(storage="s3://bucket/results", loggers=["tensorboard", logger])
    assert_refused_before_anything(tmp_path, capsys, text, TRACKERS_IN_A_BUCKET[logger])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # a server: the bucket is no problem
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(storage="s3://bucket/results", loggers=[logger], wandb={"mode": "online"} if logger == "wandb" else None))
    assert main(["validate", str(path)]) == 0


def test_a_logger_named_on_the_command_line_is_checked_like_the_files(tmp_path, capsys, monkeypatch):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(storage=str(tmp_path / "results")))
    assert main(["run", str(path), "--logger", "mlfow"]) == 2
    assert one_error_line(capsys) == "raylab: error: --logger: 'mlfow' is not one of tensorboard|mlflow|wandb"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name in ("mlflow", "wandb") else real_find_spec(name, *rest))
    assert main(["run", str(path), "--logger", "wandb"]) == 2
    assert one_error_line(capsys) == "raylab: error: --logger wandb: wandb needs wandb: pip install -e '.[wandb]'"
    path.write_text(sweep_text(storage=str(tmp_path / "results"), loggers=["tensorboard", "mlflow"]))
    assert main(["validate", str(path)]) == 2
    assert one_error_line(capsys).endswith("sweep.yaml: loggers[1]: mlflow needs mlflow: pip install -e '.[mlflow]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_wandb_online_without_an_api_key_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc from a `wandb login`
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    text = sweep_text(storage=str(tmp_path / "results"), loggers=["wandb"], wandb={"mode": "online", "project": "p"})
    assert_refused_before_anything(tmp_path, capsys, text, "wandb.mode: online needs an API key: set WANDB_API_KEY or run `wandb login`")
