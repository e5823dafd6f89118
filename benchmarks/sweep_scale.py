"""Sweeps of thousands of trials: `raylab run` against plain Ray Tune at the same N, in the same run.

For each N in `--trials`, on the embedded Ray with `--num-cpus` CPUs, two comparisons:

- one report per trial: `raylab run` of N trivial trials (a copy task, an 8-unit RNN, 2 steps, one
  evaluation with its report and checkpoint at the end: the runner's cost is all there is), in a
  fresh process as a user runs it, against plain Ray Tune with the same model and steps
  (benchmarks/sweep.py's BARE_TUNE: a function trainable, worker processes reused, one report, no
  checkpoint): the floor any Tune runner stands on;
- two reports per trial: the same `raylab run` with an evaluation, a report and a checkpoint at
  each step (`eval_every: 1`), against plain Ray Tune with the same two reports and no checkpoint
  (PLAIN_TWO_REPORTS) and with a checkpoint at each (PLAIN_CHECKPOINTING, what a raylab trial asks
  of Tune: the floor of a Tune runner that can resume exactly);
- then, on raylab's experiment: the same `raylab run` again (every trial finished: all skipped), a
  collect from scratch, and incremental collects after 10 new trials (`measure_collects`).

Per side: wall time, time to the first trial's first result, the driver's peak RSS (VmHWM of the
driver process, sampled until it exits), and for raylab the files and bytes the sweep left per trial.

    python benchmarks/sweep_scale.py --trials 1000 --repeat 3 --json benchmarks/results/sweep-scale.json --markdown benchmarks/results/sweep-scale.md
    python benchmarks/sweep_scale.py --collects-only --trials 1000 --json benchmarks/results/collect-scale.json --markdown benchmarks/results/collect-scale.md

No Ray is imported here: every side runs in a child process, with `--repo`'s code first on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sweep import BARE_TUNE, FLOOR_PHASE_LINES, TRIVIAL_SWEEP as TWO_STEP_SWEEP, environment, git_describe  # benchmarks/sweep.py

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/sweep.py's trivial trial, with an evaluation and a checkpoint at each of its 2 steps.
TRIVIAL_SWEEP = {**TWO_STEP_SWEEP, "name": "scale", "training": {"steps": 2, "eval_every": 1}}
# The same trial with one evaluation, report and checkpoint, at its end: BARE_TUNE's one report.
ONE_REPORT_SWEEP = {**TRIVIAL_SWEEP, "name": "scale-one-report", "training": {"steps": 2, "eval_every": 2}}
# Plain Ray Tune doing what a raylab trial asks of Tune: at each of the 2 steps an evaluation, a
# checkpoint of the model and optimizer (torch.save into a folder, `tune.Checkpoint.from_directory`)
# and a report. Tune's default retention (all checkpoints kept: `num_to_keep` would force a save of
# the experiment state every few checkpoints), Tune's default loggers.
PLAIN_CHECKPOINTING = """
import logging, os, sys, tempfile
import ray, torch
from ray import tune

def trial(config):
    torch.manual_seed(config["seed"])
    torch.set_num_threads(1)
    rnn, readout = torch.nn.RNN(1, 8, batch_first=True), torch.nn.Linear(8, 1)
    optimizer = torch.optim.RMSprop([*rnn.parameters(), *readout.parameters()], lr=1e-3)
    evaluation = torch.randn(8, 10, 1)
    for step in range(1, 3):
        inputs = torch.randn(4, 10, 1)
        loss = readout(rnn(inputs)[0][:, -1]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            val_loss = readout(rnn(evaluation)[0][:, -1]).pow(2).mean().item()
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": [rnn.state_dict(), readout.state_dict()], "optimizer": optimizer.state_dict(), "step": step},
                       os.path.join(directory, "state.pt"))
            tune.report({"step": step, "train/loss": loss.item(), "val/loss": val_loss}, checkpoint=tune.Checkpoint.from_directory(directory))

""" + BARE_TUNE[BARE_TUNE.index("class FirstResult"):]  # the same driver as BARE_TUNE's
# The same two evaluations and reports, without the checkpoints: what the second report costs.
PLAIN_TWO_REPORTS = PLAIN_CHECKPOINTING.replace(
    """        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": [rnn.state_dict(), readout.state_dict()], "optimizer": optimizer.state_dict(), "step": step},
                       os.path.join(directory, "state.pt"))
            tune.report({"step": step, "train/loss": loss.item(), "val/loss": val_loss}, checkpoint=tune.Checkpoint.from_directory(directory))
