"""Turn a resolved sweep into a Tuner and run it, restore an interrupted run, report Ctrl-C.

Progress output is `live.py`'s, Ray's start `raystart.py`'s, the trainable `trainable.py`'s.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# raylab.execution.raystart sets Tune's environment (it must be in place before Tune is imported).
from raylab.execution.raystart import start_ray  # noqa: F401 - callers start Ray through the runner too

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from raylab.planning import storage  # noqa: E402
from raylab.execution.checkpoint_records import KeepNewestCheckpoints, MendCheckpointRecords  # noqa: E402
from raylab.execution.live import SIGINT_SEEN, live_progress, trial_dirname, trial_display_name  # noqa: E402
from raylab.execution.quiet import quiet_ray_logs  # noqa: E402
from raylab.results.collect import MANIFEST, state_trials  # noqa: E402
from raylab.planning.sweep import Sweep  # noqa: E402
from raylab.execution.rerun import sweep_directory  # noqa: E402
from raylab.execution.preview import local_folder, mlflow_destination  # noqa: E402
from raylab.execution.search import searched  # noqa: E402
from raylab.execution.trainable import train  # noqa: E402
from raylab.execution.trial_grid import TrialGridGenerator  # noqa: E402
from raylab.spec.typecheck import ConfigError  # noqa: E402
from raylab.spec.userimport import uses_user_code  # noqa: E402

# Module paths of the flat layout before the layers (docs/architecture.md). Tune pickles a run's
# callbacks, name creators, searcher and scheduler into tuner.pkl by module path: a run interrupted
# under the old layout names these, and restores only if they still resolve.
LEGACY_MODULES = {
    "raylab.runner": "raylab.execution.runner",
    "raylab.live": "raylab.execution.live",
    "raylab.search": "raylab.execution.search",
    "raylab.trainable": "raylab.execution.trainable",
}
quiet_ray_logs()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message is the honest tally from the saved experiment state."""


def fit_or_interrupted(tuner: Any, run_dir: str) -> None:
    """`tuner.fit()`, raising Interrupted when Ctrl-C stopped it (Tune returns normally after the first
    Ctrl-C, having saved the experiment state, and raises KeyboardInterrupt after a second)."""
    SIGINT_SEEN.clear()
    before = signal.getsignal(signal.SIGINT)
    allow_pending_trials()
    try:
        tuner.fit()
    except KeyboardInterrupt:
        raise Interrupted(saved_tally(run_dir)) from None
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, before)  # Tune leaves its handler installed: Ctrl-C would do nothing later
    if SIGINT_SEEN.is_set():
        raise Interrupted(saved_tally(run_dir))


PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
MIN_PENDING_TRIALS = 200  # Tune's own floor for its basic generator: enough pending trials to make an autoscaler scale


def allow_pending_trials() -> None:
    """Let Tune queue as many trials for raylab's own searcher (`SlotSearcher`) as it queues for its basic
    generator. Tune allows one pending trial for any other searcher, which would start a cluster's
    trials one per scheduling step and never show an autoscaler more than one trial waiting; the
    searcher bounds each slot itself (`search.max_concurrent`). Read by Tune when the run starts (or
    is restored); a value the user set in the environment is kept."""
    cpus = ray.cluster_resources().get("CPU", 1.0) if ray.is_initialized() else 1.0
    os.environ.setdefault(PENDING_TRIALS_ENV, str(max(MIN_PENDING_TRIALS, int(cpus * 1.1))))


def saved_tally(run_dir: str) -> str:
    """`2 of 4 trials finished, 2 not finished`, from the state Tune saved (what a resume starts from)."""
    try:
        statuses = [trial.status for trial in state_trials(run_dir)]
    except (FileNotFoundError, ValueError, RuntimeError):
        return "no trial state was saved yet"
    finished = sum(status == "TERMINATED" for status in statuses)
    return f"{finished} of {len(statuses)} trials finished, {len(statuses) - finished} not finished"


