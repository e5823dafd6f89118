"""`raylab report`: one self-contained HTML file of one or more experiments' results.

What it shows (docs/report.md): the mean ± standard error (n) table with its not-in-mean counts and
baselines, sortable; learning curves per configuration (the mean with a ±1 s.e. band and each
finished seed as a faint line, the task's baseline dashed; clicking a legend entry hides that
configuration); the options whose values differ between rows; for a search, the score of each
sample against each searched parameter, stopped samples marked; with `vs`, each row's difference to
a reference variant with its 95% interval; with `compare`, the published table beside ours; and
where the numbers came from (runs, commits, versions, when they were collected).

The figures are Plotly's: plotly.py ships plotly.js inside its wheel, so the report inlines it once
and opens offline (no CDN), with hover, zoom, legend toggling, log axes and error bars built in.
The page's own script is only the table sorting. Every number comes from the same functions as
`raylab table`, `plot` and `table --vs`, so the report cannot disagree with them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from raylab.planning import storage
from raylab.results.aggregate import (
    EXCLUDED_COLUMN, FAILED_STATUSES, STOPPED, caption, default_group, default_metrics, display_table, load_results, summarize, table_groups,
)
from raylab.results.collect import MANIFEST, ResultsError, run_locations
from raylab.results.identity import differing_columns
from raylab.results.plots import XAxis, band, curve_label, curve_points, robust_limits
from raylab.results.published import experiment_name, load_published, paper_table, protocol_legend
from raylab.spec.typecheck import ConfigError

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LOG_SPAN = 30.0  # `logy` unset: a log axis when a metric's positive curves span more than 1.5 decades
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False}


@dataclass(frozen=True)
class ReportOptions:
    """`raylab report`'s options, and a sweep file's `report:` section (raylab.spec.config.ReportSpec)."""

    metrics: list[str] = field(default_factory=list)  # table and curves; empty: every val/ and test/ metric
    by: list[str] = field(default_factory=list)  # empty: as the table (task, task options that vary, variant, hidden_size)
    x: XAxis = "step"
    logy: bool | None = None  # None: per metric, log when its curves span more than 1.5 decades
    stat: str = "final"
    compare: str | None = None  # a published table (name or file) laid beside ours
    vs: str | None = None  # a variant label: each row's difference to it


@dataclass
class Experiment:
    location: str
    name: str
    trials: pd.DataFrame
    curves: pd.DataFrame
    manifests: list[tuple[str, dict]]  # (run folder, its raylab.json)
    collected: str  # when trials.parquet was written (UTC)


@dataclass
class Figure:
    title: str
    data: list[dict]
    layout: dict
    note: str = ""


def read_experiment(location: str) -> Experiment:
    trials, curves = load_results(location)
    manifests = []
    try:
        runs = run_locations(location)
    except ResultsError:  # Parquet files without their runs (copied, or written by hand): no run provenance
        runs = []
    for run in runs:
        try:
            manifests.append((run, json.loads(storage.read_text(storage.join(run, MANIFEST)))))
        except (OSError, ValueError):
            manifests.append((run, {}))  # provenance then comes from the trial rows alone
    trials_file = storage.join(location, "trials.parquet") if storage.is_dir(location) else str(location)
    fs, path = storage.filesystem(trials_file)
    mtime = fs.get_file_info(path).mtime
    written = mtime.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if mtime else "unknown"
    return Experiment(location, experiment_name(location), trials, curves, manifests, written)


# ---------------------------------------------------------------- numbers


def combined(experiments: Sequence[Experiment]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The experiments' trials and curves in one pair, trial ids made unique and `experiment` added."""
    trials, curves = [], []
    for experiment in experiments:
        prefix = f"{experiment.name}/" if len(experiments) > 1 else ""
        trials.append(experiment.trials.assign(experiment=experiment.name, trial_id=prefix + experiment.trials["trial_id"].astype(str)))
        curves.append(experiment.curves.assign(trial_id=prefix + experiment.curves["trial_id"].astype(str)))
    return pd.concat(trials, ignore_index=True), pd.concat(curves, ignore_index=True)


