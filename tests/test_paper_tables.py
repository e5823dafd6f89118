"""Tables laid out like the seeds' (rows = models, columns = budget x T) with the published numbers."""

import math
from pathlib import Path

import pandas as pd
import pytest

from raylab.cli import main
from raylab.results.published import experiment_name, inferred_layout, load_published, paper_table, se_difference, shipped_tables
from raylab.planning.sweep import load_sweep

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def trials(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"status": "finished", **row} for row in rows])


def test_se_difference_by_hand():
    # ours 1.41, 1.43, 1.45: mean 1.43, sd 0.02, se 0.02 / sqrt 3 = 0.011547; paper 1.40 ± 0.003
    assert se_difference(1.43, 0.02 / math.sqrt(3), 1.40, 0.003) == pytest.approx(0.03 / math.sqrt(0.02**2 / 3 + 0.003**2))
    assert se_difference(1.43, 0.02 / math.sqrt(3), 1.40, 0.003) == pytest.approx(2.5146, abs=1e-4)
    assert se_difference(1.5, 0.5, 1.0, None) == 1.0  # no published error: ours alone
    assert math.isnan(se_difference(1.5, math.nan, 1.0, None))  # one seed: no standard error at all


NNRNN = trials(
    [{"experiment": "nnrnn-ptb-150-params", "variant": "nnRNN", "config.task.bptt": 150, "final/test/bpc": v, "final/test/acc": a} for v, a in ((1.41, 0.70), (1.43, 0.70), (1.45, 0.70))]
    + [{"experiment": "nnrnn-ptb-300-n1024", "variant": "RNN", "config.task.bptt": 300, "final/test/bpc": 2.9, "final/test/acc": 0.4}]
    + [{"experiment": "nnrnn-ptb-300-n1024", "variant": "LSTM", "config.task.bptt": 300, "final/test/bpc": 1.5, "final/test/acc": 0.6}]
    + [{"experiment": "nnrnn-ptb-150-params", "variant": "nnRNN", "config.task.bptt": 150, "final/test/bpc": 9.9, "final/test/acc": 0.1, "status": "diverged"}]
)


def test_paper_layout_puts_models_in_rows_and_budget_x_t_in_columns():
    table = paper_table(NNRNN, load_published("nnrnn-ptb-bpc")).set_index("model")
    assert list(table.index) == ["RNN", "RNN-orth", "EURNN", "expRNN", "nnRNN", "LSTM"]  # published rows, then ours
    assert table.loc["nnRNN", "~1.32M params, T=150"] == "1.43 ± 0.01 (n=3)"  # the diverged seed is left out; decimals from the se
    assert table.loc["nnRNN", "~1.32M params, T=150 (paper)"] == "1.4 ± 0.003"
    assert table.loc["nnRNN", "~1.32M params, T=150 Δ/SE"] == "+2.5"
    assert table.loc["nnRNN", "N=1024, T=150"] == "—" and table.loc["nnRNN", "N=1024, T=150 Δ/SE"] == "n/a"
    assert table.loc["RNN", "N=1024, T=300"] == "2.900 (n=1)" and table.loc["RNN", "N=1024, T=300 Δ/SE"] == "n/a"
    assert table.loc["LSTM", "N=1024, T=300 (paper)"] == "—"


def test_accuracy_is_compared_in_percent():
    table = paper_table(NNRNN, load_published("nnrnn-ptb-acc")).set_index("model")
    assert table.loc["nnRNN", "~1.32M params, T=150"].startswith("70.000")
    assert table.loc["nnRNN", "~1.32M params, T=150 Δ/SE"] == "+110.0"  # (70 - 69.89) / 0.001, our se is 0
    assert table.loc["expRNN", "N=1024, T=150 (paper)"] == "—"  # empty in the README


def test_error_percent_from_accuracy_and_task_columns():
    mnist = trials([{"experiment": "indrnn-mnist", "variant": "IndRNN (6 layers)", "config.task.permute": p, "final/test/acc": a} for p, a in ((False, 0.99), (False, 0.98), (True, 0.96))])
    table = paper_table(mnist, load_published("indrnn-mnist")).set_index("model")
    assert table.loc["IndRNN (6 layers)", "sMNIST"] == "1.5 ± 0.5 (n=2)"  # 100 - 100 acc
    assert table.loc["IndRNN (6 layers)", "sMNIST Δ/SE"] == "+1.1"  # (1.5 - 0.96) / 0.5: the PyTorch log, no published se
    assert table.loc["IndRNN (6 layers)", "psMNIST"].startswith("4.0")
    assert table.loc["LSTM", "psMNIST (paper)"] == "12"


def test_inferred_layout_without_published_numbers():
    layout = inferred_layout(NNRNN, "test/bpc")
    assert [c.label for c in layout.columns] == ["experiment=nnrnn-ptb-150-params, bptt=150", "experiment=nnrnn-ptb-300-n1024, bptt=300"]
    table = paper_table(NNRNN, layout, compare=False).set_index("model")
    assert list(table.columns) == [c.label for c in layout.columns]
    assert table.loc["LSTM", "experiment=nnrnn-ptb-300-n1024, bptt=300"] == "1.500 (n=1)"


