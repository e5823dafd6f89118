"""What a sweep costs on top of its trials: `raylab run` of N trivial trials against the same trials
run directly in one process.

For each N in `--trials`, `raylab run` (a fresh driver process, as a user runs it, on the embedded
Ray with `--num-cpus` CPUs) runs N two-step copy-task trials of a 8-unit RNN, and the same N trials
run through `training.run_trial` in one process without Ray. A least-squares line through the
median wall times gives the fixed cost of a `raylab run` (intercept) and the marginal cost of one
more trial (slope); the marginal Ray cost is the slope minus the direct per-trial time. Beside them,
the same N trials as plain Ray Tune trainables (BARE_TUNE) give the floor that Ray's start and stop,
Tune's trial actors and PyTorch's imports put under any such runner; raylab's own cost is the rest.

    python benchmarks/sweep.py --json benchmarks/results/sweep-cpu.json --markdown benchmarks/results/sweep-cpu.md
    python benchmarks/sweep.py --trials 2,20 --repeats 1        # a quick look
    python benchmarks/sweep.py --repo /path/to/other/checkout   # the same figures for another version

No Ray is imported here: every side runs in a child process, with `--repo`'s code first on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One trial: the cheapest the runner accepts (2 steps, one evaluation of 8 sequences): what is left
# is the runner's own cost per trial.
TRIVIAL_SWEEP = {
    "name": "throughput",
    "task": {"name": "copy", "delay": 5, "batch_size": 4, "eval_size": 8},
    "variants": [{"cell": {"name": "rnn", "nonlinearity": "tanh"}, "label": "RNN"}],
    "hidden_sizes": [8],
    "training": {"steps": 2, "eval_every": 2},
    "resources": {"cpu": 1, "gpu": 0},
}
# Lines of `raylab run` that mark its phases: Tune about to start (imports, validation and Ray start
# done), the first evaluation reported, the experiment over (then collection, table, Ray shutdown).
PHASE_LINES = {
    "tune_start_s": re.compile(r"^raylab: \d+ trials of sweep "),
    "first_progress_s": re.compile(r"^\[\d\d:\d\d\] .* step "),
    "tune_end_s": re.compile(r"^\[\d\d:\d\d\] trials: \d+ total, "),  # the last tally (one comes every 30 s)
}
LAST_MATCH_WINS = {"tune_end_s"}

DIRECT = """
import json, sys, time
start = time.perf_counter()
from raylab.planning.sweep import load_sweep
from raylab.training.loop import run_trial
import torch
torch.set_num_threads(1)  # what a 1-CPU trial gets
sweep = load_sweep(sys.argv[1])
loaded, loaded_cpu = time.perf_counter(), time.process_time()
for trial in sweep.trials:
    run_trial(trial, lambda metrics, state: None)
done, done_cpu = time.perf_counter(), time.process_time()
print(json.dumps({"setup_s": loaded - start, "trials_s": done - loaded, "trials_cpu_s": done_cpu - loaded_cpu}))
"""


# The floor under any Ray Tune runner of PyTorch trials, measured beside raylab: the same N trials as
# plain Tune function trainables (an 8-unit RNN and its readout, RMSprop, two steps, one report),
# the embedded Ray started and stopped as `raylab run` does, worker processes reused, and nothing of
# raylab (no validation, checkpoints, Parquet or table). Its lines mark the same phases.
BARE_TUNE = """
import logging, os, sys, tempfile
import ray, torch
from ray import tune