""",
    """        tune.report({"step": step, "train/loss": loss.item(), "val/loss": val_loss})
""")
assert PLAIN_TWO_REPORTS != PLAIN_CHECKPOINTING
RAYLAB_FIRST_RESULT = re.compile(r"^\[\d\d:\d\d\] .* step ")
PLAIN_FIRST_RESULT = FLOOR_PHASE_LINES["first_progress_s"]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def timed(command: list[str], first_result: re.Pattern | None, env: dict[str, str], cwd: Path) -> dict:
    """Run `command` in a fresh process: wall time, when `first_result` first matched, the process's peak RSS."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    peak = {"mb": 0.0}
    done = threading.Event()

    def sample() -> None:  # VmHWM only grows: the last reading before exit is the peak so far
        while not done.is_set():
            value = peak_rss_mb(process.pid)
            if value is not None:
                peak["mb"] = max(peak["mb"], value)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    first = None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if first is None and first_result is not None and first_result.match(line):
            first = time.perf_counter() - start
    process.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} exited {process.returncode}:\n{''.join(lines[-30:])}")
    return {"wall_s": wall, "first_result_s": first, "peak_rss_mb": peak["mb"], "output": "".join(lines)}


# One collect of the experiment in a fresh process, timed inside it (the command's own start, about a
# second of imports, would hide the difference between reading everything and reading what changed).
TIMED_COLLECT = """
import json, sys, time
from raylab.results.collect import collect
start = time.perf_counter()
collect(sys.argv[1], incremental=sys.argv[2] == "incremental")
print(json.dumps({"collect_s": time.perf_counter() - start}))
"""
NEW_TRIALS = 10
COLLECT_REPEATS = 5


def write_sweep(directory: Path, n_trials: int, storage: Path, steps: int = 2, base: dict = TRIVIAL_SWEEP) -> Path:
    """N trivial trials of `steps` steps, each step (`base`: TRIVIAL_SWEEP) with an evaluation, a
    report and a checkpoint."""
    path = directory / f"{base['name']}.yaml"
    training = {**base["training"], "steps": steps}
    path.write_text(json.dumps({**base, "training": training, "seeds": {"range": [0, n_trials]}, "storage": str(storage)}))
    return path


