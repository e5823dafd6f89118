"""Learning-curve figures in the papers' style: `raylab plot` and a sweep file's `plot:` section.

One panel per metric, one curve per group (the table's grouping, `aggregate.default_group`) and
experiment: the mean over finished seeds with a +-1 standard-error band, or (`average="median"`) the
median with the interquartile band, which one diverging seed cannot drag along. The y range is
robust as well: it covers the plotted curves up to Tukey's upper far-out fence, so a single exploding
curve (a modReLU RNN seed at val/loss 771) leaves the others readable; the panel says what it cut.
The task's trivial baseline (copy: 10 ln 8 / (T + 20), adding: 1/6; `Task.baselines`) is drawn
dashed, as in the papers' figures. The file type follows the extension: .png, .svg or .pdf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from raylab.planning import storage
from raylab.results.aggregate import default_group, group_label, load_results, table_groups, task_spec_of
from raylab.spec.config import FIGURE_FORMATS, PlotSpec
from raylab.results.identity import check_one_configuration
from raylab.results.collect import ResultsError

FENCE = 3.0  # Tukey's "far out" fence in interquartile ranges: only points well outside the bulk are cut
XAxis = Literal["step", "epoch"]
Average = Literal["mean", "median"]


@dataclass(frozen=True)
class Band:
    x: np.ndarray
    center: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int  # seeds at the most populated x


def check_format(out: str | Path) -> None:
    if Path(str(out)).suffix.lower() not in FIGURE_FORMATS:
        raise ResultsError(f"--out {out}: the figure type comes from the extension, one of {', '.join(FIGURE_FORMATS)}")


def experiment_label(path: str | Path) -> str:
    return Path(str(path).rstrip("/")).name


def build_task(trial: pd.Series):
    """The trial's task object, constructed only (no data is read): for its baselines and epoch length."""
    from raylab.spec.registry import build  # torch comes with the task registry: only for a figure that needs a task
    from raylab.tasks import TASKS

    return build(TASKS, task_spec_of(trial), "task")


def band(points: pd.DataFrame, x: str, average: Average) -> Band:
    """Per x: mean +-1 standard error, or median and interquartile range, over the seeds' values."""
    grouped = points.groupby(x)["value"]
    counts = grouped.count()
    if average == "median":
        quartiles = grouped.quantile([0.25, 0.5, 0.75]).unstack()
        center, low, high = quartiles[0.5], quartiles[0.25], quartiles[0.75]
    else:
        center = grouped.mean()
        sem = (grouped.std(ddof=1) / np.sqrt(counts)).fillna(0.0)
        low, high = center - sem, center + sem
    return Band(center.index.to_numpy(dtype=float), center.to_numpy(), low.to_numpy(), high.to_numpy(), int(counts.max()))


def robust_limits(values: Sequence[float], log: bool, fence: float = FENCE) -> tuple[float, float] | None:
    """y limits covering `values` from their minimum up to Tukey's upper fence (in decades on a log axis), padded by 5%."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if log:
        data = np.log10(data[data > 0])
    if data.size == 0:
        return None
    q1, q3 = np.percentile(data, [25, 75])
    spread = (q3 - q1) or abs(q3) or 1.0  # flat curves: fall back to the level itself
    # Only the top is fenced: a diverging seed shoots up, while a curve that falls far below the
    # others (IndRNN on the adding problem, beside models stuck at the baseline) is the finding.
    low, high = data.min(), min(data.max(), q3 + fence * spread)
    pad = 0.05 * ((high - low) or abs(high) or 1.0)
    low, high = low - pad, high + pad
    return (10**low, 10**high) if log else (low, high)


def load_points(path: str | Path, metrics: Sequence[str], by: Sequence[str] | None, x: XAxis) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Curve points of the finished trials (columns: label, metric, step or epoch, value) and, per
    group label, its task's baselines keyed without the split (`loss`)."""
    trials, curves = load_results(path)  # one collect's pair, collected again if stale
    return curve_points(trials, curves, metrics, by, x, str(path))


def curve_points(trials: pd.DataFrame, curves: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] | None, x: XAxis, where: str) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """`load_points` of a loaded pair (`where` names it in errors); the points keep their `trial_id`."""
    requested = len(by or default_group(trials))
    by = table_groups(trials, by)  # one curve per configuration: columns that differ are added
    available = sorted(curves["metric"].unique())
    for metric in metrics:
        if metric not in available:
            raise ResultsError(f"--metric: no curve of {metric!r} in {where} (available: {', '.join(available) or 'none'})")
    finished = trials[trials["status"] == "finished"]
    if finished.empty:
        raise ResultsError(f"{where}: no finished trial to plot")
    for key, group in finished.groupby(by, sort=False, dropna=False):
        check_one_configuration(group, f"curve {group_label(by, key)}")
    tasks = {row["trial_id"]: build_task(row) for _, row in finished.iterrows()}
    labels = finished[by].apply(lambda row: curve_label(by, tuple(row), requested), axis=1)
    points = curves[curves["metric"].isin(metrics)].merge(finished[["trial_id"]].assign(label=labels.to_numpy()), on="trial_id")
    if x == "epoch":
        per_epoch = {trial_id: task.steps_per_epoch for trial_id, task in tasks.items()}
        if any(v is None for v in per_epoch.values()):
            name = next(tasks[t] for t, v in per_epoch.items() if v is None).__class__.__name__
            raise ResultsError(f"--x epoch: {where}: {name} draws fresh data every step and has no epochs; use --x step")
        points = points.assign(epoch=points["step"] / points["trial_id"].map(per_epoch))
    baselines = {}
    for trial_id, label in zip(finished["trial_id"], labels):
        baselines.setdefault(label, tasks[trial_id].baselines)
    return points, baselines


