"""A newcomer's CLI: one override syntax, a dry run, hints, `ls` and `--help` that answer questions,
and a table that says what it shows (no Ray started here)."""

import argparse
import math

import pandas as pd
import pytest
import yaml

from raylab.cli import main, parser

SWEEP = {
    "name": "newcomer",
    "task": {"name": "copy", "delay": 5, "eval_size": 10},
    "variants": [
        {"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"},
        {"cell": {"name": "lstm"}, "label": "LSTM", "optimizer": {"lr": 0.002}},
    ],
    "hidden_sizes": [8],
    "seeds": [0, 1],
    "training": {"steps": 20, "eval_every": 10},
}


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "newcomer.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "storage": str(tmp_path / "results")}))
    return path


def test_validate_takes_overrides_as_run_does(sweep_file, capsys):
    assert main(["validate", str(sweep_file), "training.steps=5", "seeds=[0,1,2]"]) == 0
    assert capsys.readouterr().out.strip() == f"{sweep_file}: ok (6 trials)"
    assert main(["validate", str(sweep_file), "--set", "seeds=[0]"]) == 0  # the old spelling still works
    assert "ok (2 trials)" in capsys.readouterr().out
    assert main(["validate", str(sweep_file), "training.steps=-5"]) == 2
    assert "training.steps: must be positive" in capsys.readouterr().err


def test_a_list_where_one_value_belongs_points_to_the_grid(sweep_file, capsys):
    assert main(["validate", str(sweep_file), "optimizer.lr=[0.001, 0.0005]"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"raylab: error: {sweep_file}: optimizer.lr: expected float")
    assert "grid:" in error and "optimizer.lr: [0.001, 0.0005]" in error and len(error.splitlines()) == 1
    assert main(["validate", str(sweep_file), "variants.0.cell.nonlinearity=[tanh, relu]"]) == 2
    assert "list them under grid:" in capsys.readouterr().err


def test_dry_run_lists_the_resolved_trials_and_writes_nothing(sweep_file, tmp_path, capsys):
    assert main(["run", str(sweep_file), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "nothing started, nothing written" in lines[0]
    header, *rows = lines[1:]
    resolved = ["cell.recurrent_init", "cell.input_init", "cell.input_bias_init"]  # RNN's defaults, written out in resolved trials
    assert header.split() == ["variant", "task", "hidden_size", "seed", "n_params", "cell.name", "cell.nonlinearity", *resolved, "optimizer.lr", "state"]
    assert [row.split()[:4] for row in rows] == [["RNN", "copy", "8", "0"], ["RNN", "copy", "8", "1"], ["LSTM", "copy", "8", "0"], ["LSTM", "copy", "8", "1"]]
    assert all(row.split()[-1] == "new" for row in rows)
    assert rows[2].split()[4] == "689" and rows[2].split()[5:11] == ["lstm", "-", "-", "-", "-", "0.002"]  # 4 x 8 x (10 + 8 + 1) + 8 x 9 + 9; its own lr
    assert not (tmp_path / "results").exists()


def test_ls_shows_allowed_values_metrics_and_optimizer_options(capsys):
    assert main(["ls", "cells"]) == 0
    cells = capsys.readouterr().out
    assert "t_mask: code|paper = code" in cells and "nonlinearity: tanh|relu|modrelu = modrelu" in cells
    assert main(["ls", "tasks"]) == 0
    tasks = capsys.readouterr().out
    assert "onehot: true|false = true" in tasks and "level: char|word = char" in tasks
    baseline = f"{10 * math.log(8) / 220:.4g}"  # copy, T=200: 10 ln 8 / (T + 20)
    assert f"val/loss     min, primary: picks the best checkpoint, trivial baseline {baseline}" in tasks
    assert "val/acc      max, primary" in tasks  # MNIST selects on accuracy
    assert "name: rmsprop|adam = rmsprop" in tasks and "clip_grad_norm: float|null = null" in tasks


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def test_every_option_of_every_verb_says_what_it_does_and_its_default():
    for verb, sub in subcommand_parsers().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"raylab {verb} {action.dest}: no help text"
            if action.option_strings:
                assert "default" in action.help, f"raylab {verb} {action.option_strings[0]}: help names no default"
    assert "--data-dir" in subcommand_parsers()["resume"].format_help()


def test_resume_checks_its_data_dir_first(tmp_path, capsys):
    assert main(["resume", str(tmp_path), "--data-dir", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"raylab: error: --data-dir: {tmp_path / 'nope'}: no such directory"


def test_table_names_its_statistic_its_baseline_and_keeps_the_sweep_order(tmp_path, capsys):
    rows = []
    for variant, loss in (("RNN", 0.6), ("LSTM", 0.4)):  # the sweep file's order, not the alphabet's
        for seed in (0, 1):
            rows.append({"trial_id": f"{variant}{seed}", "status": "finished", "task": "copy", "variant": variant, "hidden_size": 8, "seed": seed,
                         "config.task.name": "copy", "config.task.delay": 20, "final/val/loss": loss + seed / 100, "best/val/loss": loss - 0.1})
    rows.append({**rows[-1], "trial_id": "LSTM2", "seed": 2, "status": "unfinished"})
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet")

    assert main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "final value (at the last evaluation) of each trial; mean ± standard error over the finished seeds (n)"
    assert out[2] == "| task | variant | hidden_size | val/loss | val/loss baseline | not in mean |"
    assert out[4].startswith("| copy | RNN | 8 | 0.605 ± 0.005 (n=2) | 0.5199 |")  # 10 ln 8 / (20 + 20)
    assert out[5] == "| copy | LSTM | 8 | 0.405 ± 0.005 (n=2) | 0.5199 | 1 unfinished |"
    assert main(["table", str(tmp_path), "--stat", "best"]) == 0
    assert capsys.readouterr().out.startswith("best value (over all evaluations) of each trial")
