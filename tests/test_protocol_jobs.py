"""The job files follow the papers' protocols where docs/protocol.md says they do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylab.planning.sweep import load_sweep

JOBS = Path(__file__).resolve().parents[1] / "jobs"
ORTHOGONAL_CELLS = {"exprnn", "nnrnn"}


def job_files() -> list[Path]:
    return sorted(JOBS.glob("*.yaml"))


@pytest.mark.parametrize("path", job_files(), ids=lambda p: p.stem)
def test_every_orthogonal_variant_states_lr_orth_with_its_source(path):
    """No silent `lr_orth = lr`: the release scripts' defaults differ (8e-5 PTB, 2e-5 copy and sMNIST)."""
    data = yaml.safe_load(path.read_text())
    sweep_optimizer = data.get("optimizer") or {}
    for index, variant in enumerate(data.get("variants") or []):
        if variant["cell"]["name"] in ORTHOGONAL_CELLS:
            assert "lr_orth" in {**sweep_optimizer, **(variant.get("optimizer") or {})}, f"{path.name}: variants[{index}] leaves lr_orth implicit"
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if "lr_orth:" in line and not line.lstrip().startswith("#"):
            above = lines[number - 1].strip()
            assert "#" in line or (above.startswith("#") and "lr_orth" in above), f"{path.name}:{number + 1}: lr_orth without its source"


def optimizer_of(stem: str, variant: str) -> dict:
    trials = load_sweep(JOBS / f"{stem}.yaml").trials
    return next(t["optimizer"] for t in trials if t["variant"] == variant)


@pytest.mark.parametrize("length", [100, 500, 1000, 5000])
def test_adding_jobs_follow_adding_py(length):
    sweep = load_sweep(JOBS / f"indrnn-adding-{length}.yaml")
    optimizer = optimizer_of(f"indrnn-adding-{length}", "IndRNN")
    assert (optimizer["lr_step_every"], optimizer["lr_step_factor"], optimizer["lr_stop_below"]) == (20100, 0.1, 1e-6)
    assert optimizer["reload_best_at_drop"] == "none"
    assert sweep.spec.task["eval_data"] == "fresh" and sweep.spec.training.steps == 60300


def test_mnist_job_follows_the_pytorch_code():
    sweep = load_sweep(JOBS / "indrnn-mnist.yaml")
    optimizer = sweep.trials[0]["optimizer"]
    assert optimizer["weight_decay_scope"] == "no_bias" and optimizer["lr_decay_patience_halving"]
    assert optimizer["reload_best_at_drop"] == "model_and_optimizer" and optimizer["lr_stop_below"] == 1e-6
    assert sweep.trials[0]["cell"]["last_layer_init"] is False  # a no-op in the authors' plain net
    assert sweep.spec.training.eval_every == 1700


@pytest.mark.parametrize("stem", ["indrnn-ptb-char", "indrnn-ptb-word"])
def test_ptb_jobs_follow_the_theano_code(stem):
    sweep = load_sweep(JOBS / f"{stem}.yaml")
    optimizer = sweep.trials[0]["optimizer"]
    assert (optimizer["lr_decay_on_plateau"], optimizer["lr_decay_patience"]) == (0.2, 21)
    assert optimizer["reload_best_at_drop"] == "model" and optimizer["lr_stop_below"] == 1e-6
    if stem == "indrnn-ptb-word":
        assert sweep.spec.task["init_range"] == 0.03 and optimizer["weight_decay"] == 0.0
    else:
        assert optimizer["weight_decay"] == 2e-4 and optimizer["weight_decay_scope"] == "no_bias"
