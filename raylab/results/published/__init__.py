"""The seeds' published tables, and ours laid out like them: `raylab table --layout paper --compare`.

A published table is a YAML file in this folder (or anywhere, given by path):

    title: ...                      # what the table is
    source: ...                     # where the numbers come from
    metric: test/bpc                # our metric that the numbers are compared with
    scale: 1.0                      # ours are shown as value * scale + offset (100 for %, -100/100
    offset: 0.0                     #   for "error %" from an accuracy); standard errors * |scale|
    protocols:                      # the training/evaluation protocols behind the numbers, by key
      readme: the README's hyperparameters (nnRNN with Adam and clipping)
      supplement: the supplement's hyperparameters (RMSprop nnRNN, no clipping)
    ours: readme                    # the protocol the jobs that the columns select follow
    protocol: readme                # the rows' protocol unless a row names its own
    columns:                        # one column per (budget x T ...), selected by trial columns
      - {label: "~1.32M, T=150", where: {experiment: nnrnn-ptb-150-params}}
    rows:                           # models; `where` defaults to {variant: <label>}
      - {label: nnRNN, values: [[1.40, 0.003], ...]}   # [mean, standard error] or [mean] or null
      - {label: "IndRNN (6 layers, 50 steps)", where: {variant: IndRNN (6 layers), config.task.bptt: 50}, values: [[1.26]]}
      - {label: "nnRNN (supplement)", protocol: supplement, where: {variant: none}, values: [[1.47, 0.003], ...]}

A cell holds the finished trials that match both the row's and the column's `where` (keys are
trials.parquet columns, plus `experiment`, the sweep's folder name). Beside our mean ± standard
error (n) it prints the published value and the difference in standard errors,

    z = (ours - published) / sqrt(se_ours^2 + se_published^2),

with se_published = 0 where the paper gives none; `n/a` where either side has no standard error.

Protocols: a published number is set beside ours as a like-for-like comparison only when it comes
from the protocol our jobs follow (`ours`). When any row's protocol differs, or the table does not
state protocols, the table gets a `protocol` column naming each row's, the rows of another protocol
get no difference (`other protocol`), and `protocol_legend` says what each key means and which
protocol is ours: one protocol is never set beside another's numbers without saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from raylab.results.aggregate import format_value, mean_sem, missing, option_text, varying_task_options
from raylab.results.identity import check_one_configuration, split_by_configuration
from raylab.results.collect import ResultsError

FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Column:
    label: str
    where: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    label: str
    where: dict
    values: list  # per column: (mean, se or None) or None
    protocol: str | None = None  # a key of the table's `protocols`; None: not stated


@dataclass(frozen=True)
class PublishedTable:
    title: str
    metric: str
    columns: list[Column]
    rows: list[Row]
    source: str = ""
    scale: float = 1.0
    offset: float = 0.0
    protocols: dict = field(default_factory=dict)  # key -> description
    ours: str | None = None  # the key of the protocol our jobs follow; None: not stated

    def same_protocol(self, row: Row) -> bool:
        """The row's numbers come from the protocol of ours (both stated)."""
        return self.ours is not None and row.protocol == self.ours

    def states_mixed_protocols(self) -> bool:
        """Some row's numbers are not known to come from our protocol: show a protocol column."""
        return any(row.values != [None] * len(row.values) and not self.same_protocol(row) for row in self.rows)


def shipped_tables() -> list[str]:
    return sorted(path.stem for path in FOLDER.glob("*.yaml"))


