"""The `raylab` command: the argument parser, one handler per subcommand (in `run`, `results`,
`cluster` and `listing`), and the exit codes of `raylab.cli.common`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from raylab.cli.cluster import cmd_logs, cmd_status, cmd_submit
from raylab.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, UsageError, non_negative_int
from raylab.cli.listing import cmd_ls
from raylab.cli.results import cmd_best, cmd_collect, cmd_plot, cmd_report, cmd_table
from raylab.cli.run import cmd_resume, cmd_run, cmd_validate
from raylab.execution.quiet import quiet_ray_logs
from raylab.spec.typecheck import ConfigError


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
    run.add_argument("--take-over", action="store_true",
                     help="drive the sweep folder even though another driver's lease on it looks alive; only when you know that driver is dead (default: off; docs/resume.md)")
    run.add_argument("--dry-run", action="store_true", help="list the resolved trials and what would be skipped or continued; start nothing, write nothing (default: off)")
    run.add_argument("--logger", action="append", default=[], metavar="NAME",
                     help="also log to tensorboard, mlflow or wandb (repeatable; joins the file's loggers:, one listed in both is kept once) (default: the file's; docs/trackers.md)")
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser("resume", help="continue an interrupted sweep from its checkpoints")
    resume.add_argument("experiment", help="a sweep directory (<storage>/<name>: every run in it) or one run-* folder")
    resume.add_argument("--errored", choices=("resume", "restart", "skip"), default="resume",
                        help="errored trials: resume from their last checkpoint (default), restart from scratch, or leave them")
    resume.add_argument("--address", help="attach to a running Ray cluster, e.g. auto or ray://HEAD:10001 (default: start an embedded local Ray)")
    resume.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    resume.add_argument("--take-over", action="store_true",
                        help="drive the sweep folder even though another driver's lease on it looks alive; only when you know that driver is dead (default: off; docs/resume.md)")
    resume.add_argument("--data-dir", help="where data sets live, if not where the interrupted run found them (default: the folder stored with each trial)")
    resume.set_defaults(handler=cmd_resume)

    validate = commands.add_parser("validate", help="check sweep files without running anything")
    validate.add_argument("files", nargs="+", metavar="FILE [KEY=VALUE]", help="sweep files, then overrides as `raylab run` takes them, e.g. training.steps=50")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key, the same as a KEY=VALUE argument (default: none)")
    validate.add_argument("--smoke", action="store_true", help="validate the smoke version (default: off)")
    validate.add_argument("--logger", action="append", default=[], metavar="NAME", help="a logger, as `raylab run --logger` takes it (default: the file's)")
    validate.set_defaults(handler=cmd_validate)

    collect = commands.add_parser("collect", help="write trials.parquet and curves.parquet")
    collect.add_argument("experiment", help="a sweep directory (<storage>/<name>) or one of its run-* folders")
    collect.add_argument("--from-scratch", action="store_true",
                         help="read every trial again (default: only the runs and trials whose files changed since the last collect)")
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
    table.add_argument("--compare", metavar="FILE", help="published numbers beside ours, in that table's layout: a YAML file or a shipped name (raylab/results/published/) (default: none)")
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

    report = commands.add_parser("report", help="one self-contained HTML file: the table, learning curves, what differs, search and --vs figures, provenance")
    report.add_argument("experiment", nargs="+", help="sweep or run folders; several share the table and each figure")
    report.add_argument("--out", help="the .html file (default: <experiment>/report.html, or report.html here for several)")
    report.add_argument("--metric", action="append", help="metrics of the table and the curves, e.g. val/loss,val/acc (default: all val/ and test/)")
    report.add_argument("--by", action="append", help="one row and one curve per group (default: as the table: task, task options that vary, variant, hidden_size)")
    report.add_argument("--x", choices=("step", "epoch"), default="step", help="curves' x axis: training steps or epochs (data-set tasks) (default: step)")
    report.add_argument("--logy", action=argparse.BooleanOptionalAction, default=None,
                        help="log-scale y axis of the curves, or --no-logy for linear (default: per metric, log when its curves span more than 1.5 decades)")
    report.add_argument("--stat", choices=("final", "best"), default="final", help="last value or best value of each trial (default: final)")
    report.add_argument("--compare", metavar="FILE", help="a published table beside ours, as `raylab table --compare` (default: none)")
    report.add_argument("--vs", metavar="LABEL", help="each row's difference to variant LABEL with its 95%% CI (Welch), as `raylab table --vs` (default: none)")
    report.set_defaults(handler=cmd_report)

    ls = commands.add_parser("ls", help="list registered cells or tasks with their options")
    ls.add_argument("kind", choices=("cells", "tasks"), help="cells: recurrent cells and their options; tasks: tasks, their options, metrics and the optimizer's options")
    ls.set_defaults(handler=cmd_ls)

    # Remote clusters through the Ray Jobs API (raylab/execution/submit.py; docs/cluster.md).
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
    from raylab.results.collect import ResultsError  # pyarrow: loaded once a command runs, not for --help

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