def check_cluster_resources(sweep: Sweep, attached: bool) -> None:
    """Fail before scheduling anything when no node could ever run a trial.

    The embedded Ray has all the resources it will ever have, so a shortfall is an error. An attached
    cluster may autoscale (the cluster files start GPU workers from zero), so there it is a warning
    and the trials wait for nodes, as Tune itself does.
    """
    wanted = sweep.spec.resources
    available = ray.cluster_resources()
    problems = []
    if wanted.gpu > 0 and available.get("GPU", 0) < wanted.gpu:
        problems.append(
            f"resources.gpu: {wanted.gpu:g} GPU per trial requested, but the Ray cluster has "
            f"{available.get('GPU', 0):g} GPUs" + ("" if attached else " (on a CPU-only machine, override resources.gpu=0)")
        )
    if available.get("CPU", 0) < wanted.cpu:
        problems.append(f"resources.cpu: {wanted.cpu:g} CPUs per trial requested, but the Ray cluster has {available.get('CPU', 0):g}")
    if problems and not attached:
        raise ConfigError(f"{sweep.path}: {problems[0]}")
    for problem in problems:
        print(f"raylab: warning: {problem} now; trials wait until the autoscaler adds nodes", file=sys.stderr, flush=True)


def make_trainable(resources: dict[str, float]) -> Any:
    """The one trainable, with the sweep's per-trial resources (a restore must pass the same)."""
    return tune.with_resources(train, {"cpu": resources["cpu"], "gpu": resources["gpu"]})


def run_configs(sweep: Sweep, run_name: str) -> tuple[Any, Any]:
    # reuse_actors: the next trial with the same resources runs in the process of a finished one,
    # skipping interpreter start and imports (seconds per trial); process_state.py cleans it. Not
    # when a cell or task is user code: what its module keeps (a cache, a counter) no reset can
    # know, so each trial gets a fresh process and imports it anew (the cost: docs/throughput.md).
    # Tuner.restore reads this choice back from the run folder, so a resumed run keeps it.
    reuse = not uses_user_code(sweep.trials)
    tune_config = tune.TuneConfig(
        search_alg=TrialGridGenerator(),  # Tune's default generator, linear in the trials (trial_grid.py)
        trial_name_creator=trial_display_name,
        trial_dirname_creator=trial_dirname,
        reuse_actors=reuse,
    )
    run_config = tune.RunConfig(
        name=run_name,
        storage_path=sweep_directory(sweep),
        failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
        # No num_to_keep: KeepNewestCheckpoints deletes old checkpoints without Tune's forced state syncs.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        verbose=0,  # ProgressPrinter (a live display on a terminal) replaces Tune's tables
        callbacks=[live_progress(sweep), KeepNewestCheckpoints(sweep.spec.keep_checkpoints), MendCheckpointRecords(), *logger_callbacks(sweep)],
    )
    return tune_config, run_config


def logger_callbacks(sweep: Sweep) -> list[Any]:
    """result.json always (raylab reads it); TensorBoard event files with `loggers: [tensorboard]`
    (x axis: the training step, reported as `timesteps_total`; docs/tensorboard.md); an MLflow and a
    W&B run per trial with `loggers: [mlflow, wandb]` (docs/trackers.md)."""
    spec = sweep.spec
    callbacks: list[Any] = [JsonLoggerCallback()]
    if "tensorboard" in spec.loggers:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    local = local_folder(sweep_directory(sweep))  # None in a bucket, where validation refused what needs a local folder
    if "mlflow" in spec.loggers:
        from raylab.execution.trackers import MlflowTracker  # imports mlflow, an optional dependency: only when asked for

        uri, experiment = mlflow_destination(spec, sweep_directory(sweep))
        callbacks.append(MlflowTracker(uri, experiment, spec.name, f"{local}/mlartifacts" if local else None))
    if "wandb" in spec.loggers:
        from raylab.execution.trackers import WandbTracker  # imports wandb, an optional dependency: only when asked for

        wandb = spec.wandb_spec()
        callbacks.append(WandbTracker(wandb.mode, wandb.project, wandb.entity, group=spec.name, directory=local))
    return callbacks


def write_manifest(run_dir: str, sweep: Sweep, trials: list[dict], runtime: dict) -> None:
    manifest = {
        "sweep_file": str(sweep.path),
        "sweep": sweep.raw,
        "resources": {"cpu": sweep.spec.resources.cpu, "gpu": sweep.spec.resources.gpu},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime": runtime,
        "trials": trials,
    }
    storage.write_text(storage.join(run_dir, MANIFEST), json.dumps(manifest, indent=1))


