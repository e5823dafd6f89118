"""The Ray Tune function trainable: `training.run_trial` with Tune's report and checkpoints."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from ray import tune

CHECKPOINT_FILE = "state.pt"


def train(config: dict[str, Any]) -> None:
    """Tune entry point. `config = {"trial": <resolved trial>, "runtime": {...}}` (see runner.py)."""
    from raylab.resume import load_checkpoint, save_checkpoint
    from raylab.training import pick_device, run_trial

    runtime = config.get("runtime", {})
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    device = pick_device()
    gpu_share = resources.get("GPU", 0)
    if device.type == "cuda" and 0 < gpu_share < 1:
        # Ray's GPU fractions are logical only; cap this process's memory to its share.
        torch.cuda.set_per_process_memory_fraction(gpu_share)

    restored = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restored = load_checkpoint(os.path.join(directory, CHECKPOINT_FILE))  # onto the CPU: see raylab/resume.py

    def report(metrics: dict[str, Any], state: dict | None) -> None:
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(state, os.path.join(directory, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    run_trial(config["trial"], report, restored, data_dir=runtime.get("data_dir"), device=device)
