"""Sweeps of thousands of trials: `raylab run` against plain Ray Tune at the same N, in the same run.

For each N in `--trials`, on the embedded Ray with `--num-cpus` CPUs:

- `raylab run` of N trivial trials (a copy task, an 8-unit RNN, 2 steps, an evaluation and a
  checkpoint at each: the runner's cost is all there is), in a fresh process as a user runs it;
- plain Ray Tune with the same model and steps (benchmarks/sweep.py's BARE_TUNE: a function
  trainable, worker processes reused, one report, no checkpoints): the floor any Tune runner stands on;
- then, on raylab's experiment: `raylab collect` (a full collect) and the same `raylab run` again
  (every trial finished: all skipped).

Per side: wall time, time to the first trial's first result, the driver's peak RSS (VmHWM of the
driver process, sampled until it exits), and for raylab the files and bytes the sweep left per trial.

    python benchmarks/sweep_scale.py --trials 100,1000 --json benchmarks/results/sweep-scale.json --markdown benchmarks/results/sweep-scale.md

No Ray is imported here: every side runs in a child process, with `--repo`'s code first on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


def write_sweep(directory: Path, n_trials: int, storage: Path) -> Path:
    path = directory / "sweep.yaml"
    path.write_text(json.dumps({**TRIVIAL_SWEEP, "seeds": {"range": [0, n_trials]}, "storage": str(storage)}))
    return path


def disk_use(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def raylab(repo: Path, *args: str, cwd: Path, first_result: re.Pattern | None = None) -> dict:
    return timed([sys.executable, "-m", "raylab.cli", *args], first_result, environment(repo), cwd)


def measure_one(repo: Path, n: int, num_cpus: int, tmp: Path) -> dict:
    directory = tmp / f"n{n}"
    directory.mkdir()
    results = directory / "results"
    sweep = write_sweep(directory, n, results)
    run = raylab(repo, "run", str(sweep), "--num-cpus", str(num_cpus), cwd=directory, first_result=RAYLAB_FIRST_RESULT)
    plain = timed([sys.executable, "-c", BARE_TUNE, str(n), str(num_cpus)], PLAIN_FIRST_RESULT, dict(os.environ), directory)
    experiment = results / TRIVIAL_SWEEP["name"]
    files, size = disk_use(experiment)
    full_collect = raylab(repo, "collect", str(experiment), cwd=directory)
    rerun = raylab(repo, "run", str(sweep), "--num-cpus", str(num_cpus), cwd=directory)
    record = {
        "n_trials": n,
        "raylab_wall_s": run["wall_s"],
        "plain_wall_s": plain["wall_s"],
        "raylab_first_result_s": run["first_result_s"],
        "plain_first_result_s": plain["first_result_s"],
        "raylab_driver_peak_rss_mb": run["peak_rss_mb"],
        "plain_driver_peak_rss_mb": plain["peak_rss_mb"],
        "files_per_trial": files / n,
        "bytes_per_trial": size / n,
        "collect_full_s": full_collect["wall_s"],
        "rerun_s": rerun["wall_s"],
    }
    print(
        f"N={n}: raylab {run['wall_s']:.1f}s vs plain Tune {plain['wall_s']:.1f}s; first result {run['first_result_s']:.1f}s vs {plain['first_result_s']:.1f}s; "
        f"driver RSS {run['peak_rss_mb']:.0f} vs {plain['peak_rss_mb']:.0f} MB; {files / n:.1f} files, {size / n / 1024:.0f} KB per trial; "
        f"collect {full_collect['wall_s']:.1f}s, re-run {rerun['wall_s']:.1f}s",
        flush=True,
    )
    return record


def markdown(summary: dict) -> str:
    lines = [
        f"`benchmarks/sweep_scale.py`, commit {summary['repo_commit']}, --num-cpus {summary['num_cpus']}, {os.cpu_count()} cores, "
        f"load average at the end {summary['load_average'][0]:.1f}. Trivial trials (2 steps, a report and a checkpoint at each).",
        "",
        "| N | raylab wall s | plain Tune wall s | ratio | first result s: raylab / plain | driver peak RSS MB: raylab / plain | ratio | files per trial | KB per trial | collect s | re-run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["records"]:
        lines.append(
            f"| {r['n_trials']} | {r['raylab_wall_s']:.1f} | {r['plain_wall_s']:.1f} | {r['raylab_wall_s'] / r['plain_wall_s']:.2f} | "
            f"{r['raylab_first_result_s']:.1f} / {r['plain_first_result_s']:.1f} | {r['raylab_driver_peak_rss_mb']:.0f} / {r['plain_driver_peak_rss_mb']:.0f} | "
            f"{r['raylab_driver_peak_rss_mb'] / r['plain_driver_peak_rss_mb']:.2f} | {r['files_per_trial']:.1f} | {r['bytes_per_trial'] / 1024:.0f} | "
            f"{r['collect_full_s']:.1f} | {r['rerun_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="100,1000", help="comma-separated sweep sizes N (default 100,1000)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (default 2)")
    parser.add_argument("--repo", default=str(ROOT), help="checkout whose raylab runs (default: this one)")
    parser.add_argument("--json", help="write every record here")
    parser.add_argument("--markdown", help="write the Markdown table here (it is always printed)")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    with tempfile.TemporaryDirectory(prefix="raylab-scale-") as tmp:
        records = [measure_one(repo, int(n), args.num_cpus, Path(tmp)) for n in args.trials.split(",")]
    commit = git_describe(repo)
    summary = {"num_cpus": args.num_cpus, "repo_commit": commit, "load_average": os.getloadavg(), "python": platform.python_version(), "records": records}
    table = markdown(summary)
    print(table)
    for path, text in ((args.json, json.dumps(summary, indent=1)), (args.markdown, table)):
        if path:
            Path(path).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
