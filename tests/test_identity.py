"""A trial's identity is its resolved configuration; a table row, a curve and a published-table cell hold one configuration."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from raylab.results.aggregate import summarize, table_groups
from raylab.cli import main
from raylab.results.identity import code_note
from raylab.results.published import inferred_layout, load_published, paper_table
from raylab.results.collect import TRIALS_FILE, ResultsError, trial_row, write_parquet_atomic
from raylab.results.rowtable import arrow_table
from raylab.planning.sweep import load_sweep
from raylab.tasks.copying import CopyTask
from raylab.training.loop import run_trial

SWEEP = {
    "name": "ident",
    "task": {"name": "copy", "delay": 5, "eval_size": 6},
    "variants": [{"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"}, {"cell": {"name": "lstm"}, "label": "LSTM"}],
    "hidden_sizes": [8],
    "seeds": [0, 1],
    "optimizer": {"name": "rmsprop", "lr": 0.001},
    "training": {"steps": 6, "eval_every": 3},
}


def trials_of(tmp_path: Path, data: dict, *overrides: str, smoke: bool = False) -> list[dict]:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep(path, list(overrides), smoke=smoke).trials


def frame(*runs: list[dict], run_names: tuple[str, ...] = ()) -> pd.DataFrame:
    """trials.parquet rows as `collect` writes them (config columns flattened), each seed finished with a made-up metric."""
    rows = []
    for number, trials in enumerate(runs):
        provenance = {"git_commit": str(number) * 40, "versions": {"torch": torch.__version__}}
        for index, trial in enumerate(trials):
            row, _ = trial_row(f"run-{number}", f"{number}-{index}", "finished", {"trial": trial, "runtime": {"provenance": provenance}}, None, None)
            rows.append({**row, "final/val/acc": 0.5 + 0.1 * number + 0.01 * trial["seed"]})
    return pd.DataFrame(rows)


def test_the_hash_is_over_resolved_options(tmp_path, monkeypatch):
    written = trials_of(tmp_path, SWEEP)
    explicit = copy.deepcopy(SWEEP)
    explicit["task"]["copy_length"] = 10  # CopyTask's default, now written out
    assert [t["config_hash"] for t in trials_of(tmp_path, explicit)] == [t["config_hash"] for t in written]
    assert written[0]["task"]["copy_length"] == 10 and written[0]["cell"]["recurrent_init"]  # the trial holds every default

    defaults = list(CopyTask.__init__.__defaults__)
    defaults[1] = 20  # copy_length: a default that changes in raylab ...
    monkeypatch.setattr(CopyTask.__init__, "__defaults__", tuple(defaults))
    changed = trials_of(tmp_path, SWEEP)
    assert changed[0]["task"]["copy_length"] == 20
    assert not {t["config_hash"] for t in changed} & {t["config_hash"] for t in written}  # ... is a new trial, not "already finished"


def test_two_runs_of_one_file_with_different_settings_are_two_rows(tmp_path):
    """lr 1e-3 for 6 steps, then lr 0.5 for 30 steps: used to be one row (n=4) from 2 seeds."""
    first = trials_of(tmp_path, SWEEP)
    second = trials_of(tmp_path, SWEEP, "optimizer.lr=0.5", "training.steps=30")
    trials = frame(first, second)
    by = table_groups(trials)
    assert by == ["task", "variant", "hidden_size", "config.optimizer.lr", "config.training.steps"]
    summary = summarize(trials, by, ["val/acc"])
    assert len(summary) == 4 and set(summary["val/acc.n"]) == {2}
    with pytest.raises(ResultsError, match=r"^row task=copy, variant=RNN, hidden_size=8: pools 2 configurations that differ in config.optimizer.lr \(0.001, 0.5\), config.training.steps \(30, 6\)"):
        summarize(trials, ["task", "variant", "hidden_size"], ["val/acc"])  # without the split: refused


def test_a_smoke_run_in_the_sweep_folder_is_its_own_row(tmp_path):
    trials = frame(trials_of(tmp_path, SWEEP), trials_of(tmp_path, SWEEP, smoke=True))
    summary = summarize(trials, table_groups(trials), ["val/acc"])
    smoke = summary[summary["hidden_size"] == 16]
    assert len(summary) == 4 and len(smoke) == 2 and set(smoke["val/acc.n"]) == {1}


def test_one_label_for_two_configurations_is_split_and_a_relabelled_rerun_is_not(tmp_path):
    # one file refuses two cells under one label (raylab.planning.trials); two runs of it can still do it
    trials = frame(trials_of(tmp_path, SWEEP), trials_of(tmp_path, SWEEP, "variants.0.cell.nonlinearity=relu"))
    assert table_groups(trials) == ["task", "variant", "hidden_size", "config.cell.nonlinearity"]

    relabelled = copy.deepcopy(SWEEP)
    relabelled["variants"][0]["label"] = "Elman"
    first, second = trials_of(tmp_path, SWEEP), trials_of(tmp_path, relabelled)
    assert first[0]["config_hash"] == second[0]["config_hash"]  # one trial: a re-run skips it, collect keeps one row


def test_table_command_shows_what_differs_and_notes_mixed_code(tmp_path, capsys):
    trials = frame(trials_of(tmp_path, SWEEP), trials_of(tmp_path, SWEEP, "training.steps=30", "seeds=[0,1,2]"))
    write_parquet_atomic(arrow_table(trials.to_dict("records")), tmp_path / TRIALS_FILE)
    assert main(["table", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| task | variant | hidden_size | config.training.steps | val/acc | val/acc baseline | not in mean |" in out
    assert "| copy | LSTM | 8 | 30 | 0.610 ± 0.006 (n=3) | 0.125 |  |" in out and "| copy | LSTM | 8 | 6 | 0.505 ± 0.005 (n=2) | 0.125 |  |" in out
    assert err == ""  # two code versions, but in different rows
    assert main(["table", str(tmp_path), "--by", "variant,config.training.steps", "--by", "seed"]) == 0
    shared_seed = frame(trials_of(tmp_path, SWEEP, "seeds=[0]"), trials_of(tmp_path, SWEEP, "seeds=[1]"))  # one sweep, seeds from two commits
    assert code_note(shared_seed, table_groups(shared_seed)).startswith("note: 2 row(s) pool seeds computed by different code")


def test_a_published_cell_pooling_configurations_is_refused_and_the_inferred_layout_splits(tmp_path):
    trials = frame(trials_of(tmp_path, SWEEP), trials_of(tmp_path, SWEEP, "optimizer.lr=0.5")).assign(experiment="ident")
    layout = inferred_layout(trials, "val/acc")
    assert [c.label for c in layout.columns] == ["optimizer.lr=0.001", "optimizer.lr=0.5"]
    assert paper_table(trials, layout, compare=False).set_index("model").loc["LSTM", "optimizer.lr=0.5"] == "0.605 ± 0.005 (n=2)"
    published = tmp_path / "published.yaml"
    published.write_text(yaml.safe_dump({"title": "Copy", "metric": "val/acc", "columns": [{"label": "all", "where": {}}], "rows": [{"label": "LSTM", "values": [[0.6]]}]}))
    with pytest.raises(ResultsError, match=r"^Copy: row 'LSTM', column 'all': pools 2 configurations that differ in config.optimizer.lr"):
        paper_table(trials, load_published(published))


def test_precision_is_explicit_recorded_and_applied(tmp_path):
    trials = trials_of(tmp_path, SWEEP)
    assert trials[0]["training"]["precision"] == "fp32"
    assert frame(trials)["config.training.precision"].tolist() == ["fp32"] * 4
    switches = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    if not hasattr(torch.backends.cudnn, "rnn"):
        pytest.skip("PyTorch < 2.9: only the legacy allow_tf32 switches")
    fresh = [switch.fp32_precision for switch in switches]
    try:
        for precision, mode in (("tf32", "tf32"), ("fp32", "ieee")):
            trial = {**trials[0], "training": {**trials[0]["training"], "steps": 1, "eval_every": 1, "precision": precision}}
            run_trial(trial, lambda metrics, checkpoint: None, device=torch.device("cpu"))
            assert [switch.fp32_precision for switch in switches] == [mode] * 3
    finally:
        for switch, value in zip(switches, fresh):
            switch.fp32_precision = value


def test_a_rerun_says_when_skipped_trials_came_from_other_code(tmp_path, capsys):
    from raylab.cli.run import print_code_change

    trials = trials_of(tmp_path, SWEEP)
    done = {trials[0]["config_hash"]: "aaaaaaaaaaaa torch 2.0", trials[1]["config_hash"]: "bbbbbbbbbbbb torch 2.5"}
    now = {"git_commit": "bbbbbbbbbbbb", "versions": {"torch": "2.5"}}
    print_code_change(done, trials, now)
    assert capsys.readouterr().out.startswith("raylab: 1 of the skipped trials were computed by other code (aaaaaaaaaaaa torch 2.0; now bbbbbbbbbbbb torch 2.5)")
    print_code_change({trials[0]["config_hash"]: "bbbbbbbbbbbb torch 2.5"}, trials, now)
    assert capsys.readouterr().out == ""


def test_an_unknown_precision_is_one_line_naming_the_key(tmp_path):
    from raylab.spec.config import ConfigError

    with pytest.raises(ConfigError, match=r"sweep.yaml: training.precision: 'bf16' is not one of fp32\|tf32"):
        trials_of(tmp_path, SWEEP, "training.precision=bf16")


def test_a_plot_draws_one_curve_per_configuration_and_names_what_differs(tmp_path):
    from raylab.results.plots import curve_label, plot_curves
    from raylab.results.collect import CURVES_FILE, curves_table

    trials = frame(trials_of(tmp_path, SWEEP), trials_of(tmp_path, SWEEP, "optimizer.lr=0.5"))
    write_parquet_atomic(arrow_table(trials.to_dict("records")), tmp_path / TRIALS_FILE)
    points = {(trial_id, step, "val/acc"): 0.1 * step for trial_id in trials["trial_id"] for step in (3, 6)}
    write_parquet_atomic(curves_table(points), tmp_path / CURVES_FILE)
    by = table_groups(trials)
    assert by[-1] == "config.optimizer.lr" and curve_label(by, ("copy", "LSTM", 8, 0.5), 3) == "copy LSTM 8 [optimizer.lr=0.5]"
    assert plot_curves([tmp_path], ["val/acc"], tmp_path / "acc.png").stat().st_size > 0


USER_CELL = '''
from torch import nn

from mycells.helpers import GAIN


class ScaledRNN(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)

    def forward(self, inputs, state=None):
        outputs, state = self.rnn(inputs * GAIN, state)
        return outputs, state
'''


def write_user_package(root: Path, gain: str) -> None:
    (root / "mycells").mkdir(exist_ok=True)
    (root / "mycells" / "__init__.py").write_text("")
    (root / "mycells" / "cells.py").write_text(USER_CELL)
    (root / "mycells" / "helpers.py").write_text(f"GAIN = {gain}\n")


def test_user_code_version_hashes_the_whole_user_package_and_nothing_of_raylab(tmp_path, monkeypatch):
    from raylab.spec.userimport import import_object, user_code_version

    import sys

    write_user_package(tmp_path, "1.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import_object("mycells.cells:ScaledRNN", "cell.name")
        first = user_code_version(["mycells.cells:ScaledRNN", "copy"])
        assert first is not None and len(first) == 12
        (tmp_path / "mycells" / "__pycache__").mkdir(exist_ok=True)
        (tmp_path / "mycells" / "__pycache__" / "cells.cpython-311.pyc").write_bytes(b"compiled")
        assert user_code_version(["mycells.cells:ScaledRNN"]) == first  # compiled files are not source
        (tmp_path / "mycells" / "helpers.py").write_text("GAIN = 2.0\n")  # a module the cell imports, not the cell's own file
        assert user_code_version(["mycells.cells:ScaledRNN"]) not in (None, first)
        assert user_code_version(["lstm", "copy"]) is None
        assert user_code_version(["raylab.cells.lstm:LSTM"]) is None  # raylab's own code: code_version has its commit
    finally:
        for name in ("mycells", "mycells.cells", "mycells.helpers"):
            sys.modules.pop(name, None)

@pytest.mark.ray
def test_editing_a_user_cell_between_runs_is_said_by_the_rerun_and_the_table(tmp_path):
    import subprocess
    import sys

    write_user_package(tmp_path, "1.0")
    sweep = {**SWEEP, "variants": [{"cell": {"name": "mycells.cells:ScaledRNN"}, "label": "Scaled"}], "seeds": [0], "storage": "results"}
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(sweep))

    def run(*overrides: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "raylab.cli", "run", "user.yaml", *overrides, "--num-cpus", "1"]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "computed by other code" not in first.stdout
    (tmp_path / "mycells" / "helpers.py").write_text("GAIN = 0.5\n")  # the user edits the cell's code
    second = run("seeds=[0,1]")  # seed 0 is kept from the old code, seed 1 runs with the new
    assert second.returncode == 0, second.stdout + second.stderr
    assert "raylab: 1 of the skipped trials were computed by other code" in second.stdout, second.stdout
    trials = pd.read_parquet(tmp_path / "results" / "ident" / "trials.parquet").sort_values("seed")
    old, new = trials["user_code"].tolist()
    assert old != new and trials["code_version"].tolist() == [f"{v} user {h}" for v, h in zip(trials["code_version"].str.split(" user ").str[0], (old, new))]
    assert "note: 1 row(s) pool seeds computed by different code (code_version): copy Scaled" in second.stderr, second.stderr
