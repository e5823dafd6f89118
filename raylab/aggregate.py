"""Across seeds: mean, standard error of the mean and n -> tables (Markdown, LaTeX, CSV); plots.py draws.

The standard error is the sample standard deviation (ddof=1) over sqrt(n). Only finished seeds enter
the statistics; diverged, errored and unfinished seeds are counted in a `failed` column, never dropped
silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raylab import storage
from raylab.results import TRIALS_FILE, ResultsError, read_table

DEFAULT_GROUP = ("task", "variant", "hidden_size")
FAILED_STATUSES = ("diverged", "errored", "unfinished", "pending")


def load_trials(location: str | Path) -> pd.DataFrame:
    """trials.parquet of an experiment (a local folder or a URI), or the file itself."""
    return read_table(storage.join(location, TRIALS_FILE) if storage.is_dir(location) else location)


def default_group(trials: pd.DataFrame) -> list[str]:
    """task, the task options that differ between trials (a sweep over `bptt`), variant, hidden_size."""
    varying = [c for c in trials.columns if c.startswith("config.task.") and trials[c].nunique(dropna=False) > 1]
    return [DEFAULT_GROUP[0], *varying, *DEFAULT_GROUP[1:]]


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


def summarize(trials: pd.DataFrame, by: Sequence[str] = DEFAULT_GROUP, metrics: Sequence[str] | None = None, stat: str = "final") -> pd.DataFrame:
    """One row per group: for each metric, `<metric>.mean`, `.sem` and `.n`; plus failure counts."""
    missing = [c for c in by if c not in trials.columns]
    if missing:
        raise ResultsError(f"--by: no column {missing[0]!r} (columns include: {', '.join(c for c in trials.columns if not c.startswith(('final/', 'best/')))})")
    metrics = list(metrics or default_metrics(trials, stat))
    for metric in metrics:
        if f"{stat}/{metric}" not in trials.columns:
            available = ", ".join(default_metrics(trials, stat)) or "none"
            raise ResultsError(f"--metric: no {stat} values of {metric!r} (available: {available})")
    rows = []
    for key, group in trials.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        finished = group[group["status"] == "finished"]
        for metric in metrics:
            mean, sem, n = mean_sem(finished[f"{stat}/{metric}"].tolist())
            row.update({f"{metric}.mean": mean, f"{metric}.sem": sem, f"{metric}.n": n})
        for status in FAILED_STATUSES:
            row[status] = int((group["status"] == status).sum())
        rows.append(row)
    return pd.DataFrame(rows)


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
    """Group columns, one formatted `mean ± sem (n)` column per metric, and `failed`."""
    shown = summary[list(by)].copy()
    for metric in metrics:
        shown[metric] = [
            format_value(r[f"{metric}.mean"], r[f"{metric}.sem"], int(r[f"{metric}.n"]), decimals) for _, r in summary.iterrows()
        ]
    shown["failed"] = [failed_text(r) for _, r in summary.iterrows()]
    return shown


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