def test_experiment_names_come_from_the_sweep_folder():
    assert experiment_name("results/nnrnn-ptb-150-params/") == "nnrnn-ptb-150-params"
    assert experiment_name("results/nnrnn-ptb-150-params/run-20261125-1200") == "nnrnn-ptb-150-params"


def test_table_command_compares_several_experiments(tmp_path, capsys):
    paths = []
    for name, group in NNRNN.groupby("experiment"):
        (tmp_path / name).mkdir()
        group.drop(columns="experiment").to_parquet(tmp_path / name / "trials.parquet")
        paths.append(str(tmp_path / name))
    assert main(["table", *paths, "--compare", "nnrnn-ptb-bpc"]) == 0
    out = capsys.readouterr().out
    assert "test BPC" in out and "| nnRNN | 1.43 ± 0.01 (n=3) | 1.4 ± 0.003 | +2.5 |" in out
    assert main(["table", *paths, "--layout", "paper", "--metric", "test/acc", "--format", "csv"]) == 0
    assert "model," in capsys.readouterr().out
    assert main(["table", *paths]) == 2  # several experiments need the paper layout
    assert main(["table", paths[0], "--compare", "no-such-table"]) == 2
    assert "shipped: " in capsys.readouterr().err


@pytest.mark.parametrize("name", shipped_tables())
def test_shipped_tables_match_the_job_files(name):
    """Every experiment a table selects is a job, and its rows select variants of those jobs.

    Variants the table lacks (the supplement's LSTM in the nnRNN PTB jobs) become extra rows.
    """
    table = load_published(name)
    experiments = {c.where.get("experiment") for c in table.columns} - {None}
    jobs = {p.stem: p for p in JOBS.glob("*.yaml")}
    assert experiments <= set(jobs), f"{name}: no job for {experiments - set(jobs)}"
    if not experiments:  # tables of one job name it in their opening comment
        experiments = {stem for stem in jobs if f"jobs/{stem}.yaml" in (Path(__file__).resolve().parents[1] / "raylab" / "published" / f"{name}.yaml").read_text()}
    variants = {t["variant"] for stem in experiments for t in load_sweep(jobs[stem], smoke=True).trials}
    selected = {row.where.get("variant") for row in table.rows}
    assert experiments and variants & selected, f"{name}: no row selects a variant of {sorted(experiments)}"


@pytest.mark.ray
def test_tables_of_a_sweep_over_two_tasks(ray_1_cpu, tmp_path, capsys):
    """Copy (two delays) and adding in one sweep: an option of one task is NaN for the other, so
    group keys hold NaN. Every view gives each task its own rows or columns, with numbers."""
    import yaml

    sweep = {
        "name": "two-tasks",
        "task": [
            {"name": "copy", "delay": 5, "eval_size": 8, "batch_size": 4},
            {"name": "copy", "delay": 10, "eval_size": 8, "batch_size": 4},
            {"name": "adding", "length": 10, "eval_size": 8, "batch_size": 4},
        ],
        "variants": [{"cell": {"name": "rnn"}, "label": "RNN"}, {"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [4],
        "seeds": [0, 1],
        "training": {"steps": 2, "eval_every": 2},
        "storage": str(tmp_path / "results"),
    }
    sweep_file = tmp_path / "two-tasks.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(sweep_file), "--num-cpus", "1"]) == 0
    capsys.readouterr()
    results = str(tmp_path / "results" / "two-tasks")

    assert main(["table", results, "--metric", "val/loss"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| task | config.task.delay | variant | hidden_size | val/loss |"), rows[0]  # no column per other task's option
    assert any(row.startswith("| copy | 5 | RNN | 4 | ") for row in rows) and any(row.startswith("| adding |  | LSTM | 4 | ") for row in rows), rows  # 5, not 5.0; blank, not nan
    assert all("(n=2)" in row for row in rows[1:]) and len(rows) == 1 + 6  # the header, then 3 tasks x 2 variants

    assert main(["table", results, "--vs", "LSTM", "--metric", "val/loss"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    for row in rows[1:]:
        cells = row.split(" | ")
        assert "(reference)" in row if "| LSTM |" in row else cells[-2].startswith(("+", "−")) and "[" in cells[-2], row

    assert main(["table", results, "--vs", "NOPE"]) == 2  # one line on stderr, no caption above it on stdout
    refused = capsys.readouterr()
    assert refused.out == "" and "--vs: no variant 'NOPE'" in refused.err, refused

    assert main(["table", results, "--vs", "LSTM", "--format", "csv"]) == 0
    vs = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert set(vs.loc[vs["variant"] == "RNN", "val/loss.vs"]) == {"row"} and vs["val/loss.diff"].notna().sum() == 3

    assert main(["table", results, "--layout", "paper", "--metric", "val/loss"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| model | task=adding | task=copy, delay=5 | task=copy, delay=10 |", rows[0]
    assert len(rows) == 3 and all(row.count("(n=2)") == 3 for row in rows[1:]), rows


def test_a_paper_table_that_matches_nothing_is_refused_not_a_table_of_dashes():
    from raylab.results.collect import ResultsError

    ours = trials([{"variant": "LSTM", "experiment": "elsewhere", "final/test/bpc": 1.5}])
    with pytest.raises(ResultsError, match="no finished trial matches any row x column"):
        paper_table(ours, load_published("nnrnn-ptb-bpc"), compare=True)
