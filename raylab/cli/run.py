"""`raylab validate`, `run` and `resume`: a sweep file checked, run (skipping what finished,
continuing what was interrupted) or resumed, then collected and tabled."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from raylab.cli.common import EXIT_INTERRUPTED, UsageError
from raylab.cli.results import print_table, report_command
from raylab.spec.typecheck import ConfigError

# Each command imports its layers when it runs: `raylab ls`, `status` or `--help` do not load torch,
# pandas or Ray (docs/architecture.md).


def load_checked(path: str, overrides: list[str], smoke: bool, loggers: list[str]):
    """`load_sweep` (`loggers`: `--logger` names added to the file's), and the checks that need the
    results layer (a `report:` section's published table)."""
    from raylab.planning.sweep import load_sweep
    from raylab.results.report import check_report_section

    sweep = load_sweep(path, overrides, smoke=smoke, loggers=loggers)
    check_report_section(sweep)
    return sweep


def cmd_validate(args: argparse.Namespace) -> int:
    # `raylab validate FILE key=value`, as `raylab run` takes them (`--set key=value` too).
    files = [item for item in args.files if not is_override(item)]
    overrides = [*args.overrides, *(item for item in args.files if is_override(item))]
    if not files:
        raise UsageError("validate: no sweep file given")
    loggers = checked_loggers(args.logger)
    for path in files:
        sweep = load_checked(path, overrides, smoke=args.smoke, loggers=loggers)
        search = sweep.spec.search
        print(f"{path}: ok ({len(sweep.trials)} trials)" if search is None else f"{path}: ok ({len(sweep.trials)} configurations x {search.samples_text()})")
    return 0


def is_override(item: str) -> bool:
    """`training.steps=5` is an override; a file name with `=` in it that exists is a file."""
    if "=" not in item:
        return False
    try:
        return not Path(item).exists()
    except OSError:  # e.g. longer than a file name may be: no such file, so an override
        return True


def checked_loggers(names: list[str]) -> list[str]:
    """`--logger NAME` arguments: known names whose library is installed, else one line naming `--logger`."""
    from raylab.spec.config import LOGGERS, check_logger_installed

    for name in names:
        if name not in LOGGERS:
            raise UsageError(f"--logger: {name!r} is not one of {'|'.join(LOGGERS)}")
        check_logger_installed(name, f"--logger {name}")
    return names


def cmd_run(args: argparse.Namespace) -> int:
    loggers = checked_loggers(args.logger)
    sweep = load_checked(args.file, args.overrides, smoke=args.smoke, loggers=loggers)  # everything checked before Ray starts
    data_dir = resolve_data_dir(args.data_dir)
    check_storage_and_data(sweep, data_dir, attached=bool(args.address))

    from raylab.execution import rerun

    sweep_dir = rerun.sweep_directory(sweep)
    # A re-run (up-arrow after an interrupt) or a grown sweep: skip what finished, continue what was
    # interrupted from its checkpoints, start the rest (raylab/execution/rerun.py).
    if args.smoke:
        print(f"raylab: --smoke: results go to {sweep_dir}, apart from the sweep's own folder")
    if args.dry_run:
        from raylab.execution.lease import held_by_other
        from raylab.execution.preview import dry_run_lines, tracker_lines

        runs = rerun.earlier_runs(sweep_dir)
        plan = rerun.plan_rerun(sweep.trials, runs)
        search = sweep.spec.search
        count = f"{len(sweep.trials)} trials" if search is None else f"{len(sweep.trials)} configurations x {search.samples_text()}"
        print(f"raylab: dry run: {count} of {args.file} -> {sweep_dir} (nothing started, nothing written)")
        print("\n".join([*dry_run_lines(sweep.trials, plan), *rerun.describe(plan, len(sweep.trials), sweep_dir), *tracker_lines(sweep.spec, sweep_dir)]))
        for stop in (plan.blocked and rerun.blocked_message(plan), rerun.added_loggers_message(plan, runs, sweep.spec.loggers)):
            if stop:
                print(f"raylab: `raylab run` would stop: {stop}")
        held = held_by_other(sweep_dir)
        if held:
            print(f"raylab: `raylab run` would stop: {held}")
        return 0
    # The plan is made while holding the sweep folder's lease: another driver's live run is never restored.
    with driving(sweep_dir, f"raylab run {args.file}", args.take_over):
        return run_plan(args, sweep, sweep_dir, data_dir)


def run_plan(args: argparse.Namespace, sweep, sweep_dir: str, data_dir: str | None) -> int:
    """Skip what finished, continue what was interrupted, start the rest (raylab/execution/rerun.py)."""
    from raylab.execution import rerun
    from raylab.results.provenance import provenance

    runs = rerun.earlier_runs(sweep_dir)
    plan = rerun.plan_rerun(sweep.trials, runs)
    if plan.blocked:
        raise UsageError(rerun.blocked_message(plan))
    added = rerun.added_loggers_message(plan, runs, sweep.spec.loggers)
    if added:
        raise UsageError(added)
    check_loggers_of([run for run in runs if run.location in plan.continued])
    from raylab.execution.preview import tracker_lines

    for line in [*rerun.describe(plan, len(sweep.trials), sweep_dir), *(tracker_lines(sweep.spec, sweep_dir) if plan.new else [])]:
        print(line, flush=True)
    print_code_change(rerun.finished_code_versions(runs, plan.finished), plan.finished, provenance())
    if plan.continued or plan.new:
        from raylab.execution.raystart import start_ray_importing

        start_ray_importing("raylab.execution.runner", address=args.address, num_cpus=args.num_cpus, data_dir=data_dir)
        from raylab.execution import runner

        runner.check_cluster_resources(sweep, attached=bool(args.address))
        runner.check_storage_shared(sweep)
        try:
            for run in plan.continued:
                if not runner.resume_run(run, errored="skip"):
                    return finish(sweep_dir, sweep.spec.plot, sweep.spec.report)  # still unfinished: the rest waits for the next `raylab run`
            if plan.new:
                runtime = {"data_dir": data_dir, "provenance": provenance()}
                runner.run_sweep(sweep, plan.new, runtime)
        except runner.Interrupted as interrupted:
            return report_interrupted(interrupted, sweep_dir)
    return finish(sweep_dir, sweep.spec.plot, sweep.spec.report)


@contextlib.contextmanager
def driving(sweep_dir: str, command: str, take_over: bool) -> Iterator[None]:
    """Hold the sweep folder's lease while the block runs (raylab/execution/lease.py); another live
    driver's lease is one line and exit 2, before anything is read, restored or started."""
    from raylab.execution.lease import LeaseHeld, acquire

    try:
        lease = acquire(sweep_dir, command, take_over=take_over)
    except LeaseHeld as error:
        raise UsageError(str(error)) from None
    try:
        yield
    finally:
        lease.release()  # on Ctrl-C and errors too; after SIGKILL the next driver finds it stale


def print_code_change(done: dict[str, str], trials: list[dict], provenance: dict) -> None:
    """Say when skipped trials were computed by other code (raylab's, torch's or the user modules'):
    they are kept, never silently mixed (docs/identity.md)."""
    from raylab.results.provenance import code_version

    now = {t["config_hash"]: code_version(provenance, t.get("user_code")) for t in trials}
    changed = [t for t in trials if t["config_hash"] in done and done[t["config_hash"]] != now[t["config_hash"]]]
    if changed:
        older = sorted({done[t["config_hash"]] for t in changed})
        current = sorted({now[t["config_hash"]] for t in changed})
        print(f"raylab: {len(changed)} of the skipped trials were computed by other code ({'; '.join(older)}; now {'; '.join(current)}): "
              "they are kept and the table notes rows that mix code versions; move them away to recompute (docs/identity.md)")


def check_storage_and_data(sweep, data_dir: str | None, attached: bool = False) -> None:
    """Storage and data problems as one line naming the sweep file, before Ray starts.

    On an attached cluster, missing data on the driver's machine is a warning: the trials run on
    other nodes, which may have the data where this one does not (as with resources, runner.py).
    """
    from raylab.planning.preflight import check_data, check_storage

    check_wandb_login(sweep)
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


def check_wandb_login(sweep) -> None:
    """`wandb: {mode: online}` needs an API key ($WANDB_API_KEY or `wandb login`), looked up without a
    prompt or the network: without one, Ray's W&B logger would fail inside Tune, after Ray started."""
    if "wandb" not in sweep.spec.loggers or sweep.spec.wandb_spec().mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    import wandb  # an optional dependency, installed (validation checked): only for an online W&B sweep

    if not wandb.login(prompt=False, verify=False):
        raise ConfigError(f"{sweep.path}: wandb.mode: online needs an API key: set WANDB_API_KEY or run `wandb login` (or leave mode offline and `wandb sync` later)")


def report_interrupted(interrupted: Exception, sweep_dir: str) -> int:
    """Ctrl-C: what finished and what did not (from the saved experiment state), and how to go on."""
    print(f"\nraylab: interrupted: {interrupted}; continue with:\n  raylab resume {sweep_dir}\n(or run the same `raylab run` command again)", file=sys.stderr)
    return EXIT_INTERRUPTED


def finish(sweep_dir: str, plots: list | tuple = (), report=None) -> int:
    """Collect every run of the sweep into Parquet, print the table (exit 1 if a trial errored),
    draw the sweep file's `plot:` figures and write its `report:` into the sweep directory."""
    from raylab.results.collect import ResultsError, collect

    collect(sweep_dir)
    print(f"\nresults: {sweep_dir}/trials.parquet, curves.parquet\n")
    code = print_table(sweep_dir, exit_on_errors=True)
    from raylab.results.plots import draw_into

    for spec in plots:
        try:
            print(f"figure: {draw_into(sweep_dir, spec)}")
        except ResultsError as error:  # e.g. every trial diverged: the results above stay valid
            print(f"raylab: plot {spec.out}: {error}", file=sys.stderr)
    if report is not None:
        from raylab.planning import storage
        from raylab.results.report import options_of, write_into

        command = report_command([sweep_dir], storage.join(sweep_dir, report.out), options_of(report))
        try:
            print(f"report: {write_into(sweep_dir, report, command)}")
        except ResultsError as error:
            print(f"raylab: report {report.out}: {error}", file=sys.stderr)
    return code


def sections_of(sweep_dir: str) -> tuple[list, object]:
    """The `plot:` and `report:` sections of the sweep's latest run, from its manifest: what a
    `raylab resume` draws again, so that the figures and the report show the resumed trials too."""
    from raylab.planning import storage
    from raylab.results.collect import MANIFEST, run_locations
    from raylab.spec.config import PlotSpec, ReportSpec
    from raylab.spec.typecheck import from_mapping

    try:
        sweep = json.loads(storage.read_text(storage.join(run_locations(sweep_dir)[-1], MANIFEST)))["sweep"]
    except (OSError, ValueError, KeyError, IndexError):
        return [], None
    try:
        plots = [from_mapping(PlotSpec, item, f"plot[{i}]") for i, item in enumerate(sweep.get("plot") or [])]
        report = from_mapping(ReportSpec, sweep["report"], "report") if sweep.get("report") is not None else None
    except ConfigError as error:  # e.g. the report's plotly no longer installed: the table still comes
        print(f"raylab: {sweep_dir}: the sweep's {error}; not drawn", file=sys.stderr)
        return [], None
    return plots, report


def cmd_resume(args: argparse.Namespace) -> int:
    from raylab.planning import storage
    from raylab.results.collect import MANIFEST

    data_dir = resolve_data_dir(args.data_dir)  # bad input fails before anything starts
    location = storage.absolute(args.experiment)
    if not storage.is_dir(location):
        raise UsageError(f"{args.experiment}: not a folder; give a sweep folder (<storage>/<name>) or one of its run-* folders")
    is_one_run = storage.exists(storage.join(location, MANIFEST))
    sweep_dir = location.rstrip("/").rsplit("/", 1)[0] if is_one_run else location
    with driving(sweep_dir, f"raylab resume {args.experiment}", args.take_over):
        return resume_runs(args, location, sweep_dir, data_dir)


def resume_runs(args: argparse.Namespace, location: str, sweep_dir: str, data_dir: str | None) -> int:
    """Restore every run of `location` that has trials to continue, then collect and table the sweep."""
    from raylab.execution import rerun, runner
    from raylab.planning import storage
    from raylab.results.collect import MANIFEST, run_locations

    runs = run_locations(location)  # a sweep directory (every run in it) or one run
    pending = [run for run in runs if runner.needs_resume(run, args.errored)]
    check_loggers_of([rerun.EarlierRun(run, True, {}, loggers=rerun.manifest_loggers(json.loads(storage.read_text(storage.join(run, MANIFEST)))))
                      for run in pending])
    if not pending:
        print(f"raylab: nothing to resume in {location}: no unfinished trials" + (", no errored ones" if args.errored != "skip" else ""))
    else:
        runner.start_ray(args.address, num_cpus=args.num_cpus, data_dir=data_dir)
        try:
            for run in pending:
                runner.resume_run(run, args.errored)
        except runner.Interrupted as interrupted:
            return report_interrupted(interrupted, location)
    return finish(sweep_dir, *sections_of(sweep_dir))


def check_loggers_of(runs: list) -> None:
    """The libraries of the loggers that continued runs started with (Tune restores those loggers):
    a missing one is one line before Ray starts, not a failed restore."""
    from raylab.spec.config import LOGGER_EXTRAS, check_logger_installed

    for run in runs:
        for name in run.loggers:
            if name in LOGGER_EXTRAS:
                check_logger_installed(name, f"{run.location}: loggers")


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
