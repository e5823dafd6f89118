"""Paper-style figures (raylab/results/plots.py) from small real Parquet files, and the tasks' baselines."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raylab.cli import main
from raylab.results.plots import band, curves_figure, robust_limits
from raylab.results.collect import CURVES_FILE, TRIALS_FILE
from raylab.tasks import AddingTask, CopyTask, MNISTTask

STEPS = [100, 200, 300, 400]


def write_experiment(folder, task: dict, curves: dict[tuple[str, int], list[float]], metric: str = "val/loss") -> str:
    """trials.parquet and curves.parquet as `raylab collect` writes them: one trial per (variant, seed),
    `curves[(variant, seed)]` its values at STEPS."""
    folder.mkdir(parents=True)
    trials, points = [], []
    for (variant, seed), values in curves.items():
        trial_id = f"{variant}-s{seed}"
        trials.append({"trial_id": trial_id, "status": "finished", "task": task["name"], "variant": variant, "hidden_size": 128, "seed": seed,
                       **{f"config.task.{k}": v for k, v in task.items()}})
        points += [{"trial_id": trial_id, "step": step, "metric": metric, "value": value} for step, value in zip(STEPS, values)]
    pd.DataFrame(trials).to_parquet(folder / TRIALS_FILE)
    pd.DataFrame(points).to_parquet(folder / CURVES_FILE)
    return str(folder)


COPY_CURVES = {
    ("expRNN", 0): [0.03, 0.01, 0.003, 0.001],
    ("expRNN", 1): [0.04, 0.02, 0.004, 0.002],
    ("LSTM", 0): [0.29, 0.2, 0.1, 0.095],
    ("LSTM", 1): [0.3, 0.19, 0.1, 0.094],
    ("RNN", 0): [0.4, 0.2, 0.15, 0.12],
    ("RNN", 1): [0.5, 771.0, 0.2, 0.1],  # the unstable seed the issue reports
}


@pytest.fixture
def copy_experiment(tmp_path):
    return write_experiment(tmp_path / "copy", {"name": "copy", "delay": 200}, COPY_CURVES)


def dashed_levels(axes) -> list[float]:
    return [line.get_ydata()[0] for line in axes.get_lines() if line.get_linestyle() == "--"]


def test_tasks_state_their_trivial_baselines():
    assert CopyTask(delay=200).baselines["loss"] == pytest.approx(10 * math.log(8) / 220) == pytest.approx(0.094520, abs=1e-6)
    assert CopyTask(delay=200).baselines["acc"] == 1 / 8
    assert AddingTask(length=500).baselines == {"loss": pytest.approx(1 / 6)}
    assert MNISTTask().baselines == {}


def test_one_diverging_seed_does_not_flatten_the_other_curves(copy_experiment):
    figure = curves_figure([copy_experiment], ["val/loss"])
    axes = figure.axes[0]
    low, high = axes.get_ylim()
    assert high < 1.0  # the RNN's mean of 386 at step 200 is left off the axis ...
    assert low < 0.002  # ... while expRNN's 0.001 stays on it
    assert "off the axis: max 386" in axes.get_title()  # ... and the panel says so


def test_the_median_and_interquartile_band_ignore_one_exploding_seed():
    points = pd.DataFrame({"step": [200, 200, 200], "value": [0.2, 0.25, 771.0]})
    stats = band(points, "step", "median")
    assert stats.center.tolist() == [0.25] and stats.low[0] == pytest.approx(0.225) and stats.n == 3
    mean = band(points, "step", "mean")
    assert mean.center[0] == pytest.approx((0.2 + 0.25 + 771.0) / 3)
    assert mean.high[0] - mean.center[0] == pytest.approx(np.std([0.2, 0.25, 771.0], ddof=1) / math.sqrt(3))


def test_robust_limits_in_decades_on_a_log_axis():
    low, high = robust_limits([1e-4, 1e-3, 1e-2, 0.1, 0.0945], log=True)
    assert low < 1e-4 and 0.1 < high < 0.2  # everything kept, padded by 5% of the range in decades
    assert robust_limits([0.1, 0.1, 0.1, 0.1, 1e6], log=False)[1] < 1.0  # flat curves and one far outlier
    assert robust_limits([math.nan, -1.0], log=True) is None  # nothing positive to show on a log axis


def test_baselines_of_two_experiments_and_log_axis_in_one_figure(copy_experiment, tmp_path):
    adding = write_experiment(tmp_path / "adding", {"name": "adding", "length": 500},
                              {("IndRNN", 0): [0.16, 0.05, 0.001, 0.0005], ("RNN", 0): [0.17, 0.168, 0.167, 0.166]})
    figure = curves_figure([copy_experiment, adding], ["val/loss"], logy=True)
    axes = figure.axes[0]
    assert axes.get_yscale() == "log"
    assert sorted(dashed_levels(axes)) == [pytest.approx(0.0945198, abs=1e-6), pytest.approx(1 / 6)]
    labels = axes.get_legend_handles_labels()[1]
    assert "copy: copy expRNN 128 (n=2)" in labels and "adding: adding IndRNN 128 (n=1)" in labels
    assert not dashed_levels(curves_figure([adding], ["val/loss"], baseline=False).axes[0])


def test_several_metrics_are_panels_and_epochs_come_from_the_task(tmp_path):
    curves = {("LSTM", 0): [0.5, 0.6, 0.7, 0.8], ("LSTM", 1): [0.4, 0.6, 0.8, 0.9]}
    mnist = write_experiment(tmp_path / "mnist", {"name": "mnist", "batch_size": 100, "val_size": 10000}, curves, "val/acc")
    extra = pd.read_parquet(f"{mnist}/{CURVES_FILE}").assign(metric="val/loss")
    pd.concat([pd.read_parquet(f"{mnist}/{CURVES_FILE}"), extra]).to_parquet(f"{mnist}/{CURVES_FILE}")
    figure = curves_figure([mnist], ["val/acc", "val/loss"], x="epoch")
    assert [a.get_ylabel() for a in figure.axes] == ["val/acc", "val/loss"]
    assert figure.axes[0].get_xlabel() == "epoch"
    assert figure.axes[0].get_lines()[0].get_xdata().tolist() == [s / 500 for s in STEPS]  # 50,000 images / 100


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_the_file_type_follows_the_extension(copy_experiment, tmp_path, suffix, magic, capsys):
    out = tmp_path / f"figure{suffix}"
    assert main(["plot", copy_experiment, "--metric", "val/loss", "--logy", "--average", "median", "--out", str(out)]) == 0
    assert out.read_bytes()[: len(magic)] == magic


@pytest.mark.parametrize("arguments, message", [
    (["--out", "figure.jpg"], "one of .png, .svg, .pdf"),
    (["--x", "epoch"], "CopyTask draws fresh data every step and has no epochs"),
    (["--metric", "val/nope"], "no curve of 'val/nope'"),
])
def test_bad_plot_requests_are_one_line_and_exit_2(copy_experiment, tmp_path, capsys, arguments, message):
    assert main(["plot", copy_experiment, *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.ray
def test_a_sweep_files_plot_section_draws_its_figures_at_the_end_of_the_run(ray_2_cpus, tmp_path, capsys):
    import yaml

    sweep = {
        "name": "drawn",
        "task": {"name": "copy", "delay": 5, "eval_size": 20},
        "variants": [{"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [8],
        "seeds": [0, 1],
        "training": {"steps": 20, "eval_every": 10},
        "storage": f"file://{tmp_path}/results",  # a bucket's path: figures are drawn locally, then uploaded
        "plot": [{"out": "loss.svg", "logy": True}, {"out": "both.pdf", "metrics": ["val/loss", "val/acc"], "average": "median"}],
        "report": {"out": "summary.html"},  # written here too, then uploaded (docs/report.md)
    }
    sweep_file = tmp_path / "drawn.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(sweep_file)]) == 0
    sweep_dir = tmp_path / "results" / "drawn"
    assert (sweep_dir / "loss.svg").read_bytes()[:5] == b"<?xml" and (sweep_dir / "both.pdf").read_bytes()[:4] == b"%PDF"
    out = capsys.readouterr().out
    assert f"figure: file://{sweep_dir / 'loss.svg'}" in out and f"report: file://{sweep_dir / 'summary.html'}" in out
    assert "Plotly.newPlot" in (sweep_dir / "summary.html").read_text()


@pytest.mark.parametrize("plot, message", [
    ({"out": "loss.jpg"}, "plot[0].out: a file name ending in .png, .svg or .pdf"),
    ({"out": "../loss.png"}, "plot[0].out: a file name"),
    ({"out": "loss.png", "x": "time"}, "plot[0].x: 'time' is not one of step|epoch"),
    ({"out": "loss.png", "metrics": []}, "plot[0].metrics: must list at least one metric"),
])
def test_bad_plot_sections_are_refused_before_anything_runs(tmp_path, capsys, plot, message):
    demo = Path(__file__).resolve().parents[1] / "jobs" / "copy-demo.yaml"
    assert main(["validate", str(demo), "--set", f"plot=[{plot}]"]) == 2
    assert message in capsys.readouterr().err


def test_two_figures_of_one_file_are_refused(capsys):
    """The second would silently replace the first at the end of the run."""
    demo = Path(__file__).resolve().parents[1] / "jobs" / "copy-demo.yaml"
    assert main(["validate", str(demo), "--set", "plot=[{out: x.png}, {out: x.png, logy: true}]"]) == 2
    assert "plot[1].out: x.png is also plot[0]'s file; the second figure would replace the first" in capsys.readouterr().err
