"""Across seeds: mean, standard error of the mean and n -> tables (Markdown, LaTeX, CSV); plots.py draws.

The standard error is the sample standard deviation (ddof=1) over sqrt(n). Only finished seeds enter
the statistics; the others (diverged, errored, unfinished, pending: the statuses of trials.parquet) are
counted in a `not in mean` column, never dropped silently. Rows follow the sweep file's order (the
order of trials.parquet), and a metric for which the task has a trivial baseline (the copy task's
10 ln 8 / (T + 20), the adding problem's 1/6) gets a `<metric> baseline` column beside it. A row is
one configuration: `table_groups` adds the configuration columns that differ inside a group, and
`summarize` refuses a group that still pools several (raylab/results/identity.py). Trials a search's
scheduler stopped early are counted in their own `stopped early` column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raylab.planning import storage
from raylab.results.identity import check_one_configuration, split_by_configuration
from raylab.results.collect import CURVES_FILE, TRIALS_FILE, ResultsError, collect_id, experiment_of, fresh_results, read_arrow, read_table

DEFAULT_GROUP = ("task", "variant", "hidden_size")
FAILED_STATUSES = ("diverged", "errored", "unfinished", "pending")  # not finished: left out of the statistics
EXCLUDED_COLUMN = "not in mean"
STOPPED = "stopped"  # ended early by a search's scheduler: neither a failure nor a full-budget result


def load_trials(location: str | Path) -> pd.DataFrame:
    """trials.parquet of an experiment (a local folder or a URI), or the file itself.

    One row per trial; schema in docs/results.md. Collected again first when missing or stale
    (`fresh_results`, docs/results.md "Freshness"), saying so on stderr.
    """
    return read_table(fresh_file(location, TRIALS_FILE))


def load_curves(location: str | Path) -> pd.DataFrame:
    """curves.parquet of an experiment (a local folder or a URI), or the file itself.

    Tidy rows (trial_id, step, metric, value); join trial columns with `.merge(trials, on="trial_id")`.
    Collected again first when missing or stale, like `load_trials`.
    """
    return read_table(fresh_file(location, CURVES_FILE))


def load_results(location: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, curves) of an experiment folder, from one collect: a collect that replaced the pair
    between the two reads is noticed (their collect ids differ) and the pair read again."""
    for _ in range(3):
        trials_path = fresh_file(location, TRIALS_FILE)  # the freshness rule, once for the pair
        curves_path = storage.join(location, CURVES_FILE) if storage.is_dir(location) else fresh_file(location, CURVES_FILE)
        trials, curves = read_arrow(trials_path), read_arrow(curves_path)
        if collect_id(trials) == collect_id(curves) or experiment_of(location) is not None or not storage.is_dir(location):
            return trials.to_pandas(), curves.to_pandas()
    raise ResultsError(f"{location}: trials.parquet and curves.parquet keep changing under this reader (another collect running?); try again")


def fresh_file(location: str | Path, name: str) -> str:
    """The path of `name` in an experiment folder after `fresh_results`; a Parquet file given by path
    inside an experiment folder is checked the same way (its folder's pair), else read as it is."""
    folder = str(location) if storage.is_dir(location) else experiment_of(location)
    if folder is None:
        return str(location)
    fresh_results(folder)
    return storage.join(folder, name) if storage.is_dir(location) else str(location)


def default_group(trials: pd.DataFrame) -> list[str]:
    """task, the task options that differ between trials (a sweep over `bptt`), variant, hidden_size."""
    return [DEFAULT_GROUP[0], *varying_task_options(trials), *DEFAULT_GROUP[1:]]