def run_sweep(sweep: Sweep, trials: list[dict], runtime: dict) -> str:
    """Run `trials` as one Tune experiment under the sweep directory; return the run directory."""
    run_name = "run-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while storage.exists(storage.join(sweep_directory(sweep), run_name)):  # never reuse a run folder (its tuner.pkl would be overwritten)
        suffix += 1
        run_name = f"{run_name.split('.')[0]}.{suffix}"
    run_dir = storage.join(sweep_directory(sweep), run_name)
    write_manifest(run_dir, sweep, trials, runtime)
    tune_config, run_config = run_configs(sweep, run_name)
    param_space = {"trial": tune.grid_search(trials), "runtime": runtime}
    if sweep.spec.search is not None:
        tune_config, param_space = searched(sweep.spec.search, trials, sweep.spec.seeds[0], tune_config, param_space)
    tuner = tune.Tuner(
        make_trainable({"cpu": sweep.spec.resources.cpu, "gpu": sweep.spec.resources.gpu}),
        param_space=param_space,
        tune_config=tune_config,
        run_config=run_config,
    )
    search = sweep.spec.search
    count = f"{len(trials)} trials" if search is None else f"{len(trials)} configurations x {search.samples_text()}"
    print(f"raylab: {count} of sweep {sweep.spec.name!r} -> {run_dir}", flush=True)
    fit_or_interrupted(tuner, run_dir)
    return run_dir


def needs_resume(run_dir: str, errored: str) -> bool:
    """True when the run has unfinished trials, or errored ones that `errored` asks to run again."""
    wanted = {"PENDING", "RUNNING", "PAUSED"} | ({"ERROR"} if errored != "skip" else set())
    try:
        return any(trial.status in wanted for trial in state_trials(run_dir))
    except (FileNotFoundError, ValueError, RuntimeError):
        return False  # killed before Tune saved any state: `raylab run` again re-runs what is missing


def alias_legacy_modules() -> None:
    """Let `raylab.live`, `raylab.search`, ... resolve to their modules in the layers, for unpickling."""
    for old, new in LEGACY_MODULES.items():
        sys.modules.setdefault(old, importlib.import_module(new))


def resume_run(run_dir: str, errored: str) -> bool:
    """Restore a run with Tune: unfinished trials continue from their last checkpoint, finished ones
    are never re-run, errored ones resume from their checkpoint, restart from scratch, or stay.

    Raises Interrupted on Ctrl-C; returns False when the run still has unfinished trials afterwards."""
    manifest = json.loads(storage.read_text(storage.join(run_dir, MANIFEST)))
    print(f"raylab: resuming {run_dir} (errored trials: {errored})", flush=True)
    alias_legacy_modules()
    tuner = tune.Tuner.restore(
        run_dir,
        trainable=make_trainable(manifest["resources"]),
        resume_unfinished=True,
        resume_errored=errored == "resume",
        restart_errored=errored == "restart",
    )
    fit_or_interrupted(tuner, run_dir)
    return not needs_resume(run_dir, "skip")


def check_storage_shared(sweep: Sweep) -> None:
    """On a multi-node cluster, a local storage path must be visible from every node.

    Each node looks for a marker file the driver just wrote; a node that cannot see it would write
    its checkpoints where nobody else can read them, so this is an error before anything starts.
    """
    storage = sweep.spec.storage
    alive = [node for node in ray.nodes() if node.get("Alive")]
    if "://" in storage or len(alive) < 2:
        return
    directory = Path(sweep_directory(sweep))
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".raylab-shared-{os.getpid()}-{time.time_ns()}"
    marker.write_text("shared")
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        def sees_marker(path: str) -> bool:
            return os.path.isfile(path)

        checks = [
            sees_marker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(str(marker))
            for node in alive
        ]
        blind = [node["NodeManagerAddress"] for node, seen in zip(alive, ray.get(checks, timeout=60)) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ConfigError(
            f"{sweep.path}: storage: {storage} is not visible from node(s) {', '.join(blind)}; on a multi-node "
            "cluster use s3://..., gs://... or a filesystem mounted on every node"
        )
