"""A tiny sweep on real embedded Ray, through Parquet, to the table and the plot."""

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raylab.cli import main

pytestmark = pytest.mark.ray

SWEEP = {
    "name": "e2e",
    "task": {"name": "copy", "delay": 5, "eval_size": 50},
    "variants": [
        {"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"},
        {"cell": {"name": "lstm"}, "label": "LSTM"},
        # RMSprop moves every weight by about lr per step: at 1e4 the unbounded modReLU RNN overflows
        # within two steps (ReLU units can die instead, tanh saturates).
        {"cell": {"name": "rnn", "nonlinearity": "modrelu"}, "label": "RNN-diverges", "optimizer": {"lr": 1.0e4}},
    ],
    "hidden_sizes": [8],
    "seeds": [0, 1],
    "training": {"steps": 20, "eval_every": 10},
    "max_failures": 0,
}


def test_sweep_runs_to_parquet_and_table(ray_2_cpus, tmp_path, capsys):
    sweep_file = tmp_path / "e2e.yaml"
    sweep_file.write_text(yaml.safe_dump({**SWEEP, "storage": str(tmp_path / "results")}))

    assert main(["run", str(sweep_file)]) == 0  # a diverged trial is a result, not a failure
    out = capsys.readouterr().out
    sweep_dir = tmp_path / "results" / "e2e"

    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 6
    assert trials.groupby("variant")["status"].apply(set).to_dict() == {
        "RNN": {"finished"},
        "LSTM": {"finished"},
        "RNN-diverges": {"diverged"},
    }
    finished = trials[trials["status"] == "finished"]
    assert (finished["steps"] == 20).all() and finished["final/val/loss"].notna().all()
    for column in ("config_hash", "seed", "n_params", "wall_time_s", "git_commit", "version.torch", "version.ray", "config.optimizer.lr", "config.cell.name"):
        assert column in trials.columns, column
    assert trials["version.torch"].notna().all()

    for trial_dir in (sweep_dir).glob("run-*/*-h8-s*"):
        assert len(list(trial_dir.glob("checkpoint_*"))) <= 1  # keep_checkpoints: 1 by default, the newest
        assert (trial_dir / "result.json").is_file() and not list(trial_dir.glob("events.out.tfevents.*"))  # no loggers by default

    curves = pd.read_parquet(sweep_dir / "curves.parquet")
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    val_steps = curves[(curves["metric"] == "val/loss") & curves["trial_id"].isin(finished["trial_id"])]
    assert val_steps.groupby("trial_id")["step"].apply(sorted).map(tuple).unique().tolist() == [(10, 20)]

    # The table printed at the end of the run: mean ± SE (n) over the two seeds, failures counted.
    assert "| copy | LSTM | 8 |" in out and "(n=2)" in out and "±" in out
    # Rows in the sweep file's order; the copy task's trivial baseline 10 ln 8 / (T + 20) at T=5 beside val/loss.
    assert out.index("| copy | RNN | 8 |") < out.index("| copy | LSTM | 8 |") < out.index("| copy | RNN-diverges | 8 |")
    assert "| val/acc | val/acc baseline | val/loss | val/loss baseline | not in mean |" in out and "final value (at the last evaluation)" in out
    assert "| copy | RNN-diverges | 8 | — | 0.125 | — | 0.8318 | 2 diverged |" in out

    assert main(["table", str(sweep_dir), "--metric", "val/acc", "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0] == "task,variant,hidden_size,val/acc.mean,val/acc.sem,val/acc.n,val/acc.baseline,diverged,errored,unfinished,pending"

    assert main(["plot", str(sweep_dir), "--metric", "val/loss", "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(sweep_dir), "--metric", "val/nope"]) == 2

    # The Python route of docs/python.md, run as written on these results.
    import matplotlib

    matplotlib.use("Agg")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", docs, flags=re.S):
        exec(block.replace('"results/smoke"', repr(str(sweep_dir))), namespace)
    assert len(namespace["trials"]) == 6 and set(namespace["per_seed"].columns) == {"RNN", "LSTM"}
    assert namespace["difference"].notna().sum() == 2


def test_running_a_grown_sweep_skips_what_already_finished(ray_2_cpus, tmp_path, capsys):
    # Storage given as a URI, the way a bucket is (s3://, gs://): the same pyarrow.fs code path.
    small = {**SWEEP, "variants": SWEEP["variants"][:1], "seeds": [0], "storage": f"file://{tmp_path}/results"}
    sweep_file = tmp_path / "grow.yaml"
    sweep_file.write_text(yaml.safe_dump(small))
    assert main(["run", str(sweep_file)]) == 0
    sweep_dir = tmp_path / "results" / "e2e"
    first = pd.read_parquet(sweep_dir / "trials.parquet")

    assert main(["run", str(sweep_file), "seeds=[0,1]"]) == 0  # one more seed
    out = capsys.readouterr().out
    assert "1 of 2 trials already finished" in out
    grown = pd.read_parquet(sweep_dir / "trials.parquet")
    assert sorted(grown["seed"]) == [0, 1] and set(grown["status"]) == {"finished"}
    assert grown.set_index("seed").loc[0, "trial_id"] == first["trial_id"].iloc[0]  # seed 0 was not re-run
    assert grown["run"].nunique() == 2

    assert main(["run", str(sweep_file), "seeds=[0,1]"]) == 0  # nothing left to do: no Ray trial at all
    assert "2 of 2 trials already finished" in capsys.readouterr().out
    assert len(pd.read_parquet(sweep_dir / "trials.parquet")) == 2
    assert len(list(sweep_dir.glob("run-*"))) == 2
    assert not list(sweep_dir.rglob("*.tmp*"))  # uploads are moved into place

    assert main(["table", f"file://{sweep_dir}", "--collect", "--metric", "val/loss"]) == 0
    assert "| copy | RNN | 8 |" in capsys.readouterr().out
    assert main(["resume", f"file://{sweep_dir}"]) == 0
    assert "nothing to resume" in capsys.readouterr().out


def test_missing_gpus_are_an_error_locally_and_a_warning_on_an_attached_cluster(ray_2_cpus, tmp_path, capsys):
    from raylab.execution import runner
    from raylab.spec.config import ConfigError
    from raylab.planning.sweep import load_sweep

    sweep_file = tmp_path / "gpu.yaml"
    sweep_file.write_text(yaml.safe_dump({**SWEEP, "resources": {"cpu": 1, "gpu": 0.5}}))
    sweep = load_sweep(sweep_file)
    with pytest.raises(ConfigError, match=r"gpu.yaml: resources.gpu: 0.5 GPU per trial requested, but the Ray cluster has 0 GPUs"):
        runner.check_cluster_resources(sweep, attached=False)
    runner.check_cluster_resources(sweep, attached=True)  # an autoscaler may still add GPU nodes
    assert "warning: resources.gpu" in capsys.readouterr().err
