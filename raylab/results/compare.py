"""`raylab table --vs LABEL`: each row's difference to a reference variant, with Welch's t-test over seeds.

Seeds are the unit: each finished seed's final (or best) value is one observation. The difference is
the row's mean minus the reference's, its 95% confidence interval and the two-sided p-value come from
`scipy.stats.ttest_ind(..., equal_var=False)` (Welch: no equal-variance assumption).

The reference row of a row is the LABEL row of the same task (task, its options, the parameter
budget); when LABEL has several hidden sizes there, the one of the same hidden size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from raylab.results.aggregate import display_table, group_key, same_value, to_latex, to_markdown
from raylab.results.collect import ResultsError

CONFIDENCE = 0.95


def header(label: str, stat: str) -> str:
    return (
        f"Δ = row mean − {label} mean of the {stat} value; seeds are the unit (each finished seed is one observation); "
        f"{CONFIDENCE:.0%} CI and two-sided p from Welch's t-test (scipy.stats.ttest_ind, equal_var=False)."
    )


def welch(values: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    """(difference of means, CI low, CI high, p); NaN where either side has fewer than 2 seeds."""
    difference = float(values.mean() - reference.mean()) if len(values) and len(reference) else math.nan
    if len(values) < 2 or len(reference) < 2:
        return difference, math.nan, math.nan, math.nan
    test = stats.ttest_ind(values, reference, equal_var=False)
    interval = test.confidence_interval(CONFIDENCE)
    return difference, float(interval.low), float(interval.high), float(test.pvalue)


def matching_keys(by: Sequence[str]) -> list[str]:
    """Group columns that say which task a row is about (not which model or which settings)."""
    return [c for c in by if c in ("task", "task_label", "budget") or c.startswith("config.task.")]


def finite_values(group: pd.DataFrame, column: str) -> np.ndarray:
    values = group.loc[group["status"] == "finished", column].astype(float).to_numpy()
    return values[np.isfinite(values)]


def versus(trials: pd.DataFrame, summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], stat: str, label: str) -> pd.DataFrame:
    """Per summary row and metric: `<metric>.diff`, `.low`, `.high`, `.p` and `<metric>.vs` ('row', 'reference', or why not)."""
    if "variant" not in by:
        raise ResultsError("--vs: the table must group by variant (add it to --by)")
    labels = sorted(trials["variant"].astype(str).unique())
    if label not in labels:
        raise ResultsError(f"--vs: no variant {label!r} (variants: {', '.join(labels)})")
    keys = matching_keys(by)
    # Keys with NaN made None: a sweep over two tasks has NaN in the other task's options, and NaN
    # keys neither compare nor hash equal.
    groups = {group_key(key if isinstance(key, tuple) else (key,)): group for key, group in trials.groupby(list(by), sort=True, dropna=False)}
    rows = []
    for _, row in summary.iterrows():
        key = group_key([row[c] for c in by])
        candidates = [k for k in groups if dict(zip(by, k))["variant"] == label and all(same_value(dict(zip(by, k))[c], row[c]) for c in keys)]
        if len(candidates) > 1 and "hidden_size" in by:
            candidates = [k for k in candidates if same_value(dict(zip(by, k))["hidden_size"], row["hidden_size"])]
        out: dict[str, object] = {}
        for metric in metrics:
            column = f"{stat}/{metric}"
            if row["variant"] == label and key in candidates:
                out[f"{metric}.vs"] = "reference"
                continue
            if len(candidates) != 1:
                out[f"{metric}.vs"] = "no reference row" if not candidates else "several reference rows"
                continue
            diff, low, high, p = welch(finite_values(groups[key], column), finite_values(groups[candidates[0]], column))
            out.update({f"{metric}.vs": "row", f"{metric}.diff": diff, f"{metric}.low": low, f"{metric}.high": high, f"{metric}.p": p})
        rows.append(out)
    return pd.DataFrame(rows, index=summary.index)


def signed(value: float, decimals: int) -> str:
    return f"{value:+.{decimals}f}".replace("-", "−")


def vs_text(numbers: pd.Series, metric: str, decimals: int) -> tuple[str, str]:
    """(`+0.012 [−0.003, +0.027]`, `0.031`) for one row and metric."""
    kind = numbers.get(f"{metric}.vs")
    if kind != "row":
        return (f"({kind})" if kind else "—"), ""
    diff, low, high, p = (numbers[f"{metric}.{k}"] for k in ("diff", "low", "high", "p"))
    if not math.isfinite(diff):
        return "—", ""
    if not math.isfinite(low):
        return f"{signed(diff, decimals)} (n<2 on a side)", ""
    return f"{signed(diff, decimals)} [{signed(low, decimals)}, {signed(high, decimals)}]", f"{p:.2g}" if p >= 0.001 else "<0.001"


def render_vs(trials: pd.DataFrame, summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], stat: str, fmt: str, label: str, decimals: int | None = None) -> str:
    """The summary table with, per metric, `Δ vs LABEL [95% CI]` and `p` columns, under a header line."""
    numbers = versus(trials, summary, by, metrics, stat, label)
    if fmt == "csv":
        return pd.concat([summary, numbers], axis=1).to_csv(index=False).rstrip("\n")
    table = display_table(summary, by, metrics, decimals)
    for metric in metrics:
        sems = summary[f"{metric}.sem"].to_numpy(dtype=float)
        places = decimals if decimals is not None else default_decimals(sems)
        texts = [vs_text(numbers.loc[i], metric, places) for i in summary.index]
        table[f"{metric} Δ vs {label} [95% CI]"] = [t for t, _ in texts]
        table[f"{metric} p (Welch)"] = [p for _, p in texts]
    body = to_latex(table) if fmt == "latex" else to_markdown(table)
    return f"{header(label, stat)}\n\n{body}"


def default_decimals(sems: np.ndarray) -> int:
    """Decimals from the smallest positive standard error, as the mean ± SE cells have."""
    positive = sems[np.isfinite(sems) & (sems > 0)]
    return min(max(-math.floor(math.log10(positive.min())), 1), 8) if len(positive) else 3
