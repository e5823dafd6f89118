"""Ray layer: start or attach to Ray, turn a resolved sweep into a Tuner, show progress.

With `raystart.py` (starting Ray) and `trainable.py`, the only module that imports Ray: cells,
tasks and the training loop run without it, e.g. on a GPU machine that has PyTorch but no Ray.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# raylab.raystart sets Tune's environment (it must be in place before Tune is imported).
from raylab.raystart import start_ray  # noqa: F401 - callers start Ray through the runner too

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from raylab import storage  # noqa: E402
from raylab.quiet import quiet_ray_logs  # noqa: E402
from raylab.results import MANIFEST, last_line, reached_budget, tune_trials  # noqa: E402
from raylab.sweep import Sweep, trial_name  # noqa: E402
from raylab.rerun import sweep_directory  # noqa: E402
from raylab.trainable import train  # noqa: E402
from raylab.typecheck import ConfigError  # noqa: E402

CHECKPOINTS_TO_KEEP = 2  # bounded experiment directories; the newest is all a restore needs
quiet_ray_logs()
SIGINT_SEEN = threading.Event()  # set by ProgressPrinter's handler: Tune itself swallows the first Ctrl-C


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message is the honest tally from the saved experiment state."""


def fit_or_interrupted(tuner: Any, run_dir: str) -> None:
    """`tuner.fit()`, raising Interrupted when Ctrl-C stopped it (Tune returns normally after the first
    Ctrl-C, having saved the experiment state, and raises KeyboardInterrupt after a second)."""
    SIGINT_SEEN.clear()
    before = signal.getsignal(signal.SIGINT)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        raise Interrupted(saved_tally(run_dir)) from None
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, before)  # Tune leaves its handler installed: Ctrl-C would do nothing later
    if SIGINT_SEEN.is_set():
        raise Interrupted(saved_tally(run_dir))


def saved_tally(run_dir: str) -> str:
    """`2 of 4 trials finished, 2 not finished`, from the state Tune saved (what a resume starts from)."""
    try:
        statuses = [trial.status for trial in tune_trials(run_dir)]
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


def trial_dirname(trial: Any) -> str:
    return f"{trial_name(trial.config['trial'])}-{trial.trial_id}"


def trial_display_name(trial: Any) -> str:
    if trial.config.get("sample"):  # a searched trial: its sample number tells it from its siblings
        return f"{trial_name(trial.config['trial'])}#{trial.trial_id.rsplit('_', 1)[-1].lstrip('0') or '0'}"
    return trial_name(trial.config["trial"])


def make_trainable(resources: dict[str, float]) -> Any:
    """The one trainable, with the sweep's per-trial resources (a restore must pass the same)."""
    return tune.with_resources(train, {"cpu": resources["cpu"], "gpu": resources["gpu"]})


def run_configs(sweep: Sweep, run_name: str) -> tuple[Any, Any]:
    from raylab.live import live_progress  # it builds on ProgressPrinter, below

    # reuse_actors: the next trial with the same resources runs in the process of a finished one,
    # skipping interpreter start and imports (seconds per trial); process_state.py cleans it.
    tune_config = tune.TuneConfig(trial_name_creator=trial_display_name, trial_dirname_creator=trial_dirname, reuse_actors=True)
    run_config = tune.RunConfig(
        name=run_name,
        storage_path=sweep_directory(sweep),
        failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
        verbose=0,  # ProgressPrinter (a live display on a terminal) replaces Tune's tables
        callbacks=[live_progress(sweep), *logger_callbacks()],
    )
    return tune_config, run_config


def logger_callbacks() -> list[Any]:
    """result.json always; TensorBoard event files (x axis: the training step, reported as
    `timesteps_total`) when tensorboardX is installed (`pip install -e '.[tensorboard]'`)."""
    callbacks: list[Any] = [JsonLoggerCallback()]
    if importlib.util.find_spec("tensorboardX") is not None:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
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
        from raylab.search import searched

        tune_config, param_space = searched(sweep.spec.search, trials, sweep.spec.seeds[0], tune_config, param_space)
    tuner = tune.Tuner(
        make_trainable({"cpu": sweep.spec.resources.cpu, "gpu": sweep.spec.resources.gpu}),
        param_space=param_space,
        tune_config=tune_config,
        run_config=run_config,
    )
    search = sweep.spec.search
    count = f"{len(trials)} trials" if search is None else f"{len(trials)} configurations x {search.num_samples} samples"
    print(f"raylab: {count} of sweep {sweep.spec.name!r} -> {run_dir}", flush=True)
    fit_or_interrupted(tuner, run_dir)
    return run_dir