def requested_groups(trials: pd.DataFrame, options: ReportOptions, several: bool) -> list[str]:
    return (["experiment"] if several else []) + list(options.by or default_group(trials))


def wants_log(values: Sequence[float], option: bool | None) -> bool:
    if option is not None:
        return option
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    return bool(data.size and (data > 0).all() and np.percentile(data, 95) / data.min() > LOG_SPAN)


def rgba(color: str, alpha: float) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def curve_figures(trials: pd.DataFrame, curves: pd.DataFrame, metrics: Sequence[str], requested: list[str], options: ReportOptions, colors: dict[str, str]) -> list[Figure]:
    """One figure per metric: per configuration its seeds (faint), its ±1 s.e. band and its mean, in
    one legend group (a click on the legend entry hides all three), and the task's baselines dashed.
    `requested` are the groups asked for: `curve_points` adds what tells configurations apart, as
    the table does, so that a curve's label is its table row's."""
    with_curves = [m for m in metrics if m in set(curves["metric"])]
    if not with_curves or not (trials["status"] == "finished").any():
        return []
    points, baselines = curve_points(trials, curves, with_curves, requested, options.x, "the report's experiments")
    seeds = dict(zip(trials["trial_id"], trials["seed"]))
    figures = []
    for metric in with_curves:
        data, centers, levels = [], [], set()
        for label, group in points[points["metric"] == metric].groupby("label", sort=False):
            color = colors.get(label, COLORS[len(colors) % len(COLORS)])
            colors.setdefault(label, color)
            for trial_id, seed_points in group.groupby("trial_id", sort=False):
                seed_points = seed_points.sort_values(options.x)
                data.append(dict(type="scatter", mode="lines", x=seed_points[options.x].tolist(), y=seed_points["value"].tolist(), legendgroup=label, showlegend=False,
                                 name=f"{label}, seed {seeds.get(trial_id)}", line=dict(color=rgba(color, 0.35), width=0.8),
                                 meta=dict(kind="seed", configuration=label, seed=int(seeds.get(trial_id, -1)))))
            stats = band(group, options.x, "mean")
            data.append(dict(type="scatter", mode="lines", x=[*stats.x.tolist(), *stats.x[::-1].tolist()], y=[*stats.low.tolist(), *stats.high[::-1].tolist()],
                             fill="toself", fillcolor=rgba(color, 0.2), line=dict(width=0), hoverinfo="skip", legendgroup=label, showlegend=False,
                             name=f"{label} ±1 s.e.", meta=dict(kind="band", configuration=label)))
            data.append(dict(type="scatter", mode="lines", x=stats.x.tolist(), y=stats.center.tolist(), legendgroup=label, name=f"{label} (n={stats.n})",
                             line=dict(color=color, width=2), meta=dict(kind="mean", configuration=label, n=stats.n)))
            centers.extend(stats.center.tolist())
            level = baselines.get(label, {}).get(metric.split("/", 1)[-1])
            if level is not None:
                levels.add(round(level, 12))
        log = wants_log([*centers, *levels], options.logy)
        xs = points.loc[points["metric"] == metric, options.x]
        for level in sorted(levels):
            data.append(dict(type="scatter", mode="lines", x=[float(xs.min()), float(xs.max())], y=[level, level], name=f"baseline {level:.4g}",
                             line=dict(color="black", dash="dash", width=1), meta=dict(kind="baseline")))
        yaxis: dict = dict(title=metric, type="log" if log else "linear")
        limits = robust_limits([*centers, *levels], log)
        note = ""
        if limits is not None:
            yaxis["range"] = [math.log10(limits[0]), math.log10(limits[1])] if log else list(limits)
            above = [v for v in centers if math.isfinite(v) and v > limits[1]]
            note = f"off the axis (zoom out to see): mean up to {max(above):.3g}" if above else ""
        layout = dict(xaxis=dict(title="training step" if options.x == "step" else "epoch"), yaxis=yaxis, legend=dict(font=dict(size=11)),
                      margin=dict(l=60, r=20, t=30, b=50), height=420, template="plotly_white", hovermode="closest")
        figures.append(Figure(f"{metric}: mean ± 1 s.e. over finished seeds, each seed faint" + (", log y" if log else ""), data, layout, note))
    return figures


