"""Every sweep file in jobs/ validates, opens with what it reproduces and its command, and smoke-runs.

The smoke runs go through `raylab.training.loop.run_trial` directly (no Ray): one seed, a few steps and
each task's smoke data (`smoke_options`), with data from the shared folder.
"""

import math
from pathlib import Path

import pytest
import torch

from raylab.planning.sweep import load_sweep
from raylab.tasks import TASKS
from raylab.training.loop import run_trial

JOBS = sorted((Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml"))
PAPER_JOBS = [path for path in JOBS if path.name != "smoke.yaml"]


def test_there_is_a_job_for_every_seed_experiment():
    names = {path.stem for path in JOBS}
    expected = {"nnrnn-copy-hidden", "nnrnn-copy-params", "nnrnn-psmnist-hidden", "nnrnn-psmnist-params"}
    expected |= {f"nnrnn-ptb-{t}-{kind}" for t in (150, 300) for kind in ("params", "n1024")}
    expected |= {f"indrnn-adding-{t}" for t in (100, 500, 1000, 5000)} | {"indrnn-mnist", "indrnn-ptb-char", "indrnn-ptb-word"}
    assert expected <= names


@pytest.mark.parametrize("path", PAPER_JOBS, ids=lambda p: p.stem)
def test_job_opens_with_what_it_reproduces_and_its_command(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 2, f"{path.name}: no opening comment"
    assert any(f"raylab run jobs/{path.name}" in line for line in header), f"{path.name}: the opening comment lacks its command"
    sweep = load_sweep(path)
    assert sweep.spec.name == path.stem  # results/<name> matches the file


@pytest.fixture
def one_thread():
    """Smoke models are tiny: one intra-op thread is faster than two, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_job_smoke_runs(path, shared_data, one_thread):
    sweep = load_sweep(path, smoke=True)
    assert len(sweep.spec.seeds) == 1
    for trial in sweep.trials:
        reports = []
        run_trial(trial, lambda metrics, checkpoint: reports.append(metrics), None, str(shared_data), torch.device("cpu"))
        task = TASKS[trial["task"]["name"]]
        merged = {k: v for report in reports for k, v in report.items()}
        assert "diverged" not in merged, f"{trial['variant']} diverged in smoke mode"
        assert math.isfinite(merged[task.primary_metric])
        for split in task.final_splits:
            assert any(key.startswith(f"{split}/") for key in merged), f"{trial['variant']}: no {split} metrics"