def needs_resume(run_dir: str, errored: str) -> bool:
    """True when the run has unfinished trials, or errored ones that `errored` asks to run again."""
    wanted = {"PENDING", "RUNNING", "PAUSED"} | ({"ERROR"} if errored != "skip" else set())
    try:
        return any(trial.status in wanted for trial in tune_trials(run_dir))
    except (FileNotFoundError, ValueError, RuntimeError):
        return False  # killed before Tune saved any state: `raylab run` again re-runs what is missing


def resume_run(run_dir: str, errored: str) -> bool:
    """Restore a run with Tune: unfinished trials continue from their last checkpoint, finished ones
    are never re-run, errored ones resume from their checkpoint, restart from scratch, or stay.

    Raises Interrupted on Ctrl-C; returns False when the run still has unfinished trials afterwards."""
    manifest = json.loads(storage.read_text(storage.join(run_dir, MANIFEST)))
    print(f"raylab: resuming {run_dir} (errored trials: {errored})", flush=True)
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


class ProgressPrinter(tune.Callback):
    """Tune callback: one line per evaluation, per finished or failed trial, and a periodic tally."""

    SHOWN_METRICS = ("train/loss", "val/loss", "val/acc", "val/bpc", "test/loss", "test/acc", "test/bpc")

    def __init__(self, tally_every_s: float = 30.0) -> None:
        # No stream attribute: Tune pickles callbacks into tuner.pkl, so print to sys.stdout at call time.
        self.tally_every_s = tally_every_s
        self.start = time.monotonic()
        self.last_tally = self.start

    def setup(self, **info: Any) -> None:
        """Note a Ctrl-C before Tune's handler (installed just before this) takes it: Tune then ends
        the run normally, and only this flag tells the runner that trials were left unfinished."""
        # At every start, restores included: the clock pickled in tuner.pkl is another process's.
        self.start = self.last_tally = time.monotonic()
        try:
            tune_handler = signal.getsignal(signal.SIGINT)
        except ValueError:
            return

        def note_and_pass_on(signum: int, frame: Any) -> None:
            SIGINT_SEEN.set()
            if callable(tune_handler):
                tune_handler(signum, frame)

        try:
            signal.signal(signal.SIGINT, note_and_pass_on)
        except ValueError:  # not the main thread: no signals here
            pass

    def _print(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.start)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        budget = trial.config["trial"]["training"]
        total = budget.get("steps") or f"{budget.get('epochs')} epochs"
        shown = "  ".join(f"{k} {result[k]:.4g}" for k in ProgressPrinter.SHOWN_METRICS if isinstance(result.get(k), (int, float)))
        flag = "  DIVERGED" if result.get("diverged") else ""
        self._print(f"{trial_display_name(trial):<28} step {result.get('step', '?')}/{total}  {shown}{flag}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        diverged = (trial.last_result or {}).get("diverged")
        stopped = bool(trial.config.get("sample")) and not diverged and not reached_budget([trial.last_result or {}], trial.config["trial"]["training"])
        outcome = "diverged (non-finite loss)" if diverged else "stopped early by the scheduler" if stopped else "finished"
        self._print(f"{trial_display_name(trial):<28} {outcome}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{trial_display_name(trial):<28} failed, retrying from its last checkpoint: {first_error_line(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{trial_display_name(trial):<28} failed, no retries left: {first_error_line(trial)}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.last_tally >= self.tally_every_s:
            self.last_tally = now
            self._print(tally(trials))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if not SIGINT_SEEN.is_set():  # after Ctrl-C, Tune's statuses are not the truth; the runner reports
            self._print(tally(trials))


def tally(trials: list) -> str:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    order = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")
    labels = {"TERMINATED": "done", "ERROR": "errored"}
    parts = [f"{counts[s]} {labels.get(s, s.lower())}" for s in order if counts.get(s)]
    return f"trials: {len(trials)} total, " + ", ".join(parts)


def first_error_line(trial: Any) -> str:
    """The exception line of a failed trial's error file (the traceback stays in the file)."""
    return last_line(getattr(trial, "error_file", None)) or "see the trial's error.txt"