def load_published(name_or_path: str | Path) -> PublishedTable:
    """A published table from a path, or by name from the shipped ones (`nnrnn-ptb-bpc`)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = FOLDER / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ResultsError(f"--compare: {name_or_path}: no such file or shipped table (shipped: {', '.join(shipped_tables())})")
    data = yaml.safe_load(path.read_text())
    columns = [Column(c["label"], dict(c.get("where") or {})) for c in data["columns"]]
    protocols = {str(k): str(v) for k, v in (data.get("protocols") or {}).items()}
    for key, what in (("ours", data.get("ours")), ("protocol", data.get("protocol"))):
        if what is not None and what not in protocols:
            raise ResultsError(f"{path}: {key}: {what!r} is not one of the table's protocols ({', '.join(protocols) or 'none listed'})")
    rows = []
    for row in data["rows"]:
        values = row.get("values") or [None] * len(columns)
        if len(values) != len(columns):
            raise ResultsError(f"{path}: row {row['label']!r} has {len(values)} values for {len(columns)} columns")
        parsed = [None if v is None else (float(v[0]), float(v[1]) if len(v) > 1 and v[1] is not None else None) for v in values]
        protocol = row.get("protocol", data.get("protocol"))
        if protocol is not None and protocol not in protocols:
            raise ResultsError(f"{path}: row {row['label']!r}: protocol {protocol!r} is not one of the table's protocols ({', '.join(protocols) or 'none listed'})")
        rows.append(Row(row["label"], dict(row.get("where") or {"variant": row["label"]}), parsed, protocol))
    return PublishedTable(
        data["title"], data["metric"], columns, rows, data.get("source", ""), float(data.get("scale", 1.0)), float(data.get("offset", 0.0)), protocols, data.get("ours")
    )


def protocol_legend(published: PublishedTable) -> list[str]:
    """Lines that say which protocol ours follow and where each published number comes from."""
    if published.ours is None:
        return ["Protocols: this table does not say which protocol its numbers or ours follow; differences may compare unlike runs."]
    lines = [f"Ours: {published.ours} ({published.protocols[published.ours]})."]
    used = dict.fromkeys(row.protocol for row in published.rows if row.values != [None] * len(row.values))
    for key in used:
        if key != published.ours:
            lines.append(f"{key if key is not None else 'not stated'}: {published.protocols.get(key, 'the table does not say')} (no difference computed: other protocol)")
    return lines


def se_difference(ours_mean: float, ours_sem: float, paper_mean: float, paper_sem: float | None) -> float:
    """(ours - paper) / sqrt(ours_sem^2 + paper_sem^2); NaN when no standard error is known."""
    se = math.hypot(ours_sem, paper_sem or 0.0)
    if not (math.isfinite(se) and se > 0 and math.isfinite(ours_mean)):
        return math.nan
    return (ours_mean - paper_mean) / se


def matching(trials: pd.DataFrame, where: dict) -> pd.DataFrame:
    """Finished trials whose columns equal every `where` value (none if a column is absent)."""
    mask = trials["status"] == "finished"
    for key, value in where.items():
        if key not in trials.columns:
            return trials.iloc[0:0]
        # A missing `where` value (an option the column's task lacks) matches only missing cells.
        mask &= trials[key].isna() if missing(value) else trials[key] == value
    return trials[mask]


def inferred_layout(trials: pd.DataFrame, metric: str) -> PublishedTable:
    """Rows = variants, columns = experiments x task options that vary (e.g. `config.task.bptt`),
    x any other configuration column that differs within one variant's cell (one cell, one configuration)."""
    keys = [k for k in trials.columns if k in ("experiment", "task", "budget") and trials[k].nunique(dropna=False) > 1]
    keys += varying_task_options(trials)  # within one task: another task's options are NaN, not a column each
    keys += split_by_configuration(trials, ["variant", *keys])[len(keys) + 1 :]
    combos = trials[keys].drop_duplicates().sort_values(keys).to_dict("records") if keys else [{}]
    columns = [Column(column_label(combo) or metric, combo) for combo in combos]
    rows = [Row(variant, {"variant": variant}, [None] * len(columns)) for variant in dict.fromkeys(trials["variant"])]
    return PublishedTable(metric, metric, columns, rows)


def column_label(combo: dict) -> str:
    """`task=copy, delay=5`: options the column's task lacks (NaN) left out."""
    return ", ".join(f"{k.removeprefix('config.task.').removeprefix('config.')}={option_text(v)}" for k, v in combo.items() if not missing(v))


def paper_table(trials: pd.DataFrame, published: PublishedTable, stat: str = "final", decimals: int | None = None, compare: bool = True) -> pd.DataFrame:
    """Rows = the table's models (then any other variant of ours), columns = its columns.

    With `compare`, each column is followed by the published value and the difference in standard
    errors; a `protocol` column names each row's protocol when not every row shares ours.
    """
    column = f"{stat}/{published.metric}"
    if column not in trials.columns:
        raise ResultsError(f"no {stat} values of {published.metric!r} in these results")
    listed = {row.where.get("variant") for row in published.rows}
    extra = [Row(v, {"variant": v}, [None] * len(published.columns)) for v in dict.fromkeys(trials["variant"]) if v not in listed]
    lines = []
    protocol_column = compare and published.states_mixed_protocols()
    matched = False
    for row in [*published.rows, *extra]:
        line = {"model": row.label}
        if protocol_column:
            line["protocol"] = "—" if row.values == [None] * len(row.values) else row.protocol or "not stated"
        for col, paper in zip(published.columns, row.values):
            cell = matching(trials, {**row.where, **col.where})
            check_one_configuration(cell, f"{published.title}: row {row.label!r}, column {col.label!r}")
            values = cell[column] * published.scale + published.offset
            mean, sem, n = mean_sem(values.tolist())  # already scaled: sem is in the table's units
            matched = matched or not cell.empty
            line[col.label] = format_value(mean, sem, n, decimals)
            if compare:
                line[f"{col.label} (paper)"] = "—" if paper is None else f"{paper[0]:g}" + ("" if paper[1] is None else f" ± {paper[1]:g}")
                other = paper is not None and published.ours is not None and not published.same_protocol(row)
                z = math.nan if paper is None or n == 0 or other else se_difference(mean, sem, *paper)
                line[f"{col.label} Δ/SE"] = "other protocol" if other else "n/a" if math.isnan(z) else f"{z:+.1f}"
        lines.append(line)
    if not matched and (trials["status"] == "finished").any():
        # A table of dashes with exit 0 would read as "nothing finished": say that nothing matched.
        raise ResultsError(f"{published.title}: no finished trial matches any row x column of the table (columns select {', '.join(sorted({k for c in published.columns for k in c.where})) or 'nothing'})")
    return pd.DataFrame(lines)


def experiment_name(location: str | Path) -> str:
    """The sweep's folder name of an experiment path (`results/nnrnn-ptb-150-params[/run-*]`)."""
    path = Path(str(location).rstrip("/"))
    return path.parent.name if path.name.startswith("run-") else path.name