def trial(config):
    torch.manual_seed(config["seed"])
    torch.set_num_threads(1)
    rnn, readout = torch.nn.RNN(1, 8, batch_first=True), torch.nn.Linear(8, 1)
    optimizer = torch.optim.RMSprop([*rnn.parameters(), *readout.parameters()], lr=1e-3)
    for _ in range(2):
        inputs = torch.randn(4, 10, 1)
        loss = readout(rnn(inputs)[0][:, -1]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tune.report({"loss": loss.item()})

class FirstResult(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        print("tune-floor: result", flush=True)

ray.init(address="local", num_cpus=int(sys.argv[2]), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
print("tune-floor: Tune starts", flush=True)
with tempfile.TemporaryDirectory() as storage:
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={"seed": tune.grid_search(list(range(int(sys.argv[1]))))},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[FirstResult()]),
    )
    tuner.fit()
    print("tune-floor: Tune ends", flush=True)
ray.shutdown()
sys.stdout.flush()
os._exit(0)
"""
FLOOR_PHASE_LINES = {
    "tune_start_s": re.compile(r"^tune-floor: Tune starts"),
    "first_progress_s": re.compile(r"^tune-floor: result"),
    "tune_end_s": re.compile(r"^tune-floor: Tune ends"),
}


def write_sweep(directory: Path, n_trials: int) -> Path:
    """A sweep file of `n_trials` seeds, storing into `directory` (JSON is YAML)."""
    path = directory / f"sweep-{n_trials}.yaml"
    path.write_text(json.dumps({**TRIVIAL_SWEEP, "seeds": list(range(n_trials)), "storage": str(directory / "results")}))
    return path


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def environment(repo: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def time_phases(command: list[str], phase_lines: dict[str, re.Pattern], env: dict[str, str], cwd: Path) -> dict:
    """Run `command` in a fresh process: wall time, when each phase line first (or last) appeared, CPU time."""
    cpu_before = child_cpu_s()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    phases: dict[str, float | None] = dict.fromkeys(phase_lines)
    lines = []
    for line in process.stdout:
        lines.append(line)
        for phase, pattern in phase_lines.items():
            if (phases[phase] is None or phase in LAST_MATCH_WINS) and pattern.match(line):
                phases[phase] = time.perf_counter() - start
    process.wait()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} exited {process.returncode}:\n{''.join(lines[-30:])}")
    # Processes the driver started and reaped (Ray's own services, and the workers their parents
    # reaped); a worker killed without being waited for is missing, so this is a lower bound.
    return {"wall_s": wall, **phases, "cpu_s": child_cpu_s() - cpu_before}


def time_raylab_run(repo: Path, sweep_file: Path, num_cpus: int) -> dict:
    """One `raylab run` in a fresh process, as a user runs it."""
    command = [sys.executable, "-m", "raylab.cli", "run", str(sweep_file), "--num-cpus", str(num_cpus)]
    return time_phases(command, PHASE_LINES, environment(repo), sweep_file.parent)


def time_bare_tune(n_trials: int, num_cpus: int, directory: Path) -> dict:
    """The same N trials as plain Ray Tune trainables in a fresh process (BARE_TUNE): the floor."""
    command = [sys.executable, "-c", BARE_TUNE, str(n_trials), str(num_cpus)]
    return time_phases(command, FLOOR_PHASE_LINES, dict(os.environ), directory)


def time_direct(repo: Path, sweep_file: Path) -> dict:
    """The same trials through `training.run_trial` in one process (no Ray, no results files)."""
    result = subprocess.run([sys.executable, "-c", DIRECT, str(sweep_file)], capture_output=True, text=True, env=environment(repo), check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = intercept + slope * x."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def git_describe(repo: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def measure(repo: Path, counts: list[int], repeats: int, num_cpus: int) -> dict:
    records = []
    with tempfile.TemporaryDirectory(prefix="raylab-sweep-bench-") as tmp:
        for n in counts:
            for repeat in range(repeats):
                directory = Path(tmp, f"n{n}-r{repeat}")
                directory.mkdir()
                sweep_file = write_sweep(directory, n)
                run = time_raylab_run(repo, sweep_file, num_cpus)
                floor = time_bare_tune(n, num_cpus, directory)
                direct = time_direct(repo, sweep_file)
                record = {"n_trials": n, "repeat": repeat, **run, **{f"floor_{k}": v for k, v in floor.items()}, **{f"direct_{k}": v for k, v in direct.items()}}
                records.append(record)
                print(f"N={n:<4} run {run['wall_s']:6.2f}s  Tune start {run['tune_start_s'] or float('nan'):5.2f}s  first progress {run['first_progress_s'] or float('nan'):5.2f}s  "
                      f"cpu {run['cpu_s']:6.2f}s  | bare Tune {floor['wall_s']:6.2f}s, first result {floor['first_progress_s'] or float('nan'):5.2f}s  | direct {direct['trials_s']:.3f}s", flush=True)
    return summarize(records, counts, num_cpus)


FLOOR_KEYS = ("floor_wall_s", "floor_tune_start_s", "floor_first_progress_s", "floor_tune_end_s")


def summarize(records: list[dict], counts: list[int], num_cpus: int) -> dict:
    def median(n: int, key: str) -> float | None:
        values = [r[key] for r in records if r["n_trials"] == n and r.get(key) is not None]
        return statistics.median(values) if values else None

    per_n = [
        {"n_trials": n, **{key: median(n, key) for key in ("wall_s", *PHASE_LINES, "cpu_s", *FLOOR_KEYS, "direct_trials_s", "direct_trials_cpu_s")}}
        for n in counts
    ]
    for row in per_n:
        row["trials_per_minute"] = 60 * row["n_trials"] / row["wall_s"]
    intercept, slope = fit_line([r["n_trials"] for r in per_n], [r["wall_s"] for r in per_n])
    cpu_intercept, cpu_slope = fit_line([r["n_trials"] for r in per_n], [r["cpu_s"] for r in per_n])
    # The trial's own cost is a slope too: the first trial of a process pays one-off warm-ups.
    _, direct_per_trial = fit_line([r["n_trials"] for r in per_n], [r["direct_trials_s"] for r in per_n])
    _, direct_cpu_per_trial = fit_line([r["n_trials"] for r in per_n], [r["direct_trials_cpu_s"] for r in per_n])
    with_floor = [r for r in per_n if r.get("floor_wall_s") is not None]  # JSON files from before the floor was measured lack it
    floor_intercept, floor_slope = fit_line([r["n_trials"] for r in with_floor], [r["floor_wall_s"] for r in with_floor]) if len(with_floor) > 1 else (None, None)
    return {
        "num_cpus": num_cpus,
        "per_n": per_n,
        "floor_fixed_s": floor_intercept,  # the same, for plain Ray Tune with the same trials (BARE_TUNE)
        "floor_marginal_wall_s": floor_slope,
        "fixed_s": intercept,  # wall seconds of a `raylab run` with no trial in it
        "marginal_wall_s": slope,  # wall seconds per extra trial, num_cpus trials in parallel
        "marginal_core_s": slope * num_cpus,  # the machine's capacity one more trial takes
        "marginal_cpu_s": cpu_slope,  # CPU seconds per extra trial (reaped processes only: a lower bound)
        "cpu_fixed_s": cpu_intercept,
        "direct_per_trial_s": direct_per_trial,  # the trial itself, in one process without Ray
        "direct_per_trial_cpu_s": direct_cpu_per_trial,
        "marginal_ray_core_s": slope * num_cpus - direct_per_trial,  # the runner's cost per trial, from wall time
        "marginal_ray_cpu_s": cpu_slope - direct_cpu_per_trial,  # ... from CPU time (robust to a busy machine)
        "records": records,
    }


def markdown(summary: dict, header: str) -> str:
    lines = [
        header,
        "",
        "| trials | wall s | Tune starts at s | first progress s | Tune ends at s | trials / min | CPU s (reaped) | bare Tune: wall s | bare Tune: first result s | direct s (all trials) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in summary["per_n"]:
        lines.append(
            f"| {r['n_trials']} | {seconds(r['wall_s'])} | {seconds(r['tune_start_s'])} | {seconds(r['first_progress_s'])} | {seconds(r['tune_end_s'])} | "
            f"{r['trials_per_minute']:.0f} | {seconds(r['cpu_s'])} | {seconds(r.get('floor_wall_s'))} | {seconds(r.get('floor_first_progress_s'))} | {r['direct_trials_s']:.3f} |"
        )
    lines += [
        "",
        f"- fixed cost (intercept): {summary['fixed_s']:.2f} s wall",
        f"- marginal cost per trial (slope): {summary['marginal_wall_s']:.3f} s wall = {summary['marginal_core_s']:.3f} core-s "
        f"on {summary['num_cpus']} CPUs; CPU-time slope {summary['marginal_cpu_s']:.3f} s",
        f"- the trial itself (direct, one process; slope): {summary['direct_per_trial_s']:.4f} s wall, {summary['direct_per_trial_cpu_s']:.4f} s CPU",
        f"- marginal Ray cost per trial: {summary['marginal_ray_core_s']:.3f} core-s from wall time, {summary['marginal_ray_cpu_s']:.3f} s from CPU time",
    ]
    if summary.get("floor_fixed_s") is not None:
        lines.append(
            f"- bare Tune, the same trials (the floor): fixed {summary['floor_fixed_s']:.2f} s, marginal {summary['floor_marginal_wall_s']:.3f} s wall per trial; "
            f"raylab's own fixed cost on top: {summary['fixed_s'] - summary['floor_fixed_s']:.2f} s"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="2,20,100", help="comma-separated sweep sizes N (default 2,20,100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per N; medians are reported (default 3)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (default 2)")
    parser.add_argument("--repo", default=str(ROOT), help="checkout whose raylab runs (default: this one)")
    parser.add_argument("--label", default="", help="a name for this measurement, e.g. 'before' (stored in the JSON)")
    parser.add_argument("--json", help="write the summary and every record here")
    parser.add_argument("--markdown", help="write the Markdown table here (it is always printed)")
    parser.add_argument("--from-json", help="summarize the records of an earlier --json file again instead of measuring")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    if args.from_json:
        stored = json.loads(Path(args.from_json).read_text())
        counts = sorted({r["n_trials"] for r in stored["records"]})
        summary = {**stored, **summarize(stored["records"], counts, stored["num_cpus"])}
    else:
        counts = sorted({int(n) for n in args.trials.split(",")})
        summary = measure(repo, counts, args.repeats, args.num_cpus)
        summary.update(label=args.label, repo_commit=git_describe(repo), repeats=args.repeats, load_average=os.getloadavg(), python=platform.python_version())
    label = summary.get("label")
    header = (
        f"`raylab run` of N two-step trials{f' ({label})' if label else ''}, commit {summary['repo_commit']}, "
        f"--num-cpus {summary['num_cpus']}, median of {summary['repeats']}; load average at the end {summary['load_average'][0]:.1f} on {os.cpu_count()} cores."
    )
    table = markdown(summary, header)
    print(table)
    for path, text in ((args.json, json.dumps(summary, indent=1)), (args.markdown, table)):
        if path:
            Path(path).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
