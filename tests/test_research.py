"""Research workflow: grid and search over dotted keys, ASHA, `raylab best`, `table --vs`, user cells and tasks.

The Ray tests run on a real embedded Ray with one CPU (trials in a fixed order) and a few steps each.
"""

import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from raylab.cli import main
from raylab.results.compare import welch
from raylab.execution.live import Board, tally
from raylab.planning.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "name": "research",
    "task": {"name": "copy", "delay": 5, "eval_size": 20},
    "variants": [{"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"}, {"cell": {"name": "lstm"}, "label": "LSTM"}],
    "hidden_sizes": [8],
    "seeds": [0],
    "training": {"steps": 20, "eval_every": 5},
}


def write(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "storage": str(tmp_path / "results"), **changes}))
    return path


def test_grid_multiplies_the_sweep_and_applies_cell_options_where_they_exist(tmp_path):
    grid = {"optimizer.lr": [1.0e-3, 3.0e-4], "task.delay": [5, 10], "cell.nonlinearity": ["tanh", "modrelu"]}
    sweep = load_sweep(write(tmp_path, grid=grid))
    assert len(sweep.trials) == 2 * 2 * (2 + 1)  # the LSTM has no nonlinearity: its trials are not repeated
    assert len({t["config_hash"] for t in sweep.trials}) == len(sweep.trials)
    lstm = [t for t in sweep.trials if t["variant"] == "LSTM"]
    assert {(t["optimizer"]["lr"], t["task"]["delay"]) for t in lstm} == {(1e-3, 5), (1e-3, 10), (3e-4, 5), (3e-4, 10)}
    assert {t["cell"]["nonlinearity"] for t in sweep.trials if t["variant"] == "RNN"} == {"tanh", "modrelu"}


