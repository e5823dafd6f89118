"""Parquet writing: de-duplicated curves, one row per resolved trial, atomic replacement."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylab.results import collect as results
from raylab.results.collect import curve_points, curves_table, keep_one_per_config, summarize_curve, write_parquet_atomic
from raylab.results.rowtable import arrow_table


def test_rereported_steps_keep_the_last_value():
    # A restore re-reports the steps between the last checkpoint and the failure.
    rows = [
        {"step": 10, "val/loss": 0.9, "training_iteration": 1},
        {"step": 20, "val/loss": 0.8, "training_iteration": 2},
        {"step": 30, "val/loss": 0.7, "training_iteration": 3},
        {"step": 30, "val/loss": 0.65, "training_iteration": 3},  # after the restore
        {"step": 40, "val/loss": 0.6, "val/acc": 0.5, "training_iteration": 4},
    ]
    points = curve_points("t1", rows)
    assert points[("t1", 30, "val/loss")] == 0.65
    assert sorted(k[1] for k in points if k[2] == "val/loss") == [10, 20, 30, 40]
    assert not any(k[2] == "training_iteration" for k in points)
    table = curves_table(points)
    assert table.num_rows == 5 and table.schema.names == ["trial_id", "step", "metric", "value"]


def test_final_and_best_follow_the_metric_direction():
    points = curve_points("t", [{"step": 1, "val/loss": 0.5, "val/acc": 0.7}, {"step": 2, "val/loss": 0.6, "val/acc": 0.6}])
    summary = summarize_curve(points)
    assert summary["final/val/loss"] == 0.6 and summary["best/val/loss"] == 0.5
    assert summary["final/val/acc"] == 0.6 and summary["best/val/acc"] == 0.7


def test_each_resolved_trial_appears_once_across_runs():
    rows = [
        ({"config_hash": "a", "status": "errored", "run": "run-1"}, {}),
        ({"config_hash": "b", "status": "finished", "run": "run-1"}, {}),
        ({"config_hash": "a", "status": "finished", "run": "run-2"}, {}),  # rerun succeeded
        ({"config_hash": "b", "status": "unfinished", "run": "run-2"}, {}),  # never beats a finished one
    ]
    kept = {row["config_hash"]: row["run"] for row, _ in keep_one_per_config(rows)}
    assert kept == {"a": "run-2", "b": "run-1"}


def test_mixed_type_columns_become_text_and_numbers_stay_numbers():
    table = arrow_table([{"x": 1, "y": "a", "z": 0.5}, {"x": 2.5, "y": 3, "z": None}])
    assert table.column("x").type == pa.float64()
    assert table.column("y").to_pylist() == ["a", "3"]
    assert table.column("z").to_pylist() == [0.5, None]


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "trials.parquet"
    write_parquet_atomic(pa.table({"a": [1, 2]}), target)
    assert pq.read_table(target).column("a").to_pylist() == [1, 2]

    def broken_write(table, where, **kwargs):
        open(where, "wb").write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(results.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pa.table({"a": [3]}), target)
    assert pq.read_table(target).column("a").to_pylist() == [1, 2]  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["trials.parquet"]  # no temporary left behind


def test_collect_on_a_folder_without_experiments_is_a_clear_error(tmp_path):
    with pytest.raises(results.ResultsError, match="no raylab experiment here"):
        results.collect(tmp_path)
    with pytest.raises(results.ResultsError, match="no such experiment directory"):
        results.collect(tmp_path / "missing")


def test_a_figure_beside_the_runs_does_not_make_the_parquet_stale_but_a_result_does(tmp_path):
    import os

    from raylab.results.collect import TRIALS_FILE, newer_than_trials_file

    run = tmp_path / "run-1" / "trial-0"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{}")
    (tmp_path / TRIALS_FILE).write_bytes(b"")
    past = (tmp_path / TRIALS_FILE).stat().st_mtime - 10
    for path in (run / "result.json", run, run.parent):
        os.utime(path, (past, past))
    assert newer_than_trials_file(tmp_path) is None
    (tmp_path / "val_loss.png").write_bytes(b"png")  # a `plot:` figure, drawn after the collect
    assert newer_than_trials_file(tmp_path) is None
    os.utime(run / "result.json", (past + 20, past + 20))
    assert newer_than_trials_file(tmp_path) == str(run / "result.json")


def test_status_comes_from_why_the_loop_ended_a_trial_and_old_trials_keep_the_old_rule():
    from raylab.training.ending import terminated_status

    budget = {"steps": 20}
    row = {"step": 9, "report_format": 2}
    assert terminated_status([{**row, "end": "lr_stop"}], searched=True, training=budget) == "finished"  # below budget, ended by its lr
    assert terminated_status([{"step": 20, "report_format": 2, "end": "budget"}], searched=False, training=budget) == "finished"
    assert terminated_status([row], searched=True, training=budget) == "stopped"  # no end: ended from outside the loop
    assert terminated_status([{"step": 20, "report_format": 2}], searched=False, training=budget) == "stopped"  # at its budget too
    assert terminated_status([{**row, "diverged": 1, "end": "diverged"}], searched=False, training=budget) == "diverged"
    # Written before the loop recorded `end`: searched and below budget was stopped, anything else finished.
    assert terminated_status([{"step": 9}], searched=True, training=budget) == "stopped"
    assert terminated_status([{"step": 9}], searched=False, training=budget) == "finished"
    assert terminated_status([{"step": 20}], searched=True, training=budget) == "finished"


def read_only(folder):
    """A context in which `folder` cannot be written, even by root (chattr +i), or skip."""
    import contextlib
    import os
    import subprocess

    @contextlib.contextmanager
    def locked():
        if os.geteuid() != 0:
            folder.chmod(0o555)
            try:
                yield
            finally:
                folder.chmod(0o755)
            return
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root, and no chattr +i here to make a read-only folder")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)

    return locked()


@pytest.mark.ray
def test_every_reader_recollects_a_stale_pair_and_best_promotes_from_fresh_results(ray_1_cpu, tmp_path, capsys):
    """Issue 18 item 4: a grown grid whose second run ended before its collect (a killed driver
    leaves the first run's Parquet pair beside the second run's results). `raylab best` read that
    stale trials.parquet and promoted from one learning rate of two."""
    import shutil

    import pandas as pd
    import yaml

    import raylab
    from raylab.cli import main

    sweep = {
        "name": "grown", "task": {"name": "copy", "delay": 5, "eval_size": 8, "batch_size": 4},
        "variants": [{"cell": {"name": "rnn"}, "label": "RNN"}], "hidden_sizes": [4], "seeds": [0],
        "training": {"steps": 4, "eval_every": 2}, "grid": {"optimizer.lr": [1.0e-3]}, "storage": str(tmp_path / "results"),
    }
    sweep_file = tmp_path / "grown.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(sweep_file), "--num-cpus", "1"]) == 0
    folder = tmp_path / "results" / "grown"
    saved = tmp_path / "first-collect"
    saved.mkdir()
    for name in ("trials.parquet", "curves.parquet"):
        shutil.copy2(folder / name, saved / name)  # copy2 keeps the time it was written
    sweep["grid"]["optimizer.lr"] = [1.0e-3, 3.0e-1]
    sweep_file.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(sweep_file), "--num-cpus", "1"]) == 0
    fresh = pd.read_parquet(folder / "trials.parquet")
    assert len(fresh) == 2
    capsys.readouterr()

    for name in ("trials.parquet", "curves.parquet"):
        shutil.copy2(saved / name, folder / name)  # as if the second run's collect never happened
    best_file = tmp_path / "best.yaml"
    assert main(["best", str(folder), "--seeds", "1", "--out", str(best_file)]) == 0
    captured = capsys.readouterr()
    assert "changed after the last collect; collecting again" in captured.err
    assert "runner-up" in captured.out, captured.out  # both learning rates competed
    winner = fresh.loc[fresh["final/val/loss"].idxmin(), "config.optimizer.lr"]
    assert yaml.safe_load(best_file.read_text())["variants"][0]["optimizer"]["lr"] == winner

    # A trials file beside curves of another collect is stale too; so is a missing curves file.
    shutil.copy2(saved / "curves.parquet", folder / "curves.parquet")
    assert len(raylab.load_trials(str(folder))) == 2
    assert "are not from one collect; collecting again" in capsys.readouterr().err
    (folder / "curves.parquet").unlink()
    assert set(raylab.load_curves(str(folder))["trial_id"]) == set(fresh["trial_id"])
    assert "curves.parquet is missing; collecting again" in capsys.readouterr().err
    assert main(["table", str(folder)]) == 0 and main(["plot", str(folder), "--out", str(tmp_path / "c.png")]) == 0
    assert "collecting again" not in capsys.readouterr().err  # fresh now: read as it is

    # Where collecting again is impossible, one line refuses instead of serving stale numbers.
    shutil.copy2(saved / "trials.parquet", folder / "trials.parquet")
    with read_only(folder):
        assert main(["table", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "collecting again" in err[0] and err[1].startswith("raylab: error: ") and "results are stale" in err[1], err
    assert pd.read_parquet(folder / "trials.parquet").shape[0] == 1  # nothing written, nothing lost


def test_a_curve_holds_the_last_attempt_only(tmp_path):
    """Issue 18 item 15: an attempt started afresh in the same folder (Tune appends to result.json)
    that ends sooner than the earlier one left that one's later steps in the curve and `final/*`."""
    import json

    from raylab.results.collect import read_results, summarize_curve

    first = [{"step": s, "training_iteration": i, "iterations_since_restore": i, "val/loss": 3.0 - 0.1 * s} for i, s in enumerate((2, 4, 6), 1)]
    restored = [{"step": 6, "training_iteration": 3, "iterations_since_restore": 1, "val/loss": 2.5}]  # from the step-4 checkpoint
    afresh = [
        {"step": 2, "training_iteration": 1, "iterations_since_restore": 1, "val/loss": 2.9},
        {"step": 3, "training_iteration": 2, "iterations_since_restore": 2, "train/loss": float("nan"), "diverged": 1},
    ]
    (tmp_path / "result.json").write_text("\n".join(json.dumps(row) for row in first + restored + afresh) + "\n")
    rows = read_results(tmp_path)
    assert [(row["step"], row["training_iteration"]) for row in rows] == [(2, 1), (3, 2)]
    points = curve_points("t", rows)
    assert sorted({step for _, step, _ in points}) == [2, 3] and summarize_curve(points)["final/val/loss"] == 2.9

    (tmp_path / "result.json").write_text("\n".join(json.dumps(row) for row in first + restored) + "\n")
    points = curve_points("t", read_results(tmp_path))  # a restore continues its attempt: one curve, steps re-reported win
    assert points[("t", 6, "val/loss")] == 2.5 and sorted({step for _, step, _ in points}) == [2, 4, 6]


