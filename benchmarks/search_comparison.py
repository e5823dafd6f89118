"""Which search finds better configurations, judged on fresh seeds: random vs Optuna's TPE at the same
budget, and TPE on one seed per sample vs three (docs/research.md, "Which search").

The problem: the copy task (delay 20, 32 units, 400 steps), the learning rate and RMSprop's alpha of
an RNN-orth and an LSTM: a CPU-sized version of the nnRNN paper's tuning. Each arm gets the same
budget of trials per model (`--budget`, default 12):

    random    num_samples: 12, seeds_per_sample: 1   (Tune's random draws)
    tpe       num_samples: 12, seeds_per_sample: 1   (algorithm: optuna, TPE, n_startup_trials: 4)
    tpe-3     num_samples: 4,  seeds_per_sample: 3   (algorithm: optuna, TPE, n_startup_trials: 2)

Each repeat gives every arm its own sweep seed (repeat r: seed 10 r, so the samples differ between
repeats and agree between nothing else), runs the search with `raylab run`, promotes each model's
winner with `raylab best`, and trains the winners on the same five fresh seeds (1000-1004, by an
override of `seeds`) with `raylab run`. An arm's score on a repeat is the mean final val/loss of a
winner over those fresh seeds; arms are compared pairwise on (repeat, model) pairs: the mean
difference, its standard error and a paired t-test. Also reported: how optimistic each search's own
score of its winner was (search score minus fresh score).

    python benchmarks/search_comparison.py --json benchmarks/results/search-comparison.json --markdown benchmarks/results/search-comparison.md
    python benchmarks/search_comparison.py --repeats 1 --budget 3 --steps 40   # a quick look
    python benchmarks/search_comparison.py --summarize benchmarks/results/search-comparison.json   # the tables again, no runs

Everything runs through the `raylab` command (a child process each, on the embedded Ray with
`--num-cpus` CPUs), as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
FRESH_SEEDS = [1000, 1001, 1002, 1003, 1004]
METRIC = "val/loss"
ARMS = {  # name -> (the search's settings besides the space, seeds per sample)
    "random": ({"algorithm": "random"}, 1),
    "tpe": ({"algorithm": "optuna", "sampler": {"name": "tpe", "n_startup_trials": 4}}, 1),
    "tpe-3": ({"algorithm": "optuna", "sampler": {"name": "tpe", "n_startup_trials": 2}}, 3),
}
COMPARISONS = [("tpe", "random", "TPE vs random, one seed per sample"), ("tpe-3", "tpe", "TPE: three seeds per sample vs one")]


def sweep(name: str, seed: int, arm: str, budget: int, steps: int, storage: Path) -> dict:
    settings, seeds_per_sample = ARMS[arm]
    return {
        "name": name,
        "task": {"name": "copy", "delay": 20, "batch_size": 10, "eval_size": 200},
        "variants": [{"cell": {"name": "rnn_orth"}, "label": "RNN-orth"}, {"cell": {"name": "lstm"}, "label": "LSTM"}],
        "hidden_sizes": [32],
        "seeds": [seed],
        "optimizer": {"name": "rmsprop"},
        "training": {"steps": steps, "eval_every": max(1, steps // 4)},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": str(storage),
        "search": {
            **settings,
            "num_samples": budget // seeds_per_sample,
            "seeds_per_sample": seeds_per_sample,
            "space": {"optimizer.lr": {"loguniform": [1.0e-4, 3.0e-2]}, "optimizer.alpha": {"uniform": [0.5, 0.999]}},
        },
    }


def raylab(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "raylab.cli", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"raylab {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def search_scores(sweep_dir: Path) -> dict[str, float]:
    """Each model's best mean final val/loss over its samples' seeds, as the search itself saw it."""
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    finished = trials[trials["status"] == "finished"]
    means = finished.groupby(["variant", "config.optimizer.lr", "config.optimizer.alpha"])[f"final/{METRIC}"].mean()
    return {variant: float(group.min()) for variant, group in means.groupby(level="variant")}


def fresh_scores(sweep_dir: Path) -> dict[str, float]:
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert set(trials["status"]) == {"finished"} and set(trials["seed"]) == set(FRESH_SEEDS), trials[["variant", "seed", "status"]]
    return {variant: float(group[f"final/{METRIC}"].mean()) for variant, group in trials.groupby("variant")}


def run_arm(arm: str, repeat: int, args: argparse.Namespace, work: Path) -> list[dict]:
    name = f"{arm}-r{repeat}"
    file = work / f"{name}.yaml"
    file.write_text(yaml.safe_dump(sweep(name, 10 * repeat, arm, args.budget, args.steps, work / "results")))
    started = time.perf_counter()
    raylab("run", str(file), "--num-cpus", str(args.num_cpus), cwd=work)
    raylab("best", str(work / "results" / name), "--seeds", str(len(FRESH_SEEDS)), "--out", str(work / f"{name}-best.yaml"), cwd=work)
    raylab("run", str(work / f"{name}-best.yaml"), f"seeds={json.dumps(FRESH_SEEDS)}", "--num-cpus", str(args.num_cpus), cwd=work)
    seen, fresh = search_scores(work / "results" / name), fresh_scores(work / "results" / f"{name}-best")
    wall = time.perf_counter() - started
    print(f"{name}: fresh {fresh}, search {seen} ({wall:.0f} s)", flush=True)
    return [{"arm": arm, "repeat": repeat, "model": model, "fresh": fresh[model], "search": seen[model], "wall_s": wall} for model in fresh]


def compare(rows: pd.DataFrame, arm: str, against: str, model: str | None = None) -> dict:
    """Paired over (repeat, model), or over repeats for one model: the mean of arm - against in fresh
    val/loss (negative: arm found better), its SE, and p."""
    table = rows.pivot_table(index=["repeat", "model"], columns="arm", values="fresh")
    if model is not None:
        table = table.xs(model, level="model")
    differences = (table[arm] - table[against]).dropna()
    p = float(stats.ttest_1samp(differences, 0.0).pvalue) if len(differences) > 1 else float("nan")
    se = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
    wins = int((differences < 0).sum())
    return {"arm": arm, "against": against, "model": model or "both", "pairs": len(differences), "mean_difference": float(differences.mean()),
            "se": se, "p": p, "arm_better_in": wins}


def comparisons_of(rows: pd.DataFrame) -> list[dict]:
    """Each comparison over both models, then per model."""
    return [compare(rows, arm, against, model) for arm, against, _ in COMPARISONS for model in (None, *sorted(rows["model"].unique()))]


def markdown(rows: pd.DataFrame, comparisons: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"# Search comparison: copy task, RNN-orth and LSTM, {args.budget} trials per model, {args.repeats} repeats",
        "",
        f"Fresh final {METRIC} of each search's winner, mean over seeds {FRESH_SEEDS[0]}-{FRESH_SEEDS[-1]} (lower is better).",
        "",
        "| arm | model | fresh val/loss, mean ± SE over repeats | search's own score | optimism (search - fresh) |",
        "|---|---|---|---|---|",
    ]
    for (arm, model), group in rows.groupby(["arm", "model"], sort=False):
        fresh, seen = group["fresh"], group["search"]
        se = fresh.std() / len(fresh) ** 0.5 if len(fresh) > 1 else float("nan")
        lines.append(f"| {arm} | {model} | {fresh.mean():.4f} ± {se:.4f} | {seen.mean():.4f} | {(seen - fresh).mean():+.4f} |")
    lines += ["", "| comparison | model | pairs | mean difference in fresh val/loss ± SE | p (paired t) | first better in |", "|---|---|---|---|---|---|"]
    titles = {(arm, against): title for arm, against, title in COMPARISONS}
    for c in comparisons:
        lines.append(f"| {titles[(c['arm'], c['against'])]} | {c['model']} | {c['pairs']} | {c['mean_difference']:+.4f} ± {c['se']:.4f} | {c['p']:.3f} | "
                     f"{c['arm_better_in']} of {c['pairs']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--budget", type=int, default=12, help="trials per model in every arm (a multiple of 3)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--summarize", type=Path, help="no runs: the tables again from the rows of an earlier --json file")
    args = parser.parse_args()
    if args.budget % 3:
        parser.error("--budget: a multiple of 3 (the tpe-3 arm runs budget / 3 samples on 3 seeds)")
    rows = []
    if args.summarize:
        earlier = json.loads(args.summarize.read_text())
        rows = earlier["rows"]
        args.budget, args.steps, args.repeats, args.num_cpus = earlier["budget"], earlier["steps"], earlier["repeats"], earlier["cpus"]
    else:
        with tempfile.TemporaryDirectory() as directory:
            work = Path(directory)
            for repeat in range(args.repeats):
                for arm in ARMS:
                    rows += run_arm(arm, repeat, args, work)
    frame = pd.DataFrame(rows)
    comparisons = comparisons_of(frame)
    text = markdown(frame, comparisons, args)
    print(text)
    command = earlier["command"] if args.summarize else " ".join(["python", "benchmarks/search_comparison.py", *sys.argv[1:]])
    figures = {"command": command, "machine": earlier["machine"] if args.summarize else platform.platform(),
               "cpus": args.num_cpus, "budget": args.budget, "steps": args.steps, "repeats": args.repeats, "fresh_seeds": FRESH_SEEDS,
               "rows": rows, "comparisons": comparisons}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
