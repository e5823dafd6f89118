"""Start the embedded Ray or attach to a cluster: the part of the Ray layer that needs no Tune.

Kept apart from `runner.py` so that `raylab run` can import Tune (about a second) while `ray.init`
waits for the processes it starts (about three): see `start_ray_importing` and docs/throughput.md.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from typing import Any

# Set before Tune is imported (runner.py and live.py import this module first). live.ProgressPrinter
# replaces Tune's console output (experiment banner, trial tables, per-checkpoint sync warnings), so
# that a sweep prints one line per event.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune's default loggers write progress.csv and TensorBoard events for every trial (and import
# tensorboardX in the driver); raylab reads result.json only, so the JSON logger is kept, and the
# TensorBoard one only with `loggers: [tensorboard]` (see runner.logger_callbacks).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Tune's strict metric check stays on (TUNE_DISABLE_STRICT_METRIC_CHECKING is not set): it would hide
# a mistyped metric process-wide; the per-slot ASHA keeps its metric from that check instead, for the
# reports that lack it by design (raylab.execution.search.SlotASHA.metric).

import ray  # noqa: E402

from raylab.execution.quiet import quiet_ray_logs  # noqa: E402
from raylab.spec.userimport import worker_pythonpath  # noqa: E402

DATA_DIR_ENV = "RAYLAB_DATA_DIR"  # set by `raylab run/resume --data-dir`: wins over the data folder stored in the config


def prepare_driver(address: str | None) -> None:
    """What `ray.init` needs of this process: log filters, and the embedded Ray's workers' PYTHONPATH."""
    quiet_ray_logs()  # before ray.init: it logs the token notice
    if not address:
        # Workers inherit the driver's environment: cells and tasks named by import path are found
        # from the working directory too (raylab.spec.userimport).
        os.environ["PYTHONPATH"] = worker_pythonpath()


def start_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None, data_dir: str | None = None) -> None:
    """Attach to a cluster at `address`, or start the embedded local Ray (the default).

    `data_dir` (from --data-dir) reaches every trial of this driver, restored ones included, whose
    stored configs may name another machine's data folder.
    """
    if ray.is_initialized():
        return
    prepare_driver(address)
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if data_dir:
        options["runtime_env"] = {"env_vars": {DATA_DIR_ENV: data_dir}}
    if address:
        ray.init(address=address, **options)
    else:
        # address="local": a new instance, never the cluster a `ray start` on this machine left in
        # /tmp/ray/ray_current_cluster, which ray.init() would otherwise attach to.
        # No `preload_python_modules`: the workers Ray prestarts are never the ones Tune's trials run
        # in (a trial's actor lives in a placement group, which Ray gives a new worker process), so
        # importing torch in them only took CPU from the start-up (docs/throughput.md).
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **options)


def start_ray_importing(module: str, **start_options: Any) -> None:
    """`start_ray(**start_options)` while another thread imports `module` (e.g. Tune's layer).

    `ray.init` spends most of its seconds waiting for the processes it starts, so the import costs
    little extra wall time. An import error is not lost: importing the module again re-raises it.
    The environment is written before the thread starts: `ray.init` copies it for the processes it
    starts, and a copy taken while another thread writes a variable can fail.
    """
    prepare_driver(start_options.get("address"))
    importer = threading.Thread(target=importlib.import_module, args=(module,), name="raylab-import", daemon=True)
    importer.start()
    try:
        start_ray(**start_options)
    finally:
        importer.join()