def varying_task_options(trials: pd.DataFrame) -> list[str]:
    """`config.task.*` columns that take several values within one task. In a sweep over two tasks an
    option of one is missing (NaN) for the other: that tells tasks apart, which `task` already does."""
    if "task" not in trials.columns:
        return [c for c in trials.columns if c.startswith("config.task.") and trials[c].nunique(dropna=False) > 1]
    return [
        c for c in trials.columns
        if c.startswith("config.task.") and c != "config.task.name" and (trials.groupby("task", sort=False)[c].nunique(dropna=False) > 1).any()
    ]


def missing(value: object) -> bool:
    """None or NaN: an option the row's task does not have (several tasks in one sweep)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def same_value(a: object, b: object) -> bool:
    """Equality where a missing value equals only another missing value (NaN != NaN otherwise)."""
    return missing(a) and missing(b) if missing(a) or missing(b) else bool(a == b)


def group_key(values: Sequence[object]) -> tuple:
    """A group's key with NaN made None, so that keys of several tasks' rows compare and hash equal."""
    return tuple(None if missing(v) else v for v in values)


def option_text(value: object) -> str:
    """A group column's cell: blank for an option the row's task lacks, `5` for a widened `5.0`."""
    if missing(value):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def table_groups(trials: pd.DataFrame, by: Sequence[str] | None = None) -> list[str]:
    """The group columns (default: `default_group`) plus what tells apart the configurations inside a group."""
    by = list(by or default_group(trials))
    check_group_columns(trials, by)
    return split_by_configuration(trials, by)


def group_label(by: Sequence[str], key: object) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{c}={v}" for c, v in zip(by, key))


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error with ddof=1, n) of the finite values; sem is NaN when n < 2."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0
    sem = float(finite.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(finite.mean()), sem, n


def default_metrics(trials: pd.DataFrame, stat: str) -> list[str]:
    """The evaluation metrics present (`val/*`, `test/*`), or `train/*` when there are none."""
    names = [c.split("/", 1)[1] for c in trials.columns if c.startswith(f"{stat}/")]
    evaluated = [n for n in names if n.split("/")[0] in ("val", "test")]
    return sorted(evaluated or names)


def check_group_columns(trials: pd.DataFrame, by: Sequence[str]) -> None:
    missing = [c for c in by if c not in trials.columns]
    if missing:
        raise ResultsError(f"--by: no column {missing[0]!r} (columns include: {', '.join(c for c in trials.columns if not c.startswith(('final/', 'best/')))})")


def summarize(trials: pd.DataFrame, by: Sequence[str] = DEFAULT_GROUP, metrics: Sequence[str] | None = None, stat: str = "final") -> pd.DataFrame:
    """One row per group: for each metric, `<metric>.mean`, `.sem` and `.n`; plus failure counts."""
    check_group_columns(trials, by)
    metrics = list(metrics or default_metrics(trials, stat))
    for metric in metrics:
        if f"{stat}/{metric}" not in trials.columns:
            available = ", ".join(default_metrics(trials, stat)) or "none"
            raise ResultsError(f"--metric: no {stat} values of {metric!r} (available: {available})")
    rows = []
    searched = bool((trials["status"] == STOPPED).any())  # a `stopped` count only where a scheduler stopped trials
    for key, group in trials.groupby(list(by), sort=False, dropna=False):  # first-seen: the sweep file's order
        check_one_configuration(group, f"row {group_label(by, key)}")  # callers split first (table_groups)
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        finished = group[group["status"] == "finished"]
        baseline = baselines_of(group.iloc[0])
        for metric in metrics:
            mean, sem, n = mean_sem(finished[f"{stat}/{metric}"].tolist())
            row.update({f"{metric}.mean": mean, f"{metric}.sem": sem, f"{metric}.n": n})
            if metric.split("/", 1)[-1] in baseline:  # `val/loss` -> the task's `loss` baseline
                row[f"{metric}.baseline"] = baseline[metric.split("/", 1)[-1]]
        for status in (*FAILED_STATUSES, STOPPED) if searched else FAILED_STATUSES:
            row[status] = int((group["status"] == status).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def task_spec_of(trial: pd.Series) -> dict:
    """The task spec of a trials.parquet row (its `config.task.*` columns): other tasks' options
    (NaN) left out, lists decoded from JSON, integers that Parquet widened to float made int again."""
    spec = {}
    for column, value in trial.items():
        if not str(column).startswith("config.task.") or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, str) and value.startswith("["):
            value = json.loads(value)
        spec[str(column).removeprefix("config.task.")] = int(value) if isinstance(value, float) and value.is_integer() else value
    return spec


def baselines_of(trial: pd.Series) -> dict[str, float]:
    """The task's trivial `baselines` (keyed without the split: `loss`, `acc`) for a trials.parquet
    row (its `config.task.*` columns), or {}."""
    # torch comes with the task registry: the Python loaders (`raylab.load_trials`) do without it.
    from raylab.spec.registry import build
    from raylab.spec.typecheck import ConfigError
    from raylab.tasks import TASKS

    try:
        task = build(TASKS, task_spec_of(trial), "task")
    except (ConfigError, KeyError):
        return {}  # a task renamed or removed since the trial ran: no baseline rather than a wrong one
    return dict(getattr(task, "baselines", {}))


def format_value(mean: float, sem: float, n: int, decimals: int | None = None) -> str:
    """`0.982 ± 0.003 (n=5)`; decimals follow the standard error's first significant digit."""
    if n == 0:
        return "—"
    if decimals is None:
        decimals = 3 if not (sem > 0 and math.isfinite(sem)) else min(max(-math.floor(math.log10(sem)), 1), 8)
    if n == 1 or not math.isfinite(sem):
        return f"{mean:.{decimals}f} (n={n})"
    return f"{mean:.{decimals}f} ± {sem:.{decimals}f} (n={n})"