def curve_label(by: Sequence[str], key: tuple, requested: int) -> str:
    """`copy LSTM 8`, then `name=value` for each column added to tell configurations apart (`optimizer.lr=0.5`)."""
    added = ", ".join(f"{c.removeprefix('config.')}={v}" for c, v in zip(by[requested:], key[requested:]))
    return " ".join(str(k) for k in key[:requested]) + (f" [{added}]" if added else "")


def plot_curves(
    paths: Sequence[str | Path],
    metrics: Sequence[str],
    out: str | Path,
    by: Sequence[str] | None = None,
    x: XAxis = "step",
    logy: bool = False,
    average: Average = "mean",
    baseline: bool = True,
) -> Path:
    """Draw `curves_figure` into `out` (PNG, SVG or PDF, from the extension); returns the path."""
    check_format(out)
    import matplotlib.pyplot as plt

    figure = curves_figure(paths, metrics, by, x, logy, average, baseline)
    out = Path(out)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def curves_figure(
    paths: Sequence[str | Path],
    metrics: Sequence[str],
    by: Sequence[str] | None = None,
    x: XAxis = "step",
    logy: bool = False,
    average: Average = "mean",
    baseline: bool = True,
):
    """One panel per metric, one curve per (experiment, group), the baselines dashed: a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = len(paths) > 1
    curves: list[tuple[str, pd.DataFrame, dict[str, float]]] = []
    for path in paths:
        points, baselines = load_points(path, metrics, by, x)
        prefix = f"{experiment_label(path)}: " if several else ""
        for label, group in points.groupby("label", sort=True):
            curves.append((prefix + label, group, baselines.get(label, {})))
    colors = {label: f"C{i % 10}" for i, (label, _, _) in enumerate(curves)}

    figure, panels = plt.subplots(1, len(metrics), figsize=(6.4 * len(metrics), 4.4), squeeze=False)
    for axes, metric in zip(panels[0], metrics):
        plotted: list[float] = []
        levels: set[float] = set()
        for label, group, baselines in curves:
            series = group[group["metric"] == metric]
            if series.empty:
                continue
            stats = band(series, x, average)
            axes.plot(stats.x, stats.center, color=colors[label], label=f"{label} (n={stats.n})", linewidth=1.4)
            axes.fill_between(stats.x, stats.low, stats.high, color=colors[label], alpha=0.2, linewidth=0)
            plotted.extend(stats.center)
            level = baselines.get(metric.split("/", 1)[-1])
            if baseline and level is not None:
                levels.add(round(level, 12))
        for level in sorted(levels):
            axes.axhline(level, color="black", linestyle="--", linewidth=1.0, label=f"baseline {level:.4g}")
        if logy:
            axes.set_yscale("log")
        limits = robust_limits([*plotted, *levels], logy)
        cut = []
        if limits is not None:
            axes.set_ylim(*limits)
            above = [v for v in plotted if np.isfinite(v) and v > limits[1]]
            below = [v for v in plotted if np.isfinite(v) and v < limits[0] and (v > 0 or not logy)]
            cut = ([f"max {max(above):.3g}"] if above else []) + ([f"min {min(below):.3g}"] if below else [])
        summary = "median, interquartile band" if average == "median" else "mean ± 1 s.e."
        # never hide silently that the axis left values out
        axes.set_title(f"{metric} ({summary} over seeds)" + (f"\noff the axis: {', '.join(cut)}" if cut else ""), fontsize="medium")
        axes.set_xlabel("training step" if x == "step" else "epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3, which="both" if logy else "major")
        axes.legend(fontsize="x-small")
    figure.suptitle(", ".join(experiment_label(p) for p in paths))
    figure.tight_layout()
    return figure


def default_out(paths: Sequence[str], metrics: Sequence[str]) -> str:
    """`<experiment>/<metric>.png` beside one local experiment's data; the working directory otherwise."""
    name = "+".join(m.replace("/", "_") for m in metrics) + ".png"
    if len(paths) == 1 and not storage.is_uri(paths[0]):
        return str(Path(paths[0]) / name)
    return name


def draw_into(experiment: str, spec: PlotSpec) -> str:
    """A sweep file's `plot:` figure, into the experiment's directory (a bucket's: drawn here, uploaded)."""
    import tempfile

    options = dict(metrics=spec.metrics, x=spec.x, logy=spec.logy, average=spec.average, baseline=spec.baseline)
    if not storage.is_uri(experiment):
        return str(plot_curves([experiment], out=Path(experiment) / spec.out, **options))
    with tempfile.TemporaryDirectory() as local:
        storage.upload(plot_curves([experiment], out=Path(local) / spec.out, **options), storage.join(experiment, spec.out))
    return storage.join(experiment, spec.out)
