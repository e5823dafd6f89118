"""Mean ± standard error over seeds, against hand-computed values; failures are counted."""

import math

import pandas as pd
import pytest

from raylab.results.aggregate import format_value, mean_sem, render, summarize


def trials_frame() -> pd.DataFrame:
    rows = [
        # LSTM: three finished seeds and one diverged
        {"task": "copy", "variant": "LSTM", "hidden_size": 32, "seed": 0, "status": "finished", "final/val/acc": 0.90, "final/val/loss": 0.10},
        {"task": "copy", "variant": "LSTM", "hidden_size": 32, "seed": 1, "status": "finished", "final/val/acc": 0.95, "final/val/loss": 0.20},
        {"task": "copy", "variant": "LSTM", "hidden_size": 32, "seed": 2, "status": "finished", "final/val/acc": 1.00, "final/val/loss": 0.30},
        {"task": "copy", "variant": "LSTM", "hidden_size": 32, "seed": 3, "status": "diverged", "final/val/acc": None, "final/val/loss": float("nan")},
        # RNN: one finished, one errored
        {"task": "copy", "variant": "RNN", "hidden_size": 32, "seed": 0, "status": "finished", "final/val/acc": 0.5, "final/val/loss": 1.0},
        {"task": "copy", "variant": "RNN", "hidden_size": 32, "seed": 1, "status": "errored", "final/val/acc": 0.7, "final/val/loss": 0.8},
    ]
    return pd.DataFrame(rows)


def test_mean_sem_uses_the_sample_standard_deviation():
    mean, sem, n = mean_sem([0.90, 0.95, 1.00])
    assert n == 3
    assert mean == pytest.approx(0.95)
    assert sem == pytest.approx(0.05 / math.sqrt(3))  # std(ddof=1) = 0.05
    assert mean_sem([2.0]) [2] == 1 and math.isnan(mean_sem([2.0])[1])
    assert mean_sem([]) [2] == 0
    assert mean_sem([1.0, float("nan"), 3.0])[:2] == pytest.approx((2.0, 1.0))


def test_summary_counts_only_finished_seeds_and_shows_the_failures():
    summary = summarize(trials_frame(), metrics=["val/acc", "val/loss"]).set_index("variant")
    lstm, rnn = summary.loc["LSTM"], summary.loc["RNN"]
    assert lstm["val/acc.mean"] == pytest.approx(0.95) and lstm["val/acc.n"] == 3
    assert lstm["val/loss.sem"] == pytest.approx(0.1 / math.sqrt(3))
    assert lstm["diverged"] == 1 and lstm["errored"] == 0
    assert rnn["val/acc.mean"] == pytest.approx(0.5) and rnn["val/acc.n"] == 1  # the errored seed is not averaged in
    assert rnn["errored"] == 1


def test_formats():
    assert format_value(0.982, 0.003, 5) == "0.982 ± 0.003 (n=5)"
    assert format_value(0.09452, 0.00041, 3) == "0.0945 ± 0.0004 (n=3)"
    assert format_value(105.23, 2.5, 4) == "105.2 ± 2.5 (n=4)"
    assert format_value(0.5, float("nan"), 1) == "0.500 (n=1)"
    assert format_value(float("nan"), float("nan"), 0) == "—"
    summary = summarize(trials_frame(), metrics=["val/acc"])
    markdown = render(summary, ["task", "variant", "hidden_size"], ["val/acc"], "markdown")
    assert markdown.splitlines()[0] == "| task | variant | hidden_size | val/acc | not in mean |"
    assert "| copy | LSTM | 32 | 0.95 ± 0.03 (n=3) | 1 diverged |" in markdown
    assert "| copy | RNN | 32 | 0.500 (n=1) | 1 errored |" in markdown
    latex = render(summary, ["task", "variant", "hidden_size"], ["val/acc"], "latex")
    assert r"0.95 $\pm$ 0.03 (n=3)" in latex and latex.startswith(r"\begin{tabular}")
    csv = render(summary, ["task", "variant", "hidden_size"], ["val/acc"], "csv").splitlines()
    assert csv[0].startswith("task,variant,hidden_size,val/acc.mean,val/acc.sem,val/acc.n")


def test_unknown_group_or_metric_is_a_one_line_error():
    from raylab.results.collect import ResultsError

    with pytest.raises(ResultsError, match="--by: no column 'colour'"):
        summarize(trials_frame(), by=["colour"])
    with pytest.raises(ResultsError, match=r"--metric: no final values of 'val/bpc' \(available: val/acc, val/loss\)"):
        summarize(trials_frame(), metrics=["val/bpc"])