def failed_text(row: pd.Series) -> str:
    return ", ".join(f"{int(row[s])} {s}" for s in FAILED_STATUSES if row.get(s, 0))


def display_table(summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], decimals: int | None = None) -> pd.DataFrame:
    """Group columns, one formatted `mean ± sem (n)` column per metric (and its baseline), and `not in mean`."""
    shown = summary[list(by)].astype(object).map(option_text)
    for metric in metrics:
        shown[metric] = [
            format_value(r[f"{metric}.mean"], r[f"{metric}.sem"], int(r[f"{metric}.n"]), decimals) for _, r in summary.iterrows()
        ]
        if f"{metric}.baseline" in summary.columns:
            shown[f"{metric} baseline"] = [f"{v:.4g}" if pd.notna(v) else "—" for v in summary[f"{metric}.baseline"]]
    shown[EXCLUDED_COLUMN] = [failed_text(r) for _, r in summary.iterrows()]
    if STOPPED in summary and summary[STOPPED].sum() > 0:
        shown["stopped early"] = [int(r[STOPPED]) for _, r in summary.iterrows()]
    return shown


def caption(stat: str) -> str:
    """What the numbers of a table are: which value of each trial, and which statistic over seeds."""
    which = "final value (at the last evaluation)" if stat == "final" else "best value (over all evaluations)"
    return f"{which} of each trial; mean ± standard error over the finished seeds (n)"


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_latex(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        text = str(value).replace("±", r"$\pm$").replace("—", "--")
        return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    lines = [r"\begin{tabular}{" + "l" * len(table.columns) + "}", r"\toprule"]
    lines.append(" & ".join(cell(c) for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(cell(v) for v in row) + r" \\" for row in table.itertuples(index=False))
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def render(summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], fmt: str, decimals: int | None = None) -> str:
    """Markdown or LaTeX of formatted cells; CSV keeps the numbers (mean, sem, n) as columns."""
    if fmt == "csv":
        return summary.to_csv(index=False).rstrip("\n")
    table = display_table(summary, by, metrics, decimals)
    return to_latex(table) if fmt == "latex" else to_markdown(table)