def timed_collect(repo: Path, experiment: Path, mode: str) -> float:
    output = subprocess.run([sys.executable, "-c", TIMED_COLLECT, str(experiment), mode], env=environment(repo),
                            capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["collect_s"]


def collected_files(experiment: Path) -> list[Path]:
    return [experiment / name for name in ("trials.parquet", "curves.parquet", ".collect-cache.json")]


def measure_collects(repo: Path, sweep: Path, experiment: Path, n: int, num_cpus: int, steps: int) -> dict:
    """A full collect of the N trials; then, from that collect: the same after NEW_TRIALS more seeds
    ran (a new run of the sweep), and after NEW_TRIALS trials of the first run reported again (a live
    run: its state changed too); each against a collect from scratch of the same files."""
    full = timed_collect(repo, experiment, "from-scratch")
    saved = {path: path.read_bytes() for path in collected_files(experiment)}
    more = write_sweep(sweep.parent, n + NEW_TRIALS, experiment.parent, steps)
    subprocess.run([sys.executable, "-m", "raylab.cli", "run", str(more), "--num-cpus", str(num_cpus)], env=environment(repo),
                   cwd=sweep.parent, capture_output=True, check=True)

    def from_the_collect_before(mode: str, files: dict[Path, bytes]) -> float:
        """The median of COLLECT_REPEATS collects, each from the pair and cache in `files` (a
        collect of 0.1 s varies by half from one process to the next on this machine)."""
        times = []
        for _ in range(COLLECT_REPEATS):
            for path, content in files.items():
                path.write_bytes(content)
            times.append(timed_collect(repo, experiment, mode))
        return statistics.median(times)

    new_run = from_the_collect_before("incremental", saved)
    full_after_new_run = from_the_collect_before("from-scratch", saved)
    for path, content in saved.items():  # the collect of the N + NEW_TRIALS trials, for the live case
        path.write_bytes(content)
    timed_collect(repo, experiment, "incremental")
    before_live = {path: path.read_bytes() for path in collected_files(experiment)}
    first_run = sorted(experiment.glob("run-*"))[0]
    for result in sorted(first_run.glob("*/result.json"))[:NEW_TRIALS]:  # a report again, as a live trial's
        lines = result.read_text().splitlines()
        result.write_text("\n".join([*lines, lines[-1]]) + "\n")
    for state in first_run.glob("experiment_state-*.json"):
        os.utime(state)
    live = from_the_collect_before("incremental", before_live)
    full_after_live = from_the_collect_before("from-scratch", before_live)
    return {"collect_reports_per_trial": steps, "collect_full_s": full, "collect_after_new_run_s": new_run, "collect_full_after_new_run_s": full_after_new_run,
            "collect_after_live_reports_s": live, "collect_full_after_live_reports_s": full_after_live}


def disk_use(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def raylab(repo: Path, *args: str, cwd: Path, first_result: re.Pattern | None = None) -> dict:
    return timed([sys.executable, "-m", "raylab.cli", *args], first_result, environment(repo), cwd)


def median_run(runs: list[dict]) -> dict:
    """The median of each figure over repetitions (this machine's wall times vary by a quarter from
    one run to the next), with every repetition's wall time kept."""
    return {
        **{key: statistics.median(run[key] for run in runs) for key in ("wall_s", "first_result_s", "peak_rss_mb")},
        "wall_s_each": [run["wall_s"] for run in runs],
    }


def measure_collects_only(repo: Path, n: int, num_cpus: int, tmp: Path, collect_steps: int) -> dict:
    """`--collects-only`: the experiment of N trials run (not timed), then the collects."""
    directory = tmp / f"n{n}-collect"
    directory.mkdir()
    sweep = write_sweep(directory, n, directory / "results", collect_steps)
    subprocess.run([sys.executable, "-m", "raylab.cli", "run", str(sweep), "--num-cpus", str(num_cpus)], env=environment(repo),
                   cwd=directory, capture_output=True, check=True)
    collects = measure_collects(repo, sweep, directory / "results" / TRIVIAL_SWEEP["name"], n, num_cpus, collect_steps)
    print(f"N={n}: collect {collects['collect_full_s']:.2f}s, after {NEW_TRIALS} new trials in a new run {collects['collect_after_new_run_s']:.2f}s "
          f"(from scratch {collects['collect_full_after_new_run_s']:.2f}s), after {NEW_TRIALS} live reports {collects['collect_after_live_reports_s']:.2f}s "
          f"(from scratch {collects['collect_full_after_live_reports_s']:.2f}s)", flush=True)
    return {"n_trials": n, **collects}


def measure_one(repo: Path, n: int, num_cpus: int, tmp: Path, collect_steps: int, repeat: int) -> dict:
    """Each side `repeat` times, the sides interleaved (a slow minute of the machine hits all of
    them), each raylab repetition in a fresh folder; medians."""
    sides: dict[str, list[dict]] = {"one_report": [], "plain": [], "run": [], "two_reports": [], "checkpointing": []}
    for repetition in range(repeat):
        directory = tmp / f"n{n}-r{repetition}"
        directory.mkdir()
        results = directory / "results"
        sides["one_report"].append(raylab(repo, "run", str(write_sweep(directory, n, results, base=ONE_REPORT_SWEEP)), "--num-cpus", str(num_cpus),
                                          cwd=directory, first_result=RAYLAB_FIRST_RESULT))
        sides["plain"].append(timed([sys.executable, "-c", BARE_TUNE, str(n), str(num_cpus)], PLAIN_FIRST_RESULT, dict(os.environ), directory))
        sweep = write_sweep(directory, n, results)
        sides["run"].append(raylab(repo, "run", str(sweep), "--num-cpus", str(num_cpus), cwd=directory, first_result=RAYLAB_FIRST_RESULT))
        sides["two_reports"].append(timed([sys.executable, "-c", PLAIN_TWO_REPORTS, str(n), str(num_cpus)], PLAIN_FIRST_RESULT, dict(os.environ), directory))
        sides["checkpointing"].append(timed([sys.executable, "-c", PLAIN_CHECKPOINTING, str(n), str(num_cpus)], PLAIN_FIRST_RESULT, dict(os.environ), directory))
    one_report, plain, run, two_reports, checkpointing = (median_run(sides[name]) for name in sides)
    experiment = results / TRIVIAL_SWEEP["name"]
    files, size = disk_use(experiment)
    rerun = raylab(repo, "run", str(sweep), "--num-cpus", str(num_cpus), cwd=directory)
    if collect_steps == 2:
        collects = measure_collects(repo, sweep, experiment, n, num_cpus, collect_steps)
    else:  # the collects on an experiment of longer trials, run for them (not timed)
        longer = tmp / f"n{n}-collect"
        longer.mkdir()
        longer_sweep = write_sweep(longer, n, longer / "results", collect_steps)
        subprocess.run([sys.executable, "-m", "raylab.cli", "run", str(longer_sweep), "--num-cpus", str(num_cpus)], env=environment(repo),
                       cwd=longer, capture_output=True, check=True)
        collects = measure_collects(repo, longer_sweep, longer / "results" / TRIVIAL_SWEEP["name"], n, num_cpus, collect_steps)
    record = {
        "n_trials": n,
        "repeat": repeat,
        **{f"{name}_wall_s_each": median["wall_s_each"] for name, median in zip(sides, (one_report, plain, run, two_reports, checkpointing))},
        "raylab_one_report_wall_s": one_report["wall_s"],
        "raylab_one_report_first_result_s": one_report["first_result_s"],
        "raylab_one_report_driver_peak_rss_mb": one_report["peak_rss_mb"],
        "raylab_wall_s": run["wall_s"],
        "plain_wall_s": plain["wall_s"],
        "plain_two_reports_wall_s": two_reports["wall_s"],
        "plain_two_reports_driver_peak_rss_mb": two_reports["peak_rss_mb"],
        "plain_checkpointing_wall_s": checkpointing["wall_s"],
        "plain_checkpointing_first_result_s": checkpointing["first_result_s"],
        "plain_checkpointing_driver_peak_rss_mb": checkpointing["peak_rss_mb"],
        "raylab_first_result_s": run["first_result_s"],
        "plain_first_result_s": plain["first_result_s"],
        "raylab_driver_peak_rss_mb": run["peak_rss_mb"],
        "plain_driver_peak_rss_mb": plain["peak_rss_mb"],
        "files_per_trial": files / n,
        "bytes_per_trial": size / n,
        "rerun_s": rerun["wall_s"],
        **collects,
    }
    print(
        f"N={n}: one report: raylab {one_report['wall_s']:.1f}s vs plain Tune {plain['wall_s']:.1f}s, first result {one_report['first_result_s']:.1f}s vs "
        f"{plain['first_result_s']:.1f}s, driver RSS {one_report['peak_rss_mb']:.0f} vs {plain['peak_rss_mb']:.0f} MB; two reports: raylab {run['wall_s']:.1f}s vs "
        f"plain Tune {two_reports['wall_s']:.1f}s, with a checkpoint at each {checkpointing['wall_s']:.1f}s; {files / n:.1f} files, {size / n / 1024:.0f} KB per trial; "
        f"re-run {rerun['wall_s']:.1f}s; collect {collects['collect_full_s']:.2f}s, after {NEW_TRIALS} new trials in a new run "
        f"{collects['collect_after_new_run_s']:.2f}s (from scratch {collects['collect_full_after_new_run_s']:.2f}s), after {NEW_TRIALS} live "
        f"reports {collects['collect_after_live_reports_s']:.2f}s (from scratch {collects['collect_full_after_live_reports_s']:.2f}s)",
        flush=True,
    )
    return record


def markdown(summary: dict) -> str:
    if summary.get("collects_only"):
        return "\n".join([f"`benchmarks/sweep_scale.py --collects-only`, commit {summary['repo_commit']}, --num-cpus {summary['num_cpus']}, "
                          f"{os.cpu_count()} cores, load average at the end {summary['load_average'][0]:.1f}.", *collect_lines(summary)]) + "\n"
    lines = [
        f"`benchmarks/sweep_scale.py`, commit {summary['repo_commit']}, --num-cpus {summary['num_cpus']}, {os.cpu_count()} cores, "
        f"load average at the end {summary['load_average'][0]:.1f}. Trivial trials of 2 steps. Medians of {summary['records'][0]['repeat']} interleaved runs of each side.",
        "",
        "One report per trial: raylab (one evaluation, its report and checkpoint, at the end) against plain Tune (one report, `BARE_TUNE`):",
        "",
        "| N | raylab wall s | plain Tune wall s | ratio | first result s: raylab / plain | ratio | driver peak RSS MB: raylab / plain | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["records"]:
        lines.append(
            f"| {r['n_trials']} | {r['raylab_one_report_wall_s']:.1f} | {r['plain_wall_s']:.1f} | {r['raylab_one_report_wall_s'] / r['plain_wall_s']:.2f} | "
            f"{r['raylab_one_report_first_result_s']:.1f} / {r['plain_first_result_s']:.1f} | "
            f"{r['raylab_one_report_first_result_s'] / r['plain_first_result_s']:.2f} | "
            f"{r['raylab_one_report_driver_peak_rss_mb']:.0f} / {r['plain_driver_peak_rss_mb']:.0f} | "
            f"{r['raylab_one_report_driver_peak_rss_mb'] / r['plain_driver_peak_rss_mb']:.2f} |"
        )
    lines += [
        "",
        "Two reports per trial (an evaluation, a report and, for raylab, a checkpoint at each step): raylab against plain Tune with the same "
        "reports (`PLAIN_TWO_REPORTS`, no checkpoint), with a checkpoint at each too (`PLAIN_CHECKPOINTING`), and against the one-report "
        "floor (`BARE_TUNE`); raylab's files and bytes per trial and its re-run (all skipped):",
        "",
        "| N | raylab wall s | plain, same reports, s | ratio | plain, same reports and checkpoints, s | ratio | plain, one report, s | ratio | "
        "first result s: raylab / plain | driver peak RSS MB: raylab / same reports | files per trial | KB per trial | re-run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["records"]:
        lines.append(
            f"| {r['n_trials']} | {r['raylab_wall_s']:.1f} | {r['plain_two_reports_wall_s']:.1f} | {r['raylab_wall_s'] / r['plain_two_reports_wall_s']:.2f} | "
            f"{r['plain_checkpointing_wall_s']:.1f} | {r['raylab_wall_s'] / r['plain_checkpointing_wall_s']:.2f} | "
            f"{r['plain_wall_s']:.1f} | {r['raylab_wall_s'] / r['plain_wall_s']:.2f} | "
            f"{r['raylab_first_result_s']:.1f} / {r['plain_checkpointing_first_result_s']:.1f} | "
            f"{r['raylab_driver_peak_rss_mb']:.0f} / {r['plain_two_reports_driver_peak_rss_mb']:.0f} | "
            f"{r['files_per_trial']:.1f} | {r['bytes_per_trial'] / 1024:.0f} | {r['rerun_s']:.1f} |"
        )
    return "\n".join(lines + collect_lines(summary)) + "\n"


def collect_lines(summary: dict) -> list[str]:
    lines = [
        "",
        f"Collect, in-process seconds (a fresh process each, the median of {COLLECT_REPEATS}; the command adds about a second of imports), on N trials of "
        f"{summary['collect_reports_per_trial']} reports each. Incremental: from the collect of the N trials, "
        f"after {NEW_TRIALS} more seeds ran in a new run, and after {NEW_TRIALS} trials of the first run reported again (its state changed too).",
        "",
        "| N | full collect s | after a new run: incremental / from scratch s | ratio | after live reports: incremental / from scratch s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["records"]:
        lines.append(
            f"| {r['n_trials']} | {r['collect_full_s']:.2f} | {r['collect_after_new_run_s']:.2f} / {r['collect_full_after_new_run_s']:.2f} | "
            f"{r['collect_after_new_run_s'] / r['collect_full_after_new_run_s']:.2f} | {r['collect_after_live_reports_s']:.2f} / "
            f"{r['collect_full_after_live_reports_s']:.2f} | {r['collect_after_live_reports_s'] / r['collect_full_after_live_reports_s']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="100,1000", help="comma-separated sweep sizes N (default 100,1000)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (default 2)")
    parser.add_argument("--repo", default=str(ROOT), help="checkout whose raylab runs (default: this one)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side, interleaved; the tables show medians (default 1)")
    parser.add_argument("--collect-steps", type=int, default=2,
                        help="steps (each a report) of the trials the collects are timed on; 2: the same experiment (default 2)")
    parser.add_argument("--collects-only", action="store_true", help="time the collects only, on an experiment run for them (default: off)")
    parser.add_argument("--json", help="write every record here")
    parser.add_argument("--markdown", help="write the Markdown table here (it is always printed)")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    with tempfile.TemporaryDirectory(prefix="raylab-scale-") as tmp:
        if args.collects_only:
            records = [measure_collects_only(repo, int(n), args.num_cpus, Path(tmp), args.collect_steps) for n in args.trials.split(",")]
        else:
            records = [measure_one(repo, int(n), args.num_cpus, Path(tmp), args.collect_steps, args.repeat) for n in args.trials.split(",")]
    commit = git_describe(repo)
    summary = {"collects_only": args.collects_only, "collect_reports_per_trial": args.collect_steps, "num_cpus": args.num_cpus, "repo_commit": commit, "load_average": os.getloadavg(), "python": platform.python_version(), "records": records}
    table = markdown(summary)
    print(table)
    for path, text in ((args.json, json.dumps(summary, indent=1)), (args.markdown, table)):
        if path:
            Path(path).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
