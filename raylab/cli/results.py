"""`raylab collect`, `table`, `plot` and `best`: views of finished experiments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raylab.cli.common import EXIT_TRIAL_ERRORS, UsageError, split_list

# Each command imports its layers when it runs: `raylab ls`, `status` or `--help` do not load torch,
# pandas or Ray (docs/architecture.md).


def print_table(path: str, by: list[str] | None = None, metrics: list[str] | None = None, fmt: str = "markdown", stat: str = "final", decimals: int | None = None, exit_on_errors: bool = False, vs: str | None = None) -> int:
    from raylab.results.aggregate import caption, default_metrics, load_trials, render, summarize, table_groups
    from raylab.results.identity import code_note

    trials = load_trials(path)
    by = table_groups(trials, by)  # one row per configuration: columns that differ are added
    metrics = metrics or default_metrics(trials, stat)
    summary = summarize(trials, by, metrics, stat)
    if vs:
        from raylab.results.compare import render_vs  # scipy: only for --vs

        table = render_vs(trials, summary, by, metrics, stat, fmt, vs, decimals)
    else:
        table = render(summary, by, metrics, fmt, decimals)
    if fmt != "csv":  # after the table is made: a refused --vs prints its one line and nothing else
        print(f"{caption(stat)}\n")
    print(table)
    note = code_note(trials, by)
    if note:
        print(f"raylab: {note}", file=sys.stderr)
    errored = int((trials["status"] == "errored").sum())
    return EXIT_TRIAL_ERRORS if exit_on_errors and errored else 0


def cmd_collect(args: argparse.Namespace) -> int:
    from raylab.results.collect import collect

    trials_path, curves_path = collect(args.experiment, incremental=not args.from_scratch)
    print(f"wrote {trials_path}\nwrote {curves_path}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from raylab.results.collect import collect

    if args.vs and (args.layout == "paper" or args.compare):
        raise UsageError("--vs works with the default layout only")
    for path in args.experiment:
        if args.collect:
            collect(path)  # asked for; otherwise the loaders collect when stale (fresh_results)
    if args.layout == "paper" or args.compare:
        return print_paper_table(args.experiment, args.compare, split_list(args.metric), args.format, args.stat, args.decimals)
    if len(args.experiment) > 1:
        raise UsageError("several experiments make one table only with --layout paper (or --compare)")
    return print_table(args.experiment[0], split_list(args.by), split_list(args.metric), args.format, args.stat, args.decimals, vs=args.vs)


def print_paper_table(paths: list[str], compare: str | None, metrics: list[str] | None, fmt: str, stat: str, decimals: int | None) -> int:
    """Rows = models, columns = the published table's (or experiments x task options that vary)."""
    import pandas as pd

    from raylab.results.aggregate import default_metrics, load_trials, to_latex, to_markdown
    from raylab.results.published import experiment_name, inferred_layout, load_published, paper_table, protocol_legend

    trials = pd.concat([load_trials(path).assign(experiment=experiment_name(path)) for path in paths], ignore_index=True)
    if compare:
        layouts = [load_published(compare)]
    else:
        layouts = [inferred_layout(trials, metric) for metric in metrics or default_metrics(trials, stat)]
    for layout in layouts:
        table = paper_table(trials, layout, stat, decimals, compare=bool(compare))
        if fmt == "csv":
            print(table.to_csv(index=False).rstrip("\n"))
        else:
            source = f" ({layout.source})" if layout.source else ""
            print(f"{layout.title}{source}, {stat} {layout.metric}\n")
            print(to_latex(table) if fmt == "latex" else to_markdown(table))
            if compare:
                print("\n" + "\n".join(protocol_legend(layout)))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """Promote the best configuration of each task x variant x hidden size to a sweep with fresh seeds.

    Every file is resolved and checked in memory before any is written; on an error nothing is written."""
    import json

    from raylab.results import promote
    from raylab.results.aggregate import load_trials
    from raylab.training.metrics import metric_mode

    if args.seeds < 1:
        raise UsageError(f"--seeds: must be at least 1, got {args.seeds}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out: {out.parent}: no such directory")
    trials = load_trials(args.experiment)  # collected again when missing or stale, like `table` (fresh_results)
    manifest = promote.latest_manifest(args.experiment)
    finished = trials[trials["status"] == "finished"]
    if finished.empty:
        raise UsageError(f"{args.experiment}: no finished trial to promote")
    if args.metric:
        metric, mode = args.metric, metric_mode(args.metric)
    else:
        metric, mode = promote.default_metric(manifest, json.loads(finished["trial_json"].iloc[0]))
    promote.check_selection_metric(metric, [json.loads(text) for text in finished["trial_json"]])
    choices = promote.choose(trials, metric, args.stat, mode)
    lines = [promote.explain(choice, metric, args.stat) for choice in choices]
    lines += [f"{slot}: no configuration finished a seed with a finite {args.stat} {metric}; not promoted" for slot in promote.skipped_slots(trials, choices)]
    seeds = promote.fresh_seeds(trials, args.seeds)
    prepared = promote.prepare(choices, manifest["sweep"], seeds, out, args.experiment, lines)  # checked, nothing written yet
    print(f"raylab: best by mean {args.stat} {metric} over finished seeds ({mode}imized); {promote.RANKING}:")
    print("\n".join(f"  {line}" for line in lines))
    promote.write_sweeps([file for file, _ in prepared])
    for file, sweep in prepared:
        print(f"wrote {file.path} ({len(sweep.trials)} trials: {len(file.data['variants'])} configurations x {args.seeds} seeds)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from raylab.results.plots import default_out, plot_curves

    metrics = split_list(args.metric) or ["val/loss"]
    # A plot of one local experiment lands beside its data; of a bucket's or of several, here.
    out = args.out or default_out(args.experiment, metrics)
    if not Path(out).resolve().parent.is_dir():
        raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
    written = plot_curves(args.experiment, metrics, out, split_list(args.by), args.x, args.logy, args.average, not args.no_baseline)
    print(f"wrote {written}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("plotly") is None:
        raise UsageError("report: needs plotly: pip install -e '.[report]'")
    from raylab.planning import storage
    from raylab.results.report import ReportOptions, check_out, write_report

    several = len(args.experiment) > 1
    out = args.out or ("report.html" if several or storage.is_uri(args.experiment[0]) else str(Path(args.experiment[0]) / "report.html"))
    check_out(out)
    if not Path(out).resolve().parent.is_dir():
        raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
    options = ReportOptions(split_list(args.metric) or [], split_list(args.by) or [], args.x, args.logy, args.stat, args.compare, args.vs)
    written = write_report(args.experiment, out, options, report_command(args.experiment, out, options))
    size = written.stat().st_size
    print(f"wrote {written} ({size / 1e6:.1f} MB, self-contained: opens offline)")
    return 0


def report_command(experiments: list[str], out: str, options) -> str:
    """The `raylab report` command that makes this report again, shown in it."""
    import shlex

    parts = ["raylab", "report", *experiments, "--out", out]
    for flag, value in (("--metric", ",".join(options.metrics)), ("--by", ",".join(options.by)), ("--compare", options.compare), ("--vs", options.vs)):
        if value:
            parts += [flag, value]
    if options.x != "step":
        parts += ["--x", options.x]
    if options.stat != "final":
        parts += ["--stat", options.stat]
    if options.logy is not None:
        parts.append("--logy" if options.logy else "--no-logy")
    return shlex.join(parts)
