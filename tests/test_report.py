"""`raylab report` (raylab/results/report.py): one self-contained HTML file, checked as data and in a
real browser (Debian's chromium driven by Playwright, tests/browser.py) on reports of real sweeps."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from browser import OpenReport, browser, chromium_path
from raylab.cli import main
from raylab.results.aggregate import display_table, summarize, table_groups
from raylab.results.collect import CURVES_FILE, TRIALS_FILE

pytest.importorskip("plotly")
DEMO = Path(__file__).resolve().parents[1] / "jobs" / "copy-demo.yaml"
STEPS = [100, 200, 300, 400]


def write_experiment(folder: Path, curves: dict[tuple[str, int], list[float]], statuses: dict | None = None) -> str:
    """trials.parquet and curves.parquet as `raylab collect` writes them (copy task, delay 200)."""
    folder.mkdir(parents=True)
    trials, points = [], []
    for (variant, seed), values in curves.items():
        trial_id = f"{variant}-s{seed}"
        status = (statuses or {}).get((variant, seed), "finished")
        trials.append({"trial_id": trial_id, "run": "run-1", "status": status, "task": "copy", "variant": variant, "hidden_size": 128, "seed": seed,
                       "config.task.name": "copy", "config.task.delay": 200, "config.cell.name": variant.lower(), "config.optimizer.lr": 0.001,
                       "config.training.steps": 400, "final/val/loss": values[-1] if status == "finished" else None})
        points += [{"trial_id": trial_id, "step": step, "metric": "val/loss", "value": value} for step, value in zip(STEPS, values)]
    pd.DataFrame(trials).to_parquet(folder / TRIALS_FILE)
    pd.DataFrame(points).to_parquet(folder / CURVES_FILE)
    return str(folder)


CURVES = {
    ("expRNN", 0): [0.03, 0.01, 0.003, 0.001],
    ("expRNN", 1): [0.04, 0.02, 0.004, 0.002],
    ("LSTM", 0): [0.29, 0.2, 0.1, 0.095],
    ("LSTM", 1): [0.3, 0.19, 0.1, 0.094],
    ("LSTM", 2): [0.3, 0.2, 0.2, 0.2],
}


def figure_specs(text: str) -> list[dict]:
    return [json.loads(spec) for spec in re.findall(r'<script type="application/json" class="figure-spec"[^>]*>(.*?)</script>', text, re.S)]


def table_cells(text: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table class="sortable" id="{table_id}">(.*?)</table>', text, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def test_a_report_is_one_offline_file_whose_table_is_raylab_tables(tmp_path, capsys):
    folder = write_experiment(tmp_path / "copy", CURVES, statuses={("LSTM", 2): "unfinished"})
    out = tmp_path / "r.html"
    assert main(["report", folder, "--out", str(out)]) == 0
    assert re.search(rf"wrote {re.escape(str(out))} \(\d\.\d MB, self-contained", capsys.readouterr().out)
    text = out.read_text()
    # Offline: no script, style or link fetched from elsewhere; plotly.js is inline.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text) and "Plotly.newPlot" in text and "plotly.js v" in text
    # The table's cells are `raylab table`'s: the same functions, the same numbers.
    trials = pd.read_parquet(Path(folder) / TRIALS_FILE)
    by = table_groups(trials)
    expected = display_table(summarize(trials, by, ["val/loss"]), by, ["val/loss"])
    cells = table_cells(text, "summary-table")
    assert [row[1:] for row in cells] == expected.astype(str).values.tolist()
    assert cells[1][0] == "copy LSTM 128" and "1 unfinished" in cells[1]
    # An unfinished trial is said at the top: a report of an interrupted sweep never looks done.
    assert "1 of 5 trials are not in the means (1 unfinished)" in re.sub(r"<[^>]+>", "", text) and "raylab resume" in text
    (curves,) = figure_specs(text)
    kinds = [(trace["meta"]["kind"], trace["meta"].get("configuration")) for trace in curves["data"]]
    # Per configuration: each finished seed, the band, the mean; the baseline 10 ln 8 / 220 dashed.
    assert kinds == [("seed", "copy expRNN 128")] * 2 + [("band", "copy expRNN 128"), ("mean", "copy expRNN 128")] + \
        [("seed", "copy LSTM 128")] * 2 + [("band", "copy LSTM 128"), ("mean", "copy LSTM 128"), ("baseline", None)]
    assert curves["layout"]["yaxis"]["type"] == "log"  # 0.3 down to 0.001: more than 1.5 decades
    assert curves["data"][-1]["y"][0] == pytest.approx(10 * 0.0945, rel=0.1) or curves["data"][-1]["name"].startswith("baseline 0.0945")
    # What differs between rows: the cell, and nothing they share.
    diff = table_cells(text, "diff-table")
    assert diff == [["copy expRNN 128", "exprnn"], ["copy LSTM 128", "lstm"]]


def test_hostile_labels_are_text_not_markup(tmp_path):
    label = "</script><script>alert(1)</script><b>x"
    curves = {(label, 0): [0.1, 0.1, 0.1, 0.1], ("NaN Infinity", 0): [0.2, float("nan"), 0.2, 0.2]}  # a gap in a finished curve
    folder = write_experiment(tmp_path / "copy", curves)
    out = tmp_path / "r.html"
    assert main(["report", folder, "--out", str(out), "--no-logy"]) == 0
    text = out.read_text()
    assert text.count("<script") == text.count("</script>") == 2 + len(figure_specs(text))  # plotly.js, the page's script, the specs
    assert "<b>x" not in text and "&lt;b&gt;x" in text
    (spec,) = figure_specs(text)
    assert spec["layout"]["yaxis"]["type"] == "linear"
    seeds = {t["meta"]["configuration"]: t["y"] for t in spec["data"] if t["meta"]["kind"] == "seed"}
    assert seeds == {f"copy {label} 128": [0.1] * 4, "copy NaN Infinity 128": [0.2, None, 0.2, 0.2]}  # labels intact, NaN a gap


@pytest.mark.parametrize("arguments, message", [
    (["--out", "r.png"], "--out r.png: a report is one .html file"),
    (["--out", "missing/r.html"], "--out missing/r.html: folder missing does not exist"),
    (["--vs", "GRU"], "--vs: no variant 'GRU' (variants: LSTM, expRNN)"),
    (["--metric", "val/acc"], "--metric: no final values of 'val/acc' (available: val/loss)"),
    (["--compare", "nope"], "--compare: nope: no such file or shipped table"),
    (["--x", "epoch"], "--x epoch: the report's experiments: CopyTask draws fresh data every step and has no epochs"),
])
def test_bad_report_requests_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, arguments, message):
    folder = write_experiment(tmp_path / "copy", CURVES)
    monkeypatch.chdir(tmp_path)
    assert main(["report", folder, *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (Path(folder) / "report.html").exists()


def test_a_report_that_fails_keeps_the_previous_file(tmp_path, capsys):
    folder = write_experiment(tmp_path / "copy", CURVES)
    out = Path(folder) / "report.html"
    assert main(["report", folder]) == 0 and out.is_file()  # default: beside the experiment's data
    before = out.read_bytes()
    assert main(["report", folder, "--metric", "val/acc"]) == 2
    assert out.read_bytes() == before and not list(Path(folder).glob(".*.tmp"))


@pytest.mark.parametrize("report, message", [
    ({"out": "report.png"}, "report.out: a file name ending in .html, got 'report.png'"),
    ({"out": "../r.html"}, "report.out: a file name ending in .html"),
    ({"vs": "GRU"}, "report.vs: no variant 'GRU' (variants: expRNN, nnRNN, LSTM)"),
    ({"compare": "nope"}, "report.compare: nope: no such file or shipped table"),
    ({"logy": "maybe"}, "report.logy"),
    ({"stat": "mean"}, "report.stat: 'mean' is not one of final|best"),
    ({"vs": "LSTM", "search": True}, "report.vs: in a search every sample is its own row"),
])
def test_bad_report_sections_are_refused_before_anything_runs(capsys, report, message):
    report = dict(report)
    search = ["--set", "seeds=[0]", "--set", "search={space: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}}"] if report.pop("search", False) else []
    assert main(["validate", str(DEMO), "--set", f"report={json.dumps(report)}", *search]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- real sweeps, a real browser


def sweep_file(tmp_path: Path, name: str, **changes) -> Path:
    sweep = {
        "name": name,
        "task": {"name": "copy", "delay": 5, "eval_size": 20},
        "variants": [{"cell": {"name": "rnn"}, "label": "RNN"}, {"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [8],
        "seeds": [0, 1],
        "training": {"steps": 20, "eval_every": 5},
        "storage": str(tmp_path / "results"),
        **changes,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory, ray_1_cpu):
    """A grid sweep whose `report:` section writes its report at the end of `raylab run`, and a search
    with ASHA reported by `raylab report` (one CPU: Tune's order, so ASHA's decisions repeat)."""
    tmp_path = tmp_path_factory.mktemp("reports")
    grid = sweep_file(tmp_path, "grid", report={"vs": "LSTM"})
    assert main(["run", str(grid)]) == 0
    search = sweep_file(tmp_path, "search", variants=[{"cell": {"name": "rnn"}, "label": "RNN"}], seeds=[0], search={
        "num_samples": 4, "space": {"optimizer.lr": {"loguniform": [1.0e-4, 0.3]}, "optimizer.alpha": {"uniform": [0.5, 0.99]}},
        "scheduler": {"name": "asha", "grace_period": 5, "reduction_factor": 2},
    })
    assert main(["run", str(search)]) == 0
    search_dir = tmp_path / "results" / "search"
    assert main(["report", str(search_dir)]) == 0
    return tmp_path / "results" / "grid", search_dir


@pytest.fixture(scope="module")
def chromium():
    if chromium_path() is None:
        if os.environ.get("RAYLAB_BROWSER_REQUIRED"):
            pytest.fail("no chromium: .ci/run installs Debian's chromium package for the report's browser test")
        pytest.skip("no chromium here (apt install chromium); CI installs it and requires this test")
    pytest.importorskip("playwright")
    with browser() as launched:
        yield launched


TRACES = "Array.from(document.querySelectorAll('.plot')).map(d => ({data: d.data.map(t => ({kind: t.meta && t.meta.kind, configuration: t.meta && t.meta.configuration, visible: t.visible === undefined ? true : t.visible})), drawn: d.querySelectorAll('.scatterlayer .trace').length}))"


@pytest.mark.ray
def test_a_sweeps_report_renders_in_chromium_with_its_rows_curves_and_legend(reports, chromium, capsys):
    grid_dir, _ = reports
    report = grid_dir / "report.html"
    trials = pd.read_parquet(grid_dir / TRIALS_FILE)
    opened = OpenReport(chromium, report)
    try:
        assert opened.errors == []
        assert all(url.startswith(("file://", "data:")) for url in opened.requests), opened.requests  # offline
        rows = opened.evaluate("Array.from(document.querySelectorAll('#summary-table tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))")
        by = table_groups(trials)
        expected = display_table(summarize(trials, by, ["val/acc", "val/loss"]), by, ["val/acc", "val/loss"])
        assert [row[1:] for row in rows] == expected.astype(str).values.tolist()
        assert [row[0] for row in rows] == ["copy RNN 8", "copy LSTM 8"]
        figures = opened.evaluate(TRACES)
        forest, curves = figures[:2], figures[2:]  # report: {vs: LSTM}: one difference figure per metric, then the curves
        assert [f["data"][0]["kind"] for f in forest] == ["difference", "difference"]
        assert len(curves) == 2  # val/acc, val/loss
        for figure in curves:
            kinds = [(t["kind"], t["configuration"]) for t in figure["data"]]
            for label in ("copy RNN 8", "copy LSTM 8"):
                assert kinds.count(("seed", label)) == 2 and kinds.count(("band", label)) == 1 and kinds.count(("mean", label)) == 1
            assert figure["drawn"] == len(figure["data"])  # every trace reached the SVG
        # Hiding a curve from its legend entry hides its seeds and band too.
        opened.page.locator("#figure-3 .legend .traces").first.click()
        # Plotly waits out its double-click delay before it acts on a single click.
        opened.page.wait_for_function("document.getElementById('figure-3').data.some(t => t.visible === 'legendonly')", timeout=10_000)
        after = opened.evaluate(TRACES)[3]
        hidden = {t["configuration"] for t in after["data"] if t["visible"] == "legendonly"}
        assert hidden == {"copy RNN 8"} and after["drawn"] == len(after["data"]) - 4
        # Sorting by a metric orders rows by the mean.
        opened.page.locator("#summary-table th", has_text="val/loss").first.click()
        means = opened.evaluate("Array.from(document.querySelectorAll('#summary-table tbody tr')).map(r => parseFloat(r.cells[6].dataset.sort))")
        assert means == sorted(means)
        assert "raylab report" in opened.page.inner_text("body") and "Provenance" in opened.page.inner_text("body")
        opened.page.screenshot(path=str(grid_dir / "report.png"), full_page=True)
        assert (grid_dir / "report.png").stat().st_size > 10_000
    finally:
        opened.close()
    assert opened.errors == []


@pytest.mark.ray
def test_a_search_report_shows_each_sample_against_each_parameter_with_stopped_ones_marked(reports, chromium):
    _, search_dir = reports
    trials = pd.read_parquet(search_dir / TRIALS_FILE)
    assert set(trials["status"]) == {"finished", "stopped"}
    opened = OpenReport(chromium, search_dir / "report.html")
    try:
        assert opened.errors == []
        figures = opened.evaluate("Array.from(document.querySelectorAll('#search .plot')).map(d => d.data.map(t => ({stopped: t.meta.stopped, n: t.x.length, symbol: t.marker.symbol, x: t.x})))")
        assert len(figures) == 2  # optimizer.lr and optimizer.alpha
        for figure in figures:
            assert {t["stopped"]: t["n"] for t in figure} == {False: int((trials["status"] == "finished").sum()), True: int((trials["status"] == "stopped").sum())}
            assert {t["stopped"]: t["symbol"] for t in figure} == {False: "circle", True: "x"}
        drawn = sorted(sorted(figure[0]["x"] + figure[1]["x"]) for figure in figures)
        assert drawn == sorted([sorted(trials["config.optimizer.lr"]), sorted(trials["config.optimizer.alpha"])])  # each sample, at its own value
    finally:
        opened.close()


@pytest.mark.ray
def test_resume_writes_the_report_again(reports, capsys):
    grid_dir, _ = reports
    (grid_dir / "report.html").unlink()
    assert main(["resume", str(grid_dir)]) == 0  # nothing to resume: collect, table, figures and report
    assert f"report: {grid_dir / 'report.html'}" in capsys.readouterr().out and (grid_dir / "report.html").is_file()


def test_several_experiments_share_the_table_and_each_figure(tmp_path, capsys, monkeypatch):
    first = write_experiment(tmp_path / "a" / "copy-a", CURVES)
    second = write_experiment(tmp_path / "b" / "copy-b", {("LSTM", 0): [0.3, 0.2, 0.1, 0.09]})
    monkeypatch.chdir(tmp_path)
    assert main(["report", first, second]) == 0  # default --out for several: here
    text = (tmp_path / "report.html").read_text()
    assert [row[0] for row in table_cells(text, "summary-table")] == ["copy-a copy expRNN 128", "copy-a copy LSTM 128", "copy-b copy LSTM 128"]
    means = [t["meta"]["configuration"] for t in figure_specs(text)[0]["data"] if t["meta"]["kind"] == "mean"]
    assert means == ["copy-a copy expRNN 128", "copy-a copy LSTM 128", "copy-b copy LSTM 128"]
    assert main(["report", first, second, "--vs", "LSTM"]) == 2  # whose LSTM? one experiment only
    assert "--vs: compares the rows of one experiment" in capsys.readouterr().err


def test_best_keeps_the_report_and_drops_a_vs_that_names_a_variant_the_promoted_file_lacks():
    from raylab.results.promote import Choice, Scored, promoted_sweeps

    def choice(task: dict, variant: str) -> Choice:
        trial = {"cell": {"name": variant.lower()}, "optimizer": {"name": "rmsprop", "lr": 0.001}, "training": {"steps": 20}}
        return Choice(task, variant, 8, Scored(trial, 0.1, 1, 1), None, 0)

    base = {"name": "s", "report": {"vs": "LSTM", "stat": "best"}}
    copy, adding = {"name": "copy", "delay": 5}, {"name": "adding", "length": 20}
    sweeps = promoted_sweeps([choice(copy, "RNN"), choice(copy, "LSTM"), choice(adding, "RNN")], base, [1, 2])
    assert [s["report"] for s in sweeps] == [{"vs": "LSTM", "stat": "best"}, {"stat": "best"}]
