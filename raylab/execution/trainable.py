"""The Ray Tune function trainable: `raylab.training.loop.run_trial` with Tune's report and checkpoints."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ray import tune

from raylab.execution.raystart import DATA_DIR_ENV
from raylab.planning.space import resolved_trial
from raylab.training.checkpoint import load_checkpoint, save_checkpoint
from raylab.training.loop import pick_device, run_trial
from raylab.training.process_state import reset_process_state  # reads the fresh process's settings, before any trial
from raylab.training.reports import LINEAGE_KEY, new_lineage, read_reports, write_reports

CHECKPOINT_FILE = "state.pt"


def train(config: dict[str, Any]) -> None:
    """Tune entry point. `config = {"trial": <resolved trial>, "runtime": {...}}` (see runner.py)."""
    runtime = config.get("runtime", {})
    resources = tune.get_context().get_trial_resources().required_resources
    # This process may have run an earlier trial (reuse_actors): leave nothing of it behind.
    reset_process_state(int(resources.get("CPU", 1)), resources.get("GPU", 0))
    device = pick_device()

    restored = None
    # Every report of this chain of attempts, copied into each checkpoint (raylab/training/reports.py).
    lineage: str | None = new_lineage()
    history: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restored = load_checkpoint(os.path.join(directory, CHECKPOINT_FILE))  # onto the CPU: see raylab/training/checkpoint.py
            lineage, history = read_reports(directory)  # (None, []) from a checkpoint written before the record

    def report(metrics: dict[str, Any], state: dict | None) -> None:
        # Tune's TensorBoard logger takes `timesteps_total` as the x-axis (else the report index).
        metrics = {**metrics, "timesteps_total": metrics["step"]}
        if lineage is not None:
            metrics[LINEAGE_KEY] = lineage
            history.append(metrics)
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(state, os.path.join(directory, CHECKPOINT_FILE))
            if lineage is not None:
                write_reports(directory, lineage, history)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    data_dir = os.environ.get(DATA_DIR_ENV) or runtime.get("data_dir")
    run_trial(resolved_trial(config), report, restored, data_dir=data_dir, device=device)
