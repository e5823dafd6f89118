"""`raylab` command line: one small function per subcommand.

Exit codes: 0 success; 1 the sweep ran but some trial errored; 2 bad input (sweep file, override,
argument or path), reported as one line on stderr before anything is scheduled or written; 130
interrupted (Ctrl-C), with the `raylab resume` command that continues. See docs/errors.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from raylab.typecheck import ConfigError

EXIT_TRIAL_ERRORS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C


class UsageError(ValueError):
    """Bad command-line input that is not a sweep-file problem (e.g. a missing results folder)."""


def cmd_validate(args: argparse.Namespace) -> int:
    from raylab.sweep import load_sweep

    # `raylab validate FILE key=value`, as `raylab run` takes them (`--set key=value` too).
    files = [item for item in args.files if not is_override(item)]
    overrides = [*args.overrides, *(item for item in args.files if is_override(item))]
    if not files:
        raise UsageError("validate: no sweep file given")
    for path in files:
        sweep = load_sweep(path, overrides, smoke=args.smoke)
        search = sweep.spec.search
        print(f"{path}: ok ({len(sweep.trials)} trials)" if search is None else f"{path}: ok ({len(sweep.trials)} configurations x {search.num_samples} samples)")
    return 0


def is_override(item: str) -> bool:
    """`training.steps=5` is an override; a file name with `=` in it that exists is a file."""
    return "=" in item and not Path(item).exists()


def cmd_run(args: argparse.Namespace) -> int:
    from raylab.sweep import load_sweep

    sweep = load_sweep(args.file, args.overrides, smoke=args.smoke)  # everything checked before Ray starts
    data_dir = resolve_data_dir(args.data_dir)
    check_storage_and_data(sweep, data_dir, attached=bool(args.address))

    from raylab import rerun
    from raylab.provenance import code_version, provenance

    sweep_dir = rerun.sweep_directory(sweep)
    # A re-run (up-arrow after an interrupt) or a grown sweep: skip what finished, continue what was
    # interrupted from its checkpoints, start the rest (raylab/rerun.py).
    if args.smoke:
        print(f"raylab: --smoke: results go to {sweep_dir}, apart from the sweep's own folder")
    runs = rerun.earlier_runs(sweep_dir)
    plan = rerun.plan_rerun(sweep.trials, runs)
    if args.dry_run:
        from raylab.preview import dry_run_lines

        print(f"raylab: dry run: {len(sweep.trials)} trials of {args.file} -> {sweep_dir} (nothing started, nothing written)")
        print("\n".join([*dry_run_lines(sweep.trials, plan), *rerun.describe(plan, len(sweep.trials), sweep_dir)]))
        if plan.blocked:
            print(f"raylab: `raylab run` would stop: {rerun.blocked_message(plan)}")
        return 0
    if plan.blocked:
        raise UsageError(rerun.blocked_message(plan))
    for line in rerun.describe(plan, len(sweep.trials), sweep_dir):
        print(line, flush=True)
    print_code_change(rerun.finished_code_versions(runs), plan.finished, code_version(provenance()))
    if plan.continued or plan.new:
        from raylab.raystart import start_ray_importing

        start_ray_importing("raylab.runner", address=args.address, num_cpus=args.num_cpus, data_dir=data_dir)
        from raylab import runner

        runner.check_cluster_resources(sweep, attached=bool(args.address))
        runner.check_storage_shared(sweep)
        try:
            for run in plan.continued:
                if not runner.resume_run(run, errored="skip"):
                    return finish(sweep_dir, sweep.spec.plot)  # still unfinished: the rest waits for the next `raylab run`
            if plan.new:
                runtime = {"data_dir": data_dir, "provenance": provenance()}
                runner.run_sweep(sweep, plan.new, runtime)
        except runner.Interrupted as interrupted:
            return report_interrupted(interrupted, sweep_dir)
    return finish(sweep_dir, sweep.spec.plot)


def print_code_change(done: dict[str, str], trials: list[dict], current: str) -> None:
    """Say when skipped trials were computed by other code: they are kept, never silently mixed (docs/identity.md)."""
    older = sorted({done[t["config_hash"]] for t in trials if t["config_hash"] in done} - {current})
    if older:
        count = sum(1 for t in trials if done.get(t["config_hash"], current) != current)
        print(f"raylab: {count} of the skipped trials were computed by other code ({'; '.join(older)}; now {current}): "
              "they are kept and the table notes rows that mix code versions; move them away to recompute (docs/identity.md)")


def check_storage_and_data(sweep, data_dir: str | None, attached: bool = False) -> None:
    """Storage and data problems as one line naming the sweep file, before Ray starts.

    On an attached cluster, missing data on the driver's machine is a warning: the trials run on
    other nodes, which may have the data where this one does not (as with resources, runner.py).
    """
    from raylab.checks import check_data, check_storage

    try:
        check_storage(sweep.spec.storage)
    except ConfigError as error:
        raise ConfigError(f"{sweep.path}: {error}") from None
    try:
        check_data(sweep.trials, data_dir)
    except ConfigError as error:
        if not attached:
            raise ConfigError(f"{sweep.path}: {error}") from None
        print(f"raylab: warning: {sweep.path}: {error} on this machine; the cluster's nodes must have it", file=sys.stderr, flush=True)


def report_interrupted(interrupted: Exception, sweep_dir: str) -> int:
    """Ctrl-C: what finished and what did not (from the saved experiment state), and how to go on."""
    print(f"\nraylab: interrupted: {interrupted}; continue with:\n  raylab resume {sweep_dir}\n(or run the same `raylab run` command again)", file=sys.stderr)
    return EXIT_INTERRUPTED


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

    data_dir = resolve_data_dir(args.data_dir)  # bad input fails before anything starts
    location = storage.absolute(args.experiment)
    if not storage.is_dir(location):
        raise UsageError(f"{args.experiment}: not a folder; give a sweep folder (<storage>/<name>) or one of its run-* folders")
    runs = run_locations(location)  # a sweep directory (every run in it) or one run
    pending = [run for run in runs if runner.needs_resume(run, args.errored)]
    if not pending:
        print(f"raylab: nothing to resume in {location}: no unfinished trials" + (", no errored ones" if args.errored != "skip" else ""))
    else:
        runner.start_ray(args.address, num_cpus=args.num_cpus, data_dir=data_dir)
        try:
            for run in pending:
                runner.resume_run(run, args.errored)
        except runner.Interrupted as interrupted:
            return report_interrupted(interrupted, location)
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


def print_table(path: str, by: list[str] | None = None, metrics: list[str] | None = None, fmt: str = "markdown", stat: str = "final", decimals: int | None = None, exit_on_errors: bool = False, vs: str | None = None) -> int:
    from raylab.aggregate import caption, default_metrics, load_trials, render, summarize, table_groups
    from raylab.identity import code_note

    trials = load_trials(path)
    by = table_groups(trials, by)  # one row per configuration: columns that differ are added
    metrics = metrics or default_metrics(trials, stat)
    summary = summarize(trials, by, metrics, stat)
    if fmt != "csv":
        print(f"{caption(stat)}\n")
    if vs:
        from raylab.compare import render_vs

        print(render_vs(trials, summary, by, metrics, stat, fmt, vs, decimals))
    else:
        print(render(summary, by, metrics, fmt, decimals))
    note = code_note(trials, by)
    if note:
        print(f"raylab: {note}", file=sys.stderr)
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

    if args.vs and (args.layout == "paper" or args.compare):
        raise UsageError("--vs works with the default layout only")
    for path in args.experiment:
        if args.collect or (storage.is_dir(path) and not storage.exists(storage.join(path, TRIALS_FILE))):
            collect(path)
        else:
            recollect_if_stale(path)
    if args.layout == "paper" or args.compare:
        return print_paper_table(args.experiment, args.compare, split_list(args.metric), args.format, args.stat, args.decimals)
    if len(args.experiment) > 1:
        raise UsageError("several experiments make one table only with --layout paper (or --compare)")
    return print_table(args.experiment[0], split_list(args.by), split_list(args.metric), args.format, args.stat, args.decimals, vs=args.vs)


def recollect_if_stale(path: str) -> None:
    """Never serve a table from a Parquet file older than the trials it summarizes: collect again, and say so."""
    from raylab import storage
    from raylab.results import collect, newer_than_trials_file

    changed = newer_than_trials_file(path) if storage.is_dir(path) else None
    if changed is not None:
        print(f"raylab: {changed} changed after the last collect; collecting again", file=sys.stderr, flush=True)
        collect(path)


def print_paper_table(paths: list[str], compare: str | None, metrics: list[str] | None, fmt: str, stat: str, decimals: int | None) -> int:
    """Rows = models, columns = the published table's (or experiments x task options that vary)."""
    import pandas as pd

    from raylab.aggregate import default_metrics, load_trials, to_latex, to_markdown
    from raylab.published import experiment_name, inferred_layout, load_published, paper_table, protocol_legend

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
    """Promote the best configuration of each task x variant x hidden size to a sweep with fresh seeds."""
    import json

    from raylab import promote, storage
    from raylab.aggregate import load_trials
    from raylab.metrics import metric_mode
    from raylab.results import TRIALS_FILE, collect
    from raylab.sweep import load_sweep

    if args.seeds < 1:
        raise UsageError(f"--seeds: must be at least 1, got {args.seeds}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out: {out.parent}: no such directory")
    if storage.is_dir(args.experiment) and not storage.exists(storage.join(args.experiment, TRIALS_FILE)):
        collect(args.experiment)
    trials = load_trials(args.experiment)
    manifest = promote.latest_manifest(args.experiment)
    if args.metric:
        metric, mode = args.metric, metric_mode(args.metric)
    else:
        finished = trials[trials["status"] == "finished"]
        if finished.empty:
            raise UsageError(f"{args.experiment}: no finished trial to promote")
        metric, mode = promote.default_metric(manifest, json.loads(finished["trial_json"].iloc[0]))
    choices = promote.choose(trials, metric, args.stat, mode)
    lines = [promote.explain(choice, metric, args.stat) for choice in choices]
    print(f"raylab: best by mean {args.stat} {metric} over seeds ({mode}imized), finished trials only:")
    print("\n".join(f"  {line}" for line in lines))
    sweeps = promote.promoted_sweeps(choices, manifest["sweep"], promote.fresh_seeds(trials, args.seeds))
    for path, data in zip(promote.output_paths(out, len(sweeps)), sweeps):
        promote.write_sweep(path, data, args.experiment, lines)
        sweep = load_sweep(path)  # what was written runs: the same checks as `raylab validate`
        print(f"wrote {path} ({len(sweep.trials)} trials: {len(data['variants'])} configurations x {args.seeds} seeds)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from raylab.plots import default_out, plot_curves

    metrics = split_list(args.metric) or ["val/loss"]
    # A plot of one local experiment lands beside its data; of a bucket's or of several, here.
    out = args.out or default_out(args.experiment, metrics)
    if not Path(out).resolve().parent.is_dir():
        raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
    for experiment in args.experiment:
        recollect_if_stale(experiment)
    written = plot_curves(args.experiment, metrics, out, split_list(args.by), args.x, args.logy, args.average, not args.no_baseline)
    print(f"wrote {written}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from raylab.listing import cell_lines, task_lines

    print("\n".join(cell_lines() if args.kind == "cells" else task_lines()))
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


def non_negative_int(text: str) -> int:
    """argparse type: `--decimals 3`; a negative or non-integer value is a usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="raylab", description="Sweeps of recurrent networks on Ray Tune.")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a sweep file (embedded local Ray unless --address)")
    run.add_argument("file", help="sweep file, e.g. jobs/smoke.yaml")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a key, e.g. training.steps=50")
    run.add_argument("--address", help="attach to a running Ray cluster, e.g. auto or ray://HEAD:10001 (default: start an embedded local Ray)")
    run.add_argument("--smoke", action="store_true", help="one seed, a few steps, small data and 16-unit models, to try a file out (default: off)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    run.add_argument("--data-dir", help="where data sets live (default: $RAYLAB_DATA or each task's default)")
    run.add_argument("--dry-run", action="store_true", help="list the resolved trials and what would be skipped or continued; start nothing, write nothing (default: off)")
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser("resume", help="continue an interrupted sweep from its checkpoints")
    resume.add_argument("experiment", help="a sweep directory (<storage>/<name>: every run in it) or one run-* folder")
    resume.add_argument("--errored", choices=("resume", "restart", "skip"), default="resume",
                        help="errored trials: resume from their last checkpoint (default), restart from scratch, or leave them")
    resume.add_argument("--address", help="attach to a running Ray cluster, e.g. auto or ray://HEAD:10001 (default: start an embedded local Ray)")
    resume.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    resume.add_argument("--data-dir", help="where data sets live, if not where the interrupted run found them (default: the folder stored with each trial)")
    resume.set_defaults(handler=cmd_resume)

    validate = commands.add_parser("validate", help="check sweep files without running anything")
    validate.add_argument("files", nargs="+", metavar="FILE [KEY=VALUE]", help="sweep files, then overrides as `raylab run` takes them, e.g. training.steps=50")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key, the same as a KEY=VALUE argument (default: none)")
    validate.add_argument("--smoke", action="store_true", help="validate the smoke version (default: off)")
    validate.set_defaults(handler=cmd_validate)

    collect = commands.add_parser("collect", help="write trials.parquet and curves.parquet")
    collect.add_argument("experiment", help="a sweep directory (<storage>/<name>) or one of its run-* folders")
    collect.set_defaults(handler=cmd_collect)

    table = commands.add_parser("table", help="mean ± standard error over seeds")
    table.add_argument("experiment", nargs="+", help="sweep or run folders (several only with --layout paper)")
    table.add_argument("--by", action="append", help="group columns (default: task, task options that vary, variant, hidden_size)")
    table.add_argument("--metric", action="append", help="metrics, e.g. val/loss (default: all val/ and test/)")
    table.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown", help="output format (default: markdown)")
    table.add_argument("--stat", choices=("final", "best"), default="final", help="last value or best value of each trial (default: final)")
    table.add_argument("--decimals", type=non_negative_int, help="fixed decimals (default: from the standard error)")
    table.add_argument("--collect", action="store_true", help="re-collect the Parquet files first (default: only when trials.parquet is missing)")
    table.add_argument("--layout", choices=("default", "paper"), default="default", help="paper: rows = models, columns = experiments x task options (budget x T) (default: default, one row per group)")
    table.add_argument("--compare", metavar="FILE", help="published numbers beside ours, in that table's layout: a YAML file or a shipped name (raylab/published/) (default: none)")
    table.add_argument("--vs", metavar="LABEL", help="per row: difference to variant LABEL with a 95%% CI and a Welch test p-value over seeds (default: none)")
    table.set_defaults(handler=cmd_table)

    best = commands.add_parser("best", help="write a sweep re-running the best configuration of each task x variant x hidden size with fresh seeds")
    best.add_argument("experiment", help="a sweep directory (<storage>/<name>) or one run-* folder")
    best.add_argument("--seeds", type=int, required=True, help="number of fresh seeds, none of them the experiment's (required, no default)")
    best.add_argument("--out", required=True, help="sweep file to write, one per task spec, numbered, if the experiment has several (required, no default)")
    best.add_argument("--metric", help="metric to rank by (default: the search's metric, else the task's primary metric)")
    best.add_argument("--stat", choices=("final", "best"), default="final", help="last value or best value of each trial (default: final)")
    best.set_defaults(handler=cmd_best)

    plot = commands.add_parser("plot", help="learning curves over seeds, the task's baseline dashed (PNG, SVG or PDF)")
    plot.add_argument("experiment", nargs="+", help="sweep or run folders; several share each panel")
    plot.add_argument("--metric", action="append", help="one panel per metric, e.g. val/loss,val/acc (default: val/loss)")
    plot.add_argument("--by", action="append", help="one curve per group (default: as the table: task, task options that vary, variant, hidden_size)")
    plot.add_argument("--out", help="figure path; .png, .svg or .pdf (default: <experiment>/<metric>.png, or here for several)")
    plot.add_argument("--x", choices=("step", "epoch"), default="step", help="x axis: training steps or epochs (data-set tasks) (default: step)")
    plot.add_argument("--logy", action="store_true", help="log-scale y axis, as the papers' loss figures (default: linear)")
    plot.add_argument("--average", choices=("mean", "median"), default="mean",
                      help="mean with a ±1 standard-error band, or median with the interquartile band (robust to a diverging seed) (default: mean)")
    plot.add_argument("--no-baseline", action="store_true", help="leave out the task's trivial baseline (dashed) (default: drawn)")
    plot.set_defaults(handler=cmd_plot)

    ls = commands.add_parser("ls", help="list registered cells or tasks with their options")
    ls.add_argument("kind", choices=("cells", "tasks"), help="cells: recurrent cells and their options; tasks: tasks, their options, metrics and the optimizer's options")
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
    submit.add_argument("--smoke", action="store_true", help="one seed and a few steps, to try a cluster out (default: off)")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", help="status of a submitted job")
    status.add_argument("job_id", help="the id `raylab submit` printed")
    status.add_argument("--address", **address)
    status.add_argument("--token-file", **token)
    status.set_defaults(handler=cmd_status)

    logs = commands.add_parser("logs", help="output of a submitted job (exit 1 with --follow if it fails)")
    logs.add_argument("job_id", help="the id `raylab submit` printed")
    logs.add_argument("--address", **address)
    logs.add_argument("--token-file", **token)
    logs.add_argument("--follow", action="store_true", help="stream the output until the job ends (default: print what is there and exit)")
    logs.set_defaults(handler=cmd_logs)
    return top


def main(argv: list[str] | None = None) -> int:
    from raylab.quiet import quiet_ray_logs
    from raylab.results import ResultsError

    quiet_ray_logs()  # also for `collect` and `table`, which read Tune's state without the runner
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
    except KeyboardInterrupt:
        print("\nraylab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console() -> None:
    """The `raylab` command: `main()`, then Ray stopped explicitly and a prompt exit.

    Once torch, Tune and a Ray driver are loaded, the interpreter's own finalization (module
    teardown, Ray's core-worker destructor) takes about a second and does nothing raylab needs:
    every result file is closed by then, and the streams and log handlers are flushed here.
    """
    code = main()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