def configuration_diff(trials: pd.DataFrame, groups: list[str], labels: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per row, the configuration options whose values differ between rows; and the options all rows share."""
    differing = [c for c in differing_columns(trials) if c not in ("config.search_base",)]
    shared = {c: trials[c].iloc[0] for c in trials.columns if (c == "hidden_size" or c.startswith("config.")) and c not in differing}
    rows = []
    for label, (_, group) in zip(labels, trials.groupby(groups, sort=False, dropna=False)):
        first = group.iloc[0]
        rows.append({"configuration": label, **{c.removeprefix("config."): cell_text(first[c]) for c in differing}})
    return pd.DataFrame(rows), {c.removeprefix("config."): cell_text(v) for c, v in shared.items() if cell_text(v) != ""}


def cell_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def search_figures(experiment: Experiment, trials: pd.DataFrame, stat: str) -> list[Figure]:
    """For a searched experiment: the score of each sample against each searched parameter."""
    from raylab.results.promote import default_metric  # torch comes with promote's sweep files: only for a search

    manifest = experiment.manifests[-1][1] if experiment.manifests else {}
    search = (manifest.get("sweep") or {}).get("search")
    mine = trials[trials["experiment"] == experiment.name]
    if not search or mine.empty:
        return []
    metric, mode = default_metric(manifest, json.loads(mine["trial_json"].iloc[0]))
    column = f"{stat}/{metric}"
    if column not in mine.columns:
        return []
    slots = mine["task"].astype(str) + " " + mine["variant"].astype(str) + " " + mine["hidden_size"].astype(str)
    figures = []
    for key, spec in search["space"].items():
        name = key if key == "hidden_size" else f"config.{key}"
        if name not in mine.columns:
            continue
        data = []
        for index, slot in enumerate(dict.fromkeys(slots)):
            color = COLORS[index % len(COLORS)]
            rows = mine[slots == slot]
            for stopped in (False, True):
                chosen = rows[(rows["status"] == STOPPED) == stopped]
                chosen = chosen[pd.to_numeric(chosen[column], errors="coerce").notna()]
                if chosen.empty:
                    continue
                data.append(dict(type="scatter", mode="markers", x=chosen[name].tolist(), y=chosen[column].astype(float).tolist(), legendgroup=slot,
                                 name=f"{slot}, stopped early" if stopped else f"{slot} ({chosen['status'].iloc[0] if not stopped else 'stopped'})",
                                 text=chosen["trial_id"].tolist(), hovertemplate="%{text}<br>" + key + "=%{x}<br>" + metric + "=%{y}<extra></extra>",
                                 marker=dict(color=color, symbol="x" if stopped else "circle", size=8 if stopped else 9, opacity=0.6 if stopped else 0.9),
                                 meta=dict(kind="sample", slot=slot, stopped=stopped)))
        unscored = int(mine[column].isna().sum())
        log_x = isinstance(spec, dict) and "loguniform" in spec
        scores = pd.to_numeric(mine[column], errors="coerce").dropna().tolist()
        log_y = wants_log(scores, None)
        yaxis: dict = dict(title=f"{stat} {metric}", type="log" if log_y else "linear")
        limits = robust_limits(scores, log_y)  # one exploding sample must not flatten the others
        notes = [f"{unscored} sample(s) without a {stat} {metric} (diverged, errored or unfinished) are not drawn"] if unscored else []
        if limits is not None:
            yaxis["range"] = [math.log10(limits[0]), math.log10(limits[1])] if log_y else list(limits)
            above = [v for v in scores if v > limits[1]]
            notes += [f"{len(above)} sample(s) off the axis (zoom out to see), up to {max(above):.3g}"] if above else []
        layout = dict(xaxis=dict(title=key, type="log" if log_x else "-"), yaxis=yaxis, height=380, template="plotly_white",
                      margin=dict(l=60, r=20, t=30, b=50), hovermode="closest")
        note = "; ".join(notes)
        figures.append(Figure(f"{experiment.name}: {stat} {metric} ({mode}imized) against {key}; × marks samples the scheduler stopped early", data, layout, note))
    return figures


def vs_section(trials: pd.DataFrame, summary: pd.DataFrame, groups: list[str], labels: list[str], metrics: Sequence[str], options: ReportOptions) -> tuple[pd.DataFrame, list[Figure], str]:
    """`table --vs`'s numbers: the table's Δ [95% CI] and p columns, and per metric a forest plot."""
    from raylab.results.compare import default_decimals, header, versus, vs_text  # scipy: only with `vs`

    numbers = versus(trials, summary, groups, metrics, options.stat, options.vs)
    columns: dict[str, list[str]] = {"configuration": labels}
    figures = []
    for metric in metrics:
        places = default_decimals(summary[f"{metric}.sem"].to_numpy(dtype=float))
        texts = [vs_text(numbers.loc[i], metric, places) for i in summary.index]
        columns[f"{metric} Δ vs {options.vs} [95% CI]"] = [t for t, _ in texts]
        columns[f"{metric} p (Welch)"] = [p for _, p in texts]
        shown = [(label, numbers.loc[i]) for label, i in zip(labels, summary.index) if numbers.loc[i].get(f"{metric}.vs") == "row" and math.isfinite(numbers.loc[i][f"{metric}.diff"])]
        if shown:
            diffs = [float(row[f"{metric}.diff"]) for _, row in shown]
            plus = [float(row[f"{metric}.high"]) - d if math.isfinite(row[f"{metric}.high"]) else 0.0 for (_, row), d in zip(shown, diffs)]
            minus = [d - float(row[f"{metric}.low"]) if math.isfinite(row[f"{metric}.low"]) else 0.0 for (_, row), d in zip(shown, diffs)]
            data = [dict(type="scatter", mode="markers", x=diffs, y=[label for label, _ in shown], name=f"Δ {metric}",
                         error_x=dict(type="data", array=plus, arrayminus=minus, visible=True), marker=dict(size=9, color=COLORS[0]), meta=dict(kind="difference"))]
            ends = [0.0, *(d + p for d, p in zip(diffs, plus)), *(d - m for d, m in zip(diffs, minus))]
            pad = 0.05 * ((max(ends) - min(ends)) or 1.0)
            layout = dict(xaxis=dict(title=f"Δ {options.stat} {metric} vs {options.vs}", range=[min(ends) - pad, max(ends) + pad]), yaxis=dict(automargin=True),
                          shapes=[dict(type="line", x0=0, x1=0, yref="paper", y0=0, y1=1, line=dict(color="black", dash="dash", width=1))],
                          height=120 + 40 * len(shown), template="plotly_white", margin=dict(l=20, r=20, t=20, b=50), showlegend=False)
            figures.append(Figure(f"{metric}: difference to {options.vs} with its 95% interval (Welch)", data, layout))
    return pd.DataFrame(columns), figures, header(options.vs, options.stat)


def compare_section(experiments: Sequence[Experiment], options: ReportOptions) -> tuple[list[tuple[str, pd.DataFrame]], list[str]]:
    published = load_published(options.compare)
    trials = pd.concat([e.trials.assign(experiment=e.name) for e in experiments], ignore_index=True)
    table = paper_table(trials, published, options.stat, None, compare=True)
    source = f" ({published.source})" if published.source else ""
    return [(f"{published.title}{source}, {options.stat} {published.metric}", table)], protocol_legend(published)


# ---------------------------------------------------------------- HTML


def sort_key(value: object) -> str:
    """The cell's `data-sort`: its number where it has one (a mean ± s.e. cell sorts by the mean)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value)):
        return repr(float(value))
    text = str(value).replace("−", "-").split(" ")[0].split("[")[0]
    try:
        return repr(float(text))
    except ValueError:
        return ""


def html_table(frame: pd.DataFrame, table_id: str, sort: dict[str, list[float]] | None = None, swatches: dict[str, str] | None = None, swatch_column: str | None = None) -> str:
    sort = sort or {}
    head = "".join(f'<th title="click to sort">{html.escape(str(c))}</th>' for c in frame.columns)
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for column, value in zip(frame.columns, row):
            key = sort[column][i] if column in sort else sort_key(value)
            text = html.escape(str(value))
            if swatches and column == swatch_column and str(value) in swatches:
                text = f'<span class="swatch" style="background:{swatches[str(value)]}"></span>{text}'
            cells.append(f'<td data-sort="{html.escape(str(key))}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def figure_html(figure: Figure, number: int) -> str:
    spec = json.dumps(plain({"data": figure.data, "layout": figure.layout, "config": PLOTLY_CONFIG}), allow_nan=False)
    spec = spec.replace("<", "\\u003c")  # the same JSON, and no `</script>` inside the tag
    note = f'<p class="note">{html.escape(figure.note)}</p>' if figure.note else ""
    return (f'<figure><figcaption>{html.escape(figure.title)}</figcaption>{note}<div class="plot" id="figure-{number}"></div>'
            f'<script type="application/json" class="figure-spec" data-target="figure-{number}">{spec}</script></figure>')


def plain(value: object) -> object:
    """JSON-ready data: numpy scalars and arrays as Python ones, NaN and infinities as null (a gap in
    a curve), anything else as its text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    return str(value)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " ▲"; } th.sorted-desc::after { content: " ▼"; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; border-radius: 2px; }
.warning { background: #fff4e5; border: 1px solid #f0b000; padding: 0.6em 1em; }
.note, figcaption { color: #555; font-size: 0.9em; }
figure { margin: 1em 0; } .plot { width: 100%; }
nav a { margin-right: 1em; } dl { font-size: 0.9em; } dt { font-weight: 600; } code { font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""

SCRIPT = """
document.querySelectorAll('script.figure-spec').forEach(function (tag) {
  var spec = JSON.parse(tag.textContent);
  Plotly.newPlot(tag.dataset.target, spec.data, spec.layout, spec.config);
});
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = !th.classList.contains('sorted-asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
    th.classList.add(ascending ? 'sorted-asc' : 'sorted-desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.sort, y = b.cells[index].dataset.sort, order;
      if (x !== '' && y !== '') { order = parseFloat(x) - parseFloat(y); }
      else if (x !== '' || y !== '') { order = x === '' ? 1 : -1; return order; }
      else { order = a.cells[index].textContent.localeCompare(b.cells[index].textContent); }
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def provenance_html(experiments: Sequence[Experiment]) -> str:
    parts = []
    for experiment in experiments:
        trials = experiment.trials
        counts = trials["status"].value_counts()
        items = [("folder", experiment.location), ("collected", experiment.collected), ("trials", ", ".join(f"{n} {s}" for s, n in counts.items()))]
        for column, what in (("git_commit", "git commits"), ("code_version", "code versions")):
            if column in trials:
                values = trials[column].dropna().astype(str).value_counts()
                items.append((what, "; ".join(f"{v} ({n} trials)" for v, n in values.items()) or "unknown"))
        versions = [c for c in trials.columns if c.startswith("version.")]
        if versions:
            texts = [f"{c.removeprefix('version.')} {'/'.join(sorted(trials[c].dropna().astype(str).unique())) or '?'}" for c in versions]
            items.append(("versions", ", ".join(texts)))
        body = "".join(f"<dt>{html.escape(k)}</dt><dd><code>{html.escape(str(v))}</code></dd>" for k, v in items)
        runs = "".join(
            f"<tr><td>{html.escape(Path(run).name)}</td><td>{html.escape(str(m.get('created', '?')))}</td><td>{html.escape(str(m.get('sweep_file', '?')))}</td>"
            f"<td>{html.escape(str(((m.get('runtime') or {}).get('provenance') or {}).get('git_commit') or '?'))}</td><td>{len(m.get('trials') or [])}</td></tr>"
            for run, m in experiment.manifests
        )
        parts.append(f"<h3>{html.escape(experiment.name)}</h3><dl>{body}</dl>"
                     f"<table><thead><tr><th>run folder</th><th>started</th><th>sweep file</th><th>git commit</th><th>trials</th></tr></thead><tbody>{runs}</tbody></table>")
    return "".join(parts)


def unfinished_banner(trials: pd.DataFrame) -> str:
    """Say at the top when some trials are not in the means: a report of an interrupted sweep must not look done."""
    counts = {s: int((trials["status"] == s).sum()) for s in FAILED_STATUSES}
    missing = {s: n for s, n in counts.items() if n}
    if not missing:
        return ""
    text = ", ".join(f"{n} {s}" for s, n in missing.items())
    hint = (" Continue an interrupted sweep with <code>raylab resume</code> or the same <code>raylab run</code>."
            if missing.keys() & {"unfinished", "pending"} else "")
    return (f'<p class="warning" id="unfinished"><strong>{sum(missing.values())} of {len(trials)} trials are not in the means</strong> ({text}); '
            f"the table counts them in its “{EXCLUDED_COLUMN}” column.{hint}</p>")


def report_html(locations: Sequence[str], options: ReportOptions = ReportOptions(), command: str = "") -> str:
    import plotly.offline

    several = len(locations) > 1
    if several and options.vs:
        raise ResultsError("--vs: compares the rows of one experiment; give one experiment folder")
    experiments = [read_experiment(location) for location in locations]
    trials, curves = combined(experiments)
    requested = requested_groups(trials, options, several)
    groups = table_groups(trials, requested)
    metrics = list(options.metrics or default_metrics(trials, options.stat))
    summary = summarize(trials, groups, metrics, options.stat)
    labels = [curve_label(groups, tuple(row), len(requested)) for row in summary[groups].itertuples(index=False)]
    colors = {label: COLORS[i % len(COLORS)] for i, label in enumerate(labels)}
    shown = display_table(summary, groups, metrics)
    shown.insert(0, "configuration", labels)
    sort = {metric: [sort_key(v) for v in summary[f"{metric}.mean"]] for metric in metrics}

    figures: list[Figure] = []
    sections = []
    sections.append(("summary", "Results", f'<p class="note">{html.escape(caption(options.stat))}. Click a column to sort.</p>'
                     f'<div class="scroll">{html_table(shown, "summary-table", sort, colors, "configuration")}</div>'))
    if options.vs:
        vs_table, vs_figures, vs_header = vs_section(trials, summary, groups, labels, metrics, options)
        blocks = "".join(figure_html(f, len(figures) + i) for i, f in enumerate(vs_figures))
        figures += vs_figures
        sections.append(("vs", f"Differences to {options.vs}", f'<p class="note">{html.escape(vs_header)}</p><div class="scroll">{html_table(vs_table, "vs-table")}</div>{blocks}'))
    if options.compare:
        tables, legend = compare_section(experiments, options)
        body = "".join(f"<h3>{html.escape(title)}</h3><div class='scroll'>{html_table(table, f'compare-table-{i}')}</div>" for i, (title, table) in enumerate(tables))
        sections.append(("compare", "Published numbers beside ours", body + "".join(f'<p class="note">{html.escape(line)}</p>' for line in legend)))
    curve_list = curve_figures(trials, curves, metrics, requested, options, colors)
    blocks = "".join(figure_html(f, len(figures) + i) for i, f in enumerate(curve_list))
    figures += curve_list
    sections.append(("curves", "Learning curves", blocks or '<p class="note">No finished trial has curves of these metrics.</p>'))
    diff, shared = configuration_diff(trials, groups, labels)
    diff_body = (f'<div class="scroll">{html_table(diff, "diff-table", swatches=colors, swatch_column="configuration")}</div>' if diff.shape[1] > 1
                 else '<p class="note">Every row has the same configuration options.</p>')
    shared_list = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in sorted(shared.items()))
    sections.append(("diff", "What differs between rows", f'<p class="note">Only the options whose values differ between rows (seeds aside).</p>{diff_body}'
                     f"<details><summary>Options all rows share ({len(shared)})</summary><table>{shared_list}</table></details>"))
    search_list = [f for e in experiments for f in search_figures(e, trials, options.stat)]
    if search_list:
        blocks = "".join(figure_html(f, len(figures) + i) for i, f in enumerate(search_list))
        figures += search_list
        sections.append(("search", "Search: score against each searched parameter", blocks))
    sections.append(("provenance", "Provenance", provenance_html(experiments)))

    title = ", ".join(e.name for e in experiments)
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = "".join(f'<a href="#{key}">{html.escape(heading)}</a>' for key, heading, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>{content}</section>' for key, heading, content in sections)
    made = f"Written {written} by raylab" + (f": <code>{html.escape(command)}</code>" if command else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>raylab report: {html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<h1>raylab report: {html.escape(title)}</h1><p class=\"note\">{made}</p>{unfinished_banner(trials)}<nav>{nav}</nav>{body}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(locations: Sequence[str], out: str | Path, options: ReportOptions = ReportOptions(), command: str = "") -> Path:
    """Write `report_html` to `out` (a local path; a sweep's `report:` uploads it for a bucket)."""
    text = report_html(locations, options, command)
    out = Path(out)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(out)  # a reader never sees half a report, and a failure keeps the previous one
    return out


def check_out(out: str | Path) -> None:
    if Path(str(out)).suffix.lower() not in (".html", ".htm"):
        raise ResultsError(f"--out {out}: a report is one .html file")


def check_report_section(sweep) -> None:
    """A sweep file's `report.compare` names a readable published table: checked before Ray starts
    (the spec layer below cannot read the tables), so a typo does not surface after the sweep ran."""
    report = sweep.spec.report
    if report is None or report.compare is None:
        return
    try:
        load_published(report.compare)
    except ResultsError as error:
        raise ConfigError(f"{sweep.path}: report.compare: {str(error).removeprefix('--compare: ')}") from None


def options_of(spec) -> ReportOptions:
    """A sweep file's `report:` section (raylab.spec.config.ReportSpec) as `ReportOptions`."""
    return ReportOptions(metrics=list(spec.metrics), x=spec.x, logy=spec.logy, stat=spec.stat, compare=spec.compare, vs=spec.vs)


def write_into(experiment: str, spec, command: str = "") -> str:
    """A sweep file's `report:`, into the experiment's directory (a bucket's: written here, uploaded)."""
    import tempfile

    if not storage.is_uri(experiment):
        return str(write_report([experiment], Path(experiment) / spec.out, options_of(spec), command))
    with tempfile.TemporaryDirectory() as local:
        storage.upload(write_report([experiment], Path(local) / spec.out, options_of(spec), command), storage.join(experiment, spec.out))
    return storage.join(experiment, spec.out)
