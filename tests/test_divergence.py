"""A non-finite training objective or evaluation metric is a diverged seed: reported at its own step, then stopped."""

from __future__ import annotations

import io
import math

import pytest
import torch

from raylab.training import checkpoint as resume
from raylab.training.loop import FINITE_CHECK_EVERY, run_trial

CPU = torch.device("cpu")
EXPLODING = {  # modReLU at lr 1e4: the objective stops being finite within a few dozen steps
    "task": {"name": "copy", "delay": 4, "batch_size": 3, "eval_size": 6},
    "cell": {"name": "rnn", "nonlinearity": "modrelu"},
    "optimizer": {"name": "rmsprop", "lr": 1.0e4},
    "training": {"steps": 3 * FINITE_CHECK_EVERY, "eval_every": 2 * FINITE_CHECK_EVERY},
    "hidden_size": 8,
    "seed": 0,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is many times faster on a shared machine


def reports_of(trial: dict, restored: dict | None = None) -> list[tuple[dict, dict | None]]:
    reports = []
    run_trial(trial, lambda metrics, checkpoint: reports.append((metrics, checkpoint)), restored, None, CPU)
    return reports


def with_training(trial: dict, **training) -> dict:
    return {**trial, "training": {**trial["training"], **training}}


def test_the_first_non_finite_step_is_reported_although_the_flag_is_read_later():
    """lr 1e4: step 1's objective is finite but leaves non-finite weights, step 2's is not; the flag is read at step 50."""
    reports = reports_of(EXPLODING)
    assert len(reports) == 1  # no evaluation before: eval_every is beyond the divergence
    metrics, checkpoint = reports[0]
    assert metrics["diverged"] == 1 and metrics["step"] == 2 and checkpoint is None and not math.isfinite(metrics["train/loss"])
    assert metrics["end"] == "diverged"
    metrics, checkpoint = reports_of(with_training(EXPLODING, steps=1, eval_every=1))[-1]
    assert metrics["diverged"] == 1 and metrics["step"] == 1 and checkpoint is None  # the evaluation after step 1 is NaN
    assert math.isfinite(metrics["train/loss"]) and math.isnan(metrics["val/loss"])


def test_a_divergence_right_after_an_evaluation_keeps_that_evaluation_s_point():
    healthy = {**EXPLODING, "optimizer": {"name": "rmsprop", "lr": 1e-3}, "training": {"steps": 100, "eval_every": 2}}
    evaluation, checkpoint = reports_of(with_training(healthy, steps=2))[0]
    buffer = io.BytesIO()
    resume.save_checkpoint(checkpoint, buffer)
    restored = resume.load_checkpoint(io.BytesIO(buffer.getvalue()))
    restored["model"]["readout.weight"].fill_(math.inf)  # step 3's objective is not finite
    (metrics, checkpoint), = reports_of(healthy, restored)
    assert evaluation["step"] == 2 and metrics["step"] == 3 and metrics["diverged"] == 1 and checkpoint is None


def test_a_non_finite_evaluation_is_a_divergence_and_stops_the_trial(shared_data):
    """IndRNN with sequence BN: a negative running variance makes evaluation NaN while training (batch statistics) stays finite."""
    trial = {
        "task": {"name": "mnist", "subset": 16, "batch_size": 4, "eval_batch_size": 8, "pixels_per_step": 28, "download": False},
        "cell": {"name": "indrnn", "num_layers": 1, "batch_norm": "after"},
        "optimizer": {"name": "adam", "lr": 1e-3, "lr_decay_on_plateau": 0.5},
        "training": {"steps": 8, "eval_every": 2},
        "hidden_size": 8,
        "seed": 0,
    }
    reports = []
    run_trial(trial, lambda metrics, checkpoint: reports.append((metrics, checkpoint)), None, str(shared_data), CPU)
    first = next(checkpoint for _, checkpoint in reports if checkpoint is not None)
    buffer = io.BytesIO()
    resume.save_checkpoint(first, buffer)
    restored = resume.load_checkpoint(io.BytesIO(buffer.getvalue()))
    running = [k for k in restored["model"] if k.endswith("running_var")]
    assert running
    for key in running:
        restored["model"][key].fill_(-1e3)
    after = []
    run_trial(trial, lambda metrics, checkpoint: after.append((metrics, checkpoint)), restored, str(shared_data), CPU)
    assert len(after) == 1  # no further evaluation, no lr decay, no test metrics from a diverged seed
    metrics, checkpoint = after[0]
    assert metrics["diverged"] == 1 and checkpoint is None and metrics["step"] == 4
    assert math.isfinite(metrics["train/loss"]) and math.isnan(metrics["val/loss"]) and not any(k.startswith("test/") for k in metrics)