def test_reports_that_result_json_lost_come_back_from_the_checkpoint_of_the_same_chain(tmp_path):
    """A driver killed while uploading the experiment state can leave a result.json older than the
    checkpoint its trial restores from (raylab/training/reports.py): the report between is lost from
    result.json, and the checkpoint's copy of the reports fills it in. Only from the same chain."""
    import json

    from raylab.results.collect import read_results
    from raylab.training.reports import write_reports

    def report(step: int, iteration: int, since: int, lineage: str) -> dict:
        return {"step": step, "training_iteration": iteration, "iterations_since_restore": since, "val/loss": 1.0 / step, "lineage": lineage}

    chain = [report(10 * i, i, i, "a") for i in range(1, 4)]  # steps 10, 20, 30, each with a checkpoint
    # result.json kept steps 10 and 20; the trial restored from the step-30 checkpoint went on at 40.
    (tmp_path / "result.json").write_text("\n".join(json.dumps(row) for row in [*chain[:2], report(40, 4, 1, "a")]) + "\n")
    (tmp_path / "checkpoint_000002").mkdir()
    write_reports(tmp_path / "checkpoint_000002", "a", chain)
    assert [row["step"] for row in read_results(tmp_path)] == [10, 20, 30, 40]
    points = curve_points("t", read_results(tmp_path))
    assert points[("t", 30, "val/loss")] == 1.0 / 30

    # A chain started afresh (no checkpoint) shares nothing with the old chain's checkpoint or rows.
    afresh = [report(10, 1, 1, "b"), report(20, 2, 2, "b")]
    (tmp_path / "result.json").write_text("\n".join(json.dumps(row) for row in [*chain[:2], report(40, 4, 1, "a"), *afresh]) + "\n")
    assert [(row["step"], row["lineage"]) for row in read_results(tmp_path)] == [(10, "b"), (20, "b")]


def test_a_lost_report_is_filled_when_a_restore_reported_its_step_again_with_fewer_metrics(tmp_path):
    """A trial restored from its last checkpoint can report that step again with only some metrics
    (a final-split report); the lost report's training metrics at that step still come back."""
    import json

    from raylab.results.collect import read_results
    from raylab.training.reports import write_reports

    full = {"step": 24, "training_iteration": 12, "iterations_since_restore": 12, "train/loss": 0.5, "val/loss": 0.4, "lineage": "a"}
    earlier = {**full, "step": 22, "training_iteration": 11, "iterations_since_restore": 11, "train/loss": 0.6, "val/loss": 0.45}
    again = {"step": 24, "training_iteration": 13, "iterations_since_restore": 1, "val/loss": 0.4, "lineage": "a"}
    (tmp_path / "result.json").write_text("\n".join(json.dumps(row) for row in [earlier, again]) + "\n")
    (tmp_path / "checkpoint_000011").mkdir()
    write_reports(tmp_path / "checkpoint_000011", "a", [earlier, full])
    points = curve_points("t", read_results(tmp_path))
    assert points[("t", 24, "train/loss")] == 0.5 and points[("t", 24, "val/loss")] == 0.4