BAD = [
    ({"grid": {"cell.gain": [1]}}, "grid.cell.gain: no variant's cell has option 'gain'"),
    ({"grid": {"optimizer.lr": [-1]}}, "grid.optimizer.lr: value -1: "),
    ({"grid": {"task.dely": [3]}}, "grid.task.dely: task 'copy' has no option 'dely'"),
    ({"grid": {"seed": [3]}}, "grid.seed: key must be task.<option> | cell.<option> | optimizer.<option>"),
    ({"grid": {"optimizer.lr": []}}, "grid.optimizer.lr: expected a non-empty list"),
    ({"search": {"space": {"optimizer.lr": {"loguniform": [0, 1]}}}}, "search.space.optimizer.lr.loguniform: bounds must be positive"),
    ({"search": {"space": {"optimizer.lr": {"uniform": [0.1, 0.01]}}}}, "search.space.optimizer.lr.uniform: low must be below high"),
    ({"search": {"space": {"optimizer.alpha": {"uniform": [0.5, 1.5]}}}}, "search.space.optimizer.alpha: value 1.5: optimizer.alpha: must be in [0, 1)"),
    ({"search": {"space": {"cell.nonlinearity": {"choice": ["tanh", "sigmoid"]}}}}, "search.space.cell.nonlinearity: value 'sigmoid'"),
    ({"search": {"space": {"task.delay": {"randint": [1, 3]}}}}, "search.space.task.delay: key must be cell.<option> | optimizer.<option>"),
    ({"search": {"space": {"optimizer.lr": {"normal": [0, 1]}}}}, "search.space.optimizer.lr: expected one of"),
    # A key in both sections once validated: every sample replaced the grid's values, two rows of one configuration.
    ({"grid": {"optimizer.lr": [1.0e-3, 1.0e-2]}, "search": {"space": {"optimizer.lr": {"loguniform": [1.0e-4, 1.0e-2]}}}},
     "search.space.optimizer.lr: also a grid: key"),
    ({"search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "algorithm": "hyperopt"}}, "search.algorithm: 'hyperopt' is not one of random"),
    ({"search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "scheduler": {"grace_period": 50}}}, "search.scheduler.grace_period: 50 steps leaves nothing"),
    # With an epoch budget the grace period was not checked: ASHA past every budget stops nothing, silently.
    ({"task": {"name": "mnist"}, "training": {"epochs": 1, "eval_every": 100},
      "search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "scheduler": {"grace_period": 100000}}},
     "search.scheduler.grace_period: 100000 steps leaves nothing to stop within training.epochs=1"),
    # A typo in the metric once validated and silently turned ASHA off (it skips results without its metric).
    ({"search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "metric": "val/los", "scheduler": {"grace_period": 5}}},
     "search.metric: 'val/los' is not a metric of task 'copy' (valid: train/loss, train/acc, val/loss, val/acc)"),
    ({"task": {"name": "mnist"}, "search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "metric": "test/acc"}},
     "search.metric: 'test/acc' is evaluated once, after training, on the final split"),
    ({"search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "metric": "val/loss", "mode": "max"}},
     "search.mode: max contradicts val/loss, which raylab ranks by min"),
    ({"search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}, "mode": "max"}}, "search.mode: max contradicts val/loss"),
    ({"seeds": [0, 1], "search": {"space": {"optimizer.lr": {"uniform": [0.1, 1]}}}}, "seeds: a search draws its samples from one seed, got 2; train each sample on several with search.seeds_per_sample"),
    ({"variants": [{"cell": {"name": "nosuchpkg.cells:Cell"}}]}, "variants[0].cell.name: no module 'nosuchpkg'"),
    ({"variants": [{"cell": {"name": "raylab.cells:Nope"}}]}, "variants[0].cell.name: module 'raylab.cells' has no 'Nope'"),
    ({"variants": [{"cell": {"name": "torch.nn:Module"}}]}, "variants[0].cell.name: torch.nn:Module has no forward"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_grid_search_and_import_paths_are_one_line_errors(tmp_path, capsys, changes, message):
    path = write(tmp_path, **changes)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == err.splitlines()[0] and f"{path}: {message}" in err, err


def test_a_variant_that_no_searched_key_applies_to_is_said(tmp_path, capsys):
    """An LSTM beside a search over `cell.nonlinearity` trains one configuration num_samples times:
    allowed, but it was silent (its n=1 row looked like a search's result)."""
    path = write(tmp_path, search={"num_samples": 3, "space": {"cell.nonlinearity": {"choice": ["tanh", "relu"]}}})
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "variants[1] (LSTM): no key of search.space applies to its cell, so its 3 samples are one configuration" in err, err
    assert "variants[0]" not in err
    path = write(tmp_path, search={"num_samples": 3, "space": {"optimizer.lr": {"loguniform": [1.0e-4, 1.0e-2]}}})
    assert main(["validate", str(path)]) == 0 and "warning" not in capsys.readouterr().err


def test_user_cell_options_are_checked_against_its_signature(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    good = write(tmp_path, variants=[{"cell": {"name": "mylab.cells:GatedIndRNN", "gain": 0.9}}])
    assert main(["validate", str(good)]) == 0
    for cell, message in (
        ({"name": "mylab.cells:GatedIndRNN", "gian": 0.9}, "variants[0].cell.gian: unknown option for 'mylab.cells:GatedIndRNN' (valid options: gain, gate_bias)"),
        ({"name": "mylab.cells:GatedIndRNN", "gain": "high"}, "variants[0].cell.gain: expected float, got 'high' (str)"),
        ({"name": "mylab.cells:GatedIndRNN", "gain": 2.0}, "variants[0].cell: mylab.cells:GatedIndRNN: gain must be in (0, 1]"),
    ):
        assert main(["validate", str(write(tmp_path, variants=[{"cell": cell}]))]) == 2
        assert message in capsys.readouterr().err


def test_shipped_examples_validate_and_user_modules_outside_the_project_travel_with_a_job(tmp_path, monkeypatch):
    from raylab.spec.userimport import user_modules

    monkeypatch.chdir(ROOT / "examples")  # as the examples say: run from their folder
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, path
    sweep = load_sweep(ROOT / "examples" / "echo-sweep.yaml")
    assert user_modules(sweep.trials, ROOT) == []  # inside the project: uploaded with its working_dir
    assert user_modules(sweep.trials, tmp_path) == [str(ROOT / "examples" / "mylab")]  # elsewhere: py_modules


def test_welch_interval_and_p_value_match_the_textbook_case():
    # a = 1,2,3 and b = 4,5,6: difference -3, standard error sqrt(2/3), Welch df = 4, t(0.975, 4) = 2.776.
    diff, low, high, p = welch(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert diff == -3.0
    assert low == pytest.approx(-3 - 2.7764 * math.sqrt(2 / 3), abs=1e-3) and high == pytest.approx(-3 + 2.7764 * math.sqrt(2 / 3), abs=1e-3)
    assert p == pytest.approx(0.02131, abs=1e-4)
    assert math.isnan(welch(np.array([1.0]), np.array([4.0, 5.0]))[3])  # one seed: no test


def test_live_board_shows_a_bar_per_running_trial_and_the_best_so_far():
    board = Board("val/loss", "min")
    board.update("RNN#1", 50, 100, {"val/loss": 0.5})
    board.update("RNN#2", 100, 100, {"val/loss": 0.25})
    board.end("RNN#2")
    lines = board.lines("trials: 2 total, 1 running, 1 done", rows=40, columns=120)
    assert lines[0].startswith("RNN#1") and "[############............] 50/100  val/loss 0.5" in lines[0]
    assert lines[1:] == ["trials: 2 total, 1 running, 1 done", "best val/loss so far: 0.25 (RNN#2)"]
    board.update("RNN#3", 10, 100, {})
    small = board.lines("tally", rows=3, columns=120)  # a small terminal: as many bars as fit, then a count
    assert small[1:] == ["  ... and 1 more running", "tally", "best val/loss so far: 0.25 (RNN#2)"]


def test_the_tally_counts_the_trials_tune_has_not_made_yet():
    """Tune makes a big sweep's trials 200 at a time; the tally counts the whole sweep from its first line."""
    made = [SimpleNamespace(status=status) for status in ("RUNNING", "RUNNING", "TERMINATED", "PENDING")]
    assert tally(made, expected=1000) == "trials: 1000 total, 997 pending, 2 running, 1 done"
    assert tally(made) == "trials: 4 total, 1 pending, 2 running, 1 done"


@pytest.mark.ray
def test_search_with_asha_then_best_then_table_vs(ray_1_cpu, tmp_path, capsys):
    search = {
        "num_samples": 3,
        "space": {"optimizer.lr": {"loguniform": [1.0e-4, 0.3]}},
        "scheduler": {"name": "asha", "grace_period": 5, "reduction_factor": 2},
    }
    sweep_file = write(tmp_path, search=search)
    assert main(["run", str(sweep_file)]) == 0
    out = capsys.readouterr().out
    sweep_dir = tmp_path / "results" / "research"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 6 and trials["config.optimizer.lr"].nunique() == 6  # sampled values are config columns
    assert set(trials["status"]) == {"finished", "stopped"}, trials[["variant", "status", "steps"]]
    assert (trials.loc[trials["status"] == "stopped", "steps"] < 20).all()
    assert set(trials.loc[trials["status"] == "finished", "variant"]) == {"RNN", "LSTM"}  # ASHA per slot: each keeps a winner
    assert "stopped early by the scheduler" in out and "stopped early |" in out

    assert main(["run", str(sweep_file)]) == 0  # a finished search is not searched again
    assert "2 of 2 trials already finished" in capsys.readouterr().out

    best_file = tmp_path / "best.yaml"
    assert main(["best", str(sweep_dir), "--seeds", "2", "--out", str(best_file)]) == 0
    out = capsys.readouterr().out
    assert "final val/loss" in out and "runner-up" in out and "margin" in out and f"wrote {best_file} (4 trials" in out
    promoted = yaml.safe_load(best_file.read_text())
    assert "search" not in promoted and promoted["seeds"] == [1, 2]
    for variant in promoted["variants"]:
        finished = trials[(trials["variant"] == variant["label"]) & (trials["status"] == "finished")]
        assert variant["optimizer"]["lr"] in set(finished["config.optimizer.lr"])

    assert main(["run", str(best_file)]) == 0
    capsys.readouterr()
    best_dir = tmp_path / "results" / "research-best"
    assert main(["table", str(best_dir), "--vs", "LSTM", "--metric", "val/loss"]) == 0
    table = capsys.readouterr().out
    assert "seeds are the unit" in table and "val/loss Δ vs LSTM [95% CI]" in table and "p (Welch)" in table
    rnn_row = next(line for line in table.splitlines() if line.startswith("| copy | RNN |"))
    assert "[" in rnn_row.split("|")[-3] and "(n=2)" in rnn_row


@pytest.mark.ray
def test_example_user_cell_and_task_run_from_a_directory_outside_the_package(tmp_path):
    work = tmp_path / "myproject"
    shutil.copytree(ROOT / "examples" / "mylab", work / "mylab")
    shutil.copy(ROOT / "examples" / "echo-sweep.yaml", work / "echo-sweep.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # raylab itself; mylab only from the working directory
    command = [sys.executable, "-m", "raylab.cli", "run", "echo-sweep.yaml", "seeds=[0,1]", "training.steps=20",
               "training.eval_every=10", "--num-cpus", "1"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trials = pd.read_parquet(work / "results" / "echo" / "trials.parquet")
    assert set(trials["status"]) == {"finished"} and set(trials["cell"]) == {"mylab.cells:GatedIndRNN", "lstm"}
    assert trials["final/val/acc"].notna().all()
    table = subprocess.run([sys.executable, "-m", "raylab.cli", "table", "results/echo", "--vs", "LSTM"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "| GatedIndRNN |" in table.stdout and "Δ vs LSTM" in table.stdout, table.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_searched_run_killed_then_resumed_completes_its_samples(ray_1_cpu, tmp_path):
    import signal

    from test_faults import SLOW_COPY, raylab, result_rows, wait_for

    search = {"num_samples": 3, "space": {"optimizer.lr": {"loguniform": [1.0e-4, 1.0e-1]}}, "scheduler": {"grace_period": 4, "reduction_factor": 2}}
    sweep_file = write(tmp_path, task=SLOW_COPY, variants=[{"cell": {"name": "lstm"}, "label": "LSTM"}], hidden_sizes=[128],
                       training={"steps": 12, "eval_every": 2}, search=search)
    sweep_dir = tmp_path / "results" / "research"
    driver = raylab("run", str(sweep_file), "--num-cpus", "1")  # one trial at a time
    wait_for(lambda: len(result_rows(sweep_dir)) >= 2, 300, "a second sample to start", driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)

    assert main(["resume", str(sweep_dir), "--num-cpus", "1"]) == 0
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 3 and set(trials["status"]) <= {"finished", "stopped"}, trials[["status", "steps"]]
    assert trials["config.optimizer.lr"].nunique() == 3 and trials["search_base"].nunique() == 1


def result_rows(run_dir: Path) -> dict[str, list[dict]]:
    """Each trial folder's result.json rows, as Tune wrote them."""
    import json

    return {path.parent.name: [json.loads(line) for line in path.read_text().splitlines()] for path in run_dir.glob("*/*/result.json")}


@pytest.mark.ray
def test_asha_stopping_a_trial_at_its_budget_keeps_its_test_split(ray_1_cpu, tmp_path, shared_data, capsys):
    """grace_period * reduction_factor == budget: ASHA's last rung is the budget, where it may stop a trial
    on its last evaluation. The test split travels in that report, so every trial at its budget has it."""
    task = {"name": "mnist", "subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28, "download": False, "data_dir": str(shared_data)}
    search = {"num_samples": 6, "space": {"optimizer.lr": {"loguniform": [1.0e-4, 0.3]}}, "scheduler": {"grace_period": 4, "reduction_factor": 2}}
    sweep_file = write(tmp_path, task=task, variants=[{"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"}],
                       training={"steps": 8, "eval_every": 2}, search=search)
    assert main(["run", str(sweep_file)]) == 0
    sweep_dir = tmp_path / "results" / "research"
    rows = result_rows(sweep_dir)
    stopped_at_budget = [name for name, trial in rows.items() if trial[-1]["step"] == 8 and trial[-1].get("done")]
    assert stopped_at_budget, "ASHA stopped no trial at its last rung: the case is not exercised"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    at_budget = trials[trials["steps"] == 8]
    assert len(at_budget) >= 2 and set(at_budget["status"]) == {"finished"}
    assert at_budget[["final/test/loss", "final/test/acc"]].notna().all().all(), at_budget[["steps", "final/test/loss"]]
    assert set(trials.loc[trials["steps"] < 8, "status"]) == {"stopped"}
    capsys.readouterr()
    assert main(["best", str(sweep_dir), "--seeds", "1", "--metric", "test/acc", "--out", str(tmp_path / "best.yaml")]) == 2
    assert "--metric test/acc: test is a final split of task 'mnist'" in capsys.readouterr().err  # never tune on the test data
    assert not (tmp_path / "best.yaml").exists()


@pytest.mark.ray
def test_a_searched_trial_ended_by_lr_stop_below_is_finished_and_promoted(ray_1_cpu, tmp_path, capsys):
    """The IndRNN protocol's normal end: the lr falls below lr_stop_below before the step budget. Without a
    scheduler nothing stopped it early: it is finished, counts in the mean and can be promoted."""
    optimizer = {"name": "adam", "lr": 1.0e-3, "lr_step_every": 3, "lr_stop_below": 2.0e-6}  # x0.1 at steps 3, 6, 9: ends at 9
    search = {"num_samples": 2, "space": {"optimizer.lr": {"loguniform": [1.0e-3, 1.9e-3]}}}
    sweep_file = write(tmp_path, variants=[{"cell": {"name": "lstm"}, "label": "LSTM"}], optimizer=optimizer, search=search)
    assert main(["run", str(sweep_file)]) == 0
    out = capsys.readouterr().out
    assert out.count("finished (lr fell below lr_stop_below)") == 2 and "stopped early by the scheduler" not in out
    sweep_dir = tmp_path / "results" / "research"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert list(trials["status"]) == ["finished", "finished"] and list(trials["steps"]) == [9, 9]
    assert main(["best", str(sweep_dir), "--seeds", "2", "--out", str(tmp_path / "best.yaml")]) == 0
    out = capsys.readouterr().out
    assert "over finished seeds (minimized); a configuration with a diverged, errored or unfinished seed ranks below" in out
    assert "final val/loss" in out and "(n=1); runner-up" in out


def scored_trials(tmp_path: Path, outcomes: dict[float, list[tuple[str, float | None]]]) -> pd.DataFrame:
    """trials.parquet's columns that `raylab best` reads, for a grid over optimizer.lr x 3 seeds: lr -> (status, final val/loss) per seed."""
    import json

    sweep = load_sweep(write(tmp_path, variants=BASE["variants"][:1], seeds=[0, 1, 2], grid={"optimizer.lr": sorted(outcomes)}))
    rows = []
    for trial in sweep.trials:
        status, value = outcomes[trial["optimizer"]["lr"]][trial["seed"]]
        rows.append({"status": status, "seed": trial["seed"], "trial_json": json.dumps(trial), "final/val/loss": value})
    return pd.DataFrame(rows)


def test_best_ranks_a_configuration_with_a_diverged_seed_below_every_one_that_finished_all_its_seeds(tmp_path):
    from raylab.results import promote

    clean = [("finished", 0.3), ("finished", 0.4), ("finished", 0.5)]  # mean 0.4
    lucky = [("finished", 0.1), ("diverged", None), ("finished", 0.2)]  # mean of the survivors 0.15
    trials = scored_trials(tmp_path, {1.0e-3: clean, 1.0e-2: lucky})
    choice, = promote.choose(trials, "val/loss", "final", "min")
    assert choice.best.trial["optimizer"]["lr"] == 1.0e-3 and choice.best.mean == pytest.approx(0.4)
    line = promote.explain(choice, "val/loss", "final")
    assert "final val/loss 0.4 (n=3); runner-up 0.15 (n=2, 1 of 3 seeds diverged) (ranked below: not every seed finished)" in line, line
    # Among configurations that all lost a seed, the mean decides, and the winner's line says what it lost.
    errored = [("finished", 0.3), ("errored", None), ("finished", 0.5)]
    choice, = promote.choose(scored_trials(tmp_path, {1.0e-3: errored, 1.0e-2: lucky}), "val/loss", "final", "min")
    assert choice.best.trial["optimizer"]["lr"] == 1.0e-2
    assert "final val/loss 0.15 (n=2, 1 of 3 seeds diverged); runner-up 0.4 (n=2, 1 of 3 seeds errored)," in promote.explain(choice, "val/loss", "final")
    # A tie is said as one (it once read as a choice the data made).
    choice, = promote.choose(scored_trials(tmp_path, {1.0e-3: clean, 1.0e-2: [("finished", 0.5), ("finished", 0.4), ("finished", 0.3)]}), "val/loss", "final", "min")
    assert "margin 0; a TIE, the first in the sweep's order is chosen" in promote.explain(choice, "val/loss", "final")


@pytest.mark.ray
def test_best_writes_exactly_what_it_scored_or_nothing(ray_1_cpu, tmp_path, capsys):
    """Winners trained with different training specs (RNN 4 steps, LSTM 6, run as two files into one
    sweep folder) go to one file per task spec and training spec, under a name cut to the length
    limit; every error (arguments, output paths) writes nothing and leaves existing files as they were."""
    import json

    from raylab.results.promote import what_runs
    from raylab.spec.rules import MAX_NAME_LENGTH

    name = "n" * 95  # "-best-4" would make it 102 bytes
    common = {"name": name, "task": [{"name": "copy", "delay": 5, "eval_size": 20}, {"name": "copy", "delay": 6, "eval_size": 20}], "seeds": [0, 1]}
    rnn = write(tmp_path, **common, variants=BASE["variants"][:1], training={"steps": 4, "eval_every": 2})
    lstm = rnn.with_name("lstm.yaml")
    lstm.write_text(yaml.safe_dump({**BASE, "storage": str(tmp_path / "results"), **common, "variants": BASE["variants"][1:], "training": {"steps": 6, "eval_every": 2}}))
    assert main(["run", str(rnn)]) == 0 and main(["run", str(lstm)]) == 0
    sweep_dir = tmp_path / "results" / name
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 8 and set(trials["status"]) == {"finished"}
    capsys.readouterr()

    def refused(*args: str) -> str:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(["best", str(sweep_dir), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == before, err
        return err

    out = tmp_path / "best.yaml"
    assert "--seeds: must be at least 1, got 0" in refused("--seeds", "0", "--out", str(out))
    assert "--metric: no final values of 'val/los' (available: train/acc, train/loss, val/acc, val/loss)" in refused("--seeds", "2", "--out", str(out), "--metric", "val/los")
    assert "--metric: no final values of 'test/loss'" in refused("--seeds", "2", "--out", str(out), "--metric", "test/loss")
    parquet = (sweep_dir / "trials.parquet").read_bytes()
    assert "is inside the experiment" in refused("--seeds", "2", "--out", str(sweep_dir / "trials.parquet"))
    assert (sweep_dir / "trials.parquet").read_bytes() == parquet
    (tmp_path / "mine-2.yaml").write_text("name: my own file\n")
    assert f"--out: {tmp_path / 'mine-2.yaml'} exists and was not written by raylab best" in refused("--seeds", "2", "--out", str(tmp_path / "mine.yaml"))
    assert (tmp_path / "mine-2.yaml").read_text() == "name: my own file\n"
    assert "bytes long, at most" in refused("--seeds", "2", "--out", str(tmp_path / ("x" * 250 + ".yaml")))
    (tmp_path / "blocked-4.yaml").mkdir()
    assert f"--out: {tmp_path / 'blocked-4.yaml'} is a directory" in refused("--seeds", "2", "--out", str(tmp_path / "blocked.yaml"))

    for _ in range(2):  # the second time overwrites the files the first wrote
        assert main(["best", str(sweep_dir), "--seeds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "copy delay=5 RNN h=8: final val/loss" in printed and "copy delay=6 LSTM h=8: final val/loss" in printed
    written = [tmp_path / f"best-{i}.yaml" for i in range(1, 5)]
    assert printed.count("wrote ") == 8 and all(f"wrote {path} (2 trials: 1 configurations x 2 seeds)" in printed for path in written)
    scored = {(what_runs(t), json.dumps(t["task"], sort_keys=True), t["variant"], t["hidden_size"])
              for t in map(json.loads, trials["trial_json"])}
    names = set()
    for path in written:
        promoted = load_sweep(path)
        names.add(promoted.spec.name)
        assert len(promoted.spec.name.encode()) <= MAX_NAME_LENGTH and promoted.spec.name.endswith(f"-best-{path.stem[-1]}")
        assert promoted.spec.seeds == [2, 3]  # the smallest seeds the experiment did not use
        for trial in promoted.trials:
            assert (what_runs(trial), json.dumps(trial["task"], sort_keys=True), trial["variant"], trial["hidden_size"]) in scored
    assert len(names) == 4


# User cells that build fine but whose forward would fail in every trial after Ray starts (issue 18, item 12).
FORWARD_CELLS = '''
import torch
from torch import nn


class Base(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)


class OneArgument(Base):
    def forward(self, inputs):
        return self.rnn(inputs)


class BareTensor(Base):
    def forward(self, inputs, state=None):
        return self.rnn(inputs, state)[0]


class TimeMajor(Base):
    def forward(self, inputs, state=None):
        outputs, state = self.rnn(inputs, state)
        return outputs.transpose(0, 1), state


class WrongWidth(Base):
    def forward(self, inputs, state=None):
        outputs, state = self.rnn(inputs, state)
        return outputs[..., :-1], state


class AllStatesAsState(Base):
    def forward(self, inputs, state=None):
        outputs, _ = self.rnn(inputs, state)
        return outputs, outputs  # (B, T, H): nn.RNN cannot take it back


class VectorPenalty(Base):
    def forward(self, inputs, state=None):
        return self.rnn(inputs, state)

    def penalty(self):
        return self.rnn.weight_hh_l0.pow(2).sum(0)


class ReadsAValue(Base):
    """Valid, but `.item()` has no meta kernel: the check runs it on the CPU instead of refusing it."""

    def forward(self, inputs, state=None):
        outputs, state = self.rnn(inputs, state)
        scale = float(inputs.abs().max().item()) + 1.0
        return outputs / scale, state


class WideReadoutTask:
    def __init__(self) -> None:
        from raylab.tasks.copying import CopyTask

        self.inner = CopyTask(delay=5, eval_size=10)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def readout(self, hidden_size):
        return nn.Linear(hidden_size, self.inner.output_size + 1)
'''

FORWARD_BAD = [
    ("OneArgument", "variants[0].cell.name: forwardcells:OneArgument: forward must take (inputs, state), as the loop calls it: too many positional arguments"),
    ("BareTensor", "variants[0].cell.name: forwardcells:BareTensor: forward(inputs, None) must return (outputs, state), got a tensor of shape (2, 3, 8)"),
    ("TimeMajor", "variants[0].cell.name: forwardcells:TimeMajor: forward(inputs, None) on inputs of shape (2, 3, 10) (batch, steps, input_size) returned outputs of shape (3, 2, 8), expected (2, 3, 8)"),
    ("WrongWidth", "variants[0].cell.name: forwardcells:WrongWidth: forward(inputs, None) on inputs of shape (2, 3, 10) (batch, steps, input_size) returned outputs of shape (2, 3, 7), expected (2, 3, 8) (batch, steps, hidden_size)"),
    ("AllStatesAsState", "variants[0].cell.name: forwardcells:AllStatesAsState: forward(inputs, state) fails on the state its own forward returned"),
    ("VectorPenalty", "variants[0].cell.name: forwardcells:VectorPenalty: penalty() must return a scalar tensor (it is added to the loss), got a tensor of shape (8,)"),
]


@pytest.fixture
def forward_cells(tmp_path, monkeypatch):
    (tmp_path / "forwardcells.py").write_text(FORWARD_CELLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "forwardcells", raising=False)
    yield
    sys.modules.pop("forwardcells", None)


@pytest.mark.parametrize(("cell", "message"), FORWARD_BAD, ids=[cell for cell, _ in FORWARD_BAD])
def test_a_user_cell_whose_forward_would_fail_is_refused_before_ray_starts(tmp_path, capsys, forward_cells, cell, message):
    path = write(tmp_path, variants=[{"cell": {"name": f"forwardcells:{cell}"}}], hidden_sizes=[16, 8])  # checked at the smallest
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == err.splitlines()[0] and f"{path}: {message}" in err, err


def test_a_user_cell_or_task_that_runs_validates_and_a_wrong_readout_names_the_task(tmp_path, capsys, forward_cells):
    assert main(["validate", str(write(tmp_path, variants=[{"cell": {"name": "forwardcells:ReadsAValue"}}]))]) == 0
    path = write(tmp_path, task={"name": "forwardcells:WideReadoutTask"}, variants=[{"cell": {"name": "lstm"}}])
    assert main(["validate", str(path)]) == 2
    assert f"{path}: task.name: forwardcells:WideReadoutTask: its readout maps hidden states (2, 3, 8) to (2, 3, 10), expected (2, 3, 9) (output_size 9)" in capsys.readouterr().err


def test_a_large_user_cell_is_checked_on_the_meta_device(tmp_path, capsys, forward_cells):
    big = [4000]  # 16M recurrent weights: above the CPU check's limit, so shapes only
    path = write(tmp_path, variants=[{"cell": {"name": "forwardcells:TimeMajor"}}], hidden_sizes=big)
    assert main(["validate", str(path)]) == 2
    assert "forwardcells:TimeMajor: forward(inputs, None) on inputs of shape (2, 3, 10) (batch, steps, input_size) returned outputs of shape (3, 2, 4000)" in capsys.readouterr().err
    path = write(tmp_path, variants=[{"cell": {"name": "forwardcells:ReadsAValue"}}], hidden_sizes=big)
    assert main(["validate", str(path)]) == 0  # `.item()` has no meta kernel: said, not refused
    assert "raylab: warning: variants[0].cell.name: forwardcells:ReadsAValue: forward not checked before Ray starts" in capsys.readouterr().err


def test_a_forward_that_fails_only_on_the_cpu_is_a_warning_for_a_gpu_sweep(tmp_path, capsys, forward_cells):
    (tmp_path / "gpuonly.py").write_text(FORWARD_CELLS.split("class OneArgument")[0] + '''
class CudaOnly(Base):
    def forward(self, inputs, state=None):
        if not inputs.is_cuda:
            raise RuntimeError("this kernel runs on CUDA tensors only")
        return self.rnn(inputs, state)
''')
    cpu = write(tmp_path, variants=[{"cell": {"name": "gpuonly:CudaOnly"}}])
    assert main(["validate", str(cpu)]) == 2
    assert "gpuonly:CudaOnly: forward(inputs, None) fails on inputs of shape (2, 3, 10) (batch, steps, input_size): RuntimeError: this kernel runs on CUDA tensors only" in capsys.readouterr().err
    assert main(["validate", str(cpu), "resources.gpu=1"]) == 0  # validation is not where GPUs are counted
    assert "on the CPU; not refused, since the trials run on a GPU" in capsys.readouterr().err
    sys.modules.pop("gpuonly", None)


@pytest.mark.ray
def test_the_search_section_is_part_of_what_identifies_a_searched_trial(ray_1_cpu, tmp_path, capsys):
    search = {"num_samples": 2, "space": {"optimizer.lr": {"loguniform": [1.0e-3, 1.0e-1]}}}
    sweep_file = write(tmp_path, variants=[{"cell": {"name": "lstm"}, "label": "LSTM"}], search=search)
    sweep_dir = tmp_path / "results" / "research"
    assert main(["run", str(sweep_file)]) == 0
    first = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(first) == 2 and set(first["status"]) == {"finished"}
    capsys.readouterr()

    # The same file again: the search finished, and no note about code that computed it (it was this code).
    assert main(["run", str(sweep_file)]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 trials already finished" in out and "computed by other code" not in out, out

    # More samples: a new search of 3, said in one line; it once reported "already finished" and ran nothing.
    assert main(["run", str(sweep_file), "search.num_samples=3"]) == 0
    out = capsys.readouterr().out
    assert "already finished" not in out, out
    assert "1 configuration(s) were searched before" in out and "(num_samples 2 -> 3): a new search starts" in out, out
    grown = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(grown) == 5 and grown["search_base"].nunique() == 2 and set(grown["status"]) == {"finished"}
    assert sorted(grown["config.search.num_samples"]) == [2, 2, 3, 3, 3]
    # `raylab best` never pools the two searches' equal draws: that would count seed 0 twice.
    assert main(["best", str(sweep_dir), "--seeds", "1", "--out", str(tmp_path / "best.yaml")]) == 0
    assert "(n=1)" in (chosen := capsys.readouterr().out) and "(n=2)" not in chosen, chosen
    # The new search draws the old one's samples first (same seed), yet they are rows of their own.
    assert set(first["config.optimizer.lr"]) < set(grown["config.optimizer.lr"])

    # Another space, and a scheduler: new searches too.
    other_space = write(tmp_path, variants=[{"cell": {"name": "lstm"}, "label": "LSTM"}],
                        search={**search, "space": {"optimizer.lr": {"uniform": [0.01, 0.02]}}})
    assert main(["run", str(other_space)]) == 0
    assert "(num_samples, space changed)" in capsys.readouterr().out  # against the newest earlier search, of 3
    assert main(["run", str(other_space), "search.scheduler={grace_period: 5}"]) == 0
    assert "(metric, mode, scheduler changed)" in capsys.readouterr().out
    assert pd.read_parquet(sweep_dir / "trials.parquet")["search_base"].nunique() == 4

    # Without the search section the trial is a plain one, never run before: it runs.
    plain = write(tmp_path, variants=[{"cell": {"name": "lstm"}, "label": "LSTM"}])
    assert main(["run", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "already finished" not in out and "without a search: section they are plain trials" in out, out
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    unsearched = trials[trials["search_base"].isna()]
    assert len(unsearched) == 1 and unsearched["status"].tolist() == ["finished"] and unsearched["steps"].tolist() == [20]
