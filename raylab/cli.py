"""`raylab` command line: one small function per subcommand.

Exit codes: 0 success; 1 the sweep ran but some trial errored; 2 bad input (sweep file, override,
argument or path), reported as one line on stderr before anything is scheduled or written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from raylab.typecheck import ConfigError

EXIT_TRIAL_ERRORS = 1
EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input that is not a sweep-file problem (e.g. a missing results folder)."""


def cmd_validate(args: argparse.Namespace) -> int:
    from raylab.sweep import load_sweep

    for path in args.files:
        sweep = load_sweep(path, args.overrides, smoke=args.smoke)
        print(f"{path}: ok ({len(sweep.trials)} trials)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from raylab.sweep import load_sweep

    sweep = load_sweep(args.file, args.overrides, smoke=args.smoke)  # everything checked before Ray starts
    data_dir = resolve_data_dir(args.data_dir)

    from raylab import runner
    from raylab.provenance import provenance
    from raylab.results import completed_config_hashes

    sweep_dir = runner.sweep_directory(sweep)
    done = completed_config_hashes(sweep_dir)  # a re-run or a grown sweep skips what already finished
    trials = [t for t in sweep.trials if t["config_hash"] not in done]
    if len(trials) < len(sweep.trials):
        print(f"raylab: {len(sweep.trials) - len(trials)} of {len(sweep.trials)} trials already finished in {sweep_dir}; skipping them")
    if trials:
        runner.start_ray(args.address, num_cpus=args.num_cpus)
        runner.check_cluster_resources(sweep, attached=bool(args.address))
        runner.check_storage_shared(sweep)
        runtime = {"data_dir": data_dir, "provenance": provenance()}
        runner.run_sweep(sweep, trials, runtime)
    return finish(sweep_dir, sweep.spec.plot)


def finish(sweep_dir: str, plots: list | tuple = ()) -> int:
    """Collect every run of the sweep into Parquet, print the table (exit 1 if a trial errored) and
    draw the sweep file's `plot:` figures into the sweep directory."""
    from raylab.results import ResultsError, collect

    collect(sweep_dir)
    print(f"\nresults: {sweep_dir}/trials.parquet, curves.parquet\n")
    code = print_table(sweep_dir, exit_on_errors=True)
    from raylab.plots import draw_into

    for spec in plots:
        try:
            print(f"figure: {draw_into(sweep_dir, spec)}")
        except ResultsError as error:  # e.g. every trial diverged: the results above stay valid
            print(f"raylab: plot {spec.out}: {error}", file=sys.stderr)
    return code


def cmd_resume(args: argparse.Namespace) -> int:
    from raylab import runner, storage
    from raylab.results import MANIFEST, run_locations

    location = storage.absolute(args.experiment)
    runs = run_locations(location)  # a sweep directory (every run in it) or one run
    pending = [run for run in runs if runner.needs_resume(run, args.errored)]
    if not pending:
        print(f"raylab: nothing to resume in {location}: no unfinished trials" + (", no errored ones" if args.errored != "skip" else ""))
    else:
        runner.start_ray(args.address, num_cpus=args.num_cpus)
        for run in pending:
            runner.resume_run(run, args.errored)
    is_one_run = storage.exists(storage.join(location, MANIFEST))
    return finish(location.rstrip("/").rsplit("/", 1)[0] if is_one_run else location)


def resolve_data_dir(option: str | None) -> str | None:
    """--data-dir, else $RAYLAB_DATA, else None (each task then uses its own default)."""
    value = option or os.environ.get("RAYLAB_DATA")
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        source = "--data-dir" if option else "RAYLAB_DATA"
        raise UsageError(f"{source}: {value}: no such directory")
    return str(path)


def print_table(path: str, by: list[str] | None = None, metrics: list[str] | None = None, fmt: str = "markdown", stat: str = "final", decimals: int | None = None, exit_on_errors: bool = False) -> int:
    from raylab.aggregate import default_group, default_metrics, load_trials, render, summarize

    trials = load_trials(path)
    by = by or default_group(trials)
    metrics = metrics or default_metrics(trials, stat)
    summary = summarize(trials, by, metrics, stat)
    print(render(summary, by, metrics, fmt, decimals))
    errored = int((trials["status"] == "errored").sum())
    return EXIT_TRIAL_ERRORS if exit_on_errors and errored else 0


def cmd_collect(args: argparse.Namespace) -> int:
    from raylab.results import collect

    trials_path, curves_path = collect(args.experiment)
    print(f"wrote {trials_path}\nwrote {curves_path}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from raylab import storage
    from raylab.results import TRIALS_FILE, collect

    for path in args.experiment:
        if args.collect or (storage.is_dir(path) and not storage.exists(storage.join(path, TRIALS_FILE))):
            collect(path)
    if args.layout == "paper" or args.compare:
        return print_paper_table(args.experiment, args.compare, split_list(args.metric), args.format, args.stat, args.decimals)
    if len(args.experiment) > 1:
        raise UsageError("several experiments make one table only with --layout paper (or --compare)")
    return print_table(args.experiment[0], split_list(args.by), split_list(args.metric), args.format, args.stat, args.decimals)


def print_paper_table(paths: list[str], compare: str | None, metrics: list[str] | None, fmt: str, stat: str, decimals: int | None) -> int:
    """Rows = models, columns = the published table's (or experiments x task options that vary)."""
    import pandas as pd

    from raylab.aggregate import default_metrics, load_trials, to_latex, to_markdown
    from raylab.published import experiment_name, inferred_layout, load_published, paper_table

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
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from raylab.plots import default_out, plot_curves

    metrics = split_list(args.metric) or ["val/loss"]
    # A plot of one local experiment lands beside its data; of a bucket's or of several, here.
    out = args.out or default_out(args.experiment, metrics)
    written = plot_curves(args.experiment, metrics, out, split_list(args.by), args.x, args.logy, args.average, not args.no_baseline)
    print(f"wrote {written}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from raylab.cells import CELLS, INJECTED_CELL_ARGS
    from raylab.registry import describe_entries
    from raylab.tasks import TASKS

    table, injected = (CELLS, INJECTED_CELL_ARGS) if args.kind == "cells" else (TASKS, ())
    for name, description, options in describe_entries(table, injected):
        print(f"{name:<10} {description}\n{'':<10} options: {options or 'none'}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from raylab import submit

    try:
        job_id = submit.submit_sweep(args.file, args.overrides, args.smoke, args.address, args.token_file)
    except submit.ClusterError as error:
        return submit.report(error)
    print(job_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from raylab import submit

    try:
        status, message = submit.job_status(args.job_id, args.address, args.token_file)
    except submit.ClusterError as error:
        return submit.report(error)
    print(f"{args.job_id}: {status}" + (f" ({message})" if message else ""))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from raylab import submit

    try:
        if not args.follow:
            print(submit.job_logs(args.job_id, args.address, args.token_file), end="")
            return 0
        status = submit.follow_logs(args.job_id, args.address, args.token_file)
    except submit.ClusterError as error:
        return submit.report(error)
    print(f"\nraylab: job {args.job_id}: {status}", file=sys.stderr)
    return submit.exit_code_for(status)


def split_list(values: list[str] | None) -> list[str] | None:
    """`--by task,cell --by seed` -> ["task", "cell", "seed"]."""
    if not values:
        return None
    return [item for value in values for item in value.split(",") if item]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="raylab", description="Sweeps of recurrent networks on Ray Tune.")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a sweep file (embedded local Ray unless --address)")
    run.add_argument("file", help="sweep file, e.g. jobs/smoke.yaml")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a key, e.g. training.steps=50")
    run.add_argument("--address", help="attach to a running Ray cluster (e.g. auto, or ray://HEAD:10001)")
    run.add_argument("--smoke", action="store_true", help="one seed, a few steps, small data and 16-unit models, to try a file out")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    run.add_argument("--data-dir", help="where data sets live (default: $RAYLAB_DATA or each task's default)")
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser("resume", help="continue an interrupted sweep from its checkpoints")
    resume.add_argument("experiment", help="a sweep directory (<storage>/<name>: every run in it) or one run-* folder")
    resume.add_argument("--errored", choices=("resume", "restart", "skip"), default="resume",
                        help="errored trials: resume from their last checkpoint (default), restart from scratch, or leave them")
    resume.add_argument("--address", help="attach to a running Ray cluster")
    resume.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    resume.set_defaults(handler=cmd_resume)

    validate = commands.add_parser("validate", help="check sweep files without running anything")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key")
    validate.add_argument("--smoke", action="store_true", help="validate the smoke version")
    validate.set_defaults(handler=cmd_validate)

    collect = commands.add_parser("collect", help="write trials.parquet and curves.parquet")
    collect.add_argument("experiment", help="a sweep directory (<storage>/<name>) or one of its run-* folders")
    collect.set_defaults(handler=cmd_collect)

    table = commands.add_parser("table", help="mean ± standard error over seeds")
    table.add_argument("experiment", nargs="+", help="sweep or run folders (several only with --layout paper)")
    table.add_argument("--by", action="append", help="group columns (default: task, task options that vary, variant, hidden_size)")
    table.add_argument("--metric", action="append", help="metrics, e.g. val/loss (default: all val/ and test/)")
    table.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    table.add_argument("--stat", choices=("final", "best"), default="final", help="last value or best value of each trial")
    table.add_argument("--decimals", type=int, help="fixed decimals (default: from the standard error)")
    table.add_argument("--collect", action="store_true", help="re-collect the Parquet files first")
    table.add_argument("--layout", choices=("default", "paper"), default="default", help="paper: rows = models, columns = experiments x task options (budget x T)")
    table.add_argument("--compare", metavar="FILE", help="published numbers beside ours, in that table's layout: a YAML file or a shipped name (raylab/published/)")
    table.set_defaults(handler=cmd_table)

    plot = commands.add_parser("plot", help="learning curves over seeds, the task's baseline dashed (PNG, SVG or PDF)")
    plot.add_argument("experiment", nargs="+", help="sweep or run folders; several share each panel")
    plot.add_argument("--metric", action="append", help="one panel per metric, e.g. val/loss,val/acc (default: val/loss)")
    plot.add_argument("--by", action="append", help="one curve per group (default: as the table: task, task options that vary, variant, hidden_size)")
    plot.add_argument("--out", help="figure path; .png, .svg or .pdf (default: <experiment>/<metric>.png, or here for several)")
    plot.add_argument("--x", choices=("step", "epoch"), default="step", help="x axis: training steps or epochs (data-set tasks)")
    plot.add_argument("--logy", action="store_true", help="log-scale y axis, as the papers' loss figures")
    plot.add_argument("--average", choices=("mean", "median"), default="mean",
                      help="mean with a ±1 standard-error band, or median with the interquartile band (robust to a diverging seed)")
    plot.add_argument("--no-baseline", action="store_true", help="leave out the task's trivial baseline (dashed)")
    plot.set_defaults(handler=cmd_plot)

    ls = commands.add_parser("ls", help="list registered cells or tasks with their options")
    ls.add_argument("kind", choices=("cells", "tasks"))
    ls.set_defaults(handler=cmd_ls)

    # Remote clusters through the Ray Jobs API (raylab/submit.py; docs/cluster.md).
    address = dict(default=os.environ.get("RAY_API_SERVER_ADDRESS"), required="RAY_API_SERVER_ADDRESS" not in os.environ,
                   help="dashboard address, e.g. http://127.0.0.1:8265 after `ray dashboard CLUSTER.yaml` (default: $RAY_API_SERVER_ADDRESS)")
    token = dict(help="file holding the cluster's auth token (default: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")

    submit = commands.add_parser("submit", help="run a sweep file on a Ray cluster as a Ray Job; prints the job id")
    submit.add_argument("file", help="sweep file inside this project, e.g. jobs/smoke.yaml")
    submit.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a key, e.g. storage=s3://bucket/raylab")
    submit.add_argument("--address", **address)
    submit.add_argument("--token-file", **token)
    submit.add_argument("--smoke", action="store_true", help="one seed and a few steps, to try a cluster out")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", help="status of a submitted job")
    status.add_argument("job_id")
    status.add_argument("--address", **address)
    status.add_argument("--token-file", **token)
    status.set_defaults(handler=cmd_status)

    logs = commands.add_parser("logs", help="output of a submitted job (exit 1 with --follow if it fails)")
    logs.add_argument("job_id")
    logs.add_argument("--address", **address)
    logs.add_argument("--token-file", **token)
    logs.add_argument("--follow", action="store_true", help="stream the output until the job ends")
    logs.set_defaults(handler=cmd_logs)
    return top


def main(argv: list[str] | None = None) -> int:
    from raylab.results import ResultsError

    top = parser()
    args, extra = top.parse_known_args(argv)
    # `raylab run FILE --smoke key=value`: overrides may also come after the flags.
    misplaced = [item for item in extra if "=" in item and not item.startswith("-")]
    if misplaced and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *misplaced]
        extra = [item for item in extra if item not in misplaced]
    if extra:
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except (ConfigError, UsageError, ResultsError) as error:
        print(f"raylab: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
